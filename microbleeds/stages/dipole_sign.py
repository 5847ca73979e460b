"""Dipole sign: is a compact dark focus paramagnetic (hemosiderin: microbleed) or diamagnetic
(calcium: calcification), and which sign convention does this scanner's phase use (handedness)?

* :func:`source_susceptibility_sign` fits the dipole field around one focus and says which sign
  of susceptibility explains its phase better.
* :func:`voxel_model_sign` does the same for a focus of a few voxels, from the voxel-averaged
  signal of the voxels it occupies and touches (where the shell fit has too few voxels).
* :func:`estimate_phase_sign` settles the phase convention of a scan from the veins (their field
  depends on their direction to B0; veins along B0 are paramagnetic inside on any slice thickness)
  and from the compact dark foci (assumed paramagnetic).
* :func:`candidate_signs` writes each candidate's ``phase_score`` and ``phase_sign``.

Pure functions on numpy arrays plus an affine; :func:`microbleeds.stages.phase.compute_swi` calls
:func:`estimate_phase_sign` when the convention is not forced.

Phase sign convention (``phase_sign``)
--------------------------------------
Vendors store phase with either sign. A phase image's convention is ``+1`` when the stored phase
*increases* with the local field::

    phase = +gamma * dB * TE          (phase_sign = +1)
    phase = -gamma * dB * TE          (phase_sign = -1)

with ``gamma = 2*pi*42.577 MHz/T`` and ``dB`` the local field offset (T) along B0. Multiplying a
stored phase by its ``phase_sign`` therefore gives ``psi = gamma * dB * TE``: the phase that is
*positive* where the field is increased, e.g. in the two lobes along B0 of the dipole field of a
paramagnetic source (hemosiderin, deoxygenated blood), or inside a paramagnetic vein running
parallel to B0.

Physics used (Lorentz-sphere corrected, ``dchi`` = susceptibility difference to tissue, SI):

* sphere of radius ``a``: inside ``dB = 0``; outside
  ``dB = B0 * dchi/3 * (a/r)**3 * (3 cos^2(theta) - 1)``, theta the angle between ``r`` and
  B0. Paramagnetic (dchi > 0): positive lobes along B0, negative equatorial ring (half as big).
* infinite cylinder at angle theta to B0: inside ``dB = B0 * dchi * (3 cos^2(theta) - 1) / 6``
  (``+dchi/3`` parallel, ``-dchi/6`` perpendicular); outside a ``cos(2 phi) / rho**2`` pattern
  that averages to zero around the vessel.

Haacke's "right-handed" systems (classic negative phase mask, veins with negative phase) are
``phase_sign = -1`` here. Which vendor / software version stores which sign is not reliable,
so :func:`estimate_phase_sign` determines it from the veins in the data. On the real 7 T
Siemens crop in ``shared/data/real/romeo-small-gre`` it finds ``+1`` (146 vein segments, 88 %
agreement, every echo alone agrees), which matches the default of CLEAR-SWI (attenuates
positive phase) on the same data.

Units: phase in radians, lengths in mm, volumes in mm^3, susceptibility in ppm; sizes in voxels
where named so.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange
from scipy import ndimage as ndi

from ..io.nifti import voxel_sizes
from .gaussian import gaussian_filter_nearest_on, hessian_at
from .prepare import bounding_box, erode_mm
from .sincosf import sincosf, sincosf_array
from .threads import concurrent_kernels_safe

_PI = math.pi

# The half-depth outline includes the blooming halo, so the susceptibility source is smaller than
# the outline: the dipole is fitted from 0.6, 0.8 and 1.0 of the outline's radius (per diameter).
SOURCE_RADIUS_PER_DIAMETER = (0.3, 0.4, 0.5)
TRUSTED_SIGN = ("forced", "high", "moderate")  # phase-sign confidence that lets the calcification rule act

# ---- the dipole fit of one compact source (source_susceptibility_sign)
MIN_SOURCE_RADIUS_VOXELS = 0.5  # fitted radius at least half the smallest voxel size (mm)
MIN_SHELL_VOXELS = 3.0  # the fitted shell reaches at least 3 (largest) voxel sizes beyond the radius
MIN_BOX_VOXELS = 3  # a neighbourhood cut by the image edge to fewer voxels along an axis: no fit
BACKGROUND_MIN_RADII = 2.0  # local background magnitude: median of the shell beyond 2 radii ...
MIN_BACKGROUND_VOXELS = 5  # ... if it holds at least 5 voxels, else the median of the whole box
REFINE_RADII = 1.5  # the centre moves to the darkness-weighted centroid within 1.5 radii
MIN_WEIGHT = 0.05  # weight (magnitude / background)^2 below which a dark, dephased voxel is left out
MIN_FIT_VOXELS = 10  # fewer usable shell voxels: score NaN
# The coupling c (radians at model value 1) is searched on a log grid from 0.02 rad of phase at
# the voxel of largest |model| up to 3 pi rad (several wraps) at the voxel of median |model|.
COUPLING_MIN_PHASE_RAD = 0.02
COUPLING_MAX_PHASE_RAD = 3.0 * _PI
N_COUPLINGS = 72  # grid points per sign
MIN_RESIDUAL_DISPERSION = 1e-4  # floor of 1 - f_best^2 in the noise level (a perfect fit keeps a finite z)

# ---- the voxel-averaged dipole model of a small source (voxel_model_sign)
# A source of a few voxels leaves too few voxels in the shell beyond it for the shell fit; its
# sign is in the voxels it occupies and touches, whose phase is the argument of the complex
# signal averaged over the voxel (the slice profile along B0 included).
MODEL_SUBVOXEL_MM = 0.34  # sub-voxel sampling step (mm) of the voxel average
MODEL_MAX_SUBSAMPLES = 16  # at most this many samples per voxel along an axis ...
MODEL_MAX_SAMPLES = 20_000  # ... and at most this many in all (coarser sampling beyond: large foci)
MODEL_REACH_RADII = 4.0  # the fitted neighbourhood reaches 4 source radii (the field is 1/64 there) ...
MODEL_REACH_VOXELS = 2.0  # ... and at least 2 voxels along every axis
MODEL_MIN_COUPLING_RAD = 0.05  # couplings c = gamma B0 dchi TE / 3 searched from 0.05 rad ...
MODEL_MAX_COUPLING_RAD = 80.0  # ... to 80 rad (15 ppm at 3 T, TE 20 ms; the radius is only estimated)
MODEL_N_COUPLINGS = 48  # log grid points (steps of 17 %)
MODEL_MIN_VOXELS = 10  # fewer usable voxels: no decision
MODEL_MAX_VOXELS = 6000  # a neighbourhood of more voxels: no fit (the shell fit has voxels enough there, and
# the cost grows as the diameter cubed: a 25 mm region on a 0.6 mm grid took seconds per fit)
MODEL_MIN_Z = 2.5  # likelihood-ratio z at least this: at random points of phantom brains (veins and edges
# included) z has SD 0.8-1.2 and z < -2.5 at 0-1.2 % of them (a focus without a dipole rarely gets a sign)

# ---- the phase convention from veins and compact foci (estimate_phase_sign)
MASK_FRACTION_OF_P99 = 0.1  # default brain mask: magnitude above 10 % of its 99th percentile, holes filled
MIN_MASK_VOXELS = 100  # fewer brain voxels: default sign
LOCAL_MEAN_SIGMA_MM = 4.0  # Gaussian sigma (mm) of the local mean the magnitude is divided by
MIN_DARK_VOXELS = 20  # fewer dark voxels: default sign
MIN_HESSIAN_SIGMA_MM = 0.7  # default Hessian scale: small veins; larger scales pick up tissue boundaries
EIGH_CHUNK = 500_000  # Hessians per eigen-decomposition: bounds eigh's temporaries
# The tube test runs on analytic eigenvalues (float64, Smith's trigonometric formula); LAPACK's float32
# eigenvalues differ from them by at most EIGEN_BOUND * ||H||_F (Weyl: LAPACK's backward error is a few
# float32 epsilons of ||H||; measured at most ~1e-7 on 3 million Hessians of a 0.45 mm scan), so only
# the voxels whose decision could change within the bound, and the tubes, are decomposed by LAPACK.
EIGEN_BOUND = 1e-4
# A dark tube has two large positive eigenvalues and one small one (along the vein): the smallest
# |eigenvalue| under half the middle one, the middle one above 0.1 of the 90th percentile of the
# largest |eigenvalue| in the dark voxels.
TUBE_MAX_AXIAL_RATIO = 0.5
TUBE_MIN_STRENGTH = 0.1
TUBE_SCALE_PERCENTILE = 90
MIN_TUBE_VOXELS = 10  # fewer tube voxels: no vein evidence
MIN_UNIT_VOXELS = 3  # a block_mm cube with fewer tube voxels is not a test unit
# Confidence of the vein evidence (Wilcoxon p over the units, units at least, weighted agreement at
# least). The units are spatially correlated (one vein, residual background), so p is
# anti-conservative: calibrated on phantoms whose dark veins carry no susceptibility, where
# p >= 4e-4 and agreement <= 0.69.
VEIN_HIGH_P, VEIN_HIGH_MIN_UNITS, VEIN_HIGH_AGREEMENT = 1e-6, 8, 0.72
VEIN_MODERATE_P, VEIN_MODERATE_AGREEMENT = 1e-4, 0.65
VEIN_LOW_P, VEIN_LOW_AGREEMENT = 0.01, 0.55
# A "low" vote also needs a weighted agreement of at least VEIN_LOW_AGREEMENT: with thousands of
# correlated units p is tiny at any agreement (a whole-brain 3 T multi-coil phantom: 16,049 tube
# voxels, agreement 0.501, p 1e-48), and half the units for each sign is no evidence.
EDGE_REACH_SIGMAS = 3.0
# The estimate ignores the brain's outer band of EDGE_REACH_SIGMAS Hessian scales: there the
# Hessian reaches the skull and CSF, so the brain's edge looks like tubes and dark foci (4,666 of
# that phantom's tube voxels were its edge) and outweighs the veins.
MIN_FOCUS_VOXELS = 2  # a compact focus has at least 2 voxels
FOCI_TRIED_PER_VOTE = 4  # at most 4 * max_foci of the darkest foci are fitted (undecided / elongated ones give no vote)
MIN_SHAPE_VOXELS = 4  # the elongation test needs a spatial covariance of at least 4 voxels
FOCUS_MAX_VARIANCE_RATIO = 9.0  # compact: largest / smallest spatial SD <= 3, i.e. variance ratio <= 9
# floor (in units of the smallest voxel size) of the smallest spatial SD: a focus one voxel thin
# has an SD of ~0 across, which would make every such focus elongated
FOCUS_MIN_SD_VOXELS = 0.3
# Confidence of the foci evidence: votes at least, agreeing fraction at least.
FOCI_MODERATE_MIN_VOTES, FOCI_MODERATE_AGREEMENT = 5, 0.8
FOCI_LOW_MIN_VOTES, FOCI_LOW_AGREEMENT = 3, 0.75
FOCI_CONTRADICT_MIN_VOTES = 3  # this many foci disagreeing with confident veins lower the confidence
# ---- veins along B0 seen end-on (_column_votes): inside a cylinder parallel to B0 the field is
# +dchi/3 B0 (paramagnetic venous blood: phase of the sign of phase_sign), outside it is zero. On
# thick slices such a vein is a dark dot repeated over consecutive slices: one vote per column.
COLUMN_MAX_ANGLE_DEG = 30.0  # the grid axis nearest B0 within 30 deg (else no column vote)
COLUMN_MAX_REL = 0.75  # a dot: magnitude below 0.75 of the local mean, the darkest of its 3x3 in-plane ...
COLUMN_RING_MIN_REL = 0.85  # ... with its in-plane ring (Chebyshev radius >= 2 voxels and >= 2 mm) brighter
COLUMN_RING_MM = 2.0
COLUMN_MIN_SLICES, COLUMN_MIN_MM = 3, 5.0  # a column spans >= 3 slices and >= 5 mm along B0 ...
COLUMN_MAX_DOTS_PER_SLICE = 2  # ... with at most 2 dots per slice (a column, not a sheet)
# A vote needs |mean phase inside - ring phase| above 2.5 robust SDs of the phase in the brain: the
# dark voxels beside veins across B0 (dephased, small negative field) also form dots; on
# swi3t_1x1x2_snr30 98 of 118 columns without the floor were such voxels (94 % of them of the wrong
# sign), while the 19 true veins (simulator's vein fraction > 0.2) all had the right sign (median 0.6 rad).
COLUMN_MIN_PHASE_SDS = 2.5
# Confidence (columns at least, agreeing fraction at least, two-sided binomial sign test p below).
COLUMN_MODERATE_MIN, COLUMN_MODERATE_AGREEMENT, COLUMN_MODERATE_P = 10, 0.8, 1e-3
COLUMN_LOW_MIN, COLUMN_LOW_AGREEMENT, COLUMN_LOW_P = 8, 0.7, 0.01


def _unit(v):
    """``v`` as a float64 unit vector."""
    v = np.asarray(v, dtype=np.float64).ravel()
    return v / max(np.linalg.norm(v), 1e-12)


def _check_same_3d(phase, magnitude):
    if phase.shape != magnitude.shape or phase.ndim != 3:
        raise ValueError(f"phase {phase.shape} and magnitude {magnitude.shape} must be the same 3D shape")


def _undecided():
    """The result of a fit that cannot be made: score NaN, sign 0."""
    return float("nan"), 0


# --------------------------------------------------------------------------------------------
# The dipole sign of one compact source
# --------------------------------------------------------------------------------------------

def source_susceptibility_sign(filtered_phase, magnitude, centre_vox, radius_mm,
                               voxel_size_mm, affine, b0_dir_world=(0, 0, 1), phase_sign=+1,
                               outer_factor=3.0, min_score=0.01, min_z=1.5,
                               refine_centre=True, max_voxels=30000, return_z=False):
    """Sign of the susceptibility of a compact dark source from its dipole field pattern.

    The phase around a sphere of radius ``a`` is, in the ``phase_sign`` convention,
    ``psi(r) = c * (a / r)**3 * (3 cos^2(theta) - 1)`` outside the sphere, with ``theta`` the
    angle between ``r`` (world mm, via the affine, so array permutations and flips do not
    matter) and B0, and ``c = gamma * B0 * dchi / 3 * TE`` (radians) positive for a
    paramagnetic source (hemosiderin: microbleed), negative for a diamagnetic one
    (calcification). Positive lobes along B0, a negative equatorial ring half as strong.

    The fit uses voxels between ``radius_mm`` and ``outer_factor * radius_mm`` (at least 3
    voxels beyond the radius), weighted by the squared magnitude relative to the local
    background (dark, dephased voxels count little). Because the phase near the source can
    wrap, ``c`` is found by maximising the phase coherence
    ``f(c) = |sum w exp(i (psi - c m))| / sum w`` on a logarithmic grid of both signs (a free
    constant offset is implicit in the modulus); this is least squares on the unit circle.

    Parameters
    ----------
    filtered_phase : numpy.ndarray
        3D high-pass filtered phase, radians (or any quantity proportional to the local field
        with the same sign, e.g. Hz).
    magnitude : numpy.ndarray
        3D magnitude, same shape.
    centre_vox : sequence of 3 float
        Centre of the dark focus in voxel indices (may be fractional).
    radius_mm : float
        Radius of the dark focus in mm (e.g. the equivalent-sphere radius of the candidate).
    voxel_size_mm : sequence of 3 float
        Voxel sizes in mm (neighbourhood extent).
    affine : (4, 4) array_like
        NIfTI affine (voxel -> world mm).
    b0_dir_world : sequence of 3 float
        Direction of B0 in world coordinates (scanner z: ``(0, 0, 1)``).
    phase_sign : {+1, -1}
        Phase convention of ``filtered_phase``.
    outer_factor : float
        Outer radius of the fitted shell in units of ``radius_mm``.
    min_score : float
        Scores with a smaller absolute value give sign 0.
    min_z : float
        Scores below ``min_z`` times their noise level give sign 0; the noise level is
        ``sqrt(sum w^2) / sum w * sqrt(1 - f_best^2)`` (coherence fluctuation of phases with
        the residual dispersion of the best fit). Random phases stay below ~1.2.
    refine_centre : bool
        Move the centre to the darkness-weighted centroid within 1.5 radii first.
    max_voxels : int
        At most this many shell voxels are used (a fixed random subset beyond).
    return_z : bool
        Return ``(score, z, f_best)`` instead (diagnostics).

    Returns
    -------
    score : float
        ``max_{c>0} f(c) - max_{c<0} f(c)`` in [-1, 1]: how much better a paramagnetic than a
        diamagnetic dipole explains the phase. NaN if too few usable voxels.
    sign : int
        +1 paramagnetic (microbleed-like), -1 diamagnetic (calcification-like), 0 undecided.
    """
    ph = np.asarray(filtered_phase)
    mag = np.asarray(magnitude)
    _check_same_3d(ph, mag)
    if phase_sign not in (1, -1):
        raise ValueError(f"phase_sign must be +1 or -1, got {phase_sign!r}")
    return _source_fits(ph, mag, centre_vox, (radius_mm,), voxel_sizes(voxel_size_mm), affine, b0_dir_world,
                        phase_sign, outer_factor, min_score, min_z, refine_centre, max_voxels, return_z)[0]


def _source_fits(ph, mag, centre_vox, radii_mm, vox, affine, b0_dir_world=(0, 0, 1), phase_sign=+1,
                 outer_factor=3.0, min_score=0.01, min_z=1.5, refine_centre=True, max_voxels=30000,
                 return_z=False):
    """:func:`source_susceptibility_sign` of one centre at several radii (a list of its results).

    The fits share the work that does not depend on the radius: the neighbourhood of the largest
    radius is cut from the images once (views, no copies), and each fit runs on its own box, a
    sub-box of it. The per-voxel geometry (world offsets, distances, the dipole pattern, the shell)
    is computed by numba loops over that box (:func:`_far_magnitudes`, :func:`_dark_centroid`,
    :func:`_shell_samples`) instead of float64 arrays of the whole box: the same formulas, so the
    scores differ from the numpy version's by rounding only (~1e-15).
    """
    A = np.ascontiguousarray(np.asarray(affine, dtype=np.float64)[:3, :3])
    b0 = _unit(b0_dir_world)
    centre = np.asarray(centre_vox, dtype=np.float64).ravel()[:3]
    shells = [_shell_radii(radius, vox, outer_factor) for radius in radii_mm]
    boxes = [_box_around(centre, r_out, vox, ph.shape) for _, r_out in shells]
    outer = _box_around(centre, max(r_out for _, r_out in shells), vox, ph.shape)
    if outer is None:
        return [_undecided()] * len(shells)
    if ph.dtype != mag.dtype or ph.dtype not in (np.float32, np.float64):
        ph, mag = ph.astype(np.float64), mag.astype(np.float64)
    ph_all, M_all = ph[outer], mag[outer]
    base = np.array([s_.start for s_ in outer], np.int64)
    out = []
    for (a, r_out), box in zip(shells, boxes):
        if box is None:
            out.append(_undecided())
            continue
        lo = np.array([s_.start for s_ in box], np.int64)
        sub = tuple(slice(int(lo[d] - base[d]), int(box[d].stop - base[d])) for d in range(3))
        out.append(_one_fit(ph_all[sub], M_all[sub], float(phase_sign), lo, centre, A, b0, a, r_out, min_score,
                            min_z, refine_centre, max_voxels, return_z))
    return out


def _one_fit(ph, M, phase_sign, lo, centre, A, b0, a, r_out, min_score, min_z, refine_centre, max_voxels,
             return_z):
    """The dipole fit on one box (phase ``ph`` and magnitude ``M`` of one float dtype, first voxel
    index ``lo``)."""
    far = _far_magnitudes(M, lo, centre, A, a, r_out)
    bg = (float(np.median(far)) if far.size >= MIN_BACKGROUND_VOXELS
          else float(np.median(M.astype(np.float64))))
    if not bg > 0:
        return _undecided()
    if refine_centre:
        weighted, total = _dark_centroid(M, lo, centre, A, a, bg)
        if total > 0:
            centre = weighted / total
    m_u, w_sel, psi_u = _shell_samples(ph, M, phase_sign, lo, centre, A, b0, a, r_out, bg)
    if m_u.size < MIN_FIT_VOXELS:
        return _undecided()
    if m_u.size > max_voxels:  # large candidates: a deterministic random subset suffices
        keep = np.sort(np.random.default_rng(0).choice(m_u.size, max_voxels, replace=False))
        m_u, w_sel, psi_u = m_u[keep], w_sel[keep], psi_u[keep]
    # voxels inform about c in proportion to |m| (least-squares information ~ m^2)
    w_u = w_sel * np.abs(m_u)
    cs = _coupling_grid(m_u)
    if cs is None:
        return _undecided()
    pos, neg = _coherence_both_signs(cs, m_u, w_u, psi_u)
    score, z, f_best = _score_and_z(pos, neg, w_u)
    if return_z:
        return score, z, f_best
    decided = abs(score) >= min_score and abs(z) >= min_z
    sign = 0 if not decided else (1 if score > 0 else -1)
    return score, sign


def _shell_radii(radius_mm, vox, outer_factor):
    """Source radius ``a`` and outer radius of the fitted shell (mm)."""
    a = max(float(radius_mm), MIN_SOURCE_RADIUS_VOXELS * float(vox.min()))
    r_out = max(outer_factor * a, a + MIN_SHELL_VOXELS * float(vox.max()))
    return a, r_out


def _box_around(centre, r_out, vox, shape):
    """Slices of the box of half-width ``r_out`` mm (+1 voxel) around ``centre`` (voxels), cut to
    the image; None if it is thinner than :data:`MIN_BOX_VOXELS` along an axis."""
    half = np.ceil(r_out / vox).astype(int) + 1
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.floor(centre).astype(int) + half + 1, np.array(shape))
    if np.any(hi - lo < MIN_BOX_VOXELS):
        return None
    return tuple(slice(int(lo[d]), int(hi[d])) for d in range(3))


@njit("float64(float64, float64, float64, float64[:, ::1])", cache=True, inline="always")
def _distance(di, dj, dk, A):
    """Length (world mm) of the voxel offset ``(di, dj, dk)`` under the linear part ``A``."""
    x = A[0, 0] * di + A[0, 1] * dj + A[0, 2] * dk
    y = A[1, 0] * di + A[1, 1] * dj + A[1, 2] * dk
    z = A[2, 0] * di + A[2, 1] * dj + A[2, 2] * dk
    return math.sqrt(x * x + y * y + z * z)


@njit([f"float64[::1]({t}[:, :, :], int64[::1], float64[::1], float64[:, ::1], float64, float64)"
       for t in ("float32", "float64")], cache=True, nogil=True)
def _far_magnitudes(M, lo, centre, A, a, r_out):
    """Magnitudes of the box voxels (first index ``lo``) beyond :data:`BACKGROUND_MIN_RADII` radii
    from ``centre`` (voxels) and within ``r_out`` (world mm), in the box's C order."""
    out = np.empty(M.size, np.float64)
    n = 0
    r_min = BACKGROUND_MIN_RADII * a
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            for k in range(M.shape[2]):
                r = _distance(lo[0] + i - centre[0], lo[1] + j - centre[1], lo[2] + k - centre[2], A)
                if r > r_min and r <= r_out:
                    out[n] = np.float64(M[i, j, k])
                    n += 1
    return out[:n]


