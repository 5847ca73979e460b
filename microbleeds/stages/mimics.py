"""Filter mimics: named rules that reject candidates, plus certainty and confidence.

Each rule compares one feature with one parameter; the first rule a candidate fails is its
rejection reason. Rules, in order:

``outside_brain``   the region's centre is outside the brain mask (or in CSF, once located)
``brain_edge``      within ``edge_margin_mm`` of the brain-mask edge: partial volume, air-tissue dropout
``calcification``   diamagnetic dipole in the filtered phase (needs phase, and a phase convention
                    that was forced or estimated with high or moderate confidence)
``cavernoma``       a dark rim enclosing more than ``max_ring_interior_mm3`` that is not dark
                    (``ring_interior_mm3``): the haemosiderin rim of a cavernous malformation
                    around its core of blood of mixed age; a microbleed is dark to its centre
``too_large``       equivalent diameter above ``max_diameter_mm``, or growth never closed
``tubular``         veins: elongated in the axial plane (``max_elongation``; read only on regions
                    at least :data:`LINE_MIN_PIXELS` pixels long in-plane) or in 3D
                    (``max_elongation_3d``), line-like in-plane Hessian (``max_vesselness``),
                    continuing through more slices than its width allows
                    (``max_through_plane_ratio``), drifting across slices
                    (``max_centroid_shift_mm`` per slice and more than half its in-plane width:
                    a compact focus's cross-sections overlap), or a fragment of a longer faint
                    line (``max_halo_elongation``) about as dark as itself
                    (``min_halo_depth_ratio``: a focus touching a vein is much darker than the
                    vein, a vein fragment is not; a focus touching a vein is round in 3D,
                    elongation at most ``max_elongation`` plus one soft width), unless it is
                    round and :data:`WIDER_THAN_LINE` times as thick as the line
                    (``halo_width_ratio``): a large microbleed on a vein, whose depth the noise
                    floor of a coil array holds at 0.8-0.9, is as dark as the vein's halo reads
                    beside it, but no stretch of a vein is twice the vein's thickness
``too_small``       equivalent diameter below ``min_diameter_mm``, or narrower in-plane than
                    ``min_inplane_diameter_mm`` (thick slices: a one-voxel dip of a 5 mm slice
                    has an equivalent diameter of 1.3 mm but is 0.45 mm wide), the width read to
                    half a pixel (:data:`WIDTH_QUANTUM_PIXELS`: one pixel of 0.8 mm may be a 1.2 mm focus)
``faint``           contrast to its shell (on slices thicker than the shell reaches, averaged with
                    the slices above and below: ``describe``) below ``min_contrast``, CNR below
                    ``min_cnr``, or a focus resolved in-plane without a dark core (``min_core_depth``;
                    with phase, a core whose phase is coherent, ``core_phase_coherence`` above
                    :data:`MAX_CORE_COHERENCE`: signal left where hemosiderin leaves noise):
                    noise, iron-rich nuclei. A compact focus (3D elongation at most
                    ``max_elongation``, in-plane line-likeness at most :data:`ROUND_VESSELNESS`)
                    whose phase shows a paramagnetic dipole (trusted convention) needs only
                    :data:`DIPOLE_CONTRAST_FRACTION` of ``min_contrast``: the dipole is evidence
                    of a dephasing source, which partial volume and a multi-echo combination's
                    short echoes dilute in the magnitude
``embedded``        a darker spot of a larger dark structure that is not a line: its 3/8-depth
                    component reaches more than 3 mm beyond it and stays at least
                    ``min_halo_depth_ratio`` as dark as the candidate (``halo_depth_ratio``),
                    however it is shaped (a vein bend or tree, a sinus, dark tissue at a
                    grey-white border under thick slices): a microbleed's dephased core is much
                    darker than anything it touches, so its own contrast is not the structure's;
                    a core darker than ``COMPLETE_DEPTH`` (completely dephased) is exempt, and so
                    is a round focus :data:`WIDER_THAN_LINE` times as thick as the structure; for a
                    candidate dephased through (``describe.FOCUS_DEPTH``) the structure leaves out
                    other deep round foci: a cluster's microbleeds touch each other
``no_dipole``       with phase under a trusted convention (and ``require_dipole``), a focus whose
                    dipole fit decides no sign: hemosiderin is a field source whose dipole the
                    fit decides wherever the magnitude shows its blooming; a dark spot without
                    one is a magnitude dip with no source of its own (Gibbs ringing, a motion
                    ghost, noise, tissue of low signal) or a weak calcification; a completely
                    dephased core (``COMPLETE_DEPTH``) is exempt: only a strong source darkens a
                    voxel that far, so an undecided fit there is the fit's failure (phase wraps,
                    background field), not the absence of a source

Confidence is the smallest of per-rule soft margins (logistic, 0.5 at each rule's threshold),
so every accepted candidate has confidence > 0.5 and the weakest feature decides. MARS
(Gregoire et al. 2009, Neurology 73:1759) asks raters for *definite* or *possible*: here a
lesion is ``definite`` when its confidence reaches ``definite_confidence``.
"""

