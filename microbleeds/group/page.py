"""The group page (``group_report.html``): self-contained HTML, read top-down — who was analysed
and who was excluded, the models (ratios, 95 % intervals, P values, the family chosen and why),
the figures, prevalence by bins, and the group table linking to each scan's review page.

Figures are PNG ``data:`` URIs; the only script is the review room's sortable-table script,
allowed by its hash in the page's Content-Security-Policy (:mod:`microbleeds.review.markup`).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..contract import BURDEN_CATEGORIES
from ..review.markup import asset, content_security_policy, escape, generated, relative_href
from . import figures
from .models import term_variables
from .table import ARIA_H_CATEGORIES

SHOWN_COLUMNS = ("participant_id", "session_id", "acquisition", "run", "cmb_total", "cmb_definite", "cmb_possible",
                 "cmb_lobar", "cmb_deep", "cmb_infratentorial", "burden_itp", "burden_aria_h", "review_state",
                 "cmb_total_reviewed", "phase_sign_confidence", "region_source", "n_warnings", "excluded",
                 "exclusion_reason")
"""Columns of the page's table (the TSV has them all); the covariates of the models follow."""
PAGE_CSS = """h2{margin-top:28px;border-bottom:1px solid #ccd;padding-bottom:2px}
figure{display:inline-block;margin:4px 12px 12px 0;vertical-align:top}figure img{border:1px solid #e2e4ea}
figcaption{font-size:12px;color:#556;max-width:420px}tr.ex td{color:#8a8f9c;font-style:italic}table.m td:first-child{font-family:monospace}
.err{color:#b00020}.sel{font-weight:600}"""