@njit([f"Tuple((float64[::1], float64))({t}[:, :, :], int64[::1], float64[::1], float64[:, ::1], float64, "
       "float64)" for t in ("float32", "float64")], cache=True, nogil=True)
def _dark_centroid(M, lo, centre, A, a, bg):
    """Darkness-weighted sums for the centroid within :data:`REFINE_RADII` radii: ``sum(ijk * d)``
    and ``sum(d)`` with ``d = max(1 - M / bg, 0)``; the centroid (voxels) is their ratio when
    ``sum(d) > 0`` (else nothing there is darker than the background)."""
    weighted = np.zeros(3, np.float64)
    total = 0.0
    r_near = REFINE_RADII * a
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            for k in range(M.shape[2]):
                d = 1.0 - np.float64(M[i, j, k]) / bg
                if d <= 0.0:
                    continue
                r = _distance(lo[0] + i - centre[0], lo[1] + j - centre[1], lo[2] + k - centre[2], A)
                if r <= r_near:
                    weighted[0] += (lo[0] + i) * d
                    weighted[1] += (lo[1] + j) * d
                    weighted[2] += (lo[2] + k) * d
                    total += d
    return weighted, total


@njit([f"Tuple((float64[::1], float64[::1], float64[::1]))({t}[:, :, :], {t}[:, :, :], float64, int64[::1], "
       "float64[::1], float64[:, ::1], float64[::1], float64, float64, float64)" for t in ("float32", "float64")],
      cache=True, nogil=True)
