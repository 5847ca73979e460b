"""The reader's page: one self-contained ``report.html`` per scan result folder, for review.

The page needs no network and no server: pictures are base64 PNG (:mod:`.images`), the CSS and
JavaScript (``assets/report.css``, ``assets/report.js``) are inlined. Top-down it shows

1. a header with the scan, acquisition, preset, counts and burden category (``summary.json``),
2. an overview: axial minimum-intensity projections (slabs of 5-10 mm, at most 12) with every
   lesion ringed and numbered (click a number to jump to its card),
3. a card per candidate, accepted lesions first, then rejected candidates (most confident first)
   with the rule that rejected them; each with 24 mm axial / coronal / sagittal crops of the
   magnitude and, when the detector wrote them into the folder, SWI and filtered phase.

The reader decides in the page (keyboard: see :data:`KEYS`), saves ``decisions.tsv`` (a Blob
download) and :func:`microbleeds.review.decisions.apply_review` folds it into
``lesions_reviewed.tsv``; a page rebuilt after that shows the review and preloads its decisions.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..contract import COUNTED_REGIONS, REPORT_FILE, burden_category
from ..errors import InputError
from ..io.atomic import atomic_write_text
from ..io.derivative_columns import CANDIDATE_COLUMN_DOCS
from ..io.derivatives import result_path
from ..io.nifti import nifti_stem
from ..io.results import find_scan_dirs, is_scan_dir, load_results, result_lock
from .decisions import as_float, as_int, read_applied_decisions, review_state
from .images import FOV_MM, VIEW_LETTERS, VIEWS, crop_png, load_volumes, mosaic, read_mask
from .markup import asset, content_security_policy, escape, generated, number, script_json

MAX_CARDS = 300        # more candidates than this: the least confident rejected are listed only
CROP_SHOW_PX = 108     # shown size of a crop, CSS pixels
DECISIONS_FILE = "decisions.tsv"
"""Name of the file the page saves (the reader's download)."""

KEYS = {  # key -> (decision, mimic_type, legend); shown in the page legend
    "c": ("confirmed", "", "confirm: a microbleed"),
    "r": ("rejected", "", "reject: not a microbleed"),
    "v": ("rejected", "vein", "reject: vein"),
    "a": ("rejected", "calcification", "reject: calcification"),
    "o": ("rejected", "other", "reject: other mimic"),
}


# --------------------------------------------------------------------------- building
def build_report(scan_dir, out=None, radiological=True, max_cards=MAX_CARDS) -> Path:
    """Write ``report.html`` for one scan output folder and return its path.

    Parameters
    ----------
    scan_dir : path
        A scan's output folder (``summary.json``, ``candidates.tsv``, ``lesions.tsv``,
        ``mask.nii.gz``).
    out : path, optional
        Where to write (default ``scan_dir/report.html``).
    radiological : bool
        Radiological display (patient's right on the image's left); False for neurological.
    max_cards : int
        Cap on candidate cards (accepted lesions always get one; the least confident rejected
        candidates beyond the cap are listed in a table without pictures).
    """
    scan_dir = Path(scan_dir)
    if not scan_dir.is_dir() and not is_scan_dir(scan_dir):
        raise InputError(scan_dir, "scan results folder does not exist")
    if out is not None:
        return _build_report(scan_dir, out, radiological, max_cards)
    with result_lock(scan_dir):  # the folder is not swapped under the page being written
        return _build_report(scan_dir, out, radiological, max_cards)


def _build_report(scan_dir, out, radiological, max_cards) -> Path:
    res = load_results(scan_dir)
    warnings: list[str] = []
    mask = read_mask(scan_dir, warnings)
    volumes = load_volumes(res["summary"], scan_dir, mask, warnings)
    accepted, rejected = _cards(res)
    n_room = max(0, max_cards - len(accepted))
    overview = _overview(volumes, mask, accepted, radiological, warnings)
    page = _page(scan_dir, res, volumes, overview, accepted + rejected[:n_room], rejected[n_room:],
                 warnings, radiological)
    return atomic_write_text(Path(out) if out is not None else result_path(scan_dir, REPORT_FILE), page)


def build_reports(root, radiological=True) -> list[Path]:
    """Build ``report.html`` in every scan folder under ``root``; return their paths."""
    root = Path(root)
    dirs = [root] if is_scan_dir(root) else find_scan_dirs(root)
    if not dirs:
        raise InputError(root, "no scan results folders (summary.json + candidates.tsv) found")
    return [build_report(d, radiological=radiological) for d in dirs]


def _accepted(candidate) -> bool:
    return candidate.get("status", "") == "accepted" or as_int(candidate.get("lesion_id")) > 0


def _cards(res):
    """Candidates with their lesion's values: accepted by lesion id, rejected most confident first."""
    lesions = {as_int(r.get("lesion_id")): r for r in res["lesions"]}
    cards = []
    for cand in sorted(res["candidates"], key=lambda c: as_int(c.get("candidate_id"))):
        lid = as_int(cand.get("lesion_id"))
        row = dict(cand)
        if lid and lid in lesions:
            row.update({k: v for k, v in lesions[lid].items() if v != ""})
        row["_accepted"] = _accepted(cand)
        cards.append(row)
    accepted = sorted([c for c in cards if c["_accepted"]], key=lambda c: as_int(c.get("lesion_id")))
    rejected = sorted([c for c in cards if not c["_accepted"]],
                      key=lambda c: (-as_float(c.get("confidence"), -1), as_int(c["candidate_id"])))
    return accepted, rejected


def _overview(volumes, mask, accepted, radiological, warnings):
    """The mIP mosaic of the first image with the accepted lesions marked; None without an image."""
    if not volumes:
        return None
    marks = [{"lesion_id": as_int(c.get("lesion_id")), "candidate_id": as_int(c["candidate_id"]),
              "x": as_float(c.get("x_mm")), "y": as_float(c.get("y_mm")),
              "z": as_float(c.get("z_mm")), "d": as_float(c.get("diameter_mm"), 3.0)}
             for c in accepted]
    try:
        return mosaic(volumes[0], mask, marks, radiological)
    except Exception as exc:  # overview is a convenience; never lose the report over it
        warnings.append(f"overview could not be drawn ({exc})")
        return None


# --------------------------------------------------------------------------- header
def _stem(summary, scan_dir):
    return nifti_stem(str((summary.get("input") or {}).get("path") or scan_dir.name))


def _header(res, volumes, warnings, state, scan_dir):
    summary = res["summary"]
    counts = summary.get("counts") or {}
    by_region = counts.get("by_region") or {}
    cands = res["candidates"]
    n_acc = sum(1 for c in cands if _accepted(c))
    reasons: dict[str, int] = {}
    for c in cands:
        if not _accepted(c):
            reasons[c.get("reason") or "?"] = reasons.get(c.get("reason") or "?", 0) + 1
    bc = summary.get("burden_category", burden_category(as_int(counts.get("total"))))
    info = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _info_rows(summary, volumes))
    region_cells = "".join(
        f"<div class=stat><b>{escape(by_region.get(r, 0))}</b><span>{r}</span></div>"
        for r in COUNTED_REGIONS if not (r == "unknown" and not by_region.get(r))
    ) if isinstance(counts.get("by_region"), dict) else ""
    reason_text = ", ".join(f"{escape(k)} {v}" for k, v in sorted(reasons.items(), key=lambda t: -t[1]))
    note_html = "".join(f"<li>{escape(n)}</li>" for n in summary.get("notes") or [])
    warn_html = "".join(f"<li class=warn>{escape(w)}</li>" for w in list(summary.get("warnings") or []) + warnings)
    return f"""
<header class=top>
 <div class=title><h1>Cerebral microbleeds — {escape(_stem(summary, scan_dir))}</h1>
 <div class=dim>Automatic result: the algorithm proposes, a reader confirms. Counts below are
 <b>not reviewed</b> until a reader's decisions are applied.</div></div>
 <div class=headgrid>
  <table class=info>{info}</table>
  <div>
   <div class=stats>
    <div class='stat big'><b>{escape(counts.get('total', 'n/a'))}</b><span>lesions</span></div>
    <div class=stat><b>{escape(counts.get('definite', 'n/a'))}</b><span>definite</span></div>
    <div class=stat><b>{escape(counts.get('possible', 'n/a'))}</b><span>possible</span></div>
    <div class='stat big burden'><b>{escape(bc)}</b><span>burden category</span></div>
   </div>
   <div class=stats>{region_cells}</div>
   <div class=dim>{len(cands)} candidates: {n_acc} accepted, {len(cands) - n_acc} rejected
   {('(' + reason_text + ')') if reason_text else ''}</div>
   {_review_html(state)}
   <ul class=notes>{warn_html}{note_html}</ul>
  </div>
 </div>
</header>"""


