"""Multi-echo magnitudes (issue 10): echoes weighted for T2* contrast find the microbleeds that
their root-sum-of-squares misses, with no more false positives.

Physics: the short echoes carry most of the signal and little T2* contrast, so the rss of echoes
spanning 3-46 ms is dominated by them and dilutes the blooming; the weights ``TE exp(-TE/T2*)``
(Posse 1999, T2* fitted to the data) keep the long echoes' contrast at a better SNR than one echo.

* Phantom: the same phantom (same seed, same anatomy, veins and microbleeds) simulated noise-free
  at 12 echo times 2.9-45.8 ms (3 T, 1 x 1 x 2 mm), each echo with its own complex Gaussian noise
  of one sigma (thermal noise does not change with TE; SNR 25 in white matter at the first echo).
  The protocol, the CMB sizes (0.8-2 mm, chi 0.4-1 ppm) and the combination were chosen on seeds
  1-4; seed 5 is the test's, seed 6 is held out (never looked at while choosing; ``-m slow``).
  Measured: seed 5, rss 2 of 8 found (0 false positives), T2*-weighted 5 of 8 (0); held-out seed
  6, rss 4 of 8 (0), T2*-weighted 4 of 8 (0): no gain there, and no loss (its assertion, ``>=``,
  was set after seeing it). On the design seeds 1-4: rss 2, 4, 2, 2 of 8, T2*-weighted 4, 4, 3, 3
  (false positives 0 -> 2 on seed 1: two through-plane vein segments that darken at long TE).
* Real: the in-vivo 3-echo GRE crop (TE 4, 8, 12 ms, probably 7 T) with microbleeds inserted into
  each echo at that echo's TE (:func:`microbleeds.bench.phantoms.insert_cmbs`; 0.8-1.1 mm, chi
  0.4-0.8 ppm, chosen on seeds 1-4). Its echoes span only 4-12 ms, so the weights (0.19, 0.34,
  0.46 at the fitted T2* of 34 ms) differ less from rss: seed 5, 3 of 4 both (0 false positives);
  seed 6, rss 3 of 4, T2*-weighted 4 of 4 (0).
"""

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED
from test_real_background import _quiet_positions

import microbleeds
from microbleeds.bench.phantoms import PhantomParams, insert_cmbs, load_real_gre, simulate, write_phantom
from microbleeds.stages.load import load_scan

TES = [round(2.9 + 3.9 * n, 1) for n in range(12)]  # 2.9 ... 45.8 ms, as the 2D GRE slab
PROTOCOL = dict(fov_mm=(130.0, 150.0, 48.0), voxel_size_mm=(1.0, 1.0, 2.0), b0_t=3.0, snr=None, n_veins=30,
                n_calcifications=0, n_cmb=8, cmb_diameter_range_mm=(0.8, 2.0), cmb_chi_range_ppm=(0.4, 1.0))
SNR_FIRST_ECHO = 25.0
TEST_SEED, HELD_OUT_SEED = 5, 6


def multi_echo_phantom(seed, tes=TES):
    """(echoes (x, y, z, echo) float32, affine, truth): one phantom at every TE, independent noise."""
    echoes = [simulate(PhantomParams(**PROTOCOL, te_ms=te, seed=seed)) for te in tes]
    sigma = echoes[0].info["wm_mean_magnitude"] / SNR_FIRST_ECHO
    rng = np.random.default_rng(1000 + seed)
    out = []
    for phantom in echoes:
        signal = phantom.magnitude * np.exp(1j * phantom.phase)
        noise = rng.standard_normal((2,) + signal.shape)
        out.append(np.abs(signal + sigma * (noise[0] + 1j * noise[1])).astype(np.float32))
    return np.stack(out, axis=3), echoes[0].affine, [t for t in echoes[0].truth if t["type"] == "cmb"]


def outcome(result, centres, max_mm):
    """(microbleeds found, false positives): one-to-one, nearest detection within ``max_mm``."""
    found = np.array([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in result.lesions]).reshape(-1, 3)
    used = set()
    for centre in centres:
        if len(found):
            distance = np.linalg.norm(found - centre, axis=1)
            distance[list(used)] = np.inf
            if distance.min() <= max_mm:
                used.add(int(distance.argmin()))
    return len(used), len(found) - len(used)


def compare(echoes, affine, tes, centres, max_mm):
    scores = {}
    for echo in ("rss", "auto"):
        scan = load_scan(echoes, echo=echo, affine=affine, echo_times_ms=tes)
        scores[echo] = outcome(microbleeds.detect(scan), centres, max_mm) + (scan.echo,)
    return scores


def _phantom_case(seed, gain=True):
    echoes, affine, truth = multi_echo_phantom(seed)
    centres = np.array([[t["x_mm"], t["y_mm"], t["z_mm"]] for t in truth])
    scores = compare(echoes, affine, TES, centres, 3.0)
    print(f"seed {seed}: {scores}")
    (rss_hits, rss_fp, rss_how), (t2_hits, t2_fp, t2_how) = scores["rss"], scores["auto"]
    assert rss_how == "rss of 12 echoes" and t2_how.startswith("T2*-weighted (TE-weighted, T2* ")
    assert t2_hits > rss_hits or (not gain and t2_hits == rss_hits), \
        f"T2*-weighted found {t2_hits} of {len(centres)}, rss {rss_hits}"
    assert t2_fp <= rss_fp
    return scores


