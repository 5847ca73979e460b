"""Tabulate: number the candidates, build the lesion and candidate tables, paint the lesion map
on the input's own grid, and write the summary (counts, burden, acquisition, provenance).

Candidate record: :mod:`microbleeds.stages.describe` makes one dict per candidate with the
:data:`~microbleeds.contract.FEATURES`, ``world_mm`` (scanner RAS+ mm) and ``centroid_canonical``;
``api.find_candidates`` adds ``inside_brain`` and ``max_voxel_mm``; ``locate.region_columns`` adds
``region, lobe, hemisphere, region_source, label_id, region_note`` (and ``api.add_regions`` the
``region_confidence``); ``dipole_sign.candidate_signs`` adds ``phase_score, phase_sign,
phase_trusted`` and ``dipole_sign.core_coherences`` ``core_phase_coherence``; ``mimics.classify``
adds ``status, reason, confidence, certainty``. The tables keep the columns of :mod:`microbleeds.contract`.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
from nibabel.affines import apply_affine

from .. import __version__
from ..contract import CANDIDATE_COLUMNS, COUNTED_REGIONS, LESION_COLUMNS, SIZE_BINS_MM, burden_category
from ..io.nifti import native_ornt, open_image
from ..io.sidecar import echo_time_to_ms, echo_times_ms
from ..presets import Parameters
from .load import Scan
from .locate import count_by_region
from .prepare import mask_checks

T2STAR_TE_MS = (5.0, 80.0)
"""Echo times (ms) of T2*-weighted gradient echoes for microbleeds: below 5 ms there is no T2*
contrast (T1 gradient echoes, 2-4 ms); above 80 ms it is a spin-echo T2 or FLAIR (TE 80-140 ms),
since no GRE-T2* / SWI protocol goes that long (1.5 T: 25-50 ms, 3 T: 15-30 ms)."""
SPIN_ECHO_NAMES = re.compile(r"(^|[^a-z])(tse|fse|se|tir|ir|haste|space|spc|cube|flair|vista|blade|propeller|frfse)"
                             r"(\d|[^a-z]|$)", re.IGNORECASE)
"""Sequence names of spin-echo families (Siemens ``*tse2d1_11``, ``*tir2d1_21``, ``*spc``; GE
``FSE``, ``CUBE``; Philips ``TSE``, ``VISTA``)."""
GRADIENT_ECHO_NAMES = re.compile(r"(fl\d|fl[23]d|gre|swi|fgre|ffe|t2\*|t2star|me[23]d|qsm|medic|merge|swan|ven)",
                                 re.IGNORECASE)
"""Sequence names of gradient echoes (Siemens ``*fl3d1r``, ``*swi3d1r``, ``*me2d1``; GE ``SWAN``,
``MERGE``; Philips ``FFE``, ``VEN_BOLD``)."""
DESCRIP_TE = re.compile(r"(?:^|[^a-z])TE\s*[=:]\s*([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
"""``TE=91`` in a NIfTI header's ``descrip`` (dcm2niix writes ``TE=<ms>;Time=...``)."""


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
    """Lesion ids painted on the input's own grid, from the regions' voxel lists (``shape``: the
    canonical grid's). Fortran-ordered, as the NIfTI file stores it; the values are those of
    ``from_canonical`` of the canonical map."""
    offset = np.array([b.start for b in found.box])
    region_of_voxel = np.repeat(np.arange(len(found.regions)), np.diff(found.regions.starts))
    canonical = found.regions.voxels + offset
    native = np.empty_like(canonical)
    native_shape = [0, 0, 0]
    inverse = native_ornt(scan.ornt)  # canonical axis a -> native axis inverse[a, 0], flipped if -1
    for axis in range(3):
        to, flip = int(inverse[axis, 0]), inverse[axis, 1] < 0
        native[:, to] = shape[axis] - 1 - canonical[:, axis] if flip else canonical[:, axis]
        native_shape[to] = shape[axis]
    labels = np.zeros(native_shape, np.int32, order="F")
    labels[tuple(native.T)] = lesion_of_region[region_of_voxel + 1]
    return labels


CALCIFICATION_SITE = "classic site of physiological calcification"
"""Words of the note on lesions in the globus pallidus (dropped when the phase excluded calcifications)."""


def pallidal_lesions(accepted_rows, label_volume):
    """Accepted lesions whose label is the globus pallidus: the classic site of physiological
    calcification a parenchymal lesion can lie in (the pineal gland and the choroid plexus lie in
    CSF spaces, ``outside_brain`` with a segmentation). On magnitude alone such a focus may be
    calcium; deep microbleeds occur there too, so it is counted and shown, never rejected."""
    if label_volume.data is None:
        return 0
    lookup = label_volume.lookup
    return sum(1 for row in accepted_rows
               if "pallidum" in getattr(lookup.get(int(row.get("label_id", -1))), "name", "").lower())


