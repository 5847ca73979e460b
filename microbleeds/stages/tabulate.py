"""Tabulate: number the candidates, build the lesion and candidate tables, paint the lesion map
on the input's own grid, and write the summary (counts, burden, acquisition, provenance).

Candidate record: :mod:`microbleeds.stages.describe` makes one dict per candidate with the
:data:`~microbleeds.contract.FEATURES`, ``world_mm`` (scanner RAS+ mm) and ``centroid_canonical``;
``api.find_candidates`` adds ``inside_brain`` and ``max_voxel_mm``; ``locate.region_columns`` adds
``region, lobe, hemisphere, region_source, label_id, region_note``; ``dipole_sign.candidate_signs``
adds ``phase_score, phase_sign, phase_trusted``; ``mimics.classify`` adds ``status, reason,
confidence, certainty``. The tables keep the columns of :mod:`microbleeds.contract`.
"""

from __future__ import annotations

import os

import numpy as np
from nibabel.affines import apply_affine

from .. import __version__
from ..contract import CANDIDATE_COLUMNS, COUNTED_REGIONS, LESION_COLUMNS, SIZE_BINS_MM, burden_category
from ..io.nifti import from_canonical
from ..presets import Parameters
from .dipole_sign import TRUSTED_SIGN
from .load import Scan
from .locate import count_by_region


def tabulate(rows, scan):
    """Order candidates by world position, number them, and build both tables.

    Returns the candidate rows, the lesion rows and, per region (1-based), its lesion id (0: rejected).
    """
    order = sorted(range(len(rows)), key=lambda r: tuple(np.round(rows[r]["world_mm"][::-1], 2)))
    native_inverse = np.linalg.inv(scan.native_affine)
    lesion_of_region = np.zeros(len(rows) + 1, np.int32)
    candidates, lesions = [], []
    for candidate_id, r in enumerate(order, start=1):
        row = rows[r]
        x, y, z = (float(v) for v in row["world_mm"])
        i, j, k = (int(v) for v in np.round(apply_affine(native_inverse, row["world_mm"])))
        lesion_id = 0
        if row["status"] == "accepted":
            lesion_id = len(lesions) + 1
            lesion_of_region[r + 1] = lesion_id
        out = {"candidate_id": candidate_id, "lesion_id": lesion_id, "x_mm": x, "y_mm": y, "z_mm": z,
               "i": i, "j": j, "k": k}
        for column in CANDIDATE_COLUMNS:
            if column not in out:
                out[column] = row.get(column, "")
        candidates.append(out)
        if lesion_id:
            lesions.append({column: out.get(column, "") for column in LESION_COLUMNS})
    return candidates, lesions, lesion_of_region



def lesion_map(found, lesion_of_region, shape, scan):
    """Lesion ids painted on the input's own grid, from the regions' voxel lists."""
    labels = np.zeros(shape, np.int32)
    offset = np.array([b.start for b in found.box])
    region_of_voxel = np.repeat(np.arange(len(found.regions)), np.diff(found.regions.starts))
    labels[tuple((found.regions.voxels + offset).T)] = lesion_of_region[region_of_voxel + 1]
    return from_canonical(labels, scan.ornt)


def summarise_regions(summary, accepted_rows, label_volume):
    """Region counts of the accepted candidates (their full records: label ids included)."""
    counts = count_by_region(accepted_rows)
    summary["counts"]["by_region"] = {k: counts[k] for k in COUNTED_REGIONS}
    for key in ("by_lobe", "by_hemisphere", "by_region_hemisphere", "unknown_label_ids", "pattern"):
        summary["counts"][key] = counts[key]
    summary["regions"] = {"source": label_volume.source, "notes": list(label_volume.notes)}


def summarise_phase(summary, swi_result, how):
    """The phase branch's record and the note saying whether calcifications were excluded."""
    summary["phase"] = swi_result.summary(how)
    evidence = swi_result.sign_evidence
    if evidence.get("confidence") in TRUSTED_SIGN:
        note = (f"Phase given: diamagnetic foci rejected as calcifications (phase sign "
                f"{swi_result.phase_sign:+d}, {evidence.get('method', '')}, confidence {evidence.get('confidence')}).")
    else:
        note = (f"Phase given, but its sign convention could not be settled (confidence "
                f"{evidence.get('confidence')}): calcifications are NOT excluded; rerun with --phase-sign +1 or -1.")
    summary["notes"] = [n for n in summary["notes"] if "no phase given" not in n] + [note]


def build_summary(scan: Scan, params: Parameters, lesions, candidates, noise_sigma, brain):
    """Summary dict of a run: counts, burden, acquisition, parameters, provenance."""
    by_size = {label: 0 for _, _, label in SIZE_BINS_MM}
    for lesion in lesions:
        for lo, hi, label in SIZE_BINS_MM:
            if lo <= lesion["diameter_mm"] < hi:
                by_size[label] += 1
    reasons = {}
    for c in candidates:
        if c["reason"]:
            reasons[c["reason"]] = reasons.get(c["reason"], 0) + 1
    definite = sum(1 for lesion in lesions if lesion["certainty"] == "definite")
    notes = ["Magnitude only: calcifications cannot be excluded (no phase given)."]
    return {
        "software": {"name": "microbleeds", "version": __version__},
        "input": {
            "path": os.path.abspath(scan.path) if scan.path else None,
            "sha256": scan.sha256,
            "shape": list(scan.native_shape),
            "voxel_size_mm": [round(float(v), 6) for v in np.sqrt((scan.native_affine[:3, :3] ** 2).sum(0))],
            "affine": np.round(scan.native_affine, 6).tolist(),
            "echoes": scan.echo,
        },
        "acquisition": acquisition(scan, params),
        "pipeline": {"name": params.preset, "version": params.preset_version, "parameters": params.to_dict()},
        "counts": {
            "total": len(lesions),
            "definite": definite,
            "possible": len(lesions) - definite,
            "by_size": by_size,
        },
        "burden_category": burden_category(len(lesions)),
        "candidates": len(candidates),
        "rejected_by_rule": dict(sorted(reasons.items())),
        "brain_volume_ml": round(float(brain.sum() * np.prod(scan.voxel_size_mm)) / 1000.0, 3),
        "noise_sigma_relative": round(float(noise_sigma), 6),
        "notes": notes,
    }


def acquisition(scan: Scan, params: Parameters):
    """Sequence, field strength and TE (ms): from the BIDS sidecar when present, else the preset.

    For multi-echo data the TE of the echo used is given, or all TEs when echoes were combined.
    """
    side = scan.sidecar
    te = side.get("EchoTime")
    if isinstance(te, list) and te:
        words = scan.echo.split()  # "echo 2 of 3" when one echo was picked, "rss of 3 echoes" otherwise
        picked = [int(words[1]) - 1] if words[0] == "echo" and words[1].isdigit() else []
        te = te[picked[0]] if picked and picked[0] < len(te) else [round(float(t) * 1000.0, 4) for t in te]
    if isinstance(te, (int, float)):
        te = round(float(te) * 1000.0, 4)
    return {
        "sequence": params.sequence,
        "field_strength_t": side.get("MagneticFieldStrength", params.field_strength_t),
        "echo_time_ms": te if te is not None else params.echo_time_ms,
        "source": "sidecar" if side else "preset",
    }
