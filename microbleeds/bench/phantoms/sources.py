"""Microbleeds (CMBs) and calcifications of the phantom: explicit ones, random placement, and
their blooming put into a complex image.

A source is a sphere (true diameter in mm, susceptibility chi in ppm relative to the tissue around
it). Random sources are centred in brain tissue (never in sulcal CSF or a ventricle), at least
max(3 mm, radius + 2 mm) inside the brain surface, do not overlap (centre distance >= sum of
radii + 3 mm) and keep radius + 1.5 mm from every vein wall. Their *placement* aims at a target
region with a simpler rule than the recorded truth (:func:`.truth._location` vs
:func:`.truth._truth_location`), kept so that the images of a seed do not change.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..dipole import source_factor
from ..truth_table import TRUTH_TYPES
from .params import _BRAIN, CAUDATE, PALLIDUM, PUTAMEN, THALAMUS, TISSUE_LABELS, WM
from .truth import _location, _truth_location

_GAP_MM = 3.0
"""Smallest distance between the surfaces of two sources (mm)."""
_VEIN_GAP_MM = 1.5
"""Smallest distance between a random source's surface and a vein wall (mm)."""
_MIN_DEPTH_MM = 3.0
"""A random source's centre is at least max(this, radius + 2 mm) below the brain surface."""
_MAX_TRIES = 4000
"""Candidate centres drawn per source and target region."""
_CALCIFICATION_TISSUES = (PALLIDUM, PUTAMEN, CAUDATE, WM, THALAMUS)
"""Tissue allowed just outside a calcification (calcifications target the pallidum / putamen)."""
_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                 dtype=np.float64)


def _truth_row(kind, p, diameter_mm, chi_ppm, lab, dep, anat) -> dict:
    """Truth row (without ``truth_id``) of a source of ``kind`` centred at world point ``p``."""
    reg, lobe, hemi = _truth_location(p, 0.5 * float(diameter_mm), lab, dep, anat)
    return dict(type=kind, x_mm=float(p[0]), y_mm=float(p[1]), z_mm=float(p[2]),
                diameter_mm=float(diameter_mm), chi_ppm=float(chi_ppm), region=reg, lobe=lobe,
                hemisphere=hemi)


def _explicit_sources(params, anat) -> list:
    """Truth rows of ``params.sources``; warns when a source is not centred in brain tissue."""
    rows = []
    for src in params.sources:
        p = np.array([src["x_mm"], src["y_mm"], src["z_mm"]], dtype=np.float64)
        kind = str(src.get("type", "cmb"))
        if kind not in TRUTH_TYPES:
            raise ValueError(f"source type must be 'cmb' or 'calcification', got {kind!r}")
        lb, dp = anat.points(p[None, :])
        if int(lb[0]) not in _BRAIN:
            warnings.warn(f"source at ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm is centred in "
                          f"{TISSUE_LABELS.get(int(lb[0]), 'unknown tissue')}, not in brain "
                          "tissue; its truth region is a guess (the lobe rule's, 'lobar', for "
                          "cerebral CSF)", RuntimeWarning, stacklevel=3)
        rows.append(_truth_row(kind, p, src["diameter_mm"], src["chi_ppm"], int(lb[0]), float(dp[0]),
                               anat))
    return rows


