"""The cohort: ``cohort.tsv`` (+ ``cohort.json``, its columns) and ``cohort.html`` over every scan of a run.

One row per scan: the automatic counts (total, certainty, region), the burden category, the review
state (``none``, ``partial``, ``complete``) with the reader-confirmed counts, and a relative link to
the scan's ``report.html``. The page's CSS and JavaScript (sortable columns) are ``assets/cohort.*``.
"""

from __future__ import annotations

from pathlib import Path

from ..contract import BURDEN_CATEGORIES, COUNTED_REGIONS, REPORT_FILE
from ..io.atomic import atomic_write_text
from ..io.derivatives import result_path
from ..io.results import find_scan_dirs, load_results
from ..io.tables import json_text, tsv_text
from .decisions import review_state
from .markup import asset, content_security_policy, escape, generated, relative_href

COHORT_TSV_FILE = "cohort.tsv"
COHORT_HTML_FILE = "cohort.html"
COHORT_COLUMNS = (
    "scan", "participant_id", "session_id", "input", "sha256", "sequence", "field_strength_t", "echo_time_ms", "preset",
    "candidates", "total", "definite", "possible", *COUNTED_REGIONS,
    "burden_category", "review", "reviewers", "confirmed_total", "confirmed_definite",
    "confirmed_possible", *(f"confirmed_{r}" for r in COUNTED_REGIONS), "reviewed_burden_category", "report",
)
"""Columns of ``cohort.tsv`` (field strength in T, echo time in ms)."""
COHORT_SIDECAR = {
    "scan": {"Description": "The scan's results, relative to this folder (a BIDS prefix or a result folder)"},
    "participant_id": {"Description": "BIDS participant (n/a: the file name has none)"},
    "session_id": {"Description": "BIDS session (n/a: none)"},
    "input": {"Description": "The input file, relative to the scan's results"},
    "sha256": {"Description": "Checksum of the input (of the echoes' checksums for one file per echo)"},
    "sequence": {"Description": "Sequence label of the preset"},
    "field_strength_t": {"Description": "Main field (sidecar, else preset)", "Units": "T"},
    "echo_time_ms": {"Description": "Echo time(s) (sidecar, header, else preset)", "Units": "ms"},
    "preset": {"Description": "Parameter preset used"},
    "candidates": {"Description": "Candidate foci considered"},
    "total": {"Description": "Microbleeds found (automatic)"},
    "definite": {"Description": "Of which definite"}, "possible": {"Description": "Of which possible"},
    **{r: {"Description": f"Automatic microbleeds in the {r} MARS region"} for r in COUNTED_REGIONS},
    "burden_category": {"Description": "Burden category of the automatic count",
                        "Levels": {c: f"{c} microbleeds" for c in BURDEN_CATEGORIES}},
    "review": {"Description": "Reader's review", "Levels": {"none": "not reviewed", "partial": "some lesions "
                                                            "undecided", "complete": "every lesion decided"}},
    "reviewers": {"Description": "Who reviewed"},
    "confirmed_total": {"Description": "Microbleeds after the review"},
    "confirmed_definite": {"Description": "Of which definite"}, "confirmed_possible": {"Description": "Possible"},
    **{f"confirmed_{r}": {"Description": f"Reviewed microbleeds in the {r} MARS region"} for r in COUNTED_REGIONS},
    "reviewed_burden_category": {"Description": "Burden category after the review"},
    "report": {"Description": "The scan's review page, relative to this folder"},
}
"""``cohort.json``: what each column of ``cohort.tsv`` means."""
FLOAT_FORMAT = ".6g"
"""Numbers of cohort.tsv (field strength, echo time) in their shortest form: 3, not 3.0000."""

SHOWN_COLUMNS = ("scan", "sequence", "field_strength_t", "preset", "candidates", "total", "definite", "possible",
                 *COUNTED_REGIONS, "burden_category", "review", "reviewers", "confirmed_total",
                 "reviewed_burden_category")
"""Columns of the cohort page's table."""
HEADINGS = {"field_strength_t": "B0 (T)", "burden_category": "burden", "confirmed_total": "confirmed",
            "reviewed_burden_category": "reviewed burden", "infratentorial": "infratent."}


def write_cohort(results_root) -> dict[str, Path]:
    """Write ``cohort.tsv`` and ``cohort.html`` in ``results_root`` over all scan folders below it.

    Returns ``{"tsv": path, "html": path}``.
    """
    root = Path(results_root)
    rows = [_cohort_row(root, d) for d in find_scan_dirs(root)]
    tsv_path = atomic_write_text(root / COHORT_TSV_FILE, tsv_text(rows, COHORT_COLUMNS, FLOAT_FORMAT))
    atomic_write_text(root / "cohort.json", json_text({c: COHORT_SIDECAR.get(c, {"Description": c})
                                                      for c in COHORT_COLUMNS}))
    html_path = atomic_write_text(root / COHORT_HTML_FILE, _cohort_page(root, rows))
    return {"tsv": tsv_path, "html": html_path}


