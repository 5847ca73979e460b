"""Test helpers for the reader's report and review (not a pytest conftest: import it).

- :func:`make_scan_output` writes a fake detector output folder that follows
  docs/contract.md (a synthetic brain with dark spheres and a vein, stored in a
  non-canonical voxel order, with hand-made TSV / JSON; SWI and filtered phase in the folder
  as the detector writes them with ``--report``), without running the detector.
- :func:`launch_chromium` starts Debian's /usr/bin/chromium headless through Playwright,
  with no network and no browser download.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from microbleeds.contract import FILTERED_PHASE_FILE, LESION_COLUMNS, SWI_FILE
from microbleeds.io.nifti import file_sha256
from microbleeds.io.tables import tsv_text
from microbleeds.review.screenshot import CHROMIUM, CHROMIUM_ARGS

# Stored voxel order: axis 0 runs posterior (-y), axis 1 runs to the patient's left (-x),
# axis 2 superior (+z, 2 mm). Deliberately not RAS so the report must reorient.
AFFINE = np.array([
    [0.0, -1.0, 0.0, 72.0],
    [-1.0, 0.0, 0.0, 86.0],
    [0.0, 0.0, 2.0, -60.0],
    [0.0, 0.0, 0.0, 1.0],
])
SHAPE = (172, 144, 60)  # (y extent, x extent, z extent) in voxels
BRAIN_RADII = np.array([62.0, 78.0, 52.0])  # x, y, z half-axes of the ellipsoid brain, mm

REASONS = ["tubular", "too_small", "faint", "calcification", "brain_edge", "too_large"]
REGIONS = ["lobar", "deep", "infratentorial"]


def world_grid(shape=SHAPE, affine=AFFINE):
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    return xyz.reshape((3,) + tuple(shape))


def _candidates(n, rng):
    """Candidate centres (world mm), diameters and statuses; the first few are fixed."""
    fixed = [
        # x, y, z, diameter, status, reason, region
        (-30.0, 40.0, 20.0, 5.0, "accepted", "", "lobar"),      # patient's left, anterior
        (25.0, -20.0, 10.0, 3.5, "accepted", "", "deep"),       # patient's right, posterior
        (5.0, -45.0, -30.0, 2.5, "accepted", "", "infratentorial"),
        (35.0, 30.0, -6.0, 4.0, "rejected", "calcification", "deep"),
        (-10.0, 10.0, 34.0, 3.0, "rejected", "tubular", "lobar"),
    ]
    out = list(fixed[:n])
    while len(out) < n:
        u = rng.uniform(-1, 1, 3)
        if np.sum(u ** 2) > 0.55:
            continue
        x, y, z = u * BRAIN_RADII
        accepted = rng.random() < 0.35
        reason = "" if accepted else REASONS[rng.integers(len(REASONS))]
        out.append((float(x), float(y), float(z), float(rng.uniform(2.0, 7.0)),
                    "accepted" if accepted else "rejected", reason,
                    REGIONS[rng.integers(3)]))
    return out


def make_scan_output(root, n_candidates=5, seed=0, name="sub-01_swi", with_phase=True,
                     relative_input=False) -> Path:
    """Write a synthetic scan and a fake detector output folder; return the folder.

    Inputs go to ``root/inputs``; the output folder is ``root/out/<name>``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    inputs = root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    out = root / "out" / name
    out.mkdir(parents=True, exist_ok=True)

    x, y, z = world_grid()
    r2 = (x / BRAIN_RADII[0]) ** 2 + (y / BRAIN_RADII[1]) ** 2 + (z / BRAIN_RADII[2]) ** 2
    mask = r2 <= 1.0
    mag = np.where(mask, 600.0, 15.0) + rng.normal(0, 18, SHAPE)
    mag += np.where(r2 < 0.45, -120.0, 0.0)  # darker "grey matter" core for some texture
    mag = np.where((r2 > 1.0) & (r2 < 1.15), 250.0, mag)  # a scalp-like rim
    phase = np.where(mask, rng.normal(0, 0.05, SHAPE), 0.0)

    cands = _candidates(n_candidates, rng)
    inv = np.linalg.inv(AFFINE)
    labels = np.zeros(SHAPE, np.int32)
    cand_rows, lesion_rows = [], []
    lesion_id = 0
    for cid, (cx, cy, cz, diam, status, reason, region) in enumerate(cands, start=1):
        d2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
        sphere = d2 <= (diam / 2) ** 2
        if reason == "tubular":  # a vein along y
            sphere = ((x - cx) ** 2 + (z - cz) ** 2 <= 1.2 ** 2) & (np.abs(y - cy) < 12)
        mag[sphere] = 120.0 + rng.normal(0, 10, int(sphere.sum()))
        phase[sphere] = -0.6 if reason == "calcification" else 0.6
        i, j, k = np.rint(inv[:3, :3] @ [cx, cy, cz] + inv[:3, 3]).astype(int)
        lid = 0
        if status == "accepted":
            lesion_id += 1
            lid = lesion_id
            labels[sphere] = lid
        volume = float(np.pi / 6 * diam ** 3)
        conf = float(rng.uniform(0.6, 0.99) if lid else rng.uniform(0.05, 0.5))
        certainty = "definite" if conf > 0.8 else "possible"
        common = dict(x_mm=cx, y_mm=cy, z_mm=cz, i=int(i), j=int(j), k=int(k),
                      diameter_mm=round(diam, 2), volume_mm3=round(volume, 1),
                      contrast=round(float(rng.uniform(0.3, 0.8)), 3), confidence=round(conf, 3))
        cand_rows.append(dict(candidate_id=cid, status=status, reason=reason, lesion_id=lid,
                              **common, elongation=3.0 if reason == "tubular" else 1.1,
                              certainty=certainty if lid else "possible", region=region))
        if lid:
            lesion_rows.append(dict(lesion_id=lid, **common,
                                    max_inplane_diameter_mm=round(diam * 1.05, 2),
                                    certainty=certainty, region=region,
                                    lobe="frontal" if region == "lobar" else "n/a",
                                    hemisphere="left" if cx < 0 else "right",
                                    region_source="atlas"))
    cand_cols = ["candidate_id", "status", "reason", "lesion_id", "x_mm", "y_mm", "z_mm", "i",
                 "j", "k", "diameter_mm", "volume_mm3", "contrast", "confidence", "elongation",
                 "certainty", "region"]
    (out / "lesions.tsv").write_text(tsv_text(lesion_rows, LESION_COLUMNS, ".4g"))
    (out / "candidates.tsv").write_text(tsv_text(cand_rows, cand_cols, ".4g"))

    mag_path = inputs / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(mag.astype(np.float32), AFFINE), mag_path)
    if with_phase:
        swi = mag * np.where(phase > 0, np.clip(1 - phase / 0.6, 0, 1) ** 4, 1.0)
        nib.save(nib.Nifti1Image(swi.astype(np.float32), AFFINE), out / SWI_FILE)
        nib.save(nib.Nifti1Image(phase.astype(np.float32), AFFINE), out / FILTERED_PHASE_FILE)
    nib.save(nib.Nifti1Image(labels, AFFINE), out / "labels.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), out / "mask.nii.gz")

    counts = {"total": len(lesion_rows),
              "definite": sum(r["certainty"] == "definite" for r in lesion_rows),
              "possible": sum(r["certainty"] == "possible" for r in lesion_rows),
              "by_size": {"<2mm": 0, "2-5mm": sum(r["diameter_mm"] < 5 for r in lesion_rows),
                          ">=5mm": sum(r["diameter_mm"] >= 5 for r in lesion_rows)},
              "by_region": {reg: sum(r["region"] == reg for r in lesion_rows)
                            for reg in REGIONS + ["unknown"]}}
    n = counts["total"]
    in_path = os.path.relpath(mag_path, out) if relative_input else str(mag_path)
    summary = {
        "software": {"name": "microbleeds", "version": "0.1.0"},
        "input": {"path": in_path, "sha256": file_sha256(mag_path), "shape": list(SHAPE),
                  "voxel_size_mm": [1.0, 1.0, 2.0], "affine": AFFINE.tolist()},
        "phase": {"handedness": "right"} if with_phase else None,
        "acquisition": {"sequence": "SWI", "field_strength_t": 3.0, "echo_time_ms": 20.0},
        "pipeline": {"name": "swi-3t", "version": "1", "parameters": {}},
        "counts": counts,
        "burden_category": "0" if n == 0 else "1" if n == 1 else "2-4" if n <= 4 else ">=5",
        "candidates": len(cand_rows),
        "notes": ["synthetic test data"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out


def chromium_available() -> bool:
    return os.path.exists(CHROMIUM)


def launch_chromium(playwright):
    """Launch Debian's chromium headless via Playwright (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=True)
