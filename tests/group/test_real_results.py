"""The group level on what the detector really writes (BIDS Derivatives of a small BIDS dataset)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

import microbleeds
from microbleeds.group import add_group_arguments, load_cohort, run_group_level

SAMPLE = Path(microbleeds.__file__).resolve().parents[1] / "sample_data" / "sample_mag.nii.gz"


@pytest.mark.slow
def test_group_level_on_detector_output(tmp_path):
    bids = tmp_path / "bids"
    for rel in ("sub-01/anat/sub-01_T2starw.nii.gz", "sub-02/ses-1/anat/sub-02_ses-1_T2starw.nii.gz",
                "sub-03/anat/sub-03_T2starw.nii.gz"):
        (bids / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE, bids / rel)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t34\tF\nsub-02\t51\tM\nsub-03\tn/a\tF\n")
    out = bids / "derivatives" / "microbleeds"
    run = microbleeds.detect_folder(bids, out, report=True)
    assert not run.failed
    table = load_cohort(out)
    assert table["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03"]
    assert table["session_id"].tolist()[1] == "ses-1" and (table["identity_source"] == "bids").all()
    assert (table["cmb_total"] > 0).all() and table["age"].tolist()[:2] == [34, 51]
    parser = argparse.ArgumentParser()
    add_group_arguments(parser)
    paths = run_group_level(bids, out, parser.parse_args(["--model", "cmb_total ~ age", "--bins", "sex"]))
    analysis = json.loads(paths["analysis"].read_text())
    assert analysis["analyses"][0]["complete_cases"]["n_dropped"] == 1  # sub-03: age n/a
    for report in table["report"]:
        assert (out / report).is_file()
        assert report in paths["report"].read_text()
