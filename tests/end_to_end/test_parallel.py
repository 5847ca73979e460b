"""Scans in worker processes: byte-identical to serial, resumable, and a dying worker loses no scan
but its own (retried once)."""

import nibabel as nib
import numpy as np
import pytest
from synthetic import dying_worker

from microbleeds.batch import detect_folder, run_jobs

RESULT_FILES = ("lesions.tsv", "candidates.tsv", "labels.nii.gz", "mask.nii.gz", "summary.json")


@pytest.fixture()
def four_scans(tmp_path, painted):
    volume, affine, _ = painted
    folder = tmp_path / "in"
    folder.mkdir()
    variants = {"a": volume, "b": volume[::-1], "c": np.transpose(volume, (1, 0, 2)), "d": volume[:, ::-1]}
    for name, data in variants.items():
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), folder / f"sub-{name}_T2starw.nii.gz")
    return folder


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.name in RESULT_FILES}


def test_two_workers_match_serial_and_resume(four_scans, tmp_path):
    serial = detect_folder(four_scans, tmp_path / "serial")
    pooled = detect_folder(four_scans, tmp_path / "pooled", nprocs=2)
    assert len(serial.done) == len(pooled.done) == 4 and not pooled.failed
    a, b = _files(tmp_path / "serial"), _files(tmp_path / "pooled")
    assert len(a) == 20
    assert a == b  # every result file, summaries (same inputs) included, byte for byte
    again = detect_folder(four_scans, tmp_path / "pooled", nprocs=2)
    assert len(again.skipped) == 4 and not again.done


def test_a_dying_worker_costs_only_its_scan(four_scans, tmp_path):
    volume = nib.load(four_scans / "sub-a_T2starw.nii.gz")
    nib.save(volume, four_scans / "sub-die_T2starw.nii.gz")
    nib.save(volume, four_scans / "sub-once_T2starw.nii.gz")
    out = tmp_path / "out"
    jobs = [(p, out / p.name.replace(".nii.gz", ""), _settings()) for p in sorted(four_scans.glob("*.nii.gz"))]
    outcomes = run_jobs(jobs, nprocs=2, work=dying_worker)
    kinds = {job[0].name: outcome[0] for job, outcome in zip(jobs, outcomes)}
    assert kinds.pop("sub-die_T2starw.nii.gz") == "failed"
    assert set(kinds.values()) == {"done"}  # 'once' succeeded on its retry, the others untouched
    died = outcomes[[job[0].name for job in jobs].index("sub-die_T2starw.nii.gz")]
    assert "worker process died twice" in died[2]
    assert not (out / "sub-die_T2starw").exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "sub-a_T2starw", "sub-b_T2starw", "sub-c_T2starw", "sub-d_T2starw", "sub-once_T2starw"]


def _settings():
    return dict(pipeline="swi-3t", mask=None, phase=None, labels=None, labels_t1w=None, echo_times_ms=None,
                images=False, force=False, overrides={})
