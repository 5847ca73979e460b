"""Many scans: discovery, magnitude-phase pairing, output names and clashes, the resume
fingerprint, the per-scan loop in which one bad scan never stops the rest, and the run's log.

A folder with a ``dataset_description.json`` is read as BIDS (:mod:`microbleeds.io.bids`: only
T2*-weighted anatomical suffixes, echoes grouped, ``part-mag`` with ``part-phase``, inherited
sidecars) and written as BIDS Derivatives (:mod:`microbleeds.io.derivatives`); other folders are
searched for NIfTI files as before, one result folder per file, with the same modality guard where
a name or sidecar says what a file is (:func:`microbleeds.io.bids.name_guard`).

>>> import microbleeds
>>> run = microbleeds.detect_folder("bids/", "bids/derivatives/microbleeds")   # doctest: +SKIP
>>> run.failed, run.not_scans                                                  # doctest: +SKIP

The command line's ``detect`` and the BIDS App's ``participant`` level are this function plus
argument parsing and printing.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import workers
from .errors import InputError
from .io.nifti import is_nifti, nifti_stem
from .presets import DEFAULT_PRESET, load_parameters, preset_for

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
    not_scans : list of (path, reason)
        Files and folders found that are not T2*-weighted scans (other modalities, maps,
        ``sourcedata/``, ...), with the reason; never processed.
    log : Path or None
        The run's log in the output folder (``logs/``), with the failed scans' TSV beside it.
    """

    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    not_scans: list = field(default_factory=list)
    log: Path | None = None


def detect_folder(paths, out_dir, pipeline=None, mask=None, phase=None, labels=None, labels_t1w=None,
                  echo_times_ms=None, write_images=False, report=False, force=False, progress=False,
                  nprocs=1, client=None, participant_label=None, session_label=None, bids_filters=None, swi_acq=(),
                  **overrides) -> BatchResult:
    """Detect microbleeds in every scan under ``paths`` (files, folders or BIDS datasets) into ``out_dir``.

    A BIDS dataset's scans (:func:`microbleeds.io.bids.discover`; ``participant_label``,
    ``session_label``, ``bids_filters`` and ``swi_acq`` select them) are written as BIDS
    Derivatives, ``out_dir/sub-*/[ses-*/]anat/<entities>_desc-cmb_dseg.nii.gz`` etc.; a file or
    plain folder's scan gets ``out_dir/<sub-folder>/<stem>/``. Results already there for the same
    input, metadata, side files, parameters and software are kept (``force`` recomputes). Phase
    files are paired automatically unless ``phase`` is given. Without ``pipeline`` each scan's
    preset follows its field strength (:func:`microbleeds.presets.preset_for`). ``mask``,
    ``phase``, ``labels`` and ``labels_t1w`` need a single scan. ``report`` also writes the review
    pages. ``nprocs`` runs scans in that many worker processes (see :func:`run_jobs`); results are
    byte-identical to a serial run; ``client`` (a ``dask.distributed.Client``) runs them on that Dask
    cluster instead, whose workers must see the inputs and ``out_dir`` at the same (absolute) paths.
    ``overrides`` are :class:`~microbleeds.presets.Parameters`
    fields (None values are ignored). The run's log and failed-scans TSV go to ``out_dir/logs/``.

    Raises
    ------
    UsageError
        When no scan is found, two scans would share a result folder, or side files are given
        for several scans; bad parameters raise ``ValueError``. Failures of single scans do not
        raise: they are listed in ``BatchResult.failed``.
    """
    from .io.results import recover_results

    started = time.time()
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out_dir = Path(out_dir)
    if client is not None:  # a Dask worker's working folder is not this one
        paths, out_dir = [Path(p).absolute() for p in paths], out_dir.absolute()
        mask, labels, labels_t1w = (Path(f).absolute() if f else f for f in (mask, labels, labels_t1w))
        if phase:
            phase = [Path(f).absolute() for f in phase] if isinstance(phase, (list, tuple)) else Path(phase).absolute()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    settings = dict(pipeline=pipeline, mask=mask, phase=phase, labels=labels,
                    labels_t1w=labels_t1w, echo_times_ms=echo_times_ms, images=bool(write_images or report),
                    force=force, overrides=overrides, progress_lines=bool(progress) and not sys.stderr.isatty())
    load_parameters(pipeline or DEFAULT_PRESET, **overrides)  # bad parameters fail before anything runs
    selection = dict(participant_label=participant_label, session_label=session_label, filters=bids_filters,
                     swi_acq=tuple(swi_acq or ()))
    run = BatchResult()
    scans, refused = _plan(paths, out_dir, (mask, phase, labels, labels_t1w), selection, run.not_scans)
    for path, exc in refused:
        _fail(run, path, str(exc), f"skipped {exc}", progress)
    for parent in sorted({folder.parent for _, folder, _ in scans}):
        recover_results(parent)  # what a killed run left: old folders back, stale staging removed
    _write_dataset_files(paths, out_dir)
    jobs = [(path, folder, dict(settings, scan=info)) for path, folder, info in scans]
    stats = []
    outcomes = run_jobs(jobs, nprocs, progress, stats=stats, client=client)
    for outcome in outcomes:
        _record(run, outcome, progress)
    if report and (run.done or run.skipped):
        write_reports([folder for _, folder, *_ in run.done + run.skipped], out_dir, run.failed)
    from .io.runlog import write_run_log

    run.log = write_run_log(out_dir, run, jobs, outcomes, stats, started)
    return run