from __future__ import annotations

import math

import numpy as np

# Soft widths of the confidence: how far past a rule's threshold (in the rule's own unit) a
# feature must lie to be trusted (the logistic reaches 0.73 at one width, 0.88 at two). They decide
# definite / possible, not acceptance. Each is about the measurement's own uncertainty.
EDGE_SOFT_MM = 0.5
"""Distance to the brain edge, mm: about half a voxel of the mask."""
LARGE_SOFT_MM = 0.5
"""Equivalent diameter near ``max_diameter_mm``, mm: half a voxel of blooming either way."""
SMALL_SOFT_MM = 0.2
"""Equivalent diameter near ``min_diameter_mm``, mm: small foci are measured to ~0.2 mm."""
TUBULAR_SOFT = 0.25
"""Elongation ratios (and centroid drift, mm per slice) near their limits."""
VESSELNESS_PER_ELONGATION = 2.0
"""Hessian line-likeness (0..1) to elongation units: 0.5 of vesselness weighs as 1 of elongation."""
FAINT_SOFT = 0.05
"""Contrast to the background shell (tissue = 1) near ``min_contrast``: ~1 noise sigma at SNR 20."""
CNR_PER_CONTRAST = 20.0
"""CNR margin to contrast units: at SNR 20 a contrast of 1 is a CNR of ~20."""
CALCIFICATION_SOFT = 0.02
"""Dipole phase score (radians, relative) near 0: clear sources score 0.03-0.3."""
HALO_REACH_MM = 3.0
"""A 3/8-depth component reaching this far beyond the candidate's diameter is a vein's, mm."""
RESOLVED_MM = 3.0
RESOLVED_VOXELS = 3.0
"""A focus at least this wide (mm, and voxels across) is resolved: it must show a dark core."""
DRIFT_WIDTH_FRACTION = 0.5
"""Centroid drift per slice, as a fraction of the in-plane width, beyond which consecutive
cross-sections no longer overlap by half: a tube crossing the slices obliquely."""
COMPLETE_DEPTH = 0.9
"""A core darker than this (under 10 % of the tissue's signal) is completely dephased: a focus that
dark is exempt from ``embedded`` whatever it touches (on a vendor SWI a vein can be nearly as dark)."""
DIPOLE_CONTRAST_FRACTION = 0.75
"""Contrast, as a fraction of ``min_contrast``, that a compact focus with a paramagnetic dipole in
the phase must reach (0.3 at 3 T). ``min_contrast`` is set for a focus whose only evidence is its
magnitude at one echo near T2*/2. The same hemosiderin seen through a 1.5-2 mm slice (a 2 mm focus
fills the slice profile only at its centre) or in a T2*-weighted sum of echoes whose first ones
bloom little measures less against its shell: on simulated 3 T scans, CMBs of noise-free contrast
0.6-0.95 measured 0.32-0.40 (6 echoes 5-35 ms; a 1.5 mm slice under a tilted head), while their
dipole field, which reaches beyond the dephased voxels, was decided. Veins are paramagnetic too:
the relaxation needs a focus round in 3D and in-plane and clearly (:data:`CLEAR_WIDTHS` soft
widths) darker than any larger structure it touches (``embedded``), and ``tubular`` still applies."""
CLEAR_WIDTHS = 2.0
"""Soft widths by which a focus accepted on its dipole's evidence must pass ``embedded`` (its
logistic at 0.88): a faint spot on a vein or a dark band is paramagnetic too."""
ROUND_VESSELNESS = 0.5
"""In-plane line-likeness (1 - small / large Hessian eigenvalue) of a round focus: its two in-plane
curvatures within a factor 2 of each other, as its 3D extents are (``max_elongation`` 2)."""
EMBEDDED_SOFT = 0.025
"""Halo darkness ratio near ``min_halo_depth_ratio``: a median over tens of voxels, relative to the
depth, moves by ~0.02 with the noise (sigma 0.05 at SNR 20)."""
RING_SOFT_MM3 = 5.0
"""Enclosed volume near ``max_ring_interior_mm3``, mm3: a few voxels."""
LINE_MIN_PIXELS = 3.5
"""In-plane extent (``max_inplane_diameter_mm``: largest centre distance plus one pixel), in pixels,
from which a region's in-plane elongation is read as a shape. Up to three pixels lie on a line by
the grid alone (an adjacent pair measures 2.0, a diagonal pair 2.6, three pixels of a focus 1.5
pixels wide 2.0-2.2, against ``max_elongation`` 2); a vein fragment long enough to be told from a
blob spans at least four (centres 2.5 pixels apart)."""
WIDTH_QUANTUM_PIXELS = 0.5
"""An outline ``n`` pixels across is the image of a focus ``n - 0.5`` to ``n + 0.5`` pixels wide: the
in-plane width is compared with ``min_inplane_diameter_mm`` at its upper end (pixels of 0.8-1 mm and
more: a one-pixel focus passes; 0.45 mm pixels: it is still too small)."""
WIDER_THAN_LINE = 2.0
"""Thickness of a focus over that of the structure it touches (``halo_width_ratio``: the radii of the
largest balls inside their 3/8-depth component, the focus's and the structure's within 4 mm of it)
from which the focus is one lying on the structure, not its darker stretch: a vein's bend, junction
or crossing is about as thick as the vein (the hard tuning phantoms' 444 ``tubular`` candidates:
median 0.75, nine in ten below 1.41, and of the 19 at 2 or more, 14 elongated), the blooming of a
4-5 mm microbleed on a vein of one or two voxels 2.4-4.5 times."""
MAX_CORE_COHERENCE = 0.7
"""Largest phase coherence of a resolved focus's core (:func:`~microbleeds.stages.dipole_sign.core_phase_coherence`,
``exp(-1 / SNR^2)``): 0.7 is a core whose signal is 1.7 times its noise, signal that complete dephasing
leaves no trace of (pure noise reads about 0.2 on the 20 pairs the measure needs at least, less on more)."""

