"""Report: write one scan's results (TSV, NIfTI, JSON) into its own folder, atomically.

Files are first written into a hidden temporary folder beside the destination, which is then
renamed into place: a crash leaves no half-written result folder. Nothing time-dependent is
written, so a re-run on the same input with the same parameters reproduces the files bit for bit.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from .api import CANDIDATE_COLUMNS, LESION_COLUMNS

RESULT_FILES = ("lesions.tsv", "candidates.tsv", "labels.nii.gz", "mask.nii.gz", "summary.json")


def format_value(value):
    """TSV text of one cell: floats to 4 decimals, booleans lower case, NaN/None as n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    return str(value)


def tsv_text(rows, columns):
    """A TSV table (header + rows) as text."""
    lines = ["\t".join(columns)]
    lines += ["\t".join(format_value(row.get(c, "")) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def nifti_bytes(array, affine, dtype):
    """Gzipped NIfTI-1 bytes with a fixed gzip header (no time stamp), so output is reproducible."""
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=float))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    raw = img.to_bytes()
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as handle:
        handle.write(raw)
    return buffer.getvalue()


def json_text(data):
    return json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def result_files(result, summary=None):
    """File name -> bytes of one result set."""
    affine = result.scan.native_affine
    return {
        "lesions.tsv": tsv_text(result.lesions, LESION_COLUMNS).encode(),
        "candidates.tsv": tsv_text(result.candidates, CANDIDATE_COLUMNS).encode(),
        "labels.nii.gz": nifti_bytes(result.labels, affine, np.int32),
        "mask.nii.gz": nifti_bytes(result.mask, affine, np.uint8),
        "summary.json": json_text(result.summary if summary is None else summary).encode(),
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


REVIEW_FILES = ("review_decisions.tsv", "lesions_reviewed.tsv", "summary_reviewed.json")


def _keep_other_files(old_folder, new_folder, new_files):
    """Carry a reader's review into the new folder when the result it reviewed is unchanged
    (same lesions table); otherwise keep it aside in ``superseded_review/``. Images and the HTML
    report of the old run are not carried over (they would describe the old result)."""
    review = [old_folder / f for f in REVIEW_FILES if (old_folder / f).is_file()]
    if not review:
        return
    same = (old_folder / "lesions.tsv").is_file() and (old_folder / "lesions.tsv").read_bytes() == new_files["lesions.tsv"]
    target = new_folder if same else new_folder / "superseded_review"
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
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return summary.get("fingerprint") == _jsonable(fingerprint)