def _shell_samples(ph, M, phase_sign, lo, centre, A, b0, a, r_out, bg):
    """The fitted shell's voxels in the box's C order: dipole pattern ``m`` (see
    :func:`_dipole_pattern`), weight ``min(M / bg, 1)^2`` and phase ``psi = phase_sign * ph``
    (float64), for the voxels with ``a < r <= r_out`` (world mm from ``centre``), weight above
    :data:`MIN_WEIGHT` and finite phase."""
    n_max = M.size
    m_out = np.empty(n_max, np.float64)
    w_out = np.empty(n_max, np.float64)
    p_out = np.empty(n_max, np.float64)
    n = 0
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            for k in range(M.shape[2]):
                p = np.float64(ph[i, j, k]) * phase_sign
                if not np.isfinite(p):
                    continue
                q = min(max(np.float64(M[i, j, k]) / bg, 0.0), 1.0)
                w = q * q
                if not w > MIN_WEIGHT:
                    continue
                di, dj, dk = lo[0] + i - centre[0], lo[1] + j - centre[1], lo[2] + k - centre[2]
                x = A[0, 0] * di + A[0, 1] * dj + A[0, 2] * dk
                y = A[1, 0] * di + A[1, 1] * dj + A[1, 2] * dk
                z = A[2, 0] * di + A[2, 1] * dj + A[2, 2] * dk
                r = math.sqrt(x * x + y * y + z * z)
                if r > a and r <= r_out:
                    cos_b0 = (x * b0[0] + y * b0[1] + z * b0[2]) / r
                    m_out[n] = (a / r) ** 3.0 * (3.0 * (cos_b0 * cos_b0) - 1.0)
                    w_out[n] = w
                    p_out[n] = p
                    n += 1
    return m_out[:n], w_out[:n], p_out[:n]


def _dipole_pattern(rel_b0, r, a):
    """``(a / r)**3 * (3 cos^2(theta) - 1)`` (0 at r = 0): the sphere's field per unit coupling;
    ``rel_b0`` is the offset (mm) along B0, ``r`` its length (mm). The numpy reference of the
    pattern :func:`_shell_samples` computes."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cos2 = np.where(r > 0, (rel_b0 / r) ** 2, 0.0)
        return np.where(r > 0, (a / r) ** 3 * (3.0 * cos2 - 1.0), 0.0)


def _coupling_grid(m_u):
    """Log-spaced couplings ``c > 0`` (radians per unit of the model) to try; None if the model
    vanishes."""
    absm = np.abs(m_u)
    big = float(np.max(absm))
    med = float(np.median(absm[absm > 0])) if np.any(absm > 0) else 0.0
    if big <= 0 or med <= 0:
        return None
    return np.geomspace(COUPLING_MIN_PHASE_RAD / big, COUPLING_MAX_PHASE_RAD / med, N_COUPLINGS)


def _coherence_both_signs(cs, m_u, w_u, psi_u):
    """``|sum w exp(i (psi - c m))|`` and ``|sum w exp(i (psi + c m))|`` for each coupling ``c``:
    the coherence of the phase ``psi`` (radians) with the model ``m`` at couplings ``+c`` and ``-c``
    (unnormalised)."""
    pos = np.empty(cs.size)
    neg = np.empty(cs.size)
    weighted_cos = np.ascontiguousarray(w_u * np.cos(psi_u), np.float64)
    weighted_sin = np.ascontiguousarray(w_u * np.sin(psi_u), np.float64)
    _coherence_kernel(np.ascontiguousarray(cs, np.float32), np.ascontiguousarray(m_u, np.float32),
                      weighted_cos, weighted_sin, pos, neg)
    return pos, neg


@njit("void(float32[::1], float32[::1], float64[::1], float64[::1], float64[::1], float64[::1])",
      cache=True, nogil=True)
def _coherence_kernel(cs, m, weighted_cos, weighted_sin, pos, neg):
    """pos[k] = |sum_v (wc_v + i ws_v) exp(-i cs_k m_v)|, neg[k] the same with +cs_k.

    One float32 cos and sin per coupling and voxel (the model phase ``c m`` needs no more: its
    error is ~1e-7 rad), float64 sums over the shell's up to ~10^4 voxels. Serial: a call is
    ~1 ms of work (a scan makes hundreds), and a parallel call waits for every worker thread,
    which on a loaded machine costs 10-40x the work (each coupling's sums are the same either way)."""
    n = m.size
    for k in range(cs.size):
        c = cs[k]
        cm = np.empty(n, np.float32)
        sines = np.empty(n, np.float32)
        cosines = np.empty(n, np.float32)
        for v in range(n):
            cm[v] = c * m[v]
        sincosf_array(cm, sines, cosines)  # math.sin / math.cos of the float32 products, bit for bit
        pos_re = pos_im = neg_re = neg_im = 0.0
        for v in range(n):
            cc = np.float64(cosines[v])
            sc = np.float64(sines[v])
            wc, ws = weighted_cos[v], weighted_sin[v]
            pos_re += wc * cc + ws * sc
            pos_im += ws * cc - wc * sc
            neg_re += wc * cc - ws * sc
            neg_im += ws * cc + wc * sc
        pos[k] = math.sqrt(pos_re * pos_re + pos_im * pos_im)
        neg[k] = math.sqrt(neg_re * neg_re + neg_im * neg_im)


def _score_and_z(pos, neg, w_u):
    """Score (best paramagnetic minus best diamagnetic coherence), its z and the best coherence.

    Coherence fluctuations of random phases are of order ``sqrt(sum w^2) / sum w``, scaled by the
    residual dispersion ``sqrt(1 - f_best^2)``.
    """
    sw = float(w_u.sum())
    score = float((pos.max() - neg.max()) / sw)
    f_best = float(max(pos.max(), neg.max()) / sw)
    noise = float(np.sqrt(np.sum(w_u**2)) / sw) * math.sqrt(max(1.0 - f_best**2, MIN_RESIDUAL_DISPERSION))
    return score, score / noise, f_best


# --------------------------------------------------------------------------------------------
# The voxel-averaged dipole model of a small source
# --------------------------------------------------------------------------------------------

def voxel_model_sign(filtered_phase, magnitude, centre_vox, radii_mm, voxel_size_mm, affine,
                     b0_dir_world=(0, 0, 1), phase_sign=+1, min_z=MODEL_MIN_Z):
    """Sign of a small source's susceptibility from the phase of the voxels it occupies and touches.

    The shell fit (:func:`source_susceptibility_sign`) leaves out the voxels within the source's
    radius, and a focus of 2-5 voxels leaves few beyond it: its sign is undecided. Here the
    signal of every voxel within :data:`MODEL_REACH_RADII` radii (at least
    :data:`MODEL_REACH_VOXELS` voxels along each axis) is modelled as the average over the voxel
    of ``rho exp(i s c m)``, sampled every :data:`MODEL_SUBVOXEL_MM` mm: ``m = (a/r)^3 (3 cos^2
    theta - 1)`` outside a sphere of radius ``a``, ``rho = 0`` inside it (no signal), coupling
    ``c = gamma B0 |dchi| TE / 3`` (radians) and ``s = +1`` paramagnetic, ``-1`` diamagnetic
    (no fit when the neighbourhood holds more than :data:`MODEL_MAX_VOXELS` voxels). The
    model voxel phase ``phi_s(c)`` is the average's argument: a voxel longer along B0 than across
    averages more of the positive lobes of a paramagnetic source than of its negative ring.

    Each sign's log-likelihood is the phase coherence ``C_s = max_c |sum q^2 exp(i (psi -
    phi_s(c)))|`` (von Mises phase noise of concentration ``q^2 / sigma^2``, ``q`` the magnitude
    over the local background, at most 1; a free phase offset). The decision statistic is the
    likelihood-ratio z ``z = (C_+ - C_-) / (sigma D)``, ``D^2 = sum q^2 2 (1 - cos(phi_+ -
    phi_-))`` the models' separation, ``sigma^2`` the mean of ``q^2 2 (1 - cos r)`` over the
    best model's residuals ``r`` (misfit counts as noise). A linear phase left by the high-pass
    filter is removed first (:func:`_phase_ramp`). Of the radii ``radii_mm`` the one of the
    largest coherence is used.

    Parameters
    ----------
    filtered_phase, magnitude : numpy.ndarray
        3D high-pass filtered phase (radians) and magnitude, same shape.
    centre_vox : sequence of 3 float
        Centre of the focus, voxel indices.
    radii_mm : sequence of float
        Source radii (mm) to try (each at least :data:`MIN_SOURCE_RADIUS_VOXELS` of the smallest voxel).
    voxel_size_mm : sequence of 3 float
        Voxel sizes (mm).
    affine : (4, 4) array_like
        Voxel -> world (mm).
    b0_dir_world : sequence of 3 float
        B0 direction, world.
    phase_sign : {+1, -1}
        Phase convention of ``filtered_phase``.
    min_z : float
        ``|z|`` below this: sign 0.

    Returns
    -------
    score : float
        ``(C_+ - C_-) / sum q^2 (1 - cos(phi_+ - phi_-))`` in [-1, 1] (about +1 for a noise-free
        paramagnetic source, -1 for a diamagnetic one); NaN if no fit.
    z : float
        The likelihood-ratio z (NaN if no fit).
    sign : int
        +1, -1, or 0 (undecided).
    """
    ph, mag = np.asarray(filtered_phase), np.asarray(magnitude)
    _check_same_3d(ph, mag)
    if phase_sign not in (1, -1):
        raise ValueError(f"phase_sign must be +1 or -1, got {phase_sign!r}")
    vox = voxel_sizes(voxel_size_mm)
    A = np.asarray(affine, dtype=np.float64)[:3, :3]
    b0 = _unit(b0_dir_world)
    centre = np.asarray(centre_vox, dtype=np.float64).ravel()[:3]
    best = None
    for radius in radii_mm:
        a = max(float(radius), MIN_SOURCE_RADIUS_VOXELS * float(vox.min()))
        fit = _voxel_model_fit(ph, mag, centre, a, vox, A, b0, phase_sign)
        if fit is not None and (best is None or fit[2] > best[2]):
            best = fit
    if best is None:
        return float("nan"), float("nan"), 0
    score, z, _ = best
    return score, z, (0 if abs(z) < min_z else (1 if z > 0 else -1))


def _voxel_model_fit(ph, mag, centre, a, vox, A, b0, phase_sign):
    """``(score, z, best coherence)`` of :func:`voxel_model_sign` at one radius ``a`` (mm); None
    when the neighbourhood (cut to the image) is too thin, too large or has too few usable voxels."""
    reach = np.maximum(MODEL_REACH_RADII * a, MODEL_REACH_VOXELS * vox)
    half = np.ceil(reach / vox).astype(int)
    c0 = np.floor(centre + 0.5).astype(int)
    lo, hi = np.maximum(c0 - half, 0), np.minimum(c0 + half + 1, np.array(ph.shape))
    if np.any(hi - lo < MIN_BOX_VOXELS) or _PI / 6 * float(np.prod(2 * half + 1)) > MODEL_MAX_VOXELS:
        return None  # the ellipsoid's voxels (pi/6 of its box) checked before any array is made
    box = tuple(slice(int(lo[d]), int(hi[d])) for d in range(3))
    idx = np.stack(np.meshgrid(*[np.arange(lo[d], hi[d]) for d in range(3)], indexing="ij"), -1).reshape(-1, 3)
    offset = idx - centre
    within = np.sum((offset * vox / reach) ** 2, axis=1) <= 1.0
    psi = phase_sign * ph[box].reshape(-1).astype(np.float64)
    M = mag[box].reshape(-1).astype(np.float64)
    psi = psi - _phase_ramp(psi, M, within, tuple(hi - lo)) @ offset.T  # residual background of the high-pass
    dist = np.linalg.norm(offset @ A.T, axis=1)
    far = M[within & (dist > max(BACKGROUND_MIN_RADII * a, float(vox.max())))]
    bg = float(np.median(far)) if far.size >= MIN_BACKGROUND_VOXELS else float(np.median(M[within]))
    use = within & np.isfinite(psi)
    if not bg > 0 or use.sum() < MODEL_MIN_VOXELS:
        return None
    q2 = np.clip(M[use] / bg, 0.0, 1.0) ** 2
    data = q2 * np.exp(1j * psi[use])
    m, rho = _subvoxel_dipole(offset[use], a, vox, A, b0)
    cs = np.geomspace(MODEL_MIN_COUPLING_RAD, MODEL_MAX_COUPLING_RAD, MODEL_N_COUPLINGS)
    phi, pos, neg = _model_coherence(cs, m, rho, data)
    c_pos, c_neg = float(pos.max()), float(neg.max())
    phi_pos, phi_neg = phi[int(np.argmax(pos))], -phi[int(np.argmax(neg))]
    phi_best = phi_pos if c_pos >= c_neg else phi_neg
    residual = np.angle(data * np.exp(-1j * phi_best) * np.conj(np.sum(data * np.exp(-1j * phi_best))))
    sigma = math.sqrt(max(float(np.mean(q2 * 2.0 * (1.0 - np.cos(residual)))), 1e-12))
    separation = q2 * (1.0 - np.cos(phi_pos - phi_neg))
    d = math.sqrt(max(2.0 * float(separation.sum()), 1e-12))
    z = (c_pos - c_neg) / (sigma * d)
    score = float(np.clip((c_pos - c_neg) / max(float(separation.sum()), 1e-12), -1.0, 1.0))
    return score, float(z), max(c_pos, c_neg) / float(q2.sum())


def _model_coherence(cs, m, rho, data):
    """Model voxel phases of a paramagnetic source (a diamagnetic one has their negatives) and the
    coherences of both signs, per coupling: ``phi[k, v] = arg(sum_s rho[v, s] exp(i cs[k] m[v, s]))``,
    ``pos[k] = |sum_v data[v] exp(-i phi[k, v])|``, ``neg[k] = |sum_v data[v] exp(+i phi[k, v])|``.
    Runs :func:`_model_coherence_kernel` (float32 samples, float64 sums)."""
    phi = np.empty((cs.size, m.shape[0]), np.float32)
    pos = np.empty(cs.size)
    neg = np.empty(cs.size)
    _model_coherence_kernel(np.ascontiguousarray(cs, np.float32), np.ascontiguousarray(m, np.float32),
                            np.ascontiguousarray(rho, np.float32), np.ascontiguousarray(data.real, np.float64),
                            np.ascontiguousarray(data.imag, np.float64), phi, pos, neg)
    return phi.astype(np.float64), pos, neg


def model_coherence_reference(cs, m, rho, data):
    """Plain numpy reference of :func:`_model_coherence` (for tests)."""
    phi = np.angle(np.sum(rho[None] * np.exp(1j * cs[:, None, None] * m[None]), axis=2))
    return phi, np.abs(np.sum(data[None] * np.exp(-1j * phi), axis=1)), np.abs(np.sum(data[None] * np.exp(1j * phi), axis=1))


@njit("void(float32[::1], float32[:, ::1], float32[:, ::1], float64[::1], float64[::1], float32[:, ::1], "
      "float64[::1], float64[::1])", cache=True, nogil=True)
def _model_coherence_kernel(cs, m, rho, data_re, data_im, phi, pos, neg):
    """The loops of :func:`_model_coherence`, coupling by coupling (serial, as
    :func:`_coherence_kernel`: one call per small focus, short)."""
    n_vox, n_sub = m.shape
    for k in range(cs.size):
        c = cs[k]
        cm = np.empty(n_sub, np.float32)
        sines = np.empty(n_sub, np.float32)
        cosines = np.empty(n_sub, np.float32)
        p_re = p_im = n_re = n_im = 0.0
        for v in range(n_vox):
            for s in range(n_sub):
                cm[s] = c * m[v, s]
            sincosf_array(cm, sines, cosines)  # math.sin / math.cos, bit for bit
            s_re = s_im = np.float32(0.0)
            for s in range(n_sub):
                if rho[v, s] > 0:
                    s_re += rho[v, s] * cosines[s]
                    s_im += rho[v, s] * sines[s]
            angle = math.atan2(s_im, s_re)
            phi[k, v] = angle
            sc, cc = sincosf(angle)
            dr, di = data_re[v], data_im[v]
            p_re += dr * cc + di * sc
            p_im += di * cc - dr * sc
            n_re += dr * cc - di * sc
            n_im += di * cc + dr * sc
        pos[k] = math.sqrt(p_re * p_re + p_im * p_im)
        neg[k] = math.sqrt(n_re * n_re + n_im * n_im)


def _phase_ramp(psi, M, within, box_shape):
    """Linear phase (radians per voxel along each array axis) left by the high-pass filter in a
    box: the argument of the magnitude-weighted products of neighbouring voxels' signals, summed
    over the pairs within the neighbourhood. The source's own field is even about its centre, so
    its neighbour differences cancel over a box centred on it."""
    z = (M * np.exp(1j * np.where(np.isfinite(psi), psi, 0.0)) * (within & np.isfinite(psi))).reshape(box_shape)
    ramp = np.zeros(3)
    for axis in range(3):
        head = [slice(None)] * 3
        tail = [slice(None)] * 3
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        ramp[axis] = np.angle(np.sum(z[tuple(head)] * np.conj(z[tuple(tail)])))
    return ramp


def _subvoxel_dipole(offset, a, vox, A, b0):
    """Dipole pattern ``m`` and signal ``rho`` (0 inside the sphere of radius ``a`` mm, else 1) at
    the sub-voxel samples of the voxels at ``offset`` (voxel units from the centre): arrays
    (n_voxels, n_samples), at most :data:`MODEL_MAX_SAMPLES` samples in all where each voxel keeps one."""
    n_sub = np.clip(np.ceil(vox / MODEL_SUBVOXEL_MM).astype(int), 1, MODEL_MAX_SUBSAMPLES)
    while len(offset) * int(np.prod(n_sub)) > MODEL_MAX_SAMPLES and np.any(n_sub > 1):
        n_sub = np.maximum(n_sub - (n_sub == n_sub.max()), 1)  # thin the densest axis first
    grids = np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in n_sub], indexing="ij")
    sub = np.stack([g.ravel() for g in grids], -1)
    world = (offset[:, None, :] + sub[None, :, :]) @ A.T
    r = np.linalg.norm(world, axis=-1)
    outside = r > a
    cos_b0 = (world @ b0) / np.where(outside, r, 1.0)
    m = np.where(outside, (a / np.where(outside, r, 1.0)) ** 3 * (3.0 * cos_b0**2 - 1.0), 0.0)
    return m, outside.astype(np.float64)


