"""The bundled sample scan: every microbleed of its ground truth is found, nothing else is."""

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


def test_every_microbleed_found_and_no_false_positive(scored):
    _, evaluation = scored
    pooled = evaluation.pooled
    assert pooled["n_truth_cmb"] >= 5
    assert pooled["fn"] == 0, evaluation.matches
    assert pooled["fp"] == 0, evaluation.matches  # veins, dropout and calcifications rejected
    assert pooled["calcifications_reported"] == 0


def test_centroids_and_sizes_are_physical(scored):
    _, evaluation = scored
    assert evaluation.pooled["centroid_error_mean_mm"] < 1.0
    # blooming: the apparent diameter exceeds the true one, but not wildly
    assert 0.0 < evaluation.pooled["diameter_error_mean_signed_mm"] < 3.0


def test_veins_were_seen_and_rejected(scored):
    result, _ = scored
    assert result.summary["rejected_by_rule"].get("tubular", 0) >= 3
    assert result.summary["rejected_by_rule"].get("calcification", 0) >= 1
