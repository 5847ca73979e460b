"""Result folders: write one scan's results (TSV, NIfTI, JSON) into its own folder, atomically.

Files are first written into a hidden staging folder ``.<name>.<8 random characters>.tmp``
inside the output folder (beside the destination, never above it), which is then renamed into
place: a crash leaves no half-written result folder. Nothing time-dependent is written, so a
re-run on the same input with the same parameters reproduces the files bit for bit.

Replacing an existing folder takes two renames (the old folder to ``.<name>.old``, the new one
into place); a reader's review (``review_decisions.tsv``, ``lesions_reviewed.tsv``,
``summary_reviewed.json``, ``superseded_review/``) is copied into the new folder before the
first rename. A kill at any point therefore leaves the review in the result folder or in
``.<name>.old``, and the next write of that folder (or :func:`recover_results`) restores
``.<name>.old`` when the result folder is missing, and deletes it only once every review file it
holds has a byte-identical copy in the result folder. Stale staging folders are removed then.

Writers of one result folder take its lock, ``.<name>.lock`` beside it (:func:`result_lock`,
``filelock``); a second writer fails at once with :class:`FolderBusy`. The lock file is removed
on release.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..contract import (
    CANDIDATE_COLUMNS,
    CANDIDATES_FILE,
    FILTERED_PHASE_FILE,
    LABELS_FILE,
    LESION_COLUMNS,
    LESIONS_FILE,
    MASK_FILE,
    REPORT_FILE,
    RESULT_FILES,
    REVIEW_FILES,
    SUMMARY_FILE,
    SUPERSEDED_REVIEW_DIR,
    SWI_FILE,
)
from ..errors import InputError
from .derivatives import BIDS_NAMES, is_prefix, result_path
from .nifti import nifti_bytes
from .tables import NA, json_text, jsonable, read_json, read_tsv, tsv_text

MAX_NAME_BYTES = 241
"""Longest result-folder name (UTF-8 bytes): 255, the usual file-name limit, less the 14 of the
staging folder's ``.<name>.XXXXXXXX.tmp``."""
KNOWN_ENTRIES = frozenset(RESULT_FILES + REVIEW_FILES + (SUPERSEDED_REVIEW_DIR, SWI_FILE, FILTERED_PHASE_FILE,
                                                         REPORT_FILE))
"""What a result folder holds; a folder with anything else (and no summary.json) is not replaced."""
_STAGING = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkdtemp's 8 characters


class FolderBusy(InputError):
    """A result folder locked by another writer (another run, or another thread of this one)."""


def result_name_problem(name) -> str:
    """Why ``name`` cannot be a result folder's name ('' when it can): one path component, not
    empty, ``.`` or ``..``, no separator or control character, not hidden (hidden names are the
    staging, old and lock entries), at most :data:`MAX_NAME_BYTES` bytes."""
    name = str(name)
    if name in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        return "contains a path separator"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "contains a control character"
    if name.startswith("."):
        return "starts with '.' (hidden names are reserved for staging folders)"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return ""


def check_result_name(name, out_dir) -> None:
    """Raise InputError when ``name`` cannot be a result folder's name (:func:`result_name_problem`)."""
    problem = result_name_problem(name)
    if problem:
        raise InputError(out_dir, f"result folder name {str(name)!r} {problem}")


