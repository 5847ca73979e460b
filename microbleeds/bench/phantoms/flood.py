"""Seeded region growing for the phantom's truth classes (:func:`.head._mni_mars_volume`).

:func:`grow` floods labels breadth-first into allowed voxels (6-connected): every reached voxel
takes the label of the seed nearest along the allowed voxels (city-block geodesic distance; ties:
the seed first in C order). :func:`flood_by_level` grows through rising thresholds of a cost
image (a watershed by immersion, quantised in levels). Imported on first use (numba);
:func:`grow_reference` is the numpy reference of :func:`grow` for the tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _grow_kernel(flat, allow, shape):
    """Breadth-first growth (in place) of the nonzero labels of the C-order flat array ``flat``
    into voxels with ``allow`` true, on a grid of ``shape``."""
    nx, ny, nz = shape[0], shape[1], shape[2]
    sx = ny * nz
    queue = np.empty(flat.size, dtype=np.int64)
    tail = 0
    for i in range(flat.size):
        if flat[i] != 0:
            queue[tail] = i
            tail += 1
    head = 0
    while head < tail:
        i = queue[head]
        head += 1
        x = i // sx
        y = (i - x * sx) // nz
        z = i - x * sx - y * nz
        v = flat[i]
        for d in range(6):
            if d == 0:
                if x == 0:
                    continue
                j = i - sx
            elif d == 1:
                if x == nx - 1:
                    continue
                j = i + sx
            elif d == 2:
                if y == 0:
                    continue
                j = i - nz
            elif d == 3:
                if y == ny - 1:
                    continue
                j = i + nz
            elif d == 4:
                if z == 0:
                    continue
                j = i - 1
            else:
                if z == nz - 1:
                    continue
                j = i + 1
            if flat[j] == 0 and allow[j]:
                flat[j] = v
                queue[tail] = j
                tail += 1


def grow(labels, allowed):
    """Grow the nonzero ``labels`` (int32, 3D) into ``allowed`` voxels (bool, same shape),
    breadth-first, 6-connected; returns a new int32 array (0 where not reached)."""
    lab = np.ascontiguousarray(labels, dtype=np.int32).copy()
    allow = np.ascontiguousarray(allowed, dtype=np.bool_)
    if lab.shape != allow.shape or lab.ndim != 3:
        raise ValueError(f"labels {lab.shape} and allowed {allow.shape} must be the same 3D shape")
    _grow_kernel(lab.reshape(-1), allow.reshape(-1), np.asarray(lab.shape, dtype=np.int64))
    return lab


def flood_by_level(cost, labels, mask, levels):
    """Seeded flooding in order of rising ``cost`` (float, 3D): for each of the increasing
    ``levels``, the labels grow (:func:`grow`) into the ``mask`` voxels of cost <= level; last
    into the whole mask. Returns int32 labels (0 where not reached)."""
    lab = np.where(mask, labels, 0).astype(np.int32)
    for level in levels:
        lab = grow(lab, mask & (cost <= level))
    return grow(lab, mask)


def grow_reference(labels, allowed):
    """Numpy reference of :func:`grow`: one 6-neighbour step per round; a voxel reached by
    several labels in the same round takes the label of its neighbour first in C order (the
    queue order of the breadth-first kernel). For tests: slow."""
    lab = np.asarray(labels, dtype=np.int32).copy()
    allow = np.asarray(allowed, dtype=bool)
    order = np.full(lab.shape, -1, dtype=np.int64)  # rank of reaching, for the tie-breaks
    flat_order = order.reshape(-1)
    seeds = np.flatnonzero(lab.reshape(-1))
    flat_order[seeds] = np.arange(len(seeds))
    rank = len(seeds)
    front = seeds
    shape = lab.shape
    while len(front):
        new = {}
        # the kernel pops the front in its queue order and gives each neighbour the first label
        for i in front[np.argsort(flat_order[front], kind="stable")]:
            x, y, z = np.unravel_index(i, shape)
            for dx, dy, dz in ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)):
                a, b, c = x + dx, y + dy, z + dz
                if not (0 <= a < shape[0] and 0 <= b < shape[1] and 0 <= c < shape[2]):
                    continue
                j = np.ravel_multi_index((a, b, c), shape)
                if lab[a, b, c] == 0 and allow[a, b, c] and j not in new:
                    new[j] = lab[x, y, z]
        for j, v in new.items():
            lab.reshape(-1)[j] = v
            flat_order[j] = rank
            rank += 1
        front = np.fromiter(new.keys(), dtype=np.int64, count=len(new))
    return lab
