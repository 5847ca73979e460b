"""Review decisions: read a reader's decisions TSV and fold it into new files beside the result.

The detector proposes, a reader confirms. The reader marks each candidate in ``report.html``
(:mod:`microbleeds.review.page`) and saves ``decisions.tsv``; :func:`apply_review` turns that
file into three NEW files in the scan's result folder, never touching the automatic ones:

- ``lesions_reviewed.tsv``: every row of ``lesions.tsv`` plus every candidate the reader
  confirmed although the algorithm rejected it, with the columns of ``lesions.tsv`` followed by
  ``candidate_id, reviewed_status, mimic_type, reviewer, review_time``.
  ``reviewed_status`` is ``confirmed`` (accepted by the algorithm, confirmed by the reader),
  ``rejected`` (accepted by the algorithm, rejected by the reader), ``added`` (rejected by the
  algorithm, confirmed by the reader) or ``unreviewed`` (accepted, no decision yet).
  Added lesions get new ``lesion_id`` values N+1, N+2, ... in candidate order (N = the largest
  automatic lesion id); they are not in ``labels.nii.gz``. Their size, contrast, confidence,
  certainty and region come from ``candidates.tsv`` where it has those columns (certainty
  ``possible`` and region ``unknown`` otherwise); ``region_source`` says ``review``.
- ``summary_reviewed.json``: ``summary.json`` with ``counts`` and ``burden_category`` recomputed
  on the reader-confirmed lesions (``confirmed`` + ``added``), the automatic values kept under
  ``"automatic"``, and a ``"review"`` block (reviewer(s), times, numbers decided / undecided,
  ``complete`` = every automatic lesion has a decision; rejected candidates left undecided stay
  rejected).
- ``review_decisions.tsv``: the decisions applied, normalised (one row per candidate), so the
  report can show them again.

Decisions carry the input's SHA-256; decisions for another scan are refused. Coordinates are
scanner RAS+ mm, diameters mm.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from ..contract import (
    COUNTED_REGIONS,
    DECISION_COLUMNS,
    LESION_COLUMNS,
    MIMIC_TYPES,
    REVIEW_COLUMNS,
    REVIEW_DECISIONS_FILE,
    REVIEWED_LESIONS_FILE,
    REVIEWED_SUMMARY_FILE,
    SIZE_BINS_MM,
    SUMMARY_FILE,
    burden_category,
)
from ..errors import InputError
from ..io.atomic import atomic_write_files
from ..io.derivatives import result_path
from ..io.results import find_scan_dirs, is_scan_dir, load_results, result_lock
from ..io.tables import json_text, read_json, read_tsv, read_tsv_rows, tsv_text

COORD_TOLERANCE_MM = 1.0
"""A candidate whose centre moved more than this since the review is not the one the reader saw
(results re-run with other parameters), mm."""

_UNDECIDED = ("", "undecided", "none")
_SPELLINGS = {"confirm": "confirmed", "confirmed": "confirmed", "cmb": "confirmed",
              "reject": "rejected", "rejected": "rejected", "mimic": "rejected"}


# --------------------------------------------------------------------------- table cells
def as_int(value, default=0) -> int:
    """A table cell as an integer (``"3"``, ``"3.0"``); ``default`` when it is not a number."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def as_float(value, default=math.nan) -> float:
    """A table cell as a float; ``default`` when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _one_line(text: str) -> str:
    """Free text as one TSV cell: tabs and line breaks become spaces."""
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


# --------------------------------------------------------------------------- reading decisions
class _BadRow(Exception):
    """A decisions row refused; the message names the problem (the caller adds file and line)."""


def read_decision_rows(decisions_tsv) -> tuple[list[str], list[tuple[int, dict]]]:
    """The decisions table as (columns, [(line number, row)]); blank lines are skipped.

    Raises InputError naming the line when a row has fewer or more cells than the header.
    """
    return read_tsv_rows(decisions_tsv, strict=True)


def read_decisions(decisions_tsv, results: dict) -> dict[int, dict]:
    """Read and validate a decisions file against one scan's results (:func:`load_results`).

    Returns ``{candidate_id: {"decision", "mimic_type", "reviewer", "time"}}``; when a candidate
    appears more than once the last row wins (a reader changing their mind), and a row saying
    ``undecided`` (or an empty decision) withdraws an earlier one.
    """
    path = Path(decisions_tsv)
    columns, rows = read_decision_rows(path)
    missing = [c for c in ("sha256", "candidate_id", "decision") if c not in columns]
    if missing:
        raise InputError(path, f"not a decisions file: missing column(s) {', '.join(missing)} "
                               f"(expected {', '.join(DECISION_COLUMNS[:7])})")
    expected = str(_input(results["summary"]).get("sha256") or "").lower()
    if not expected:
        raise InputError(results["dir"] / SUMMARY_FILE, "no input.sha256 to check decisions against")
    candidates = {as_int(c.get("candidate_id"), -1): c for c in results["candidates"]}
    decisions: dict[int, dict] = {}
    for line, row in rows:
        try:
            _check_scan(row, expected, results)
            cid = _check_candidate(row, candidates, results["dir"])
            decision = _decision(row)
        except _BadRow as exc:
            raise InputError(path, f"line {line}: {exc}") from None
        if decision is None:
            decisions.pop(cid, None)
        else:
            decisions[cid] = decision
    return decisions


def _input(summary) -> dict:
    return summary.get("input") or {}


def _check_scan(row, expected, results):
    """Refuse a row made on another scan (its input checksum differs)."""
    sha = row.get("sha256", "").lower()
    if sha != expected:
        in_path = _input(results["summary"]).get("path", "?")
        raise _BadRow(f"decisions are for a different scan (sha256 {sha[:12] or 'empty'}...); "
                      f"{results['dir']} holds results for {in_path} (sha256 {expected[:12]}...)")


def _check_candidate(row, candidates, scan_dir) -> int:
    """The row's candidate id; refused when unknown, or when its lesion id or centre changed."""
    cid = as_int(row.get("candidate_id"), -1)
    if cid not in candidates:
        raise _BadRow(f"unknown candidate_id {row.get('candidate_id')!r} (not in {scan_dir / 'candidates.tsv'})")
    cand = candidates[cid]
    if row.get("lesion_id", "") != "" and as_int(row["lesion_id"], -1) != as_int(cand.get("lesion_id"), 0):
        raise _BadRow(f"candidate {cid} has lesion_id {row['lesion_id']} in the decisions but "
                      f"{cand.get('lesion_id', '0')} in candidates.tsv (results re-run since the review?)")
    for axis in ("x_mm", "y_mm", "z_mm"):
        got, want = as_float(row.get(axis)), as_float(cand.get(axis))
        if math.isfinite(got) and math.isfinite(want) and abs(got - want) > COORD_TOLERANCE_MM:
            raise _BadRow(f"candidate {cid} {axis} is {got:g} in the decisions but {want:g} in "
                          f"candidates.tsv (results re-run since the review?)")
    return cid