def lock_path(folder) -> Path:
    """The lock file of a result folder: ``.<name>.lock`` beside it."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.lock"


def _old_path(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


@contextmanager
def result_lock(folder):
    """Hold the lock of result folder ``folder`` (creating its parent folder if needed).

    Re-entrant within a thread (the batch holds it while detecting, :func:`write_result` again);
    exclusive between threads and processes. Raises :class:`FolderBusy` at once when another
    writer holds it. The lock file is removed when the outermost hold ends (``filelock`` retries
    on an unlinked file, so this is safe against a waiting writer).
    """
    from filelock import FileLock, Timeout

    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        raise FolderBusy(Path(folder), f"being written by another run (lock {path.name}); not written") from None
    try:
        yield lock
    finally:
        if lock.lock_counter == 1:
            try:
                os.unlink(path)
            except OSError:
                pass
        lock.release()


def result_files(result, summary=None, empty=""):
    """File name -> bytes of one result set (``empty``: the text of empty table cells)."""
    affine = result.scan.native_affine
    return {
        LESIONS_FILE: tsv_text(result.lesions, LESION_COLUMNS, empty=empty).encode(),
        CANDIDATES_FILE: tsv_text(result.candidates, CANDIDATE_COLUMNS, empty=empty).encode(),
        LABELS_FILE: nifti_bytes(result.labels, affine, np.int32),
        MASK_FILE: nifti_bytes(result.mask, affine, np.uint8),
        SUMMARY_FILE: json_text(result.summary if summary is None else summary).encode(),
    }


def write_result(result, out_dir, name=None, write_images=False, fingerprint=None) -> Path:
    """Write a :class:`~microbleeds.api.DetectionResult` to ``out_dir/<name>/`` atomically.

    An existing folder of that name is replaced only once the new one is complete. With
    ``write_images``, the SWI and filtered phase (when phase was given) are written too, as
    ``swi.nii.gz`` and ``phase_filtered.nii.gz`` on the input's grid. ``fingerprint`` (what the
    result depends on, see ``cli.run_fingerprint``) is stored in ``summary.json`` for resuming.
    Raises InputError for a name that is not a plain folder name (:func:`result_name_problem`)
    or a destination that is not a result folder, :class:`FolderBusy` when another run is
    writing it.
    """
    name = result.scan.name if name is None else name
    check_result_name(name, out_dir)
    summary = dict(result.summary, fingerprint=fingerprint) if fingerprint is not None else result.summary
    files = result_files(result, summary)
    if write_images:
        for extra_name, (array, dtype) in result.phase_images.items():
            files[extra_name] = nifti_bytes(array, result.scan.native_affine, dtype)
    return write_result_files(files, out_dir, name)


def write_derivative(result, prefix, sources, write_images=False, fingerprint=None) -> Path:
    """Write a :class:`~microbleeds.api.DetectionResult` as BIDS Derivatives at ``prefix``
    (``OUT/sub-01/ses-1/anat/sub-01_ses-1``; see :mod:`microbleeds.io.derivatives`), empty table
    cells ``n/a``; ``sources`` are the raw files' dataset-relative paths. Returns ``prefix``."""
    from .derivatives import write_derivative_files

    summary = dict(result.summary, fingerprint=fingerprint) if fingerprint is not None else result.summary
    files = result_files(result, summary, empty=NA)
    if write_images:
        for extra_name, (array, dtype) in result.phase_images.items():
            files[extra_name] = nifti_bytes(array, result.scan.native_affine, dtype)
    with result_lock(prefix):
        write_derivative_files(files, prefix, sources)
    return Path(prefix)


def write_result_files(files: dict, out_dir, name) -> Path:
    """Write ``files`` (name -> bytes) as the result folder ``out_dir/<name>/``, atomically and
    under the folder's lock, keeping a reader's review (see the module's description)."""
    check_result_name(name, out_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    with result_lock(target):
        _recover(target)
        _refuse_foreign(target)
        old = _old_path(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=out_dir))
        try:
            for file_name, data in files.items():
                (tmp / file_name).write_bytes(data)
            os.chmod(tmp, 0o755)
            if os.path.lexists(target):
                _keep_other_files(target, tmp, files)
                os.replace(target, old)
                os.replace(tmp, target)
                _retire(old, target)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if os.path.lexists(old) and not os.path.lexists(target):
                os.replace(old, target)  # the previous result back in place
            raise
    return target


def _refuse_foreign(target: Path) -> None:
    """Refuse to replace something at ``target`` that is not a result folder (a user's file or
    folder that happens to have the scan's name)."""
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise InputError(target, "exists and is not a result folder; not replaced")
    entries = [e for e in os.listdir(target) if not e.startswith(".")]
    if SUMMARY_FILE not in entries and not set(entries) <= KNOWN_ENTRIES:
        raise InputError(target, "exists and is not a result folder (no summary.json); not replaced")


