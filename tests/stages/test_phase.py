"""Tests of microbleeds.stages.phase: echo combination, high-pass, SWI, mIP, compute_swi.
The phase file's scaling and loading are tested in tests/io/test_phase_file.py; the dipole sign
and the handedness estimate in test_dipole_sign.py.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from microbleeds.io.phase_file import load_phase
from microbleeds.stages import dipole_sign as D
from microbleeds.stages import phase as P

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "romeo-small-gre"



# --------------------------------------------------------------------------------------------
# scaling of the stored phase (io.phase_file)
# --------------------------------------------------------------------------------------------

def test_combine_magnitudes():
    te = np.array([4.0, 8.0, 12.0])
    t2s = np.array([20.0, 40.0])
    s = np.exp(-te[None, :] / t2s[:, None]).reshape(2, 1, 1, 3).astype(np.float32)
    rss = P.combine_magnitudes(s, method="rss")
    np.testing.assert_allclose(rss[:, 0, 0], np.sqrt((s[:, 0, 0] ** 2).sum(-1)), rtol=1e-6)
    opt = P.combine_magnitudes(s, te)  # auto -> t2star weights TE * S
    w = te * s[:, 0, 0]
    np.testing.assert_allclose(opt[:, 0, 0], (w * s[:, 0, 0]).sum(-1) / w.sum(-1), rtol=1e-6)
    assert np.all(opt[:, 0, 0] <= s[:, 0, 0].max(-1)) and np.all(opt > 0)


def test_combine_phases_recovers_frequency_with_wrapping():
    rng = np.random.default_rng(5)
    te = np.array([4.0, 8.0, 12.0])
    f_hz = rng.uniform(-60, 60, (20, 20, 4))  # up to 4.5 rad at 12 ms: wraps
    true = 2 * np.pi * f_hz[..., None] * te / 1000
    mag = np.exp(-te / 30.0) * np.ones(true.shape)
    wrapped_ = np.angle(np.exp(1j * true))
    hz = P.combine_phases(wrapped_, mag, te, output="hz")
    np.testing.assert_allclose(hz, f_hz, atol=1e-3)
    rad = P.combine_phases(wrapped_, mag, te, reference_te_ms=10.0)
    np.testing.assert_allclose(rad, 2 * np.pi * f_hz * 0.010, atol=1e-4)
    ppm = P.frequency_to_ppm(hz, 3.0)
    np.testing.assert_allclose(ppm, f_hz / (42.577478 * 3.0), rtol=1e-4)


# --------------------------------------------------------------------------------------------
# high-pass filters
# --------------------------------------------------------------------------------------------

def _ramp_with_feature(shape=(64, 64, 24)):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    bg = 0.35 * ijk[..., 0] - 0.2 * ijk[..., 1] + 0.1 * ijk[..., 2] + 0.002 * (
        (ijk - np.array(shape) / 2) ** 2).sum(-1)
    feat = np.zeros(shape)
    feat[30:33, 30:33, 10:13] = 0.8
    return np.angle(np.exp(1j * (bg + feat))), feat


@pytest.mark.parametrize("method,mode", [("homodyne", "2d"), ("homodyne", "3d"),
                                         ("gaussian", "2d"), ("gaussian", "3d")])
def test_highpass_removes_wrapped_background(method, mode):
    ph, feat = _ramp_with_feature()
    out = P.highpass_phase(None, ph, (1.0, 1.0, 1.0), method=method, window=64, sigma_mm=3.0,
                           mode=mode)
    assert out.dtype == np.float32 and out.shape == ph.shape
    inner = (slice(8, -8), slice(8, -8), slice(4, -4)) if mode == "3d" else (
        slice(8, -8), slice(8, -8), slice(None))
    away = np.ones(ph.shape, bool)
    away[24:40, 24:40, 6:17] = False
    resid = np.abs(out[inner][away[inner]])
    assert np.percentile(resid, 95) < 0.15  # background (wrapping many times) is gone
    assert out[31, 31, 11] > 0.4  # the small feature survives


def test_homodyne_window_scaling_and_4d():
    rng = np.random.default_rng(0)
    ph = rng.uniform(-np.pi, np.pi, (32, 32, 8, 2)).astype(np.float32)
    mag = rng.uniform(0.5, 1, ph.shape).astype(np.float32)
    four = P.homodyne_highpass(mag, ph, (1, 1, 2), window=32)
    one = P.homodyne_highpass(mag[..., 1], ph[..., 1], (1, 1, 2), window=32)
    np.testing.assert_allclose(four[..., 1], one, atol=1e-5)
    # window in mm: FOV 32 mm / 4 mm = 8 samples == 64 at a 256 matrix for n = 32
    a = P.homodyne_highpass(mag[..., 0], ph[..., 0], (1, 1, 2), window_mm=4.0)
    b = P.homodyne_highpass(mag[..., 0], ph[..., 0], (1, 1, 2), window=64)
    np.testing.assert_allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------------------------
# SWI and mIP
# --------------------------------------------------------------------------------------------

def test_phase_mask_and_swi():
    phi = np.array([-np.pi, -np.pi / 2, 0.0, np.pi / 2, np.pi], np.float32)
    np.testing.assert_allclose(P.phase_mask(phi, +1), [1, 1, 1, 0.5, 0], atol=1e-6)
    # phase_sign -1: Haacke's negative mask, 1 for positive phase, 0 at -pi
    np.testing.assert_allclose(P.phase_mask(phi, -1), [0, 0.5, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(P.phase_mask(phi, -1, "symmetric"), [0, .5, 1, .5, 0],
                               atol=1e-6)
    mag = np.full(5, 2.0, np.float32)
    np.testing.assert_allclose(P.swi(mag, phi, +1, power=4), 2 * P.phase_mask(phi, +1) ** 4)
    with pytest.raises(ValueError):
        P.phase_mask(phi, 0)


def test_minimum_intensity_projection_axis_and_slab():
    vol = np.ones((10, 12, 14), np.float32)
    vol[5, 6, 7] = 0.0
    # axis 0 points superior in this affine (permuted), 2 mm thick: 8 mm slab -> 5 slices
    aff = np.array([[0, 0.5, 0, 0], [0, 0, 0.5, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    assert P.slice_axis_from_affine(aff) == 0
    mip = P.minimum_intensity_projection(vol, aff, slab_mm=8.0)
    assert mip.shape == vol.shape
    assert np.all(mip[3:8, 6, 7] == 0) and mip[2, 6, 7] == 1 and mip[8, 6, 7] == 1
    assert mip[5, 5, 7] == 1 and mip[5, 6, 8] == 1


# --------------------------------------------------------------------------------------------
# real data: SWI darkens veins more than the magnitude does; compute_swi
# --------------------------------------------------------------------------------------------

@pytest.mark.skipif(not (REAL / "small_Mag.nii").exists(), reason="real data not available")
def test_real_swi_vein_contrast_gain():
    mimg = nib.load(str(REAL / "small_Mag.nii"))
    mag = np.asarray(mimg.dataobj.get_unscaled(), dtype=np.float32)
    ph, how = load_phase(REAL / "small_Phase.nii", mag.shape, mimg.affine)
    res = P.compute_swi(mag, ph, mimg.affine, echo_times_ms=[4, 8, 12], mip_slab_mm=4.0)
    cm = res.magnitude
    assert res.swi.shape == cm.shape == res.filtered_phase.shape == (51, 51, 41)
    veins = cm < np.percentile(cm, 5)  # darkest 5 % of the combined magnitude
    tissue = cm > np.percentile(cm, 30)

    def contrast(img):
        return 1 - img[veins].mean() / np.median(img[tissue])

    c_mag, c_swi = contrast(cm), contrast(res.swi)
    print(f"vein contrast magnitude {c_mag:.3f}, SWI {c_swi:.3f}, sign {res.phase_sign}, "
          f"{res.sign_evidence}")
    assert c_swi > c_mag + 0.02
    assert res.phase_sign in (1, -1)
    assert res.sign_evidence["confidence"] in ("high", "moderate")
    assert res.mip.shape == cm.shape and np.all(res.mip <= res.swi + 1e-6)
    assert res.frequency_hz is not None
    summary = res.summary(how)
    assert summary["phase_sign"] == res.phase_sign and "header scale" in summary["scaling"]
    json.dumps(summary)
    sym = P.compute_swi(mag, ph, mimg.affine, echo_times_ms=[4, 8, 12], phase_sign=1,
                        mask_kind="symmetric")
    print(f"symmetric-mask SWI contrast {contrast(sym.swi):.3f}")
    assert contrast(sym.swi) > c_swi
    # each echo on its own agrees on the convention
    hp = P.highpass_phase(mag, ph, (0.46875, 0.46875, 1.0), mode="3d")
    for e in range(3):
        assert D.estimate_phase_sign(hp[..., e], mag[..., e], mimg.affine)[0] == res.phase_sign


def test_compute_swi_single_echo_forced_sign():
    rng = np.random.default_rng(9)
    mag = rng.uniform(0.5, 1.0, (24, 24, 12)).astype(np.float32)
    ph = rng.uniform(-np.pi, np.pi, mag.shape).astype(np.float32)
    res = P.compute_swi(mag, ph, np.diag([1, 1, 2, 1.0]), echo_times_ms=[20.0], phase_sign=-1,
                        method="gaussian", sigma_mm=3.0)
    assert res.phase_sign == -1 and res.sign_evidence["method"] == "forced"
    np.testing.assert_allclose(res.swi, P.swi(mag, res.filtered_phase, -1, 4))
    np.testing.assert_allclose(res.frequency_hz, res.filtered_phase / (2 * np.pi * 0.020),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="echo times"):
        P.compute_swi(np.stack([mag, mag], -1), np.stack([ph, ph], -1), np.eye(4))


@pytest.mark.parametrize("axes", [[0, 1], [1, 2], [0, 1, 2]])
def test_windowed_lowpass_is_the_padded_fft_lowpass_bit_for_bit(axes):
    """The homodyne low-pass axis by axis (only the window's frequencies) against fftn / ifftn of
    the padded image: the same numbers wherever they are not zero."""
    from scipy import fft as sfft

    rng = np.random.default_rng(5)
    z = (rng.normal(size=(36, 30, 20)) + 1j * rng.normal(size=(36, 30, 20))).astype(np.complex64)
    pads, windows = [], []
    for a in axes:
        n = z.shape[a]
        n_pad = sfft.next_fast_len(n + 10)
        pads.append(((n_pad - n) // 2, n_pad - n - (n_pad - n) // 2))
        windows.append(P._hann_kspace(n_pad, 0.2 * n_pad).astype(np.float32))
    got = P._windowed_lowpass(z, axes, pads, windows)
    widths = [(0, 0)] * 3
    for a, pad in zip(axes, pads):
        widths[a] = pad
    k = sfft.fftn(np.pad(z, widths), axes=axes, workers=-1)
    for a, w in zip(axes, windows):
        shape = [1, 1, 1]
        shape[a] = w.size
        k *= w.reshape(shape)
    want = sfft.ifftn(k, axes=axes, workers=-1)[tuple(slice(p[0], p[0] + n) for p, n in zip(widths, z.shape))]
    assert got.dtype == np.complex64 and got.shape == z.shape
    nonzero = want != 0
    assert nonzero.all()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


# --------------------------------------------------------------------------------------------
# speed (issue 14): kernels and shared passes against the numpy / scipy computations they replace
# --------------------------------------------------------------------------------------------

def _numpy_swi(mag, phi, sign, power, kind):
    """The SWI as numpy computed it before the fused mask kernel."""
    psi = sign * np.asarray(phi, np.float32)
    if kind == "symmetric":
        psi = np.abs(psi)
    mask = np.clip(1.0 - psi / np.float32(np.pi), 0.0, 1.0).astype(np.float32)
    return mask, (mag * mask ** np.float32(power)).astype(np.float32)


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("kind", ["paramagnetic", "symmetric"])
def test_mask_kernel_and_swi_are_numpy_bit_for_bit(sign, kind):
    rng = np.random.default_rng(4)
    phi = rng.uniform(-4, 4, (17, 13, 9)).astype(np.float32)[:, ::2]  # beyond +-pi, not contiguous
    phi.flat[:7] = [np.nan, np.pi, -np.pi, 0.0, -0.0, np.inf, -np.inf]
    mag = rng.uniform(0, 2, phi.shape).astype(np.float32)
    want_mask, want_swi = _numpy_swi(mag, phi, sign, 4, kind)
    got_mask = P.phase_mask(phi, sign, kind)
    assert got_mask.dtype == np.float32
    np.testing.assert_array_equal(got_mask.view(np.uint32), want_mask.view(np.uint32))
    np.testing.assert_array_equal(P.swi(mag, phi, sign, 4, kind).view(np.uint32), want_swi.view(np.uint32))
    assert P._mask_kernel._cache.__class__.__name__ != "NullCache"
    assert all("float32" in str(s) for s in P._mask_kernel.signatures)


@pytest.mark.parametrize("slice_axis", [2, 0])
def test_homodyne_both_modes_share_passes_bit_for_bit(slice_axis):
    """The 2D and 3D homodyne filters from one complex image and shared forward transforms equal the
    two separate calls, 3D and single-echo 4D."""
    rng = np.random.default_rng(8)
    ph = rng.uniform(-np.pi, np.pi, (40, 36, 20)).astype(np.float32)
    mag = rng.uniform(0.2, 1, ph.shape).astype(np.float32)
    vox = (0.5, 0.5, 1.2)
    two, three = P._homodyne_both(mag, ph, vox, 48, None, slice_axis)
    for got, mode in ((two, "2d"), (three, "3d")):
        want = P.homodyne_highpass(mag, ph, vox, 48, None, mode, slice_axis)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    two4, three4 = P._homodyne_both(mag[..., None], ph[..., None], vox, 48, None, slice_axis)
    assert two4.shape == three4.shape == ph.shape + (1,)
    np.testing.assert_array_equal(two4[..., 0], two)
    np.testing.assert_array_equal(three4[..., 0], three)
    echoes_ph, echoes_mag = np.stack([ph, ph[::-1]], -1), np.stack([mag, mag[::-1]], -1)  # two echoes
    for got, mode in zip(P._homodyne_both(echoes_mag, echoes_ph, vox, 48, None, slice_axis), ("2d", "3d")):
        np.testing.assert_array_equal(got, P.homodyne_highpass(echoes_mag, echoes_ph, vox, 48, None, mode, slice_axis))


def test_compute_swi_estimated_sign_uses_the_same_filters():
    """With the sign estimated, compute_swi's filtered phase and SWI are those of the separate 2D
    filter (the 3D one feeds only the estimate)."""
    rng = np.random.default_rng(2)
    mag = rng.uniform(0.5, 1.0, (32, 32, 16)).astype(np.float32)
    ph = rng.uniform(-np.pi, np.pi, mag.shape).astype(np.float32)
    aff = np.diag([0.5, 0.5, 1.0, 1.0])
    res = P.compute_swi(mag, ph, aff)
    want = P.homodyne_highpass(mag, ph, (0.5, 0.5, 1.0), mode="2d", slice_axis=2)
    np.testing.assert_array_equal(res.filtered_phase, want)
    np.testing.assert_array_equal(res.swi, _numpy_swi(mag, want, res.phase_sign, 4, "paramagnetic")[1])


@pytest.mark.parametrize("shape", [(11, 9, 5), (70, 9, 37), (40, 33, 2, 3)])
def test_radians_of_fortran_data_are_c_ordered_with_the_same_values(shape):
    """nibabel's Fortran-ordered data are scaled and transposed to C order in one tiled pass (3D; other
    shapes keep their memory order), to numpy's values, out-of-range blocks included."""
    from microbleeds.io.phase_file import _radians, wrap_phase

    rng = np.random.default_rng(6)
    x = np.asfortranarray(rng.uniform(-4 * np.pi, 4 * np.pi, shape).astype(np.float32))
    x.flat[:5] = [np.pi, -np.pi, 0.0, -0.0, 2 * np.pi]
    x.flat[-50:] = rng.uniform(-np.pi, np.pi, 50)  # blocks and tiles all in range
    got = _radians(x)
    want = wrap_phase(x.astype(np.float64)).astype(np.float32)
    assert got.shape == x.shape
    assert got.flags.c_contiguous if x.ndim == 3 else got.flags.f_contiguous
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(_radians(x, 1.0, -2.0, 0.5), wrap_phase((x.astype(np.float64) - 1.0) / -2.0 * 0.5)
                                  .astype(np.float32))
    c = np.ascontiguousarray(x)  # C-ordered input: the flat kernel
    np.testing.assert_array_equal(_radians(c).view(np.uint32), want.view(np.uint32))


