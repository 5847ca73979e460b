"""Review decisions folded into reviewed lesion tables; cohort table (no browser needed)."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest_browser import make_scan_output  # noqa: E402

from microbleeds.contract import DECISION_COLUMNS, RESULT_FILES, burden_category  # noqa: E402
from microbleeds.errors import InputError  # noqa: E402
from microbleeds.io.results import find_scan_dirs  # noqa: E402
from microbleeds.io.tables import read_tsv  # noqa: E402
from microbleeds.review.cohort import write_cohort  # noqa: E402
from microbleeds.review.decisions import apply_review  # noqa: E402
from microbleeds.review.page import build_report  # noqa: E402


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    # 5 candidates: 1-3 accepted (lesions 1-3), 4 rejected calcification, 5 rejected tubular
    return make_scan_output(tmp_path_factory.mktemp("rev"), n_candidates=5, with_phase=False)


def _digest(folder):
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in RESULT_FILES}


def _write_decisions(path, sha, rows, columns=DECISION_COLUMNS[:7]):
    with open(path, "w", newline="") as handle:
        w = csv.writer(handle, delimiter="\t", lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])
    return path


def _sha(scan_dir):
    return json.loads((scan_dir / "summary.json").read_text())["input"]["sha256"]


def _dec(sha, cid, lid, decision, mimic="", reviewer="Dr A", time="2026-01-01T10:00:00Z"):
    return {"sha256": sha, "candidate_id": cid, "lesion_id": lid, "decision": decision,
            "mimic_type": mimic, "reviewer": reviewer, "time": time}


def test_burden_category():
    assert [burden_category(n) for n in (0, 1, 2, 4, 5, 30)] == ["0", "1", "2-4", "2-4",
                                                                  ">=5", ">=5"]


def test_apply_review_full(scan_dir, tmp_path):
    sha = _sha(scan_dir)
    before = _digest(scan_dir)
    dec = _write_decisions(tmp_path / "decisions.tsv", sha, [
        _dec(sha, 1, 1, "confirmed"),
        _dec(sha, 2, 2, "rejected", "vein"),
        _dec(sha, 2, 2, "rejected", "calcification", time="2026-01-01T10:05:00Z"),  # last wins
        _dec(sha, 3, 3, "confirmed"),
        _dec(sha, 4, 0, "confirmed"),                      # rejected by the algorithm: added
        _dec(sha, 5, 0, "rejected", "vein"),
    ])
    paths = apply_review(dec, scan_dir)
    assert set(paths) == {"lesions", "summary", "decisions"}
    assert paths["lesions"] == scan_dir / "lesions_reviewed.tsv"
    assert _digest(scan_dir) == before, "automatic result files must never change"

    cols, rows = read_tsv(paths["lesions"])
    auto_cols, _ = read_tsv(scan_dir / "lesions.tsv")
    assert cols[: len(auto_cols)] == auto_cols
    assert cols[len(auto_cols):] == ["candidate_id", "reviewed_status", "mimic_type", "reviewer",
                                     "review_time"]
    status = {r["lesion_id"]: (r["reviewed_status"], r["mimic_type"], r["candidate_id"])
              for r in rows}
    assert status == {"1": ("confirmed", "", "1"), "2": ("rejected", "calcification", "2"),
                      "3": ("confirmed", "", "3"), "4": ("added", "", "4")}
    added = [r for r in rows if r["reviewed_status"] == "added"][0]
    assert added["region"] == "deep" and added["region_source"] == "review"
    assert added["reviewer"] == "Dr A" and added["review_time"]

    s = json.loads(paths["summary"].read_text())
    assert s["counts"]["total"] == 3
    assert s["burden_category"] == "2-4"
    assert s["automatic"]["counts"]["total"] == 3
    assert s["counts"]["by_region"]["lobar"] == 1 and s["counts"]["by_region"]["deep"] == 1
    assert sum(s["counts"]["by_size"].values()) == 3
    assert set(s["counts"]["by_size"]) == {"<2mm", "2-5mm", ">=5mm"}  # keys of summary.json
    assert s["review"]["complete"] is True
    assert s["review"]["added"] == 1 and s["review"]["rejected"] == 1
    assert s["review"]["mimics"]["vein"] == 1 and s["review"]["mimics"]["calcification"] == 1
    assert s["input"]["sha256"] == sha

    # normalised decisions can be applied again and give the same result
    again = apply_review(paths["decisions"], scan_dir)
    assert read_tsv(again["lesions"]) == (cols, rows)


def test_partial_review_counts_only_confirmed(scan_dir, tmp_path):
    sha = _sha(scan_dir)
    dec = _write_decisions(tmp_path / "d.tsv", sha, [_dec(sha, 1, 1, "confirmed")])
    s = json.loads(apply_review(dec, scan_dir)["summary"].read_text())
    assert s["counts"]["total"] == 1 and s["burden_category"] == "1"
    assert s["review"]["complete"] is False and s["review"]["unreviewed_lesions"] == 2
    assert any("review incomplete" in n for n in s["notes"])
    _cols, rows = read_tsv(scan_dir / "lesions_reviewed.tsv")
    assert [r["reviewed_status"] for r in rows] == ["confirmed", "unreviewed", "unreviewed"]


def test_checksum_mismatch_refused(scan_dir, tmp_path):
    dec = _write_decisions(tmp_path / "other.tsv", "ab" * 32, [_dec("ab" * 32, 1, 1, "confirmed")])
    with pytest.raises(InputError, match="different scan") as err:
        apply_review(dec, scan_dir)
    assert str(dec) in str(err.value)


@pytest.mark.parametrize("row, message", [
    ({"candidate_id": 99, "lesion_id": 0, "decision": "confirmed"}, "unknown candidate_id '99'"),
    ({"candidate_id": 1, "lesion_id": 1, "decision": "maybe"}, "not one of confirmed"),
    ({"candidate_id": 1, "lesion_id": 1, "decision": "rejected", "mimic_type": "tumour"},
     "mimic_type"),
    ({"candidate_id": 1, "lesion_id": 1, "decision": "confirmed", "reviewer": ""},
     "reviewer name is empty"),
    ({"candidate_id": 1, "lesion_id": 2, "decision": "confirmed"}, "re-run"),
])
def test_bad_decisions_refused(scan_dir, tmp_path, row, message):
    sha = _sha(scan_dir)
    full = _dec(sha, 0, 0, "")
    full.update(row)
    dec = _write_decisions(tmp_path / "bad.tsv", sha, [full])
    with pytest.raises(InputError, match=message):
        apply_review(dec, scan_dir)


def test_moved_candidate_refused(scan_dir, tmp_path):
    sha = _sha(scan_dir)
    row = dict(_dec(sha, 1, 1, "confirmed"), x_mm=10.0, y_mm=40.0, z_mm=20.0)
    dec = _write_decisions(tmp_path / "moved.tsv", sha, [row], DECISION_COLUMNS)
    with pytest.raises(InputError, match="x_mm"):
        apply_review(dec, scan_dir)


def test_not_a_decisions_file(scan_dir):
    with pytest.raises(InputError, match="not a decisions file"):
        apply_review(scan_dir / "lesions.tsv", scan_dir)
    with pytest.raises(InputError, match="does not exist"):
        apply_review(scan_dir / "nope.tsv", scan_dir)


def test_find_scan_dirs_and_cohort(tmp_path):
    a = make_scan_output(tmp_path / "run", n_candidates=5, name="sub-01_swi", with_phase=False)
    b = make_scan_output(tmp_path / "run", n_candidates=3, seed=2, name="sub-02_swi",
                         with_phase=False)
    root = tmp_path / "run" / "out"
    assert find_scan_dirs(root) == [a, b]
    build_report(a)
    sha = _sha(a)
    dec = _write_decisions(tmp_path / "d.tsv", sha, [_dec(sha, c, c, "confirmed") for c in (1, 2, 3)])
    apply_review(dec, a)
    paths = write_cohort(root)
    _cols, rows = read_tsv(paths["tsv"])
    assert [r["scan"] for r in rows] == ["sub-01_swi", "sub-02_swi"]
    assert rows[0]["review"] == "complete" and rows[0]["confirmed_total"] == "3"
    assert rows[0]["reviewed_burden_category"] == "2-4"
    assert rows[0]["report"] == "sub-01_swi/report.html"
    assert rows[1]["review"] == "none" and rows[1]["report"] == ""
    page = paths["html"].read_text()
    assert "href='sub-01_swi/report.html'" in page
    assert (root / rows[0]["report"]).is_file()


def test_cohort_missing_values_are_na(tmp_path):
    d = make_scan_output(tmp_path, n_candidates=2, with_phase=False)
    summary = json.loads((d / "summary.json").read_text())
    summary["acquisition"].update(field_strength_t=1.5, echo_time_ms=None)
    (d / "summary.json").write_text(json.dumps(summary))
    _cols, rows = read_tsv(write_cohort(tmp_path / "out")["tsv"])
    assert (rows[0]["field_strength_t"], rows[0]["echo_time_ms"], rows[0]["reviewers"]) == ("1.5", "n/a", "")


def test_apply_review_finds_scan_folder_under_root(tmp_path):
    a = make_scan_output(tmp_path / "run", n_candidates=3, name="sub-01_swi", with_phase=False)
    b = make_scan_output(tmp_path / "run", n_candidates=3, seed=7, name="sub-02_swi",
                         with_phase=False)
    sha = _sha(b)
    dec = _write_decisions(tmp_path / "d.tsv", sha, [_dec(sha, 1, 1, "confirmed")])
    paths = apply_review(dec, tmp_path / "run" / "out")
    assert paths["summary"].parent == b and not (a / "summary_reviewed.json").exists()
    other = _write_decisions(tmp_path / "o.tsv", "cd" * 32, [_dec("cd" * 32, 1, 1, "confirmed")])
    with pytest.raises(InputError, match="no scan results folder"):
        apply_review(other, tmp_path / "run" / "out")


def test_no_candidates(tmp_path):
    d = make_scan_output(tmp_path, n_candidates=0, with_phase=False)
    page = build_report(d).read_text()
    assert "0 candidates" in page
    dec = _write_decisions(tmp_path / "empty.tsv", _sha(d), [])
    s = json.loads(apply_review(dec, d)["summary"].read_text())
    assert s["counts"]["total"] == 0 and s["burden_category"] == "0"
    assert s["review"]["complete"] is True


@pytest.mark.parametrize("cells, problem", [(6, "6 cell(s) but the header has 7 (missing"),
                                            (8, "8 cell(s) but the header has 7 (extra")])
def test_a_malformed_row_is_refused_with_its_line_number(tmp_path, cells, problem):
    scan = make_scan_output(tmp_path, n_candidates=3, with_phase=False)
    sha = _sha(scan)
    good = [sha, "1", "1", "confirmed", "", "Dr A", "2026-01-01T10:00:00Z"]
    bad = (good + ["stray"])[:cells]
    text = "\t".join(DECISION_COLUMNS[:7]) + "\n" + "\t".join(good) + "\n\n" + "\t".join(bad) + "\n"
    (tmp_path / "dec.tsv").write_text(text)
    with pytest.raises(InputError) as info:
        apply_review(tmp_path / "dec.tsv", scan)
    assert str(info.value).startswith(f"{tmp_path / 'dec.tsv'}: line 4: {problem}")
    assert not (scan / "lesions_reviewed.tsv").exists()
    assert not list(scan.glob(".*"))  # no temporary left behind either
