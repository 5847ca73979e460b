"""The group table: one row per scan result (participant, session, acquisition, run) with its
counts, burden categories, reviewed counts, acquisition facts and quality flags, joined with the
BIDS dataset's ``participants.tsv`` and ``sub-*/sub-*_sessions.tsv`` covariates.

Counts are numbers of accepted lesions (automatic) and of reader-confirmed lesions (``*_reviewed``,
where ``microbleeds review apply`` wrote ``summary_reviewed.json``). Written as TSV (``n/a`` for
missing) with a BIDS JSON sidecar describing every column.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ..contract import (
    BURDEN_CATEGORIES,
    COUNTED_REGIONS,
    LOBES,
    REPORT_FILE,
    REVIEWED_LESIONS_FILE,
    REVIEWED_SUMMARY_FILE,
    burden_category,
)
from ..errors import InputError
from ..io.atomic import atomic_write_files
from ..io.derivatives import result_path
from ..io.results import find_scan_dirs, load_results
from ..io.tables import json_text, read_json, read_tsv, tsv_text
from .entities import scan_identity

HEMISPHERES = ("left", "right", "midline")
"""Hemisphere columns (``unknown`` hemispheres are in the totals only)."""
ARIA_H_CATEGORIES = ("<=4", "5-9", ">=10")
"""ARIA-H microhaemorrhage severity (mild <= 4, moderate 5-9, severe >= 10; Sperling 2011)."""
TRUSTED_SIGN = ("high", "moderate")
"""Phase-sign confidences with which the detector excludes calcifications (stages/mimics.py)."""
FLOAT_FORMAT = ".6g"
"""Numbers of the group TSVs in their shortest exact-enough form (6 significant digits)."""
_MI = re.compile(r"Mattes MI (-?[0-9.]+)")

KEY_COLUMNS = ("participant_id", "session_id", "acquisition", "run", "suffix")


def aria_h_category(count) -> str:
    """ARIA-H severity band of a microbleed count: '<=4', '5-9' or '>=10'."""
    count = int(count)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return "<=4" if count <= 4 else "5-9" if count <= 9 else ">=10"


def size_column(label: str) -> str:
    """Column name of a size bin label: ``<2mm`` -> ``cmb_size_lt2mm``, ``2-5mm`` -> ``cmb_size_2to5mm``."""
    text = str(label).replace(" ", "")
    for old, new in (("<=", "le"), (">=", "ge"), ("<", "lt"), (">", "gt"), ("-", "to"), (".", "p")):
        text = text.replace(old, new)
    return "cmb_size_" + re.sub(r"[^0-9a-zA-Z_]", "", text)


# --------------------------------------------------------------------------- one scan
def _count_cells(counts: dict, lesions: list | None, suffix: str) -> dict:
    """Count columns from a summary's ``counts`` block (``suffix`` '' or '_reviewed'); lobe and
    hemisphere counts from the lesion rows when the block lacks them."""
    cells = {}
    total = counts.get("total")
    cells["cmb_total" + suffix] = _int(total)
    cells["cmb_definite" + suffix] = _int(counts.get("definite"))
    cells["cmb_possible" + suffix] = _int(counts.get("possible"))
    by_region = counts.get("by_region") or {}
    for r in COUNTED_REGIONS:
        cells[f"cmb_{r}{suffix}"] = _int(by_region.get(r, 0)) if by_region else math.nan
    by_lobe, by_hemi = counts.get("by_lobe"), counts.get("by_hemisphere")
    if by_lobe is None and lesions is not None:
        by_lobe = {lobe: sum(row.get("lobe") == lobe for row in lesions) for lobe in LOBES}
    if by_hemi is None and lesions is not None:
        by_hemi = {h: sum(row.get("hemisphere") == h for row in lesions) for h in HEMISPHERES}
    for lobe in LOBES:
        cells[f"cmb_{lobe}{suffix}"] = _int(by_lobe.get(lobe, 0)) if by_lobe else math.nan
    for h in HEMISPHERES:
        cells[f"cmb_{h}{suffix}"] = _int(by_hemi.get(h, 0)) if by_hemi else math.nan
    rh = counts.get("by_region_hemisphere") or {}
    if not suffix:
        for r in ("lobar", "deep", "infratentorial"):
            for h in ("left", "right"):
                cells[f"cmb_{r}_{h}"] = _int((rh.get(r) or {}).get(h, 0)) if rh else math.nan
        for label, n in (counts.get("by_size") or {}).items():
            cells[size_column(label)] = _int(n)
    n = cells["cmb_total" + suffix]
    ok = isinstance(n, int)
    cells["any_cmb" + suffix] = int(n > 0) if ok else math.nan
    cells["burden_itp" + suffix] = burden_category(n) if ok else None
    cells["burden_aria_h" + suffix] = aria_h_category(n) if ok else None
    return cells


def _int(value):
    try:
        f = float(value)
    except (TypeError, ValueError):
        return math.nan
    return int(f) if math.isfinite(f) else math.nan


def _quality_cells(summary: dict) -> dict:
    """Acquisition facts and the quality flags of one scan."""
    acq, inp = summary.get("acquisition") or {}, summary.get("input") or {}
    phase = summary.get("phase") if isinstance(summary.get("phase"), dict) else None
    evidence = (phase or {}).get("sign_evidence") or {}
    regions = summary.get("regions") or {}
    notes = " ".join(regions.get("notes") or [])
    mi = _MI.search(notes)
    reg = regions.get("registration") if isinstance(regions.get("registration"), dict) else {}
    meta = summary.get("acquisition_metadata") or {}
    voxel = list(inp.get("voxel_size_mm") or [])[:3]
    voxel += [math.nan] * (3 - len(voxel))
    mask = summary.get("brain_mask") or {}
    warnings = [str(w) for w in summary.get("warnings") or []]
    confidence = evidence.get("confidence") if phase else "no phase"
    return {
        "sequence": acq.get("sequence"), "field_strength_t": _float(acq.get("field_strength_t")),
        "echo_time_ms": _float(acq.get("echo_time_ms")),
        "repetition_time_ms": _float(meta.get("repetition_time_ms")), "flip_angle_deg": _float(meta.get("flip_angle_deg")),
        "manufacturer": meta.get("manufacturer"),
        "voxel_x_mm": _float(voxel[0]), "voxel_y_mm": _float(voxel[1]), "voxel_z_mm": _float(voxel[2]),
        "preset": (summary.get("pipeline") or {}).get("name"),
        "software_version": (summary.get("software") or {}).get("version"),
        "phase_sign_confidence": confidence or "unknown",
        "calcifications_excluded": bool(phase) and confidence in TRUSTED_SIGN,
        "region_source": regions.get("source", "none"),
        "registration_quality": reg.get("quality"),
        "registration_dice": _float(reg.get("dice")),
        "registration_mi": _float(reg["mutual_information"]) if "mutual_information" in reg
        else float(mi[1]) if mi else math.nan,
        "brain_volume_ml": _float(mask.get("volume_ml", summary.get("brain_volume_ml"))),
        "brain_coverage": mask.get("coverage"),
        "n_warnings": len(warnings), "warnings": "; ".join(warnings),
    }


def _float(value):
    try:
        f = float(value)
    except (TypeError, ValueError):
        return math.nan
    return f


def _review_cells(scan_dir: Path) -> dict:
    """Review state (none / partial / complete), reviewers and reader-confirmed counts."""
    path = result_path(scan_dir, REVIEWED_SUMMARY_FILE)
    reviewed = None
    if path.is_file():
        try:
            reviewed = read_json(path)
        except InputError:
            reviewed = None
    if reviewed is None:
        cells = _count_cells({}, None, "_reviewed")
        cells.update({"review_state": "none", "reviewers": ""})
        return cells
    lesions = None
    lpath = result_path(scan_dir, REVIEWED_LESIONS_FILE)
    if lpath.is_file():
        _cols, rows = read_tsv(lpath)
        lesions = [r for r in rows if r.get("reviewed_status") in ("confirmed", "added")]
    review = reviewed.get("review") or {}
    cells = _count_cells(reviewed.get("counts") or {}, lesions, "_reviewed")
    cells.update({"review_state": "complete" if review.get("complete") else "partial",
                  "reviewers": ";".join(review.get("reviewers") or [])})
    return cells


def scan_row(results_dir: Path, scan_dir: Path) -> dict:
    """One scan's row of the group table (no covariates)."""
    res = load_results(scan_dir)
    s = res["summary"]
    inp = s.get("input") or {}
    row = scan_identity(s)
    rel = scan_dir.relative_to(results_dir).as_posix() if scan_dir != results_dir else "."
    row.update({"scan": rel, "input": inp.get("path", ""), "sha256": inp.get("sha256", "")})
    counts = s.get("counts") or {}
    row.update(_count_cells(counts, res["lesions"], ""))
    row.update(_review_cells(scan_dir))
    row.update(_quality_cells(s))
    report = result_path(scan_dir, REPORT_FILE)
    row["report"] = Path(os.path.relpath(report, results_dir)).as_posix() if report.is_file() else ""
    return row