def _decision(row) -> dict | None:
    """The row's decision, normalised; None for 'undecided'."""
    decision = row.get("decision", "").lower()
    if decision in _UNDECIDED:
        return None
    if decision not in _SPELLINGS:
        raise _BadRow(f"decision {row.get('decision')!r} is not one of confirmed, rejected")
    decision = _SPELLINGS[decision]
    mimic = row.get("mimic_type", "").lower()
    if mimic in ("none", "n/a"):
        mimic = ""
    if mimic not in MIMIC_TYPES:
        raise _BadRow(f"mimic_type {row.get('mimic_type')!r} is not one of vein, calcification, other (or empty)")
    reviewer = _one_line(row.get("reviewer", ""))
    if not reviewer:
        raise _BadRow("reviewer name is empty; the decision must name who made it")
    return {"decision": decision, "mimic_type": "" if decision == "confirmed" else mimic,
            "reviewer": reviewer, "time": _one_line(row.get("time", ""))}


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
    read_decision_rows(decisions_tsv)  # a malformed table is refused before anything else
    scan_dir = _scan_dir_for(decisions_tsv, Path(out_dir))
    if not scan_dir.is_dir() and not is_scan_dir(scan_dir):
        raise InputError(scan_dir, "scan results folder does not exist")
    with result_lock(scan_dir):
        return _apply(decisions_tsv, scan_dir)


