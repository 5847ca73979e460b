"""Prevalence by covariate bins with exact Clopper-Pearson intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from microbleeds.group.models import ModelError
from microbleeds.group.prevalence import BinSpec, clopper_pearson, prevalence_by_bins


def test_clopper_pearson_is_the_beta_quantiles():
    for k, n in ((0, 10), (3, 10), (10, 10), (7, 49), (1, 2)):
        low, high = clopper_pearson(k, n)
        want_low = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
        want_high = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
        assert (low, high) == pytest.approx((want_low, want_high), rel=1e-10, abs=1e-12)


def test_clopper_pearson_covers_at_least_nominally():
    """Exact coverage (summed over every outcome k): never below 95 %, the interval's promise."""
    n = 20
    for p in np.linspace(0.02, 0.98, 25):
        coverage = sum(stats.binom.pmf(k, n, p) for k in range(n + 1)
                       if clopper_pearson(k, n)[0] <= p <= clopper_pearson(k, n)[1])
        assert coverage >= 0.95 - 1e-12, (p, coverage)


def test_bins_are_half_open_like_the_study():
    spec = BinSpec.parse("nadir_platelets:5,10,15")
    assert spec.labels() == ["<5", "5 to <10", "10 to <15", ">=15"]
    assert [spec.assign(v) for v in (0, 4.9, 5, 9.99, 10, 15, 300)] == [
        "<5", "<5", "5 to <10", "5 to <10", "10 to <15", ">=15", ">=15"]
    assert spec.assign(float("nan")) is None


def test_prevalence_counts_and_intervals():
    frame = pd.DataFrame({"nadir": [1, 2, 6, 7, 8, 12, 20, 30, np.nan, 3],
                          "cmb_total": [2, 0, 1, 1, 0, 0, 0, 3, 5, np.nan]})
    rows = prevalence_by_bins(frame, BinSpec.parse("nadir:5,10,15"), "cmb_total")
    got = [(r["bin"], r["n"], r["with_cmb"]) for r in rows]
    assert got == [("<5", 2, 1), ("5 to <10", 3, 2), ("10 to <15", 1, 0), (">=15", 2, 1)]
    assert rows[1]["proportion"] == pytest.approx(2 / 3)
    assert (rows[1]["ci_low"], rows[1]["ci_high"]) == pytest.approx(clopper_pearson(2, 3))


def test_categorical_bins_and_errors():
    frame = pd.DataFrame({"sex": ["F", "M", "M", "F"], "cmb_total": [0, 1, 2, 0]})
    rows = prevalence_by_bins(frame, BinSpec.parse("sex"), "cmb_total")
    assert [(r["bin"], r["with_cmb"], r["n"]) for r in rows] == [("F", 0, 2), ("M", 2, 2)]
    with pytest.raises(ModelError, match="not numeric"):
        prevalence_by_bins(frame, BinSpec.parse("sex:1,2"), "cmb_total")
    with pytest.raises(ModelError, match="must increase"):
        BinSpec.parse("age:50,40")
    with pytest.raises(ModelError, match="not a column"):
        prevalence_by_bins(frame, BinSpec.parse("age:40"), "cmb_total")
