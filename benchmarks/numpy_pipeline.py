"""Plain numpy/scipy versions of the steps that ``microbleeds`` runs as numba kernels.

Used by ``benchmarks/run_speed.py`` to measure what the numba kernels buy. These are honest,
vectorised implementations of the same steps (not deliberately slow ones):

=========================  ==========================================================  ==================================
step                       numpy/scipy implementation                                  replaces (looked up at call time)
=========================  ==========================================================  ==================================
block sums (2 mm grid)     pad + reshape + sum over the block axes                          ``microbleeds.stages.prepare.block_sums``
mask upsampling            ``np.repeat`` per axis                                      ``microbleeds.stages.prepare.upsample_nearest``
background division        separable trilinear interpolation (gather + weights)        ``microbleeds.stages.prepare._divide_by_upsampled``
interior (erosion)         ``scipy.ndimage.minimum_filter`` (box, outside = inside)    ``microbleeds.stages.prepare.erode_mm``
FRST                       ``np.gradient`` + ``np.nonzero``; votes by ``np.bincount``  ``microbleeds.stages.seeds.frst_response``
                           on flat indices with trilinear weights; vectorised response
local maxima               ``scipy.ndimage.maximum_filter`` + tie rule + darkest check ``microbleeds.stages.seeds._local_maxima``
region growing             per seed: threshold a patch (ball) + ``scipy.ndimage.label``; ``microbleeds.stages.segment.grow_regions``
                           limit / contacts by dilation and minimum filter; the
                           package's own ``merge_touching``
=========================  ==========================================================  ==================================

``install()`` monkeypatches those names and returns a function that restores them.
Everything else (noise level, describe, rules, tabulate) is already numpy/scipy in the package
and is shared by both pipelines.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

import microbleeds.api as api
import microbleeds.stages.prepare as prepare
import microbleeds.stages.seeds as seeds
import microbleeds.stages.segment as segment


# ------------------------------------------------------------------------------------------------
# prepare
# ------------------------------------------------------------------------------------------------
def _pad_to_blocks(array, factors, fill):
    pad = [(0, (-n) % f) for n, f in zip(array.shape, factors)]
    return np.pad(array, pad, constant_values=fill) if any(p[1] for p in pad) else array


def _block_reduce(array, factors, dtype):
    """Sum over non-overlapping blocks: first over the x-factor (contiguous (fx, ny*nz) rows),
    then over the y and z factors of the much smaller result."""
    (nx, ny, nz), (fx, fy, fz) = array.shape, factors
    partial = array.reshape(nx // fx, fx, ny * nz).sum(axis=1, dtype=dtype)
    return partial.reshape(nx // fx, ny // fy, fy, nz // fz, fz).sum(axis=(2, 4))


def block_sums(volume, include, factors, reference=None, cutoff=0.0):
    """numpy :func:`microbleeds.stages.prepare.block_sums`: masked values, then block sums by reshape."""
    factors = tuple(int(f) for f in factors)
    vol = _pad_to_blocks(np.asarray(volume, np.float32), factors, 0.0)
    keep = _pad_to_blocks(np.asarray(include, bool), factors, False)
    if reference is not None and cutoff > 0:
        ref = np.asarray(reference, np.float32)
        for axis, f in enumerate(factors):
            ref = np.repeat(ref, f, axis=axis)
        keep = keep & (vol >= np.float32(cutoff) * ref)
    sums = _block_reduce(np.where(keep, vol, np.float32(0)), factors, np.float64)
    counts = _block_reduce(keep, factors, np.int32).astype(np.float64)
    return sums, counts


def upsample_nearest(coarse, factors, shape):
    """numpy :func:`microbleeds.stages.prepare.upsample_nearest`."""
    out = coarse
    for axis, f in enumerate(factors):
        out = np.repeat(out, int(f), axis=axis)
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])


def _linear_weights(n, f, c):
    pos = (np.arange(n) + 0.5) / f - 0.5
    lo = np.clip(np.floor(pos).astype(np.int64), 0, c - 1)
    hi = np.minimum(lo + 1, c - 1)
    w = np.clip(pos - lo, 0.0, 1.0)
    return lo, hi, w


def _divide_by_upsampled(magnitude, coarse, factors, mask, out):
    """numpy :func:`microbleeds.stages.prepare._divide_by_upsampled`: separable trilinear upsampling
    (x, then y, then z), then one vectorised division."""
    b = coarse.astype(np.float64)
    for axis in range(3):
        lo, hi, w = _linear_weights(magnitude.shape[axis], factors[axis], coarse.shape[axis])
        shape = [1, 1, 1]
        shape[axis] = -1
        w = w.reshape(shape)
        if axis == 2:
            b = b.astype(np.float32)
            w = w.astype(np.float32)
        b = np.take(b, lo, axis=axis) * (1 - w) + np.take(b, hi, axis=axis) * w
    ok = mask & (b > 0)
    np.divide(magnitude, b, out=out, where=ok)
    out[~ok] = 1.0


def erode_mm(mask, voxel_size_mm, margin_mm):
    """scipy :func:`microbleeds.stages.prepare.erode_mm` (box erosion, beyond the image = inside)."""
    size = [2 * int(round(margin_mm / v)) + 1 for v in voxel_size_mm]
    return ndi.minimum_filter(mask.view(np.uint8), size=size, mode="constant", cval=1).view(bool)


# ------------------------------------------------------------------------------------------------
# FRST
# ------------------------------------------------------------------------------------------------
def strong_gradients(rel, voxel_size_mm, threshold):
    """np.gradient + np.nonzero version of :func:`microbleeds.stages.seeds.strong_gradients`."""
    vol = np.asarray(rel, np.float32)
    vox = np.asarray(voxel_size_mm, np.float32)
    grads = np.gradient(vol, *vox)
    g2 = grads[0] * grads[0]
    g2 += grads[1] * grads[1]
    g2 += grads[2] * grads[2]
    strong = g2 > np.float32(threshold) ** 2
    strong[[0, -1], :, :] = False
    strong[:, [0, -1], :] = False
    strong[:, :, [0, -1]] = False
    idx = np.nonzero(strong)
    mags = np.sqrt(g2[idx])
    units = np.stack([g[idx] for g in grads], axis=1) / mags[:, None]
    return np.stack(idx, axis=1).astype(np.float32), units.astype(np.float32), mags.astype(np.float32)


def _votes(points, units, mags, radius_mm, vox, shape):
    """Orientation and magnitude vote maps: trilinear splat of (point - radius * unit) by
    one np.bincount over flat indices of all 8 corners."""
    target = points - units * (np.float32(radius_mm) / vox)
    base = np.floor(target)
    frac = target - base
    base = base.astype(np.int64)
    dims = np.asarray(shape)
    flat, weights, mag_w = [], [], []
    for corner in np.ndindex(2, 2, 2):
        c = np.asarray(corner)
        pos = base + c
        ok = np.all((pos >= 0) & (pos < dims), axis=1)
        w = np.prod(np.where(c, frac, 1 - frac), axis=1)[ok]
        p = pos[ok]
        flat.append((p[:, 0] * shape[1] + p[:, 1]) * shape[2] + p[:, 2])
        weights.append(w)
        mag_w.append(w * mags[ok])
    flat = np.concatenate(flat)
    size = int(np.prod(shape))
    orientation = np.bincount(flat, np.concatenate(weights), minlength=size).reshape(shape)
    magnitude = np.bincount(flat, np.concatenate(mag_w), minlength=size).reshape(shape)
    return orientation, magnitude


def frst_response(rel, voxel_size_mm, radii_mm, gradient_threshold):
    """numpy :func:`microbleeds.stages.seeds.frst_response`: the same radius bands and normalisers
    (``seeds.radius_bands``, ``seeds.calibrate``), votes by ``np.bincount``."""
    vox = tuple(float(v) for v in voxel_size_mm)
    points, units, mags = strong_gradients(rel, np.asarray(vox, np.float32), gradient_threshold)
    response = np.zeros(rel.shape, np.float32)
    for band in seeds.radius_bands(radii_mm, vox):
        k_norm, scale = seeds.calibrate(tuple(band), vox, round(float(gradient_threshold), 9))
        orientation = np.zeros(rel.shape)
        magnitude = np.zeros(rel.shape)
        for radius in band:
            o, m = _votes(points, units, mags, radius, np.asarray(vox, np.float32), rel.shape)
            orientation += o
            magnitude += m
        voted = orientation > 0
        ratio = np.minimum(orientation / k_norm, 1.0)
        f = np.where(voted, magnitude / np.where(voted, orientation, 1.0) * ratio * ratio * scale, 0.0)
        np.maximum(response, f, out=response, casting="same_kind")
        del orientation, magnitude, ratio, f
    return response


# ------------------------------------------------------------------------------------------------
# local maxima
# ------------------------------------------------------------------------------------------------
_OFFSETS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
_EARLIER = _OFFSETS[(_OFFSETS @ np.array([9, 3, 1])) < 0]


def _neighbour_values(volume, points, offsets):
    """volume at points + each offset (clipped to the image: a clipped neighbour is the voxel
    itself or another neighbour, so maxima / minima are unchanged); shape (n, len(offsets))."""
    pos = points[:, None, :] + offsets[None, :, :]
    pos = np.clip(pos, 0, np.asarray(volume.shape) - 1)
    return volume[pos[..., 0], pos[..., 1], pos[..., 2]]


def _local_maxima(response, rel, mask, min_response, max_rel):
    """scipy :func:`microbleeds.stages.seeds._local_maxima`: maximum_filter, the same tie rule (an
    equal neighbour earlier in C order wins) and the same darkest-voxel condition."""
    peak = ndi.maximum_filter(response, size=3, mode="nearest")
    points = np.argwhere((response >= min_response) & (response >= peak) & mask)
    if len(points):
        v = response[tuple(points.T)]
        pos = points[:, None, :] + _EARLIER[None, :, :]
        inside = np.all((pos >= 0) & (pos < np.asarray(response.shape)), axis=2)
        tied = (_neighbour_values(response, points, _EARLIER) == v[:, None]) & inside
        points = points[~tied.any(axis=1)]
    if len(points):
        darkest = _neighbour_values(rel, points, _OFFSETS).min(axis=1)
        points = points[darkest <= max_rel]
    return points.astype(np.int64)


# ------------------------------------------------------------------------------------------------
# region growing
# ------------------------------------------------------------------------------------------------
_CUBE = np.ones((3, 3, 3), bool)


def grow_regions(rel, mask, seed_points, voxel_size_mm, max_extent_mm, depth_fraction=0.5, min_depth=0.1):
    """scipy :func:`microbleeds.stages.segment.grow_regions`: per seed, threshold a patch around it
    (inside the growth ball, free voxels only) and keep the 26-connected component of its
    darkest voxel; limit flag and region contacts from the region's 26-neighbourhood; then the
    package's own ``merge_touching``. Same results as the numba BFS (voxel order: C order)."""
    vox = np.asarray(voxel_size_mm, float)
    radius_vox = max_extent_mm / vox
    reach = np.floor(radius_vox).astype(int) + 1
    shape = np.asarray(rel.shape)
    labels = np.zeros(rel.shape, np.int32)
    seed_points = np.asarray(seed_points, np.int64).reshape(-1, 3)
    thresholds = np.zeros(len(seed_points) + 1, np.float32)
    voxels, starts, centres, depths, limits, contacts = [], [0], [], [], [], []
    for seed in seed_points:
        if labels[tuple(seed)] != 0:
            continue
        lo1, hi1 = np.maximum(seed - 1, 0), np.minimum(seed + 2, shape)
        w = tuple(slice(a, b) for a, b in zip(lo1, hi1))
        window = np.where((labels[w] == 0) & mask[w], rel[w], np.inf)
        centre = seed
        if window.min() < rel[tuple(seed)]:
            centre = lo1 + np.array(np.unravel_index(np.argmin(window), window.shape))
        depth = 1.0 - float(rel[tuple(centre)])
        if depth < np.float32(min_depth):
            continue
        threshold = 1.0 - float(np.float32(depth_fraction)) * depth
        label = len(centres) + 1
        thresholds[label] = threshold
        lo, hi = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        p_rel = rel[box].astype(np.float64)
        p_labels = labels[box]
        p_mask = mask[box]
        grids = np.ogrid[tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, centre))]
        ball = sum((g / r) ** 2 for g, r in zip(grids, radius_vox)) <= 1.0
        below = (p_rel < threshold) & p_mask
        free = below & (p_labels == 0)
        local = tuple(centre - lo)
        candidates = free & ball
        candidates[local] = True
        comp, _ = ndi.label(candidates, structure=_CUBE)
        region = comp == comp[local]
        near = ndi.binary_dilation(region, _CUBE) & ~region
        limit = bool((near & free & ~ball).any())
        touching = near & below & (p_labels != 0)
        if touching.any():
            darkest_next = ndi.minimum_filter(np.where(region, p_rel, np.inf), size=3, mode="constant",
                                              cval=np.inf)
            other = p_labels[touching]
            hit = darkest_next[touching] < thresholds[other]
            contacts.extend((np.int32(label), np.int32(o)) for o in np.unique(other[hit]))
        p_labels[region] = label
        voxels.append(np.argwhere(region) + lo)
        starts.append(starts[-1] + len(voxels[-1]))
        centres.append(centre)
        depths.append(depth)
        limits.append(limit)
    regions = segment.Regions(
        labels,
        np.concatenate(voxels).astype(np.int64) if voxels else np.zeros((0, 3), np.int64),
        np.asarray(starts, np.int64),
        np.asarray(centres, np.int64).reshape(-1, 3),
        np.asarray(depths, np.float32),
        np.asarray(limits, bool),
    )
    return segment.merge_touching(regions, contacts)


# ------------------------------------------------------------------------------------------------
# installing
# ------------------------------------------------------------------------------------------------
PATCHES = (
    (prepare, "block_sums", block_sums),
    (prepare, "upsample_nearest", upsample_nearest),
    (prepare, "_divide_by_upsampled", _divide_by_upsampled),
    (api, "erode_mm", erode_mm),
    (seeds, "frst_response", frst_response),
    (seeds, "strong_gradients", strong_gradients),
    (seeds, "_local_maxima", _local_maxima),
    (api, "grow_regions", grow_regions),
)


def install():
    """Replace the numba-backed names by the numpy versions; returns an ``uninstall`` function."""
    saved = [(module, name, getattr(module, name)) for module, name, _ in PATCHES]
    for module, name, function in PATCHES:
        setattr(module, name, function)

    def uninstall():
        for module, name, function in saved:
            setattr(module, name, function)

    return uninstall