_LOGIT_CLAMP = 50.0  # margins beyond 50 widths saturate (no overflow in exp)


def _soft(margin, width):
    """Logistic of a signed margin (positive = passes), 0.5 at the threshold."""
    return 1.0 / (1.0 + math.exp(-max(min(margin / width, _LOGIT_CLAMP), -_LOGIT_CLAMP)))


def rule_margins(row, p):
    """Signed margins of every rule (positive passes), with the soft widths used for confidence."""
    margins = {
        "brain_edge": (row["edge_distance_mm"] - p.edge_margin_mm, EDGE_SOFT_MM),
        "too_large": (p.max_diameter_mm - row["diameter_mm"], LARGE_SOFT_MM),
        "tubular": (min(_inplane_elongation_margin(row, p),
                        p.max_elongation_3d - row["elongation"],
                        VESSELNESS_PER_ELONGATION * (p.max_vesselness - row["vesselness"]),
                        p.max_through_plane_ratio - row["through_plane_ratio"],
                        _drift_margin(row, p),
                        _halo_margin(row, p)), TUBULAR_SOFT),
        # a round focus much thicker than the structure it touches is not that structure's darker spot
        "embedded": (1.0 if _wider_than_line(row, p) else _embedded_margin(row, p), EMBEDDED_SOFT),
        "too_small": (min(row["diameter_mm"] - p.min_diameter_mm, _inplane_width_margin(row, p)), SMALL_SOFT_MM),
        "cavernoma": (p.max_ring_interior_mm3 - row.get("ring_interior_mm3", 0.0), RING_SOFT_MM3),
        "faint": (min(row["contrast"] - _contrast_floor(row, p), (row["cnr"] - p.min_cnr) / CNR_PER_CONTRAST,
                      _core_margin(row, p)), FAINT_SOFT),
    }
    if (p.reject_calcifications and row.get("phase_score") is not None and row.get("phase_sign")
            and row.get("phase_trusted")):
        margins["calcification"] = (row["phase_score"], CALCIFICATION_SOFT)
    if _dipole_required(row, p) and row.get("phase_sign") == 0 and row["depth"] < COMPLETE_DEPTH:
        margins["no_dipole"] = (-CALCIFICATION_SOFT, CALCIFICATION_SOFT)  # undecided: one soft width short
    return margins