class _Placer:
    """Random placement of sources around those already in ``rows`` (appended to as placed)."""

    def __init__(self, rng, anat, lo, hi, vein_pts, vein_rad, rows):
        self.rng, self.anat = rng, anat
        self.lo, self.hi = lo, hi  # world box the centres must lie in (mm)
        self.vein_pts, self.vein_rad = vein_pts, vein_rad
        self.rows = rows

    def place(self, kind, region, a, chi):
        """Place one source of radius ``a`` (mm) in the target ``region``; its row, or None if no
        candidate fits."""
        c, h = self.anat.boxes[region]
        lo = np.maximum(c - h, self.lo)
        hi = np.minimum(c + h, self.hi)
        if np.any(hi <= lo):
            return None
        cand = self.rng.uniform(lo, hi, size=(_MAX_TRIES, 3))
        labs, deps = self.anat.points(cand)
        min_depth = max(_MIN_DEPTH_MM, a + 2.0)
        for p, lab, dep in zip(cand, labs, deps):
            lab = int(lab)
            # a centre in sulcal CSF / a ventricle is not a brain-tissue source (MARS has no class
            # for it); skipping candidates of the batch already drawn keeps the random stream
            if dep < min_depth or lab not in _BRAIN:
                continue
            allowed = self._allowed_around(kind, region, p, lab, dep)
            if allowed is None or not self._ring_inside(p, a, allowed) or not self._clear(p, a):
                continue
            # placed by the target rule; recorded by MARS (a white-matter source may change region)
            row = _truth_row(kind, p, 2 * a, chi, lab, dep, self.anat)
            self.rows.append(row)
            return row
        return None

    def _allowed_around(self, kind, region, p, lab, dep):
        """Tissues allowed just outside a candidate, or None if its centre misses the target."""
        if kind == "calcification":
            if region == "deep" and lab not in (PALLIDUM, PUTAMEN):
                return None
            return _CALCIFICATION_TISSUES
        if _location(p, lab, dep, self.anat.ell, self.anat.sc)[0] != region:
            return None
        if region == "lobar" and dep > self.anat.lobar_max_depth:
            return None
        return _BRAIN

    def _ring_inside(self, p, a, allowed):
        """True if the six points 0.5 mm outside the sphere along the axes are ``allowed`` tissue."""
        labs, _ = self.anat.points(p + (a + 0.5) * _AXES)
        return all(int(lb) in allowed for lb in labs)

    def _clear(self, p, a):
        """True if a sphere of radius ``a`` at ``p`` keeps its distance from sources and veins."""
        for r in self.rows:
            q = np.array([r["x_mm"], r["y_mm"], r["z_mm"]])
            if np.linalg.norm(p - q) < a + r["diameter_mm"] / 2.0 + _GAP_MM:
                return False
        if self.vein_pts.shape[0]:
            d = np.sqrt(np.sum((self.vein_pts - p) ** 2, axis=1)) - self.vein_rad
            if np.min(d) < a + _VEIN_GAP_MM:
                return False
        return True


def _place_sources(params, rng, anat, grid, vein_pts, vein_rad, explicit=()) -> list:
    """Explicit sources, then random CMBs (target region drawn from ``region_weights``, the other
    regions tried in turn) and calcifications (deep); all truth rows, without ids. Sources are
    kept one voxel inside the field of view."""
    inset = grid.voxel_mm.max()
    placer = _Placer(rng, anat, grid.fov_lo + inset, grid.fov_hi - inset, vein_pts, vein_rad,
                     list(explicit))
    regions = list(params.region_weights.keys())
    weights = np.array([float(params.region_weights[r]) for r in regions])
    weights = weights / weights.sum()
    for _ in range(int(params.n_cmb)):
        d = rng.uniform(*params.cmb_diameter_range_mm)
        chi = rng.uniform(*params.cmb_chi_range_ppm)
        first = regions[int(rng.choice(len(regions), p=weights))]
        for region in [first] + [r for r in regions if r != first]:
            if placer.place("cmb", region, d / 2.0, chi) is not None:
                break
    for _ in range(int(params.n_calcifications)):
        d = rng.uniform(*params.calc_diameter_range_mm)
        chi = rng.uniform(*params.calc_chi_range_ppm)
        placer.place("calcification", "deep", d / 2.0, chi)
    return placer.rows


def _warn_if_not_all_placed(params, rows, explicit):
    """Warn (at the caller of :func:`.simulate.simulate`) when random sources are missing."""
    n_cmb = sum(r["type"] == "cmb" for r in rows) - sum(r["type"] == "cmb" for r in explicit)
    n_calc = len(rows) - len(explicit) - n_cmb
    if n_cmb < params.n_cmb or n_calc < params.n_calcifications:
        warnings.warn(f"placed {n_cmb} of {params.n_cmb} CMBs and {n_calc} of "
                      f"{params.n_calcifications} calcifications (no room left in the field of "
                      "view / requested regions)", RuntimeWarning, stacklevel=3)


def _apply_sources(signal, affine, rows, ppp, b0_world, inside_amp, labels=None, first_id=1):
    """Multiply a complex image (in place) by each source's intra-voxel factor; with ``labels``,
    label (in place) the voxels at least half inside each source and the voxel holding its centre
    with ``first_id`` + its index."""
    for n, r in enumerate(rows):
        centre = np.array([r["x_mm"], r["y_mm"], r["z_mm"]], dtype=np.float64)
        sl, fac, frac = source_factor(affine, signal.shape, centre, r["diameter_mm"] / 2.0,
                                      r["chi_ppm"], ppp, b0_world, inside_amp=inside_amp)
        if fac.size == 0:
            continue
        signal[sl] = (signal[sl] * fac).astype(signal.dtype)
        if labels is not None:
            tid = first_id + n
            sub = labels[sl]
            sub[frac >= 0.5] = tid
            ijk = np.rint(np.linalg.solve(affine[:3, :3], centre - affine[:3, 3])).astype(int)
            if np.all(ijk >= 0) and np.all(ijk < np.asarray(labels.shape)):
                labels[tuple(ijk)] = tid