def _info_rows(summary, volumes):
    """(label, HTML) rows of the scan table: input, acquisition, preset, software, images."""
    inp = summary.get("input") or {}
    acq = summary.get("acquisition") or {}
    pipe = summary.get("pipeline") or {}
    sw = summary.get("software") or {}
    vox = inp.get("voxel_size_mm") or []
    return [
        ("Input", f"<code>{escape(inp.get('path'))}</code>"),
        ("SHA-256", f"<code title='{escape(inp.get('sha256'))}'>{escape(str(inp.get('sha256'))[:16])}…</code>"),
        ("Sequence", escape(acq.get("sequence", "n/a"))),
        ("Field strength", number(acq.get("field_strength_t"), 1, " T")),
        ("TE", number(acq.get("echo_time_ms"), 1, " ms")),
        ("Voxel size", " × ".join(number(v, 2) for v in vox) + " mm" if vox else "n/a"),
        ("Matrix", " × ".join(escape(s) for s in inp.get("shape") or []) or "n/a"),
        ("Preset", f"{escape(pipe.get('name', 'n/a'))} <span class=dim>v{escape(pipe.get('version', '?'))}</span>"),
        ("Software", f"{escape(sw.get('name', 'microbleeds'))} {escape(sw.get('version', ''))}"),
        ("Images", ", ".join(escape(v.label) for v in volumes) or "none found"),
    ]


