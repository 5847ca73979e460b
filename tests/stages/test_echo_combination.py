"""Multi-echo magnitudes: the T2*-weighted combination chosen from the echo times (issue 10,
"Multi-echo magnitudes"), rss when they are unknown (with a note), the single-echo choices kept."""

import json

import nibabel as nib
import numpy as np
import pytest

from microbleeds.stages.load import (
    T2STAR_DEFAULT_MS,
    combine_echoes,
    default_t2star,
    estimate_t2star,
    load_scan,
    t2star_weights,
)

TES = [3.0, 9.0, 15.0, 21.0, 27.0, 33.0, 39.0, 45.0]
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def decaying_head(t2star_ms=40.0, tes=TES, seed=0, shape=(40, 40, 20)):
    """A bright ellipsoid decaying as exp(-TE / T2*) in a Rician-noise background, one volume per echo."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2.0
    inside = (((grid - centre[:, None, None, None]) / (0.4 * np.array(shape))[:, None, None, None]) ** 2).sum(0) < 1
    echoes = []
    for te in tes:
        signal = np.where(inside, 100.0 * np.exp(-te / t2star_ms), 0.0)
        noisy = signal + 2.0 * rng.standard_normal(shape) + 2.0j * rng.standard_normal(shape)
        echoes.append(np.abs(noisy))
    return np.stack(echoes, axis=3).astype(np.float32), inside


def _save(path, data, sidecar=None):
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


def test_weights_are_the_cnr_optimal_ones_and_sum_to_one():
    w = t2star_weights(TES, 30.0)
    assert w.sum() == pytest.approx(1.0)
    expected = np.array(TES) * np.exp(-np.array(TES) / 30.0)
    np.testing.assert_allclose(w, expected / expected.sum())
    # TE exp(-TE/T2*) peaks at TE = T2*: the echoes either side of 30 ms weigh most, the shortest least
    assert set(np.argsort(w)[-2:]) == {4, 5} and int(np.argmin(w)) == 0


@pytest.mark.parametrize("t2star_ms", [20.0, 45.0, 80.0])
def test_t2star_is_fitted_from_the_tissue_decay(t2star_ms):
    data, _ = decaying_head(t2star_ms)
    assert estimate_t2star(data, TES) == pytest.approx(t2star_ms, rel=0.05)


def test_no_decay_gives_no_fit_and_the_field_default():
    data, _ = decaying_head(1e9)
    assert estimate_t2star(data, TES) is None
    assert default_t2star() == T2STAR_DEFAULT_MS[3.0]
    assert default_t2star(1.5) == T2STAR_DEFAULT_MS[1.5] and default_t2star(6.5) == T2STAR_DEFAULT_MS[7.0]


def test_combination_keeps_the_magnitude_scale():
    data, inside = decaying_head(40.0)
    combined, how = combine_echoes(data, "t2star", TES)
    assert how == f"T2*-weighted (TE-weighted, T2* {estimate_t2star(data, TES):.0f} ms fitted) of {len(TES)} echoes"
    tissue = float(np.median(combined[inside]))
    per_echo = np.median(data[inside], axis=0)
    assert per_echo.min() < tissue < per_echo.max()  # a weighted mean of the echoes, not a sum
    np.testing.assert_allclose(combined, (data * t2star_weights(TES, estimate_t2star(data, TES))).sum(3),
                               rtol=1e-5, atol=1e-4)


def test_combination_keeps_the_long_echoes_contrast():
    """A focus whose R2* is raised (a microbleed's dephasing): its contrast in the T2*-weighted
    image is that of an echo near T2*/2 (the weights TE S_e peak there for the focus's contrast),
    in the rss that of the short echoes."""
    tes = np.array(TES)
    tissue, focus = np.exp(-tes / 40.0), np.exp(-tes / 12.0)
    data = np.ones((8, 8, 8, tes.size), np.float32) * tissue
    data[4, 4, 4] = focus
    rss, _ = combine_echoes(data, "rss")
    weighted, _ = combine_echoes(data, "t2star", TES)
    contrast = {name: 1 - img[4, 4, 4] / img[0, 0, 0] for name, img in (("rss", rss), ("t2star", weighted))}
    assert contrast["t2star"] > contrast["rss"] + 0.15
    assert 1 - focus[2] / tissue[2] < contrast["t2star"] < 1 - focus[4] / tissue[4]  # between 15 and 27 ms
    assert contrast["rss"] < 1 - focus[2] / tissue[2]  # below the echo at 15 ms


def test_auto_uses_the_sidecar_echo_times(tmp_path):
    data, _ = decaying_head(40.0)
    path = _save(tmp_path / "me.nii.gz", data, {"EchoTime": [te / 1000 for te in TES]})
    scan = load_scan(path)
    assert scan.echo.startswith("T2*-weighted (TE-weighted, T2* 4") and scan.echo.endswith("of 8 echoes")
    assert scan.n_echoes == 8 and scan.echoes.shape[3] == 8
    assert not any("root-sum-of-squares" in n for n in scan.notes)


def test_given_echo_times_win_over_the_sidecar(tmp_path):
    data, _ = decaying_head(40.0)
    path = _save(tmp_path / "me.nii.gz", data, {"EchoTime": 0.02})  # one TE for 8 echoes: unusable
    assert load_scan(path).echo == "rss of 8 echoes"
    assert "8 echoes" in load_scan(path, echo_times_ms=TES).echo and "T2*" in load_scan(path, echo_times_ms=TES).echo


def test_without_echo_times_rss_and_a_note(tmp_path):
    data, _ = decaying_head(40.0)
    path = _save(tmp_path / "me.nii.gz", data)
    scan = load_scan(path)
    assert scan.echo == "rss of 8 echoes"
    np.testing.assert_allclose(scan.magnitude, np.sqrt((data ** 2).sum(3)), rtol=1e-5)
    assert any("echo times" in n and "root-sum-of-squares" in n for n in scan.notes)
    with pytest.raises(ValueError, match="echo times"):
        load_scan(path, echo="t2star")


def test_wrong_number_of_echo_times(tmp_path):
    data, _ = decaying_head(40.0)
    path = _save(tmp_path / "me.nii.gz", data)
    scan = load_scan(path, echo_times_ms=TES[:3])
    assert scan.echo == "rss of 8 echoes" and any("3 echo times for 8" in n for n in scan.notes)
    with pytest.raises(ValueError, match="3 echo times for 8 echoes"):
        load_scan(path, echo="t2star", echo_times_ms=TES[:3])


def test_explicit_choices_are_kept(tmp_path):
    data, _ = decaying_head(40.0)
    path = _save(tmp_path / "me.nii.gz", data, {"EchoTime": [te / 1000 for te in TES]})
    rss = load_scan(path, echo="rss")
    assert rss.echo == "rss of 8 echoes" and not rss.notes
    np.testing.assert_allclose(rss.magnitude, np.sqrt((data ** 2).sum(3)), rtol=1e-5)
    np.testing.assert_array_equal(load_scan(path, echo="first").magnitude, data[..., 0])
    np.testing.assert_array_equal(load_scan(path, echo="last").magnitude, data[..., -1])
    assert load_scan(path, echo=2).echo == "echo 3 of 8"
    with pytest.raises(ValueError, match="auto"):
        load_scan(path, echo="median")


def test_unfittable_decay_uses_the_field_default_with_a_note(tmp_path):
    data, _ = decaying_head(1e9)
    path = _save(tmp_path / "me.nii.gz", data, {"EchoTime": [te / 1000 for te in TES], "MagneticFieldStrength": 7})
    scan = load_scan(path)
    assert scan.echo == f"T2*-weighted (TE-weighted, T2* {T2STAR_DEFAULT_MS[7.0]:.0f} ms default) of 8 echoes"
    assert any("could not be fitted" in n and "7 T" in n for n in scan.notes)


def test_single_echo_is_untouched(tmp_path):
    data, _ = decaying_head(40.0, tes=[20.0])
    path = _save(tmp_path / "one.nii.gz", data[..., 0], {"EchoTime": 0.02})
    scan = load_scan(path)
    assert scan.echo == "single echo" and not scan.notes
    np.testing.assert_array_equal(scan.magnitude, data[..., 0])


def test_summary_records_how_echoes_were_combined(tmp_path, painted):
    import microbleeds

    volume, affine, _ = painted
    me = np.stack([volume * np.float32(np.exp(-te / 45.0)) for te in (4.0, 12.0, 20.0, 28.0)], axis=3)
    path = tmp_path / "sub-01_echoes.nii.gz"
    nib.save(nib.Nifti1Image(me, affine), path)
    unknown = microbleeds.detect(load_scan(path)).summary
    assert unknown["input"]["echoes"] == "rss of 4 echoes"
    assert any("root-sum-of-squares" in n for n in unknown["notes"])
    known = microbleeds.detect(load_scan(path, echo_times_ms=[4.0, 12.0, 20.0, 28.0])).summary
    assert known["input"]["echoes"] == "T2*-weighted (TE-weighted, T2* 45 ms fitted) of 4 echoes"
    assert not any("root-sum-of-squares" in n for n in known["notes"])


def test_weighted_combination_keeps_its_weights(tmp_path):
    data, _ = decaying_head(40.0, shape=(24, 24, 12))
    path = _save(tmp_path / "me.nii.gz", data, {"EchoTime": [t / 1000.0 for t in TES]})
    scan = load_scan(path)
    np.testing.assert_allclose(scan.echo_weights, t2star_weights(TES, estimate_t2star(data, TES)))
    assert load_scan(path, echo="rss").echo_weights is None
    assert load_scan(path, echo="last").echo_weights is None


def textured_echoes(sigma, tes=TES, t2star_ms=40.0, shape=(64, 64, 16), seed=1):
    """Echoes of one anatomy (a fine texture of SD 0.08 common to all echoes, as vessels and tissue
    borders are) decaying as exp(-TE / T2*), each with its own Gaussian noise of SD ``sigma``."""
    rng = np.random.default_rng(seed)
    texture = 1.0 + 0.08 * rng.standard_normal(shape)
    decay = np.exp(-np.asarray(tes) / t2star_ms)
    clean = 100.0 * texture[..., None] * decay
    return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32), decay


def test_noise_of_a_weighted_echo_sum_is_its_noise_not_its_anatomy():
    from microbleeds.stages.prepare import echo_noise_level, noise_level

    sigma = 2.0
    echoes, decay = textured_echoes(sigma)
    w = t2star_weights(TES, 40.0)
    combined = (echoes * w).sum(axis=3).astype(np.float32)
    level = 100.0 * float((w * decay).sum())  # the tissue level of the sum
    rel = (combined / level).astype(np.float32)
    mask = np.ones(rel.shape, bool)
    expected = sigma * np.sqrt((w * w).sum()) / level  # independent noise of one sigma per echo
    assert echo_noise_level(echoes, w, combined, rel, mask) == pytest.approx(expected, rel=0.1)
    # neighbour differences of the sum read the texture the echoes share: several times the noise
    assert noise_level(rel, mask) > 2.5 * expected