# --------------------------------------------------------------------------- covariates
def find_bids_dir(results_dir: Path) -> Path | None:
    """The BIDS dataset a results folder derives from, when it sits in ``<bids>/derivatives/``."""
    for parent in results_dir.resolve().parents:
        if parent.name == "derivatives" and (parent.parent / "participants.tsv").is_file():
            return parent.parent
    return None


def read_covariates(path: Path, key_columns: tuple) -> tuple:
    """A BIDS covariate table (participants.tsv, sessions.tsv) as a DataFrame: ``n/a`` and empty
    cells missing, columns numeric when every present value is a number (unless the JSON sidecar
    gives ``Levels``: categorical); returns ``(frame, sidecar dict)``."""
    import pandas as pd

    columns, rows = read_tsv(path)
    for key in key_columns:
        if key not in columns:
            raise InputError(path, f"no {key} column (columns: {', '.join(columns)})")
    sidecar_path = path.with_suffix(".json")
    sidecar = read_json(sidecar_path) if sidecar_path.is_file() else {}
    frame = pd.DataFrame(rows, columns=columns).replace({"n/a": None, "": None})
    dup = frame.duplicated(list(key_columns), keep=False)
    if dup.any():
        first = frame.loc[dup, list(key_columns)].iloc[0].tolist()
        raise InputError(path, f"{'/'.join(map(str, first))} appears more than once")
    for col in columns:
        if col in key_columns:
            continue
        levels = isinstance(sidecar.get(col), dict) and "Levels" in sidecar[col]
        numeric = pd.to_numeric(frame[col], errors="coerce")
        if not levels and numeric.notna().sum() == frame[col].notna().sum():
            frame[col] = numeric.astype(float)
    return frame, sidecar