# --------------------------------------------------------------------------------------------
# The phase convention (handedness) from veins and compact foci
# --------------------------------------------------------------------------------------------

def estimate_phase_sign(filtered_phase, magnitude, affine, mask=None, b0_dir_world=(0, 0, 1),
                        sigma_mm=None, dark_percentile=15.0, default=+1, max_foci=30,
                        max_focus_mm3=270.0, focus_rel=0.6, block_mm=3.0):
    """Estimate the phase convention (``phase_sign``) from veins and compact dark foci.

    Physics: venous blood is paramagnetic relative to tissue. Inside a vein at angle theta to
    B0 the field offset is ``dB = B0 dchi (3 cos^2 theta - 1) / 6`` (positive parallel to B0,
    negative perpendicular, zero at the magic angle 54.7 deg), and the filtered phase at the
    vein's centre is ``phase_sign * gamma * dB * TE``. So with ``g = 3 cos^2 theta - 1`` from
    the vein's direction, ``phase * g`` has the sign of ``phase_sign`` for every vein.

    Method:

    1. Dark voxels: magnitude relative to a 4 mm local mean below the ``dark_percentile``-th
       percentile inside the mask.
    2. Hessian of the magnitude (Gaussian scale ``sigma_mm``, world mm via the affine): dark
       tubes have two large positive eigenvalues and one small one; its eigenvector is the
       vein direction.
    3. The estimate is the sign of ``sum v * phase * g`` over tube voxels (``v`` = tube
       strength). Tube voxels are grouped into units by ``block_mm`` cubes in world space
       (>= 3 voxels each): the p-value is a Wilcoxon signed-rank test of the unit sums,
       ``vessel_agreement`` the weighted fraction of units agreeing.
       Units are spatially correlated, so p is anti-conservative; the thresholds are
       calibrated on phantoms whose dark veins carry no susceptibility (there p >= 4e-4 and
       agreement <= 0.69): ``high``: p < 1e-6, >= 8 units, agreement >= 0.72;
       ``moderate``: p < 1e-4, agreement >= 0.65; ``low``: p < 0.01.
    4. Compact dark foci (connected voxels with magnitude < ``focus_rel`` of the local mean,
       at most ``max_focus_mm3``, not elongated: largest/smallest spatial SD <= 3) vote with
       their dipole sign (:func:`source_susceptibility_sign`, assuming they are paramagnetic
       microbleeds or vessel cross-sections). >= 5 foci with >= 80 % agreement give
       ``moderate``, >= 3 with >= 75 % ``low``. They decide when the vein evidence is weak and
       lower the confidence when they contradict it (see :func:`_settle_sign`).
    5. Veins along B0 seen end-on (:func:`_column_votes`; the grid axis nearest B0 within 30 deg):
       inside a vein parallel to B0 the field is ``+dchi/3 B0`` and zero outside, whatever the
       slice thickness, so the phase has the sign of ``phase_sign``. A column is a dark in-plane
       dot (below 0.75 of the local mean, brighter 2 mm ring) repeated over >= 3 consecutive
       slices and >= 5 mm; each votes once with the sign of its mean phase against its ring when
       that exceeds 2.5 robust SDs of the brain's phase. A binomial sign test over the columns:
       ``moderate`` with >= 10 columns, >= 80 % agreeing, p < 1e-3; ``low`` with >= 8, 70 %,
       p < 0.01. They decide when the vein orientation is not confident (foci disagreeing with
       moderate confidence lower them to low).

    Estimate on 3D-filtered phase (the cylinder physics is 3D; 2D in-plane filtering distorts
    the field of in-plane veins). Multi-echo: the combined phase, or any single echo.

    Parameters
    ----------
    filtered_phase : numpy.ndarray
        3D high-pass filtered phase (radians or Hz: only the sign matters).
    magnitude : numpy.ndarray
        3D (combined) magnitude.
    affine : (4, 4) array_like
        NIfTI affine.
    mask : numpy.ndarray of bool, optional
        Brain mask; default magnitude above 10% of its 99th percentile.
    b0_dir_world : sequence of 3 float
        B0 direction in world coordinates.
    sigma_mm : float, optional
        Hessian scale in mm; default ``max(0.7, smallest voxel size)`` (small veins; larger
        scales pick up tissue boundaries as "tubes").
    dark_percentile : float
        Percentile of the relative magnitude below which voxels are vein candidates.
    default : {+1, -1}
        Sign returned when the evidence is insufficient.
    max_foci : int
        At most this many compact foci are tested.
    max_focus_mm3 : float
        Largest volume (mm^3) of a compact focus.
    focus_rel : float
        Magnitude relative to the local mean below which voxels can form a focus.
    block_mm : float
        Edge (mm) of the world-space cubes grouping vein voxels into test units.

    Returns
    -------
    sign : int
        +1 or -1.
    evidence : dict
        JSON-serialisable: ``confidence`` (``high|moderate|low|none``), ``method``,
        ``vessel_voxels`` (tube voxels), ``vessel_units``, ``vessel_agreement`` (weighted
        fraction of units agreeing), ``vessel_p`` (Wilcoxon signed-rank test of the units),
        ``vessel_statistic``, ``foci`` (votes), ``foci_agreement``, ``columns`` (votes of veins
        along B0), ``column_agreement``, ``column_p`` (two-sided binomial sign test), ``note``,
        ``sign``.
    """
    ph = np.asarray(filtered_phase, dtype=np.float32)
    mag = np.asarray(magnitude, dtype=np.float32)
    _check_same_3d(ph, mag)
    A = np.asarray(affine, dtype=np.float64)[:3, :3]
    vox = np.linalg.norm(A, axis=0)
    if sigma_mm is None:
        sigma_mm = max(MIN_HESSIAN_SIGMA_MM, float(vox.min()))
    if mask is None:
        mask = ndi.binary_fill_holes(mag > MASK_FRACTION_OF_P99 * np.percentile(mag, 99))
    mask = np.asarray(mask, bool)
    default = int(default)
    ev = {"confidence": "none", "method": "default", "vessel_voxels": 0, "vessel_units": 0,
          "vessel_agreement": None, "vessel_p": None, "vessel_statistic": None, "foci": 0,
          "foci_agreement": None, "columns": 0, "column_agreement": None, "column_p": None, "note": ""}
    if mask.sum() < MIN_MASK_VOXELS:
        ev["note"] = "too few brain voxels"
        return default, ev
    rel = _relative_magnitude(mag, mask, vox)  # valid inside the mask (where it is used)
    inner = _evidence_region(mask, vox, sigma_mm)
    dark = inner & (rel < np.percentile(rel[inner], dark_percentile))
    idx = np.nonzero(dark)
    if idx[0].size < MIN_DARK_VOXELS:
        ev["note"] = "too few dark voxels"
        return default, ev

    tube, axis, strength = _tube_voxels(mag, idx, vox, A, sigma_mm)
    points_mm = np.stack([i[tube] for i in idx], axis=1).astype(np.float64) @ A.T
    vessel_sign, vessel_conf = _vein_evidence(ph[idx][tube], axis, strength, points_mm,
                                              _unit(b0_dir_world), block_mm, ev)
    votes = _foci_votes(ph, mag, affine, dark & (rel < focus_rel), rel, vox, b0_dir_world,
                        max_foci, max_focus_mm3)
    foci_sign, foci_conf = _foci_evidence(votes, ev)
    column_sign, column_conf = _column_evidence(_column_votes(ph, rel, inner, A, vox, _unit(b0_dir_world)), ev)
    sign = _settle_sign(vessel_sign, vessel_conf, foci_sign, foci_conf, len(votes), default, ev,
                        column_sign, column_conf)
    ev["sign"] = int(sign)
    return int(sign), ev


