"""Python API: :func:`detect` runs every stage on one scan; the CLI calls the same function.

>>> import microbleeds
>>> result = microbleeds.detect("sub-01_swi.nii.gz")            # doctest: +SKIP
>>> result.summary["counts"]["total"], result.lesions[0]["x_mm"]  # doctest: +SKIP
>>> result.write("derivatives/microbleeds")                       # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from nibabel.affines import apply_affine

from . import __version__
from .contract import CANDIDATE_COLUMNS, LESION_COLUMNS, SIZE_BINS_MM, burden_category
from .errors import InputError
from .io.nifti import from_canonical, to_canonical
from .presets import DEFAULT_PRESET, Parameters, load_parameters
from .stages.describe import describe_regions
from .stages.load import Scan, load_mask, load_scan
from .stages.locate import count_by_region, locate, region_columns
from .stages.mimics import classify
from .stages.prepare import brain_mask, erode_mm, noise_level, relative_intensity
from .stages.seeds import find_seeds
from .stages.segment import grow_regions

# The half-depth outline includes the blooming halo, so the susceptibility source is smaller than
# the outline: the dipole is fitted from 0.6, 0.8 and 1.0 of the outline's radius (per diameter).
SOURCE_RADIUS_PER_DIAMETER = (0.3, 0.4, 0.5)
TRUSTED_SIGN = ("forced", "high", "moderate")  # phase-sign confidence that lets the calcification rule act


@dataclass
class DetectionResult:
    """Everything one run found on one scan.

    Attributes
    ----------
    lesions : list of dict
        Accepted candidates, columns :data:`LESION_COLUMNS`.
    candidates : list of dict
        Every candidate with its features and rejection reason, :data:`CANDIDATE_COLUMNS`.
    labels : ndarray int32
        Lesion map on the input's own grid (value = lesion_id).
    mask : ndarray bool
        Brain mask on the input's own grid.
    summary : dict
        Counts, burden category, parameters, software and input provenance.
    scan : Scan
    """

    lesions: list
    candidates: list
    labels: np.ndarray
    mask: np.ndarray
    summary: dict
    scan: Scan
    phase_images: dict = field(default_factory=dict)

    def write(self, out_dir, name=None, write_images=False):
        """Write the result set into ``out_dir/<name>/`` atomically; returns that folder.

        ``write_images`` adds the SWI and filtered phase (when phase was given)."""
        from .io.results import write_result

        return write_result(self, out_dir, name, write_images)


def detect(source, mask=None, pipeline=DEFAULT_PRESET, affine=None, phase=None, echo_times_ms=None,
           labels=None, labels_t1w=None, **overrides) -> DetectionResult:
    """Find cerebral microbleeds on one SWI or GRE-T2* magnitude scan.

    Parameters
    ----------
    source : str, Path, nibabel image, ndarray or Scan
        The scan (3D, or 4D multi-echo). An array needs ``affine``.
    mask : str, Path or ndarray of bool, optional
        Brain mask on the scan's grid; computed automatically when omitted.
    pipeline : str
        Preset name (see ``microbleeds.presets.preset_names()``) or path to a TOML preset.
    affine : ndarray (4, 4), optional
        Voxel-to-world affine (mm) for an array ``source``.
    phase : str, Path, list of paths, nibabel image or ndarray, optional
        Phase on the magnitude's grid (radians, scanner units or scaled: detected and rescaled);
        4D or one file per echo for multi-echo data. With phase, diamagnetic foci are rejected
        as calcifications and the SWI is computed.
    echo_times_ms : sequence of float, optional
        Echo times (ms) of a multi-echo acquisition; read from BIDS sidecars when omitted.
    labels : str or Path, optional
        Segmentation (FreeSurfer aparc+aseg, SynthSeg, BIDS ``*_dseg``) on the scan's grid or in
        the same scanner space; each lesion gets its MARS region, lobe and hemisphere.
    labels_t1w : str or Path, optional
        The T1w the segmentation was made from, when it must be registered to this scan.
    **overrides
        Any :class:`~microbleeds.presets.Parameters` field, e.g. ``max_diameter_mm=10``.

    Returns
    -------
    DetectionResult

    Raises
    ------
    InputError
        For unusable input files (message names the file and the problem).
    """
    params = load_parameters(pipeline, **overrides)
    scan = source if isinstance(source, Scan) else load_scan(source, echo=_echo(params.echo), affine=affine)
    brain = _mask(mask, scan, params)
    found = find_candidates(scan, brain, params)
    label_volume = add_regions(found, scan, brain, params, labels, labels_t1w)
    swi_result = phase_how = None
    if phase is not None:
        swi_result, phase_how = phase_branch(scan, phase, brain, params, echo_times_ms)
        add_phase_features(found.rows, swi_result, scan)
    for row in found.rows:
        classify(row, params)
    candidates, lesions, lesion_of_region = _tabulate(found.rows, scan)
    summary = build_summary(scan, params, lesions, candidates, found.noise_sigma, brain)
    _summarise_regions(summary, lesions, label_volume)
    result = DetectionResult(lesions, candidates, _lesion_map(found, lesion_of_region, brain.shape, scan),
                             from_canonical(brain, scan.ornt), summary, scan)
    if swi_result is not None:
        _summarise_phase(summary, swi_result, phase_how)
        result.phase_images = {
            "swi.nii.gz": (from_canonical(swi_result.swi, scan.ornt), np.float32),
            "phase_filtered.nii.gz": (from_canonical(swi_result.filtered_phase, scan.ornt), np.float32)}
    return result


@dataclass
class Candidates:
    """Segmented and described candidates of one scan, on the brain's bounding box."""

    rows: list
    regions: object
    box: tuple
    box_affine: np.ndarray
    noise_sigma: float


