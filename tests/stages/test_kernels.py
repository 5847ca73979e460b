"""Every numba kernel against a plain numpy/scipy reference, on random float32 inputs."""

import platform

import numpy as np
import pytest
from scipy import ndimage as ndi

from microbleeds.stages import prepare, segment
from microbleeds.stages import seeds as detect

RNG = np.random.default_rng(1234)
ON_GLIBC = platform.libc_ver()[0] == "glibc"
"""The phase kernels' sine and cosine are glibc's float32 sinf / cosf ported to numba: bit for bit
with numpy only where numpy calls glibc (elsewhere deterministic, within 1 ulp)."""


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


@pytest.mark.parametrize("vox", [(0.5, 5.0, 5.0), (5.0, 0.4, 5.0), (5.0, 5.0, 0.3), (0.2, 0.3, 0.25)])
def test_erosion_along_each_axis_matches_minimum_filter(vox):
    """Each axis's loop nest alone, and windows longer than the axis (clipped to the image)."""
    mask = ndi.binary_closing(RNG.random((23, 19, 11)) > 0.1, iterations=1)
    for margin in (0.9, 2.0, 4.0):
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
                   prepare._divide_by_upsampled, prepare._block_sums_all, prepare._fortran_copy, segment._grow):
        assert kernel._cache.__class__.__name__ != "NullCache", kernel
    rel = RNG.random((12, 12, 8)).astype(np.float32)  # the FRST kernel compiles (or loads) for float32 here
    detect.frst_response(rel, (0.5, 0.5, 1.0), (1.0, 2.0), 0.5)
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


