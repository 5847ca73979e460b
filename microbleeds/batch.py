"""Many scans: discovery, magnitude-phase pairing, output names and clashes, the resume
fingerprint, and the per-scan loop in which one bad scan never stops the rest.

>>> import microbleeds
>>> run = microbleeds.detect_folder("bids/", "derivatives/microbleeds")   # doctest: +SKIP
>>> run.failed                                                             # doctest: +SKIP

The command line's ``detect`` is this function plus argument parsing and printing.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import workers
from .errors import InputError
from .io.nifti import is_nifti, nifti_stem
from .presets import DEFAULT_PRESET, load_parameters

# not scans: BIDS entities / suffixes of phase images, masks, segmentations, phantom truth, results
SKIP_ENTITIES = ("part-phase", "desc-aparcaseg")
SKIP_SUFFIXES = ("_phase", "_ph", "_mask", "_brainmask", "_dseg", "_probseg", "_truth", "_label", "_labels",
                 "aparc+aseg", "aseg", "_swi_mip")
SKIP_NAMES = ("mask", "labels", "swi", "phase_filtered")  # files of a microbleeds result folder


class UsageError(ValueError):
    """A batch that cannot start (nothing found, clashing outputs, side files for many scans)."""


@dataclass
class BatchResult:
    """What :func:`detect_folder` did.

    Attributes
    ----------
    done : list of (path, folder, summary)
        Scans detected now, their result folder and summary.
    skipped : list of (path, folder)
        Scans whose results were already up to date (same fingerprint).
    failed : list of (path, message)
        Scans (or reports) that failed, each with a one-line message naming the file.
    """

    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)


def detect_folder(paths, out_dir, pipeline=None, mask=None, phase=None, labels=None, labels_t1w=None,
                  echo_times_ms=None, write_images=False, report=False, force=False, progress=False,
                  nprocs=1, **overrides) -> BatchResult:
    """Detect microbleeds in every scan under ``paths`` (files or folders) into ``out_dir``.

    Each scan gets ``out_dir/<sub-folder>/<stem>/``; results already there for the same input,
    side files, parameters and software are kept (``force`` recomputes). Phase files are paired
    automatically (:func:`find_phase`) unless ``phase`` is given. ``mask``, ``phase``, ``labels``
    and ``labels_t1w`` need a single scan. ``report`` also writes the review pages. ``nprocs``
    runs scans in that many worker processes (see :func:`run_jobs`); results are byte-identical to
    a serial run. ``overrides`` are :class:`~microbleeds.presets.Parameters` fields (None values
    are ignored).

    Raises
    ------
    UsageError
        When no scan is found, two scans would share a result folder, or side files are given
        for several scans; bad parameters raise ``ValueError``. Failures of single scans do not
        raise: they are listed in ``BatchResult.failed``.
    """
    from .io.results import recover_results

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out_dir = Path(out_dir)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    settings = dict(pipeline=pipeline or DEFAULT_PRESET, mask=mask, phase=phase, labels=labels,
                    labels_t1w=labels_t1w, echo_times_ms=echo_times_ms, images=bool(write_images or report),
                    force=force, overrides=overrides)
    load_parameters(settings["pipeline"], **overrides)  # bad parameters fail before anything runs
    scans, refused = _plan(paths, out_dir, single_scan_options=(mask, phase, labels, labels_t1w))
    run = BatchResult()
    for path, exc in refused:
        _fail(run, path, str(exc), f"skipped {exc}", progress)
    for parent in sorted({folder.parent for _, folder in scans}):
        recover_results(parent)  # what a killed run left: old folders back, stale staging removed
    jobs = [(path, folder, settings) for path, folder in scans]
    for outcome in run_jobs(jobs, nprocs, progress):
        _record(run, outcome, progress)
    if report and (run.done or run.skipped):
        write_reports([folder for _, folder, *_ in run.done + run.skipped], out_dir, run.failed)
    return run


def detect_one(job):
    """One scan of a batch, in this process: ``("done", path, folder, summary)``, ``("skipped",
    path, folder)`` (up to date) or ``("failed", path, message, log line)``; never raises."""
    from .api import detect
    from .io.results import is_complete, write_result

    path, folder, settings = job
    try:
        params = load_parameters(settings["pipeline"], **settings["overrides"])
        with _scan_lock(path, folder):
            scan_phase = settings["phase"] or find_phase(path)
            key = run_fingerprint(path, params, mask=settings["mask"], phase=scan_phase, labels=settings["labels"],
                                  labels_t1w=settings["labels_t1w"], echo_times_ms=settings["echo_times_ms"],
                                  images=settings["images"])
            if not settings["force"] and is_complete(folder, key):
                return ("skipped", path, folder)
            result = detect(path, mask=settings["mask"], pipeline=settings["pipeline"], phase=scan_phase,
                            echo_times_ms=settings["echo_times_ms"], labels=settings["labels"],
                            labels_t1w=settings["labels_t1w"], **settings["overrides"])
            write_result(result, folder.parent, folder.name, write_images=settings["images"], fingerprint=key)
        return ("done", path, folder, result.summary)
    except InputError as exc:
        return ("failed", path, str(exc), f"skipped {exc}")
    except Exception as exc:  # one scan's failure, whatever it is, must not stop the batch
        message = f"{path}: {type(exc).__name__}: {exc}"
        return ("failed", path, message, f"failed {message}")


def _record(run, outcome, progress):
    kind, path = outcome[0], outcome[1]
    if kind == "done":
        run.done.append((path, outcome[2], outcome[3]))
    elif kind == "skipped":
        run.skipped.append((path, outcome[2]))
    else:
        _fail(run, path, outcome[2], outcome[3], progress)


def run_jobs(jobs, nprocs=1, progress=False, work=None):
    """Outcomes of ``work`` (:func:`detect_one` by default) for every job, in the jobs' order;
    see :func:`microbleeds.workers.run_jobs`."""
    return workers.run_jobs(jobs, work or detect_one, nprocs=nprocs, progress=progress)


@contextmanager
def _scan_lock(path, folder):
    """Hold the result folder's lock while scan ``path`` is checked, detected and written
    (another run writing it makes this scan fail at once, naming the scan); folders created only
    for the lock are removed again when the scan fails."""
    from .io.results import FolderBusy, result_lock

    created = []
    parent = Path(folder).parent
    while not parent.exists() and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    try:
        try:
            lock = result_lock(folder)
            lock.__enter__()
        except FolderBusy as exc:
            raise InputError(path, f"result folder {folder} is {exc.problem}") from None
        try:
            yield
        finally:
            lock.__exit__(None, None, None)
    finally:
        for made in created:  # innermost first; only empty ones go
            try:
                made.rmdir()
            except OSError:
                break


def _plan(paths, out_dir, single_scan_options):
    """(path, result folder) of every scan found, after the checks that must pass before any runs,
    and (path, InputError) of the scans whose file name gives no usable result-folder name."""
    from .io.results import result_name_problem

    scans = find_scans(paths, out_dir)
    if not scans:
        raise UsageError(f"no NIfTI scan found in {', '.join(map(str, paths))}")
    if any(option for option in single_scan_options) and len(scans) > 1:
        raise UsageError("--mask, --phase and --labels need a single scan")
    planned, refused = [], []
    for path, root in scans:
        name = nifti_stem(path)  # not output_name(...).name: pathlib drops a name '' or '.'
        problem = result_name_problem(name)
        if problem:
            refused.append((path, InputError(path, f"gives the result folder name {name!r}, which "
                                                   f"{problem}; rename the file")))
        else:
            planned.append((path, out_dir / output_name(path, root)))
    clash = output_clash([target for _, target in planned])
    if clash:
        raise UsageError(clash)
    return planned, refused


def _fail(run, path, message, line, progress):
    run.failed.append((path, message))
    if progress:
        from tqdm import tqdm

        tqdm.write(f"microbleeds: {line}", file=sys.stderr)
    else:
        print(f"microbleeds: {line}", file=sys.stderr)


def write_reports(folders, out, failed):
    """Review pages of ``folders`` and the cohort page of ``out``; problems are added to ``failed``."""
    from .review.cohort import write_cohort
    from .review.page import build_report

    for folder in folders:
        try:
            build_report(folder)
        except Exception as exc:  # a report problem must not hide the results already written
            failed.append((folder, f"{folder}: report: {type(exc).__name__}: {exc}"))
    try:
        write_cohort(out)
    except Exception as exc:
        failed.append((out, f"{out}: cohort page: {type(exc).__name__}: {exc}"))


def find_scans(paths, out_dir=None):
    """NIfTI magnitude/SWI files under ``paths`` (files or folders, searched recursively).

    Skips phase images, masks, segmentations, phantom truth maps, BIDS ``derivatives/`` and the
    output folder. Returns a sorted list of (path, root) pairs; ``root`` is the folder the path was
    found under (for mirroring sub-folders in the output).
    """
    found = []
    out_dir = Path(out_dir).resolve() if out_dir else None
    for given in paths:
        given = Path(given)
        if given.is_dir():
            for path in sorted(given.rglob("*.nii*")):
                resolved = path.resolve()
                if out_dir and out_dir in resolved.parents:
                    continue
                if "derivatives" in path.relative_to(given).parts or not is_nifti(path):
                    continue
                if _looks_like_scan(path):
                    found.append((path, given))
        else:
            found.append((given, given.parent))
    return found


def find_phase(path):
    """The phase file paired with a magnitude file, or None.

    BIDS ``..._part-mag_...`` pairs with ``..._part-phase_...``; ``X_mag.nii.gz`` /
    ``X_magnitude.nii.gz`` with ``X_phase.nii.gz``.
    """
    path = Path(path)
    name = path.name
    candidates = []
    if "part-mag" in name:
        candidates.append(name.replace("part-mag", "part-phase"))
    for mag in ("_magnitude", "_mag"):
        stem = nifti_stem(path)
        if stem.endswith(mag):
            suffix = name[len(stem):]
            candidates.append(stem[: -len(mag)] + "_phase" + suffix)
    for candidate in candidates:
        if (path.parent / candidate).is_file():
            return [path.parent / candidate]
    return None


def _looks_like_scan(path):
    stem = nifti_stem(path).lower()
    return not (any(e in stem for e in SKIP_ENTITIES) or stem.endswith(SKIP_SUFFIXES) or stem in SKIP_NAMES)


def output_name(path, root):
    """Relative output folder of a scan: its sub-folder under ``root`` plus its stem."""
    path, root = Path(path), Path(root)
    try:
        relative = path.parent.resolve().relative_to(root.resolve())
    except ValueError:
        relative = Path()
    return relative / nifti_stem(path)


def output_clash(targets):
    """A sentence if two scans would write the same result folder, or one inside another's."""
    seen = {}
    for target in targets:
        key = str(target)
        if key in seen:
            return f"two scans would write to {target} (same file name; give them different names or folders)"
        seen[key] = target
    resolved = sorted(str(t.resolve()) for t in targets)
    for a, b in zip(resolved, resolved[1:]):
        if b.startswith(a + "/"):
            return f"the result folder {b} would lie inside {a} (a scan and a sub-folder share a name)"
    return ""


def run_fingerprint(path, params, mask=None, phase=None, labels=None, labels_t1w=None, echo_times_ms=None,
                    images=False):
    """What a result depends on: input and side-file checksums, parameters, software version."""
    from . import __version__
    from .io.nifti import file_sha256

    def sums(files):
        if files is None:
            return None
        files = files if isinstance(files, (list, tuple)) else [files]
        return [file_sha256(f) if Path(f).is_file() else str(f) for f in files]

    if not Path(path).is_file():
        raise InputError(path, "magnitude file does not exist")
    return {"software": __version__, "input": file_sha256(path), "parameters": params.to_dict(),
            "mask": sums(mask), "phase": sums(phase), "labels": sums(labels), "labels_t1w": sums(labels_t1w),
            "echo_times_ms": list(echo_times_ms) if echo_times_ms else None, "images": bool(images)}
