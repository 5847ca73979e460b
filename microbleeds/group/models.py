"""Count models of the group table, fitted by statsmodels (no hand-written GLM or optimiser).

- Poisson regression (``statsmodels`` GLM, log link): incidence rate ratios (IRR = exp(coef)),
  Wald 95 % confidence intervals and P values.
- Overdispersion: the Pearson dispersion (chi2 / residual df) and the likelihood-ratio test of
  the negative binomial (NB2, ``statsmodels.discrete`` NegativeBinomial, alpha by maximum
  likelihood) against the Poisson; alpha = 0 lies on the boundary, so P is half the chi2(1) tail
  (Self & Liang 1987). ``family="auto"`` takes the negative binomial when that P < 0.05.
- Logistic regression (GLM binomial) for presence (any microbleed): odds ratios.
- The ITP study's two steps (Blood 2020): a univariate model per variable, the variables with
  P < alpha into a multivariate model adjusted for named covariates (age, sex).
- Complete cases: rows missing any variable of a model are dropped and listed.
- Repeated measures (several scans of one participant, e.g. sessions of a longitudinal study):
  generalised estimating equations (``statsmodels`` GEE, exchangeable working correlation within
  a participant, robust sandwich standard errors with the Mancl & DeRouen 2001 small-sample
  correction, Liang & Zeger 1986), Poisson for counts and
  binomial for presence. The sandwich errors stay valid under overdispersion, so no
  negative-binomial choice is made there.

Formulas are Patsy formulas (statsmodels' default engine): ``cmb_total ~ nadir_platelets + age + C(sex)``.
"""

from __future__ import annotations

import ast
import difflib
import math
import warnings
from dataclasses import dataclass, field

from ..errors import InputError

LR_ALPHA = 0.05
"""Level of the negative-binomial-versus-Poisson likelihood-ratio test that picks the family."""
ALPHA_BOUNDARY = 1e-4
"""An NB2 alpha below this is the optimiser heading for the Poisson boundary (alpha = 0): the
variance mu + alpha mu^2 then differs from mu by < 0.1 % for mu up to 10 microbleeds."""
CI_LEVEL = 0.95
"""Confidence level of the intervals (Wald, on the log scale, exponentiated)."""
FAMILIES = ("auto", "poisson", "negbin", "logistic")
RATIO = {"poisson": "IRR", "negbin": "IRR", "logistic": "OR"}
GEE_SUFFIX = "-gee"
"""Appended to the family of a model fitted by GEE (``poisson-gee``, ``logistic-gee``)."""
_FUNCTIONS = {"C", "I", "Q", "np", "center", "standardize", "scale", "bs", "cr", "cc", "te", "log", "exp",
              "sqrt", "Treatment", "Sum", "Diff", "Poly", "Helmert"}


class ModelError(InputError):
    """A model that cannot be specified or fitted: ``ModelError(what, problem)``, ``what`` naming
    the formula or option (the command line prints it as one line, like a bad file)."""


# --------------------------------------------------------------------------- formulas
def _sides(formula: str) -> tuple[str, str]:
    if formula.count("~") != 1:
        raise ModelError(f"model {formula!r}", "a formula needs exactly one '~' (outcome ~ covariates)")
    lhs, rhs = formula.split("~")
    return lhs.strip(), rhs.strip()


def _names(expression: str, formula: str) -> list[str]:
    """Variable names in a Patsy expression (function names and ``np.`` left out), in order."""
    text = expression.replace(":", "*").replace("%in%", "*").replace("~", "")
    if not text.strip():
        return []
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ModelError(f"model {formula!r}", f"not a formula ({exc.msg})") from None
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    bases = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    out = []
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Name)), key=lambda n: n.col_offset)
    for node in nodes:
        if id(node) not in called and id(node) not in bases:
            if node.id not in out and node.id not in _FUNCTIONS:
                out.append(node.id)
    return out


def term_variables(term: str) -> list[str]:
    """Variable names of one formula term (``C(sex)`` -> ``['sex']``)."""
    return _names(term, term)


def formula_variables(formula: str, columns) -> tuple[list[str], list[str]]:
    """``(outcome variables, covariate variables)`` of ``formula``; raises ModelError for a name
    that is not a column."""
    lhs, rhs = _sides(formula)
    left, right = _names(lhs, formula), _names(rhs, formula)
    if not left:
        raise ModelError(f"model {formula!r}", "no outcome before '~'")
    columns = [str(c) for c in columns]
    unknown = [n for n in left + right if n not in set(columns)]
    if unknown:
        close = [m for n in unknown for m in difflib.get_close_matches(n, columns, n=2, cutoff=0.5)]
        hint = f"did you mean {' or '.join(close)}?" if close else \
            f"covariates: {', '.join(c for c in columns if not c.startswith(('cmb_', 'any_cmb', 'burden_')))}"
        raise ModelError(f"model {formula!r}", f"{', '.join(unknown)} not a column of the group table ({hint})")
    return left, right


