"""Every numba kernel against a plain numpy/scipy reference, on random float32 inputs."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from microbleeds import prepare, segment
from microbleeds import seeds as detect

RNG = np.random.default_rng(1234)


def test_gradient_matches_numpy():
    vol = RNG.random((9, 10, 11)).astype(np.float32)
    vox = np.array([0.5, 0.7, 2.0], np.float32)
    gx, gy, gz = detect.gradient_mm(vol, vox)
    ref = np.gradient(vol.astype(np.float64), *vox)
    inner = (slice(1, -1),) * 3
    for got, want in zip((gx, gy, gz), ref):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got[inner], want[inner], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("radius", [0.5, 1.3, 2.5])
def test_vote_matches_reference(radius):
    shape = (12, 13, 9)
    n = 400
    points = (RNG.random((n, 3)) * np.array(shape)).astype(np.float32)
    units = RNG.normal(size=(n, 3)).astype(np.float32)
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    mags = RNG.random(n).astype(np.float32)
    vox = np.array([0.6, 0.8, 1.5], np.float32)
    orientation = np.zeros(shape, np.float32)
    magnitude = np.zeros(shape, np.float32)
    detect._vote(points, units, mags, np.float32(radius), vox, orientation, magnitude)
    ref_o, ref_m = detect.vote_reference(points, units, mags, radius, vox, shape)
    np.testing.assert_allclose(orientation, ref_o, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(magnitude, ref_m, rtol=1e-4, atol=1e-5)


def test_accumulate_response_matches_numpy():
    o = (RNG.random((8, 8, 8)) * 6 - 1).astype(np.float32)
    m = RNG.random((8, 8, 8)).astype(np.float32)
    start = RNG.random((8, 8, 8)).astype(np.float32) * 0.3
    out = start.copy()
    detect._accumulate_response(o, m, np.float32(4.0), np.float32(1.7), np.float32(2.0), out)
    f = np.where(o > 0, m / 4.0 * np.minimum(o / 4.0, 1.0) ** 2 * 1.7, 0)
    np.testing.assert_allclose(out, np.maximum(start, f), rtol=1e-5)


def test_local_maxima_match_maximum_filter():
    response = RNG.random((15, 14, 13)).astype(np.float32)
    rel = RNG.random((15, 14, 13)).astype(np.float32)
    mask = RNG.random((15, 14, 13)) > 0.2
    got = np.asarray(detect._local_maxima(response, rel, mask, np.float32(0.3), np.float32(0.5))).reshape(-1, 3)
    is_max = response == ndi.maximum_filter(response, size=3, mode="constant", cval=-np.inf)
    darkest = ndi.minimum_filter(rel, size=3, mode="constant", cval=np.inf)
    want = np.argwhere(is_max & (response >= 0.3) & mask & (darkest <= 0.5))
    assert {tuple(x) for x in got} == {tuple(x) for x in want}


def test_divide_by_upsampled_matches_map_coordinates():
    magnitude = RNG.random((20, 18, 10)).astype(np.float32) + 0.5
    coarse = RNG.random((5, 5, 5)).astype(np.float32) + 0.5
    factors = np.array([4, 4, 2], np.int64)
    mask = RNG.random(magnitude.shape) > 0.3
    out = np.empty_like(magnitude)
    prepare._divide_by_upsampled(magnitude, coarse, factors, mask, out)
    ref = prepare.divide_by_upsampled_reference(magnitude, coarse, factors, mask)
    np.testing.assert_allclose(out, ref, rtol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_region_growing_matches_connected_component(seed):
    rng = np.random.default_rng(seed)
    rel = (1.0 - 0.6 * ndi.gaussian_filter(rng.random((24, 24, 12)), 1.5) * 3).astype(np.float32)
    rel = np.clip(rel + rng.normal(0, 0.05, rel.shape), 0, 2).astype(np.float32)
    mask = np.ones(rel.shape, bool)
    mask[:2] = False
    seed_vox = np.array(np.unravel_index(np.argmin(np.where(mask, rel, 9)), rel.shape))
    vox = np.array([0.5, 0.5, 1.0])
    regions = segment.grow_regions(rel, mask, seed_vox[None], vox, max_extent_mm=3.0, min_depth=0.0)
    want = segment.grow_reference(rel, mask, seed_vox, vox, 3.0)
    assert len(regions) == 1
    np.testing.assert_array_equal(regions.labels == 1, want)
    assert regions.labels.dtype == np.int32


def test_kernels_are_cached_float32():
    for kernel in (detect._gradient, detect._vote, detect._accumulate_response, detect._local_maxima,
                   prepare._divide_by_upsampled, segment._grow):
        assert kernel._cache.__class__.__name__ != "NullCache", kernel
    sig = [str(s) for s in detect._vote.signatures]
    assert any("float32" in s for s in sig)