def test_finite_range_in_parallel_chunks():
    from microbleeds.io import phase_file as PF

    rng = np.random.default_rng(7)
    x = rng.normal(size=3 * PF._RANGE_CHUNK + 17).astype(np.float32)
    x[[5, PF._RANGE_CHUNK + 3, -1]] = [np.nan, np.inf, -np.inf]
    finite = x[np.isfinite(x)]
    assert PF._finite_range(x) == (float(finite.min()), float(finite.max()), finite.size)
    assert PF._finite_range(np.full(10, np.nan)) == (np.inf, -np.inf, 0)


@pytest.mark.parametrize("sigma", [(1.5, 2.3, 0.6), (8.9, 8.9, 3.3), (0.4, 0.0, 1.0), (7.0, 1.0, 30.0)])
@pytest.mark.parametrize("order", [(0, 0, 0), (1, 0, 1), (0, 2, 0), (2, 0, 0)])
def test_gaussian_filter_nearest_is_scipy_bit_for_bit(sigma, order):
    """Parallel passes against scipy.ndimage.gaussian_filter (mode nearest), including a sigma of 0 (axis
    left alone) and kernels longer than the axis (edge values repeated)."""
    from scipy import ndimage as ndi

    from microbleeds.stages import gaussian as G

    x = (np.random.default_rng(1).normal(size=(23, 19, 11)) * 100).astype(np.float32)
    order = tuple(o if s > 0 else 0 for o, s in zip(order, sigma))
    want = ndi.gaussian_filter(x, sigma, order=order, mode="nearest")
    got = G.gaussian_filter_nearest(x, sigma, order)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert G._pass_middle._cache.__class__.__name__ != "NullCache"
    assert all("float32" in str(s) for s in G._pass_middle.signatures + G._pass_last_at.signatures)