def p_text(p) -> str:
    """A P value as the study printed it: ``<0.001`` or three decimals."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_phrase(p) -> str:
    """``P < 0.001`` or ``P = 0.012``."""
    text = p_text(p)
    return f"P {text[0]} {text[1:]}" if text.startswith("<") else f"P = {text}"


def _ratio(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def _coef_table(model: dict) -> str:
    if not model:
        return ""
    name = model["ratio"]
    rows = "".join(
        f"<tr><td>{escape(c['term'])}</td><td>{_ratio(c['ratio'])}</td>"
        f"<td>{_ratio(c['ci_low'])} – {_ratio(c['ci_high'])}</td><td>{p_text(c['p'])}</td></tr>"
        for c in model["coefficients"] if c["term"] != "Intercept" or len(model["coefficients"]) == 1)
    extra = f"; NB2 alpha {model['negbin_alpha']:.3g}" if model.get("negbin_alpha") is not None else ""
    warn = "".join(f"<br><span class=err>warning: {escape(w)}</span>" for w in model.get("warnings") or [])
    if not model.get("converged", True):
        warn += "<br><span class=err>the fit did not converge</span>"
    return (f"<p><code>{escape(model['formula'])}</code> — {escape(model['family'])}, n = {model['n']}{extra}{warn}</p>"
            f"<table class=m><thead><tr><th>term</th><th>{escape(name)}</th><th>95 % CI</th><th>P</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _dropped_text(cc: dict) -> str:
    if not cc["n_dropped"]:
        return f"{cc['n_used']} participants, none dropped for missing covariates."
    who = "; ".join(f"{d.get('participant_id') or d.get('scan')} (missing {', '.join(d['missing'])})"
                    for d in cc["dropped"])
    return f"{cc['n_used']} participants (complete cases); {cc['n_dropped']} dropped: {escape(who)}."


def _two_step_html(ts: dict) -> str:
    unis = {u["formula"].split("~", 1)[1].strip(): u for u in ts["univariate"]}
    rows = []
    for s in ts["screen"]:
        u = unis.get(s["term"])
        coefs = [c for c in (u or {}).get("coefficients", []) if c["term"] != "Intercept"]
        ratio = "; ".join(f"{escape(c['term'])} {_ratio(c['ratio'])} ({_ratio(c['ci_low'])}–{_ratio(c['ci_high'])})"
                          for c in coefs)
        role = "adjuster" if s["adjuster"] else ("selected" if s["selected"] else "")
        rows.append(f"<tr class='{'sel' if s['selected'] else ''}'><td>{escape(s['term'])}</td><td>{ratio}</td>"
                    f"<td>{p_text(s['p'])}</td><td>{role}</td></tr>")
    chosen = ", ".join(ts["selected"]) or "none"
    return (f"<h3>Two steps: univariate screen at P &lt; {ts['alpha']:g}, then multivariate adjusted for "
            f"{escape(', '.join(ts['adjust_for']) or 'nothing')}</h3>"
            f"<table class=m><thead><tr><th>term</th><th>univariate ratio (95 % CI)</th><th>P</th><th></th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table><p>Selected: {escape(chosen)}.</p>"
            f"<h3>Multivariate model</h3>{_coef_table(ts['multivariate'])}")


def _analysis_html(a: dict, fit: dict) -> str:
    parts = [f"<h2>Outcome <code>{escape(a['outcome'])}</code></h2><p>{_dropped_text(a['complete_cases'])}</p>"]
    choice = a.get("family_choice")
    if choice:
        disp = choice.get("pearson_dispersion")
        disp_text = f"Pearson dispersion {disp:.2f}; " if isinstance(disp, float) and math.isfinite(disp) else ""
        parts.append(f"<p>Family: <b>{escape(choice.get('choice'))}</b> — {disp_text}{escape(choice.get('reason', ''))}"
                     " (decided on the model with every covariate, used for every count model of this outcome)</p>")
    parts += [f"<p class=err>{escape(e)}</p>" for e in a.get("errors") or []]
    if a.get("main"):
        parts.append("<h3>Model with every covariate</h3>" + _coef_table(a["main"]))
    if a.get("two_step"):
        parts.append(_two_step_html(a["two_step"]))
    if a.get("presence"):
        parts.append("<h3>Presence (any CMB): logistic regression</h3>" + _coef_table(a["presence"]))
    parts.append(_scatter_html(a, fit))
    return "\n".join(parts)


def _term_p(a: dict, variable: str):
    ts = a.get("two_step")
    if ts:
        for s in ts["screen"]:
            if variable in term_variables(s["term"]):
                return s["p"], "univariate"
    main = a.get("main") or {}
    for term, p in (main.get("term_p") or {}).items():
        if variable in term_variables(term):
            return p, "model"
    return None, ""


def _figure_html(uri: str, caption: str, alt: str) -> str:
    return f"<figure><img src='{uri}' alt='{escape(alt)}'><figcaption>{escape(caption)}</figcaption></figure>"


def _scatter_html(a: dict, fit: dict) -> str:
    data = fit.get("data")
    if data is None or data.empty:
        return ""
    out = []
    for var in fit.get("variables") or []:
        p, kind = _term_p(a, var)
        title = f"{a['outcome']} vs {var}" + (f" ({kind} {p_phrase(p)})" if p is not None else "")
        out.append(_figure_html(figures.scatter(data, a["outcome"], var, title), title + "; open circles: CMB-free",
                                f"scatter of {a['outcome']} against {var}"))
    return "<div class=figs>" + "".join(out) + "</div>" if out else ""


def _prevalence_html(rows: list) -> str:
    if not rows:
        return ""
    groups = {}
    for r in rows:
        groups.setdefault((r["outcome"], r["variable"]), []).append(r)
    figs, tables = [], []
    for (outcome, var), rs in groups.items():
        title = f"proportion with {outcome} > 0 by {var}"
        figs.append(_figure_html(figures.prevalence(rs, title), title + " (exact 95 % CI)", title))
        body = "".join(f"<tr><td>{escape(r['bin'])}</td><td>{r['with_cmb']}/{r['n']}</td>"
                       f"<td>{_pct(r['proportion'])}</td><td>{_pct(r['ci_low'])} – {_pct(r['ci_high'])}</td></tr>"
                       for r in rs)
        tables.append(f"<table class=m><caption>{escape(title)}</caption><thead><tr><th>{escape(var)}</th>"
                      f"<th>with CMBs</th><th>%</th><th>95 % CI (Clopper–Pearson)</th></tr></thead>"
                      f"<tbody>{body}</tbody></table>")
    return "<h2>Prevalence by bins</h2><div class=figs>" + "".join(figs) + "</div>" + "<br>".join(tables)


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.0f} %"


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, bool):
        return "yes" if v else ""
    return escape(v)


def _table_html(table, extra_columns) -> str:
    cols = [c for c in SHOWN_COLUMNS if c in table.columns and table[c].notna().any()
            and not (table[c] == "").all()]  # no empty columns (no sessions, no review, ...)
    cols += [c for c in extra_columns if c not in cols]
    head = "".join(f"<th>{escape(c)}</th>" for c in ["scan"] + cols)
    rows = []
    for rec in table.to_dict(orient="records"):
        scan = escape(rec["scan"])
        if rec.get("report"):
            scan = f"<a href='{relative_href(rec['report'])}'>{scan}</a>"
        rows.append(f"<tr{' class=ex' if rec.get('excluded') else ''}><td>" + scan + "</td>" + "".join(f"<td>{_cell(rec.get(c))}</td>" for c in cols) + "</tr>")
    return (f"<h2>Group table</h2><p class=dim>One row per scan; click a scan for its review page, a column "
            f"to sort. All columns: <code>group_cmb.tsv</code> (described in <code>group_cmb.json</code>).</p>"
            f"<table id=t><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def group_page(output_dir: Path, table, record: dict, fits: dict) -> str:
    """The HTML text of the group page."""
    analysed = table[~table["excluded"]]
    n_part = analysed["participant_id"].nunique()
    excluded = "".join(f"<li>{escape(e['participant_id'])}{' ' + escape(e['session_id']) if e['session_id'] else ''}"
                       f": {escape(e['reason'])}</li>" for e in record["excluded"])
    notes = "".join(f"<li>{escape(n)}</li>" for n in record.get("notes") or [])
    analyses = "\n".join(_analysis_html(a, fits.get(a["outcome"], {})) for a in record["analyses"])
    if not record["analyses"]:
        analyses = "<p class=dim>No model asked for (<code>--model</code>): table and figures only.</p>"
    covariates = []
    for a in record["analyses"]:
        covariates += [v for v in a.get("variables") or [] if v not in covariates]
    itp = ", ".join(f"{c}: {int((analysed['burden_itp'] == c).sum())}" for c in BURDEN_CATEGORIES)
    aria = ", ".join(f"{c}: {int((analysed['burden_aria_h'] == c).sum())}" for c in ARIA_H_CATEGORIES)
    described = (_figure_html(figures.burden(analysed), f"ITP burden (scans) — {itp}; ARIA-H bands — {aria}",
                              "burden distribution")
                 + _figure_html(figures.regions(analysed), "MARS regions", "microbleeds by region"))
    script = "\n" + asset("cohort.js")
    files = ", ".join(f"<code>{escape(f)}</code>" for f in (record.get("files") or {}).values())
    return f"""<!DOCTYPE html><html lang=en><head><meta charset=utf-8>
{content_security_policy(script)}<title>Microbleeds — group level</title>
<style>{asset("cohort.css")}
{PAGE_CSS}</style></head><body><h1>Cerebral microbleeds — group level</h1>
<p>{record['n_scans']} scan(s) under <code>{escape(output_dir)}</code>; {record['n_analysed']} analysed
({n_part} participant(s)); {len(record['excluded'])} excluded.
<span class=dim>Generated {generated()}. Files: {files}, <code>group_analysis.json</code>.</span></p>
{f"<h2>Exclusions</h2><ul>{excluded}</ul>" if excluded else ""}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
{analyses}
{_prevalence_html(record["prevalence"])}
<h2>Burden and regions</h2><div class=figs>{described}</div>
{_table_html(table, covariates)}
<script>{script}</script></body></html>
"""