def _join(table, frame, keys, source, notes, descriptions, sidecar):
    clash = [c for c in frame.columns if c not in keys and c in table.columns]
    if clash:
        frame = frame.rename(columns={c: f"{c}_{source}" for c in clash})
        notes.append(f"{source} columns {', '.join(clash)} renamed with suffix _{source} (they clash with the table's)")
    for col in frame.columns:
        if col not in keys:
            entry = dict(sidecar.get(col.removesuffix(f"_{source}")) or {}) if isinstance(sidecar, dict) else {}
            entry.setdefault("Description", f"covariate from {source}.tsv")
            descriptions[col] = entry
    return table.merge(frame, on=list(keys), how="left", validate="many_to_one")


def add_covariates(table, bids_dir: Path, notes: list, descriptions: dict):
    """``table`` joined with ``participants.tsv`` (on participant_id) and every
    ``sub-*/sub-*_sessions.tsv`` (on participant_id, session_id)."""
    import pandas as pd

    part = bids_dir / "participants.tsv"
    if part.is_file():
        frame, sidecar = read_covariates(part, ("participant_id",))
        frame["participant_id"] = frame["participant_id"].astype(str)
        table = _join(table, frame, ("participant_id",), "participants", notes, descriptions, sidecar)
        missing = sorted(set(table["participant_id"].dropna()) - set(frame["participant_id"]))
        if missing:
            notes.append(f"not in participants.tsv (no covariates): {', '.join(missing)}")
        no_scan = sorted(set(frame["participant_id"]) - set(table["participant_id"].dropna()))
        if no_scan:
            notes.append(f"in participants.tsv without results: {', '.join(no_scan)}")
    else:
        notes.append(f"{part} not found: no participant covariates")
    frames, sidecar = [], {}
    for path in sorted(bids_dir.glob("sub-*/sub-*_sessions.tsv")):
        frame, side = read_covariates(path, ("session_id",))
        frame.insert(0, "participant_id", path.parent.name)
        frames.append(frame)
        sidecar.update(side)
    if frames:
        sessions = pd.concat(frames, ignore_index=True)
        table = _join(table, sessions, ("participant_id", "session_id"), "sessions", notes, descriptions, sidecar)
    return table