def _cohort_row(root: Path, scan_dir: Path) -> dict:
    """One scan's row: input, acquisition, automatic counts, review state, report link."""
    res = load_results(scan_dir)
    s = res["summary"]
    inp, acq, counts = s.get("input") or {}, s.get("acquisition") or {}, s.get("counts") or {}
    reg = counts.get("by_region") or {}
    row = {
        "scan": scan_dir.relative_to(root).as_posix(),
        "participant_id": (s.get("bids") or {}).get("participant_id") or "n/a",
        "session_id": (s.get("bids") or {}).get("session_id") or "n/a",
        "input": inp.get("path", ""), "sha256": inp.get("sha256", ""),
        "sequence": acq.get("sequence", ""), "field_strength_t": acq.get("field_strength_t", ""),
        "echo_time_ms": acq.get("echo_time_ms", ""),
        "preset": (s.get("pipeline") or {}).get("name", ""),
        "candidates": s.get("candidates", len(res["candidates"])),
        "total": counts.get("total", ""), "definite": counts.get("definite", ""),
        "possible": counts.get("possible", ""),
        "burden_category": s.get("burden_category", ""),
        "report": result_path(scan_dir, REPORT_FILE).relative_to(root).as_posix()
        if result_path(scan_dir, REPORT_FILE).is_file() else "",
    }
    for r in COUNTED_REGIONS:
        row[r] = reg.get(r, 0) if reg else ""
    row.update(_review_cells(review_state(scan_dir)))
    return row


def _review_cells(state) -> dict:
    """Review state and reader-confirmed counts from ``summary_reviewed.json`` (None: no review)."""
    if state is None:
        return {"review": "none"}
    rv, rc = state.get("review") or {}, state.get("counts") or {}
    rreg = rc.get("by_region") or {}
    cells = {
        "review": "complete" if rv.get("complete") else "partial",
        "reviewers": ";".join(rv.get("reviewers") or []),
        "confirmed_total": rc.get("total", ""),
        "confirmed_definite": rc.get("definite", ""),
        "confirmed_possible": rc.get("possible", ""),
        "reviewed_burden_category": state.get("burden_category", ""),
    }
    cells.update({"confirmed_" + r: rreg.get(r, 0) for r in COUNTED_REGIONS})
    return cells


def _burden_text(rows):
    """'automatic (n scans) — 0: a, 1: b, ...; reader-confirmed (...) — ...' for the page."""
    def dist(key, subset):
        counts = dict.fromkeys(BURDEN_CATEGORIES, 0)
        for r in subset:
            v = str(r.get(key) or "?")
            counts[v] = counts.get(v, 0) + 1
        return ", ".join(f"{k}: {v}" for k, v in counts.items())

    done = [r for r in rows if r.get("review") == "complete"]
    return (f"automatic ({len(rows)} scans) — {dist('burden_category', rows)}; reader-confirmed "
            f"({len(done)} completely reviewed scans) — "
            f"{dist('reviewed_burden_category', done) if done else 'none yet'}")


def _table_row(r) -> str:
    cells = []
    for c in SHOWN_COLUMNS:
        v = r.get(c, "")
        v = f"<a href='{relative_href(r['report'])}'>{escape(v)}</a>" if c == "scan" and r.get("report") else escape(v)
        cls = f" class='rv-{escape(r.get('review'))}'" if c == "review" else ""
        cells.append(f"<td{cls}>{v}</td>")
    return "<tr>" + "".join(cells) + "</tr>"


def _cohort_page(root, rows):
    n = len(rows)
    n_rev = sum(r.get("review") == "complete" for r in rows)
    n_part = sum(r.get("review") == "partial" for r in rows)
    heads = "".join(f"<th>{escape(HEADINGS.get(c, c))}</th>" for c in SHOWN_COLUMNS)
    script = "\n" + asset("cohort.js")
    return f"""<!DOCTYPE html><html lang=en><head><meta charset=utf-8>
{content_security_policy(script)}<title>Microbleeds cohort</title>
<style>{asset("cohort.css")}</style></head><body><h1>Cerebral microbleeds — cohort</h1>
<p>{n} scan(s) under <code>{escape(root)}</code>; review complete for {n_rev}, partial for {n_part},
none for {n - n_rev - n_part}.<br>Burden categories: {escape(_burden_text(rows))}.<br> <span class=dim>Counts are automatic unless under “confirmed”. Click a column to
sort; click a scan for its report. Table: <code>{COHORT_TSV_FILE}</code>. Generated {generated()}.</span></p>
<table id=t><thead><tr>{heads}</tr></thead>
<tbody>{''.join(_table_row(r) for r in rows)}</tbody></table>
<script>{script}</script></body></html>
"""