def find_candidates(scan, full_brain, params) -> Candidates:
    """Prepare, detect, segment and describe: the feature rows of every candidate (canonical)."""
    box, box_affine = brain_box(full_brain, scan.affine)
    brain = full_brain[box]
    vox = scan.voxel_size_mm
    rel = relative_intensity(np.ascontiguousarray(scan.magnitude[box]), brain, vox, params.background_sigma_mm)
    sigma = noise_level(rel, brain)
    interior = erode_mm(brain, vox, params.edge_margin_mm)
    seeds, response = find_seeds(rel, interior, vox, params.radii_mm(), sigma, params.min_contrast)
    # growth may reach max_diameter_mm from the seed in every direction, so a focus too large to
    # count is measured as too large, not cut to size
    regions = grow_regions(rel, brain, seeds, vox, params.max_diameter_mm, params.depth_fraction,
                           min_depth=0.5 * params.min_contrast)
    rows = describe_regions(regions, rel, brain, response, box_affine, vox, sigma, params.shell_mm)
    offset = np.array([b.start for b in box])
    for row in rows:
        row["centroid_canonical"] = row["centroid_vox"] + offset
        centre = tuple(np.clip(np.round(row["centroid_vox"]).astype(int), 0, np.array(brain.shape) - 1))
        row["inside_brain"] = bool(brain[centre])
        row["max_voxel_mm"] = float(np.max(vox))
    return Candidates(rows, regions, box, box_affine, sigma)


def add_regions(found, scan, full_brain, params, labels=None, labels_t1w=None):
    """MARS region, lobe, hemisphere and region source of every candidate; returns the label source."""
    rows = found.rows
    region_rows, label_volume = locate(
        np.array([row["world_mm"] for row in rows]).reshape(-1, 3), found.regions.labels.shape,
        found.box_affine, magnitude=np.ascontiguousarray(scan.magnitude[found.box]),
        brain_mask=full_brain[found.box], lesion_map=found.regions.labels, lesion_ids=list(range(1, len(rows) + 1)),
        labels_path=labels, labels_t1w=labels_t1w, use_atlas=params.use_atlas,
        juxtacortical_mm=params.juxtacortical_mm, periventricular_mm=params.periventricular_mm)
    for row, region in zip(rows, region_rows):
        row.update(region_columns(region))
    return label_volume


def _lesion_map(found, lesion_of_region, shape, scan):
    """Lesion ids painted on the input's own grid, from the regions' voxel lists."""
    labels = np.zeros(shape, np.int32)
    offset = np.array([b.start for b in found.box])
    region_of_voxel = np.repeat(np.arange(len(found.regions)), np.diff(found.regions.starts))
    labels[tuple((found.regions.voxels + offset).T)] = lesion_of_region[region_of_voxel + 1]
    return from_canonical(labels, scan.ornt)


def _summarise_regions(summary, lesions, label_volume):
    counts = count_by_region(lesions)
    summary["counts"]["by_region"] = {k: counts[k] for k in ("lobar", "deep", "infratentorial", "unknown")}
    for key in ("by_lobe", "by_hemisphere", "by_region_hemisphere", "unknown_label_ids", "pattern"):
        summary["counts"][key] = counts[key]
    summary["regions"] = {"source": label_volume.source, "notes": list(label_volume.notes)}