def _review_html(state):
    """The 'Reviewed by ...' line of an applied review (``summary_reviewed.json``), or ''."""
    if not state:
        return ""
    rv = state.get("review") or {}
    rc = state.get("counts") or {}
    return (
        f"<div class='reviewed'><b>Reviewed</b> by {escape(', '.join(rv.get('reviewers') or []))}"
        f" ({escape(rv.get('last_decision') or '')}): <b>{escape(rc.get('total'))}</b> confirmed "
        f"(burden category <b>{escape(state.get('burden_category'))}</b>; "
        f"{escape(rv.get('confirmed', 0))} confirmed, {escape(rv.get('rejected', 0))} rejected, "
        f"{escape(rv.get('added', 0))} added by the reader"
        + ("" if rv.get("complete") else
           f", <b class=warn>{escape(rv.get('unreviewed_lesions'))} lesion(s) not reviewed</b>")
        + ") — <code>summary_reviewed.json</code></div>")


# --------------------------------------------------------------------------- overview and cards
def _overview_html(overview, radiological):
    if overview is None:
        return "<section class=overview><h2>Overview</h2><p class=warn>No image to show.</p></section>"
    uri, W, H, panels, markers = overview
    svg = [f"<svg class=ovsvg viewBox='0 0 {W} {H}' preserveAspectRatio='xMidYMid meet'>"]
    left, right = ("R", "L") if radiological else ("L", "R")
    for x0, y0, w, h, z0, z1 in panels:
        svg.append(f"<text class=zl x='{x0 + 4}' y='{y0 + h - 5}'>z {z0:.0f}…{z1:.0f} mm</text>")
        svg.append(f"<text class=ol x='{x0 + 3}' y='{y0 + h / 2}'>{left}</text>"
                   f"<text class=ol x='{x0 + w - 12}' y='{y0 + h / 2}'>{right}</text>"
                   f"<text class=ol x='{x0 + w / 2 - 4}' y='{y0 + 14}'>A</text>")
    for lid, cid, x, y, r in markers:
        svg.append(f"<a href='#c{cid}' data-cid='{cid}' class=mk><circle cx='{x:.1f}' cy='{y:.1f}' "
                   f"r='{r:.1f}'/><text x='{x + r + 1:.1f}' y='{y - r + 2:.1f}'>{lid}</text></a>")
    svg.append("</svg>")
    conv = ("radiological convention: patient's right on the left" if radiological else
            "neurological convention: patient's right on the right")
    return f"""
<section class=overview><h2>Overview <span class=dim>— axial minimum-intensity projections,
 {len(panels)} slabs of ~{abs(panels[0][5] - panels[0][4]):.0f} mm, inferior → superior;
 {conv}; lesions ringed and numbered (click to open)</span></h2>
 <div class=ovwrap style='aspect-ratio:{W}/{H}'><img class=ovimg alt='overview' src='{uri}'>
 {''.join(svg)}</div></section>"""