def _apply(decisions_tsv, scan_dir) -> dict[str, Path]:
    results = load_results(scan_dir)
    decisions = read_decisions(decisions_tsv, results)
    summary = results["summary"]
    candidates = sorted(results["candidates"], key=lambda c: as_int(c.get("candidate_id")))
    lesion_cols = list(results["lesion_columns"]) or list(LESION_COLUMNS)
    rows = _automatic_rows(results["lesions"], candidates, decisions)
    first_added = max((as_int(r.get("lesion_id")) for r in results["lesions"]), default=0) + 1
    rows += _added_rows(candidates, decisions, lesion_cols, first_added)
    columns = lesion_cols + [c for c in REVIEW_COLUMNS if c not in lesion_cols]
    reviewed = _reviewed_summary(summary, rows, decisions, len(candidates), decisions_tsv)
    files = {
        REVIEWED_LESIONS_FILE: tsv_text(rows, columns).encode(),
        REVIEWED_SUMMARY_FILE: json_text(reviewed).encode(),
        REVIEW_DECISIONS_FILE: decisions_text(decisions, summary, candidates).encode(),
    }
    paths = {name: result_path(scan_dir, name) for name in files}  # a folder, or a BIDS prefix
    atomic_write_files(paths[REVIEWED_LESIONS_FILE].parent, {paths[name].name: data for name, data in files.items()})
    written = paths
    return {"lesions": written[REVIEWED_LESIONS_FILE], "summary": written[REVIEWED_SUMMARY_FILE],
            "decisions": written[REVIEW_DECISIONS_FILE]}


def _scan_dir_for(decisions_tsv, out_dir: Path) -> Path:
    """``out_dir`` if it is a scan folder, else the scan folder below it matching the checksum."""
    if is_scan_dir(out_dir) or not out_dir.is_dir():
        return out_dir
    _cols, rows = read_decision_rows(decisions_tsv)
    shas = {r.get("sha256", "").lower() for _line, r in rows} - {""}
    if len(shas) != 1:
        raise InputError(decisions_tsv, f"{out_dir} is not a scan results folder and the decisions "
                                        f"do not name exactly one input checksum")
    sha = shas.pop()
    matches = [d for d in find_scan_dirs(out_dir) if _input_sha(d) == sha]
    if not matches:
        raise InputError(decisions_tsv, f"no scan results folder under {out_dir} is for the scan "
                                        f"these decisions were made on (sha256 {sha[:12]}...)")
    if len(matches) > 1:
        raise InputError(decisions_tsv, f"several results folders under {out_dir} are for this "
                                        f"scan ({', '.join(str(m) for m in matches)}); name one")
    return matches[0]


def _input_sha(scan_dir) -> str:
    """The input checksum recorded in a scan folder's summary.json ('' when unreadable)."""
    try:
        summary = read_json(result_path(scan_dir, SUMMARY_FILE))
    except InputError:
        return ""
    return str(_input(summary).get("sha256", "")).lower()


def _automatic_rows(lesions, candidates, decisions) -> list[dict]:
    """Every automatic lesion (by lesion id) with the reader's decision on its candidate."""
    by_id = {as_int(r.get("lesion_id")): r for r in lesions}
    cand_by_lesion = {as_int(c.get("lesion_id")): c for c in candidates if as_int(c.get("lesion_id")) > 0}
    rows = []
    for lid in sorted(by_id):
        cand = cand_by_lesion.get(lid)
        cid = as_int(cand.get("candidate_id")) if cand else None
        row = dict(by_id[lid], candidate_id="" if cid is None else cid)
        row.update(_review_cells(decisions.get(cid)))
        rows.append(row)
    return rows


def _review_cells(decision) -> dict:
    if decision is None:
        return {"reviewed_status": "unreviewed", "mimic_type": "", "reviewer": "", "review_time": ""}
    return {"reviewed_status": decision["decision"], "mimic_type": decision["mimic_type"],
            "reviewer": decision["reviewer"], "review_time": decision["time"]}


def _added_rows(candidates, decisions, lesion_cols, first_id) -> list[dict]:
    """Candidates the algorithm rejected and the reader confirmed, as lesions ``first_id``, ..."""
    rows = []
    for cand in candidates:
        decision = decisions.get(as_int(cand.get("candidate_id")))
        if as_int(cand.get("lesion_id")) > 0 or decision is None or decision["decision"] != "confirmed":
            continue
        row = {c: cand.get(c, "") for c in lesion_cols}
        row["lesion_id"] = first_id + len(rows)
        row["certainty"] = row.get("certainty") or "possible"
        if row.get("region", "") not in COUNTED_REGIONS:
            row["region"] = "unknown"
        for col in ("lobe", "hemisphere"):
            row[col] = row.get(col) or "n/a"
        row["region_source"] = cand.get("region_source") or "review"
        row.update(_review_cells(decision), candidate_id=as_int(cand.get("candidate_id")), reviewed_status="added")
        rows.append(row)
    return rows


