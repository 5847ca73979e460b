"""Command-line options of the group level (argparse only: importing this loads nothing heavy).

Every option's ``dest`` starts with ``group_`` so that they cannot clash with the BIDS App's
other options.
"""

from __future__ import annotations

import argparse


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} must lie between 0 and 1 (e.g. 0.05)")
    return value


def _exclusion(text: str) -> tuple[str, str]:
    subject, sep, reason = str(text).partition(":")
    if not sep or not subject.strip() or not reason.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: give SUBJECT:REASON, e.g. 'sub-07:>50 CMBs after total body irradiation'")
    return subject.strip(), reason.strip()


def add_group_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the group level's options to ``parser`` (an argparse parser or argument group)."""
    g = parser.add_argument_group("group level (statistics over participants)") if isinstance(
        parser, argparse.ArgumentParser) else parser
    g.add_argument("--model", dest="group_model", metavar="FORMULA",
                   help="count model, Patsy formula over the group table's columns, e.g. "
                        "'cmb_total ~ nadir_platelets + duration_months + age + sex' (no model: table and figures only)")
    g.add_argument("--outcome", dest="group_outcomes", action="append", metavar="COLUMN",
                   help="outcome column(s) replacing the formula's left side, one analysis each (repeatable): "
                        "cmb_total, cmb_definite, cmb_lobar, cmb_deep, cmb_infratentorial, cmb_total_reviewed, ...")
    g.add_argument("--family", dest="group_family", choices=("auto", "poisson", "negbin"), default="auto",
                   help="count model: auto (default: Poisson unless the overdispersion test picks the negative "
                        "binomial), poisson or negbin")
    g.add_argument("--presence", dest="group_presence", action="store_true",
                   help="also a logistic regression of presence (outcome > 0) on the same covariates: odds ratios")
    g.add_argument("--two-step", dest="group_two_step", type=_alpha, metavar="ALPHA",
                   help="the ITP study's procedure: univariate models, variables with P < ALPHA into a "
                        "multivariate model adjusted for --adjust-for")
    g.add_argument("--adjust-for", dest="group_adjust_for", nargs="+", default=[], metavar="COLUMN",
                   help="covariates every multivariate model of --two-step keeps (e.g. age sex)")
    g.add_argument("--exclude", dest="group_exclude", action="append", type=_exclusion, default=[],
                   metavar="SUBJECT:REASON",
                   help="leave a participant (sub-07, or sub-07_ses-2 for one session) out of the analysis, "
                        "with the reason (kept in the outputs); repeatable")
    g.add_argument("--bins", dest="group_bins", action="append", default=[], metavar="COLUMN[:E1,E2,...]",
                   help="prevalence of microbleeds by bins of a covariate, exact 95%% intervals, e.g. "
                        "nadir_platelets:5,10,15 (<5, 5 to <10, 10 to <15, >=15); repeatable")
    g.add_argument("--analysis-session", dest="group_session", metavar="LABEL",
                   help="analyse this session only (participants with several sessions need one row each, "
                        "or --repeated-measures gee)")
    g.add_argument("--repeated-measures", dest="group_repeated", choices=("refuse", "gee"), default="refuse",
                   help="several scans of one participant in a model: refuse (default: say so and stop) or gee "
                        "(generalised estimating equations by participant, exchangeable correlation, robust errors)")
    return parser