def summarise_regions(summary, accepted_rows, label_volume):
    """Region counts of the accepted candidates (their full records: label ids included)."""
    pallidal = pallidal_lesions(accepted_rows, label_volume)
    summary["counts"]["in_pallidum"] = pallidal
    if pallidal:
        summary["notes"].append(f"{pallidal} lesion(s) in the globus pallidus, a {CALCIFICATION_SITE}: "
                                "where calcifications are not excluded, check them on phase or CT.")
    counts = count_by_region(accepted_rows)
    summary["counts"]["by_region"] = {k: counts[k] for k in COUNTED_REGIONS}
    for key in ("by_lobe", "by_hemisphere", "by_region_hemisphere", "unknown_label_ids", "pattern",
                "by_region_confidence"):
        summary["counts"][key] = counts[key]
    summary["regions"] = {"source": label_volume.source, "notes": list(label_volume.notes)}
    if label_volume.registration is not None:  # the atlas's registration and its quality
        summary["regions"]["registration"] = label_volume.registration


def summarise_phase(summary, swi_result, how):
    """The phase branch's record and the note saying whether calcifications were excluded."""
    from .dipole_sign import TRUSTED_SIGN  # loads the phase kernels: only for a run with phase

    summary["phase"] = swi_result.summary(how)
    evidence = swi_result.sign_evidence
    if evidence.get("confidence") in TRUSTED_SIGN:
        note = (f"Phase given: diamagnetic foci rejected as calcifications (phase sign "
                f"{swi_result.phase_sign:+d}, {evidence.get('method', '')}, confidence {evidence.get('confidence')}).")
    else:
        note = (f"Phase given, but its sign convention could not be settled (confidence "
                f"{evidence.get('confidence')}): calcifications are NOT excluded; rerun with --phase-sign +1 or -1.")
    drop = ("no phase given", CALCIFICATION_SITE) if evidence.get("confidence") in TRUSTED_SIGN else ("no phase given",)
    summary["notes"] = [n for n in summary["notes"] if not any(d in n for d in drop)] + [note]


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
    notes = ["Magnitude only: calcifications cannot be excluded (no phase given)."] + list(scan.notes)
    mask_facts, mask_warnings = mask_checks(brain, scan.voxel_size_mm, params.brain_coverage,
                                            (params.brain_volume_min_ml, params.brain_volume_max_ml))
    details = acquisition_details(scan, params)
    acq = {k: details[k] for k in ACQUISITION_KEYS}
    found = mask_warnings + sequence_warnings(details)
    name = os.path.basename(scan.path) if scan.path else "scan"
    for text in found:
        warnings.warn(f"{name}: {text}", UserWarning, stacklevel=2)
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
        "acquisition": acq,
        "acquisition_metadata": {"sources": details["sources"], "sequence_in_file": details["sequence_in_file"],
                                 **details["from_data"]},
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
        "brain_volume_ml": mask_facts["volume_ml"],  # the same sum, voxel volume and rounding
        "brain_mask": mask_facts,
        "noise_sigma_relative": round(float(noise_sigma), 6),
        "warnings": found,
        "notes": notes,
    }


def header_facts(path, descrip=None) -> dict:
    """What a NIfTI header's ``descrip`` says about the acquisition (``echo_time_ms``); ``{}``
    without a file, a readable header or such a field. ``descrip``: the field's bytes when the
    caller has the header (the scan's, kept at loading), so the file is not read again."""
    if descrip is None:
        if not path:
            return {}
        try:
            descrip = open_image(path).header["descrip"]
        except Exception:  # the scan was read already; a header that fails here just says nothing
            return {}
    text = bytes(np.asarray(descrip).tobytes()).split(b"\0")[0].decode("latin-1", "replace")
    match = DESCRIP_TE.search(text)
    return {"echo_time_ms": float(match.group(1)), "descrip": text} if match else {"descrip": text}


ACQUISITION_KEYS = ("sequence", "field_strength_t", "echo_time_ms", "source")
"""The summary's ``acquisition``; where each value came from is in ``acquisition_metadata``."""


def acquisition(scan: Scan, params: Parameters):
    """The summary's ``acquisition`` (:data:`ACQUISITION_KEYS` of :func:`acquisition_details`)."""
    details = acquisition_details(scan, params)
    return {k: details[k] for k in ACQUISITION_KEYS}