def _write_dataset_files(paths, out_dir):
    """The derivatives' dataset_description.json and .bidsignore when the input is one BIDS dataset."""
    from .io.bids import is_bids_dataset
    from .io.derivatives import write_dataset_files

    datasets = [Path(p) for p in paths if is_bids_dataset(p)]
    if len(datasets) == 1:
        write_dataset_files(out_dir, datasets[0])


def detect_one(job):
    """One scan of a batch, in this process: ``("done", path, folder, summary)``, ``("skipped",
    path, folder)`` (up to date) or ``("failed", path, message, log line)``; never raises."""
    path, folder, settings = job
    started = time.perf_counter()
    outcome = _detect_one(path, folder, settings)
    if settings.get("progress_lines"):  # stderr is a log file or CI's: a line per scan, not a bar
        kind = {"skipped": "up to date"}.get(outcome[0], outcome[0])
        print(f"microbleeds: {kind}: {Path(path).name} ({time.perf_counter() - started:.1f} s)",
              file=sys.stderr, flush=True)
    return outcome


def _detect_one(path, folder, settings):
    """:func:`detect_one`'s work: the outcome of one scan."""
    from .io.nifti import SCAN_BYTES_PER_VOXEL, discard_prefetch, prefetch_volume

    scan = settings.get("scan") or {}
    if len(scan.get("magnitude") or [path]) == 1:  # read (and hash) the scan while the detector is imported
        prefetch_volume(path, "magnitude", bytes_per_voxel=SCAN_BYTES_PER_VOXEL)
    try:
        return _detect_read(path, folder, settings, scan)
    finally:
        discard_prefetch(path)  # a scan up to date, or one that failed before it was loaded


def _detect_read(path, folder, settings, scan):
    """:func:`_detect_one` once its scan's read has started."""
    from .api import detect
    from .io.results import is_complete, write_derivative, write_result

    try:
        pipeline = settings["pipeline"] or scan.get("pipeline") or DEFAULT_PRESET
        params = load_parameters(pipeline, **settings["overrides"])
        with _scan_lock(path, folder):
            magnitude = scan.get("magnitude") or [path]
            scan_phase = settings["phase"] or scan.get("phase") or (None if scan.get("layout") == "bids"
                                                                   else find_phase(path))
            echo_times = settings["echo_times_ms"] or scan.get("echo_times_ms")
            key = run_fingerprint(magnitude if len(magnitude) > 1 else path, params, mask=settings["mask"],
                                  phase=scan_phase, labels=settings["labels"], labels_t1w=settings["labels_t1w"],
                                  echo_times_ms=echo_times, images=settings["images"],
                                  metadata=scan.get("metadata") if scan.get("layout") == "bids" else None)
            if not settings["force"] and is_complete(folder, key):
                return ("skipped", path, folder)
            source = path
            if len(magnitude) > 1:
                from .io.bids import stack_echoes

                source = stack_echoes(magnitude)
            result = detect(source, mask=settings["mask"], pipeline=pipeline, phase=scan_phase,
                            echo_times_ms=echo_times, labels=settings["labels"], labels_t1w=settings["labels_t1w"],
                            metadata=scan.get("metadata") if scan.get("layout") == "bids" else None,
                            **settings["overrides"])
            _provenance(result.summary, scan, magnitude, folder, settings["echo_times_ms"])
            if scan.get("layout") == "bids":
                write_derivative(result, folder, scan["sources"], write_images=settings["images"], fingerprint=key)
            else:
                write_result(result, folder.parent, folder.name, write_images=settings["images"], fingerprint=key)
        return ("done", path, folder, result.summary)
    except InputError as exc:
        return ("failed", path, str(exc), f"skipped {exc}")
    except Exception as exc:  # one scan's failure, whatever it is, must not stop the batch
        message = f"{path}: {type(exc).__name__}: {exc}"
        return ("failed", path, message, f"failed {message}")