@pytest.mark.slow  # a whole-head multi-echo simulation and three detections (~25 s); the weights' own tests
# (tests/stages/test_echo_combination.py) stay in the default run
def test_t2star_weighting_finds_what_rss_misses_on_the_phantom():
    """Seed 5: rss finds 2 of 8 (0 false positives), the T2*-weighted combination 5 of 8 (0)."""
    _phantom_case(TEST_SEED)


@pytest.mark.slow
def test_t2star_weighting_on_the_held_out_seed():
    """Seed 6: rss 4 of 8 (0 false positives), T2*-weighted 4 of 8 (0)."""
    _phantom_case(HELD_OUT_SEED, gain=False)


ROMEO = SHARED / "romeo-small-gre"
REAL_TES = [4.0, 8.0, 12.0]


@pytest.mark.skipif(not (ROMEO / "small_Mag.nii").is_file(), reason="shared real data not present")
@pytest.mark.parametrize("seed", [TEST_SEED, HELD_OUT_SEED])
def test_t2star_weighting_on_the_real_crop(seed):
    crop = [load_real_gre(ROMEO / "small_Mag.nii", ROMEO / "small_Phase.nii", echo=e) for e in range(3)]
    affine = crop[0][2]
    rng = np.random.default_rng(seed)
    centres = _quiet_positions(np.sqrt(sum(mag ** 2 for mag, _, _ in crop)), affine, 4, rng)
    diameters, chi = rng.uniform(0.8, 1.1, len(centres)), rng.uniform(0.4, 0.8, len(centres))
    echoes = np.stack([insert_cmbs(mag, phase, affine, centres, diameters, chi, b0_t=7.0, te_ms=te)[0]
                       for (mag, phase, _), te in zip(crop, REAL_TES)], axis=3)
    scores = compare(echoes, affine, REAL_TES, centres, 1.5)
    print(f"seed {seed}: {scores}")
    (rss_hits, rss_fp, _), (t2_hits, t2_fp, t2_how) = scores["rss"], scores["auto"]
    assert t2_how.startswith("T2*-weighted") and t2_how.endswith("fitted) of 3 echoes")
    assert t2_hits >= rss_hits and t2_fp <= rss_fp


# --------------------------------------------------------------------------------------------
# The simulator's own multi-echo acquisitions (4D files, echo times in the BIDS sidecar)
COIL_SLAB = dict(fov_mm=(112.0, 132.0, 80.0), voxel_size_mm=(1.5, 1.5, 2.0), head_scale=0.75, n_veins=20,
                 n_cmb=6, n_calcifications=4, cmb_diameter_range_mm=(1.5, 4.0), seed=8, n_coils=16, snr=25.0,
                 echo_times_ms=(5.0, 11.0, 17.0, 23.0, 29.0, 35.0))


@pytest.fixture(scope="module")
def coil_echoes(tmp_path_factory):
    """6 echoes 5-35 ms through a 16-coil array (non-central chi background), written as 4D files."""
    phantom = simulate(PhantomParams(**COIL_SLAB))
    paths = write_phantom(phantom, tmp_path_factory.mktemp("coil_echoes"), "me", include_swi=False)
    return phantom, paths


def test_brain_mask_of_coil_array_echoes(coil_echoes):
    """Averaging echoes keeps the background's level (about sigma sqrt(2 N) for N coils) but not
    its spread, so the combined image's air no longer reads as noise (level over 16 local sigmas)
    and a mask on it fills the field of view (2.98 x the intracranial volume, measured); the
    mask is taken on the first echo, one acquisition's noise floor: within 15 %."""
    phantom, paths = coil_echoes
    result = microbleeds.detect(paths["magnitude"])
    assert result.scan.echo.startswith("T2*-weighted") and result.scan.n_echoes == 6
    ratio = result.mask.sum() * np.prod(result.scan.voxel_size_mm) / 1000.0 / phantom.info["intracranial_volume_ml"]
    assert 0.85 < ratio < 1.15
    assert not result.summary.get("warnings")


@pytest.mark.slow
def test_multi_echo_phase_in_both_conventions(coil_echoes, tmp_path):
    """The 4D phase stored as -gamma dB TE and as +gamma dB TE, its echo times from the sidecar:
    the same classes and phase scores (to float32 rounding) with the convention given; estimated, mirrored signs.
    Measured: the estimate is +1 for the -1 phase (and -1 for the +1 phase), confidence "low",
    as on each single echo of this small head (1.5 mm voxels): the calcification rule stays off."""
    phantom, paths = coil_echoes
    runs = {}
    for sign in (-1, 1):
        phase = tmp_path / f"phase{sign:+d}.nii.gz"
        nib.save(nib.Nifti1Image(-sign * phantom.phase, phantom.affine), phase)
        given = microbleeds.detect(paths["magnitude"], phase=phase, phase_sign=sign)
        estimated = microbleeds.detect(paths["magnitude"], phase=phase)
        assert given.summary["phase"]["parameters"]["echo_times_ms"] == list(COIL_SLAB["echo_times_ms"])
        runs[sign] = ([(c["status"], c["reason"], c["phase_sign"], round(c["phase_score"], 5)) for c in given.candidates],
                      estimated.summary["phase"])
    assert runs[-1][0] == runs[1][0]
    assert any(row[1] == "calcification" for row in runs[-1][0])
    assert runs[-1][1]["phase_sign"] == -runs[1][1]["phase_sign"]
    assert runs[-1][1]["sign_evidence"]["confidence"] == runs[1][1]["sign_evidence"]["confidence"]
