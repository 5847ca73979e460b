"""The group level: one table over a run's scans joined with participants' covariates, count
models (statsmodels), and the group report.

>>> from microbleeds.group import load_cohort
>>> table = load_cohort("derivatives/microbleeds", bids_dir=".")   # doctest: +SKIP

The BIDS App's ``group`` level: :func:`add_group_arguments` (argparse options) and
:func:`run_group_level`. Importing this package loads argparse only; pandas, statsmodels and
matplotlib load on first use.

Modules: ``entities`` (participant / session of a scan), ``table`` (the group table, its TSV and
sidecar), ``models`` (Poisson / negative binomial / logistic, two steps), ``prevalence`` (bins,
Clopper-Pearson), ``figures`` (matplotlib), ``page`` (the HTML page), ``run`` (the group level),
``options`` (the command line's options).
"""

from .options import add_group_arguments

_LAZY = {"load_cohort": "table", "write_table": "table", "fit_model": "models", "fit_count": "models",
         "two_step": "models", "overdispersion": "models", "prevalence_by_bins": "prevalence",
         "clopper_pearson": "prevalence", "GroupSettings": "run", "analyse": "run"}

__all__ = ["add_group_arguments", "run_group_level", *_LAZY]


def run_group_level(bids_dir, output_dir, args):
    """The BIDS App's ``group`` level: write the group table, models, prevalence, analysis record
    and page into ``output_dir`` (where the participant level wrote its results); returns the
    paths written (see :func:`microbleeds.group.run.run_group_level`)."""
    from .run import run_group_level as run

    return run(bids_dir, output_dir, args)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'microbleeds.group' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
