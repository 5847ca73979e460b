"""BIDS Derivatives result sets: names both ways, sidecars for every column, the summary as the
set's commit mark, stale temporaries, and a reader's review set aside when the lesions change."""

import json

import pytest

from microbleeds.contract import (
    CANDIDATE_COLUMNS,
    CANDIDATES_FILE,
    LABELS_FILE,
    LESION_COLUMNS,
    LESIONS_FILE,
    MASK_FILE,
    REVIEWED_SUMMARY_FILE,
    SUMMARY_FILE,
)
from microbleeds.io.derivative_columns import CANDIDATE_COLUMN_DOCS, LESION_COLUMN_DOCS
from microbleeds.io.derivatives import (
    BIDS_NAMES,
    dseg_lookup,
    result_path,
    scan_dir_of,
    write_derivative_files,
)
from microbleeds.io.results import find_scan_dirs, is_complete, load_results


def _files(lesions="lesion_id\tx_mm\n1\t2.0000\n", fingerprint="a"):
    return {LESIONS_FILE: lesions.encode(), CANDIDATES_FILE: b"candidate_id\tstatus\n1\taccepted\n",
            LABELS_FILE: b"not checked here", MASK_FILE: b"nor here",
            SUMMARY_FILE: json.dumps({"fingerprint": fingerprint}).encode()}


def test_every_table_column_is_described():
    assert set(LESION_COLUMNS) <= set(LESION_COLUMN_DOCS)
    assert set(CANDIDATE_COLUMNS) <= set(CANDIDATE_COLUMN_DOCS)
    assert all(doc["Description"] for doc in CANDIDATE_COLUMN_DOCS.values())


@pytest.mark.parametrize("name", sorted(BIDS_NAMES))
def test_names_both_ways(tmp_path, name):
    prefix = tmp_path / "sub-01" / "anat" / "sub-01_acq-x"
    path = result_path(prefix, name)
    assert path.parent == prefix.parent and path.name.startswith("sub-01_acq-x_")
    assert scan_dir_of(path) == prefix
    folder = tmp_path / "plain"
    folder.mkdir()
    assert result_path(folder, name) == folder / name and scan_dir_of(folder / name) == folder


def test_dseg_lookup_lists_each_lesion():
    assert dseg_lookup(b"lesion_id\tx_mm\n1\t0.5\n2\t1.5\n") == "index\tname\n1\tmicrobleed\n2\tmicrobleed\n"
    assert dseg_lookup(b"lesion_id\tx_mm\n") == "index\tname\n"


def test_the_summary_marks_a_complete_set(tmp_path):
    prefix = tmp_path / "sub-01" / "anat" / "sub-01"
    write_derivative_files(_files(), prefix, ["sub-01/anat/sub-01_T2starw.nii.gz"])
    assert find_scan_dirs(tmp_path) == [prefix]
    assert load_results(prefix)["lesions"] == [{"lesion_id": "1", "x_mm": "2.0000"}]
    side = json.loads((prefix.parent / "sub-01_desc-cmb_dseg.json").read_text())
    assert side["Sources"] == ["bids:raw:sub-01/anat/sub-01_T2starw.nii.gz"]
    result_path(prefix, SUMMARY_FILE).unlink()  # what a kill between the files and the summary leaves
    assert find_scan_dirs(tmp_path) == [] and not is_complete(prefix, {"x": 1})
    stale = prefix.parent / ".sub-01_desc-cmb_lesions.tsv.abcd1234.tmp"
    stale.write_text("half")
    write_derivative_files(_files(), prefix, [])
    assert not stale.exists() and find_scan_dirs(tmp_path) == [prefix]


def test_a_review_moves_aside_only_when_the_lesions_change(tmp_path):
    prefix = tmp_path / "sub-01" / "anat" / "sub-01"
    write_derivative_files(_files(), prefix, [])
    review = result_path(prefix, REVIEWED_SUMMARY_FILE)
    review.write_text("{}")
    write_derivative_files(_files(), prefix, [])  # same lesions: the review stays
    assert review.is_file()
    write_derivative_files(_files(lesions="lesion_id\tx_mm\n"), prefix, [])
    assert not review.exists()
    assert (prefix.parent / "superseded_review" / "sub-01" / review.name).read_text() == "{}"
    assert find_scan_dirs(tmp_path) == [prefix]  # a superseded review is not a scan
