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