@pytest.mark.parametrize("sigma", [(1.5, 2.3, 0.6), (8.9, 8.9, 3.3), (7.0, 1.0, 30.0)])
def test_gaussian_on_the_lines_needed_is_scipy_bit_for_bit(sigma):
    """The region-restricted passes: scipy's values on each line's range of ``where`` (its first to
    last voxel along the last axis, gaps included), 0 elsewhere; empty lines and planes, kernels
    longer than the axes, several images at once."""
    from scipy import ndimage as ndi

    from microbleeds.stages import gaussian as G

    rng = np.random.default_rng(2)
    x = (rng.normal(size=(31, 27, 17)) * 100).astype(np.float32)
    y = rng.random(x.shape).astype(np.float32)
    where = rng.random(x.shape) < 0.05
    where[:4] = False
    where[:, 20:] = False
    images = [x.copy(), y.copy()]
    got = G.gaussian_filter_nearest_on(images, sigma, where)
    assert images == []
    lo, hi = G.line_ranges(where)
    k = np.arange(x.shape[2])
    on = (k >= lo[..., None]) & (k < hi[..., None])
    assert on[where].all() and on.sum() > where.sum()
    for image, out in zip((x, y), got):
        want = ndi.gaussian_filter(image, sigma, mode="nearest")
        np.testing.assert_array_equal(out[on].view(np.uint32), want[on].view(np.uint32))
        assert not out[~on].any()
    for kernel in (G._pass_first_on, G._pass_middle_on, G._pass_last_on):
        assert kernel._cache.__class__.__name__ != "NullCache"
        assert all("float32" in str(s) for s in kernel.signatures)
    with pytest.raises(ValueError, match="positive sigma"):
        G.gaussian_filter_nearest_on([x], (1.0, 0.0, 1.0), where)