def _box_geometry_reference(shape, lo, centre, A):
    """numpy reference of the dipole fit's box geometry: voxel indices, world offsets, distances."""
    grids = np.meshgrid(*[np.arange(lo[d], lo[d] + shape[d], dtype=np.float64) for d in range(3)], indexing="ij")
    ijk = np.stack(grids, axis=-1)
    rel = (ijk - centre) @ A.T
    return ijk, rel, np.linalg.norm(rel, axis=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dipole_box_kernels_match_numpy(dtype):
    """The dipole fit's per-box loops (far shell, darkness centroid, shell samples) against numpy,
    on an oblique affine and a strided sub-box of a larger image."""
    from microbleeds.stages import dipole_sign as D

    A = np.array([[0.5, 0.1, 0.0], [-0.05, 0.45, 0.2], [0.02, -0.1, 1.1]])
    big_ph = RNG.uniform(-np.pi, np.pi, (30, 28, 20)).astype(dtype)
    big_ph[3, 4, 5] = np.nan
    big_mag = (RNG.random((30, 28, 20)) * 1.5).astype(dtype)
    box = (slice(4, 25), slice(3, 26), slice(2, 17))
    ph, mag = big_ph[box], big_mag[box]  # views, not contiguous
    lo = np.array([b.start for b in box], np.int64)
    centre = np.array([14.3, 13.8, 9.6])
    b0 = D._unit((0.1, 0.0, 1.0))
    a, r_out = 1.2, 4.0
    ijk, rel, r = _box_geometry_reference(ph.shape, lo, centre, A)
    M = mag.astype(np.float64)

    far = D._far_magnitudes(mag, lo, centre, A, a, r_out)
    want = M[(r > D.BACKGROUND_MIN_RADII * a) & (r <= r_out)]
    np.testing.assert_array_equal(far, want)
    bg = float(np.median(far))

    weighted, total = D._dark_centroid(mag, lo, centre, A, a, bg)
    dark = np.clip(1.0 - M / bg, 0.0, None) * (r <= D.REFINE_RADII * a)
    np.testing.assert_allclose(total, dark.sum(), rtol=1e-12)
    np.testing.assert_allclose(weighted, (ijk * dark[..., None]).sum(axis=(0, 1, 2)), rtol=1e-12)

    refined = weighted / total
    m_u, w_u, psi_u = D._shell_samples(ph, mag, -1.0, lo, refined, A, b0, a, r_out, bg)
    _, rel, r = _box_geometry_reference(ph.shape, lo, refined, A)
    psi = ph.astype(np.float64) * -1
    w = np.clip(M / bg, 0.0, 1.0) ** 2
    sel = np.flatnonzero((r > a) & (r <= r_out) & (w > D.MIN_WEIGHT) & np.isfinite(psi))
    assert 50 < sel.size < ph.size
    np.testing.assert_allclose(m_u, D._dipole_pattern(rel @ b0, r, a).ravel()[sel], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(w_u, w.ravel()[sel])
    np.testing.assert_array_equal(psi_u, psi.ravel()[sel])


def test_dipole_kernels_are_cached_with_float32_signatures():
    from microbleeds.stages import dipole_sign as D

    for kernel in (D._coherence_kernel, D._far_magnitudes, D._dark_centroid, D._shell_samples):
        assert kernel._cache.__class__.__name__ != "NullCache", kernel
    for kernel in (D._far_magnitudes, D._dark_centroid, D._shell_samples):
        assert any("float32" in str(s) for s in kernel.signatures), kernel


def test_filters_on_the_reach_box_match_the_whole_volume():
    """The handedness estimate's Gaussians run on the box the voxels need: bit for bit the whole
    volume's values there."""
    from microbleeds.stages import dipole_sign as D

    mag = (RNG.random((40, 36, 24)) + 0.5).astype(np.float32)
    mask = np.zeros(mag.shape, bool)
    mask[12:30, 9:27, 6:20] = RNG.random((18, 18, 14)) > 0.2
    vox = np.array([0.5, 0.6, 1.0])
    sigma = [D.LOCAL_MEAN_SIGMA_MM / v for v in vox]
    got = D._relative_magnitude(mag, mask, vox)
    local = ndi.gaussian_filter(mag * mask, sigma, mode="nearest")
    norm = ndi.gaussian_filter(mask.astype(np.float32), sigma, mode="nearest")
    want = np.divide(mag, local / np.maximum(norm, 1e-6), out=np.ones_like(mag), where=local > 0)
    np.testing.assert_array_equal(got[mask], want[mask])

    idx = np.nonzero(mask & (RNG.random(mag.shape) > 0.7))
    A = np.diag(vox)
    H = D._hessian_world_at(mag, idx, vox, A, 0.7)
    sig = [0.7 / v for v in vox]
    full = ndi.gaussian_filter(mag, sig, order=[1, 1, 0], mode="nearest", truncate=4.0)[idx]
    Ainv = np.linalg.inv(A).astype(np.float32)
    np.testing.assert_array_equal(H[:, 0, 1], (full * Ainv[0, 0] * Ainv[1, 1]).astype(np.float32))


@pytest.mark.skipif(not ON_GLIBC, reason="bit for bit with glibc's sinf / cosf only")
def test_polar_kernel_is_numpy_complex64_bit_for_bit():
    """The homodyne filter's complex image (numba) against ``mag * exp(1j * ph)`` in numpy, on a
    strided view, zeros and negative zeros included."""
    from microbleeds.stages import phase

    ph = RNG.uniform(-np.pi, np.pi, (21, 18, 14)).astype(np.float32)
    mag = RNG.random((21, 18, 14)).astype(np.float32)
    mag[::3, 2, :] = 0.0
    mag[1, ::2, :] = -0.0
    ph[4, 4, :] = 0.0
    got = phase._complex(mag[:, ::2, 1:], ph[:, ::2, 1:])
    want = (mag[:, ::2, 1:] * np.exp(1j * ph[:, ::2, 1:])).astype(np.complex64)
    assert got.dtype == np.complex64
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert phase._polar_kernel._cache.__class__.__name__ != "NullCache"
    assert all("float32" in str(s) for s in phase._polar_kernel.signatures)


def test_squared_block_means_match_the_square_then_block_sums():
    """The mask's coarse M^2 (squared inside the kernel) is bit for bit the float32 square's block means."""
    vol = (RNG.random((13, 11, 7)) * 300).astype(np.float32)
    factors = (3, 4, 2)
    sums, counts = prepare.block_sums(np.square(vol, dtype=np.float32), np.ones(vol.shape, bool), factors)
    np.testing.assert_array_equal(prepare.block_mean(vol, factors, square=True),
                                  (sums / np.maximum(counts, 1)).astype(np.float32))
    sums, counts = prepare.block_sums_reference(vol, np.ones(vol.shape, bool), factors)
    np.testing.assert_allclose(prepare.block_mean(vol, factors), sums / np.maximum(counts, 1), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int32, np.float32])
def test_fortran_copy_matches_numpy(dtype):
    """Tiled Fortran-order copy (odd sizes, flipped and transposed views) against np.asfortranarray."""
    base = (RNG.random((37, 70, 45)) * 100).astype(dtype)
    for view in (base, base[::-1, :, ::-1], base.transpose(2, 0, 1), base[3:30, ::2, 5:6]):
        got = prepare.fortran_copy(view)
        assert got.flags.f_contiguous and got.dtype == view.dtype
        np.testing.assert_array_equal(got, view)
        assert got.tobytes(order="A") == np.asfortranarray(view).tobytes(order="A")


def test_lesion_map_in_fortran_order_matches_from_canonical():
    """The lesion map painted straight onto the native grid equals from_canonical of the canonical
    map, for every axis permutation and flip."""
    import itertools
    from types import SimpleNamespace

    from microbleeds.io.nifti import from_canonical, to_canonical
    from microbleeds.stages.tabulate import lesion_map

    native_shape = (9, 12, 7)
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            affine = np.eye(4)
            affine[:3, :3] = np.eye(3)[:, perm] * np.array(signs)
            _, _, ornt = to_canonical(np.zeros(native_shape), affine)
            shape = tuple(native_shape[int(np.flatnonzero(ornt[:, 0] == a)[0])] for a in range(3))
            box = (slice(1, shape[0]), slice(0, shape[1]), slice(2, shape[2]))
            voxels = np.unique(RNG.integers(0, [shape[0] - 1, shape[1], shape[2] - 2], (40, 3)), axis=0)
            starts = np.array([0, 10, 25, len(voxels)])
            regions = type("Regions", (), {"voxels": voxels, "starts": starts, "__len__": lambda self: 3})()
            found = SimpleNamespace(box=box, regions=regions)
            ids = np.array([0, 2, 0, 1], np.int32)
            canonical = np.zeros(shape, np.int32)
            canonical[tuple((voxels + [1, 0, 2]).T)] = np.repeat(ids[1:], np.diff(starts))
            got = lesion_map(found, ids, shape, SimpleNamespace(ornt=ornt))
            assert got.flags.f_contiguous and got.dtype == np.int32
            np.testing.assert_array_equal(got, from_canonical(canonical, ornt))


@pytest.mark.skipif(not ON_GLIBC, reason="bit for bit with glibc's sinf / cosf only")
def test_sincosf_is_glibcs_sinf_and_cosf():
    """The inlined sine and cosine (vectorised loop, scalar, and glibc from 120) against math.sin /
    math.cos (glibc's sinf / cosf) on wide, dense and special arguments."""
    from microbleeds.stages.sincosf import libm_mismatches

    wide = (RNG.standard_cauchy(400_000) * 30).astype(np.float32)
    dense = RNG.uniform(-4 * np.pi, 4 * np.pi, 400_000).astype(np.float32)
    tiny = (RNG.uniform(-1, 1, 10_000) * 2.0 ** -10).astype(np.float32)
    edges = np.float32([0.0, -0.0, 2.0 ** -12, -(2.0 ** -12), 0.75, -0.75, np.nextafter(np.float32(0.75), 0),
                        119.99999, 120.0, -120.0, 1e30, 3e38, np.inf, -np.inf, np.nan, 1e-45])
    for values in (wide, dense, tiny, edges):
        assert libm_mismatches(np.ascontiguousarray(values)) == 0


@pytest.mark.skipif(not ON_GLIBC, reason="bit for bit with glibc's atan2f only")
def test_atan2f_is_glibcs_atan2f():
    """The vectorised atan2f (and its glibc fallback) against math.atan2 (glibc's atan2f) on normal,
    wide and random-bit arguments, ratios at the ends of atanf's reduction intervals, and special
    values (zeros of both signs, infinities, NaN, subnormals, 1)."""
    from microbleeds.stages.atan2f import libm_mismatches

    n = 300_000
    normal = [RNG.standard_normal(n).astype(np.float32) for _ in range(2)]
    wide = [(RNG.standard_normal(n) * 10.0 ** RNG.uniform(-30, 30, n)).astype(np.float32) for _ in range(2)]
    bits = [RNG.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32) for _ in range(2)]
    x = (RNG.uniform(0.5, 2, n) * RNG.choice([-1.0, 1.0], n)).astype(np.float32)
    bounds = RNG.choice([0.4375, 0.6875, 1.1875, 2.4375, 2.0**-29, 2.0**25, 1.0], n)
    near = [(x * bounds * (1 + RNG.uniform(-1e-6, 1e-6, n))).astype(np.float32), x]
    special = np.float32([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3e38, 2.0**-29, 2.0**25,
                          0.4375, 0.6875, 1.1875, 2.4375])
    grid = [g.ravel().copy() for g in np.meshgrid(special, special)]
    for y, x in (normal, wide, bits, near, grid):
        assert libm_mismatches(np.ascontiguousarray(y), np.ascontiguousarray(x)) == 0