# --------------------------------------------------------------------------- the table
def load_cohort(results_dir, bids_dir=None):
    """The group table of a run's output folder: a pandas DataFrame, one row per scan result.

    Parameters
    ----------
    results_dir : path
        A run's output folder (scan result folders at or below it).
    bids_dir : path, optional
        The BIDS dataset, for ``participants.tsv`` and ``sub-*/sub-*_sessions.tsv``; default: the
        dataset above ``results_dir`` when it sits in ``<bids>/derivatives/``, else none.

    Returns
    -------
    pandas.DataFrame
        Columns: keys (``participant_id``, ``session_id``, ``acquisition``, ``run``, ``suffix``,
        ``scan``), counts (``cmb_*``), burden categories, reviewed counts (``*_reviewed``),
        acquisition and quality columns, then the covariates. ``frame.attrs`` holds
        ``descriptions`` (column -> BIDS sidecar entry), ``notes`` and ``bids_dir``.
    """
    import pandas as pd

    results_dir = Path(results_dir)
    rows = [scan_row(results_dir, d) for d in find_scan_dirs(results_dir)]
    if not rows:
        raise InputError(results_dir, "no scan results (summary.json + candidates.tsv) below this folder")
    table = pd.DataFrame(rows)
    _check_unique(table)
    notes, descriptions = [], {}
    bids_dir = Path(bids_dir) if bids_dir is not None else find_bids_dir(results_dir)
    if bids_dir is not None:
        if not bids_dir.is_dir():
            raise InputError(bids_dir, "BIDS dataset folder does not exist")
        table = add_covariates(table, bids_dir, notes, descriptions)
    no_id = table.loc[table["participant_id"].isna(), "scan"].tolist()
    if no_id:
        notes.append(f"no participant_id (input not a BIDS name): {', '.join(no_id)}")
    table = table.sort_values(["participant_id", "session_id", "acquisition", "run", "scan"],
                              na_position="last", kind="stable").reset_index(drop=True)
    table.attrs.update(descriptions=descriptions, notes=notes, bids_dir=str(bids_dir) if bids_dir else None)
    return table


def _check_unique(table) -> None:
    keyed = table[table["participant_id"].notna()]
    dup = keyed.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        scans = keyed.loc[dup, "scan"].tolist()
        raise InputError(scans[0], f"same participant/session/acquisition/run/suffix as {scans[1]}: "
                                   "one result per scan is expected")