def _provenance(summary, scan, magnitude, folder, given_echo_times=None):
    """Make the summary portable: the input path relative to the results (so a dataset moved with
    its derivatives keeps its images), every source file relative to its dataset, the ``bids``
    block, how the preset was chosen, echo times given on the command line, and the summary's
    schema version."""
    from .io.bids import combined_sha256
    from .io.derivatives import SCHEMA_VERSION

    folder = Path(folder)
    base = folder if folder.is_dir() or scan.get("layout") != "bids" else folder.parent
    first = Path(magnitude[0])
    summary["input"]["path"] = Path(os.path.relpath(first.resolve(), Path(os.path.abspath(base)))).as_posix()
    if len(magnitude) > 1:
        summary["input"]["sha256"] = combined_sha256(magnitude)
    summary["input"]["files"] = scan.get("sources") or [first.name]
    summary["pipeline"]["chosen"] = scan.get("pipeline_reason") or "given"
    summary["bids"] = scan.get("bids") or {"participant_id": None, "session_id": None, "entities": {},
                                           "source": first.name}
    if given_echo_times:
        times = [round(float(t), 4) for t in given_echo_times]
        summary["acquisition"]["echo_time_ms"] = times[0] if len(times) == 1 else times
        summary["acquisition_metadata"]["sources"]["echo_time_ms"] = "given (--echo-times)"
    summary["schema_version"] = SCHEMA_VERSION


def _record(run, outcome, progress):
    kind, path = outcome[0], outcome[1]
    if kind == "done":
        run.done.append((path, outcome[2], outcome[3]))
    elif kind == "skipped":
        run.skipped.append((path, outcome[2]))
    else:
        _fail(run, path, outcome[2], outcome[3], progress)


def run_jobs(jobs, nprocs=1, progress=False, work=None, stats=None, client=None):
    """Outcomes of ``work`` (:func:`detect_one` by default) for every job, in the jobs' order;
    see :func:`microbleeds.workers.run_jobs` (``stats`` receives one dict per job; ``client`` a
    Dask client to run them on)."""
    return workers.run_jobs(jobs, work or detect_one, nprocs=nprocs, progress=progress, client=client, stats=stats)


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


def _plan(paths, out_dir, single_scan_options, selection, not_scans):
    """(path, result target, scan facts) of every scan found, after the checks that must pass
    before any runs, and (path, InputError) of the scans whose file name gives no usable
    result-folder name; what is not a scan is appended to ``not_scans`` as (path, reason)."""
    from .io.bids import is_bids_dataset
    from .io.results import result_name_problem

    planned, refused = [], []
    plain = [p for p in paths if not is_bids_dataset(p)]
    for root in (Path(p) for p in paths if is_bids_dataset(p)):
        bids_scans, clashing = _apart(_plan_bids(root, out_dir, selection, not_scans))
        planned += bids_scans
        refused += clashing
    for path, root in find_scans(plain, out_dir, not_scans):
        name = nifti_stem(path)  # not output_name(...).name: pathlib drops a name '' or '.'
        problem = result_name_problem(name)
        if problem:
            refused.append((path, InputError(path, f"gives the result folder name {name!r}, which "
                                                   f"{problem}; rename the file")))
        else:
            planned.append((path, out_dir / output_name(path, root), _plain_facts(path, root)))
    if not planned and not refused:
        examples = "; ".join(f"{Path(path).name}: {reason}" for path, reason in not_scans[:3])
        raise UsageError(f"no T2*-weighted NIfTI scan found in {', '.join(map(str, paths))}"
                         + (f" ({len(not_scans)} other files and folders not processed, e.g. {examples})"
                            if not_scans else ""))
    if any(option for option in single_scan_options) and len(planned) + len(refused) > 1:
        raise UsageError("--mask, --phase and --labels need a single scan")
    clash = output_clash([target for _, target, _ in planned])
    if clash:
        raise UsageError(clash)
    return planned, refused


