"""The group level of the BIDS App: the group table, exclusions, the models, prevalence by bins,
and the outputs (TSVs with JSON sidecars, the analysis record, the HTML page).

An I/O loop around :mod:`.table`, :mod:`.models` and :mod:`.prevalence`; it holds no statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_write_text
from ..io.tables import json_text
from .entities import participant_label
from .models import (
    CI_LEVEL,
    LR_ALPHA,
    ModelError,
    complete_cases,
    fit_count,
    fit_model,
    formula_variables,
    two_step,
    with_outcome,
)
from .prevalence import BinSpec, prevalence_by_bins
from .table import FLOAT_FORMAT, load_cohort, write_table

TABLE_FILE = "group_cmb.tsv"
MODELS_FILE = "group_models.tsv"
PREVALENCE_FILE = "group_prevalence.tsv"
ANALYSIS_FILE = "group_analysis.json"
REPORT_FILE = "group_report.html"
DEFAULT_OUTCOME = "cmb_total"

MODEL_COLUMNS = ("outcome", "model", "formula", "family", "n", "term", "ratio_name", "ratio", "ci_low", "ci_high",
                 "p", "coef", "se")
PREVALENCE_COLUMNS = ("outcome", "variable", "bin", "n", "with_cmb", "proportion", "ci_low", "ci_high")
MODEL_SIDECAR = {
    "outcome": {"Description": "outcome column (a count, or its presence for model 'presence')"},
    "model": {"Description": "main (the --model formula), univariate / multivariate (--two-step), presence "
                             "(logistic regression of outcome > 0)"},
    "formula": {"Description": "Patsy formula fitted"},
    "family": {"Description": "poisson, negbin (NB2, alpha by maximum likelihood) or logistic; poisson-gee / "
                              "logistic-gee with --repeated-measures gee (GEE by participant, exchangeable "
                              "working correlation, robust standard errors)"},
    "n": {"Description": "observations used (complete cases)", "Units": "count"},
    "term": {"Description": "design column (statsmodels name)"},
    "ratio_name": {"Description": "IRR (incidence rate ratio) for counts, OR (odds ratio) for presence"},
    "ratio": {"Description": "exp(coef): IRR or OR per unit of the covariate (vs the reference level)"},
    "ci_low": {"Description": f"lower bound of the {CI_LEVEL:.0%} Wald interval of the ratio"},
    "ci_high": {"Description": f"upper bound of the {CI_LEVEL:.0%} Wald interval of the ratio"},
    "p": {"Description": "Wald P value of the coefficient"},
    "coef": {"Description": "coefficient on the log scale"}, "se": {"Description": "standard error of coef"},
}
PREVALENCE_SIDECAR = {
    "outcome": {"Description": "count column whose presence (> 0) is counted"},
    "variable": {"Description": "covariate binned"},
    "bin": {"Description": "bin: low <= value < high, or the covariate's value"},
    "n": {"Description": "participants in the bin", "Units": "count"},
    "with_cmb": {"Description": "participants in the bin with outcome > 0", "Units": "count"},
    "proportion": {"Description": "with_cmb / n"},
    "ci_low": {"Description": f"lower bound of the exact (Clopper-Pearson) {CI_LEVEL:.0%} interval"},
    "ci_high": {"Description": f"upper bound of the exact (Clopper-Pearson) {CI_LEVEL:.0%} interval"},
}


@dataclass
class GroupSettings:
    """What the group level computes (the command line's ``--model`` ... options)."""

    model: str | None = None
    outcomes: list = field(default_factory=list)
    family: str = "auto"
    presence: bool = False
    two_step: float | None = None
    adjust_for: list = field(default_factory=list)
    exclude: list = field(default_factory=list)
    bins: list = field(default_factory=list)
    session: str | None = None
    repeated: str = "refuse"
    participants: list = field(default_factory=list)
    sessions: list = field(default_factory=list)

    @classmethod
    def from_args(cls, args) -> GroupSettings:
        """From an argparse namespace of :func:`add_group_arguments` (or a dict of its dests)."""
        get = args.get if isinstance(args, dict) else (lambda k, d=None: getattr(args, k, d))
        adjust = []
        for item in get("group_adjust_for") or []:
            adjust += [a.strip() for a in str(item).split(",") if a.strip()]
        return cls(model=get("group_model"), outcomes=list(get("group_outcomes") or []),
                   family=get("group_family") or "auto", presence=bool(get("group_presence")),
                   two_step=get("group_two_step"), adjust_for=adjust,
                   exclude=[tuple(e) for e in get("group_exclude") or []],
                   bins=list(get("group_bins") or []), session=get("group_session"),
                   repeated=get("group_repeated") or "refuse", participants=list(get("participant_label") or []), sessions=list(get("session_label") or []))

    def record(self) -> dict:
        return {"model": self.model, "outcomes": self.outcomes, "family": self.family, "presence": self.presence,
                "two_step_alpha": self.two_step, "adjust_for": self.adjust_for,
                "exclude": [{"participant": s, "reason": r} for s, r in self.exclude], "bins": self.bins,
                "analysis_session": self.session, "repeated_measures": self.repeated, "participant_label": self.participants,
                "session_label": self.sessions}


# --------------------------------------------------------------------------- exclusions
def apply_exclusions(table, exclusions):
    """``table`` with ``excluded`` / ``exclusion_reason`` columns set from ``(who, reason)``
    pairs, ``who`` being ``sub-07``, ``07`` or ``sub-07_ses-2``; raises InputError for a
    participant (or session) that is not in the table."""
    table = table.copy()
    table["excluded"] = False
    table["exclusion_reason"] = ""
    for who, reason in exclusions:
        sub, _, ses = str(who).partition("_")
        pid = participant_label(sub)
        sel = table["participant_id"] == pid
        if ses:
            sel &= table["session_id"] == (ses if ses.startswith("ses-") else f"ses-{ses}")
        if not sel.any():
            raise InputError("--exclude", f"{who} is not a participant (or session) of the results")
        table.loc[sel, "excluded"] = True
        table.loc[sel, "exclusion_reason"] = reason
    return table


def select_labels(table, settings: GroupSettings):
    """The rows of the BIDS App's ``--participant-label`` / ``--session-label`` (all when not given)."""
    keep = table["participant_id"].notna() | (not settings.participants and not settings.sessions)
    if settings.participants:
        wanted = {participant_label(p) for p in settings.participants}
        keep &= table["participant_id"].isin(wanted)
    if settings.sessions:
        wanted = {s if str(s).startswith("ses-") else f"ses-{s}" for s in settings.sessions}
        keep &= table["session_id"].isin(wanted)
    if not keep.any():
        raise InputError("--participant-label", "no results for the participants / sessions asked for")
    out = table[keep].reset_index(drop=True)
    out.attrs = dict(table.attrs)
    if len(out) < len(table):
        out.attrs["notes"] = list(table.attrs.get("notes") or []) + [
            f"{len(table) - len(out)} scan(s) outside --participant-label / --session-label left out of the table"]
    return out


def analysis_set(table, settings: GroupSettings, one_per_participant=True):
    """The rows analysed: not excluded, in the chosen session; one per participant."""
    rows = table[~table["excluded"]]
    if settings.session:
        ses = settings.session if settings.session.startswith("ses-") else f"ses-{settings.session}"
        rows = rows[rows["session_id"] == ses]
        if rows.empty:
            raise InputError("--analysis-session", f"no scan of session {ses} in the results")
    ids = rows["participant_id"].dropna()
    dup = ids[ids.duplicated()]
    if one_per_participant and not dup.empty:
        pid = dup.iloc[0]
        scans = rows.loc[rows["participant_id"] == pid, "scan"].tolist()
        raise InputError("--model", f"{pid} has {len(scans)} scans in the analysis ({', '.join(scans)}): choose "
                                    "one with --analysis-session, --exclude the others (participant_ses-label:reason)"
                                    + (" (prevalence by --bins counts participants)" if settings.bins else
                                       ", or model them with --repeated-measures gee"))
    return rows


def repeated_groups(rows, settings: GroupSettings) -> str | None:
    """``participant_id`` when the model must treat several scans of a participant as repeated
    measures (``--repeated-measures gee`` and some participant has more than one row), else None."""
    ids = rows["participant_id"]
    if settings.repeated != "gee" or not ids.duplicated().any():
        return None
    if ids.isna().any():
        raise InputError("--repeated-measures", "some scans have no participant (not BIDS sub-<label> names): "
                                                "GEE needs to know whose scan each row is")
    return "participant_id"


# --------------------------------------------------------------------------- the analysis
def _outcomes(settings: GroupSettings) -> list[str]:
    if settings.outcomes:
        return list(settings.outcomes)
    if settings.model and settings.model.split("~")[0].strip():
        return [settings.model.split("~")[0].strip()]
    return [DEFAULT_OUTCOME]


def analyse(table, settings: GroupSettings) -> dict:
    """Every model and prevalence table of ``settings`` on ``table``: a JSON-ready record, and
    the fits (``"fits"``: outcome -> {"main", "univariate", "multivariate", "presence"})."""
    one = bool(settings.bins) or (bool(settings.model) and settings.repeated != "gee")
    data = analysis_set(table, settings, one_per_participant=one)
    record = {"settings": settings.record(), "n_scans": int(len(table)), "n_analysed": int(len(data)),
              "excluded": [{"participant_id": r.participant_id, "session_id": _none(r.session_id), "scan": r.scan,
                            "reason": r.exclusion_reason} for r in table[table["excluded"]].itertuples()],
              "family_rule": f"--family auto: negative binomial when its likelihood-ratio test against the Poisson "
                             f"gives P < {LR_ALPHA}", "analyses": [], "prevalence": [], "notes": list(
                  table.attrs.get("notes") or [])}
    fits = {}
    for outcome in _outcomes(settings):
        if outcome not in table.columns:
            raise InputError("--outcome", f"{outcome} is not a column of the group table")
        if settings.model:
            entry, fit = _analyse_outcome(data, settings, outcome)
            record["analyses"].append(entry)
            fits[outcome] = fit
        for spec_text in settings.bins:
            record["prevalence"] += prevalence_by_bins(data, BinSpec.parse(spec_text), outcome)
    record["fits"] = fits
    return record


def _analyse_outcome(data, settings, outcome):
    formula = with_outcome(settings.model, outcome)
    left, right = formula_variables(formula, data.columns)
    for a in settings.adjust_for:
        if a not in data.columns:
            raise InputError("--adjust-for", f"{a} is not a column of the group table")
    variables = list(dict.fromkeys(left + right + (settings.adjust_for if settings.two_step else [])))
    used, dropped = complete_cases(data, variables)
    entry = {"outcome": outcome, "formula": formula, "variables": right,
             "complete_cases": {"n_used": int(len(used)), "n_dropped": len(dropped), "dropped": dropped},
             "errors": []}
    fit = {"data": used, "variables": right}
    groups = repeated_groups(used, settings)
    try:
        main, choice = fit_count(used, formula, settings.family, groups)
        fit["main"] = main
        entry["main"] = main.record()
        entry["family_choice"] = choice or {"choice": settings.family, "reason": f"--family {settings.family}"}
        family = main.family
        if settings.two_step is not None:
            steps = two_step(used, formula, settings.adjust_for, settings.two_step, family, groups)
            fit["univariate"], fit["multivariate"] = steps["univariate"], steps["multivariate"]
            entry["two_step"] = {"alpha": steps["alpha"], "adjust_for": steps["adjust_for"], "screen": steps["screen"],
                                 "selected": steps["selected"],
                                 "univariate": [u.record() for u in steps["univariate"]],
                                 "multivariate": steps["multivariate"].record()}
    except ModelError as exc:
        entry["errors"].append(str(exc))
    if settings.presence:
        present = f"{outcome}_present"
        used = used.assign(**{present: (used[outcome] > 0).astype(int)})
        fit["data"] = used
        try:
            fit["presence"] = fit_model(used, with_outcome(formula, present), "logistic", groups)
            entry["presence"] = fit["presence"].record()
        except ModelError as exc:
            entry["errors"].append(str(exc))
    return entry, fit


def _none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def coefficient_rows(record) -> list[dict]:
    """The long coefficient table (one row per model term) of an analysis record."""
    rows = []
    for a in record["analyses"]:
        models = [("main", a.get("main"))]
        ts = a.get("two_step")
        if ts:
            models += [("univariate", u) for u in ts["univariate"]] + [("multivariate", ts["multivariate"])]
        models.append(("presence", a.get("presence")))
        for kind, m in models:
            if not m:
                continue
            for c in m["coefficients"]:
                rows.append({"outcome": a["outcome"], "model": kind, "formula": m["formula"], "family": m["family"],
                             "n": m["n"], "ratio_name": m["ratio"], **{k: c[k] for k in
                                                                         ("term", "ratio", "ci_low", "ci_high", "p",
                                                                          "coef", "se")}})
    return rows


# --------------------------------------------------------------------------- outputs
def run_group_level(bids_dir, output_dir, args) -> dict[str, Path]:
    """The BIDS App's ``group`` level: read the participant-level results in ``output_dir``,
    write the group table, the models, prevalence, the analysis record and the page there.

    ``args``: the namespace of :func:`add_group_arguments` (or a dict of its ``group_*`` dests).
    Returns ``{"table", "table_sidecar", "models", "models_sidecar", "prevalence",
    "prevalence_sidecar", "analysis", "report"}`` -> path (models / prevalence only when computed).
    """
    from ..io.tables import tsv_text
    from .page import group_page

    output_dir = Path(output_dir)
    settings = GroupSettings.from_args(args)
    table = select_labels(load_cohort(output_dir, bids_dir), settings)
    table = apply_exclusions(table, settings.exclude)
    paths = {}
    written = write_table(table, output_dir / TABLE_FILE)  # first: there to look at if a model is refused
    paths["table"], paths["table_sidecar"] = written["tsv"], written["json"]
    record = analyse(table, settings)
    fits = record.pop("fits")
    coefficients = coefficient_rows(record)
    if record["analyses"]:
        paths["models"] = atomic_write_text(output_dir / MODELS_FILE,
                                            tsv_text(coefficients, MODEL_COLUMNS, FLOAT_FORMAT))
        paths["models_sidecar"] = atomic_write_text(output_dir / "group_models.json", json_text(MODEL_SIDECAR))
    if record["prevalence"]:
        paths["prevalence"] = atomic_write_text(output_dir / PREVALENCE_FILE,
                                                tsv_text(record["prevalence"], PREVALENCE_COLUMNS, FLOAT_FORMAT))
        paths["prevalence_sidecar"] = atomic_write_text(output_dir / "group_prevalence.json",
                                                        json_text(PREVALENCE_SIDECAR))
    record["files"] = {k: p.name for k, p in paths.items()}
    paths["analysis"] = atomic_write_text(output_dir / ANALYSIS_FILE, json_text(record))
    paths["report"] = atomic_write_text(output_dir / REPORT_FILE, group_page(output_dir, table, record, fits))
    return paths
