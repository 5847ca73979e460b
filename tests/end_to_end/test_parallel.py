"""Scans in worker processes: byte-identical to serial, resumable, and a dying worker loses no scan
but its own (retried once). The helpers here are shared with test_dask.py (the same checks on a
Dask cluster)."""

import mmap
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synthetic import dying_worker

from microbleeds import workers
from microbleeds.batch import detect_folder, detect_one, run_jobs

RESULT_FILES = ("lesions.tsv", "candidates.tsv", "labels.nii.gz", "mask.nii.gz", "summary.json")
_RUN_JOBS = workers.run_jobs  # the engine itself, whatever a test has patched in its place


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


def through_detect_folder(monkeypatch, work=None, **engine):
    """Make :func:`microbleeds.batch.detect_folder` run its jobs (built as it builds them) with
    ``engine`` (``nprocs=2``, ``client=...``) and ``work`` in place of ``detect_one``; the dict
    returned receives the last run's jobs, outcomes and run-log stats."""
    seen, original = {}, _RUN_JOBS

    def run_jobs(jobs, default_work, **kwargs):
        kwargs.update(engine)
        kwargs.setdefault("stats", [])
        outcomes = original(jobs, work or default_work, **kwargs)
        seen.update(jobs=jobs, outcomes=outcomes, stats=kwargs["stats"])
        return outcomes

    monkeypatch.setattr(workers, "run_jobs", run_jobs)
    return seen


def dies_while_writing(job):
    """A batch job for the mid-scan death tests: a scan named ``*die*`` kills its worker process
    after its result files are staged, before the rename that would publish them; ``*once*`` does
    so only the first time (a marker file beside the scan remembers)."""
    from microbleeds.io import results

    path = Path(job[0])
    marker = path.with_suffix(".died")
    if "die" in path.name or ("once" in path.name and not marker.exists()):
        marker.touch()
        results.os = _DyingOs()  # this process ends in the scan's write, so the patch never outlives it
    return detect_one(job)


