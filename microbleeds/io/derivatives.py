"""BIDS Derivatives output: one scan's results as BIDS-named files in its subject's ``anat/`` folder.

A scan ``sub-01/ses-1/anat/sub-01_ses-1_acq-me_MEGRE`` (echoes 1-3) gets, in
``OUT/sub-01/ses-1/anat/``, files named with its entities (``sub-01_ses-1_acq-me``) plus:

==============================================  =================================================
``_desc-cmb_dseg.nii.gz`` (+ ``.tsv``, ``.json``) lesion label map (value = lesion_id) and lookup
``_desc-brain_mask.nii.gz`` (+ ``.json``)         brain mask used
``_desc-swi_T2starw.nii.gz`` (+ ``.json``)        SWI (with phase and images asked for)
``_part-phase_desc-filtered_T2starw.nii.gz``      high-pass filtered phase, radians
``_desc-cmb_lesions.tsv`` / ``_candidates.tsv``   the tables (+ ``.json`` describing the columns)
``_desc-cmb_summary.json``                        the summary (counts, provenance, ``bids`` block)
==============================================  =================================================

The spec has no place for the tables, the summary, the review files and the HTML pages, so the
root's ``.bidsignore`` (:data:`BIDSIGNORE`) names exactly those; everything else validates.

A scan's results are "the result set at prefix ``OUT/sub-01/ses-1/anat/sub-01_ses-1_acq-me``":
that prefix path (no such folder exists) is what :func:`microbleeds.io.results.find_scan_dirs`
returns for it, and :func:`result_path` maps the generic names of :mod:`microbleeds.contract`
onto it. Writing is atomic per file; the summary, which carries the resume fingerprint, is removed
first and written last, so a set without its summary is absent (and recomputed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..contract import (
    CANDIDATE_COLUMNS,
    CANDIDATES_FILE,
    FILTERED_PHASE_FILE,
    LABELS_FILE,
    LESION_COLUMNS,
    LESIONS_FILE,
    MASK_FILE,
    REPORT_FILE,
    REVIEW_DECISIONS_FILE,
    REVIEW_FILES,
    REVIEWED_LESIONS_FILE,
    REVIEWED_SUMMARY_FILE,
    SUMMARY_FILE,
    SUPERSEDED_REVIEW_DIR,
    SWI_FILE,
)
from .atomic import atomic_write_bytes, atomic_write_files
from .tables import json_text

BIDS_VERSION = "1.10.0"
SCHEMA_VERSION = "1.0"
"""Version of the summary JSON's layout (``schema_version``); raised when a key changes meaning."""
CODE_URL = "https://pypi.org/project/microbleeds/"
DESCRIPTION_FILE = "dataset_description.json"

BIDS_NAMES = {
    LABELS_FILE: "desc-cmb_dseg.nii.gz",
    MASK_FILE: "desc-brain_mask.nii.gz",
    SWI_FILE: "desc-swi_T2starw.nii.gz",
    FILTERED_PHASE_FILE: "part-phase_desc-filtered_T2starw.nii.gz",
    LESIONS_FILE: "desc-cmb_lesions.tsv",
    CANDIDATES_FILE: "desc-cmb_candidates.tsv",
    SUMMARY_FILE: "desc-cmb_summary.json",
    REPORT_FILE: "desc-cmb_report.html",
    REVIEW_DECISIONS_FILE: "desc-reviewed_decisions.tsv",
    REVIEWED_LESIONS_FILE: "desc-reviewed_lesions.tsv",
    REVIEWED_SUMMARY_FILE: "desc-reviewed_summary.json",
}
"""Generic result name (:mod:`microbleeds.contract`) -> the tail of its BIDS file name."""

BIDSIGNORE = ("*_lesions.tsv", "*_lesions.json", "*_candidates.tsv", "*_candidates.json", "*_summary.json",
              "*_decisions.tsv", "*.html", SUPERSEDED_REVIEW_DIR + "/", "logs/", "cohort.*", "group_*")
"""What the spec has no place for: result tables, summaries, review files, pages, the run logs, and
the group level's cohort tables, models and page (``cohort.*``, ``group_*`` at the root)."""


README_TEXT = """# microbleeds {version}: cerebral microbleeds

BIDS Derivatives of the dataset in `DatasetLinks.raw` (dataset_description.json). Per T2*-weighted
scan, in `sub-*/[ses-*/]anat/`: `_desc-cmb_dseg.nii.gz` (lesion label map, value = lesion_id; lookup
`_desc-cmb_dseg.tsv`), `_desc-brain_mask.nii.gz`, `_desc-cmb_lesions.tsv` and `_desc-cmb_candidates.tsv`
(columns described in their JSON sidecars), `_desc-cmb_summary.json` (counts, burden category,
acquisition, parameters, provenance); with phase, `_desc-swi_T2starw.nii.gz` and
`_part-phase_desc-filtered_T2starw.nii.gz`. `logs/` holds each run's log and failed scans.
"""


