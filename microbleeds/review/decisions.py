"""Review: fold a neuroradiologist's decisions into the lesion table, and read results folders.

The detector proposes, a reader confirms. The reader marks each candidate in ``report.html``
(see :mod:`microbleeds.html_report`) and saves ``decisions.tsv``; :func:`apply_review` turns that
file into two NEW files beside the automatic results, never touching them:

- ``lesions_reviewed.tsv``: every row of ``lesions.tsv`` plus every candidate the reader
  confirmed although the algorithm rejected it, with the columns of ``lesions.tsv`` followed by
  ``candidate_id, reviewed_status, mimic_type, reviewer, review_time``.
  ``reviewed_status`` is ``confirmed`` (accepted by the algorithm, confirmed by the reader),
  ``rejected`` (accepted by the algorithm, rejected by the reader), ``added`` (rejected by the
  algorithm, confirmed by the reader) or ``unreviewed`` (accepted, no decision yet).
  Added lesions get new ``lesion_id`` values N+1, N+2, ... in candidate order (N = number of
  automatic lesions); they are not in ``labels.nii.gz``. Their size, contrast, confidence,
  certainty and region come from ``candidates.tsv`` where it has those columns (certainty
  ``possible`` and region ``unknown`` otherwise); ``region_source`` says ``review``.
- ``summary_reviewed.json``: ``summary.json`` with ``counts`` and ``burden_category`` recomputed
  on the reader-confirmed lesions (``confirmed`` + ``added``), the automatic values kept under
  ``"automatic"``, and a ``"review"`` block (reviewer(s), times, numbers decided / undecided,
  ``complete`` = every automatic lesion has a decision; rejected candidates left undecided stay
  rejected).
- ``review_decisions.tsv``: the decisions applied, normalised (one row per candidate), so the
  report can show them again.

Decisions carry the input's SHA-256; decisions for another scan are refused.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..contract import (
    COUNTED_REGIONS as REGIONS,
)
from ..contract import (
    DECISION_COLUMNS,
    LESION_COLUMNS,
    MIMIC_TYPES,
    REVIEW_COLUMNS,
    burden_category,
)
from ..errors import InputError
from ..io.atomic import atomic_write_text
from ..io.results import find_scan_dirs, is_scan_dir, load_results  # noqa: F401
from ..io.tables import read_json, read_tsv  # noqa: F401

# Decision files may hold coordinates; a candidate whose centre moved more than this is not
# the one the reader saw (results re-run with other parameters).
COORD_TOLERANCE_MM = 1.0


# --------------------------------------------------------------------------- reading results
def as_int(value, default=0) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def as_float(value, default=math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------- atomic writes



def tsv_text(columns, rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])
    return buf.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.6g}"
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")


# --------------------------------------------------------------------------- decisions
def read_decisions(decisions_tsv, results: dict) -> dict[int, dict]:
    """Read and validate a decisions file against one scan's results.

    Returns ``{candidate_id: {"decision", "mimic_type", "reviewer", "time"}}``; when a candidate
    appears more than once the last row wins (a reader changing their mind).
    """
    path = Path(decisions_tsv)
    columns, rows = read_tsv(path)
    missing = [c for c in ("sha256", "candidate_id", "decision") if c not in columns]
    if missing:
        raise InputError(path, f"not a decisions file: missing column(s) {', '.join(missing)} "
                               f"(expected {', '.join(DECISION_COLUMNS[:7])})")
    scan_dir = results["dir"]
    expected = str((results["summary"].get("input") or {}).get("sha256") or "").lower()
    if not expected:
        raise InputError(scan_dir / "summary.json", "no input.sha256 to check decisions against")
    candidates = {as_int(c.get("candidate_id"), -1): c for c in results["candidates"]}
    decisions: dict[int, dict] = {}
    for line, row in enumerate(rows, start=2):
        sha = row.get("sha256", "").lower()
        if sha != expected:
            in_path = (results["summary"].get("input") or {}).get("path", "?")
            raise InputError(
                path, f"line {line}: decisions are for a different scan (sha256 {sha[:12] or 'empty'}...)"
                      f"; {scan_dir} holds results for {in_path} (sha256 {expected[:12]}...)")
        cid = as_int(row.get("candidate_id"), -1)
        if cid not in candidates:
            raise InputError(path, f"line {line}: unknown candidate_id {row.get('candidate_id')!r} "
                                   f"(not in {scan_dir / 'candidates.tsv'})")
        cand = candidates[cid]
        if "lesion_id" in row and row["lesion_id"] != "":
            if as_int(row["lesion_id"], -1) != as_int(cand.get("lesion_id"), 0):
                raise InputError(path, f"line {line}: candidate {cid} has lesion_id "
                                       f"{row['lesion_id']} in the decisions but "
                                       f"{cand.get('lesion_id', '0')} in candidates.tsv "
                                       f"(results re-run since the review?)")
        for axis in ("x_mm", "y_mm", "z_mm"):
            got, want = as_float(row.get(axis)), as_float(cand.get(axis))
            if math.isfinite(got) and math.isfinite(want) and abs(got - want) > COORD_TOLERANCE_MM:
                raise InputError(path, f"line {line}: candidate {cid} {axis} is {got:g} in the "
                                       f"decisions but {want:g} in candidates.tsv (results re-run "
                                       f"since the review?)")
        decision = row.get("decision", "").lower()
        if decision in ("", "undecided", "none"):
            decisions.pop(cid, None)
            continue
        if decision in ("confirm", "confirmed", "cmb"):
            decision = "confirmed"
        elif decision in ("reject", "rejected", "mimic"):
            decision = "rejected"
        else:
            raise InputError(path, f"line {line}: decision {row.get('decision')!r} is not one of "
                                   f"confirmed, rejected")
        mimic = row.get("mimic_type", "").lower()
        if mimic in ("none", "n/a"):
            mimic = ""
        if mimic not in MIMIC_TYPES:
            raise InputError(path, f"line {line}: mimic_type {row.get('mimic_type')!r} is not one of "
                                   f"vein, calcification, other (or empty)")
        if decision == "confirmed":
            mimic = ""
        reviewer = row.get("reviewer", "")
        if not reviewer:
            raise InputError(path, f"line {line}: reviewer name is empty; the decision must "
                                   f"name who made it")
        decisions[cid] = {"decision": decision, "mimic_type": mimic, "reviewer": reviewer,
                          "time": row.get("time", "")}
    return decisions


# --------------------------------------------------------------------------- apply
def apply_review(decisions_tsv, out_dir) -> dict[str, Path]:
    """Fold a reader's decisions into new reviewed files in one scan's output folder.

    Parameters
    ----------
    decisions_tsv : path
        ``decisions.tsv`` saved from ``report.html`` (columns ``sha256, candidate_id,
        lesion_id, decision, mimic_type, reviewer, time`` and optionally ``x_mm, y_mm, z_mm``).
    out_dir : path
        The scan's output folder (holding ``summary.json``, ``candidates.tsv``, ``lesions.tsv``),
        or a run's output root: then the one scan folder below it whose input checksum matches
        the decisions is used.

    Returns
    -------
    dict with the paths written: ``lesions`` (lesions_reviewed.tsv), ``summary``
    (summary_reviewed.json) and ``decisions`` (review_decisions.tsv).

    Raises InputError when the decisions are for another scan (checksum mismatch), name unknown
    candidates, or are malformed. The automatic result files are never modified.
    """
    out_dir = _scan_dir_for(decisions_tsv, Path(out_dir))
    results = load_results(out_dir)
    decisions = read_decisions(decisions_tsv, results)
    summary = results["summary"]
    lesion_cols = list(results["lesion_columns"]) or list(LESION_COLUMNS)
    lesions_by_id = {as_int(r.get("lesion_id")): r for r in results["lesions"]}
    candidates = sorted(results["candidates"], key=lambda c: as_int(c.get("candidate_id")))
    cand_by_lesion = {as_int(c.get("lesion_id")): c for c in candidates
                      if as_int(c.get("lesion_id")) > 0}

    rows = []
    for lid in sorted(lesions_by_id):
        row = dict(lesions_by_id[lid])
        cand = cand_by_lesion.get(lid)
        cid = as_int(cand.get("candidate_id")) if cand else None
        dec = decisions.get(cid) if cid is not None else None
        row["candidate_id"] = "" if cid is None else cid
        if dec is None:
            row.update(reviewed_status="unreviewed", mimic_type="", reviewer="", review_time="")
        else:
            row.update(reviewed_status=dec["decision"], mimic_type=dec["mimic_type"],
                       reviewer=dec["reviewer"], review_time=dec["time"])
        rows.append(row)

    next_id = max(lesions_by_id, default=0) + 1
    for cand in candidates:
        cid = as_int(cand.get("candidate_id"))
        dec = decisions.get(cid)
        if as_int(cand.get("lesion_id")) > 0 or dec is None or dec["decision"] != "confirmed":
            continue
        row = {c: cand.get(c, "") for c in lesion_cols}
        row["lesion_id"] = next_id
        next_id += 1
        if not row.get("certainty"):
            row["certainty"] = "possible"
        if row.get("region", "") not in REGIONS:
            row["region"] = "unknown"
        for col in ("lobe", "hemisphere"):
            row[col] = row.get(col) or "n/a"
        row["region_source"] = "review" if not cand.get("region_source") else cand["region_source"]
        row.update(candidate_id=cid, reviewed_status="added", mimic_type="",
                   reviewer=dec["reviewer"], review_time=dec["time"])
        rows.append(row)

    columns = lesion_cols + [c for c in REVIEW_COLUMNS if c not in lesion_cols]
    confirmed = [r for r in rows if r["reviewed_status"] in ("confirmed", "added")]

    reviewed = json.loads(json.dumps(summary))
    reviewed["automatic"] = {"counts": summary.get("counts"),
                             "burden_category": summary.get("burden_category")}
    reviewed["counts"] = _counts(confirmed, (summary.get("counts") or {}).get("by_size"))
    reviewed["burden_category"] = burden_category(len(confirmed))
    reviewers = sorted({d["reviewer"] for d in decisions.values()})
    times = sorted(d["time"] for d in decisions.values() if d["time"])
    n_unreviewed = sum(r["reviewed_status"] == "unreviewed" for r in rows)
    reviewed["review"] = {
        "decisions_file": str(Path(decisions_tsv)),
        "reviewers": reviewers,
        "first_decision": times[0] if times else None,
        "last_decision": times[-1] if times else None,
        "candidates": len(candidates),
        "decided": len(decisions),
        "undecided": len(candidates) - len(decisions),
        "unreviewed_lesions": n_unreviewed,
        "confirmed": sum(r["reviewed_status"] == "confirmed" for r in rows),
        "rejected": sum(r["reviewed_status"] == "rejected" for r in rows),
        "added": sum(r["reviewed_status"] == "added" for r in rows),
        "mimics": {m: sum(d["mimic_type"] == m for d in decisions.values())
                   for m in MIMIC_TYPES if m},
        "complete": n_unreviewed == 0,
        "counts_are": "reader-confirmed lesions only (reviewed_status confirmed or added)",
    }
    notes = list(reviewed.get("notes") or [])
    if n_unreviewed:
        notes.append(f"review incomplete: {n_unreviewed} automatic lesion(s) without a decision "
                     f"are not counted")
    reviewed["notes"] = notes

    paths = {
        "lesions": atomic_write_text(out_dir / "lesions_reviewed.tsv", tsv_text(columns, rows)),
        "summary": atomic_write_text(out_dir / "summary_reviewed.json",
                                     json.dumps(reviewed, indent=2, default=str) + "\n"),
        "decisions": atomic_write_text(out_dir / "review_decisions.tsv",
                                       decisions_text(decisions, summary, candidates)),
    }
    return paths


def _scan_dir_for(decisions_tsv, out_dir: Path) -> Path:
    """``out_dir`` if it is a scan folder, else the scan folder below it matching the checksum."""
    if is_scan_dir(out_dir) or not out_dir.is_dir():
        return out_dir
    _cols, rows = read_tsv(decisions_tsv)
    shas = {r.get("sha256", "").lower() for r in rows} - {""}
    if len(shas) != 1:
        raise InputError(decisions_tsv, f"{out_dir} is not a scan results folder and the decisions "
                                        f"do not name exactly one input checksum")
    sha = shas.pop()
    matches = []
    for d in find_scan_dirs(out_dir):
        try:
            summary = read_json(d / "summary.json")
        except InputError:
            continue
        if str((summary.get("input") or {}).get("sha256", "")).lower() == sha:
            matches.append(d)
    if not matches:
        raise InputError(decisions_tsv, f"no scan results folder under {out_dir} is for the scan "
                                        f"these decisions were made on (sha256 {sha[:12]}...)")
    if len(matches) > 1:
        raise InputError(decisions_tsv, f"several results folders under {out_dir} are for this "
                                        f"scan ({', '.join(str(m) for m in matches)}); name one")
    return matches[0]


def decisions_text(decisions, summary, candidates) -> str:
    """The normalised decisions table (one row per decided candidate)."""
    sha = (summary.get("input") or {}).get("sha256", "")
    by_id = {as_int(c.get("candidate_id")): c for c in candidates}
    rows = []
    for cid in sorted(decisions):
        cand, dec = by_id.get(cid, {}), decisions[cid]
        rows.append({"sha256": sha, "candidate_id": cid, "lesion_id": as_int(cand.get("lesion_id")),
                     "decision": dec["decision"], "mimic_type": dec["mimic_type"],
                     "reviewer": dec["reviewer"], "time": dec["time"],
                     "x_mm": cand.get("x_mm", ""), "y_mm": cand.get("y_mm", ""),
                     "z_mm": cand.get("z_mm", "")})
    return tsv_text(DECISION_COLUMNS, rows)


def _size_bins(template) -> list[tuple[str, float, float]] | None:
    """Parse by_size keys like ``<2mm``, ``2-5mm``, ``>=5mm`` / ``lt2``... into bins; None if not."""
    if not isinstance(template, dict) or not template:
        return None
    bins = []
    for key in template:
        k = str(key).replace("mm", "").replace(" ", "").replace("_", "")
        try:
            if k.startswith("<="):
                bins.append((key, -math.inf, float(k[2:]) + 1e-9))
            elif k.startswith("<"):
                bins.append((key, -math.inf, float(k[1:])))
            elif k.startswith(">="):
                bins.append((key, float(k[2:]), math.inf))
            elif k.startswith(">"):
                bins.append((key, float(k[1:]) + 1e-9, math.inf))
            elif "-" in k:
                lo, hi = k.split("-", 1)
                bins.append((key, float(lo), float(hi)))
            else:
                return None
        except ValueError:
            return None
    return bins


def _counts(lesions, by_size_template=None) -> dict:
    """Counts in the summary.json layout for a list of lesion rows."""
    certainty = [r.get("certainty", "") for r in lesions]
    by_region = {reg: 0 for reg in REGIONS}
    for r in lesions:
        reg = r.get("region", "unknown")
        by_region[reg if reg in by_region else "unknown"] += 1
    bins = _size_bins(by_size_template) or [("<2mm", -math.inf, 2.0), ("2-5mm", 2.0, 5.0),
                                            ("5-10mm", 5.0, 10.0), (">=10mm", 10.0, math.inf)]
    by_size = {key: 0 for key, _lo, _hi in bins}
    for r in lesions:
        d = as_float(r.get("diameter_mm"))
        for key, lo, hi in bins:
            if math.isfinite(d) and lo <= d < hi:
                by_size[key] += 1
                break
    return {"total": len(lesions), "definite": certainty.count("definite"),
            "possible": certainty.count("possible"), "by_size": by_size, "by_region": by_region}


def review_state(scan_dir) -> dict | None:
    """The review summary of a scan folder (``summary_reviewed.json``), or None if unreviewed."""
    path = Path(scan_dir) / "summary_reviewed.json"
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except InputError:
        return None


def read_applied_decisions(scan_dir) -> dict[str, dict]:
    """Decisions applied earlier (``review_decisions.tsv``), keyed by candidate id as string."""
    path = Path(scan_dir) / "review_decisions.tsv"
    if not path.is_file():
        return {}
    try:
        _cols, rows = read_tsv(path)
    except InputError:
        return {}
    return {str(as_int(r.get("candidate_id"))): {"decision": r.get("decision", ""),
                                                 "mimic_type": r.get("mimic_type", ""),
                                                 "reviewer": r.get("reviewer", ""),
                                                 "time": r.get("time", "")} for r in rows}
