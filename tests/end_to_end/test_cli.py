"""The command line over folders: bad scans are reported and skipped, results resume."""

import json

import nibabel as nib
import numpy as np
import pytest

from microbleeds import __version__
from microbleeds.batch import find_phase, find_scans
from microbleeds.cli import main


@pytest.fixture()
def folder(tmp_path, painted):
    volume, affine, _ = painted
    root = tmp_path / "bids"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "sub-02" / "anat").mkdir(parents=True)
    (root / "derivatives" / "old").mkdir(parents=True)
    nib.save(nib.Nifti1Image(volume, affine), root / "sub-01" / "anat" / "sub-01_swi.nii.gz")
    nib.save(nib.Nifti1Image(volume[:, ::-1], affine), root / "sub-02" / "anat" / "sub-02_swi.nii.gz")
    nib.save(nib.Nifti1Image(volume, affine), root / "derivatives" / "old" / "x_swi.nii.gz")
    nib.save(nib.Nifti1Image((volume > 0.5).astype(np.uint8), affine), root / "sub-01" / "anat" / "sub-01_mask.nii.gz")
    (root / "sub-02" / "anat" / "sub-02_bad_swi.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return root


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_scan_discovery_skips_masks_and_derivatives(folder):
    names = sorted(p.name for p, _ in find_scans([folder]))
    assert names == ["sub-01_swi.nii.gz", "sub-02_bad_swi.nii.gz", "sub-02_swi.nii.gz"]


def test_batch_survives_a_bad_scan_and_resumes(folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["detect", str(folder), "-o", str(out), "-q"])
    printed = capsys.readouterr()
    assert code == 1
    assert "sub-02_bad_swi.nii.gz" in printed.out and "2 done" in printed.out
    for sub in ("sub-01", "sub-02"):
        summary = json.loads((out / sub / "anat" / f"{sub}_swi" / "summary.json").read_text())
        assert summary["counts"]["total"] == 4
    assert not (out / "sub-02" / "anat" / "sub-02_bad_swi").exists()
    assert not list(out.rglob(".*tmp"))
    before = (out / "sub-01" / "anat" / "sub-01_swi" / "lesions.tsv").stat().st_mtime_ns
    code = main(["detect", str(folder), "-o", str(out), "-q"])
    assert "2 up to date" in capsys.readouterr().out
    assert (out / "sub-01" / "anat" / "sub-01_swi" / "lesions.tsv").stat().st_mtime_ns == before


def test_nothing_found_is_a_usage_error(tmp_path, capsys):
    assert main(["detect", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert "no T2*-weighted NIfTI scan found" in capsys.readouterr().err


def test_missing_file_exit_code_and_one_line_message(tmp_path, capsys):
    missing = tmp_path / "nope.nii.gz"
    assert main(["detect", str(missing), "-o", str(tmp_path / "o"), "-q"]) == 1
    out = capsys.readouterr().out
    assert f"{missing}: magnitude file does not exist" in out
    assert "Traceback" not in out


def test_unknown_preset_is_a_usage_error(folder, tmp_path, capsys):
    assert main(["detect", str(folder), "--pipeline", "nope", "-o", str(tmp_path / "o")]) == 2
    assert "swi-3t" in capsys.readouterr().err


def test_phase_pairing(tmp_path):
    for name in ("sub-01_part-mag_swi.nii.gz", "sub-01_part-phase_swi.nii.gz", "p1_mag.nii.gz", "p1_phase.nii.gz",
                 "lonely_mag.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    assert find_phase(tmp_path / "sub-01_part-mag_swi.nii.gz") == [tmp_path / "sub-01_part-phase_swi.nii.gz"]
    assert find_phase(tmp_path / "p1_mag.nii.gz") == [tmp_path / "p1_phase.nii.gz"]
    assert find_phase(tmp_path / "lonely_mag.nii.gz") is None


def test_presets_listed(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("swi-3t", "itp-3t-swi", "gre-1.5t", "strict-5mm"):
        assert name in out


def test_two_scans_with_one_output_folder_are_refused(tmp_path, painted, capsys):
    volume, affine, _ = painted
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        nib.save(nib.Nifti1Image(volume, affine), tmp_path / sub / "scan.nii.gz")
    code = main(["detect", str(tmp_path / "a" / "scan.nii.gz"), str(tmp_path / "b" / "scan.nii.gz"),
                 "-o", str(tmp_path / "out"), "-q"])
    assert code == 2 and "two scans would write" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_new_mask_or_image_request_is_not_skipped_as_up_to_date(folder, tmp_path, capsys, painted):
    volume, affine, _ = painted
    scan = folder / "sub-01" / "anat" / "sub-01_swi.nii.gz"
    out = tmp_path / "out"
    assert main(["detect", str(scan), "-o", str(out), "-q"]) == 0
    mask = np.zeros(volume.shape, np.uint8)
    mask[20:70, 20:70, 5:40] = 1
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "box_mask.nii.gz")
    capsys.readouterr()
    assert main(["detect", str(scan), "-o", str(out), "-q", "--mask", str(tmp_path / "box_mask.nii.gz")]) == 0
    assert "1 done" in capsys.readouterr().out
    summary = json.loads((out / "sub-01_swi" / "summary.json").read_text())
    assert summary["fingerprint"]["mask"] is not None


def test_review_of_an_unchanged_result_survives_a_rerun(folder, tmp_path):
    scan = folder / "sub-01" / "anat" / "sub-01_swi.nii.gz"
    out = tmp_path / "out"
    main(["detect", str(scan), "-o", str(out), "-q"])
    (out / "sub-01_swi" / "review_decisions.tsv").write_text("sha256\tcandidate_id\n")
    main(["detect", str(scan), "-o", str(out), "-q", "--force"])
    assert (out / "sub-01_swi" / "review_decisions.tsv").is_file()
    main(["detect", str(scan), "-o", str(out), "-q", "--max-diameter", "3"])
    assert not (out / "sub-01_swi" / "review_decisions.tsv").exists()
    assert (out / "sub-01_swi" / "superseded_review" / "review_decisions.tsv").is_file()


def test_signed_4d_image_is_refused_as_magnitude(tmp_path, capsys):
    data = np.random.default_rng(0).normal(size=(20, 20, 20, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "phase4d.nii.gz")
    assert main(["detect", str(tmp_path / "phase4d.nii.gz"), "-o", str(tmp_path / "o"), "-q"]) == 1
    assert "negative values" in capsys.readouterr().out


def test_scan_names_with_phase_inside_an_entity_are_still_scans(tmp_path):
    for name in ("sub-01_acq-multiphase_swi.nii.gz", "sub-01_part-phase_swi.nii.gz", "p_phase.nii.gz",
                 "sub-01_desc-brain_mask.nii.gz", "sub-01_T2starw.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    names = sorted(p.name for p, _ in find_scans([tmp_path]))
    assert names == ["sub-01_T2starw.nii.gz", "sub-01_acq-multiphase_swi.nii.gz"]


def test_a_batch_of_good_and_hostile_scans(tmp_path, painted, capsys):
    """Bad names, an unreadable file and a folder another run is writing: exit 1, every good
    scan written, every bad one reported once, nothing outside -o touched, nothing left over."""
    from synthetic import lock_held_elsewhere

    volume, affine, _ = painted
    src = tmp_path / "in"
    src.mkdir()
    for name in ("good", "javascript:alert(1)", "locked", ".", ""):
        nib.save(nib.Nifti1Image(volume, affine), src / f"{name}.nii.gz")
    (src / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    bad = {"locked.nii.gz": "being written by another run", "broken.nii.gz": "",
           "..nii.gz": "result folder name '.'", ".nii.gz": "result folder name ''"}
    with lock_held_elsewhere(out / "locked"):
        code = main(["detect", str(src), "-o", str(out), "-q", "--report"])
    printed = capsys.readouterr().out
    assert code == 1 and "2 done, 0 up to date, 4 failed" in printed
    failed = [line for line in printed.splitlines() if line.startswith("  failed: ")]
    assert len(failed) == len(bad)
    for name, words in bad.items():
        mine = [line for line in failed if f"{src / name}:" in line]
        assert len(mine) == 1 and words in mine[0] and "Traceback" not in mine[0], name
    for name in ("good", "javascript:alert(1)"):
        assert json.loads((out / name / "summary.json").read_text())["counts"]["total"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]
    assert sorted(p.name for p in out.iterdir()) == ["cohort.html", "cohort.json", "cohort.tsv", "good",
                                                     "javascript:alert(1)", "keep.txt", "logs"]
    failed_tsv = next((out / "logs").glob("run-*_failed.tsv")).read_text().splitlines()
    assert failed_tsv[0] == "scan\terror" and len(failed_tsv) == 1 + len(bad)  # every failed scan, one line each
    assert (out / "keep.txt").read_text() == "the user's"
    cohort = (out / "cohort.html").read_text()
    assert "href='javascript%3Aalert%281%29/report.html'" in cohort and "href='javascript:" not in cohort


def test_warnings_are_one_line_each(painted_file, tmp_path):
    """A failed mask check is a one-line warning naming the file on stderr, not a Python warning dump
    (run as a process: pytest would record the warnings itself)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "microbleeds", "detect", str(painted_file), "-o", str(tmp_path / "out"),
                          "-q", "--brain-coverage", "whole"], capture_output=True, text=True)
    assert run.returncode == 0
    lines = [line for line in run.stderr.splitlines() if "warning" in line.lower()]
    assert lines and all(line.startswith(f"microbleeds: warning: {painted_file.name}: ") for line in lines)
    assert "UserWarning" not in run.stderr and "build_summary" not in run.stderr