@pytest.mark.parametrize("order", [(1, 0, 0), (2, 1, 0)])
def test_region_passes_match_the_whole_passes_for_derivatives(order):
    """Antisymmetric and asymmetric-length kernels (derivative orders) on a region: the whole passes'
    values there."""
    from microbleeds.stages import gaussian as G

    rng = np.random.default_rng(4)
    x = (rng.normal(size=(19, 23, 15)) * 10).astype(np.float32)
    lo = rng.integers(0, 15, (19, 23)).astype(np.int64)
    hi = np.minimum(lo + rng.integers(0, 9, (19, 23)), 15).astype(np.int64)
    on = (np.arange(15) >= lo[..., None]) & (np.arange(15) < hi[..., None])
    for axis, kernel in ((0, G._pass_first_on), (1, G._pass_middle_on), (2, G._pass_last_on)):
        fw, symmetric = G.gaussian_weights(1.7, order[axis])
        want = G._pass(x, axis, 1.7, order[axis], 4.0)
        got = np.zeros_like(x)
        kernel(x, fw, symmetric, lo, hi, got)
        np.testing.assert_array_equal(got[on].view(np.uint32), want[on].view(np.uint32))
    asym = np.ascontiguousarray(np.arange(1.0, 5.0))  # even length: neither symmetric nor antisymmetric
    for axis, kernel in ((0, G._pass_first_on), (1, G._pass_middle_on), (2, G._pass_last_on)):
        want = np.empty_like(x)
        G._PASSES[axis](x, asym, 0, want)
        got = np.zeros_like(x)
        kernel(x, asym, 0, lo, hi, got)
        np.testing.assert_array_equal(got[on].view(np.uint32), want[on].view(np.uint32))