def is_prefix(scan) -> bool:
    """True when ``scan`` names a result set by prefix (a BIDS derivatives scan), not a folder."""
    scan = Path(scan)
    return not scan.is_dir() and (scan.parent / f"{scan.name}_{BIDS_NAMES[SUMMARY_FILE]}").is_file()


def result_path(scan, name) -> Path:
    """Where result ``name`` (a :mod:`microbleeds.contract` file name) of ``scan`` is: inside a
    result folder, or beside a BIDS prefix (``<prefix>_<BIDS_NAMES[name]>``)."""
    scan = Path(scan)
    if scan.is_dir() or name not in BIDS_NAMES:
        return scan / name
    return scan.parent / f"{scan.name}_{BIDS_NAMES[name]}"


def scan_dir_of(path) -> Path:
    """The scan dir (folder or BIDS prefix) a result file belongs to (inverse of :func:`result_path`)."""
    path = Path(path)
    for tail in BIDS_NAMES.values():
        if path.name.endswith("_" + tail):
            return path.parent / path.name[: -len(tail) - 1]
    return path.parent


def sidecar_name(file_name) -> str:
    """The JSON sidecar's name of a BIDS data file."""
    for ext in (".nii.gz", ".nii", ".tsv"):
        if file_name.endswith(ext):
            return file_name[: -len(ext)] + ".json"
    raise ValueError(f"no sidecar for {file_name}")


def write_derivative_files(files: dict, prefix, sources, raw_uri="bids:raw:") -> dict:
    """Write one scan's result set (generic name -> bytes, see :data:`BIDS_NAMES`) at ``prefix``
    (``OUT/sub-01/anat/sub-01``), with JSON sidecars for its NIfTIs and TSVs; the caller holds the
    set's lock (:func:`microbleeds.io.results.result_lock` of ``prefix``).

    ``sources`` are the raw files' dataset-relative paths (recorded as BIDS URIs ``raw_uri + path``).
    A reader's review stays when the lesions table is unchanged, else it moves to
    ``superseded_review/<prefix name>/``. Images of an earlier run not written now are removed
    (they would describe the old result). Returns generic name -> path written.
    """
    prefix = Path(prefix)
    folder = prefix.parent
    folder.mkdir(parents=True, exist_ok=True)
    named = {f"{prefix.name}_{BIDS_NAMES[name]}": data for name, data in files.items() if name != SUMMARY_FILE}
    named.update(_sidecars(files, prefix.name, sources, raw_uri))
    summary_name = f"{prefix.name}_{BIDS_NAMES[SUMMARY_FILE]}"
    _clean_stale_temporaries(folder, prefix.name)
    _set_review_aside(prefix, files.get(LESIONS_FILE))
    summary = folder / summary_name
    if summary.exists():
        summary.unlink()  # absent until the last file is in place
    for name in (SWI_FILE, FILTERED_PHASE_FILE):
        if name not in files:
            for stale in (result_path(prefix, name), folder / sidecar_name(result_path(prefix, name).name)):
                if stale.exists():
                    stale.unlink()
    atomic_write_files(folder, named)
    atomic_write_bytes(summary, files[SUMMARY_FILE])
    return {name: result_path(prefix, name) for name in files}


_UNDESCRIBED = {"Description": "see docs/contract.md"}  # a column added without its entry (a test fails)


def _sidecars(files, prefix_name, sources, raw_uri) -> dict:
    """JSON sidecars (name -> bytes) of the NIfTIs and TSVs of one result set."""
    from .derivative_columns import CANDIDATE_COLUMN_DOCS, LESION_COLUMN_DOCS

    raw = [raw_uri + s for s in sources]
    out = {}

    def add(name, meta):
        if name in files:
            out[sidecar_name(f"{prefix_name}_{BIDS_NAMES[name]}")] = json_text(meta).encode()

    grid = {"SpatialReference": raw[0]} if raw else {}  # on the source's own grid (no space- entity)
    add(LABELS_FILE, {"Description": "Cerebral microbleeds found by microbleeds: voxel value = lesion_id of "
                                     "the lesions table (0: none)", "Sources": raw, **grid})
    add(MASK_FILE, {"Type": "Brain", "Description": "Brain mask the detection used", "Sources": raw, **grid})
    add(SWI_FILE, {"SkullStripped": False, "Description": "Susceptibility-weighted image: magnitude times the "
                                                          "high-pass filtered phase mask", "Sources": raw})
    add(FILTERED_PHASE_FILE, {"SkullStripped": False, "Units": "rad",
                              "Description": "Phase after homodyne high-pass filtering, radians", "Sources": raw})
    add(LESIONS_FILE, {c: LESION_COLUMN_DOCS.get(c, _UNDESCRIBED) for c in LESION_COLUMNS})
    add(CANDIDATES_FILE, {c: CANDIDATE_COLUMN_DOCS.get(c, _UNDESCRIBED) for c in CANDIDATE_COLUMNS})
    if LABELS_FILE in files:
        out[f"{prefix_name}_desc-cmb_dseg.tsv"] = dseg_lookup(files.get(LESIONS_FILE, b"")).encode()
    return out


