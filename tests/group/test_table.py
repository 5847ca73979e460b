"""The group table: identities, counts, burden, review, quality flags, covariates, TSV + sidecar."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cohort_data import write_dataset, write_scan  # noqa: E402

from microbleeds.contract import LESION_COLUMNS  # noqa: E402
from microbleeds.errors import InputError  # noqa: E402
from microbleeds.group import load_cohort, write_table  # noqa: E402
from microbleeds.group.entities import name_entities, scan_identity  # noqa: E402
from microbleeds.group.table import aria_h_category, size_column  # noqa: E402
from microbleeds.io.derivatives import result_path  # noqa: E402
from microbleeds.io.tables import read_tsv, tsv_text  # noqa: E402


def test_entities_from_names_and_folders():
    e = name_entities("/d/sub-01/ses-2/anat/sub-01_ses-2_acq-hr_run-3_swi.nii.gz")
    assert e == {"subject": "01", "session": "2", "acquisition": "hr", "run": "3", "suffix": "swi"}
    e = name_entities("/d/sub-07/ses-pre/anat/scan_mag.nii")
    assert (e["subject"], e["session"], e["suffix"]) == ("07", "pre", None)
    assert name_entities("sample_mag.nii.gz")["subject"] is None


def test_bids_block_wins_over_the_file_name():
    summary = {"input": {"path": "/x/sub-99_swi.nii.gz"},
               "bids": {"participant_id": "sub-01", "session_id": None,
                        "entities": {"subject": "01", "session": None, "acquisition": "a", "run": 2}}}
    ident = scan_identity(summary)
    assert (ident["participant_id"], ident["session_id"], ident["acquisition"], ident["run"]) == ("sub-01", None, "a",
                                                                                                  "2")
    assert ident["identity_source"] == "bids"
    ident = scan_identity({"input": {"path": "/x/sub-99_ses-3_swi.nii.gz"}})
    assert (ident["participant_id"], ident["session_id"], ident["identity_source"]) == ("sub-99", "ses-3", "file name")


def test_burden_bands():
    assert [aria_h_category(n) for n in (0, 4, 5, 9, 10, 60)] == ["<=4", "<=4", "5-9", "5-9", ">=10", ">=10"]
    assert [size_column(k) for k in ("<2mm", "2-5mm", ">=10mm")] == ["cmb_size_lt2mm", "cmb_size_2to5mm",
                                                                      "cmb_size_ge10mm"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("table"), n=12, seed=3, sessions=True, layout="folder")


def test_table_rows_counts_and_covariates(dataset):
    bids, results, cov = dataset
    table = load_cohort(results)  # the BIDS dataset is found above derivatives/
    assert len(table) == 12 and table.attrs["bids_dir"] == str(bids.resolve())
    assert table["participant_id"].tolist() == cov["participant_id"].tolist()
    assert (table["session_id"] == "ses-1").all()
    assert table["cmb_total"].tolist() == cov["count"].tolist()
    regions = table[["cmb_lobar", "cmb_deep", "cmb_infratentorial", "cmb_unknown"]].sum(axis=1)
    assert (regions == table["cmb_total"]).all()
    assert ((table["cmb_definite"] + table["cmb_possible"]) == table["cmb_total"]).all()
    assert ((table["cmb_lobar_left"] + table["cmb_lobar_right"]) == table["cmb_lobar"]).all()
    for n, itp, aria in zip(table["cmb_total"], table["burden_itp"], table["burden_aria_h"]):
        assert itp == ("0" if n == 0 else "1" if n == 1 else "2-4" if n <= 4 else ">=5")
        assert aria == aria_h_category(n)
    assert (table["any_cmb"] == (table["cmb_total"] > 0)).all()
    # covariates: numbers as numbers, sex categorical (its sidecar has Levels), n/a missing
    np.testing.assert_allclose(table["age"], cov["age"])
    assert table.loc[table["participant_id"] == "sub-05", "nadir_platelets"].isna().all()
    assert table["nadir_platelets"].dtype == float and set(table["sex"]) <= {"F", "M"}
    assert table["platelets_at_mri"].notna().all()  # from sub-*/sub-*_sessions.tsv
    # quality flags
    assert (table["phase_sign_confidence"] == "high").all() and table["calcifications_excluded"].all()
    assert (table["registration_mi"] == -0.512).all() and (table["region_source"] == "labels_registered").all()
    assert table["review_state"].eq("none").all() and table["cmb_total_reviewed"].isna().all()


@pytest.mark.parametrize("layout", ["folder", "bids"])
def test_reviewed_counts_from_summary_reviewed(tmp_path, layout):
    scan = write_scan(tmp_path / "out", "sub-01", 4, seed=1, layout=layout)
    _cols, lesions = read_tsv(result_path(scan, "lesions.tsv"))
    status = ["confirmed", "rejected", "confirmed", "unreviewed"]
    rows = [dict(r, reviewed_status=s) for r, s in zip(lesions, status)]
    result_path(scan, "lesions_reviewed.tsv").write_text(tsv_text(rows, LESION_COLUMNS + ("reviewed_status",)))
    kept = [r for r in rows if r["reviewed_status"] == "confirmed"]
    reviewed = json.loads(result_path(scan, "summary.json").read_text())
    reviewed["counts"] = {"total": 2, "definite": 1, "possible": 1,
                          "by_region": {r: sum(x["region"] == r for x in kept)
                                        for r in ("lobar", "deep", "infratentorial", "unknown")}}
    reviewed["burden_category"] = "2-4"
    reviewed["review"] = {"complete": False, "reviewers": ["ab", "cd"]}
    result_path(scan, "summary_reviewed.json").write_text(json.dumps(reviewed))
    row = load_cohort(tmp_path / "out").iloc[0]
    assert row["review_state"] == "partial" and row["reviewers"] == "ab;cd"
    assert row["cmb_total"] == 4 and row["cmb_total_reviewed"] == 2 and row["burden_itp_reviewed"] == "2-4"
    assert row["cmb_left_reviewed"] + row["cmb_right_reviewed"] == 2  # from lesions_reviewed.tsv
    assert row["any_cmb_reviewed"] == 1


def test_write_table_round_trip_and_sidecar(dataset, tmp_path):
    _bids, results, _cov = dataset
    table = load_cohort(results)
    paths = write_table(table, tmp_path / "group_cmb.tsv")
    cols, rows = read_tsv(paths["tsv"])
    assert cols == list(table.columns) and len(rows) == 12
    sub05 = next(r for r in rows if r["participant_id"] == "sub-05")
    assert sub05["nadir_platelets"] == "n/a" and sub05["session_id"] == "ses-1"
    assert [int(r["cmb_total"]) for r in rows] == table["cmb_total"].tolist()
    side = json.loads(paths["json"].read_text())
    assert set(side) == set(cols) and all("Description" in v for v in side.values())
    assert side["nadir_platelets"]["Units"] == "10^9/L"  # carried from participants.json
    assert side["sex"]["Levels"] == {"F": "female", "M": "male"}
    assert side["cmb_lobar"]["Units"] == "count" and "automatic" in side["cmb_lobar"]["Description"]
    assert "reader-confirmed" in side["cmb_total_reviewed"]["Description"]
    before = paths["tsv"].read_bytes(), paths["json"].read_bytes()
    write_table(load_cohort(results), tmp_path / "group_cmb.tsv")
    assert (paths["tsv"].read_bytes(), paths["json"].read_bytes()) == before  # bit for bit


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no scan results"):
        load_cohort(tmp_path)
    write_scan(tmp_path / "out", "sub-01", 1)
    (tmp_path / "bids").mkdir()
    (tmp_path / "bids" / "participants.tsv").write_text("subject\tage\n01\t30\n")
    with pytest.raises(InputError, match=r"participants.tsv: no participant_id column"):
        load_cohort(tmp_path / "out", tmp_path / "bids")
    (tmp_path / "bids" / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-01\t31\n")
    with pytest.raises(InputError, match="sub-01 appears more than once"):
        load_cohort(tmp_path / "out", tmp_path / "bids")
    with pytest.raises(InputError, match="does not exist"):
        load_cohort(tmp_path / "out", tmp_path / "nowhere")


def test_participants_without_results_and_results_without_participants(tmp_path):
    write_scan(tmp_path / "out", "sub-01", 1)
    write_scan(tmp_path / "out", "sub-02", 0, seed=2)
    (tmp_path / "bids").mkdir()
    pd.DataFrame({"participant_id": ["sub-01", "sub-03"], "age": [30, 40]}).to_csv(
        tmp_path / "bids" / "participants.tsv", sep="\t", index=False)
    table = load_cohort(tmp_path / "out", tmp_path / "bids")
    assert table["age"].tolist()[0] == 30 and np.isnan(table["age"].tolist()[1])
    notes = " ".join(table.attrs["notes"])
    assert "not in participants.tsv (no covariates): sub-02" in notes
    assert "in participants.tsv without results: sub-03" in notes


def test_importing_the_group_level_is_light():
    code = ("import sys, microbleeds.group as g, argparse; g.add_group_arguments(argparse.ArgumentParser()); "
            "print(','.join(m for m in ('pandas', 'statsmodels', 'matplotlib', 'scipy', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