def _plan_bids(root, out_dir, selection, not_scans):
    """The scans of one BIDS dataset with their derivatives' prefix and facts."""
    from .io.bids import discover

    out, raw = Path(out_dir).resolve(), root.resolve()
    if out == raw or (raw in out.parents and out.relative_to(raw).parts[0] != "derivatives"):
        raise UsageError(f"the output folder {out_dir} would write into the raw dataset {root}; "
                         f"use a folder outside it or under its derivatives/ (e.g. {root / 'derivatives' / 'microbleeds'})")

    found = discover(root, selection["participant_label"], selection["session_label"], selection["filters"],
                     selection["swi_acq"])
    not_scans.extend((root / rel, reason) for rel, reason in found.skipped)
    planned = []
    for scan in found.scans:
        pipeline, reason = preset_for(scan.metadata.get("MagneticFieldStrength"))
        facts = {"layout": "bids", "magnitude": [str(p) for p in scan.magnitude],
                 "phase": [str(p) for p in scan.phase] if scan.phase else None, "metadata": scan.metadata,
                 "echo_times_ms": scan.echo_times_ms, "bids": scan.bids_block(), "sources": scan.sources,
                 "pipeline": pipeline, "pipeline_reason": reason}
        planned.append((scan.magnitude[0], out_dir / scan.folder() / scan.prefix(), facts))
    return planned


def _apart(planned):
    """BIDS scans whose derivatives would share names (e.g. a T2starw and a MEGRE of one session,
    neither with an ``acq-`` label) are refused, each naming the other; the rest go on."""
    targets = {}
    for path, target, _ in planned:
        targets.setdefault(str(target), []).append(path)
    kept, refused = [], []
    for path, target, facts in planned:
        others = [p for p in targets[str(target)] if p != path]
        if others:
            refused.append((path, InputError(path, f"would write the same derivatives ({Path(target).name}_*) as "
                                                   f"{', '.join(Path(o).name for o in others)}: no entity (acq-) "
                                                   "tells them apart; select one with --bids-filter-file "
                                                   "(e.g. {\"suffix\": \"MEGRE\"})")))
        else:
            kept.append((path, target, facts))
    return kept, refused


def _plain_facts(path, root):
    """Facts of a plain folder's scan: the preset by its sidecar's field strength, and the BIDS
    entities its name carries (null where it has none)."""
    from .io.bids import plain_bids_block, relative
    from .io.sidecar import read_sidecar

    pipeline, reason = preset_for(read_sidecar(path).get("MagneticFieldStrength"))
    return {"layout": "folder", "pipeline": pipeline, "pipeline_reason": reason, "sources": [relative(path, root)],
            "bids": plain_bids_block(path, root)}


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


def find_scans(paths, out_dir=None, not_scans=None):
    """NIfTI magnitude/SWI files under ``paths`` (files or folders, searched recursively; not BIDS).

    Skips phase images, masks, segmentations, phantom truth maps, BIDS ``derivatives/`` and the
    output folder, and files whose name or sidecar says they are not T2*-weighted
    (:func:`microbleeds.io.bids.name_guard`; appended to ``not_scans`` as (path, reason)).
    Returns a sorted list of (path, root) pairs; ``root`` is the folder the path was found under
    (for mirroring sub-folders in the output).
    """
    from .io.bids import name_guard

    found = []
    not_scans = [] if not_scans is None else not_scans
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
                    reason = name_guard(path)
                    if reason:
                        not_scans.append((path, reason))
                    else:
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
                    images=False, metadata=None):
    """What a result depends on: input (one file, or a list: one per echo) and side-file checksums,
    parameters, software version, and a BIDS scan's inherited sidecar metadata."""
    from . import __version__
    from .io.nifti import file_sha256

    def sums(files):
        if files is None:
            return None
        files = files if isinstance(files, (list, tuple)) else [files]
        return [file_sha256(f) if Path(f).is_file() else str(f) for f in files]

    for one in path if isinstance(path, (list, tuple)) else [path]:
        if not Path(one).is_file():
            raise InputError(one, "magnitude file does not exist")
    key = {"software": __version__, "input": sums(path) if isinstance(path, (list, tuple)) else file_sha256(path),
           "parameters": params.to_dict(), "mask": sums(mask), "phase": sums(phase), "labels": sums(labels),
           "labels_t1w": sums(labels_t1w), "echo_times_ms": list(echo_times_ms) if echo_times_ms else None,
           "images": bool(images)}
    if metadata is not None:
        key["metadata"] = metadata
    return key