def _keep_other_files(old_folder, new_folder, new_files):
    """Carry a reader's review into the new folder when the result it reviewed is unchanged
    (same lesions table); otherwise keep it aside in ``superseded_review/``. Reviews superseded
    earlier are carried as they are; one that would overwrite an earlier superseded review moves
    that one into ``superseded_review/earlier-<n>/``. Images and the HTML report of the old run
    are not carried over (they would describe the old result)."""
    old_superseded = old_folder / SUPERSEDED_REVIEW_DIR
    if old_superseded.is_dir():
        shutil.copytree(old_superseded, new_folder / SUPERSEDED_REVIEW_DIR)
    review = [old_folder / f for f in REVIEW_FILES if (old_folder / f).is_file()]
    if not review:
        return
    old_lesions = old_folder / LESIONS_FILE
    same = old_lesions.is_file() and old_lesions.read_bytes() == new_files[LESIONS_FILE]
    target = new_folder if same else new_folder / SUPERSEDED_REVIEW_DIR
    target.mkdir(exist_ok=True)
    if not same and any((target / f).exists() for f in REVIEW_FILES):
        n = 1
        while (target / f"earlier-{n}").exists():
            n += 1
        (target / f"earlier-{n}").mkdir()
        for f in REVIEW_FILES:
            if (target / f).exists():
                os.replace(target / f, target / f"earlier-{n}" / f)
    for path in review:
        shutil.copy2(path, target / path.name)


def _review_files_under(folder: Path) -> list[Path]:
    """Every review file in ``folder``: top level and anywhere under ``superseded_review/``."""
    found = [folder / f for f in REVIEW_FILES if (folder / f).is_file()]
    superseded = folder / SUPERSEDED_REVIEW_DIR
    if superseded.is_dir():
        found += sorted(p for p in superseded.rglob("*") if p.is_file())
    return found


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _retire(old: Path, target: Path) -> None:
    """Delete ``old`` (a replaced result folder) once every review file in it has a
    byte-identical copy in ``target``; a file that has none is first copied to
    ``target/superseded_review/recovered/`` (never delete the only copy of a review)."""
    if old.is_dir() and not old.is_symlink():
        kept = {_sha(p) for p in _review_files_under(target)}
        for path in _review_files_under(old):
            if _sha(path) not in kept:
                dest = target / SUPERSEDED_REVIEW_DIR / "recovered" / path.relative_to(old)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
                kept.add(_sha(dest))
        shutil.rmtree(old)
    elif os.path.lexists(old):
        os.unlink(old)


def _looks_like_result(folder: Path) -> bool:
    """True for a folder holding only what a result folder holds (a staging or old folder of ours)."""
    try:
        entries = [e for e in os.listdir(folder) if not e.startswith(".")]
    except OSError:
        return False
    return set(entries) <= KNOWN_ENTRIES


def _staging_folders(target: Path) -> list[Path]:
    """Staging folders of ``target`` left by a run that did not finish."""
    out_dir = target.parent
    try:
        names = os.listdir(out_dir)
    except OSError:
        return []
    found = []
    for entry in names:
        m = _STAGING.match(entry)
        if m and m["name"] == target.name and (out_dir / entry).is_dir() and not (out_dir / entry).is_symlink():
            found.append(out_dir / entry)
    return sorted(found)


def _recover(target: Path) -> None:
    """Repair what a killed writer left of result folder ``target`` (call with its lock held):
    ``.<name>.old`` back in place when the folder is missing, else retired (its review kept);
    staging folders and temporary files of atomic writes inside the folder removed."""
    old = _old_path(target)
    if old.is_dir() and not old.is_symlink() and _looks_like_result(old):
        if not os.path.lexists(target):
            os.replace(old, target)
        elif target.is_dir():
            _retire(old, target)
    for tmp in _staging_folders(target):
        if _looks_like_result(tmp):
            shutil.rmtree(tmp)
    if target.is_dir() and not target.is_symlink():
        for entry in os.listdir(target):
            path = target / entry
            if entry.startswith(".") and entry.endswith(".tmp") and path.is_file():
                path.unlink()


