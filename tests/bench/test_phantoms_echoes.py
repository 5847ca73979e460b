"""Multi-echo phantoms (issue 10): every echo from the one susceptibility map and field, each with its
own TE (phase, T2* decay, blooming) and its own noise; 4D files with the echo times where the
detector reads them; the truth's contrast stated at the reference echo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from microbleeds.bench import phantoms as P
from microbleeds.bench.phantoms import echoes
from microbleeds.io.sidecar import read_echo_times
from microbleeds.stages.load import load_scan

SLAB = dict(fov_mm=(112.0, 132.0, 48.0), voxel_size_mm=(1.5, 1.5, 2.0), head_scale=0.75, n_veins=15,
            n_cmb=5, n_calcifications=1, cmb_diameter_range_mm=(1.5, 4.0), seed=7)
TES = (6.0, 18.0, 30.0)


@pytest.fixture(scope="module")
def noisy():
    """Three echoes through a 4-coil array, partial k-space, SNR 20 at the first echo."""
    return P.simulate(P.PhantomParams(**SLAB, echo_times_ms=TES, n_coils=4, kspace_fraction=(0.8, 0.8), snr=20.0))


def test_first_echo_is_the_single_echo_phantom_bit_for_bit(noisy):
    """The same random streams in the same order: echo 1 of the multi-echo phantom is the
    single-echo phantom at its TE, noise included (the other echoes draw their own noise after)."""
    single = P.simulate(P.PhantomParams(**SLAB, te_ms=TES[0], n_coils=4, kspace_fraction=(0.8, 0.8), snr=20.0))
    assert noisy.magnitude.shape == single.magnitude.shape + (3,) and noisy.phase.shape == noisy.magnitude.shape
    np.testing.assert_array_equal(noisy.magnitude[..., 0], single.magnitude)
    np.testing.assert_array_equal(noisy.phase[..., 0], single.phase)
    np.testing.assert_array_equal(noisy.truth_labels, single.truth_labels)
    assert noisy.truth == single.truth


def test_each_echo_is_the_object_at_its_own_echo_time():
    """Noise-free, a gapped 2D acquisition: every echo equals the single-echo phantom at its TE
    (the field is computed once and reused: the same physics, one dipole convolution), and the
    phase change between echoes scales with TE (the field is the same at every echo)."""
    gapped = dict(SLAB, voxel_size_mm=(1.5, 1.5, 4.0), slice_gap_mm=1.0, snr=None)
    multi = P.simulate(P.PhantomParams(**gapped, echo_times_ms=TES))
    for e, te in enumerate(TES):
        single = P.simulate(P.PhantomParams(**gapped, te_ms=te))
        np.testing.assert_array_equal(multi.magnitude[..., e], single.magnitude)
        np.testing.assert_array_equal(multi.phase[..., e], single.phase)
        assert {k: multi.info["source_contrast_noise_free_per_echo"][k][e] for k in single.info[
            "source_contrast_noise_free"]} == single.info["source_contrast_noise_free"]
    signal = multi.magnitude * np.exp(1j * multi.phase)
    brain = np.isin(multi.tissue, (P.GM, P.WM, P.CAUDATE, P.PUTAMEN, P.PALLIDUM, P.THALAMUS))
    late = np.angle(signal[..., 2] * np.conj(signal[..., 0]))[brain]  # gamma dB (30 - 6 ms)
    early = np.angle(signal[..., 1] * np.conj(signal[..., 0]))[brain]  # gamma dB (18 - 6 ms)
    keep = (np.abs(early) > 0.1) & (np.abs(early) < 1.2)  # clear of wraps
    assert keep.sum() > 200
    assert np.median(late[keep] / early[keep]) == pytest.approx(2.0, abs=0.02)  # (30 - 6) / (18 - 6)


def test_tissue_decays_at_its_r2star(noisy):
    """White matter's mean signal decays as exp(-R2* TE), R2* 22 /s at 3 T (partial volume aside)."""
    means = noisy.info["wm_mean_magnitude_per_echo"]
    r2 = np.log(means[0] / means[-1]) / ((TES[-1] - TES[0]) * 1e-3)
    assert 18.0 < r2 < 26.0


