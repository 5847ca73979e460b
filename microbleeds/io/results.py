"""Result folders: write one scan's results (TSV, NIfTI, JSON) into its own folder, atomically.

Files are first written into a hidden temporary folder beside the destination, which is then
renamed into place: a crash leaves no half-written result folder. Nothing time-dependent is
written, so a re-run on the same input with the same parameters reproduces the files bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..contract import (
    CANDIDATE_COLUMNS,
    CANDIDATES_FILE,
    LABELS_FILE,
    LESION_COLUMNS,
    LESIONS_FILE,
    MASK_FILE,
    RESULT_FILES,
    REVIEW_FILES,
    SUMMARY_FILE,
    SUPERSEDED_REVIEW_DIR,
)
from ..errors import InputError
from .nifti import nifti_bytes
from .tables import json_text, jsonable, read_json, read_tsv, tsv_text


def result_files(result, summary=None):
    """File name -> bytes of one result set."""
    affine = result.scan.native_affine
    return {
        LESIONS_FILE: tsv_text(result.lesions, LESION_COLUMNS).encode(),
        CANDIDATES_FILE: tsv_text(result.candidates, CANDIDATE_COLUMNS).encode(),
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
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (name or result.scan.name)
    summary = dict(result.summary, fingerprint=fingerprint) if fingerprint is not None else result.summary
    files = result_files(result, summary)
    if write_images:
        for extra_name, (array, dtype) in result.phase_images.items():
            files[extra_name] = nifti_bytes(array, result.scan.native_affine, dtype)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=out_dir))
    try:
        for file_name, data in files.items():
            (tmp / file_name).write_bytes(data)
        os.chmod(tmp, 0o755)
        if target.exists():
            _keep_other_files(target, tmp, files)
            old = out_dir / f".{target.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _keep_other_files(old_folder, new_folder, new_files):
    """Carry a reader's review into the new folder when the result it reviewed is unchanged
    (same lesions table); otherwise keep it aside in ``superseded_review/``. Images and the HTML
    report of the old run are not carried over (they would describe the old result)."""
    review = [old_folder / f for f in REVIEW_FILES if (old_folder / f).is_file()]
    if not review:
        return
    old_lesions = old_folder / LESIONS_FILE
    same = old_lesions.is_file() and old_lesions.read_bytes() == new_files[LESIONS_FILE]
    target = new_folder if same else new_folder / SUPERSEDED_REVIEW_DIR
    target.mkdir(exist_ok=True)
    for path in review:
        shutil.copy2(path, target / path.name)


def is_complete(folder, fingerprint) -> bool:
    """True when ``folder`` holds a complete result set made with this ``fingerprint``
    (input and side-file checksums, parameters, software version, images asked for)."""
    folder = Path(folder)
    if not all((folder / f).is_file() for f in RESULT_FILES):
        return False
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return summary.get("fingerprint") == jsonable(fingerprint)


# --------------------------------------------------------------------------- reading results
def is_scan_dir(path) -> bool:
    """True when ``path`` is one scan's output folder (has summary.json and candidates.tsv)."""
    path = Path(path)
    return (path / SUMMARY_FILE).is_file() and (path / CANDIDATES_FILE).is_file()


def find_scan_dirs(root) -> list[Path]:
    """All scan output folders at or below ``root``, sorted by path."""
    root = Path(root)
    if not root.exists():
        raise InputError(root, "results folder does not exist")
    if not root.is_dir():
        raise InputError(root, "not a folder")
    found = [Path(dirpath) for dirpath, _dirs, files in os.walk(root)
             if SUMMARY_FILE in files and CANDIDATES_FILE in files]
    return sorted(found)


def load_results(scan_dir) -> dict:
    """Read one scan folder: summary, lesions and candidates (rows as dicts of strings)."""
    scan_dir = Path(scan_dir)
    if not scan_dir.is_dir():
        raise InputError(scan_dir, "scan results folder does not exist")
    summary = read_json(scan_dir / SUMMARY_FILE)
    cand_cols, candidates = read_tsv(scan_dir / CANDIDATES_FILE)
    if "candidate_id" not in cand_cols:
        raise InputError(scan_dir / CANDIDATES_FILE, "no candidate_id column")
    lesions_path = scan_dir / LESIONS_FILE
    if lesions_path.is_file():
        les_cols, lesions = read_tsv(lesions_path)
    else:
        les_cols, lesions = list(LESION_COLUMNS), []
    if lesions and "lesion_id" not in les_cols:
        raise InputError(lesions_path, "no lesion_id column")
    return {"dir": scan_dir, "summary": summary, "candidates": candidates,
            "candidate_columns": cand_cols, "lesions": lesions, "lesion_columns": les_cols}