def _dipole_required(row, p):
    """True where the phase can decide a dipole: phase given, its convention trusted, rule on."""
    return bool(p.require_dipole and row.get("phase_sign") is not None and row.get("phase_trusted"))


def _inplane_elongation_margin(row, p):
    """``max_elongation`` minus the in-plane elongation, for a region at least
    :data:`LINE_MIN_PIXELS` pixels long in-plane (``max_inplane_diameter_mm`` over ``pixel_mm``):
    two pixels always lie on a line (an adjacent pair measures 2.0, a diagonal one 2.6 with the
    pixel's own extent), so a focus the size of a pixel or two shows no shape in-plane; its
    line-likeness is the Hessian's (``max_vesselness``), at the region's scale."""
    pixel = row.get("pixel_mm", 0.0)
    if pixel > 0 and row.get("max_inplane_diameter_mm", np.inf) < LINE_MIN_PIXELS * pixel:
        return 1.0
    return p.max_elongation - row["inplane_elongation"]


def _inplane_width_margin(row, p):
    """In-plane width (``max_inplane_diameter_mm``: centre extent plus one pixel) minus
    ``min_inplane_diameter_mm``, the width read to within :data:`WIDTH_QUANTUM_PIXELS` of a pixel
    (``pixel_mm``): a focus whose half-depth outline covers ``n`` pixels across is ``n`` +/- 0.5
    pixels wide, so a one-pixel outline of 0.8 mm pixels may be a 1.2 mm focus, while one of 0.45 mm
    pixels (a one-voxel dip of a thick 2D slice) is at most 0.7 mm wide."""
    return (row.get("max_inplane_diameter_mm", np.inf) + WIDTH_QUANTUM_PIXELS * row.get("pixel_mm", 0.0)
            - p.min_inplane_diameter_mm)


def _drift_margin(row, p):
    """Centroid drift between consecutive slices (mm) is a vein's only when it exceeds
    ``max_centroid_shift_mm`` *and* half the candidate's in-plane width: the cross-sections of a
    compact focus (lobulated, or two foci of a cluster) overlap from slice to slice, so its centroid
    stays inside its own footprint; an oblique tube's cross-sections step sideways by more than their
    radius."""
    shift = row["centroid_shift_mm"]
    half_width = DRIFT_WIDTH_FRACTION * row.get("max_inplane_diameter_mm", 0.0)
    return max(p.max_centroid_shift_mm - shift, half_width - shift)


def _halo_margin(row, p):
    """A candidate sitting on a longer dark line of about its own darkness (its 3/8-depth
    component reaching more than :data:`HALO_REACH_MM` beyond it, and elongated) is a fragment of a vein.
    On a much fainter one (``halo_depth_ratio`` below ``min_halo_depth_ratio``) it is a focus beside
    a vein when it is round in 3D: elongation at most ``max_elongation`` (segment's round basin)
    plus one soft width, not ``max_elongation_3d``; a microbleed's blooming is at most 1.26 times
    longer along B0, while the darker stretch of a vein where it bends or meets another is a
    piece of a tube (3D elongation 2.4-3 on the tuning phantoms' accepted false positives, 1.1-2.1
    for microbleeds beside veins)."""
    if row.get("halo_extent_mm", 0.0) <= row["diameter_mm"] + HALO_REACH_MM:
        return 1.0
    if row.get("halo_depth_ratio", 1.0) < p.min_halo_depth_ratio or _wider_than_line(row, p):
        # the line is much fainter than the candidate, or much narrower: a focus beside a vein, if round in 3D
        return p.max_elongation + TUBULAR_SOFT - row["elongation"]
    return p.max_halo_elongation - row["halo_elongation"]


def _embedded_margin(row, p):
    """A candidate whose 3/8-depth component reaches more than :data:`HALO_REACH_MM` beyond it
    (of any shape) must be much darker than that component: ``min_halo_depth_ratio`` minus its
    ``halo_depth_ratio``. The elongated case is :func:`_halo_margin`'s vein fragment; this one is a
    vein bend or tree, a sinus, or a band of dark tissue that the focus is only a darker spot of."""
    if row.get("halo_extent_mm", 0.0) <= row["diameter_mm"] + HALO_REACH_MM or row["depth"] >= COMPLETE_DEPTH:
        return 1.0
    return p.min_halo_depth_ratio - row.get("halo_depth_ratio", 0.0)


