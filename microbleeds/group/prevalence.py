"""Prevalence (the proportion of participants with at least one microbleed) by covariate bins,
with exact Clopper-Pearson intervals (statsmodels ``proportion_confint(method="beta")``).

Bins are half-open, ``low <= value < high``: edges ``5, 10, 15`` give ``<5``, ``5 to <10``,
``10 to <15``, ``>=15`` (the ITP study's nadir-platelet bins, x10^9/L, its Figure 3). A covariate
without edges is binned by its values (sex: F, M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .models import CI_LEVEL, ModelError


@dataclass(frozen=True)
class BinSpec:
    """A covariate and its bin edges (empty: one bin per value)."""

    variable: str
    edges: tuple = ()

    @classmethod
    def parse(cls, text: str) -> BinSpec:
        """``VAR`` or ``VAR:E1,E2,...`` (edges increasing)."""
        var, _, edges = str(text).partition(":")
        var = var.strip()
        if not var:
            raise ModelError(f"--bins {text!r}", "no covariate name (VAR or VAR:E1,E2,...)")
        try:
            values = tuple(float(e) for e in edges.split(",") if e.strip()) if edges else ()
        except ValueError:
            raise ModelError(f"--bins {text!r}", "edges must be numbers, e.g. nadir_platelets:5,10,15") from None
        if any(b <= a for a, b in zip(values, values[1:])):
            raise ModelError(f"--bins {text!r}", "edges must increase")
        return cls(var, values)

    def labels(self) -> list[str]:
        e = [_num(v) for v in self.edges]
        if not e:
            return []
        return [f"<{e[0]}"] + [f"{a} to <{b}" for a, b in zip(e, e[1:])] + [f">={e[-1]}"]

    def assign(self, value) -> str | None:
        """The bin label of one value (None when missing)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if not self.edges:
            return str(_num(value) if isinstance(value, (int, float)) else value)
        v = float(value)
        labels = self.labels()
        for edge, label in zip(self.edges, labels):
            if v < edge:
                return label
        return labels[-1]


def _num(v):
    f = float(v)
    return int(f) if f.is_integer() else f


def clopper_pearson(k: int, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Exact binomial interval of ``k`` successes in ``n`` trials (0 and 1 at the ends)."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return math.nan, math.nan
    low, high = proportion_confint(k, n, alpha=1 - level, method="beta")
    return (0.0 if k == 0 else float(low)), (1.0 if k == n else float(high))


def prevalence_by_bins(frame, spec: BinSpec, outcome: str = "cmb_total") -> list[dict]:
    """One row per bin: ``variable, bin, n, with_cmb, proportion, ci_low, ci_high`` over the rows
    of ``frame`` where both the covariate and ``outcome`` are present."""
    import pandas as pd

    for col in (spec.variable, outcome):
        if col not in frame.columns:
            raise ModelError(f"--bins {spec.variable}", f"{col} is not a column of the group table")
    data = frame[[spec.variable, outcome]].dropna()
    if spec.edges and not pd.api.types.is_numeric_dtype(data[spec.variable]):
        raise ModelError(f"--bins {spec.variable}", "edges given but the covariate is not numeric")
    bins = data[spec.variable].map(spec.assign)
    order = spec.labels() or sorted(bins.unique(), key=str)
    rows = []
    for label in order:
        sel = data.loc[bins == label, outcome]
        n, k = int(len(sel)), int((sel > 0).sum())
        low, high = clopper_pearson(k, n)
        rows.append({"outcome": outcome, "variable": spec.variable, "bin": label, "n": n, "with_cmb": k,
                     "proportion": k / n if n else math.nan, "ci_low": low, "ci_high": high})
    return rows
