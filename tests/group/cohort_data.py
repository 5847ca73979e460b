"""Test helpers for the group level (not a pytest conftest: import it).

- :func:`simulate_covariates` / :func:`simulate_counts`: cohorts with known incidence rate ratios
  (the ITP study's variables: nadir platelets x10^9/L, disease duration in months, age in years, sex).
- :func:`write_scan`: a scan result folder as the detector writes it (summary.json in the
  detector's layout, candidates.tsv, lesions.tsv), without running the detector.
- :func:`write_dataset`: a small BIDS dataset (participants.tsv + sidecar, sessions.tsv) with its
  results in ``derivatives/microbleeds``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from microbleeds.contract import LESION_COLUMNS, burden_category
from microbleeds.io.derivatives import result_path
from microbleeds.io.tables import tsv_text

TRUE_IRR = {"nadir_platelets": 0.90, "duration_months": 1.02, "age": 1.0, "sex[T.M]": 1.0}
"""IRRs of the simulated cohorts: per 10^9/L nadir platelets, per month of disease, per year, male."""
INTERCEPT = 1.6
REGIONS = ("lobar", "deep", "infratentorial")


def simulate_covariates(n, rng):
    return pd.DataFrame({
        "nadir_platelets": rng.uniform(1, 30, n).round(0),
        "duration_months": rng.uniform(1, 60, n).round(0),
        "age": rng.uniform(18, 80, n).round(0),
        "sex": rng.choice(["F", "M"], n),
    })


def linear_predictor(cov):
    return (INTERCEPT + np.log(TRUE_IRR["nadir_platelets"]) * cov["nadir_platelets"]
            + np.log(TRUE_IRR["duration_months"]) * cov["duration_months"]
            + np.log(TRUE_IRR["age"]) * cov["age"] + np.log(TRUE_IRR["sex[T.M]"]) * (cov["sex"] == "M"))


def simulate_counts(cov, rng, alpha=0.0):
    """Poisson counts (``alpha`` 0) or NB2 counts with variance mu + alpha mu^2."""
    mu = np.exp(linear_predictor(cov)).to_numpy()
    if alpha == 0:
        return rng.poisson(mu)
    lam = rng.gamma(1 / alpha, alpha * mu)  # gamma-Poisson mixture: NB2
    return rng.poisson(lam)


def _lesions(n, rng):
    rows = []
    for lid in range(1, n + 1):
        region = REGIONS[rng.integers(3)]
        rows.append({"lesion_id": lid, "x_mm": float(rng.uniform(-60, 60)), "y_mm": 0.0, "z_mm": 0.0,
                     "i": 1, "j": 1, "k": 1, "diameter_mm": float(rng.uniform(2, 8)),
                     "max_inplane_diameter_mm": 3.0, "volume_mm3": 10.0, "contrast": 0.5, "confidence": 0.9,
                     "certainty": "definite" if rng.random() < 0.7 else "possible", "region": region,
                     "lobe": "frontal" if region == "lobar" else "", "hemisphere": "left" if rng.random() < 0.5
                     else "right", "region_source": "labels"})
    return rows


def write_scan(results_dir, participant, count, session=None, seed=0, bids_block=False, report=False,
               phase_confidence="high", input_dir="/data/bids", layout="folder"):
    """One scan's results with ``count`` lesions: a result folder ``results_dir/<sub>/[<ses>/]anat/<name>/``
    (``layout="folder"``), or BIDS Derivatives files ``results_dir/<sub>/[<ses>/]anat/<sub>[_<ses>]_desc-cmb_*``
    (``layout="bids"``, with the summary's ``bids`` block). Returns the folder or the BIDS prefix."""
    rng = np.random.default_rng(seed)
    lesions = _lesions(int(count), rng)
    name = f"{participant}{'_' + session if session else ''}_swi"
    anat = Path(results_dir) / participant / (session or "") / "anat"
    folder = anat / name if layout == "folder" else anat / name.removesuffix("_swi")
    (folder if layout == "folder" else anat).mkdir(parents=True, exist_ok=True)
    bids_block = bids_block or layout == "bids"
    by_region = {r: sum(x["region"] == r for x in lesions) for r in REGIONS}
    by_region["unknown"] = 0
    counts = {"total": len(lesions), "definite": sum(x["certainty"] == "definite" for x in lesions),
              "possible": sum(x["certainty"] == "possible" for x in lesions),
              "by_size": {"<2mm": 0, "2-5mm": sum(x["diameter_mm"] < 5 for x in lesions),
                          "5-10mm": sum(x["diameter_mm"] >= 5 for x in lesions), ">=10mm": 0},
              "by_region": by_region,
              "by_lobe": {"frontal": by_region["lobar"], "parietal": 0, "temporal": 0, "occipital": 0, "insula": 0,
                          "unknown_lobe": 0},
              "by_hemisphere": {h: sum(x["hemisphere"] == h for x in lesions) for h in ("left", "right")}
              | {"midline": 0, "unknown": 0},
              "by_region_hemisphere": {r: {h: sum(x["region"] == r and x["hemisphere"] == h for x in lesions)
                                           for h in ("left", "right", "midline", "unknown")} for r in REGIONS}}
    in_path = f"{input_dir}/{participant}/{session + '/' if session else ''}anat/{name}.nii.gz"
    summary = {
        "software": {"name": "microbleeds", "version": "0.1.0"},
        "input": {"path": in_path, "sha256": f"{seed:064d}", "shape": [10, 10, 10],
                  "voxel_size_mm": [0.5, 0.5, 1.0]},
        "acquisition": {"sequence": "SWI", "field_strength_t": 3.0, "echo_time_ms": 20.0},
        "pipeline": {"name": "itp-3t-swi", "version": "1", "parameters": {}},
        "counts": counts, "burden_category": burden_category(len(lesions)), "candidates": len(lesions) + 2,
        "brain_mask": {"volume_ml": 1300.0, "coverage": "whole"},
        "warnings": ["a test warning"] if seed % 7 == 3 else [],
        "regions": {"source": "labels_registered",
                    "notes": ["labels registered via T1w x.nii.gz: rigid, Mattes MI -0.512, rotation 1.0 deg"]},
        "phase": {"sign_evidence": {"confidence": phase_confidence}},
    }
    if bids_block:
        summary["bids"] = {"participant_id": participant, "session_id": session,
                           "entities": {"subject": participant[4:], "session": session[4:] if session else None,
                                        "acquisition": None, "run": None}, "source": in_path}
    cand = [{"candidate_id": i + 1, "status": "accepted", "reason": "", "lesion_id": i + 1} for i in range(len(lesions))]
    files = {"summary.json": json.dumps(summary, indent=2), "lesions.tsv": tsv_text(lesions, LESION_COLUMNS),
             "candidates.tsv": tsv_text(cand, ["candidate_id", "status", "reason", "lesion_id"])}
    if report:
        files["report.html"] = "<!DOCTYPE html><title>scan report</title><p>review page</p>"
    for file_name, text in files.items():
        result_path(folder, file_name).write_text(text)
    return folder


def write_dataset(root, n=30, seed=0, alpha=0.0, missing=("sub-05",), sessions=False, report=True, layout="bids"):
    """A BIDS dataset ``root/bids`` (participants.tsv with the study's variables; ``missing``
    participants lack nadir_platelets) with results in ``root/bids/derivatives/microbleeds``.
    Returns ``(bids_dir, results_dir, covariates frame with participant_id and count)``."""
    rng = np.random.default_rng(seed)
    bids = Path(root) / "bids"
    results = bids / "derivatives" / "microbleeds"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    cov = simulate_covariates(n, rng)
    cov["count"] = simulate_counts(cov, rng, alpha)
    cov.insert(0, "participant_id", [f"sub-{i:02d}" for i in range(1, n + 1)])
    part = cov.drop(columns="count").astype(object)
    part.loc[part["participant_id"].isin(missing), "nadir_platelets"] = "n/a"
    (bids / "participants.tsv").write_text(part.to_csv(sep="\t", index=False))
    (bids / "participants.json").write_text(json.dumps({
        "nadir_platelets": {"Description": "lowest platelet count since diagnosis", "Units": "10^9/L"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}}}))
    for i, row in cov.iterrows():
        ses = "ses-1" if sessions else None
        write_scan(results, row["participant_id"], row["count"], session=ses, seed=seed * 1000 + i,
                   report=report, layout=layout)
        if sessions:
            (bids / row["participant_id"]).mkdir(exist_ok=True)
            (bids / row["participant_id"] / f"{row['participant_id']}_sessions.tsv").write_text(
                f"session_id\tplatelets_at_mri\n{ses}\t{int(rng.integers(5, 100))}\n")
    return bids, results, cov
