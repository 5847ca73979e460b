"""Every numba kernel against a plain numpy/scipy reference, on random float32 inputs."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from microbleeds.stages import prepare, segment
from microbleeds.stages import seeds as detect

RNG = np.random.default_rng(1234)


def test_strong_gradients_match_numpy():
    vol = RNG.random((9, 10, 11)).astype(np.float32)
    vox = np.array([0.5, 0.7, 2.0], np.float32)
    points, units, mags = detect.strong_gradients(vol, vox, 0.5)
    ref_points, ref_units, ref_mags = detect.strong_gradients_reference(vol, vox, 0.5)
    assert points.dtype == units.dtype == mags.dtype == np.float32
    assert len(points) > 50
    np.testing.assert_array_equal(points, ref_points)
    np.testing.assert_allclose(units, ref_units, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mags, ref_mags, rtol=1e-4)


def test_block_sums_match_numpy():
    vol = RNG.random((13, 11, 7)).astype(np.float32)
    include = RNG.random(vol.shape) > 0.3
    reference = RNG.random((5, 4, 4)).astype(np.float32)
    for ref, cutoff in ((None, 0.0), (reference, 0.8)):
        got = prepare.block_sums(vol, include, (3, 3, 2), ref, cutoff)
        want = prepare.block_sums_reference(vol, include, (3, 3, 2), ref, cutoff)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.3])
def test_erosion_matches_minimum_filter(margin):
    mask = RNG.random((20, 17, 9)) > 0.15
    mask = ndi.binary_closing(mask, iterations=2)
    vox = (0.5, 0.9, 1.8)
    np.testing.assert_array_equal(prepare.erode_mm(mask, vox, margin), prepare.erode_reference(mask, vox, margin))


@pytest.mark.parametrize("shape", [(12, 13, 9), (29, 7, 6)])
def test_transform_matches_reference(shape):
    n = 600
    points = (RNG.random((n, 3)) * np.array(shape)).astype(np.float32)
    points = points[np.argsort(points[:, 0], kind="stable")]
    points[:, 0] = np.floor(points[:, 0])  # gradient voxels sit on planes
    units = RNG.normal(size=(n, 3)).astype(np.float32)
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    mags = RNG.random(n).astype(np.float32)
    vox = (0.6, 0.8, 1.5)
    bands, k_norms, scales = [[0.5], [1.1, 1.3, 1.5], [2.5, 2.8]], [2.0, 3.5, 6.0], [1.0, 0.7, 1.3]
    got = detect._transform(points, units, mags, shape, bands, k_norms, scales, vox)
    want = detect.frst_reference(points, units, mags, shape, bands, k_norms, scales, vox)
    assert got.dtype == np.float32 and want.max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_ideal_ball_scores_its_contrast():
    vox = (0.5, 0.5, 1.0)
    ball, centre = detect.ideal_ball(1.5, vox, contrast=0.6)
    response = detect.frst_response(ball, vox, [1.0, 1.5, 2.0], 0.05)
    assert abs(response[centre] - 0.6) < 0.1
    assert np.unravel_index(np.argmax(response), response.shape) == centre


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
    for kernel in (detect._count_strong, detect._fill_strong, prepare._block_sums, prepare._erode_axis, detect._frst_slabs, detect._local_maxima,
                   prepare._divide_by_upsampled, segment._grow):
        assert kernel._cache.__class__.__name__ != "NullCache", kernel
    sig = [str(s) for s in detect._frst_slabs.signatures]
    assert any("float32" in s for s in sig)


def test_dipole_coherence_matches_numpy():
    """The dipole fit's coherence sums (numba, float32 model phase) against complex numpy."""
    from microbleeds.stages import dipole_sign

    n = 3000
    model = RNG.normal(size=n)
    weights = RNG.random(n)
    phase = RNG.uniform(-np.pi, np.pi, n)
    couplings = np.geomspace(0.01, 10.0, 72)
    pos, neg = dipole_sign._coherence_both_signs(couplings, model, weights, phase)
    phasors = weights * np.exp(1j * phase)
    rotations = np.exp(-1j * np.outer(couplings, model))
    np.testing.assert_allclose(pos, np.abs(rotations @ phasors), rtol=1e-5, atol=1e-6 * weights.sum())
    np.testing.assert_allclose(neg, np.abs(np.conj(rotations) @ phasors), rtol=1e-5, atol=1e-6 * weights.sum())
    assert not np.allclose(pos, neg)  # the two signs are told apart