def _evidence_region(mask, vox, sigma_mm):
    """The mask without its outer band of :data:`EDGE_REACH_SIGMAS` Hessian scales ``sigma_mm``
    (mm); the whole mask when too little would be left (a slab or a small crop)."""
    inner = _erode_on_box(mask, vox, EDGE_REACH_SIGMAS * sigma_mm)
    return inner if inner.sum() >= MIN_MASK_VOXELS else mask


def _erode_on_box(mask, vox, margin_mm):
    """``erode_mm(mask, vox, margin_mm)``, computed on the mask's bounding box grown by the erosion's
    reach plus one voxel (cut to the image): outside the mask nothing survives, and the box's own
    edges lie on voxels outside the mask or on the image's edges, as before."""
    reach = [int(round(margin_mm / v)) + 1 for v in vox]
    box = _reach_box(mask, reach, truncate=1.0)
    out = np.zeros(mask.shape, bool)
    if box is not None:
        out[box] = erode_mm(mask[box], vox, margin_mm)
    return out


def _relative_magnitude(mag, mask, vox):
    """Magnitude divided by its local mean inside the mask (Gaussian, sigma
    :data:`LOCAL_MEAN_SIGMA_MM`); 1 where the local mean is 0 and outside the mask.

    The values of scipy's ``gaussian_filter`` (mode nearest) over the whole volume, bit for bit,
    computed on the mask's bounding box grown by the filter's reach (a Gaussian's value at a voxel
    depends on the input within its reach along each axis; the box is cut at the image edges, where
    the boundary mode acts as before) and there only where the mask's voxels need them
    (:func:`microbleeds.stages.gaussian.gaussian_filter_nearest_on`)."""
    sigma = [LOCAL_MEAN_SIGMA_MM / v for v in vox]
    out = np.ones_like(mag)
    box = _reach_box(mask, sigma)
    if box is None:
        return out
    m, k = mag[box], np.ascontiguousarray(mask[box])
    local, norm = gaussian_filter_nearest_on([m * k, k.astype(np.float32)], sigma, k)
    _divide_by_local_mean(m, k, local, norm, out[box])
    return out


@njit("void(float32[:, :, :], boolean[:, :, ::1], float32[:, :, ::1], float32[:, :, ::1], float32[:, :, :])",
      cache=True, parallel=True)
def _divide_by_local_mean(m, k, local, norm, out):  # pragma: no cover - compiled
    """``out = m / (local / max(norm, 1e-6))`` where ``k`` and ``local > 0`` (numpy's float32
    operations), left alone elsewhere."""
    floor = np.float32(1e-6)
    for i in prange(m.shape[0]):
        for j in range(m.shape[1]):
            for q in range(m.shape[2]):
                if k[i, j, q] and local[i, j, q] > 0:
                    n = norm[i, j, q]
                    out[i, j, q] = m[i, j, q] / (local[i, j, q] / (n if n >= floor else floor))


def _reach_box(where, sigma, truncate=4.0):
    """Slices of the bounding box of the boolean image ``where`` grown by the reach
    ``int(truncate * sigma + 0.5)`` of a Gaussian of ``sigma`` (voxels, per axis; scipy's kernel
    radius) and cut to the image; None if ``where`` is empty."""
    return bounding_box(where, [int(truncate * float(s) + 0.5) for s in sigma])


def _grown(bounds, shape, sigma, truncate=4.0):
    """Slices from ``(first, last)`` per axis grown by a Gaussian's reach, cut to ``shape``."""
    box = []
    for axis, (first, last) in enumerate(bounds):
        reach = int(truncate * float(sigma[axis]) + 0.5)
        box.append(slice(max(first - reach, 0), min(last + 1 + reach, shape[axis])))
    return tuple(box)


def _hessian_world_at(image, idx, vox, A, sigma_mm):
    """Hessian (world mm) of the Gaussian-smoothed image at voxels ``idx``, shape (N, 3, 3).

    The six ``scipy.ndimage.gaussian_filter`` derivatives at ``idx``, bit for bit, from shared passes
    with the last axis evaluated at ``idx`` only (:func:`microbleeds.stages.gaussian.hessian_at`).
    """
    sig = [sigma_mm / v for v in vox]
    img = np.asarray(image, dtype=np.float32)
    # only the box of the voxels grown by the filters' reach (the derivative kernels reach as far
    # as the Gaussian): the same values at ``idx``, bit for bit (see _relative_magnitude)
    box = _grown([(int(i.min()), int(i.max())) for i in idx], img.shape, sig)
    img = img[box]
    idx = tuple(i - s_.start for i, s_ in zip(idx, box))
    Hv = hessian_at(img, idx, sig, truncate=4.0)
    Ainv = np.linalg.inv(A).astype(np.float32)
    # world = A ijk + t  =>  H_world = A^-T H_vox A^-1
    d = np.diag(Ainv)
    if np.array_equal(Ainv, np.diag(d)):  # axis-aligned: einsum's float32 (d_a H_ab) d_b (+0: its zeros are +0)
        return (Hv * d[None, :, None]) * d[None, None, :] + np.float32(0.0)
    return np.einsum("ka,nkl,lb->nab", Ainv, Hv, Ainv)


def _eigen_by_magnitude(H):
    """Eigenvalues of each symmetric 3x3 ``H`` sorted by ``|lambda|`` (N, 3) and the eigenvector
    of the smallest ``|lambda|`` (N, 3), float32."""
    n = H.shape[0]
    lam_s = np.empty((n, 3), np.float32)
    axis_vec = np.empty((n, 3), np.float32)
    for start in range(0, n, EIGH_CHUNK):
        stop = start + EIGH_CHUNK
        lam, vec = np.linalg.eigh(H[start:stop])
        order = np.argsort(np.abs(lam), axis=1)
        lam_s[start:stop] = np.take_along_axis(lam, order, axis=1)
        axis_vec[start:stop] = np.take_along_axis(vec, order[:, None, :1], axis=2)[:, :, 0]
    return lam_s, axis_vec


def _tube_voxels(mag, idx, vox, A, sigma_mm):
    """Which dark voxels ``idx`` are tube-like (bool), and for those their axis (world unit
    vectors) and tube strength ``v = lambda_mid * (1 - |lambda_small| / lambda_mid)``.

    The values of LAPACK's float32 eigen-decomposition of every Hessian, bit for bit, from LAPACK on
    a few voxels only: the analytic eigenvalues and their bound (:func:`_symmetric_eigenvalues`) give
    the scale's percentile exactly (:func:`_exact_largest_percentile`) and settle the test wherever
    no value within the bound could change it (:func:`_tube_undecided`); the tubes and the voxels
    left undecided are decomposed by LAPACK and tested as before."""
    Hw = _hessian_world_at(mag, idx, vox, A, sigma_mm)
    lam, bound = _symmetric_eigenvalues(Hw)
    scale = _exact_largest_percentile(Hw, lam, bound, TUBE_SCALE_PERCENTILE) + 1e-12
    exact = np.flatnonzero(_tube_undecided(lam, bound, float(TUBE_MIN_STRENGTH * scale)))
    lam_s, axis_vec = _eigen_by_magnitude(Hw[exact])
    del Hw
    tube_exact, axis_vec, strength = _tube_test(lam_s, axis_vec, scale)
    tube = np.zeros(lam.shape[0], bool)
    tube[exact[tube_exact]] = True
    return tube, axis_vec, strength


def _tube_test(lam_s, axis_vec, scale):
    """The tube test on LAPACK's eigenvalues sorted by ``|lambda|`` (see :func:`_tube_voxels`): the
    tube mask, the tubes' axes and strengths."""
    small, midl, large = lam_s[:, 0], lam_s[:, 1], lam_s[:, 2]  # by |lambda|
    tube = ((midl > 0) & (large > 0) & (np.abs(small) < TUBE_MAX_AXIAL_RATIO * midl)
            & (midl > TUBE_MIN_STRENGTH * scale))
    strength = midl[tube] * (1.0 - np.abs(small[tube]) / midl[tube])
    return tube, axis_vec[tube], strength


def _exact_largest_percentile(H, lam, bound, q):
    """``np.percentile(|lambda_large|, q)`` of LAPACK's float32 eigenvalues of ``H`` (the largest
    ``|lambda|`` of each), bit for bit, from the analytic eigenvalues ``lam`` and their bound.

    The order statistics around the percentile's rank lie between those of the lower and of the
    upper bounds; only the voxels whose interval reaches between them are decomposed by LAPACK, and
    the percentile is taken of an array with the same order statistics there (0 below, the float32
    maximum above)."""
    n = lam.shape[0]
    approx = np.maximum(np.abs(lam[:, 0]), np.abs(lam[:, 2]))
    rank = int(math.floor(q / 100.0 * (n - 1)))
    r_lo, r_hi = max(rank - 1, 0), min(rank + 2, n - 1)  # numpy interpolates between rank and rank + 1
    t_lo = np.partition(approx - bound, r_lo)[r_lo]
    t_hi = np.partition(approx + bound, r_hi)[r_hi]
    below = int(np.count_nonzero(approx + bound < t_lo))
    near = np.flatnonzero((approx + bound >= t_lo) & (approx - bound <= t_hi))
    values = np.sort(np.abs(_eigen_by_magnitude(H[near])[0][:, 2]))
    stand_in = np.full(n, np.finfo(np.float32).max, np.float32)
    stand_in[:below] = 0.0
    stand_in[below:below + values.size] = values
    return np.percentile(stand_in, q)