def _summarise_phase(summary, swi_result, how):
    summary["phase"] = swi_result.summary(how)
    evidence = swi_result.sign_evidence
    if evidence.get("confidence") in TRUSTED_SIGN:
        note = (f"Phase given: diamagnetic foci rejected as calcifications (phase sign "
                f"{swi_result.phase_sign:+d}, {evidence.get('method', '')}, confidence {evidence.get('confidence')}).")
    else:
        note = (f"Phase given, but its sign convention could not be settled (confidence "
                f"{evidence.get('confidence')}): calcifications are NOT excluded; rerun with --phase-sign +1 or -1.")
    summary["notes"] = [n for n in summary["notes"] if "no phase given" not in n] + [note]


def phase_branch(scan, phase, brain, params, echo_times_ms=None):
    """Load the phase, high-pass filter it, settle its sign and compute the SWI (canonical).

    Returns
    -------
    swi_result : phase.SWIResult
    how : str
        How the phase values were scaled to radians.
    """
    from .stages import phase as phase_module

    magnitude = scan.echoes if scan.echoes is not None else scan.magnitude
    native_shape = tuple(scan.native_shape) + ((scan.n_echoes,) if scan.n_echoes > 1 else ())
    if isinstance(phase, np.ndarray):  # an array on the magnitude's own (native) grid
        import nibabel as nib

        phase = nib.Nifti1Image(np.asarray(phase, np.float32), scan.native_affine)
    radians, how = phase_module.load_phase(phase, native_shape, scan.native_affine)
    radians = to_canonical(radians, scan.native_affine)[0]
    if scan.n_echoes > 1 and echo_times_ms is None:
        echo_times_ms = phase_module.read_echo_times([scan.path]) if scan.path else None
        if echo_times_ms is None:
            raise InputError(scan.path, "multi-echo phase needs echo times (BIDS sidecar EchoTime or --echo-times)")
    result = phase_module.compute_swi(magnitude, radians, scan.affine, echo_times_ms=echo_times_ms,
                                      phase_sign=params.phase_sign, window=params.highpass_window_vox,
                                      mask=brain)
    return result, how


def add_phase_features(rows, swi_result, scan):
    """Sign (+1 paramagnetic, -1 diamagnetic, 0 undecided) and strength of each candidate's
    dipole pattern in the filtered phase.

    The susceptibility source lies somewhere inside the half-depth outline (blooming), so the
    dipole is fitted from three inner radii, 0.6, 0.8 and 1.0 of the outline's radius: the sign is
    decided when at least one fit decides and none contradicts it.
    """
    from .stages.phase import source_susceptibility_sign

    trusted = swi_result.sign_evidence.get("confidence") in TRUSTED_SIGN
    for row in rows:
        row["phase_trusted"] = trusted
        fits = [source_susceptibility_sign(
            swi_result.filtered_phase, swi_result.magnitude, row["centroid_canonical"],
            fraction * row["diameter_mm"], scan.voxel_size_mm, scan.affine, phase_sign=swi_result.phase_sign)
            for fraction in SOURCE_RADIUS_PER_DIAMETER]
        signs = {sign for _, sign in fits if sign}
        sign = signs.pop() if len(signs) == 1 else 0
        scores = [score for score, s in fits if s == sign and sign] or [fits[1][0]]
        score = max(scores, key=abs)
        row["phase_score"] = None if np.isnan(score) else float(score)
        row["phase_sign"] = int(sign)


def brain_box(mask, affine, margin=2):
    """Slices of the mask's bounding box (plus ``margin`` voxels) and the affine of that crop."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        lo = max(int(present[0]) - margin, 0) if present.size else 0
        hi = min(int(present[-1]) + margin + 1, mask.shape[axis]) if present.size else mask.shape[axis]
        box.append(slice(lo, hi))
    shift = np.eye(4)
    shift[:3, 3] = [b.start for b in box]
    return tuple(box), affine @ shift


def _echo(echo):
    return int(echo) if str(echo).lstrip("-").isdigit() else echo


def _mask(mask, scan, params):
    if mask is None:
        return brain_mask(scan.magnitude, scan.voxel_size_mm, params.bias_correction, params.mask_opening_mm)
    if isinstance(mask, np.ndarray):
        if mask.shape != scan.native_shape:
            raise ValueError(f"mask: shape {mask.shape} differs from the scan's {scan.native_shape}")
        if not np.isfinite(mask).all() or not (mask > 0.5).any():
            raise ValueError("mask: empty or not finite")
        return to_canonical(np.asarray(mask) > 0.5, scan.native_affine)[0]
    return load_mask(mask, scan)


def _tabulate(rows, scan):
    """Order candidates by world position, number them, and build both tables."""
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
