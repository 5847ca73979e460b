"""What each column of the lesion and candidate tables means: the TSVs' JSON sidecars (BIDS
``Description``, ``Units``, ``Levels``). Columns are :mod:`microbleeds.contract`'s; every column of
``LESION_COLUMNS`` and ``CANDIDATE_COLUMNS`` has an entry here (tested)."""

from __future__ import annotations

from ..contract import LOBES, REGION_SOURCES, REGIONS


def _c(description, units=None, levels=None):
    out = {"Description": description}
    if units:
        out["Units"] = units
    if levels:
        out["Levels"] = levels
    return out


_REGION_TEXT = {"lobar": "cortex and juxtacortical white matter (MARS)", "deep": "basal ganglia, thalamus, "
                "internal/external capsule, corpus callosum, deep and periventricular white matter",
                "infratentorial": "brainstem and cerebellum", "outside_brain": "CSF or outside the brain",
                "unknown": "no segmentation, and no atlas (its registration failed the quality check, "
                "or --no-atlas)"}
_REGION_LEVELS = {region: _REGION_TEXT.get(region, region) for region in REGIONS}
_SOURCE_TEXT = {"labels": "the segmentation given, on the scan's grid",
                "labels_resampled": "the segmentation, looked up through the affines",
                "labels_registered": "the segmentation, registered through its T1w",
                "atlas": "the registered AAL3 atlas (low trust)", "none": "no segmentation"}
_COMMON = {
    "lesion_id": _c("Lesion number, 1..N; the value of the lesion in the _desc-cmb_dseg.nii.gz map (0: rejected)"),
    "x_mm": _c("Centroid, scanner RAS+ x (from the NIfTI affine)", "mm"),
    "y_mm": _c("Centroid, scanner RAS+ y", "mm"),
    "z_mm": _c("Centroid, scanner RAS+ z", "mm"),
    "i": _c("Voxel index (0-based) of the centroid along the file's first axis"),
    "j": _c("Voxel index (0-based) along the file's second axis"),
    "k": _c("Voxel index (0-based) along the file's third axis"),
    "diameter_mm": _c("Apparent diameter of the equivalent sphere (blooming included, as in MARS)", "mm"),
    "max_inplane_diameter_mm": _c("Largest in-plane extent", "mm"),
    "volume_mm3": _c("Segmented volume", "mm^3"),
    "contrast": _c("Darkness relative to the surrounding tissue (0: none, 1: black)"),
    "confidence": _c("Weakest margin over the mimic rules (0.5-1: accepted; below 0.5: rejected)"),
    "certainty": _c("Certainty of an accepted lesion", levels={"definite": "confidence >= the preset's "
                                                                          "definite_confidence",
                                                               "possible": "accepted with a smaller margin"}),
    "region": _c("MARS region", levels=_REGION_LEVELS),
    "lobe": _c("Lobe of a lobar lesion (n/a: not lobar or unknown)", levels={lobe: lobe for lobe in LOBES}),
    "hemisphere": _c("Hemisphere", levels={"left": "left", "right": "right", "midline": "midline"}),
    "region_source": _c("Where the region came from", levels={source: _SOURCE_TEXT.get(source, source)
                                                                for source in REGION_SOURCES}),
    "region_confidence": _c("How sure the region is", levels={
        "high": "away from the boundaries the region depends on", "low": "within 2 mm of such a boundary, or "
        "from an atlas registration of moderate quality", "n/a": "no MARS region (unknown, outside the brain)"}),
}

LESION_COLUMN_DOCS = dict(_COMMON)
"""Sidecar of ``_desc-cmb_lesions.tsv`` (accepted lesions)."""

CANDIDATE_COLUMN_DOCS = dict(_COMMON, **{
    "candidate_id": _c("Candidate number, 1..M, ordered by position"),
    "status": _c("Outcome of the mimic rules", levels={"accepted": "a microbleed", "rejected": "a mimic"}),
    "reason": _c("Rule that rejected the candidate (n/a: accepted)", levels={
        "outside_brain": "in CSF or outside the brain", "brain_edge": "at the brain's edge (air-tissue dropout, "
        "partial volume)", "too_large": "larger than the largest microbleed", "too_small": "smaller than the "
        "smallest", "tubular": "elongated: a vein",
        "embedded": "a darker spot of a larger dark structure (vein tree, sinus, dark tissue)",
        "faint": "too little contrast or CNR, or no dark core (a resolved focus whose core is not dephased: "
        "iron-rich nuclei)",
        "calcification": "diamagnetic dipole (phase)", "cavernoma": "a dark rim around a core that is not dark",
        "no_dipole": "no dipole in the phase (trusted convention): a magnitude dip with no field source"}),
    "n_voxels": _c("Voxels in the segmented region"),
    "depth": _c("Darkness of the region's core relative to its background"),
    "background": _c("Relative intensity of the background shell (tissue = 1)"),
    "cnr": _c("Contrast-to-noise ratio (contrast / the scan's relative noise)"),
    "circularity": _c("In-plane circularity (1: a disc)"),
    "elongation": _c("3D elongation: ratio of the largest to the smallest principal axis"),
    "inplane_elongation": _c("In-plane elongation: ratio of the principal axes in the slice"),
    "n_slices": _c("Slices the region spans"),
    "through_plane_ratio": _c("Through-plane extent over in-plane extent"),
    "centroid_shift_mm": _c("Drift of the in-plane centroid across slices", "mm"),
    "vesselness": _c("In-plane Hessian line-likeness (0: blob, 1: line)"),
    "halo_elongation": _c("Elongation of the dark halo around the region (veins continue)"),
    "halo_extent_mm": _c("Extent of the dark halo", "mm"),
    "halo_depth_ratio": _c("Darkness of the halo relative to the focus (a vein fragment is about as dark as "
                           "the line it lies on; a focus touching a vein is much darker)"),
    "halo_width_ratio": _c("Thickness of the focus over that of the dark structure it touches (a vein's "
                           "darker stretch is about as thick as the vein; a focus on a vein much thicker)"),
    "ring_interior_mm3": _c("Volume enclosed by a dark rim that is not dark itself (a cavernoma's core)", "mm^3"),
    "edge_distance_mm": _c("Distance to the brain mask's edge", "mm"),
    "reached_limit": _c("Region growth stopped at the largest diameter", levels={"true": "yes", "false": "no"}),
    "frst_response": _c("Fast radial symmetry transform response at the seed (reads as contrast)"),
    "phase_score": _c("Goodness of the dipole-field fit's sign (n/a: no phase)"),
    "phase_sign": _c("Dipole sign from the phase", levels={"1": "paramagnetic (hemosiderin)",
                                                            "-1": "diamagnetic (calcium)", "0": "undecided"}),
    "core_phase_coherence": _c("Phase coherence of the darkest quarter of the focus (near 0: dephased "
                               "completely, as by hemosiderin; near 1: signal left, as in an iron-rich "
                               "nucleus; n/a: no phase, or too few voxels)"),
})
"""Sidecar of ``_desc-cmb_candidates.tsv`` (every candidate)."""
