"""Running a batch's scans: serially, in a pool of worker processes, or on a Dask cluster, with one
progress bar and a record of where each scan ran.

A scan is the unit of work: ``work(job)`` returns its outcome and never raises. Used by
:mod:`microbleeds.batch`; the engine here knows nothing of scans beyond the job's first item (its
path, for messages). On a Dask cluster the jobs (paths and settings, a few hundred bytes each) are
all that travels: workers read the scans and write the results on a shared file system.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from contextlib import contextmanager

WORKER_DIED_ATTEMPTS = 2
"""A scan whose worker dies is run this many times in all before it is reported as failed."""
_THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": WORKER_DIED_ATTEMPTS - 1,
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}
"""Dask settings for a scan cohort. The scheduler's: a scan whose worker dies is retried once, then
failed (Dask's default retries it 3 times); a single-threaded worker holds one scan at a time, so a
dying worker takes down no queued scan with it. The workers': no statistical profiler (it samples
the scan's stack every 10 ms and made a worker's first scan, imports and numba cache loads, twice
as slow here) and glibc's dynamic allocation thresholds kept (the nanny's ``MALLOC_TRIM_THRESHOLD_``
turns them off, which cost 10-20 % CPU per scan here). Set them where the cluster starts:
``dask.config.set(CLUSTER_CONFIG)`` around ``LocalCluster`` or dask-jobqueue's clusters (their
scheduler runs in this process), and for workers started elsewhere in a Dask YAML file they read
(README "Many scans")."""

STAT_FIELDS = ("worker", "host", "pid", "seconds", "cpu_seconds", "peak_rss_mb", "threads", "attempts")
"""Keys of the per-scan record :func:`run_jobs` appends to ``stats``."""


class ClusterUnreachable(ValueError):
    """The Dask scheduler cannot be reached, or Dask is not installed (one line, fit to print)."""


def run_jobs(jobs, work, nprocs=1, progress=False, client=None, stats=None):
    """Outcomes of ``work`` (:func:`microbleeds.batch.detect_one`, or any picklable top-level function
    of a job that returns its outcome and never raises) for every job, in the jobs' order.

    With ``nprocs`` > 1 the scans run in that many worker processes (a scan is the unit of work),
    each with ``max(1, cores // nprocs)`` numba and BLAS threads so that workers x threads never
    exceed the cores. A worker that dies (killed, out of memory) takes down the scans it was
    running, never half-written (results are written atomically): each is retried once in a fresh
    worker, then reported as failed; the other scans go on.

    With ``client`` (a ``dask.distributed.Client``) every job is submitted to its cluster instead
    (``nprocs`` is ignored); the first item of each job must be an absolute path that the workers
    see. Each scan gets ``cores // threads of the Dask workers on its host`` numba threads (1 on a
    host that joined after the submission). A scan whose worker dies is retried by the scheduler
    (once with :data:`CLUSTER_CONFIG`), then reported as failed.

    ``stats``, a list, receives one dict per job in the jobs' order (:data:`STAT_FIELDS`): the
    worker that ran it, its host and process id, wall and CPU seconds (CPU: every thread of the
    worker process), the peak resident memory during the scan in MB (of the worker process so far
    where the kernel cannot reset the peak), numba threads, and how many times it was started;
    None where a scan's worker died.
    """
    if client is not None:
        results = _run_on_dask(jobs, work, client, progress)
    elif nprocs <= 1 or len(jobs) <= 1:
        results = [_measured(work, job, None, "main") for job in _progress(jobs, progress)]
        for _, facts in results:
            facts["attempts"] = 1
    else:
        results = _run_in_pool(jobs, int(nprocs), progress, work)
    if stats is not None:
        stats.extend(facts for _, facts in results)
    return [outcome for outcome, _ in results]


def client_from_address(address, timeout_s=30):
    """A ``dask.distributed.Client`` of the scheduler at ``address`` (``tcp://host:8786``) or of the
    scheduler file ``address`` (``dask scheduler --scheduler-file``, dask-mpi)."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterUnreachable("--dask-scheduler needs Dask: pip install 'microbleeds[cluster]'") from None
    kwargs = {"scheduler_file": str(address)} if os.path.isfile(str(address)) else {"address": str(address)}
    try:
        return Client(timeout=timeout_s, **kwargs)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterUnreachable(f"cannot reach the Dask scheduler at {address}: {exc}") from None


# ------------------------------------------------------------------------------------------------
# one scan, measured (runs in the worker)
# ------------------------------------------------------------------------------------------------
def _measured(work, job, threads, worker):
    """``(work(job), facts)``; ``threads`` (numba threads for this scan) or a dict host -> threads
    (Dask: this host's share), None to keep the process's; ``worker`` names the process, or
    "dask" for the Dask worker's address."""
    host = socket.gethostname()
    if isinstance(threads, dict):
        threads = threads.get(host, 1)
    if threads is not None:
        threads = _set_numba_threads(threads)
    if worker == "dask":
        from distributed import get_worker

        worker = get_worker().address
    else:
        worker = f"{worker}-{os.getpid()}"
    exact = _reset_peak_rss()
    start, cpu = time.perf_counter(), time.process_time()
    outcome = work(job)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    facts = {"worker": worker, "host": host, "pid": os.getpid(),
             "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "peak_rss_mb": round(_peak_rss_mb(exact), 1),
             "threads": threads if threads is not None else _numba_threads(), "attempts": None}
    return outcome, facts


def _set_numba_threads(threads):
    """Numba threads of this thread's parallel kernels (at most the process's pool); the number set."""
    import numba

    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


def _numba_threads():
    """The numba threads a kernel launched now would use (without importing numba for it)."""
    numba = sys.modules.get("numba")
    if numba is None:
        return int(os.environ.get("NUMBA_NUM_THREADS") or 0) or _cores()
    return numba.get_num_threads()


def _cores():
    """CPUs this process may run on (a Slurm/PBS allocation's, not the node's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _reset_peak_rss():
    """Reset this process's peak RSS (Linux ``clear_refs``); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb(exact):
    """Peak resident memory in MB: since :func:`_reset_peak_rss` when ``exact``, else of the process."""
    if exact:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def _died(job, attempts, how):
    """Outcome and facts of a scan whose worker died ``attempts`` times."""
    path = job[0]
    message = f"{path}: its worker process died {how} (killed, or out of memory)"
    facts = dict.fromkeys(STAT_FIELDS)
    facts["attempts"] = attempts
    return ("failed", path, message, f"failed {message}"), facts


# ------------------------------------------------------------------------------------------------
# a pool of worker processes on this machine
# ------------------------------------------------------------------------------------------------
def _run_in_pool(jobs, nprocs, progress, work):
    """:func:`run_jobs` in a pool of ``nprocs`` processes. After a worker dies, the scans it may have
    been running are run again one at a time, so only the scan that kills its worker is failed."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    results, attempts = {}, dict.fromkeys(range(len(jobs)), 0)
    pending, suspects = list(range(len(jobs))), []
    bar = _bar(len(jobs), progress)
    with _worker_threads(thread_split(nprocs)):
        while pending or suspects:
            context = multiprocessing.get_context("spawn")  # fork is unsafe once numba's threads run
            with ProcessPoolExecutor(max_workers=nprocs, mp_context=context) as pool:
                running = {}
                try:
                    _drain(pool, work, jobs, pending, suspects, running, attempts, results, nprocs, bar)
                except BrokenProcessPool:
                    _after_worker_death(jobs, running, suspects, attempts, results, bar)
    bar.close()
    for index, (_, facts) in results.items():
        facts["attempts"] = attempts[index]
    return [results[index] for index in range(len(jobs))]


def thread_split(nprocs, cores=None):
    """Numba/BLAS threads per worker process: ``max(1, cores // nprocs)``, so that workers x threads
    never exceed the cores (more workers than cores: one thread each)."""
    return max(1, (cores or _cores()) // max(1, int(nprocs)))


def _drain(pool, work, jobs, pending, suspects, running, attempts, results, nprocs, bar):
    """Keep the pool busy (one scan per worker; a suspect scan alone) until every scan is done."""
    from concurrent.futures import FIRST_COMPLETED, wait

    while pending or suspects or running:
        if suspects and not running:
            queue, limit = suspects, 1
        elif suspects:
            queue, limit = [], 0
        else:
            queue, limit = pending, nprocs
        while queue and len(running) < limit:
            index = queue.pop(0)
            attempts[index] += 1
            running[pool.submit(_measured, work, jobs[index], None, "pool")] = index
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            results[running[future]] = future.result()  # raises BrokenProcessPool if a worker died
            del running[future]
            bar.update(1)


def _after_worker_death(jobs, running, suspects, attempts, results, bar):
    """Scans that were running when a worker died: run again alone, or failed after their second
    death (a scan that died alone killed its worker itself)."""
    alone = len(running) == 1
    for index in running.values():
        if alone and attempts[index] >= WORKER_DIED_ATTEMPTS:
            results[index] = _died(jobs[index], attempts[index], "twice")
            bar.update(1)
        else:
            suspects.append(index)


@contextmanager
def _worker_threads(threads):
    """Thread counts for worker processes: set in the environment they inherit, restored after."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ------------------------------------------------------------------------------------------------
# a Dask cluster
# ------------------------------------------------------------------------------------------------
def _run_on_dask(jobs, work, client, progress):
    """:func:`run_jobs` on the Dask cluster of ``client``: one task per scan, gathered as they finish
    and released at once (a finished scan held in a worker's memory would be run again if that
    worker died)."""
    from distributed import as_completed

    relative = [job[0] for job in jobs if not os.path.isabs(str(job[0]))]
    if relative:
        raise ValueError(f"{relative[0]}: scans sent to a Dask cluster need absolute paths (the workers' "
                         "working folder is not this one)")
    token = uuid.uuid4().hex[:8]
    threads = _dask_thread_split(client)
    futures = {client.submit(_measured, work, job, threads, "dask", pure=False,
                             key=f"microbleeds-scan-{index:06d}-{token}"): index for index, job in enumerate(jobs)}
    results = {}
    bar = _bar(len(jobs), progress)
    for finished in as_completed(futures).batches():
        for future in finished:
            results[futures[future]] = _dask_result(future, jobs[futures[future]])
        _dask_attempts(client, {future: futures.pop(future) for future in finished}, results)
        bar.update(len(finished))
    bar.close()
    return [results[index] for index in range(len(jobs))]


def _dask_result(future, job):
    """(outcome, facts) of a finished scan task: a lost worker's KilledWorker, or any other error
    of the cluster (not of the scan: ``work`` never raises), becomes the scan's failure."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        return _died(job, None, "on every attempt the scheduler allows")
    except Exception as exc:  # a cancelled task, a lost connection: this scan fails, the others go on
        path = job[0]
        message = f"{path}: the Dask cluster lost the scan: {type(exc).__name__}: {exc}"
        return ("failed", path, message, f"failed {message}"), dict.fromkeys(STAT_FIELDS)


def _dask_thread_split(client):
    """Host -> numba threads per scan: the host's cores over the threads of its Dask workers."""
    try:
        cores = client.run(_host_cores)
        workers = client.scheduler_info()["workers"]
    except Exception:  # no worker yet (a job queue still starting them): every scan takes 1 thread
        return {}
    per_host_threads, per_host_cores = {}, {}
    for address, (host, n) in cores.items():
        per_host_cores[host] = n
        per_host_threads[host] = per_host_threads.get(host, 0) + workers.get(address, {}).get("nthreads", 1)
    return {host: max(1, per_host_cores[host] // per_host_threads[host]) for host in per_host_cores}


def _host_cores():
    """(host name, usable cores) of the worker this runs on."""
    return socket.gethostname(), _cores()


def _dask_attempts(client, futures, results):
    """How many times the scheduler started each finished scan (its count of deaths of the scan's
    worker + 1), asked before the scans' futures (``future -> job index``) are released."""
    keys = [future.key for future in futures]
    try:
        deaths = client.run_on_scheduler(_suspicious, keys=keys)
    except Exception:  # a scheduler that refuses to run code: attempts stay unknown
        deaths = {}
    for future, index in futures.items():
        facts = results[index][1]
        count = deaths.get(future.key)
        if count is not None:
            facts["attempts"] = count if facts["pid"] is None else count + 1
        future.release()


def _suspicious(keys, dask_scheduler=None):
    """Runs on the scheduler: deaths of a worker while it held each task."""
    return {key: dask_scheduler.tasks[key].suspicious for key in keys if key in dask_scheduler.tasks}


# ------------------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------------------
class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(total, progress):
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="scan", file=sys.stderr, disable=None)


def _progress(scans, progress):
    """The scans, behind a progress bar on stderr when ``progress`` (and stderr is a terminal)."""
    if not progress:
        return scans
    from tqdm import tqdm

    return _named_bar(tqdm(scans, unit="scan", file=sys.stderr, disable=None))


def _named_bar(bar):
    for item in bar:
        bar.set_postfix_str(item[0].name[-40:])
        yield item