def test_blooming_grows_with_echo_time(noisy):
    per_echo = noisy.info["source_contrast_noise_free_per_echo"]
    cmbs = [str(t["truth_id"]) for t in noisy.truth if t["type"] == "cmb"]
    contrast = np.array([per_echo[i] for i in cmbs])
    assert np.all(np.diff(contrast.mean(axis=0)) > 0.02)
    assert np.all(contrast[:, -1] >= contrast[:, 0] - 0.01)


def test_noise_is_independent_between_echoes_and_of_one_sigma(noisy):
    """In the air (no signal) the complex coil-combined values of two echoes are uncorrelated and
    equally spread: thermal noise is drawn per echo and does not change with TE."""
    air = ndi.binary_erosion(noisy.tissue == P.AIR, iterations=4)  # 6 mm from the head: no Gibbs, no scalp
    z = noisy.magnitude[air] * np.exp(1j * noisy.phase[air])
    corr = abs(np.vdot(z[:, 0] - z[:, 0].mean(), z[:, 2] - z[:, 2].mean())) / (
        np.linalg.norm(z[:, 0] - z[:, 0].mean()) * np.linalg.norm(z[:, 2] - z[:, 2].mean()))
    assert corr < 0.05
    spread = noisy.magnitude[air].std(axis=0)
    assert np.ptp(spread) / spread.mean() < 0.05 and np.ptp(np.median(noisy.magnitude[air], axis=0)) < 0.02


def test_contrast_is_stated_at_the_reference_echo(noisy):
    ref = noisy.info["contrast_reference_echo"]
    assert ref["index"] == echoes.reference_echo(noisy.params) == 1  # 18 ms nearest 45.5 / 2 ms at 3 T
    assert ref["te_ms"] == 18.0 and "T2*/2" in ref["rule"]
    per_echo = noisy.info["source_contrast_noise_free_per_echo"]
    assert noisy.info["source_contrast_noise_free"] == {k: v[1] for k, v in per_echo.items()}
    assert echoes.reference_echo(P.PhantomParams(b0_t=1.5, echo_times_ms=(3.0, 24.0, 45.0, 48.0))) == 2
    assert echoes.reference_echo(P.PhantomParams(te_ms=20.0)) == 0


@pytest.mark.parametrize("tes", [(20.0,), (10.0, 5.0), (0.0, 5.0), tuple(range(1, 40))])
def test_echo_times_must_be_a_multi_echo_protocol(tes):
    with pytest.raises(ValueError, match="echo_times_ms"):
        P.simulate(P.PhantomParams(**SLAB, echo_times_ms=tes))


def test_written_as_4d_with_the_echo_times_the_detector_reads(noisy, tmp_path):
    paths = P.write_phantom(noisy, tmp_path, "me")
    side = json.loads((tmp_path / "me_mag.json").read_text())
    assert side["EchoTime"] == [0.006, 0.018, 0.03] and side["MagneticFieldStrength"] == 3.0
    assert read_echo_times([paths["magnitude"]]) == pytest.approx(list(TES))
    assert read_echo_times([paths["phase"]]) == pytest.approx(list(TES))
    phantom_side = json.loads(open(paths["sidecar"]).read())
    assert phantom_side["acquisition"]["echo_times_ms"] == list(TES)
    assert phantom_side["parameters"]["echo_times_ms"] == list(TES)
    scan = load_scan(paths["magnitude"])
    assert scan.n_echoes == 3 and scan.echoes.shape[3] == 3
    assert scan.echo.startswith("T2*-weighted") and scan.echo.endswith("of 3 echoes")
    assert P.PhantomParams.from_dict(phantom_side["parameters"]) == noisy.params