def with_outcome(formula: str, outcome: str) -> str:
    """``formula`` with its outcome replaced by ``outcome`` (a formula may have no outcome: ``~ age``)."""
    _lhs, rhs = _sides(formula if "~" in formula else "~" + formula)
    return f"{outcome} ~ {rhs}"


def rhs_terms(formula: str) -> list[str]:
    """The covariate terms of ``formula`` (Patsy's term names, intercept left out)."""
    from patsy import ModelDesc

    try:
        desc = ModelDesc.from_formula(formula)
    except Exception as exc:  # patsy.PatsyError
        raise ModelError(f"model {formula!r}", str(exc).splitlines()[0]) from None
    return [t.name() for t in desc.rhs_termlist if t.factors]


def complete_cases(frame, variables, key=("participant_id", "session_id")):
    """Rows of ``frame`` with every one of ``variables`` present, and a record of the rows
    dropped: ``[{"participant_id", "session_id", "scan", "missing": [...]}, ...]``."""
    missing = frame[list(variables)].isna()
    keep = ~missing.any(axis=1)
    dropped = []
    for idx in frame.index[~keep]:
        rec = {k: _clean(frame.at[idx, k]) for k in (*key, "scan") if k in frame.columns}
        rec["missing"] = [v for v in variables if bool(missing.at[idx, v])]
        dropped.append(rec)
    return frame.loc[keep].copy(), dropped


def _clean(value):
    try:
        import pandas as pd

        return None if pd.isna(value) else value
    except (TypeError, ValueError):
        return value


# --------------------------------------------------------------------------- fits
@dataclass
class ModelFit:
    """One fitted model: its coefficient table and fit statistics (``result``: the statsmodels
    results object, not serialised)."""

    formula: str
    family: str
    n: int
    coefficients: list = field(default_factory=list)
    ratio_name: str = "IRR"
    alpha: float | None = None
    llf: float = math.nan
    aic: float = math.nan
    converged: bool = True
    warnings: list = field(default_factory=list)
    term_p: dict = field(default_factory=dict)
    repeated: dict | None = None
    result: object = field(default=None, repr=False)

    def record(self) -> dict:
        """JSON-ready description (no statsmodels object)."""
        out = {"formula": self.formula, "family": self.family, "n": self.n, "ratio": self.ratio_name,
               "coefficients": self.coefficients, "term_p": self.term_p,
               "negbin_alpha": self.alpha, "log_likelihood": self.llf, "aic": self.aic,
               "converged": self.converged, "warnings": self.warnings}
        if self.repeated:
            out["repeated_measures"] = self.repeated
        return out

    def ratio(self, term: str) -> float:
        return next(c["ratio"] for c in self.coefficients if c["term"] == term)


def _fit_statsmodels(frame, formula: str, family: str, groups: str | None = None):
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    if groups is not None:
        if family not in ("poisson", "logistic"):
            raise ModelError("--family", f"{family} is not fitted with repeated measures: GEE models counts as "
                                         "Poisson with robust standard errors (valid under overdispersion)")
        glm_family = sm.families.Poisson() if family == "poisson" else sm.families.Binomial()
        model = smf.gee(formula, groups, frame, family=glm_family, cov_struct=sm.cov_struct.Exchangeable())
        return model.fit(cov_type="bias_reduced")  # Mancl & DeRouen: tens of participants, not thousands
    if family == "poisson":
        return smf.glm(formula, frame, family=sm.families.Poisson()).fit()
    if family == "logistic":
        return smf.glm(formula, frame, family=sm.families.Binomial()).fit()
    if family == "negbin":
        # BFGS from statsmodels' own start (the Poisson fit, alpha 0.1). No Newton retry: when alpha
        # heads for 0 (Poisson data) its Hessian's polygamma calls take seconds and change nothing.
        return smf.negativebinomial(formula, frame, loglike_method="nb2").fit(disp=0, maxiter=500)
    raise ModelError("--family", f"unknown family {family!r} (one of {', '.join(FAMILIES[1:])})")