@pytest.mark.parametrize("shape", [(7, 5, 3), (6, 9, 37)])
def test_phase_difference_kernel_is_numpy_bit_for_bit(shape):
    """The fused product and angle against numpy's ``angle(conj(lp) * z)`` (in place, as numpy evaluates
    it on large arrays) and ``angle(z * conj(lp))``, with a strided low-pass and special values."""
    from microbleeds.stages import phase

    z = (RNG.normal(size=shape) + 1j * RNG.normal(size=shape)).astype(np.complex64) * np.complex64(100)
    padded = (RNG.normal(size=(shape[0], shape[1] + 6, shape[2])) * 3).astype(np.complex64)
    padded.imag = RNG.normal(size=padded.shape)
    lp = padded[:, 2:2 + shape[1]]
    z.flat[:6] = [0, complex(np.inf, 1), complex(np.nan, 0), complex(0, -0.0), complex(-1, 0), complex(1, 1e-30)]
    # the fused kernel runs only where it gives numpy's numbers (no SVML arctan2: on AVX-512 machines numpy
    # dispatches there and the numpy expression runs instead); either way the result is numpy's, bit for bit
    for elided in (True, False):
        c = np.conj(lp)
        want = np.angle(np.multiply(c, z, out=c) if elided else z * c).astype(np.float32)
        got = phase._phase_difference(z, lp, elided)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        out = np.zeros((shape[0] + 2,) + shape[1:], np.float32)
        phase._phase_difference(z, lp, elided, out[1:-1])
        np.testing.assert_array_equal(out[1:-1].view(np.uint32), want.view(np.uint32))


