"""What the outputs mean, defined once: columns, regions, size bins, burden, file names, constants.

Every room reads these names from here (the detector's stages, the reader's review, the
measuring bench), so a column, a region name or a size bin cannot drift between the writer and its
readers. Pure Python: importing it loads nothing heavy. ``docs/contract.md`` is the prose version.
"""

from __future__ import annotations

import math

# --------------------------------------------------------------------------- physical constants
GAMMA_BAR_HZ_PER_T = 42.577478518e6
"""Proton gyromagnetic ratio / 2 pi, Hz/T (CODATA 2018)."""

# --------------------------------------------------------------------------- MARS (Gregoire 2009)
MARS_JUXTACORTICAL_MM = 3.0
"""White matter within this distance of cortex counts as lobar (juxtacortical), mm."""

MARS_PERIVENTRICULAR_MM = 10.0
"""White matter within this distance of a lateral ventricle counts as periventricular (deep), mm."""

REGIONS = ("lobar", "deep", "infratentorial", "outside_brain", "unknown")
"""Values of a candidate's ``region``."""

COUNTED_REGIONS = ("lobar", "deep", "infratentorial", "unknown")
"""Regions an accepted lesion can have (``outside_brain`` candidates are rejected)."""

LOBES = ("frontal", "parietal", "temporal", "occipital", "insula")
"""Values of ``lobe`` (empty string: not lobar, or lobe unknown)."""

REGION_SOURCES = ("labels", "labels_resampled", "labels_registered", "atlas", "none")
"""Values of ``region_source``: where the region came from."""

REGION_CONFIDENCES = ("high", "low", "")
"""Values of ``region_confidence``: ``low`` within 2 mm of a boundary the region depends on (another
MARS region's label, the juxtacortical distance) or from an atlas registration of moderate quality;
'' without a MARS region (unknown, outside the brain)."""

# --------------------------------------------------------------------------- tables
FEATURES = (  # describe's features, columns of candidates.tsv in this order
    "diameter_mm", "max_inplane_diameter_mm", "volume_mm3", "n_voxels", "depth", "contrast",
    "background", "cnr", "circularity", "elongation", "inplane_elongation", "n_slices",
    "through_plane_ratio", "centroid_shift_mm", "vesselness", "halo_elongation", "halo_extent_mm",
    "halo_depth_ratio", "halo_width_ratio", "ring_interior_mm3", "edge_distance_mm", "reached_limit",
    "frst_response",
)

LESION_COLUMNS = (
    "lesion_id", "x_mm", "y_mm", "z_mm", "i", "j", "k", "diameter_mm", "max_inplane_diameter_mm",
    "volume_mm3", "contrast", "confidence", "certainty", "region", "lobe", "hemisphere", "region_source",
    "region_confidence",
)
"""Columns of ``lesions.tsv`` (x/y/z: scanner RAS+ mm; i/j/k: voxel of the input file)."""

CANDIDATE_COLUMNS = (
    ("candidate_id", "status", "reason", "lesion_id", "x_mm", "y_mm", "z_mm", "i", "j", "k")
    + FEATURES
    + ("phase_score", "phase_sign", "core_phase_coherence", "confidence", "certainty", "region", "lobe",
       "hemisphere", "region_source", "region_confidence")
)
"""Columns of ``candidates.tsv``: every candidate, its features and the rule that rejected it."""

REVIEW_COLUMNS = ("candidate_id", "reviewed_status", "mimic_type", "reviewer", "review_time")
"""Columns a review adds to ``lesions_reviewed.tsv``."""

DECISION_COLUMNS = (
    "sha256", "candidate_id", "lesion_id", "decision", "mimic_type", "reviewer", "time",
    "x_mm", "y_mm", "z_mm",
)
"""Columns of a reader's decisions TSV (saved by the review page)."""

DECISIONS = ("confirmed", "rejected")
MIMIC_TYPES = ("", "vein", "calcification", "other")
REVIEWED_STATUSES = ("confirmed", "rejected", "added", "unreviewed")

# --------------------------------------------------------------------------- counts
SIZE_BINS_MM = ((0.0, 2.0, "<2mm"), (2.0, 5.0, "2-5mm"), (5.0, 10.0, "5-10mm"), (10.0, math.inf, ">=10mm"))
"""Size bins of the counts, ``(low, high, label)``: low <= apparent diameter (mm) < high."""

BURDEN_CATEGORIES = ("0", "1", "2-4", ">=5")
"""Burden categories of the ITP study (Blood 2020)."""


def burden_category(count) -> str:
    """Burden category of the ITP study (Blood 2020): '0', '1', '2-4' or '>=5' microbleeds."""
    count = int(count)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return "0" if count == 0 else "1" if count == 1 else "2-4" if count <= 4 else ">=5"


# --------------------------------------------------------------------------- result files
LESIONS_FILE = "lesions.tsv"
CANDIDATES_FILE = "candidates.tsv"
LABELS_FILE = "labels.nii.gz"
MASK_FILE = "mask.nii.gz"
SUMMARY_FILE = "summary.json"
RESULT_FILES = (LESIONS_FILE, CANDIDATES_FILE, LABELS_FILE, MASK_FILE, SUMMARY_FILE)
"""The files of one scan's result folder, always written together."""

SWI_FILE = "swi.nii.gz"
FILTERED_PHASE_FILE = "phase_filtered.nii.gz"
REPORT_FILE = "report.html"

REVIEW_DECISIONS_FILE = "review_decisions.tsv"
REVIEWED_LESIONS_FILE = "lesions_reviewed.tsv"
REVIEWED_SUMMARY_FILE = "summary_reviewed.json"
REVIEW_FILES = (REVIEW_DECISIONS_FILE, REVIEWED_LESIONS_FILE, REVIEWED_SUMMARY_FILE)
"""What ``review apply`` adds beside the automatic result (which it never overwrites)."""
SUPERSEDED_REVIEW_DIR = "superseded_review"