def fit_model(frame, formula: str, family: str = "poisson", groups: str | None = None) -> ModelFit:
    """Fit ``formula`` on ``frame`` (complete cases only: call :func:`complete_cases` first)
    with ``family`` poisson, negbin or logistic; ratios exp(coef) with 95 % Wald intervals.

    ``groups``: a column naming who each row belongs to (``participant_id``): the rows of one
    group are correlated (repeated measures) and the model is a GEE (family ``poisson-gee`` or
    ``logistic-gee``, robust standard errors)."""
    import numpy as np

    family = family.removesuffix(GEE_SUFFIX)
    caught = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            res = _fit_statsmodels(frame, formula, family, groups)
        except ModelError:
            raise
        except Exception as exc:  # patsy errors, singular matrices, perfect separation
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"model {formula!r} ({family})", first) from None
        caught = sorted({str(w.message).splitlines()[0] for w in seen
                         if not issubclass(w.category, (DeprecationWarning, FutureWarning))})
    params, bse, pvalues = res.params, res.bse, res.pvalues
    ci = res.conf_int(alpha=1 - CI_LEVEL)
    names = [n for n in res.model.exog_names if not (family == "negbin" and n == "alpha")]
    coefficients = []
    with np.errstate(over="ignore"):  # exp of a diverging coefficient (separation) is inf, reported as such
        ratios = np.exp(params[names]), np.exp(ci.loc[names, 0]), np.exp(ci.loc[names, 1])
    for term in names:
        coefficients.append({
            "term": term, "coef": float(params[term]), "se": float(bse[term]),
            "ratio": float(ratios[0][term]), "ci_low": float(ratios[1][term]),
            "ci_high": float(ratios[2][term]), "p": float(pvalues[term]),
        })
    alpha = float(params["alpha"]) if family == "negbin" else None
    converged = bool(res.mle_retvals.get("converged", True)) if hasattr(res, "mle_retvals") else bool(
        getattr(res, "converged", True))
    repeated = None
    if groups is not None:
        converged = not any("converge" in w.lower() for w in caught)
        dep = res.model.cov_struct
        repeated = {"method": "GEE", "groups": groups, "n_groups": int(len(np.unique(res.model.groups))),
                    "working_correlation": "exchangeable",
                    "within_group_correlation": float(dep.dep_params), "standard_errors": "robust (sandwich), bias-reduced (Mancl & DeRouen)"}
    fit = ModelFit(formula=formula, family=family + (GEE_SUFFIX if groups is not None else ""), n=int(res.nobs),
                   coefficients=coefficients, ratio_name=RATIO[family], alpha=alpha,
                   llf=float(getattr(res, "llf", math.nan)) if groups is None else math.nan,
                   aic=float(res.aic) if groups is None else math.nan,
                   converged=converged, warnings=caught, repeated=repeated, result=res)
    fit.term_p = term_pvalues(res, names)
    return fit


def term_pvalues(res, names) -> dict:
    """Joint Wald P value of each formula term (one P per variable, whatever its degrees of
    freedom: a categorical covariate with 3 levels is tested with 2 df)."""
    import numpy as np

    data = res.model.data
    spec = getattr(data, "model_spec", None) or getattr(data, "design_info", None)
    if hasattr(spec, "term_name_slices"):  # patsy (statsmodels' default engine)
        slices = dict(spec.term_name_slices)
    else:  # formulaic (SM_FORMULA_ENGINE=formulaic)
        slices = {str(t): sl for t, sl in spec.term_slices.items()}
    n_params = len(res.params)
    out = {}
    for term, sl in slices.items():
        if term in ("Intercept", "1"):
            continue
        cols = range(len(names))[sl]
        R = np.zeros((len(cols), n_params))
        for row, col in enumerate(cols):
            R[row, col] = 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out[term] = float(res.wald_test(R, scalar=True, use_f=False).pvalue)
            except (ValueError, np.linalg.LinAlgError):  # no covariance (a fit on a boundary)
                out[term] = math.nan
    return out