class _DyingOs:
    """``os`` for :mod:`microbleeds.io.results` that kills the process when the staging folder is complete."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def chmod(path, mode):
        assert any(Path(path).iterdir())  # files staged
        os._exit(9)


def add_dying_scans(folder):
    """``sub-die`` (kills every worker it runs on) and ``sub-once`` (kills its first) beside the scans."""
    volume = nib.load(folder / "sub-a_T2starw.nii.gz")
    nib.save(volume, folder / "sub-die_T2starw.nii.gz")
    nib.save(volume, folder / "sub-once_T2starw.nii.gz")


def check_death_outcomes(jobs, outcomes, stats, out):
    """Only ``sub-die`` failed (after two starts), naming the death; nothing of it is published."""
    kinds = {job[0].name: outcome[0] for job, outcome in zip(jobs, outcomes)}
    assert kinds.pop("sub-die_T2starw.nii.gz") == "failed"
    assert set(kinds.values()) == {"done"}  # 'once' succeeded on its retry, the others untouched
    names = [job[0].name for job in jobs]
    died = outcomes[names.index("sub-die_T2starw.nii.gz")]
    assert "worker process died" in died[2] and str(jobs[names.index("sub-die_T2starw.nii.gz")][0]) in died[2]
    if stats is not None:
        assert len(stats) == len(jobs)
        assert stats[names.index("sub-die_T2starw.nii.gz")]["attempts"] == 2
        assert stats[names.index("sub-die_T2starw.nii.gz")]["pid"] is None
        assert stats[names.index("sub-once_T2starw.nii.gz")]["attempts"] == 2
        assert stats[names.index("sub-a_T2starw.nii.gz")]["attempts"] in (1, 2)  # 2 if it shared a dying worker
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != "logs") == [
        "sub-a_T2starw", "sub-b_T2starw", "sub-c_T2starw", "sub-d_T2starw", "sub-once_T2starw"]


def check_resume_after_death(folder, out, monkeypatch, **engine):
    """A second run repairs the staging folder the death left, runs only ``sub-die``, skips the rest."""
    assert any(p.name.startswith(".sub-die_T2starw.") for p in out.iterdir())  # the dead writer's staging
    seen = through_detect_folder(monkeypatch, **engine)
    run = detect_folder(folder, out)
    assert [p.name for p, *_ in run.done] == ["sub-die_T2starw.nii.gz"] and len(run.skipped) == 5
    assert not run.failed and seen["stats"][0]["pid"] is not None
    assert not any(p.name.startswith(".sub-die_T2starw.") and p.name.endswith(".tmp") for p in out.iterdir())
    assert _files(out)["sub-die_T2starw/lesions.tsv"] == _files(out)["sub-a_T2starw/lesions.tsv"]


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
    add_dying_scans(four_scans)
    out = tmp_path / "out"
    jobs = [(p, out / p.name.replace(".nii.gz", ""), _settings()) for p in sorted(four_scans.glob("*.nii.gz"))]
    outcomes = run_jobs(jobs, nprocs=2, work=dying_worker)  # batch's wrapper of workers.run_jobs
    check_death_outcomes(jobs, outcomes, None, out)
    assert "worker process died twice" in outcomes[[j[0].name for j in jobs].index("sub-die_T2starw.nii.gz")][2]
    assert not (out / "sub-die_T2starw").exists()


def test_a_worker_killed_while_writing_publishes_nothing_and_resumes(four_scans, tmp_path, monkeypatch):
    add_dying_scans(four_scans)
    out = tmp_path / "out"
    seen = through_detect_folder(monkeypatch, dies_while_writing, nprocs=2)
    run = detect_folder(four_scans, out)
    assert [p.name for p, _ in run.failed] == ["sub-die_T2starw.nii.gz"] and len(run.done) == 5
    check_death_outcomes(seen["jobs"], seen["outcomes"], seen["stats"], out)
    assert not (out / "sub-die_T2starw").exists()
    check_resume_after_death(four_scans, out, monkeypatch, nprocs=2)


def test_stats_say_which_worker_ran_each_scan(four_scans, tmp_path, monkeypatch):
    pooled = through_detect_folder(monkeypatch, nprocs=2)
    detect_folder(four_scans, tmp_path / "out")
    serial = through_detect_folder(monkeypatch, nprocs=1)
    detect_folder(four_scans, tmp_path / "serial")
    pooled, serial = pooled["stats"], serial["stats"]
    assert len(pooled) == len(serial) == 4
    for facts in pooled + serial:
        assert set(facts) == set(workers.STAT_FIELDS)
        assert facts["seconds"] > 0 and facts["attempts"] == 1 and facts["host"]
        assert 30 < facts["peak_rss_mb"] < 4000  # a python process with numpy and the detector
    assert {f["pid"] for f in serial} == {os.getpid()}
    pids = {f["pid"] for f in pooled}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {f["threads"] for f in pooled} == {workers.thread_split(2)}
    assert {f["worker"] for f in pooled} == {f"pool-{pid}" for pid in pids}


def test_the_thread_split_never_oversubscribes():
    assert workers.thread_split(1, cores=2) == 2
    assert workers.thread_split(2, cores=2) == 1
    assert workers.thread_split(3, cores=2) == 1  # more workers than cores: one thread each
    assert workers.thread_split(5, cores=32) == 6
    for nprocs in range(1, 40):
        assert nprocs * workers.thread_split(nprocs, cores=32) <= max(32, nprocs)


def test_a_peak_measured_per_scan_forgets_the_previous_scan():
    if not workers._reset_peak_rss():
        pytest.skip("this kernel cannot reset a process's peak memory")
    # fresh anonymous mappings, touched page by page: the allocator cannot hand back memory it already
    # holds (a test process's malloc arenas keep freed chunks), so resident memory really grows
    _touched_mapping(200).close()  # 200 MB resident, then unmapped
    before = workers._peak_rss_mb(True)
    assert workers._reset_peak_rss()
    after = workers._peak_rss_mb(True)
    assert after < before - 150
    small = _touched_mapping(50)
    assert workers._peak_rss_mb(True) >= after + 45
    small.close()


def _touched_mapping(mb):
    """An anonymous ``mb`` MB memory mapping with every page written."""
    buf = mmap.mmap(-1, mb * 2**20)
    np.frombuffer(buf, np.uint8)[::4096] = 1
    return buf


def _settings():
    return dict(pipeline="swi-3t", mask=None, phase=None, labels=None, labels_t1w=None, echo_times_ms=None,
                images=False, force=False, overrides={})


def test_warmup_reaches_the_detectors_kernels():
    from microbleeds.warmup import warm

    report = warm()
    assert {"stages.seeds._frst_slabs", "stages.prepare._block_sums", "stages.phase._polar_kernel",
            "stages.dipole_sign._coherence_kernel"} <= set(report.kernels)
    assert report.compiled + report.loaded >= len(report.kernels) > 10
    assert not set(report.missing) & set(report.kernels) and report.seconds > 0
    assert "numba kernels ready" in report.line()


def test_warmup_refuses_a_cache_folder_numba_does_not_use(tmp_path):
    import numba  # noqa: F401  (loaded, with this process's cache folder)

    from microbleeds.warmup import warm

    with pytest.raises(ValueError, match="NUMBA_CACHE_DIR before starting Python"):
        warm(tmp_path / "elsewhere")


@pytest.mark.slow
def test_warmup_fills_a_fresh_cache_that_the_next_process_loads(tmp_path):
    import json
    import subprocess
    import sys

    code = ("import json, sys; from microbleeds.warmup import warm; r = warm(sys.argv[1]); "
            "print(json.dumps([r.compiled, r.loaded, len(r.kernels)]))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1]) for _ in range(2)]
    (compiled, _, kernels), (again, loaded, same) = runs
    assert compiled >= kernels > 10 and again == 0 and loaded >= same == kernels
    assert any((tmp_path / "cache").rglob("*.nbi"))