# --------------------------------------------------------------------------- descriptions
_FIXED = {
    "participant_id": "BIDS participant (sub-<label>)",
    "session_id": "BIDS session (ses-<label>); n/a without sessions",
    "acquisition": "BIDS acq entity of the input", "run": "BIDS run entity of the input",
    "suffix": "BIDS suffix of the input (swi, T2starw, ...)",
    "identity_source": "where participant/session came from: bids (summary's bids block), file name, none",
    "scan": "scan's results, relative to the results folder (a folder, or a BIDS prefix sub-01/anat/sub-01)", "input": "input file of the detector",
    "sha256": "SHA-256 of the input file",
    "excluded": "excluded from the analysis (command line --exclude)", "exclusion_reason": "why it was excluded",
    "any_cmb": "1 when at least one microbleed (automatic), else 0",
    "burden_itp": "burden category of the ITP study (Blood 2020): 0, 1, 2-4, >=5 (automatic)",
    "burden_aria_h": "ARIA-H microhaemorrhage band: <=4 (mild), 5-9 (moderate), >=10 (severe) (automatic)",
    "review_state": "reader's review: none, partial (some automatic lesions undecided) or complete",
    "reviewers": "reviewer names, ';'-separated",
    "sequence": "sequence (SWI / GRE)", "field_strength_t": "main field", "echo_time_ms": "echo time",
    "voxel_x_mm": "voxel size, first axis", "voxel_y_mm": "voxel size, second axis",
    "voxel_z_mm": "voxel size, third axis", "preset": "detector preset", "software_version": "microbleeds version",
    "phase_sign_confidence": "confidence of the phase sign convention (high, moderate, low; 'no phase')",
    "calcifications_excluded": "true when diamagnetic foci were rejected as calcifications (trusted phase sign)",
    "region_source": "where MARS regions came from (labels, labels_resampled, labels_registered, atlas, none)",
    "registration_quality": "quality of the atlas registration (high, moderate, failed, not_run); n/a without atlas",
    "registration_dice": "Dice of the registered atlas brain with the scan's brain mask; n/a without atlas",
    "registration_mi": "mutual information of the atlas registration, or the Mattes MI of a T1w registration "
                       "(negative: the metric SimpleITK minimises); n/a without registration",
    "repetition_time_ms": "repetition time (sidecar)", "flip_angle_deg": "flip angle (sidecar)",
    "manufacturer": "scanner manufacturer (sidecar)",
    "brain_volume_ml": "brain mask volume", "brain_coverage": "whole or partial brain coverage",
    "n_warnings": "number of warnings of the scan", "warnings": "the scan's warnings, '; '-separated",
    "report": "the scan's review page, relative to the results folder",
}
_UNITS = {"field_strength_t": "T", "echo_time_ms": "ms", "repetition_time_ms": "ms", "flip_angle_deg": "degree", "voxel_x_mm": "mm", "voxel_y_mm": "mm", "voxel_z_mm": "mm",
          "brain_volume_ml": "mL"}


def describe_column(col: str) -> dict:
    """The BIDS sidecar entry of one of the table's own columns."""
    if col in _FIXED:
        entry = {"Description": _FIXED[col]}
        if col in _UNITS:
            entry["Units"] = _UNITS[col]
        if col.startswith("burden_itp"):
            entry["Levels"] = {c: f"{c} microbleeds" for c in BURDEN_CATEGORIES}
        if col.startswith("burden_aria_h"):
            entry["Levels"] = {c: f"{c} microbleeds" for c in ARIA_H_CATEGORIES}
        return entry
    base, reviewed = (col.removesuffix("_reviewed"), True) if col.endswith("_reviewed") else (col, False)
    if base != col and base in _FIXED:
        entry = describe_column(base)
        entry["Description"] = entry["Description"].replace("(automatic)", "(reader-confirmed)")
        return entry
    if base.startswith("cmb_"):
        what = base[4:].replace("size_", "apparent diameter ").replace("_", " ")
        kind = "reader-confirmed (confirmed + added)" if reviewed else "automatic (accepted)"
        return {"Description": f"number of microbleeds, {what}: {kind}", "Units": "count"}
    return {"Description": col}


def sidecar(table) -> dict:
    """The JSON sidecar of a group table: one entry per column."""
    covariates = table.attrs.get("descriptions") or {}
    return {c: covariates.get(c) or describe_column(c) for c in table.columns}


def write_table(table, path, extra_sidecar=None) -> dict[str, Path]:
    """Write ``table`` as ``path`` (TSV, ``n/a`` for missing) and its JSON sidecar beside it,
    atomically; returns ``{"tsv": path, "json": path}``."""
    import pandas as pd

    path = Path(path)
    rows = [{c: (None if _missing(v, pd) else v) for c, v in rec.items()}
            for rec in table.to_dict(orient="records")]
    rows = [{c: _plain(v) for c, v in r.items()} for r in rows]
    side = sidecar(table)
    side.update(extra_sidecar or {})
    json_path = path.with_suffix(".json")
    atomic_write_files(path.parent, {path.name: tsv_text(rows, list(table.columns), FLOAT_FORMAT).encode(),
                                     json_path.name: json_text(side).encode()})
    return {"tsv": path, "json": json_path}


def _missing(value, pd) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value):
    """Whole floats as integers (a count read back as 3.0 is written 3)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    return value

