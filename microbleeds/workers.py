"""Running a batch's scans: serially, or in a pool of worker processes, with one progress bar.

A scan is the unit of work: ``work(job)`` returns its outcome and never raises. Used by
:mod:`microbleeds.batch`; the engine here knows nothing of scans beyond the job's first item (its
path, for messages).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


def run_jobs(jobs, work, nprocs=1, progress=False):
    """Outcomes of ``work`` (:func:`microbleeds.batch.detect_one`, or any picklable function of a job that
    returns its outcome and never raises) for every job, in the jobs' order.

    With ``nprocs`` > 1 the scans run in that many worker processes (a scan is the unit of work),
    each with ``max(1, cores // nprocs)`` numba and BLAS threads so that workers x threads never
    exceed the cores. A worker that dies (killed, out of memory) takes down the scans it was
    running, never half-written (results are written atomically): each is retried once in a fresh
    worker, then reported as failed; the other scans go on.
    """
    if nprocs <= 1 or len(jobs) <= 1:
        return [work(job) for job in _progress(jobs, progress)]
    return _run_in_pool(jobs, int(nprocs), progress, work)


WORKER_DIED_ATTEMPTS = 2
"""A scan whose worker dies is run this many times in all before it is reported as failed."""
_THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _run_in_pool(jobs, nprocs, progress, work):
    """:func:`run_jobs` in a pool of ``nprocs`` processes. After a worker dies, the scans it may have
    been running are run again one at a time, so only the scan that kills its worker is failed."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    outcomes, attempts = {}, dict.fromkeys(range(len(jobs)), 0)
    pending, suspects = list(range(len(jobs))), []
    bar = _bar(len(jobs), progress)
    with _worker_threads(max(1, (os.cpu_count() or 1) // nprocs)):
        while pending or suspects:
            context = multiprocessing.get_context("spawn")  # fork is unsafe once numba's threads run
            with ProcessPoolExecutor(max_workers=nprocs, mp_context=context) as pool:
                running = {}
                try:
                    _drain(pool, work, jobs, pending, suspects, running, attempts, outcomes, nprocs, bar)
                except BrokenProcessPool:
                    _after_worker_death(jobs, running, suspects, attempts, outcomes, bar)
    bar.close()
    return [outcomes[index] for index in range(len(jobs))]


def _drain(pool, work, jobs, pending, suspects, running, attempts, outcomes, nprocs, bar):
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
            running[pool.submit(work, jobs[index])] = index
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            outcomes[running[future]] = future.result()  # raises BrokenProcessPool if a worker died
            del running[future]
            bar.update(1)


def _after_worker_death(jobs, running, suspects, attempts, outcomes, bar):
    """Scans that were running when a worker died: run again alone, or failed after their second
    death (a scan that died alone killed its worker itself)."""
    alone = len(running) == 1
    for index in running.values():
        if alone and attempts[index] >= WORKER_DIED_ATTEMPTS:
            path = jobs[index][0]
            message = f"{path}: its worker process died twice (killed, or out of memory)"
            outcomes[index] = ("failed", path, message, f"failed {message}")
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