def test_sincosf_kernels_are_cached_with_float32_signatures():
    from microbleeds.stages import dipole_sign as D
    from microbleeds.stages import phase
    from microbleeds.stages.sincosf import libm_mismatches

    from microbleeds.stages import atan2f

    for kernel in (libm_mismatches, D._symmetric_eigenvalues, D._tube_undecided, phase._polar_kernel,
                   D._coherence_kernel, D._model_coherence_kernel, atan2f.libm_mismatches,
                   phase._phase_difference_kernel):
        assert kernel._cache.__class__.__name__ != "NullCache", kernel
    assert all("float32" in str(s) for s in libm_mismatches.signatures)
    assert all("float32" in str(s) for s in D._symmetric_eigenvalues.signatures)


def test_symmetric_eigenvalues_match_numpy_within_their_bound():
    """Smith's formula (float64) against LAPACK in float64 (near-exact) and float32 (what the tube
    test uses): within rounding of the former, well within the bound of the latter; near-degenerate
    and diagonal matrices included; the lower triangle is the one read."""
    from microbleeds.stages import dipole_sign as D

    H = RNG.normal(size=(20_000, 3, 3)).astype(np.float32)
    H = (H + H.transpose(0, 2, 1)) / np.float32(2)
    H[:2000] = (np.eye(3) * RNG.normal(size=(2000, 1, 1)) + 1e-4 * H[:2000]).astype(np.float32)  # near-degenerate
    H[2000:3000] *= np.eye(3, dtype=np.float32)  # diagonal
    H[3000:4000] = np.tril(H[3000:4000]) + np.triu(RNG.normal(size=(1000, 3, 3)).astype(np.float32), 1)
    lower = np.tril(H) + np.transpose(np.tril(H, -1), (0, 2, 1))
    lam, bound = D._symmetric_eigenvalues(H)
    assert lam.dtype == np.float64 and np.all(np.diff(lam, axis=1) >= 0)
    norm = np.linalg.norm(lower.reshape(-1, 9).astype(np.float64), axis=1)
    near_exact = np.linalg.eigvalsh(lower.astype(np.float64))
    assert np.max(np.abs(lam - near_exact) / (norm + 1e-30)[:, None]) < 1e-7
    lapack32 = np.linalg.eigvalsh(H).astype(np.float64)  # float32 LAPACK reads the lower triangle
    assert np.all(np.abs(lam - lapack32) <= 0.01 * bound[:, None])