def recover_results(out_dir) -> list[Path]:
    """Repair every result folder of ``out_dir`` (one level) that a killed run left unfinished:
    see :func:`_recover`; folders another run holds the lock of are left alone. Returns the
    result folders looked at."""
    out_dir = Path(out_dir)
    try:
        entries = os.listdir(out_dir)
    except OSError:
        return []
    names = set()
    for entry in entries:
        m = _STAGING.match(entry)
        if m:
            names.add(m["name"])
        elif entry.startswith(".") and entry.endswith((".old", ".lock")) and len(entry) > 5:
            names.add(entry[1:-4] if entry.endswith(".old") else entry[1:-5])
    done = []
    for name in sorted(names):
        if result_name_problem(name):
            continue
        target = out_dir / name
        try:
            with result_lock(target):
                _recover(target)
        except FolderBusy:
            continue
        done.append(target)
    return done


def is_complete(folder, fingerprint) -> bool:
    """True when ``folder`` holds a complete result set made with this ``fingerprint``
    (input and side-file checksums, parameters, software version, images asked for)."""
    folder = Path(folder)
    if not all(result_path(folder, f).is_file() for f in RESULT_FILES):
        return False
    try:
        summary = json.loads(result_path(folder, SUMMARY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return summary.get("fingerprint") == jsonable(fingerprint)


# --------------------------------------------------------------------------- reading results
def is_scan_dir(path) -> bool:
    """True when ``path`` is one scan's results: a result folder (summary.json and candidates.tsv)
    or a BIDS Derivatives prefix whose ``_desc-cmb_summary.json`` and ``_desc-cmb_candidates.tsv``
    exist (see :mod:`microbleeds.io.derivatives`)."""
    path = Path(path)
    return result_path(path, SUMMARY_FILE).is_file() and result_path(path, CANDIDATES_FILE).is_file()


def find_scan_dirs(root) -> list[Path]:
    """Every scan's results at or below ``root``, sorted by path: result folders of a plain run
    (``OUT/<stem>/``) and, in BIDS Derivatives, the prefix path of each scan's files
    (``OUT/sub-01/ses-1/anat/sub-01_ses-1``, not a folder; its files are found with
    :func:`microbleeds.io.derivatives.result_path`, which :func:`load_results` and the other
    readers use). Superseded reviews are not scans."""
    root = Path(root)
    if not root.exists():
        raise InputError(root, "results folder does not exist")
    if not root.is_dir():
        raise InputError(root, "not a folder")
    summary_tail, candidates_tail = "_" + BIDS_NAMES[SUMMARY_FILE], "_" + BIDS_NAMES[CANDIDATES_FILE]
    found = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != SUPERSEDED_REVIEW_DIR and not d.startswith(".")]
        if SUMMARY_FILE in files and CANDIDATES_FILE in files:
            found.append(Path(dirpath))
        names = set(files)
        for name in files:
            if name.endswith(summary_tail) and name[: -len(summary_tail)] + candidates_tail in names:
                found.append(Path(dirpath) / name[: -len(summary_tail)])
    return sorted(found)


def load_results(scan_dir) -> dict:
    """Read one scan's results (a folder or a BIDS prefix, see :func:`find_scan_dirs`): summary,
    lesions and candidates (rows as dicts of strings)."""
    scan_dir = Path(scan_dir)
    if not scan_dir.is_dir() and not is_prefix(scan_dir):
        raise InputError(scan_dir, "scan results folder does not exist")
    summary = read_json(result_path(scan_dir, SUMMARY_FILE))
    cand_cols, candidates = read_tsv(result_path(scan_dir, CANDIDATES_FILE))
    if "candidate_id" not in cand_cols:
        raise InputError(result_path(scan_dir, CANDIDATES_FILE), "no candidate_id column")
    lesions_path = result_path(scan_dir, LESIONS_FILE)
    if lesions_path.is_file():
        les_cols, lesions = read_tsv(lesions_path)
    else:
        les_cols, lesions = list(LESION_COLUMNS), []
    if lesions and "lesion_id" not in les_cols:
        raise InputError(lesions_path, "no lesion_id column")
    return {"dir": scan_dir, "summary": summary, "candidates": candidates,
            "candidate_columns": cand_cols, "lesions": lesions, "lesion_columns": les_cols}