@njit("Tuple((float64[:, ::1], float64[::1]))(float32[:, :, :])", cache=True, parallel=True)
def _symmetric_eigenvalues(H):
    """Eigenvalues (ascending, float64) of the symmetric 3x3 matrices whose lower triangle is ``H``'s
    (the triangle LAPACK reads), by Smith's trigonometric formula, and the bound
    :data:`EIGEN_BOUND` ``* ||H||_F`` of their distance to LAPACK's float32 eigenvalues."""
    n = H.shape[0]
    lam = np.empty((n, 3), np.float64)
    bound = np.empty(n, np.float64)
    third = 2.0 * math.pi / 3.0
    for v in prange(n):
        a00, a11, a22 = np.float64(H[v, 0, 0]), np.float64(H[v, 1, 1]), np.float64(H[v, 2, 2])
        a10, a20, a21 = np.float64(H[v, 1, 0]), np.float64(H[v, 2, 0]), np.float64(H[v, 2, 1])
        off = a10 * a10 + a20 * a20 + a21 * a21
        bound[v] = EIGEN_BOUND * math.sqrt(a00 * a00 + a11 * a11 + a22 * a22 + 2.0 * off) + 1e-30
        if off == 0.0:
            e0, e1, e2 = a00, a11, a22
        else:
            q = (a00 + a11 + a22) / 3.0
            b00, b11, b22 = a00 - q, a11 - q, a22 - q
            p = math.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * off) / 6.0)
            b00, b11, b22, b10, b20, b21 = b00 / p, b11 / p, b22 / p, a10 / p, a20 / p, a21 / p
            r = 0.5 * (b00 * (b11 * b22 - b21 * b21) - b10 * (b10 * b22 - b21 * b20)
                       + b20 * (b10 * b21 - b11 * b20))
            phi = 0.0 if r >= 1.0 else (math.pi / 3.0 if r <= -1.0 else math.acos(r) / 3.0)
            e2 = q + 2.0 * p * math.cos(phi)
            e0 = q + 2.0 * p * math.cos(phi + third)
            e1 = 3.0 * q - e0 - e2
        # ascending
        if e0 > e1:
            e0, e1 = e1, e0
        if e1 > e2:
            e1, e2 = e2, e1
        if e0 > e1:
            e0, e1 = e1, e0
        lam[v, 0], lam[v, 1], lam[v, 2] = e0, e1, e2
    return lam, bound


@njit("boolean[::1](float64[:, ::1], float64[::1], float64)", cache=True, parallel=True)
def _tube_undecided(lam, bound, threshold):
    """Whether the tube test of :func:`_tube_test` could pass for LAPACK's eigenvalues, each within
    ``bound`` of ``lam`` (ascending): False only where it fails for every such value (``threshold``:
    the least middle eigenvalue, ``TUBE_MIN_STRENGTH * scale``). An order by ``|lambda|`` that the
    bound leaves open is undecided."""
    n = lam.shape[0]
    out = np.empty(n, np.bool_)
    for v in prange(n):
        eps = bound[v]
        x, y, z = lam[v, 0], lam[v, 1], lam[v, 2]
        # sort by |lambda| (small, middle, large)
        if abs(x) > abs(y):
            x, y = y, x
        if abs(y) > abs(z):
            y, z = z, y
        if abs(x) > abs(y):
            x, y = y, x
        if abs(y) - abs(x) <= 2.0 * eps or abs(z) - abs(y) <= 2.0 * eps:
            out[v] = True
            continue
        fails = (y + eps < 0.0 or z + eps < 0.0 or abs(x) - eps > TUBE_MAX_AXIAL_RATIO * (y + eps)
                 or y + eps < threshold)
        out[v] = not fails
    return out


def _vein_evidence(phase, axis, strength, points_mm, b0, block_mm, ev):
    """Sign (0 if none) and confidence of the vein evidence from the tube voxels' phase, axis,
    strength and world position (mm); fills the ``vessel_*`` entries of ``ev``."""
    ev["vessel_voxels"] = int(phase.size)
    if phase.size < MIN_TUBE_VOXELS:
        return 0, "none"
    cosb = axis @ b0
    g = 3.0 * cosb**2 - 1.0
    x = phase * g
    vessel_stat = float(np.sum(strength * x) / np.sum(strength))
    unit_sum, unit_w = _block_units(points_mm, block_mm, strength * x, strength * np.abs(x))
    n_units = int(unit_sum.size)
    ev["vessel_units"] = n_units
    ev["vessel_statistic"] = round(vessel_stat, 6)
    if n_units == 0 or vessel_stat == 0:
        return 0, "none"
    vessel_sign = 1 if vessel_stat > 0 else -1
    agree = np.sign(unit_sum) == vessel_sign
    ev["vessel_agreement"] = round(float(unit_w[agree].sum() / unit_w.sum()), 4)
    p = _signed_rank_p(unit_sum)
    ev["vessel_p"] = float(f"{p:.3g}")
    return vessel_sign, _vein_confidence(p, n_units, ev["vessel_agreement"])


def _block_units(points_mm, block_mm, values, weights):
    """Sums of ``values`` and of ``weights`` per ``block_mm`` world cube holding at least
    :data:`MIN_UNIT_VOXELS` points and a positive weight.

    Veins cross and connect, so connected components are not independent units; blocks also
    split long veins.
    """
    blk = np.floor(points_mm / float(block_mm)).astype(np.int64)
    _, unit = np.unique(blk, axis=0, return_inverse=True)
    unit = unit.ravel()
    unit_sum = np.bincount(unit, weights=values)
    unit_w = np.bincount(unit, weights=weights)
    keep = (unit_w > 0) & (np.bincount(unit) >= MIN_UNIT_VOXELS)
    return unit_sum[keep], unit_w[keep]


def _signed_rank_p(unit_sums):
    """Wilcoxon signed-rank p of the unit sums (ranks keep one large vein from dominating);
    1 with fewer than 2 units or none non-zero.

    ``scipy.stats.wilcoxon`` (two-sided, zeros dropped); beyond :data:`WILCOXON_EXACT_MAX` non-zero
    sums it uses the normal approximation, computed here with its formulas
    (:func:`_signed_rank_normal_p`) so that ``scipy.stats`` (about a second to import) loads only for
    the small samples it tests exactly."""
    if unit_sums.size >= 2 and np.any(unit_sums != 0):
        d = unit_sums[unit_sums != 0]
        if d.size > WILCOXON_EXACT_MAX:
            return _signed_rank_normal_p(d)
        from scipy.stats import wilcoxon  # scipy.stats is slow to import: only when needed

        return float(wilcoxon(d).pvalue)
    return 1.0


WILCOXON_EXACT_MAX = 50  # scipy.stats.wilcoxon's method "auto": exact (or permutation) up to 50 values


