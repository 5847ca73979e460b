"""The FRST kernel's float32 sums bit for bit: a numpy replay of its arithmetic, any slab size."""

import numpy as np
import pytest

from microbleeds.stages import seeds


def _votes(points, units, mags, radius, vox, shape):
    """Flat voxel index and float64 weight of every corner of every vote, point by point (the
    kernel's order): ``t = point - unit * radius / vox`` in float32, weights ``(wx * wy) * wz``."""
    r = np.float32(radius)
    t = points - units * r / np.asarray(vox, np.float32)
    base = np.floor(t).astype(np.int64)
    frac = t.astype(np.float64) - base
    idx, wts, owner = [], [], []
    for c in np.ndindex(2, 2, 2):
        w = np.ones(len(points))
        for a in range(3):
            w = w * (frac[:, a] if c[a] else 1 - frac[:, a])
        pos = base + np.asarray(c)
        ok = np.all((pos >= 0) & (pos < np.asarray(shape)), axis=1)
        idx.append(np.ravel_multi_index(tuple(pos[ok].T), shape))
        wts.append(w[ok])
        owner.append(np.nonzero(ok)[0])
    idx, wts, owner = (np.concatenate(x) for x in (idx, wts, owner))
    order = np.argsort(owner, kind="stable")  # point by point, each point's corners in turn
    return idx[order], wts[order], owner[order]


def frst_float32_replay(points, units, mags, shape, bands, k_norms, scales, vox):
    """:func:`seeds._transform`'s values by numpy: ``O``, ``M`` float32, each vote added as
    ``float32(float64(O) + w)`` and ``float32(float64(M) + w * mag)`` in the kernel's order."""
    response = np.zeros(int(np.prod(shape)), np.float32)
    for band, k, scale in zip(bands, k_norms, scales):
        o = np.zeros_like(response)
        m = np.zeros_like(response)
        for radius in band:
            idx, w, owner = _votes(points, units, mags, radius, vox, shape)
            np.add.at(o, idx, w)  # float64 loop, stored as float32, in index-list order
            np.add.at(m, idx, w * mags[owner].astype(np.float64))
        hit = o > 0
        ratio = np.minimum(o[hit] / np.float32(k), np.float32(1.0))
        f = m[hit] / o[hit] * ratio * ratio * np.float32(scale)
        response[hit] = np.maximum(response[hit], f)
    return response.reshape(shape)


def _random_votes(rng, shape, n):
    points = np.floor(rng.random((n, 3)) * np.array(shape)).astype(np.float32)
    points = points[np.argsort(points[:, 0], kind="stable")]
    units = rng.normal(size=(n, 3)).astype(np.float32)
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    return points, units, rng.random(n).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_transform_is_the_float32_replay_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    shape, vox = (23, 17, 11), (0.45, 0.6, 1.2)
    points, units, mags = _random_votes(rng, shape, 2500)  # many votes on the grid's faces: both paths
    bands, k_norms, scales = [[0.5], [1.1, 1.3, 1.5], [2.5, 2.8]], [2.0, 3.5, 6.0], [1.0, 0.7, 1.3]
    got = seeds._transform(points, units, mags, shape, bands, k_norms, scales, vox)
    want = frst_float32_replay(points, units, mags, shape, bands, k_norms, scales, vox)
    assert got.dtype == np.float32 and (want > 0).sum() > 1000
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_transform_does_not_depend_on_the_slab_size(monkeypatch):
    rng = np.random.default_rng(7)
    shape, vox = (19, 13, 9), (0.5, 0.5, 1.0)
    points, units, mags = _random_votes(rng, shape, 1500)
    args = (points, units, mags, shape, [[0.7, 0.9], [1.8, 2.2]], [2.0, 4.0], [1.0, 0.8], vox)
    results = []
    for slab in (1, 3, seeds.SLAB_PLANES, 64):
        monkeypatch.setattr(seeds, "SLAB_PLANES", slab)
        results.append(seeds._transform(*args).view(np.uint32))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