def test_pass_regions_cover_what_the_next_pass_reads():
    from microbleeds.stages import gaussian as G

    lo = np.zeros((5, 9), np.int64)
    hi = np.zeros((5, 9), np.int64)
    lo[2, 4], hi[2, 4] = 6, 8
    (lo0, hi0), (lo1, hi1) = G.pass_regions(lo, hi, (5, 9, 12), (0.3, 0.5, 0.5))  # radii 1, 2, 2
    assert (lo1[2, 4], hi1[2, 4]) == (4, 10) and (hi1 > lo1).sum() == 1
    assert [(lo0[2, j], hi0[2, j]) for j in range(9)] == [(0, 0)] * 2 + [(4, 10)] * 5 + [(0, 0)] * 2
    assert not (hi0[[0, 1, 3, 4]] > lo0[[0, 1, 3, 4]]).any()


def test_hessian_at_is_six_scipy_derivatives_bit_for_bit():
    from scipy import ndimage as ndi

    from microbleeds.stages import gaussian as G

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(21, 25, 13)) * 50).astype(np.float32)
    idx = np.nonzero(rng.random(x.shape) < 0.3)
    sigma = (1.56, 1.56, 0.58)
    H = G.hessian_at(x, idx, sigma)
    assert H.shape == (idx[0].size, 3, 3) and H.dtype == np.float32
    for i in range(3):
        for j in range(i, 3):
            o = [0, 0, 0]
            o[i] += 1
            o[j] += 1
            want = ndi.gaussian_filter(x, sigma, order=o, mode="nearest")[idx]
            np.testing.assert_array_equal(H[:, i, j], want)
            np.testing.assert_array_equal(H[:, j, i], want)
    with pytest.raises(ValueError, match="positive sigma"):
        G.hessian_at(x, idx, (1.0, 0.0, 1.0))


