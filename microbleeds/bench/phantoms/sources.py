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
        if kind not in TRUTH_TYPES[:2]:
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

    def add_row(self, kind, p, a):
        """Append (and return) the truth row of a source placed by a caller's own rule."""
        lab, dep = self.anat.points(np.asarray(p, dtype=np.float64)[None, :])
        row = _truth_row(kind, p, 2 * a, 0.0, int(lab[0]), float(dep[0]), self.anat)
        row["extra"] = True
        self.rows.append(row)
        return row

    def clear_of(self, p, a, rows, veins=True):
        """True if a sphere of radius ``a`` at ``p`` keeps its distance from ``rows`` (and veins)."""
        return self._clear(p, a, rows, veins)

    def _clear(self, p, a, rows=None, veins=True):
        """True if a sphere of radius ``a`` at ``p`` keeps its distance from sources and veins."""
        for r in (self.rows if rows is None else rows):
            q = np.array([r["x_mm"], r["y_mm"], r["z_mm"]])
            if np.linalg.norm(p - q) < a + r["diameter_mm"] / 2.0 + _GAP_MM:
                return False
        if veins and self.vein_pts.shape[0]:
            d = np.sqrt(np.sum((self.vein_pts - p) ** 2, axis=1)) - self.vein_rad
            if np.min(d) < a + _VEIN_GAP_MM:
                return False
        return True


def _place_sources(params, rng, anat, grid, vein_pts, vein_rad, explicit=(), painted=()) -> list:
    """Explicit sources, then random CMBs (target region drawn from ``region_weights``, the other
    regions tried in turn) and calcifications (deep); then (:mod:`.lesions`, their own random
    streams) clustered CMBs, CMBs beside veins, lobes; all truth rows, without ids. Sources are
    kept one voxel inside the field of view, and clear of the ``painted`` objects (cavernomas,
    siderosis: truth rows placed first; arteries, sinuses: kept like veins)."""
    from . import lesions

    inset = grid.voxel_mm.max()
    rows0 = list(explicit)
    clear_pts, clear_rad = vein_pts, vein_rad
    if painted:
        lab_of = anat.points(np.asarray([o for _k, o, _d in lesions.painted_rows(painted)]
                                        or np.zeros((0, 3)), dtype=np.float64).reshape(-1, 3))
        for (kind, p, d), lb, dp in zip(lesions.painted_rows(painted), *lab_of):
            rows0.append(_truth_row(kind, p, d, 0.0, int(lb), float(dp), anat))
        tp, tr = lesions.clearance_points(painted)
        if tp.shape[0]:
            clear_pts = np.concatenate([vein_pts.reshape(-1, 3), tp])
            clear_rad = np.concatenate([vein_rad, tr])
    placer = _Placer(rng, anat, grid.fov_lo + inset, grid.fov_hi - inset, clear_pts, clear_rad,
                     rows0)
    n_first = len(placer.rows)  # the list grows as sources are placed
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
    n_random = len(placer.rows)
    if params.lobulated_fraction > 0:
        lesions.add_lobes(params, placer.rows[n_first:n_random])
    if params.n_clusters:
        lesions.place_clusters(params, placer, anat)
    if params.n_cmb_near_vein:
        lesions.place_near_veins(params, placer, anat, vein_pts, vein_rad)
    return placer.rows


def _warn_if_not_all_placed(params, rows, explicit):
    """Warn (at the caller of :func:`.simulate.simulate`) when random sources are missing."""
    n_cmb = sum(r["type"] == "cmb" and not r.get("extra") for r in rows) - sum(
        r["type"] == "cmb" for r in explicit)
    n_calc = sum(r["type"] == "calcification" for r in rows) - sum(
        r["type"] == "calcification" for r in explicit)
    if n_cmb < params.n_cmb or n_calc < params.n_calcifications:
        warnings.warn(f"placed {n_cmb} of {params.n_cmb} CMBs and {n_calc} of "
                      f"{params.n_calcifications} calcifications (no room left in the field of "
                      "view / requested regions)", RuntimeWarning, stacklevel=3)


def _apply_sources(signal, affine, rows, ppp, b0_world, inside_amp, labels=None, first_id=1):
    """Multiply a complex image (in place) by each source's intra-voxel factor; with ``labels``,
    label (in place) the voxels at least half inside each source and the voxel holding its centre
    with ``first_id`` + its index. Rows of painted mimics (cavernoma, siderosis) are skipped; a
    lobulated CMB (``row["lobes"]``) gets each lobe's factor too. Returns each source's
    noise-free contrast ``1 - min |factor|`` (by row index; the voxel-level dephasing, before
    any k-space filtering)."""
    contrast = {}
    for n, r in enumerate(rows):
        if r.get("type", "cmb") not in ("cmb", "calcification"):
            continue
        centre = np.array([r["x_mm"], r["y_mm"], r["z_mm"]], dtype=np.float64)
        radius = r["diameter_mm"] / 2.0 if "lobes" not in r else r["main_radius_mm"]
        sl, fac, frac = source_factor(affine, signal.shape, centre, radius,
                                      r["chi_ppm"], ppp, b0_world, inside_amp=inside_amp)
        if fac.size == 0:
            continue
        signal[sl] = (signal[sl] * fac).astype(signal.dtype)
        low = float(np.min(np.abs(fac)))
        for q, rl in r.get("lobes", ()):
            sl2, fac2, frac2 = source_factor(affine, signal.shape, q, rl, r["chi_ppm"], ppp, b0_world,
                                             inside_amp=inside_amp)
            if fac2.size:
                signal[sl2] = (signal[sl2] * fac2).astype(signal.dtype)
                low = min(low, float(np.min(np.abs(fac2))))
        contrast[n] = 1.0 - low
        if labels is not None:
            tid = first_id + n
            sub = labels[sl]
            sub[frac >= 0.5] = tid
            ijk = np.rint(np.linalg.solve(affine[:3, :3], centre - affine[:3, 3])).astype(int)
            if np.all(ijk >= 0) and np.all(ijk < np.asarray(labels.shape)):
                labels[tuple(ijk)] = tid
    return contrast