def overdispersion(frame, formula: str) -> tuple:
    """Is a Poisson model of ``formula`` overdispersed? Pearson dispersion, the NB2 alpha and the
    boundary likelihood-ratio test negative binomial vs Poisson; ``choice`` negbin when P < LR_ALPHA.

    Returns ``(record, poisson ModelFit, negbin ModelFit or None)``."""
    from scipy import stats

    poisson = fit_model(frame, formula, "poisson")
    out = {"pearson_dispersion": float(poisson.result.pearson_chi2 / poisson.result.df_resid)
           if poisson.result.df_resid > 0 else math.nan,
           "poisson_log_likelihood": poisson.llf, "rule": (
               f"negative binomial when the likelihood-ratio test of NB2 vs Poisson gives P < {LR_ALPHA} "
               "(boundary test: P = chi2(1) tail / 2)")}
    try:
        nb = fit_model(frame, formula, "negbin")
    except ModelError as exc:
        out.update(negbin_alpha=None, lr_statistic=None, lr_p=None, choice="poisson",
                   reason=f"negative binomial could not be fitted ({exc}); Poisson kept")
        return out, poisson, None
    if not math.isfinite(nb.llf):
        out.update(negbin_alpha=None, lr_statistic=None, lr_p=None, choice="poisson",
                   reason="the negative binomial could not be fitted (no finite likelihood); Poisson kept")
        return out, poisson, None
    lr = max(0.0, 2.0 * (nb.llf - poisson.llf))
    p = 0.5 * float(stats.chi2.sf(lr, 1)) if lr > 0 else 1.0
    boundary = nb.alpha is not None and nb.alpha < ALPHA_BOUNDARY
    choice = "negbin" if (p < LR_ALPHA and nb.converged and not boundary) else "poisson"
    out.update(negbin_alpha=nb.alpha, negbin_log_likelihood=nb.llf, negbin_converged=nb.converged,
               lr_statistic=lr, lr_p=p, choice=choice)
    if choice == "negbin":
        out["reason"] = f"overdispersed: LR {lr:.2f}, P = {_p_text(p)}, NB2 alpha {nb.alpha:.3g}: negative binomial"
    elif boundary:
        out["reason"] = (f"no overdispersion: the NB2 alpha goes to its boundary 0 ({nb.alpha:.1e}), "
                         f"LR {lr:.2f}, P = {_p_text(p)}: Poisson")
    elif p < LR_ALPHA:
        out["reason"] = f"LR {lr:.2f}, P = {_p_text(p)}, but the negative binomial did not converge: Poisson kept"
    else:
        out["reason"] = f"no overdispersion shown: LR {lr:.2f}, P = {_p_text(p)}: Poisson"
    return out, poisson, nb


def _p_text(p) -> str:
    return "n/a" if p is None or not math.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def fit_count(frame, formula: str, family: str = "auto", groups: str | None = None) -> tuple[ModelFit, dict | None]:
    """A count model with ``family`` poisson, negbin or auto (the overdispersion check decides);
    returns the fit and the overdispersion record (None when the family was given).

    With ``groups`` (repeated measures), a Poisson GEE whatever ``family`` auto / poisson says."""
    if groups is not None:
        fit = fit_model(frame, formula, "poisson" if family == "auto" else family, groups)
        return fit, {"choice": fit.family, "reason": "repeated measures: Poisson GEE by " + groups + " with robust "
                     "(sandwich) standard errors, valid under overdispersion; no negative binomial test"}
    if family == "auto":
        record, poisson, nb = overdispersion(frame, formula)
        return (nb if record["choice"] == "negbin" else poisson), record
    return fit_model(frame, formula, family), None


def two_step(frame, formula: str, adjust_for, alpha: float, family: str, groups: str | None = None):
    """The study's procedure: every covariate term alone (``outcome ~ term``), the terms with
    P < ``alpha`` (adjusters left out of the screen) into ``outcome ~ selected + adjusters``.

    ``family`` is the family already chosen on the full model (poisson, negbin or logistic);
    ``groups`` as in :func:`fit_model` (every model then a GEE).
    Returns ``{"univariate": [ModelFit], "screen": [...], "selected": [...], "multivariate": ModelFit}``.
    """
    outcome, _rhs = _sides(formula)
    adjust = list(adjust_for or [])
    terms = rhs_terms(formula)
    adjusters = [t for t in terms if set(_names(t, formula)) <= set(adjust)]
    covered = {n for t in adjusters for n in _names(t, formula)}
    adjusters += [a for a in adjust if a not in covered]
    terms += [a for a in adjusters if a not in terms]
    univariate, screen, selected = [], [], []
    for term in terms:
        uni = fit_model(frame, f"{outcome} ~ {term}", family, groups)
        p = uni.term_p.get(term, math.nan)
        is_adjuster = term in adjusters
        passes = (not is_adjuster) and p < alpha
        univariate.append(uni)
        screen.append({"term": term, "p": p, "adjuster": is_adjuster, "selected": passes})
        if passes:
            selected.append(term)
    rhs = selected + adjusters
    multi = fit_model(frame, f"{outcome} ~ {' + '.join(rhs) if rhs else '1'}", family, groups)
    return {"alpha": alpha, "adjust_for": adjust, "univariate": univariate, "screen": screen,
            "selected": selected, "multivariate": multi}
