"""The ground-truth table of a phantom, ``<name>_truth.tsv``: written by :mod:`.phantoms`, read by
:mod:`.evaluate` (docs/contract.md, "Ground truth of a phantom").

One row per source: ``x_mm, y_mm, z_mm`` its world (RAS+) centre, ``diameter_mm`` its true
diameter (not the blooming size), ``chi_ppm`` its susceptibility relative to the tissue around it.
"""

TRUTH_SUFFIX = "_truth.tsv"
"""File name ending of a truth table; the scan's name is what comes before it."""

TRUTH_COLUMNS = ("truth_id", "type", "x_mm", "y_mm", "z_mm", "diameter_mm", "chi_ppm", "region",
                 "lobe", "hemisphere")
"""Columns of a truth table, in this order."""

TRUTH_TYPES = ("cmb", "calcification", "cavernoma", "siderosis")
"""Values of ``type``: ``cmb`` (to be found), ``calcification`` (a point mimic, matched one to one),
``cavernoma`` and ``siderosis`` (extended mimics: any detection within their radius + the matching
limit of their centre is one of them reported as a microbleed)."""

POINT_MIMICS = ("calcification",)
EXTENDED_MIMICS = ("cavernoma", "siderosis")

TRUTH_REGIONS = ("lobar", "deep", "infratentorial")
"""Values of ``region``: the MARS class of the source (Gregoire et al. 2009)."""