def _signed_rank_normal_p(d):
    """Two-sided p of the signed-rank statistic of the non-zero values ``d`` (float64) by the normal
    approximation with the tie correction and without continuity correction: the operations of
    ``scipy.stats.wilcoxon(d, method="asymptotic")``, bit for bit (average ranks and tie counts are
    integers or halves, so their sums are exact in any order)."""
    from scipy.special import ndtr

    d = np.asarray(d, np.float64)
    absd = np.abs(d)
    order = np.argsort(absd, kind="mergesort")
    ordered = absd[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.r_[np.flatnonzero(first), absd.size]  # each tie group's first sorted position
    group = np.cumsum(first) - 1
    ranks = np.empty(absd.size, np.float64)
    ranks[order] = 0.5 * (starts[group] + starts[group + 1] + 1.0)  # average ranks (1-based)
    ties = np.diff(starts).astype(np.float64)
    count = np.float64(d.size)
    r_plus = np.sum((d > 0).astype(np.float64) * ranks)
    mn = count * (count + 1.0) * 0.25
    se = count * (count + 1.0) * (2.0 * count + 1.0)
    se = np.sqrt((se - np.sum(ties**3 - ties) / 2) / 24)
    z = (r_plus - mn) / se
    return float(2 * ndtr(-np.abs(z)))


def _vein_confidence(p, n_units, agreement):
    """``high|moderate|low|none`` from the p-value, unit count and agreement (see the VEIN_*
    constants for the calibration)."""
    if p < VEIN_HIGH_P and n_units >= VEIN_HIGH_MIN_UNITS and agreement >= VEIN_HIGH_AGREEMENT:
        return "high"
    if p < VEIN_MODERATE_P and agreement >= VEIN_MODERATE_AGREEMENT:
        return "moderate"
    if p < VEIN_LOW_P and agreement >= VEIN_LOW_AGREEMENT:
        return "low"
    return "none"


def _foci_votes(ph, mag, affine, focus_voxels, rel, vox, b0_dir_world, max_foci, max_focus_mm3):
    """Dipole signs (+1 / -1) of up to ``max_foci`` compact foci, darkest first.

    Foci are the connected components (26-neighbourhood) of ``focus_voxels`` with at least
    :data:`MIN_FOCUS_VOXELS` voxels and at most ``max_focus_mm3``, not elongated; each is fitted
    as a sphere of its equivalent radius (at least the smallest voxel size) in convention +1.
    Undecided fits give no vote.
    """
    votes = []
    # on the foci's bounding box: the same components, numbered in the same (raster) order
    box = _reach_box(focus_voxels, (0.0, 0.0, 0.0))
    if box is None:
        return votes
    labels, n_labels = ndi.label(focus_voxels[box], structure=np.ones((3, 3, 3)))
    if not n_labels:
        return votes
    voxvol = float(np.prod(vox))
    sizes = np.bincount(labels.ravel(), minlength=n_labels + 1)[1:]
    ok = (sizes >= MIN_FOCUS_VOXELS) & (sizes * voxvol <= max_focus_mm3)
    cand = np.nonzero(ok)[0] + 1
    if not cand.size:
        return votes
    fg = labels > 0  # the labelled voxels in raster order: the same sums as over the whole volume
    darkness = ndi.mean(rel[box][fg], labels[fg], index=cand)
    objs = ndi.find_objects(labels)
    A = np.asarray(affine, dtype=np.float64)[:3, :3]
    for lab_id in cand[np.argsort(darkness)][: FOCI_TRIED_PER_VOTE * max_foci]:
        if len(votes) >= max_foci:
            break
        sl = objs[lab_id - 1]
        pts = np.argwhere(labels[sl] == lab_id) + np.array([s_.start + b.start for s_, b in zip(sl, box)])
        if _is_elongated(pts @ A.T, vox):
            continue
        centre = pts.mean(axis=0)
        radius = max((3.0 * len(pts) * voxvol / (4.0 * _PI)) ** (1 / 3), float(vox.min()))
        _, sign = source_susceptibility_sign(ph, mag, centre, radius, vox, affine, b0_dir_world, +1)
        if sign != 0:
            votes.append(sign)
    return votes


def _is_elongated(world, vox):
    """Whether the points ``world`` (mm) are elongated: largest / smallest spatial variance above
    :data:`FOCUS_MAX_VARIANCE_RATIO` (the smallest SD floored); False below
    :data:`MIN_SHAPE_VOXELS` points."""
    if len(world) < MIN_SHAPE_VOXELS:
        return False
    variances = np.linalg.eigvalsh(np.cov(world.T) + 1e-6 * np.eye(3))
    return variances[-1] > FOCUS_MAX_VARIANCE_RATIO * max(variances[0], (FOCUS_MIN_SD_VOXELS * vox.min()) ** 2)


def _foci_evidence(votes, ev):
    """Majority sign (0 on a tie or without votes) and confidence of the foci votes; fills
    ``foci`` and ``foci_agreement`` of ``ev``."""
    ev["foci"] = len(votes)
    if not votes:
        return 0, "none"
    mean_vote = float(np.mean(votes))
    foci_sign = 1 if mean_vote > 0 else (-1 if mean_vote < 0 else 0)
    if not foci_sign:
        return 0, "none"
    agreement = round(float(np.mean(np.array(votes) == foci_sign)), 4)
    ev["foci_agreement"] = agreement
    if len(votes) >= FOCI_MODERATE_MIN_VOTES and agreement >= FOCI_MODERATE_AGREEMENT:
        return foci_sign, "moderate"
    if len(votes) >= FOCI_LOW_MIN_VOTES and agreement >= FOCI_LOW_AGREEMENT:
        return foci_sign, "low"
    return foci_sign, "none"


def _column_votes(ph, rel, inner, A, vox, b0):
    """Phase contrast (radians: mean inside minus the in-plane ring's mean) of each dark column
    along B0 (see the COLUMN_* constants) whose contrast exceeds :data:`COLUMN_MIN_PHASE_SDS`
    robust SDs of the phase in ``inner``; empty when no grid axis is within
    :data:`COLUMN_MAX_ANGLE_DEG` of B0 (world unit vector ``b0``)."""
    cos_axes = np.abs((A / vox).T @ b0)
    k = int(np.argmax(cos_axes))
    box = _reach_box(inner, (0.0, 0.0, 0.0))
    if cos_axes[k] < math.cos(math.radians(COLUMN_MAX_ANGLE_DEG)) or box is None:
        return np.zeros(0)
    ph, rel, inner = ph[box], rel[box], inner[box]
    outer = [1 if a == k else 2 * max(2, math.ceil(COLUMN_RING_MM / vox[a])) + 1 for a in range(3)]
    in_plane_min = ndi.minimum_filter(rel, size=[1 if a == k else 3 for a in range(3)], mode="nearest")
    dots = inner & (rel < COLUMN_MAX_REL) & (rel <= in_plane_min) & (_ring_mean(rel, outer) > COLUMN_RING_MIN_REL)
    labels, n = ndi.label(dots, structure=np.ones((3, 3, 3)))
    if not n:
        return np.zeros(0)
    contrast = ph - _ring_mean(ph, outer)
    inside = ph[inner]
    floor = COLUMN_MIN_PHASE_SDS * 1.4826 * float(np.median(np.abs(inside - np.median(inside))))
    others = tuple(a for a in range(3) if a != k)
    out = []
    for lab_id, sl in enumerate(ndi.find_objects(labels), 1):
        m = labels[sl] == lab_id
        n_slices = sl[k].stop - sl[k].start
        if (n_slices < COLUMN_MIN_SLICES or n_slices * vox[k] < COLUMN_MIN_MM
                or m.sum(axis=others).max() > COLUMN_MAX_DOTS_PER_SLICE):
            continue
        d = float(np.mean(contrast[sl][m], dtype=np.float64))
        if abs(d) > floor:
            out.append(d)
    return np.array(out)


def _ring_mean(image, outer):
    """Mean of ``image`` over the border of the box of ``outer`` voxels per axis (odd; 1 along the
    column axis) centred on each voxel, edges repeated: the outer box's sum minus the inner box's,
    from separable box means in the image's dtype (float32: :func:`_box_mean`, scipy's numbers)."""
    inner = [n if n == 1 else n - 2 for n in outer]
    n_outer, n_inner = math.prod(outer), math.prod(inner)
    if image.dtype == np.float32 and image.ndim == 3 and all(n % 2 == 1 for n in outer):
        ring, inner_mean = _box_mean(image, outer), _box_mean(image, inner)
        inner_mean *= n_inner
    else:
        ring = ndi.uniform_filter(image, size=outer, mode="nearest")  # separable box means, not a 2D correlation
        inner_mean = n_inner * ndi.uniform_filter(image, size=inner, mode="nearest")
    ring *= n_outer
    ring -= inner_mean
    ring /= n_outer - n_inner
    return ring


def _box_mean(image, size):
    """``scipy.ndimage.uniform_filter(image, size, mode="nearest")`` of a float32 3D image with odd
    sizes, bit for bit: axis by axis (sizes 1 skipped), scipy's running sum per line in float64 rounded
    to float32 after each axis; the first two axes with the rows' voxels inner (vectorised), the last
    line by line."""
    out = np.ascontiguousarray(image, dtype=np.float32)
    for axis, n in enumerate(size):
        if n == 1:
            continue
        src, out = out, np.empty(out.shape, np.float32)
        if axis == 2:
            _box_mean_last(src, n // 2, out)
        else:
            shape = (1, src.shape[0], -1) if axis == 0 else src.shape
            _box_mean_middle(src.reshape(shape), n // 2, out.reshape(shape))
    return out.copy() if out is image else out


BOX_CHUNK = 512
"""Columns of a row per work unit of :func:`_box_mean_middle` (a contiguous run, so the loop vectorises)."""


@njit("void(float32[:, :, ::1], int64, float32[:, :, ::1])", cache=True, parallel=True)
def _box_mean_middle(src, h, out):  # pragma: no cover - compiled
    """Mean of ``2 h + 1`` along the middle axis of ``(p, n, m)``, scipy's running sum (nearest mode):
    the first window summed in order, then ``+= ahead - behind``, divided by the size in float64."""
    n_p, n, m = src.shape
    size = 2 * h + 1
    n_chunks = (m + BOX_CHUNK - 1) // BOX_CHUNK
    for q in prange(n_p * n_chunks):
        p = q // n_chunks
        k0 = (q % n_chunks) * BOX_CHUNK
        w = min(k0 + BOX_CHUNK, m) - k0
        tmp = np.zeros(w)
        for e in range(-h, h + 1):
            line = src[p, min(max(e, 0), n - 1)]
            for k in range(w):
                tmp[k] += np.float64(line[k0 + k])
        row = out[p, 0]
        for k in range(w):
            row[k0 + k] = tmp[k] / size
        for t in range(1, n):
            ahead = src[p, min(t + h, n - 1)]
            behind = src[p, max(t - h - 1, 0)]
            row = out[p, t]
            for k in range(w):
                tmp[k] += np.float64(ahead[k0 + k]) - np.float64(behind[k0 + k])
                row[k0 + k] = tmp[k] / size


@njit("void(float32[:, :, ::1], int64, float32[:, :, ::1])", cache=True, parallel=True)
def _box_mean_last(src, h, out):  # pragma: no cover - compiled
    """Mean of ``2 h + 1`` along the last axis, scipy's running sum (nearest mode), line by line."""
    n0, n1, n = src.shape
    size = 2 * h + 1
    for q in prange(n0 * n1):
        line = src[q // n1, q % n1]
        row = out[q // n1, q % n1]
        tmp = 0.0
        for e in range(-h, h + 1):
            tmp += np.float64(line[min(max(e, 0), n - 1)])
        row[0] = tmp / size
        for t in range(1, n):
            tmp += np.float64(line[min(t + h, n - 1)]) - np.float64(line[max(t - h - 1, 0)])
            row[t] = tmp / size


def _sign_test_p(k, n):
    """Two-sided exact binomial p of ``k`` >= n/2 successes in ``n`` at 1/2 (scipy's ``binomtest``
    p there: the distribution is symmetric), in integers; without importing scipy.stats (~1 s)."""
    tail = sum(math.comb(n, i) for i in range(k, n + 1))
    return min(1.0, 2 * tail / 2 ** n)


def _column_evidence(contrasts, ev):
    """Majority sign (0 if none) and confidence of the column votes (a two-sided binomial sign
    test over columns: voxels of one column are correlated, columns are not); fills
    ``columns``, ``column_agreement`` and ``column_p`` of ``ev``."""
    n_pos, n_neg = int(np.sum(contrasts > 0)), int(np.sum(contrasts < 0))
    n = n_pos + n_neg
    ev["columns"] = n
    if n == 0 or n_pos == n_neg:
        return 0, "none"
    agreement = max(n_pos, n_neg) / n
    p = _sign_test_p(max(n_pos, n_neg), n)
    ev["column_agreement"], ev["column_p"] = round(agreement, 4), float(f"{p:.3g}")
    sign = 1 if n_pos > n_neg else -1
    if n >= COLUMN_MODERATE_MIN and agreement >= COLUMN_MODERATE_AGREEMENT and p < COLUMN_MODERATE_P:
        return sign, "moderate"
    if n >= COLUMN_LOW_MIN and agreement >= COLUMN_LOW_AGREEMENT and p < COLUMN_LOW_P:
        return sign, "low"
    return sign, "none"


def _settle_sign(vessel_sign, vessel_conf, foci_sign, foci_conf, n_foci, default, ev,
                 column_sign=0, column_conf="none"):
    """The sign from the two lines of evidence; sets ``confidence``, ``method`` and ``note``.

    * Confident veins (high / moderate) decide; foci disagreeing (at least
      :data:`FOCI_CONTRADICT_MIN_VOTES`) lower the confidence by one step.
    * Else confident foci (moderate / low) decide, with their own confidence, unless the veins
      (low) disagree; veins without evidence (none: too few tube voxels or p >= :data:`VEIN_LOW_P`)
      do not veto them. Low veins agreeing do not raise the confidence: the vein units are
      spatially correlated, and on the tuning phantoms every low vein vote (3 scans) was wrong
      (with 3 calcifications' foci votes agreeing, one became a wrong "moderate" sign).
    * Else veins along B0 (:func:`_column_votes`, ``column_conf`` moderate) decide; foci disagreeing
      with moderate confidence lower the confidence to low (low foci, often calcifications, only add
      a note). Columns disagreeing with confident veins lower the veins' confidence by one step.
    * Else low veins decide when the foci give no confident sign (the columns first).
    * Else ``default``.
    """
    if vessel_conf in ("high", "moderate"):
        ev["confidence"], ev["method"] = vessel_conf, "vein orientation"
        if foci_sign and foci_sign != vessel_sign and n_foci >= FOCI_CONTRADICT_MIN_VOTES:
            ev["note"] = "compact foci disagree with the veins"
            ev["confidence"] = "moderate" if vessel_conf == "high" else "low"
        elif foci_conf != "none" and foci_sign == vessel_sign:
            ev["method"] = "vein orientation and dipole of compact foci"
        if column_conf != "none" and column_sign != vessel_sign:
            ev["note"] = "veins along B0 disagree with the vein orientation"
            ev["confidence"] = "moderate" if vessel_conf == "high" else "low"
        return vessel_sign
    if column_conf == "moderate":  # veins along B0 (their sign is the convention's, by physics)
        ev["confidence"], ev["method"] = "moderate", "veins along B0"
        if foci_conf == "moderate" and foci_sign != column_sign:
            ev["confidence"], ev["note"] = "low", "compact foci disagree with the veins along B0"
        elif foci_conf == "low" and foci_sign != column_sign:
            ev["note"] = "a few compact foci disagree with the veins along B0"
        elif foci_conf != "none":
            ev["method"] = "veins along B0 and dipole of compact foci"
        return column_sign
    # here vessel_conf is "low" (vessel_sign +-1) or "none"
    if foci_conf != "none" and (vessel_conf == "none" or vessel_sign == foci_sign):
        ev["confidence"], ev["method"] = foci_conf, "dipole of compact foci"
        if vessel_conf == "low":  # named, but no raise: a low vein vote is no independent evidence
            ev["method"] = "vein orientation and dipole of compact foci"
        return foci_sign
    if column_conf == "low" and foci_conf == "none":  # before low veins: 3 of 3 of those were wrong
        ev["confidence"], ev["method"] = "low", "veins along B0"
        return column_sign
    if vessel_conf == "low" and foci_conf == "none":
        ev["confidence"], ev["method"] = "low", "vein orientation"
        return vessel_sign
    disagree = vessel_sign and foci_sign and vessel_sign != foci_sign
    ev["note"] = (("veins and compact foci disagree" if disagree else "insufficient evidence")
                  + f"; default sign {default:+d} used")
    return default


# --------------------------------------------------------------------------------------------
# The vendor's convention as a prior (BIDS Manufacturer)
# --------------------------------------------------------------------------------------------

VENDOR_PHASE_SIGN = (
    ("siemens", -1),
    ("ge", +1),
    ("general electric", +1),
)
"""Reported phase conventions of the vendors' reconstructed phase images, in this package's terms
(``-1``: paramagnetic sources, veins, give negative phase along B0; SWI masks negative phase),
matched case-insensitively at the start of BIDS ``Manufacturer``: Siemens stores the right-handed
convention (Haacke et al. 2004, 2009), GE the left-handed one (its phase is negated before SWI /
QSM, e.g. by STI Suite and MEDI for GE data). Philips and Canon are not listed: their convention
has changed between software versions. A prior only: the veins' estimate overrides it when
confident (and the summary says so); a site that knows its scanner forces ``--phase-sign``."""


def vendor_sign(manufacturer):
    """The convention of :data:`VENDOR_PHASE_SIGN` for a ``Manufacturer`` string, or None."""
    if not isinstance(manufacturer, str):
        return None
    name = manufacturer.strip().lower()
    for prefix, sign in VENDOR_PHASE_SIGN:
        if name == prefix or name.startswith(prefix + " ") or (len(prefix) > 2 and name.startswith(prefix)):
            return sign
    return None


def with_vendor_prior(sign, ev, manufacturer):
    """Combine the estimate ``(sign, ev)`` with the vendor's convention (:func:`vendor_sign`).

    * No listed vendor: the estimate, unchanged.
    * Estimate ``none`` (no usable evidence): the vendor's sign, confidence ``moderate``, method
      ``vendor table (Manufacturer)``.
    * Estimate ``low`` agreeing with the vendor: ``moderate`` (two independent lines).
    * Estimate disagreeing with the vendor: the estimate if ``high`` (noted), else the vendor's
      sign with confidence ``low`` (the calcification rule stays off: the two disagree).
    * Estimate ``moderate`` / ``high`` agreeing: unchanged, the vendor named in ``method``.
    """
    prior = vendor_sign(manufacturer)
    if prior is None:
        return sign, ev
    ev = dict(ev, vendor=str(manufacturer), vendor_sign=int(prior))
    conf = ev.get("confidence", "none")
    if conf == "none":
        ev.update(confidence="moderate", method="vendor table (Manufacturer)",
                  note=f"no usable evidence in the image; {manufacturer}'s convention {prior:+d}")
        sign = prior
    elif sign == prior:
        if conf == "low":
            ev["confidence"] = "moderate"
        ev["method"] = f"{ev.get('method', '')} and vendor table (Manufacturer)".strip()
    elif conf == "high":
        ev["note"] = (ev.get("note", "") + f"; disagrees with {manufacturer}'s usual convention {prior:+d}").lstrip("; ")
    else:
        ev.update(confidence="low", method="vendor table (Manufacturer), estimate disagrees",
                  note=f"the estimate ({sign:+d}, {conf}) disagrees with {manufacturer}'s convention {prior:+d}")
        sign = prior
    ev["sign"] = int(sign)
    return int(sign), ev


# --------------------------------------------------------------------------------------------
# Per-candidate dipole sign
# --------------------------------------------------------------------------------------------

def candidate_signs(rows, swi_result, scan):
    """Sign (+1 paramagnetic, -1 diamagnetic, 0 undecided) and strength of each candidate's
    dipole pattern in the filtered phase.

    The susceptibility source lies somewhere inside the half-depth outline (blooming), so the
    dipole is fitted from three inner radii, 0.6, 0.8 and 1.0 of the outline's radius: the sign is
    decided when at least one fit decides and none contradicts it (the three fits share the
    neighbourhood, see :func:`_source_fits`). Where they leave it undecided (small foci: few
    voxels beyond the source), the voxel-averaged model of the voxels the source occupies and
    touches (:func:`voxel_model_sign`, at the same three radii: the one of the best coherence)
    decides when its likelihood-ratio z reaches :data:`MODEL_MIN_Z`; ``phase_score`` is then the
    model's score. The source's radius inside its blooming is as unknown to the model as to the
    shell fit: on 1 x 1 x 2 mm voxels a 1.1-1.3 mm microbleed's outline is 2.3-2.8 mm, and one
    radius alone left the model at z 2.45-2.50 (undecided) where another decides; at random brain
    points the three radii decide as rarely as one (|z| >= 2.5 at 0-1.2 % of 250 points on each of four
    phantoms, against 0-0.8 %; z SD 0.72-0.96 against 0.75-1.05).
    Sets ``phase_trusted``, ``phase_score`` and ``phase_sign`` of each row.
    """
    trusted = swi_result.sign_evidence.get("confidence") in TRUSTED_SIGN
    ph, mag = np.asarray(swi_result.filtered_phase), np.asarray(swi_result.magnitude)
    _check_same_3d(ph, mag)
    if swi_result.phase_sign not in (1, -1):
        raise ValueError(f"phase_sign must be +1 or -1, got {swi_result.phase_sign!r}")
    vox = voxel_sizes(scan.voxel_size_mm)

    def sign_row(row):
        row["phase_trusted"] = trusted
        fits = _source_fits(ph, mag, row["centroid_canonical"],
                            [fraction * row["diameter_mm"] for fraction in SOURCE_RADIUS_PER_DIAMETER],
                            vox, scan.affine, phase_sign=swi_result.phase_sign)
        signs = {sign for _, sign in fits if sign}
        sign = signs.pop() if len(signs) == 1 else 0
        scores = [score for score, s in fits if s == sign and sign] or [fits[1][0]]
        score = max(scores, key=abs)
        if not sign:  # small foci: the voxels the source occupies and touches decide
            model_score, _, model_sign = voxel_model_sign(
                ph, mag, row["centroid_canonical"], [f * row["diameter_mm"] for f in SOURCE_RADIUS_PER_DIAMETER],
                vox, scan.affine, phase_sign=swi_result.phase_sign)
            if model_sign:
                sign, score = model_sign, model_score
        row["phase_score"] = None if np.isnan(score) else float(score)
        row["phase_sign"] = int(sign)

    _each_in_threads(sign_row, rows)


def _each_in_threads(fn, items):
    """``fn(item)`` for every item, on as many Python threads as this thread's numba threads (the
    fits' kernels release the GIL). Each thread takes the next item when done with its last, so a
    descheduled thread delays no other (a parallel kernel's call waits for all its workers). One
    thread where numba's threading layer cannot be entered from two (:func:`concurrent_kernels_safe`)."""
    threads = min(numba.get_num_threads(), len(items)) if concurrent_kernels_safe() else 1
    if threads <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="microbleeds-fits") as pool:
        for _ in pool.map(fn, items):
            pass


def cluster_signs(rows, swi_result, scan, max_diameter_mm=10.0):
    """Sign of the foci of a cluster whose own fit is undecided, from the cluster's dipole.

    Each focus of a cluster sits in its neighbours' fields, which its own fit (a single dipole at
    its centre, :func:`candidate_signs`) does not model, so it can leave the sign undecided. Beyond
    the cluster, the field is that of the sum of the foci's moments: a dipole whose sign is theirs
    when they share it (the microbleeds of cerebral amyloid angiopathy do). A focus whose own fit
    decided a sign keeps it. ``row["cluster"]`` (``members``, ``centroid_canonical``,
    ``diameter_mm``) is the cluster's, from the segmentation; rows without one are left alone, and
    so are clusters wider than ``max_diameter_mm`` (equivalent diameter, mm; the largest
    microbleed): a dark structure that large is a vein network, not a group of foci.
    """
    ph, mag = np.asarray(swi_result.filtered_phase), np.asarray(swi_result.magnitude)
    vox = voxel_sizes(scan.voxel_size_mm)
    fitted = {}
    for row in rows:
        cluster = row.get("cluster")
        if row.get("phase_sign") != 0 or not cluster or cluster["members"] < 2 \
                or cluster["diameter_mm"] > max_diameter_mm:
            continue
        key = tuple(np.round(cluster["centroid_canonical"], 3))
        if key not in fitted:
            fitted[key] = _focus_sign(ph, mag, cluster["centroid_canonical"], cluster["diameter_mm"], vox,
                                      scan.affine, swi_result.phase_sign)
        sign, score = fitted[key]
        if sign:
            row["phase_sign"], row["phase_score"] = int(sign), float(score)


def _focus_sign(ph, mag, centre, diameter_mm, vox, affine, phase_sign):
    """(sign, score) of one focus as :func:`candidate_signs` decides it: the three source fits, then
    the voxel-averaged model where they leave it undecided."""
    fits = _source_fits(ph, mag, centre, [fraction * diameter_mm for fraction in SOURCE_RADIUS_PER_DIAMETER],
                        vox, affine, phase_sign=phase_sign)
    signs = {sign for _, sign in fits if sign}
    sign = signs.pop() if len(signs) == 1 else 0
    if sign:
        return sign, max((score for score, s in fits if s == sign), key=abs)
    score, _, sign = voxel_model_sign(ph, mag, centre, [SOURCE_RADIUS_PER_DIAMETER[1] * diameter_mm], vox, affine,
                                      phase_sign=phase_sign)
    return sign, score


CORE_FRACTION = 0.25
"""A region's core: its darkest quarter of voxels in the (combined) magnitude."""
CORE_MIN_PAIRS = 20
"""Fewer face-adjacent voxel pairs inside the core: its phase coherence is not measured (the mean of
n unit phasors of pure noise has length about 0.89 / sqrt(n): 0.2 at 20 pairs)."""


def core_phase_coherence(voxels, phase, magnitude):
    """How much signal is left in a dark region's core, read from its phase (0: none, 1: all).

    Where hemosiderin dephases a voxel completely its signal is noise, and so is its phase: the
    phase step between two neighbouring core voxels is uniform on the circle. Tissue darkened only
    in part (iron-rich nuclei, whose R2* and moderate susceptibility darken a region of their own
    size) keeps a signal whose phase varies smoothly. The length of the mean phasor
    ``exp(i (phase[b] - phase[a]))`` over the face-adjacent pairs (a, b) of the core (the
    :data:`CORE_FRACTION` darkest voxels) is ``exp(-1 / SNR^2)`` for a core of signal-to-noise
    ratio SNR (each step carries the noise of two voxels), about 0.89 / sqrt(n) for pure noise.

    Parameters
    ----------
    voxels : ndarray (n, 3) of int
        The region's voxel indices in ``phase``'s grid.
    phase, magnitude : ndarray, 3D
        Filtered phase (radians) and magnitude on the same grid.

    Returns
    -------
    float or None
        The mean phasor's length; None where the core has fewer than :data:`CORE_MIN_PAIRS` pairs.
    """
    voxels = np.asarray(voxels, np.int64)
    if len(voxels) < 2:
        return None
    darkness = magnitude[tuple(voxels.T)]
    core = voxels[darkness <= np.quantile(darkness, CORE_FRACTION)]
    shape = np.array(phase.shape, np.int64)
    linear = np.ravel_multi_index(tuple(core.T), phase.shape)
    flat = phase.reshape(-1)
    steps = []
    for axis in range(3):
        inner = core[:, axis] < shape[axis] - 1  # its neighbour along the axis is inside the array
        stride = int(np.prod(shape[axis + 1:]))
        first = linear[inner]
        second = first + stride
        pair = np.isin(second, linear)
        steps.append(flat[second[pair]].astype(np.float64) - flat[first[pair]])
    steps = np.concatenate(steps)
    if len(steps) < CORE_MIN_PAIRS:
        return None
    return float(abs(np.exp(1j * steps).mean()))


def core_coherences(rows, regions, offset, swi_result, max_diameter_mm=10.0):
    """Set each row's ``core_phase_coherence`` (:func:`core_phase_coherence`) from the region's
    voxels (``regions``, on the brain box at ``offset`` in the canonical grid); None for regions
    larger than ``max_diameter_mm`` (equivalent diameter: no microbleed, left to other rules)."""
    ph, mag = np.asarray(swi_result.filtered_phase), np.asarray(swi_result.magnitude)
    _check_same_3d(ph, mag)
    offset = np.asarray(offset, np.int64)
    for r, row in enumerate(rows):
        inside = row["diameter_mm"] <= max_diameter_mm
        row["core_phase_coherence"] = core_phase_coherence(regions.region(r) + offset, ph, mag) if inside else None