def dseg_lookup(lesions_tsv: bytes) -> str:
    """The ``_dseg.tsv`` lookup of the lesion label map: ``index`` (lesion_id) and ``name``."""
    lines = lesions_tsv.decode().splitlines() if lesions_tsv else []
    rows = ["index\tname"]
    if lines:
        header = lines[0].split("\t")
        at = header.index("lesion_id") if "lesion_id" in header else 0
        rows += [f"{line.split(chr(9))[at]}\tmicrobleed" for line in lines[1:] if line.strip()]
    return "\n".join(rows) + "\n"


def _set_review_aside(prefix: Path, new_lesions):
    """Move a reader's review of ``prefix`` to ``superseded_review/<name>/`` when the lesions it
    reviewed change (an earlier superseded review moves into ``earlier-<n>/`` first)."""
    review = [result_path(prefix, f) for f in REVIEW_FILES if result_path(prefix, f).is_file()]
    old_lesions = result_path(prefix, LESIONS_FILE)
    if not review or (old_lesions.is_file() and old_lesions.read_bytes() == new_lesions):
        return
    target = prefix.parent / SUPERSEDED_REVIEW_DIR / prefix.name
    if target.exists() and any(target.iterdir()):
        n = 1
        while (target.parent / f"{prefix.name}-earlier-{n}").exists():
            n += 1
        os.replace(target, target.parent / f"{prefix.name}-earlier-{n}")
    target.mkdir(parents=True, exist_ok=True)
    for path in review:
        os.replace(path, target / path.name)


def _clean_stale_temporaries(folder: Path, prefix_name: str):
    """Remove the hidden temporaries (``.<prefix>_*.tmp``) a killed writer of this set left."""
    for entry in os.listdir(folder):
        if entry.startswith(f".{prefix_name}_") and entry.endswith(".tmp") and (folder / entry).is_file():
            (folder / entry).unlink()


def dataset_description(raw_link: str, raw_name: str | None = None) -> dict:
    """The derivatives' ``dataset_description.json``: derivative of the raw dataset at ``raw_link``
    (a path relative to the output folder, so the pair can move together)."""
    from .. import __version__

    return {"Name": "microbleeds: cerebral microbleeds", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "microbleeds", "Version": __version__, "CodeURL": CODE_URL}],
            "SourceDatasets": [{"URL": "bids:raw:", **({"Name": raw_name} if raw_name else {})}],
            "DatasetLinks": {"raw": raw_link}}


def write_dataset_files(out_dir, bids_dir) -> None:
    """``dataset_description.json`` and ``.bidsignore`` of the derivatives folder (same bytes on
    every run for the same pair of folders)."""
    from .. import __version__

    out_dir, bids_dir = Path(out_dir), Path(bids_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    link = os.path.relpath(bids_dir.resolve(), out_dir.resolve())
    name = None
    try:
        name = json.loads((bids_dir / DESCRIPTION_FILE).read_text(encoding="utf-8")).get("Name")
    except (OSError, ValueError, AttributeError):
        pass
    description = json_text(dataset_description(Path(link).as_posix() + "/", name if isinstance(name, str) else None))
    if not (out_dir / DESCRIPTION_FILE).is_file() or (out_dir / DESCRIPTION_FILE).read_text() != description:
        atomic_write_bytes(out_dir / DESCRIPTION_FILE, description.encode())
    readme = README_TEXT.format(version=__version__)
    if not (out_dir / "README.md").is_file() or (out_dir / "README.md").read_text() != readme:
        atomic_write_bytes(out_dir / "README.md", readme.encode())
    ignore = "\n".join(BIDSIGNORE) + "\n"
    if not (out_dir / ".bidsignore").is_file() or (out_dir / ".bidsignore").read_text() != ignore:
        atomic_write_bytes(out_dir / ".bidsignore", ignore.encode())