@pytest.mark.parametrize("affine", [np.diag([0.45, 0.45, 1.2, 1.0]),
                                    np.array([[0.9, 0.1, 0, 0], [-0.1, 0.9, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])])
def test_world_hessian_matches_einsum(affine):
    """The world Hessian of the dark voxels: six scipy derivatives and einsum's A^-T H A^-1 (an
    axis-aligned grid's shortcut gives einsum's float32 values)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(5)
    img = (rng.normal(size=(24, 22, 14)) * 10).astype(np.float32)
    idx = np.nonzero(rng.random(img.shape) < 0.2)
    A = affine[:3, :3]
    vox = np.linalg.norm(A, axis=0)
    sig = [0.7 / v for v in vox]
    Hv = np.empty((idx[0].size, 3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            o = [0, 0, 0]
            o[i] += 1
            o[j] += 1
            Hv[:, i, j] = Hv[:, j, i] = ndi.gaussian_filter(img, sig, order=o, mode="nearest", truncate=4.0)[idx]
    Ainv = np.linalg.inv(A).astype(np.float32)
    want = np.einsum("ka,nkl,lb->nab", Ainv, Hv, Ainv)
    np.testing.assert_array_equal(D._hessian_world_at(img, idx, vox, A, 0.7), want)


def test_phase_difference_in_place_is_numpy_bit_for_bit():
    rng = np.random.default_rng(12)
    z = (rng.normal(size=(30, 20, 10)) + 1j * rng.normal(size=(30, 20, 10))).astype(np.complex64)
    lp = (rng.normal(size=(34, 20, 10)) + 1j * rng.normal(size=(34, 20, 10))).astype(np.complex64)[2:32]
    want = np.angle(z * np.conj(lp)).astype(np.float32)
    got = P._phase_difference(z, lp[:, ::1].copy()[:, :, :])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    strided = np.zeros((30, 24, 10), np.complex64)[:, 2:22]  # the low-pass is a cut of a padded array
    strided[...] = lp
    got = P._phase_difference(z, strided)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


# --------------------------------------------------------------------------------------------
# memory (issue 14): the homodyne filter slab by slab, Gaussian passes reusing their input
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,slice_axis", [("2d", 2), ("2d", 0), ("2d", 1), ("3d", 2)])
def test_homodyne_slabs_are_the_whole_volume_filter_bit_for_bit(monkeypatch, mode, slice_axis):
    """Slab by slab (a few rows per slab here), without a complex volume: the values of the
    whole-volume low-pass and phase difference, and the shared forward passes give the same."""
    rng = np.random.default_rng(21)
    ph = rng.uniform(-np.pi, np.pi, (44, 38, 26)).astype(np.float32)
    mag = rng.uniform(0.2, 1, ph.shape).astype(np.float32)
    vox = (0.5, 0.6, 1.1)
    plan = P._homodyne_plan(ph.shape, vox, 48, None, mode, slice_axis)
    z = P._complex(mag, ph)
    want = P._phase_difference(z, P._windowed_lowpass(z, *plan))
    monkeypatch.setattr(P, "SLAB_BYTES", 8 * 3 * 64 * 44)  # about 3 rows per slab
    c_first = 0 if plan[0][0] != 0 else 1
    assert len(P._slabs(ph.shape[c_first], 8 * plan[2][0].size * ph.size // (ph.shape[plan[0][0]] * ph.shape[c_first]))) > 5
    got = P._homodyne_slabs(mag, ph, plan)
    assert got.dtype == np.float32 and got.shape == ph.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    shared = {}
    P._homodyne_slabs(mag, ph, P._homodyne_plan(ph.shape, vox, 48, None, "2d", 2), shared)
    np.testing.assert_array_equal(P._homodyne_slabs(mag, ph, plan, shared).view(np.uint32), want.view(np.uint32))
    with pytest.raises(ValueError, match="differ"):
        P._homodyne_slabs(mag[:-1], ph, plan)


def test_compute_swi_releases_the_phase_it_holds():
    """phase_branch hands its phase over in a list: filtered, the phase is dropped (not kept to the
    end of the branch), and the result is compute_swi's."""
    rng = np.random.default_rng(3)
    mag = rng.uniform(0.5, 1.0, (24, 24, 12)).astype(np.float32)
    ph = rng.uniform(-np.pi, np.pi, mag.shape).astype(np.float32)
    held = [ph.copy()]
    got = P._compute_swi(mag, held, np.eye(4), phase_sign=1)
    assert held == []
    want = P.compute_swi(mag, ph, np.eye(4), phase_sign=1)
    np.testing.assert_array_equal(got.swi, want.swi)
    np.testing.assert_array_equal(got.filtered_phase, want.filtered_phase)


@pytest.mark.parametrize("sigma", [(1.5, 2.0, 0.8), (0.0, 2.0, 1.0), (1.0, 0.0, 0.0)])
def test_gaussian_overwriting_its_input_is_scipy_bit_for_bit(sigma):
    from scipy import ndimage as ndi

    from microbleeds.stages.gaussian import gaussian_filter_nearest

    rng = np.random.default_rng(9)
    x = rng.normal(size=(30, 25, 20)).astype(np.float32)
    want = ndi.gaussian_filter(x, sigma, mode="nearest", truncate=4.0)
    scratch = x.copy()
    got = gaussian_filter_nearest(scratch, sigma, overwrite_input=True)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    kept = x.copy()
    np.testing.assert_array_equal(gaussian_filter_nearest(kept, sigma).view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(kept, x)  # without the flag the input is left alone