def _reviewed_summary(summary, rows, decisions, n_candidates, decisions_tsv) -> dict:
    """summary.json with counts and burden of the reader-confirmed lesions and a review block."""
    confirmed = [r for r in rows if r["reviewed_status"] in ("confirmed", "added")]
    reviewed = copy.deepcopy(summary)
    reviewed["automatic"] = {"counts": summary.get("counts"), "burden_category": summary.get("burden_category")}
    reviewed["counts"] = _counts(confirmed, (summary.get("counts") or {}).get("by_size"))
    reviewed["burden_category"] = burden_category(len(confirmed))
    reviewed["review"] = _review_block(rows, decisions, n_candidates, decisions_tsv)
    notes = list(reviewed.get("notes") or [])
    n_unreviewed = reviewed["review"]["unreviewed_lesions"]
    if n_unreviewed:
        notes.append(f"review incomplete: {n_unreviewed} automatic lesion(s) without a decision are not counted")
    reviewed["notes"] = notes
    return reviewed


def _review_block(rows, decisions, n_candidates, decisions_tsv) -> dict:
    times = sorted(d["time"] for d in decisions.values() if d["time"])
    status = [r["reviewed_status"] for r in rows]
    return {
        "decisions_file": str(Path(decisions_tsv)),
        "reviewers": sorted({d["reviewer"] for d in decisions.values()}),
        "first_decision": times[0] if times else None,
        "last_decision": times[-1] if times else None,
        "candidates": n_candidates,
        "decided": len(decisions),
        "undecided": n_candidates - len(decisions),
        "unreviewed_lesions": status.count("unreviewed"),
        "confirmed": status.count("confirmed"),
        "rejected": status.count("rejected"),
        "added": status.count("added"),
        "mimics": {m: sum(d["mimic_type"] == m for d in decisions.values()) for m in MIMIC_TYPES if m},
        "complete": "unreviewed" not in status,
        "counts_are": "reader-confirmed lesions only (reviewed_status confirmed or added)",
    }


def decisions_text(decisions, summary, candidates) -> str:
    """The normalised decisions table (one row per decided candidate), as TSV text."""
    sha = _input(summary).get("sha256", "")
    by_id = {as_int(c.get("candidate_id")): c for c in candidates}
    rows = []
    for cid in sorted(decisions):
        cand, dec = by_id.get(cid, {}), decisions[cid]
        rows.append({"sha256": sha, "candidate_id": cid, "lesion_id": as_int(cand.get("lesion_id")),
                     "decision": dec["decision"], "mimic_type": dec["mimic_type"],
                     "reviewer": dec["reviewer"], "time": dec["time"],
                     "x_mm": cand.get("x_mm", ""), "y_mm": cand.get("y_mm", ""), "z_mm": cand.get("z_mm", "")})
    return tsv_text(rows, DECISION_COLUMNS)


# --------------------------------------------------------------------------- counts
def _size_bins(template) -> list[tuple[str, float, float]] | None:
    """Bins ``(key, low, high)`` (mm) from by_size keys like ``<2mm``, ``2-5mm``, ``>=5mm``, so the
    reviewed counts use the bins of the automatic summary; None when a key is not such a range."""
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
    by_region = {reg: 0 for reg in COUNTED_REGIONS}
    for r in lesions:
        reg = r.get("region", "unknown")
        by_region[reg if reg in by_region else "unknown"] += 1
    bins = _size_bins(by_size_template) or [(label, lo, hi) for lo, hi, label in SIZE_BINS_MM]
    by_size = {key: 0 for key, _lo, _hi in bins}
    for r in lesions:
        d = as_float(r.get("diameter_mm"))
        for key, lo, hi in bins:
            if math.isfinite(d) and lo <= d < hi:
                by_size[key] += 1
                break
    return {"total": len(lesions), "definite": certainty.count("definite"),
            "possible": certainty.count("possible"), "by_size": by_size, "by_region": by_region}


# --------------------------------------------------------------------------- reading a review back
def review_state(scan_dir) -> dict | None:
    """The review summary of a scan folder (``summary_reviewed.json``), or None if unreviewed."""
    path = result_path(scan_dir, REVIEWED_SUMMARY_FILE)
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except InputError:
        return None


def read_applied_decisions(scan_dir) -> dict[str, dict]:
    """Decisions applied earlier (``review_decisions.tsv``), keyed by candidate id as string."""
    path = result_path(scan_dir, REVIEW_DECISIONS_FILE)
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
