"""The bundled sample scan (a whole-brain 3 T SWI phantom, sample_data/make_sample.py): every
microbleed of its ground truth is found, nothing else is, and every lesion gets its MARS region from
the atlas registration, as the first README command shows."""

import csv
from pathlib import Path

import pytest

import microbleeds
from microbleeds.bench import evaluate

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    result = microbleeds.detect(SAMPLE / "sample_mag.nii.gz", phase=SAMPLE / "sample_phase.nii.gz")
    folder = result.write(out)
    return result, evaluate.evaluate_pairs([("sample", SAMPLE / "sample_truth.tsv", folder)])


def _truth():
    with open(SAMPLE / "sample_truth.tsv", encoding="utf-8") as fh:
        return {int(row["truth_id"]): row for row in csv.DictReader(fh, delimiter="\t")}


def _matched_cmbs(scored):
    """(truth row, lesion) of every true microbleed the detector found."""
    result, evaluation = scored
    lesions = {lesion["lesion_id"]: lesion for lesion in result.lesions}
    truth = _truth()
    return [(truth[m["truth_id"]], lesions[m["lesion_id"]]) for m in evaluation.matches
            if m["match_type"] == "tp"]


def test_sample_is_a_whole_brain_with_all_mars_regions():
    truth = _truth().values()
    cmbs = [row for row in truth if row["type"] == "cmb"]
    assert len(cmbs) >= 5 and sum(row["type"] == "calcification" for row in truth) >= 1
    assert {row["region"] for row in cmbs} >= {"lobar", "deep"}


def test_every_microbleed_found(scored):
    _, evaluation = scored
    assert evaluation.pooled["n_truth_cmb"] >= 5
    assert evaluation.pooled["fn"] == 0, evaluation.matches


def test_no_false_positive(scored):
    _, evaluation = scored
    assert evaluation.pooled["calcifications_reported"] == 0, evaluation.matches  # phase: diamagnetic
    assert evaluation.pooled["fp"] == 0, evaluation.matches  # veins, dropout and calcifications rejected


def test_with_the_convention_known_every_calcification_is_rejected(tmp_path):
    """Given the convention (``--phase-sign -1``, the phantom's), the calcifications are rejected
    by their dipole sign and nothing else is reported: the same as with the estimated sign."""
    result = microbleeds.detect(SAMPLE / "sample_mag.nii.gz", phase=SAMPLE / "sample_phase.nii.gz", phase_sign=-1)
    pooled = evaluate.evaluate_pairs([("sample", SAMPLE / "sample_truth.tsv", result.write(tmp_path))]).pooled
    assert pooled["fn"] == 0 and pooled["fp"] == 0 and pooled["calcifications_reported"] == 0
    assert result.summary["rejected_by_rule"].get("calcification", 0) >= 1


def test_centroids_and_sizes_are_physical(scored):
    _, evaluation = scored
    assert evaluation.pooled["centroid_error_mean_mm"] < 1.0
    # blooming: the apparent diameter exceeds the true one, but not wildly
    assert 0.0 < evaluation.pooled["diameter_error_mean_signed_mm"] < 3.0


def test_veins_were_seen_and_rejected(scored):
    result, _ = scored
    assert result.summary["rejected_by_rule"].get("tubular", 0) >= 3


def test_calcifications_rejected_by_their_phase(scored):
    result, _ = scored
    assert result.summary["phase"]["sign_evidence"]["confidence"] in ("high", "moderate")
    assert result.summary["phase"]["phase_sign"] == -1  # the phantom's convention (sample.json)
    assert result.summary["rejected_by_rule"].get("calcification", 0) >= 1


def test_atlas_registration_is_high_quality(scored):
    result, _ = scored
    regions = result.summary["regions"]
    assert regions["source"] == "atlas", regions
    registration = regions["registration"]
    assert registration["quality"] == "high" and registration["dice"] >= 0.9, registration
    assert registration["coverage"] >= 0.95  # the whole brain is in view


def test_every_lesion_has_a_region_lobe_and_hemisphere(scored):
    result, _ = scored
    assert result.lesions
    for lesion in result.lesions:
        assert lesion["region"] in ("lobar", "deep", "infratentorial"), lesion
        assert lesion["hemisphere"] in ("left", "right", "midline"), lesion
        assert lesion["region_source"] == "atlas" and lesion["region_confidence"] in ("high", "low")
        if lesion["region"] == "lobar":
            assert lesion["lobe"] in ("frontal", "parietal", "temporal", "occipital", "insula"), lesion
    counts = result.summary["counts"]
    assert counts["by_region"]["unknown"] == 0 and counts["by_hemisphere"]["unknown"] == 0


def test_regions_agree_with_the_truth(scored):
    """Every matched microbleed is on the true side; where the detector is confident of its region
    (``region_confidence`` high: not within 2 mm of another MARS region), region and lobe are the
    truth's."""
    matched = _matched_cmbs(scored)
    assert matched
    confident = [(t, lesion) for t, lesion in matched if lesion["region_confidence"] == "high"]
    assert len(confident) >= len(matched) / 2
    for t, lesion in matched:
        assert lesion["hemisphere"] == t["hemisphere"], (t, lesion)
    for t, lesion in confident:
        assert lesion["region"] == t["region"], (t, lesion)
        if t["region"] == "lobar":
            assert lesion["lobe"] == t["lobe"], (t, lesion)


@pytest.mark.slow
def test_make_sample_reproduces_the_shipped_files(tmp_path):
    pytest.importorskip("nilearn")  # the ICBM152 anatomy of the phantom (the anatomy extra)
    from microbleeds.sample_data.make_sample import make_sample

    paths = make_sample(tmp_path)
    assert len(paths) == 5
    for path in map(Path, paths.values()):
        assert path.read_bytes() == (SAMPLE / path.name).read_bytes(), path.name  # stale: regenerate