def acquisition_details(scan: Scan, params: Parameters):
    """Sequence, field strength and TE (ms): from the file when it has them (the BIDS sidecar,
    else the header's ``descrip`` for TE), else the preset; ``sources`` says which, per field,
    and ``sequence_in_file`` holds the sidecar's sequence fields.

    For multi-echo data the TE of the echo used is given, or all TEs when echoes were combined.
    """
    side = scan.sidecar
    te = None
    times = echo_times_ms(side) if side else None
    if times:
        words = scan.echo.split()  # "echo 2 of 3" when one echo was picked, "rss of 3 echoes" otherwise
        picked = [int(words[1]) - 1] if words and words[0] == "echo" and words[1].isdigit() else []
        if len(times) == 1:
            te = round(times[0], 4)
        elif picked and picked[0] < len(times):
            te = round(times[picked[0]], 4)
        else:
            te = [round(t, 4) for t in times]
    header = header_facts(scan.path, scan.header_descrip)
    source = {}
    if te is not None:
        source["echo_time_ms"] = "sidecar"
    elif "echo_time_ms" in header:
        te, source["echo_time_ms"] = header["echo_time_ms"], "header"
    else:
        te, source["echo_time_ms"] = params.echo_time_ms, "preset"
    field_t = side.get("MagneticFieldStrength")
    source["field_strength_t"] = "sidecar" if field_t is not None else "preset"
    sequence_fields = {k: side[k] for k in ("ScanningSequence", "SequenceVariant", "SequenceName",
                                             "PulseSequenceType", "PulseSequenceDetails", "SeriesDescription")
                       if isinstance(side.get(k), (str, list))}
    return {
        "sequence": params.sequence,
        "sequence_in_file": sequence_fields or None,
        "field_strength_t": field_t if field_t is not None else params.field_strength_t,
        "echo_time_ms": te,
        "source": "sidecar" if side else ("header" if source["echo_time_ms"] == "header" else "preset"),
        "sources": source,
        "from_data": {"manufacturer": side.get("Manufacturer") if isinstance(side.get("Manufacturer"), str) else None,
                      "repetition_time_ms": _number(side.get("RepetitionTime"), echo_time_to_ms),
                      "flip_angle_deg": _number(side.get("FlipAngle"))},
    }


def _number(value, convert=float):
    """A sidecar's positive number (through ``convert``), None otherwise."""
    return round(convert(value), 4) if isinstance(value, (int, float)) and value > 0 else None


def sequence_warnings(acq) -> list:
    """Warnings when the file's own metadata says the scan is not T2*-weighted (a spin echo, or
    an echo time outside :data:`T2STAR_TE_MS`); the preset's values are never judged."""
    out = []
    fields = acq.get("sequence_in_file") or {}

    def text(key):
        value = fields.get(key)
        return "\\".join(value) if isinstance(value, list) else str(value or "")

    scanning, name = text("ScanningSequence").upper(), text("SequenceName")
    pulse = text("PulseSequenceType").lower()
    says = []
    if scanning and "SE" in re.split(r"[\\/ ,_]+", scanning) and "GR" not in scanning and "EP" not in scanning:
        says.append(f"ScanningSequence {text('ScanningSequence')} (spin echo)")
    if name and SPIN_ECHO_NAMES.search(name.lstrip("*")) and not GRADIENT_ECHO_NAMES.search(name):
        says.append(f"SequenceName {name} (a spin-echo family)")
    if pulse and ("spin echo" in pulse or "spin-echo" in pulse) and "gradient" not in pulse:
        says.append(f"PulseSequenceType {text('PulseSequenceType')}")
    te = acq.get("echo_time_ms")
    te_source = (acq.get("sources") or {}).get("echo_time_ms")
    if te_source in ("sidecar", "header") and te is not None:
        values = te if isinstance(te, list) else [te]
        lo, hi = T2STAR_TE_MS
        longest = max(float(v) for v in values)
        if longest > hi:
            says.append(f"echo time {longest:g} ms in the {te_source} (T2*-weighted GRE / SWI: {lo:g}-{hi:g} ms; "
                        "longer is a spin-echo T2 or FLAIR)")
        elif longest < lo:
            says.append(f"echo time {longest:g} ms in the {te_source} (too short for T2* contrast: "
                        f"{lo:g}-{hi:g} ms)")
    if says:
        out.append("the scan's own metadata says it is not T2*-weighted: " + "; ".join(says)
                   + ". Microbleeds are only seen on T2*-weighted GRE / SWI; the counts are not meaningful")
    return out
