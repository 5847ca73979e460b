"""The BIDS App on a small synthetic dataset (3 subjects x 2 sessions, tiny volumes): only the
T2*-weighted scans run, echoes grouped, inherited metadata recorded, presets by field strength,
BIDS Derivatives that the official validator (bids-validator-deno, offline) accepts, the same
layout for one subject as for all, resume, the run log, the group level, and a moved dataset."""

import hashlib
import json
import shutil
import subprocess

import pytest
from synthetic import bids_dataset

from microbleeds.cli import bids_main, main
from microbleeds.io.derivatives import BIDS_NAMES
from microbleeds.io.results import find_scan_dirs, load_results

N_SCANS = 3 * 2 + 3 + 1  # a T2starw per session, a 3-echo MEGRE per ses-1, one 4-echo MEGRE


def _tree(root, skip=("logs",)):
    """Relative path -> SHA-256 of every file under ``root`` (the run logs left out)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] not in skip}


@pytest.fixture(scope="module")
def app_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    bids = bids_dataset(root / "bids")
    out = bids / "derivatives" / "microbleeds"
    assert bids_main([str(bids), str(out), "participant", "-q", "--write-swi",
                      "--brain-coverage", "partial"]) == 0
    return bids, out


def _summary(out, prefix):
    scan = next(d for d in find_scan_dirs(out) if d.name == prefix)
    return load_results(scan)["summary"]


def test_only_t2star_weighted_scans_are_processed(app_run):
    bids, out = app_run
    scans = find_scan_dirs(out)
    assert len(scans) == N_SCANS
    suffixes = {_summary(out, d.name)["bids"]["entities"]["suffix"] for d in scans}
    assert suffixes == {"T2starw", "MEGRE"}
    written = " ".join(p.name for p in out.rglob("*"))
    for other in ("T1w", "FLAIR", "bold", "dwi"):
        assert other not in written
    assert not (out / "sourcedata").exists() and not (out / "code").exists()


def test_echoes_grouped_with_their_echo_times_and_inherited_metadata(app_run):
    _, out = app_run
    me3 = _summary(out, "sub-02_ses-1_acq-me3")
    assert me3["acquisition"]["echo_time_ms"] == pytest.approx([5.0, 10.0, 15.0])
    assert "of 3 echoes" in me3["input"]["echoes"]
    assert len(me3["input"]["files"]) == 6 and me3["phase"] is not None  # 3 magnitudes + 3 phases
    me4 = _summary(out, "sub-01_ses-2_acq-me4")
    assert me4["acquisition"]["echo_time_ms"] == pytest.approx([6.0, 12.0, 18.0, 24.0])
    t2s = _summary(out, "sub-03_ses-2")  # only the top-level T2starw.json describes it
    assert t2s["acquisition"]["field_strength_t"] == 1.5 and t2s["acquisition"]["echo_time_ms"] == 25.0
    assert t2s["acquisition_metadata"]["manufacturer"] == "Siemens"
    assert t2s["acquisition_metadata"]["repetition_time_ms"] == 50.0
    assert t2s["acquisition_metadata"]["flip_angle_deg"] == 15.0
    assert t2s["bids"] == {"participant_id": "sub-03", "session_id": "ses-2",
                           "entities": {"subject": "03", "session": "2", "suffix": "T2starw", "datatype": "anat"},
                           "source": "sub-03/ses-2/anat/sub-03_ses-2_T2starw.nii.gz"}
    assert t2s["schema_version"]


def test_preset_chosen_by_field_strength(app_run):
    _, out = app_run
    assert _summary(out, "sub-03_ses-2")["pipeline"]["name"] == "gre-1.5t"  # 1.5 T, inherited
    assert _summary(out, "sub-02_ses-1_acq-me3")["pipeline"]["name"] == "swi-3t"
    assert _summary(out, "sub-01_ses-2_acq-me4")["pipeline"]["name"] == "swi-7t"
    assert "1.5 T" in _summary(out, "sub-03_ses-2")["pipeline"]["chosen"]


def _validate(path):
    exe = shutil.which("bids-validator-deno")
    assert exe, "bids-validator-deno is not installed (pip install -e '.[test]')"
    done = subprocess.run([exe, str(path), "--format", "json"], capture_output=True, text=True, timeout=300)
    issues = json.loads(done.stdout)["issues"]["issues"]
    return [f"{i['code']} {i.get('location')}" for i in issues if i["severity"] == "error"]


def test_the_validator_accepts_raw_and_derivatives(app_run):
    bids, out = app_run
    assert _validate(bids) == []
    assert _validate(out) == []
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "microbleeds"
    anat = out / "sub-02" / "ses-1" / "anat"
    for tail in ("desc-cmb_dseg.nii.gz", "desc-cmb_dseg.tsv", "desc-cmb_dseg.json", "desc-brain_mask.nii.gz",
                 "desc-swi_T2starw.nii.gz", "part-phase_desc-filtered_T2starw.nii.gz", "desc-cmb_lesions.json"):
        assert (anat / f"sub-02_ses-1_acq-me3_{tail}").is_file(), tail
    sources = json.loads((anat / "sub-02_ses-1_acq-me3_desc-cmb_dseg.json").read_text())["Sources"]
    assert sources[0] == "bids:raw:sub-02/ses-1/anat/sub-02_ses-1_acq-me3_echo-1_part-mag_MEGRE.nii.gz"
    lesions = (anat / f"sub-02_ses-1_{BIDS_NAMES['lesions.tsv']}").read_text().splitlines()
    assert all("\t\t" not in line and not line.endswith("\t") for line in lesions)  # empty cells are n/a


def test_one_subject_gives_the_same_files_as_the_whole_dataset(app_run, tmp_path):
    bids, out = app_run
    single = tmp_path / "single"
    assert bids_main([str(bids), str(single), "participant", "--participant-label", "02", "-q", "--write-swi",
                      "--brain-coverage", "partial"]) == 0
    whole = {k: v for k, v in _tree(out).items() if k.startswith("sub-02/")}
    mine = {k: v for k, v in _tree(single).items() if k.startswith("sub-")}
    assert mine.keys() == whole.keys()
    for name in mine:  # same bytes, but the summary's input path is relative to where the results are
        if name.endswith("_summary.json"):
            a, b = (json.loads((root / name).read_text()) for root in (single, out))
            assert a["input"].pop("path") != b["input"].pop("path")
            assert a == b
        else:
            assert mine[name] == whole[name], name


def test_rerun_is_up_to_date_and_the_log_lists_what_was_skipped(app_run, capsys):
    bids, out = app_run
    before = _tree(out)
    assert bids_main([str(bids), str(out), "participant", "-v", "--write-swi",
                      "--brain-coverage", "partial"]) == 0
    printed = capsys.readouterr().out
    assert f"0 done, {N_SCANS} up to date, 0 failed" in printed
    assert "not processed: " in printed and "sub-01_ses-1_T1w.nii.gz: suffix T1w" in printed
    assert _tree(out) == before
    log = sorted((out / "logs").glob("run-*.log"))[-1].read_text()
    assert f"found: {N_SCANS} scan(s)" in log and "sourcedata: source data" in log
    assert "func datatype (bold)" in log
    failed = sorted((out / "logs").glob("run-*_failed.tsv"))[-1].read_text()
    assert failed == "scan\terror\n"


def test_a_bad_scan_is_listed_in_the_failed_table(tmp_path):
    bids = bids_dataset(tmp_path / "bids", subjects=1, sessions=1)
    (bids / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T2starw.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "out"
    assert bids_main([str(bids), str(out), "participant", "-q"]) == 1
    failed = sorted((out / "logs").glob("run-*_failed.tsv"))[-1].read_text().splitlines()
    assert len(failed) == 2 and "sub-01_ses-1_T2starw.nii.gz" in failed[1]
    assert len(find_scan_dirs(out)) == 1  # the MEGRE went on


def test_group_level_runs(tmp_path):
    bids = bids_dataset(tmp_path / "bids", subjects=3, sessions=1)
    (tmp_path / "filter.json").write_text(json.dumps({"t2starw": {"acquisition": None}}))  # one scan each
    out = tmp_path / "out"
    assert bids_main([str(bids), str(out), "participant", "-q", "--brain-coverage", "partial",
                      "--bids-filter-file", str(tmp_path / "filter.json")]) == 0
    assert len(find_scan_dirs(out)) == 3
    assert bids_main([str(bids), str(out), "group"]) == 0
    assert any(out.glob("*.tsv"))  # the group table (or the cohort table without the group level)
    assert _validate(out) == []  # the group outputs are named in .bidsignore


def test_reports_rebuild_after_moving_the_dataset(app_run, tmp_path):
    bids, out = app_run
    moved = tmp_path / "elsewhere" / "bids"
    shutil.copytree(bids, moved)
    derivatives = moved / "derivatives" / "microbleeds"
    assert main(["report", str(derivatives)]) == 0
    page = (derivatives / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_desc-cmb_report.html").read_text()
    assert "data:image/png;base64" in page  # the input image was found, relative to the moved results
    cohort = (derivatives / "cohort.tsv").read_text().splitlines()
    header = cohort[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in cohort[1:]]
    assert len(rows) == N_SCANS and {r["participant_id"] for r in rows} == {"sub-01", "sub-02", "sub-03"}
    assert {r["session_id"] for r in rows} == {"ses-1", "ses-2"}
    assert all(r["report"].endswith("_desc-cmb_report.html") for r in rows)


def test_inherited_metadata_is_part_of_the_fingerprint_and_reruns_are_bit_for_bit(tmp_path, capsys):
    bids = bids_dataset(tmp_path / "bids", subjects=1, sessions=1)  # a T2starw and a 3-echo MEGRE
    out = tmp_path / "out"
    args = [str(bids), str(out), "participant", "--brain-coverage", "partial"]
    assert bids_main(args) == 0
    first = _tree(out)
    assert bids_main(args + ["--force"]) == 0
    assert _tree(out) == first  # recomputed: the same bytes
    side = json.loads((bids / "T2starw.json").read_text())
    (bids / "T2starw.json").write_text(json.dumps(dict(side, FlipAngle=20)))  # the top-level, inherited sidecar
    capsys.readouterr()
    assert bids_main(args) == 0
    assert "1 done, 1 up to date, 0 failed" in capsys.readouterr().out  # only the T2starw inherits it
    assert _summary(out, "sub-01_ses-1")["acquisition_metadata"]["flip_angle_deg"] == 20.0


def test_a_review_lives_beside_the_derivatives_and_survives_a_rerun(tmp_path):
    bids = bids_dataset(tmp_path / "bids", subjects=1, sessions=1)
    out = tmp_path / "out"
    args = [str(bids), str(out), "participant", "-q", "--brain-coverage", "partial"]
    assert bids_main(args) == 0
    summary = _summary(out, "sub-01_ses-1")
    assert summary["candidates"] >= 1
    decisions = tmp_path / "decisions.tsv"
    decisions.write_text("sha256\tcandidate_id\tlesion_id\tdecision\tmimic_type\treviewer\ttime\n"
                         f"{summary['input']['sha256']}\t1\t1\trejected\tvein\tDr A\t2026-01-01T10:00:00Z\n")
    assert main(["review", "apply", str(decisions), str(out)]) == 0
    anat = out / "sub-01" / "ses-1" / "anat"
    reviewed = anat / "sub-01_ses-1_desc-reviewed_summary.json"
    assert json.loads(reviewed.read_text())["counts"]["total"] == summary["counts"]["total"] - 1
    assert (anat / "sub-01_ses-1_desc-reviewed_lesions.tsv").is_file()
    assert _validate(out) == []
    assert bids_main(args + ["--force"]) == 0  # the same lesions: the review stays where it is
    assert reviewed.is_file()
    assert find_scan_dirs(out) == sorted(anat / p for p in ("sub-01_ses-1", "sub-01_ses-1_acq-me3"))


def test_usage_errors_and_bids_echo_numbers(tmp_path, capsys):
    from microbleeds.cli import build_parser

    bids = bids_dataset(tmp_path / "bids", subjects=1, sessions=1)
    assert bids_main([str(bids), str(bids), "participant"]) == 2  # never into the raw dataset
    assert bids_main([str(bids), str(bids / "sub-01" / "x"), "participant"]) == 2
    assert "into the raw dataset" in capsys.readouterr().err
    assert bids_main([str(tmp_path), str(tmp_path / "o"), "participant"]) == 2  # not a BIDS dataset
    assert "not a BIDS dataset" in capsys.readouterr().err
    args = build_parser().parse_args(["detect", "x.nii.gz", "--echo", "echo-2"])
    assert args.echo == "1"  # BIDS's echo-2 is the 0-based index 1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["detect", "x.nii.gz", "--echo", "echo-0"])


def test_scans_whose_derivatives_would_share_names_are_refused_alone(tmp_path):
    bids = bids_dataset(tmp_path / "bids", subjects=2, sessions=1)
    anat = bids / "sub-01" / "ses-1" / "anat"
    for e in (1, 2, 3):  # the 3-echo MEGRE again without its acq- label: same entities as the T2starw
        for ext in (".nii.gz", ".json"):
            source = anat / f"sub-01_ses-1_acq-me3_echo-{e}_part-mag_MEGRE{ext}"
            (anat / f"sub-01_ses-1_echo-{e}_MEGRE{ext}").write_bytes(source.read_bytes())
    out = tmp_path / "out"
    assert bids_main([str(bids), str(out), "participant", "-q", "--brain-coverage", "partial"]) == 1
    failed = sorted((out / "logs").glob("run-*_failed.tsv"))[-1].read_text()
    assert "sub-01_ses-1_T2starw.nii.gz" in failed and "sub-01_ses-1_echo-1_MEGRE.nii.gz" in failed
    assert "--bids-filter-file" in failed
    assert len(find_scan_dirs(out)) == 3  # sub-01's acq-me3 MEGRE and sub-02's two scans went on
