"""Scans on a Dask cluster (a 2-worker LocalCluster of processes, as a Slurm/PBS cluster through
dask-jobqueue would give): byte-identical to serial, resumable, and a worker killed mid-scan
publishes nothing, is retried once, and the other scans finish."""

import logging
import os

import pytest
from test_parallel import (
    _files,
    add_dying_scans,
    check_death_outcomes,
    check_resume_after_death,
    dies_while_writing,
    four_scans,  # noqa: F401 (fixture)
    through_detect_folder,
)

from microbleeds import workers
from microbleeds.batch import detect_folder, detect_one

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """A client of a fresh 2-worker, 1-thread-each LocalCluster with the cohort scheduler settings."""
    with dask.config.set(workers.CLUSTER_CONFIG), distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
        yield client


def test_dask_matches_serial_and_resumes(four_scans, tmp_path, client, monkeypatch):  # noqa: F811
    detect_folder(four_scans, tmp_path / "serial")
    seen = through_detect_folder(monkeypatch, client=client)
    run = detect_folder(four_scans, tmp_path / "dask")
    assert len(run.done) == 4 and not run.failed
    assert [o[1] for o in seen["outcomes"]] == [job[0] for job in seen["jobs"]]  # job order, not finishing order
    a, b = _files(tmp_path / "serial"), _files(tmp_path / "dask")
    assert len(a) == 20 and a == b  # every result file, byte for byte
    stats = seen["stats"]
    addresses = set(client.scheduler_info()["workers"])
    assert {f["worker"] for f in stats} <= addresses and len({f["pid"] for f in stats}) == 2
    assert os.getpid() not in {f["pid"] for f in stats}
    for facts in stats:
        assert facts["attempts"] == 1 and facts["seconds"] > 0 and 30 < facts["peak_rss_mb"] < 4000
        assert facts["threads"] == 1  # 2 cores, 2 single-threaded workers: one numba thread per scan
    again = detect_folder(four_scans, tmp_path / "dask")
    assert len(again.skipped) == 4 and not again.done


def test_dask_worker_killed_while_writing_publishes_nothing_and_resumes(four_scans, tmp_path, client,  # noqa: F811
                                                                        monkeypatch):
    add_dying_scans(four_scans)
    out = tmp_path / "out"
    seen = through_detect_folder(monkeypatch, dies_while_writing, client=client)
    run = detect_folder(four_scans, out)
    assert [p.name for p, _ in run.failed] == ["sub-die_T2starw.nii.gz"] and len(run.done) == 5
    check_death_outcomes(seen["jobs"], seen["outcomes"], seen["stats"], out)
    assert not (out / "sub-die_T2starw").exists()
    check_resume_after_death(four_scans, out, monkeypatch, client=client)


def test_relative_paths_are_refused_before_anything_is_sent(client, tmp_path):
    job = (tmp_path.relative_to(tmp_path.parent) / "x.nii.gz", tmp_path / "x", {})
    with pytest.raises(ValueError, match="absolute paths"):
        workers.run_jobs([job], detect_one, client=client)


def test_an_unreachable_scheduler_is_one_line():
    with pytest.raises(workers.ClusterUnreachable, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        workers.client_from_address("tcp://127.0.0.1:9", timeout_s=2)


@pytest.mark.parametrize("kind", ["SLURMCluster", "PBSCluster"])
def test_the_readme_job_queue_example_gives_one_scan_per_core(kind, tmp_path):
    """The README's dask-jobqueue configuration renders a job script of 32 one-thread workers that
    share the numba cache and run without the profiler (no job is submitted)."""
    jobqueue = pytest.importorskip("dask_jobqueue")
    cache = tmp_path / "numba-cache"
    options = dict(cores=32, processes=32, memory="120GB", walltime="04:00:00", queue="compute",
                   job_script_prologue=[f"export NUMBA_CACHE_DIR={cache}",
                                        "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False"],
                   scheduler_options={"dashboard_address": None}, log_directory=str(tmp_path / "logs"))
    if kind == "PBSCluster":
        options["resource_spec"] = "select=1:ncpus=32:mem=120GB"
    with dask.config.set(workers.CLUSTER_CONFIG), getattr(jobqueue, kind)(**options) as cluster:
        script = cluster.job_script()
        allowed = cluster.scheduler.allowed_failures
    assert "--nworkers 32" in script and "--nthreads 1" in script
    assert f"export NUMBA_CACHE_DIR={cache}" in script and "PROFILE__ENABLED=False" in script
    assert allowed == 1  # the scheduler in the driver retries a dying scan once


def test_the_command_line_runs_on_a_dask_scheduler(four_scans, tmp_path, client, monkeypatch):  # noqa: F811
    """``microbleeds detect --dask-scheduler ADDRESS`` (relative paths, as a user types them) gives the
    serial results, and every scan ran in a Dask worker, not in this process."""
    from microbleeds import cli

    detect_folder(four_scans, tmp_path / "serial")
    monkeypatch.chdir(four_scans.parent)
    seen = []
    real = workers.run_jobs

    def spy(jobs, work, **kw):
        seen.append(kw.get("client"))
        stats = kw.setdefault("stats", [])
        outcomes = real(jobs, work, **kw)
        seen.append(stats)
        return outcomes

    monkeypatch.setattr(workers, "run_jobs", spy)
    code = cli.main(["detect", four_scans.name, "-o", "dask_out", "--dask-scheduler", client.scheduler.address, "-q"])
    assert code == 0
    assert seen[0] is not None and os.getpid() not in {s["pid"] for s in seen[1]}
    assert _files(tmp_path / "serial") == _files(four_scans.parent / "dask_out")


def test_an_unreachable_scheduler_is_one_line_on_the_command_line(tmp_path, capsys):
    from microbleeds import cli

    code = cli.main(["detect", str(tmp_path), "-o", str(tmp_path / "out"), "--dask-scheduler",
                     str(tmp_path / "no-such-scheduler.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("microbleeds: error:")