def _card(c, volumes, radiological):
    cid = as_int(c["candidate_id"])
    lid = as_int(c.get("lesion_id"))
    acc = c["_accepted"]
    center = (as_float(c.get("x_mm")), as_float(c.get("y_mm")), as_float(c.get("z_mm")))
    if acc:
        title = f"Lesion {lid}"
        status = "<span class='badge acc'>accepted</span>"
    else:
        title = "Rejected candidate"
        status = f"<span class='badge rej'>rejected: {escape(c.get('reason') or '?')}</span>"
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in _facts(c, center))
    btns = "".join(f"<button type=button data-key='{k}' title='{escape(t)} (key {k})'>"
                   f"<kbd>{k}</kbd> {escape(t.split(': ')[1])}</button>" for k, (_d, _m, t) in KEYS.items())
    return f"""
<section class='card {"acc" if acc else "rej"}' id='c{cid}' data-cid='{cid}'
 data-status='{"accepted" if acc else "rejected"}' tabindex=-1>
 <div class=ch><span class=cid>#{cid}</span> <b>{title}</b> {status}
  <span class=dec data-role=dec>undecided</span></div>
 {_crops_html(c, center, volumes, radiological)}
 <dl>{dl}</dl>
 <div class=btns>{btns}<button type=button data-key='u' title='clear decision (key u)'><kbd>u</kbd> clear</button></div>
</section>"""


def _crops_html(c, center, volumes, radiological):
    """The card's table of crops (one row per image, one column per view), ringed."""
    if not (volumes and all(math.isfinite(v) for v in center)):
        return "<p class=dim>no pictures (image not available)</p>"
    diam = as_float(c.get("diameter_mm"))
    ring = min(92.0, max(2.5, (diam if math.isfinite(diam) else 3.0) * 1.4 + 1.5) / FOV_MM * 100)
    grid = ["<table class=views><tr><td></td>" + "".join(f"<th>{v}</th>" for v in VIEWS) + "</tr>"]
    for vol in volumes:
        cells = []
        for view in VIEWS:
            le, ri, to = VIEW_LETTERS[(view, radiological)]
            cells.append(
                f"<td><div class=v><img alt='{escape(vol.label)} {view}' width={CROP_SHOW_PX} "
                f"height={CROP_SHOW_PX} src='{crop_png(vol, center, view, radiological)}'>"
                f"<i class=ring style='width:{ring:.1f}%;height:{ring:.1f}%'></i>"
                f"<u class=l>{le}</u><u class=r>{ri}</u><u class=t>{to}</u></div></td>")
        grid.append(f"<tr><th class=rowh>{escape(vol.label)}</th>{''.join(cells)}</tr>")
    grid.append("</table>")
    return "".join(grid)


def _facts(c, center):
    """(label, HTML) facts of a card: size, confidence, certainty, region, contrast, position."""
    extra = [x for x in (c.get("lobe"), c.get("hemisphere")) if x and x != "n/a"]
    facts = [
        ("diameter", number(c.get("diameter_mm"), 1, " mm")),
        ("confidence", number(c.get("confidence"), 2)),
        ("certainty", escape(c.get("certainty") or "n/a")),
        ("region", escape(c.get("region") or "unknown")
         + (f" <span class=dim>({escape(', '.join(extra))})</span>" if extra else "")),
        ("contrast", number(c.get("contrast"), 2)),
        ("position", f"{number(center[0], 1)}, {number(center[1], 1)}, {number(center[2], 1)} mm RAS"),
    ]
    facts.extend(_phase_facts(c))
    if not c["_accepted"]:
        facts.insert(0, ("rejected by", f"<b>{escape(c.get('reason') or '?')}</b>"))
    return facts


DIPOLE_WORDS = CANDIDATE_COLUMN_DOCS["phase_sign"]["Levels"]  # the candidates.tsv sidecar's words


def _phase_facts(c):
    """With phase: the dipole's sign and, where measured, the dark core's phase coherence (near 0:
    dephased through; near 1: signal left, as in an iron-rich nucleus)."""
    sign = "" if c.get("phase_sign") is None else str(c["phase_sign"]).strip()
    facts = []
    if sign in DIPOLE_WORDS:
        facts.append(("dipole", escape(DIPOLE_WORDS[sign])))
    coherence = as_float(c.get("core_phase_coherence"))
    if math.isfinite(coherence):
        facts.append(("core phase", number(coherence, 2) + " <span class=dim>(0 dephased, 1 signal)</span>"))
    return facts


