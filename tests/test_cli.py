"""The command line over folders: bad scans are reported and skipped, results resume."""

import json

import nibabel as nib
import numpy as np
import pytest

from microbleeds import __version__
from microbleeds.cli import find_phase, find_scans, main


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
    assert "no NIfTI scan found" in capsys.readouterr().err


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
