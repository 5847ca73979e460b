"""The run's log: ``OUT/logs/run-<UTC time>.log`` (what was found, what was not processed and why,
each scan's outcome and timing) and ``OUT/logs/run-<UTC time>_failed.tsv`` (the failed scans with
their one-line error, and its JSON sidecar). ``logs/`` is in the derivatives' ``.bidsignore``.
The log is the one output that differs between runs (it holds times)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .atomic import atomic_write_text
from .tables import json_text, tsv_text

LOG_DIR = "logs"
FAILED_COLUMNS = ("scan", "error")
FAILED_SIDECAR = {"scan": {"Description": "The scan (its first file) as given or found"},
                  "error": {"Description": "One-line error naming the file and the problem"}}


def _stamp(seconds) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def _iso(seconds) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _show(path, out_dir) -> str:
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    except ValueError:
        return str(path)


def write_run_log(out_dir, run, jobs, outcomes, stats, started) -> Path:
    """Write the log of one :func:`microbleeds.batch.detect_folder` run; returns the log's path.

    ``stats`` is the engine's per-job list (worker, host, seconds, peak_rss_mb, attempts), possibly
    empty; ``started`` the run's start (``time.time()``)."""
    from .. import __version__

    out_dir = Path(out_dir)
    logs = out_dir / LOG_DIR
    logs.mkdir(parents=True, exist_ok=True)
    finished = time.time()
    stamp = _stamp(started)
    name, n = f"run-{stamp}", 1
    while (logs / f"{name}.log").exists():
        n += 1
        name = f"run-{stamp}-{n}"
    lines = [f"microbleeds {__version__}: run started {_iso(started)}, finished {_iso(finished)} "
             f"({finished - started:.1f} s)",
             "command: " + " ".join(sys.argv),
             f"found: {len(jobs)} scan(s); {len(run.not_scans)} file(s)/folder(s) not processed",
             f"outcome: {len(run.done)} done, {len(run.skipped)} up to date, {len(run.failed)} failed", "",
             "scans (outcome, seconds, worker, peak RSS MB, preset, input -> results):"]
    for index, (job, outcome) in enumerate(zip(jobs, outcomes)):
        facts = (stats[index] if index < len(stats) else None) or {}
        seconds = facts.get("seconds")
        preset = job[2].get("pipeline") or (job[2].get("scan") or {}).get("pipeline") or ""
        lines.append("  " + "\t".join([
            outcome[0], f"{seconds:.2f}" if isinstance(seconds, (int, float)) else "n/a",
            str(facts.get("worker") or "n/a"), str(facts.get("peak_rss_mb") or "n/a"), preset,
            f"{_show(job[0], out_dir)} -> {_show(job[1], out_dir)}"]))
        if outcome[0] == "failed":
            lines.append(f"    error: {outcome[2]}")
    lines += ["", "not processed (reason):"]
    lines += [f"  {_show(path, out_dir)}: {reason}" for path, reason in run.not_scans] or ["  (nothing)"]
    extra = [message for path, message in run.failed if not any(str(path) == str(j[0]) for j in jobs)]
    if extra:
        lines += ["", "other failures:"] + [f"  {message}" for message in extra]
    log = atomic_write_text(logs / f"{name}.log", "\n".join(lines) + "\n")
    rows = [{"scan": _show(path, out_dir), "error": message} for path, message in run.failed]
    atomic_write_text(logs / f"{name}_failed.tsv", tsv_text(rows, FAILED_COLUMNS, empty="n/a"))
    atomic_write_text(logs / f"{name}_failed.json", json_text(FAILED_SIDECAR))
    return log