# --------------------------------------------------------------------------- page
def _page_data(scan_dir, res):
    """What the page's script needs (JSON in the page): checksum, keys, candidates, prior decisions."""
    inp = res["summary"].get("input") or {}
    return {
        "sha256": str(inp.get("sha256") or ""),
        "input_path": str(inp.get("path") or ""),
        "scan": _stem(res["summary"], scan_dir),
        "decisions_file": DECISIONS_FILE,
        "prior": read_applied_decisions(scan_dir),
        "keys": {k: [d, m] for k, (d, m, _t) in KEYS.items()},
        "candidates": [{"id": as_int(c.get("candidate_id")), "lesion_id": as_int(c.get("lesion_id")),
                        "status": c.get("status", ""), "x": c.get("x_mm", ""),
                        "y": c.get("y_mm", ""), "z": c.get("z_mm", "")}
                       for c in sorted(res["candidates"], key=lambda c: as_int(c.get("candidate_id")))],
    }


def _listed_html(listed_only):
    """The rejected candidates beyond the card cap, as a table without pictures."""
    if not listed_only:
        return ""
    trs = "".join(f"<tr><td>{as_int(c['candidate_id'])}</td><td>{escape(c.get('reason'))}</td>"
                  f"<td>{number(c.get('confidence'), 2)}</td><td>{number(c.get('diameter_mm'), 1)}</td></tr>"
                  for c in listed_only)
    return (f"<details class=listed><summary>{len(listed_only)} more rejected candidates "
            f"(least confident; no pictures, not reviewable here)</summary><table>"
            f"<tr><th>candidate</th><th>reason</th><th>confidence</th><th>diameter mm</th>"
            f"</tr>{trs}</table></details>")


def _page(scan_dir, res, volumes, overview, shown, listed_only, warnings, radiological):
    data = _page_data(scan_dir, res)
    data_json = script_json(data)
    script = "\n" + asset("report.js")
    n_acc = sum(c["_accepted"] for c in shown)
    acc_cards = "".join(_card(c, volumes, radiological) for c in shown if c["_accepted"])
    rej_cards = "".join(_card(c, volumes, radiological) for c in shown if not c["_accepted"])
    legend = "".join(f"<span><kbd>{k}</kbd> {escape(t)}</span>" for k, (_d, _m, t) in KEYS.items())
    conv = "radiological (R on the left)" if radiological else "neurological (R on the right)"
    header = _header(res, volumes, warnings, review_state(scan_dir), scan_dir)
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8>
{content_security_policy(script)}
<meta name=viewport content='width=device-width, initial-scale=1'>
<title>Microbleeds — {escape(data['scan'])}</title>
<style>
{asset("report.css")}</style></head>
<body>
{header}
{_overview_html(overview, radiological)}
<div class=toolbar id=toolbar>
 <label>Reviewer <input id=reviewer type=text placeholder='your name' autocomplete=off></label>
 <span id=progress class=prog></span>
 <label>Show <select id=filter><option value=all>all</option><option value=accepted>accepted</option>
  <option value=rejected>rejected</option><option value=undecided>undecided</option></select></label>
 <label><input id=advance type=checkbox checked> advance after a decision</label>
 <button type=button id=save><kbd>s</kbd> save {DECISIONS_FILE}</button>
 <a id=dl class=dim download='{DECISIONS_FILE}' href='#'>{DECISIONS_FILE}</a>
 <label class=dim title='load decisions saved earlier (same scan only)'>load <input id=load
  type=file accept='.tsv,.txt,text/tab-separated-values' style='width:90px'></label>
 <span id=msg class=msg></span>
 <div class=legend id=legend>{legend}
  <span><kbd>u</kbd> clear</span><span><kbd>j</kbd>/<kbd>→</kbd> next</span>
  <span><kbd>k</kbd>/<kbd>←</kbd> previous</span><span><kbd>n</kbd> next undecided</span>
  <span><kbd>m</kbd> rings on/off</span><span><kbd>s</kbd> save</span>
  <span><kbd>?</kbd> legend</span></div>
</div>
<main>
<h2>Accepted lesions <span class=dim>({n_acc}) — crops 24 mm, {conv}; sagittal: anterior on the left;
 ring = candidate</span></h2>
<div class=cards>{acc_cards or '<p class=dim>none</p>'}</div>
<h2>Rejected candidates <span class=dim>({len(shown) - n_acc} shown, most confident first) —
 the rule that rejected each is named</span></h2>
<div class=cards>{rej_cards or '<p class=dim>none</p>'}</div>
{_listed_html(listed_only)}
</main>
<footer class=dim>Generated {generated()} from <code>{escape(scan_dir)}</code>. Decisions are kept in this
browser (localStorage, keyed by the input's checksum) and saved as <code>{DECISIONS_FILE}</code>;
apply them with <code>microbleeds review apply {DECISIONS_FILE} OUTDIR</code>.</footer>
<script type=application/json id=mb-data>{data_json}</script>
<script>{script}</script>
</body></html>
"""