def test_every_stage_kernel_is_cached():
    """Every numba kernel of every stage module keeps its compiled code on disk (``cache=True``):
    found by walking the modules, so a new kernel cannot be left out of a list (inlined helpers are
    compiled into their callers)."""
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher

    import microbleeds.stages as stages

    found = []
    for info in pkgutil.iter_modules(stages.__path__):
        module = importlib.import_module(f"microbleeds.stages.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__:
                if obj.targetoptions.get("inline") == "always":
                    continue  # compiled into the kernels that call it
                found.append(f"{info.name}.{name}")
                assert obj._cache.__class__.__name__ != "NullCache", f"{info.name}.{name} is not cached"
    assert len(found) >= 30, found  # the walk did find the kernels


def test_per_fit_coherence_kernels_are_serial_and_couplings_independent():
    """The dipole fits' coherence kernels (hundreds of ~1 ms calls a scan) run serially: a parallel
    call waits for every worker thread. Each coupling's sums do not depend on the others: the
    couplings one at a time give the same bits as all at once."""
    from microbleeds.stages import dipole_sign as D

    for kernel in (D._coherence_kernel, D._model_coherence_kernel):
        assert not kernel.targetoptions.get("parallel"), kernel
        assert kernel.targetoptions.get("nogil"), kernel
    n = 2000
    m = RNG.normal(size=n).astype(np.float32)
    wc, ws = RNG.normal(size=n), RNG.normal(size=n)
    cs = np.geomspace(0.01, 10.0, 72).astype(np.float32)
    pos, neg = np.empty(cs.size), np.empty(cs.size)
    D._coherence_kernel(cs, m, wc, ws, pos, neg)
    for k in (0, 31, 71):
        one_pos, one_neg = np.empty(1), np.empty(1)
        D._coherence_kernel(cs[k:k + 1], m, wc, ws, one_pos, one_neg)
        assert one_pos[0] == pos[k] and one_neg[0] == neg[k]
