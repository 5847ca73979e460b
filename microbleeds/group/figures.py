"""The group page's figures (matplotlib, object-oriented: no pyplot, no global backend), each
returned as a PNG ``data:`` URI (the page's Content-Security-Policy allows ``data:`` images only).

- count against each covariate, participants without microbleeds drawn as open grey circles
  (the ITP study's Figure 2);
- prevalence by covariate bins with exact 95 % intervals (its Figure 3);
- the burden distribution (0 / 1 / 2-4 / >=5), automatic and reader-confirmed;
- microbleeds by MARS region.
"""

from __future__ import annotations

import base64
import io

from ..contract import BURDEN_CATEGORIES, COUNTED_REGIONS

DPI = 96
"""Figure resolution, dots per inch (CSS pixels at 100 % zoom)."""
WITH_CMB = "#b3261e"
WITHOUT_CMB = "#7d8593"
JITTER = 0.12
"""Half-width of the horizontal jitter of a categorical covariate's points (category spacing = 1)."""


def _figure(width_in=4.2, height_in=3.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def png_uri(fig) -> str:
    """The figure as a PNG data URI (no time stamp or software tag: same figure, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def scatter(data, outcome: str, variable: str, title: str = "") -> str:
    """``outcome`` against ``variable`` (numeric: as is; categorical: one column per level with a
    fixed jitter), participants with ``outcome`` 0 as open grey circles."""
    import numpy as np
    import pandas as pd

    fig = _figure()
    ax = fig.add_subplot()
    d = data[[variable, outcome]].dropna()
    y = d[outcome].astype(float).to_numpy()
    if pd.api.types.is_numeric_dtype(d[variable]) and d[variable].nunique() > 2:
        x = d[variable].astype(float).to_numpy()
    else:
        levels = sorted(d[variable].unique(), key=str)
        pos = {v: i for i, v in enumerate(levels)}
        jitter = np.random.default_rng(0).uniform(-JITTER, JITTER, len(d))
        x = np.array([pos[v] for v in d[variable]], float) + jitter
        ax.set_xticks(range(len(levels)), [str(v) for v in levels])
    free = y == 0
    ax.scatter(x[~free], y[~free], s=26, color=WITH_CMB, label=f"with CMBs (n={int((~free).sum())})", zorder=3)
    ax.scatter(x[free], y[free], s=26, facecolors="none", edgecolors=WITHOUT_CMB,
               label=f"CMB-free (n={int(free.sum())})", zorder=2)
    ax.set_xlabel(variable)
    ax.set_ylabel(outcome)
    ax.set_title(title or f"{outcome} vs {variable}", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return png_uri(fig)


def prevalence(rows, title: str = "") -> str:
    """Proportion with microbleeds per bin, exact 95 % intervals, ``k/n`` above each bar."""
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    labels = [r["bin"] for r in rows]
    p = np.array([r["proportion"] for r in rows], float)
    lo = np.array([r["ci_low"] for r in rows], float)
    hi = np.array([r["ci_high"] for r in rows], float)
    x = np.arange(len(rows))
    ok = np.isfinite(p)
    ax.bar(x[ok], p[ok], color="#d9a09b", width=0.6)
    ax.errorbar(x[ok], p[ok], yerr=[p[ok] - lo[ok], hi[ok] - p[ok]], fmt="o", color=WITH_CMB, capsize=4)
    for xi, r in zip(x, rows):
        ax.annotate(f"{r['with_cmb']}/{r['n']}", (xi, 1.02), ha="center", fontsize=8, annotation_clip=False)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("proportion with CMBs")
    ax.set_xlabel(rows[0]["variable"] if rows else "")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.25)
    return png_uri(fig)


def burden(data) -> str:
    """Participants per burden category (ITP: 0, 1, 2-4, >=5), automatic and reader-confirmed
    (completely reviewed scans only)."""
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    x = np.arange(len(BURDEN_CATEGORIES))
    auto = [int((data["burden_itp"] == c).sum()) for c in BURDEN_CATEGORIES]
    done = data[data["review_state"] == "complete"]
    ax.bar(x - 0.2 if len(done) else x, auto, width=0.4 if len(done) else 0.6, color="#6b7fa8",
           label=f"automatic (n={len(data)})")
    if len(done):
        rev = [int((done["burden_itp_reviewed"] == c).sum()) for c in BURDEN_CATEGORIES]
        ax.bar(x + 0.2, rev, width=0.4, color="#146c2e", label=f"reader-confirmed (n={len(done)})")
    ax.set_xticks(x, list(BURDEN_CATEGORIES))
    ax.set_xlabel("CMBs (burden category)")
    ax.set_ylabel("scans")
    ax.set_title("Burden distribution", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.25)
    return png_uri(fig)


def regions(data) -> str:
    """Microbleeds by MARS region: lesions summed over scans, and scans with at least one."""
    import numpy as np

    fig = _figure(6.0, 3.0)
    left, right = fig.subplots(1, 2)
    cols = [f"cmb_{r}" for r in COUNTED_REGIONS]
    totals = [float(data[c].sum()) if c in data else 0.0 for c in cols]
    scans = [int((data[c] > 0).sum()) if c in data else 0 for c in cols]
    x = np.arange(len(cols))
    left.bar(x, totals, color="#6b7fa8")
    left.set_title("CMBs by region (all scans)", fontsize=10)
    left.set_ylabel("CMBs")
    right.bar(x, scans, color="#d9a09b")
    right.set_title("scans with >=1 CMB in region", fontsize=10)
    right.set_ylabel("scans")
    for ax in (left, right):
        ax.set_xticks(x, [r.replace("infratentorial", "infratent.") for r in COUNTED_REGIONS], fontsize=8)
        ax.grid(axis="y", alpha=0.25)
    return png_uri(fig)