def _wider_than_line(row, p):
    """A focus round in 3D (``elongation`` at most ``max_elongation`` plus one soft width) at least
    :data:`WIDER_THAN_LINE` times as thick as the dark structure it touches (``halo_width_ratio``)
    is no piece of that structure. It passes ``embedded`` and the halo part of ``tubular`` on that
    ground, but is not "clearly darker" than the structure for the dipole's contrast floor
    (:func:`_contrast_floor` reads :func:`_embedded_margin` itself)."""
    return (row.get("halo_width_ratio", 0.0) >= WIDER_THAN_LINE
            and row["elongation"] <= p.max_elongation + TUBULAR_SOFT)


def _contrast_floor(row, p):
    """Least contrast to the shell: ``min_contrast``, or :data:`DIPOLE_CONTRAST_FRACTION` of it for a
    focus round in 3D (``elongation`` <= ``max_elongation``) and in-plane (``vesselness`` <=
    :data:`ROUND_VESSELNESS`), clearly darker than what it touches (``embedded`` passed by
    :data:`CLEAR_WIDTHS` soft widths), whose phase shows a paramagnetic dipole under a trusted
    convention."""
    if (row.get("phase_sign") == 1 and row.get("phase_trusted") and row["elongation"] <= p.max_elongation
            and row["vesselness"] <= ROUND_VESSELNESS
            and _embedded_margin(row, p) >= CLEAR_WIDTHS * EMBEDDED_SOFT):
        return DIPOLE_CONTRAST_FRACTION * p.min_contrast
    return p.min_contrast


def _core_margin(row, p):
    """A resolved focus (>= 3 mm and >= 3 voxels across in every direction) must have a dark core
    (``min_core_depth``): hemosiderin dephases its centre completely, while iron-rich nuclei or
    partial volume only darken a region moderately. With phase, the core's signal is read from its
    phase too (``core_phase_coherence`` at most :data:`MAX_CORE_COHERENCE`): under a coil array's
    noise floor a dephased core and an iron-rich nucleus read alike in the magnitude, but only the
    nucleus keeps a phase. Smaller foci pass (their core is partial-volumed)."""
    if row["diameter_mm"] < max(RESOLVED_MM, RESOLVED_VOXELS * row.get("max_voxel_mm", 1.0)):
        return 1.0
    margin = row["depth"] - p.min_core_depth
    if row.get("core_phase_coherence") is not None:
        margin = min(margin, MAX_CORE_COHERENCE - row["core_phase_coherence"])
    return margin


def classify(row, p):
    """Set ``status``, ``reason``, ``confidence`` and ``certainty`` of one candidate in place."""
    margins = rule_margins(row, p)
    reason = ""
    if not row.get("inside_brain", True):
        reason = "outside_brain"
    elif row.get("region") == "outside_brain":
        reason = "outside_brain"
    elif margins["brain_edge"][0] < 0:
        reason = "brain_edge"
    elif row.get("phase_sign") == -1 and row.get("phase_trusted") and p.reject_calcifications:
        reason = "calcification"  # the phase is the most specific evidence: it decides first
    elif margins["cavernoma"][0] < 0:
        reason = "cavernoma"
    elif margins["too_large"][0] < 0 or row["reached_limit"]:
        reason = "tubular" if margins["tubular"][0] < 0 else "too_large"
    elif margins["tubular"][0] < 0:
        reason = "tubular"
    elif margins["too_small"][0] < 0:
        reason = "too_small"
    elif margins["faint"][0] < 0:
        reason = "faint"
    elif margins["embedded"][0] < 0:
        reason = "embedded"
    elif "no_dipole" in margins:
        reason = "no_dipole"
    confidence = min(_soft(m, w) for m, w in margins.values())
    if reason and confidence > 0.5:
        confidence = 0.5 * confidence  # a rejected candidate never looks surer than an accepted one
    row["status"] = "rejected" if reason else "accepted"
    row["reason"] = reason
    row["confidence"] = round(float(confidence), 4)
    row["certainty"] = "" if reason else ("definite" if confidence >= p.definite_confidence else "possible")
    return row
