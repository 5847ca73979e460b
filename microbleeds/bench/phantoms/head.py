"""The phantom's heads: the analytic head and the MNI (ICBM152 2009) head.

Both are "anatomies" with the same interface, used by the simulator, the veins, the sources and
the truth:

* ``grid(mat, trans, shape)``: tissue class (uint8, :mod:`.params`) at the points
  ``world = mat @ ijk + trans`` (mm) of a grid;
* ``points(pts)``: tissue class and depth below the outer brain surface (mm) of world points
  (N, 3);
* ``mars(pts)``: MARS truth class (``MARS_*``) of world points (N, 3), for the truth only (the
  image never uses it);
* ``ell``: the head's ellipsoid rows (cx, cy, cz, rx, ry, rz in world mm; rows ``_E_*``), ``sc``
  its scalar geometry (rows ``_S_*``), ``boxes``: centre and half-size (mm) of the box where random
  sources of each target region are drawn, ``lobar_max_depth`` (mm), ``default_fov`` /
  ``default_centre`` (mm at ``head_scale`` 1).

World coordinates are RAS+ mm; everything scales with ``head_scale``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from ...io.nifti import read_nifti
from .params import (
    _BRAIN,
    AIR,
    BRAINSTEM,
    CAUDATE,
    CB_GM,
    CB_WM,
    CSF,
    DENTATE,
    GM,
    MIDBRAIN,
    PALLIDUM,
    PUTAMEN,
    SCALP,
    SINUS,
    SKULL,
    THALAMUS,
    VENTRICLE,
    WM,
    PhantomParams,
)

# --------------------------------------------------------------------------------------------
# analytic head geometry
# ellipsoid rows: cx, cy, cz, rx, ry, rz (world mm at head_scale 1)
_E_CEREBRUM, _E_CEREBELLUM, _E_BRAINSTEM, _E_SINUS = 0, 1, 2, 3
_E_VENT = (4, 5, 6)
_E_CAUDATE = (7, 8)
_E_PUTAMEN = (9, 10)
_E_PALLIDUM = (11, 12)
_E_THALAMUS = (13, 14)
_E_MIDBRAIN = (15, 16)
_E_DENTATE = (17, 18)

_BASE_ELLIPSOIDS = np.array([
    [0.0, 0.0, 8.0, 56.0, 70.0, 46.0],       # cerebrum
    [0.0, -42.0, -24.0, 44.0, 26.0, 18.0],   # cerebellum
    [0.0, -16.0, -26.0, 12.0, 13.0, 30.0],   # brainstem
    [0.0, 0.0, 0.0, 12.0, 9.0, 7.0],         # sinus pocket (placed in _geometry)
    [-11.0, -2.0, 20.0, 6.0, 24.0, 7.0],     # left lateral ventricle
    [11.0, -2.0, 20.0, 6.0, 24.0, 7.0],      # right lateral ventricle
    [0.0, -8.0, 6.0, 2.0, 10.0, 8.0],        # third ventricle
    [-18.0, 12.0, 16.0, 5.0, 9.0, 7.0],      # caudate L
    [18.0, 12.0, 16.0, 5.0, 9.0, 7.0],       # caudate R
    [-25.0, 4.0, 4.0, 5.0, 14.0, 9.0],       # putamen L
    [25.0, 4.0, 4.0, 5.0, 14.0, 9.0],        # putamen R
    [-19.0, 0.0, 2.0, 3.5, 8.0, 5.0],        # pallidum L
    [19.0, 0.0, 2.0, 3.5, 8.0, 5.0],         # pallidum R
    [-9.0, -16.0, 8.0, 8.0, 13.0, 8.0],      # thalamus L
    [9.0, -16.0, 8.0, 8.0, 13.0, 8.0],       # thalamus R
    [-6.0, -16.0, -8.0, 3.0, 5.0, 3.0],      # red nucleus / SN L
    [6.0, -16.0, -8.0, 3.0, 5.0, 3.0],       # red nucleus / SN R
    [-15.0, -46.0, -26.0, 6.0, 8.0, 5.0],    # dentate L
    [15.0, -46.0, -26.0, 6.0, 8.0, 5.0],     # dentate R
])

# scalar geometry parameters (mm at head_scale 1)
_S_T0, _S_TX, _S_TY, _S_TY0, _S_TYFRONT, _S_FISSZ, _S_FISSY, _S_FISSHALF, _S_CSF, _S_SKULL, \
    _S_SCALP, _S_CORTEX, _S_CBCORTEX, _S_SULCDEPTH, _S_SULCHALF, _S_BSTOP, _S_SINUS_ON, \
    _S_DEEPWM, _S_NOTCHX, _S_NOTCHY, _S_NOTCHDROP = range(21)
_BASE_SCALARS = np.array([
    -4.0,   # tentorium height at midline, y = TY0
    0.12,   # tentorium drop per mm |x|
    0.05,   # tentorium rise per mm y
    -40.0,  # TY0
    -10.0,  # tentorium anterior edge (incisura), y
    24.0,   # interhemispheric fissure reaches down to z (over the corpus callosum)
    38.0,   # ... and everywhere beyond |y - cy| > this
    1.0,    # fissure half-width (CSF)
    2.5,    # CSF layer
    6.0,    # skull
    5.0,    # scalp
    2.5,    # cortex thickness
    4.0,    # cerebellar cortex thickness
    11.0,   # sulcal depth
    0.6,    # sulcal CSF half-width
    -4.0,   # brainstem top z
    1.0,    # sinus on
    14.0,   # deep WM: depth below the outer brain surface (mm)
    22.0,   # tentorial notch half-width |x| (the diencephalon / midbrain passes here)
    -32.0,  # tentorial notch back edge y
    10.0,   # in the notch the cerebrum reaches this far below the tentorium plane
])


def _geometry(params: PhantomParams, rng: np.random.Generator):
    """Scaled ellipsoids, scalars and sulcal waves of the analytic head."""
    s = float(params.head_scale)
    ell = _BASE_ELLIPSOIDS.copy() * s
    sc = _BASE_SCALARS.copy()
    for idx in (_S_T0, _S_TY0, _S_TYFRONT, _S_FISSZ, _S_FISSY, _S_BSTOP, _S_NOTCHX, _S_NOTCHY,
                _S_NOTCHDROP):
        sc[idx] *= s
    for idx in (_S_SULCDEPTH, _S_DEEPWM):
        sc[idx] *= s
    # sinus pocket: frontal-basal, just outside the cerebrum (4 mm gap)
    c, r = ell[_E_CEREBRUM, :3], ell[_E_CEREBRUM, 3:]
    u = np.array([0.0, 0.78, -0.62])
    u /= np.linalg.norm(u)
    p_surf = c + r * u
    normal = u / r
    normal /= np.linalg.norm(normal)
    ell[_E_SINUS, 3:] = np.array([12.0, 9.0, 7.0]) * s
    gap = 4.0 + 8.0 * s
    ell[_E_SINUS, :3] = p_surf + normal * gap
    sc[_S_SINUS_ON] = 1.0 if params.with_air_interface else 0.0
    # sulcal pattern: zero-set of a sum of plane waves (wavelength ~ 28 mm)
    nw = 4
    dirs = rng.normal(size=(nw, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    kmag = 2.0 * math.pi / (28.0 * s)
    waves = np.zeros((nw, 4))
    waves[:, :3] = dirs * kmag
    waves[:, 3] = rng.uniform(0, 2 * math.pi, size=nw)
    return np.ascontiguousarray(ell), np.ascontiguousarray(sc), np.ascontiguousarray(waves)


class _AnalyticHead:
    """The analytic head (see the module docstring)."""

    name = "analytic"
    default_fov = (150.0, 180.0, 128.0)
    default_centre = (0.0, 0.0, 0.0)

    def __init__(self, params, rng):
        self.ell, self.sc, self.waves = _geometry(params, rng)
        s = float(params.head_scale)
        self.boxes = {
            "infratentorial": (0.5 * (self.ell[_E_CEREBELLUM, :3] + self.ell[_E_BRAINSTEM, :3]),
                               np.array([46.0, 34.0, 36.0]) * s),
            "deep": (np.array([0.0, -2.0, 10.0]) * s, np.array([34.0, 34.0, 22.0]) * s),
            "lobar": (self.ell[_E_CEREBRUM, :3], self.ell[_E_CEREBRUM, 3:]),
        }
        self.lobar_max_depth = 10.0 * s

    def grid(self, mat, trans, shape):
        from .kernels import tissue_grid

        return tissue_grid(np.ascontiguousarray(mat), np.ascontiguousarray(trans),
                           np.asarray(shape, dtype=np.int64), self.ell, self.sc, self.waves)

    def points(self, pts):
        from .kernels import classify_points

        return classify_points(np.ascontiguousarray(pts, dtype=np.float64), self.ell, self.sc,
                               self.waves)

    def mars(self, pts):
        """MARS truth class (``MARS_*``) of world points (N, 3): from the tissue class (the
        analytic nuclei are exactly its ellipsoids, its cortex the ribbon)."""
        lab, _ = self.points(pts)
        return _MARS_OF_TISSUE[np.asarray(lab, dtype=np.int64)]


# --------------------------------------------------------------------------------------------
# MNI head
# MNI-space ellipsoids (same rows as _BASE_ELLIPSOIDS): approximate positions in the ICBM152
# 2009 template; the cerebrum row is only used for lobes and vein directions.
_MNI_ELLIPSOIDS = np.array([
    [0.0, -18.0, 12.0, 68.0, 86.0, 62.0],     # cerebrum (bounding)
    [0.0, -62.0, -36.0, 50.0, 30.0, 24.0],    # cerebellum
    [0.0, -28.0, -28.0, 14.0, 14.0, 30.0],    # brainstem
    [0.0, 0.0, 0.0, 12.0, 9.0, 7.0],          # sinus pocket (placed below)
    [-12.0, -10.0, 16.0, 7.0, 26.0, 9.0],     # lateral ventricles (vein targets only)
    [12.0, -10.0, 16.0, 7.0, 26.0, 9.0],
    [0.0, -14.0, 2.0, 2.0, 10.0, 8.0],
    [-13.0, 12.0, 10.0, 4.5, 9.0, 7.0],       # caudate head
    [13.0, 12.0, 10.0, 4.5, 9.0, 7.0],
    [-25.0, 2.0, 1.0, 5.0, 14.0, 9.0],        # putamen
    [25.0, 2.0, 1.0, 5.0, 14.0, 9.0],
    [-19.0, -3.0, -1.0, 3.5, 7.0, 5.0],       # globus pallidus
    [19.0, -3.0, -1.0, 3.5, 7.0, 5.0],
    [-11.0, -18.0, 7.0, 7.0, 12.0, 7.0],      # thalamus
    [11.0, -18.0, 7.0, 7.0, 12.0, 7.0],
    [-6.0, -19.0, -10.0, 3.0, 5.0, 3.0],      # red nucleus / substantia nigra
    [6.0, -19.0, -10.0, 3.0, 5.0, 3.0],
    [-14.0, -57.0, -35.0, 6.0, 8.0, 5.0],     # dentate
    [14.0, -57.0, -35.0, 6.0, 8.0, 5.0],
])

def _mni_files():
    """Paths of the ICBM152 2009 GM / WM maps inside the installed nilearn."""
    try:
        import nilearn
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError("anatomy='mni' needs nilearn (pip install 'microbleeds[anatomy]'); "
                          "nothing is downloaded: the ICBM152 2009 maps ship inside nilearn") \
            from exc
    d = Path(nilearn.__file__).parent / "datasets" / "data"
    files = {t: d / f"mni_icbm152_{t}_tal_nlin_sym_09a_converted.nii.gz" for t in ("gm", "wm")}
    for f in files.values():
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found in the installed nilearn")
    return files


@functools.cache
def _mni_maps():
    """The ICBM152 2009 GM and WM probability maps (float32, scaled so that the larger maximum
    is 1; read-only) and their 1 mm affine (read once per process)."""
    files = _mni_files()
    gi, gm = read_nifti(files["gm"], "ICBM152 grey matter map")
    _, wm = read_nifti(files["wm"], "ICBM152 white matter map")
    top = max(float(gm.max()), float(wm.max()), 1e-6)
    gm /= top
    wm /= top
    gm.setflags(write=False)
    wm.setflags(write=False)
    return gm, wm, np.asarray(gi.affine, dtype=np.float64)


@functools.cache
def _mni_volume():
    """Tissue labels, depth below the brain's smooth hull (mm) and affine of the 1 mm ICBM152
    2009 grid, built from nilearn's GM / WM maps (computed once per process)."""
    from scipy import ndimage as ndi

    gm, wm, aff = _mni_maps()
    vs = np.sqrt(np.sum(aff[:3, :3] ** 2, axis=0))
    brain = (gm + wm) > 0.5
    lab_cc, n = ndi.label(brain)
    if n > 1:
        sizes = ndi.sum(brain, lab_cc, index=np.arange(1, n + 1))
        brain = lab_cc == (1 + int(np.argmax(sizes)))
    filled = ndi.binary_fill_holes(brain)
    sd = _hull_signed_distance(filled, vs)
    hull = (sd <= 0) | filled
    d_out = np.maximum(sd, 0.0)
    depth = np.maximum(-sd, 0.0)
    lab = np.full(gm.shape, AIR, dtype=np.uint8)
    lab[d_out <= 13.5] = SCALP
    lab[d_out <= 8.5] = SKULL
    lab[d_out <= 2.5] = CSF
    lab[hull & ~brain] = CSF
    lab[filled & ~brain] = VENTRICLE
    lab[brain & (gm >= wm)] = GM
    lab[brain & (gm < wm)] = WM
    _mni_rule_structures(lab, brain, gm, wm, aff)
    return lab, depth, aff


def _hull_signed_distance(filled, vs):
    """Signed distance (mm, > 0 outside) to the smooth hull of a filled brain mask: closing with a
    6 mm ball, on a 2 mm grid for speed, linearly interpolated back to the mask's grid."""
    from scipy import ndimage as ndi

    f2 = filled[::2, ::2, ::2]
    vs2 = vs * 2.0
    r = 6.0
    dil = ndi.distance_transform_edt(~f2, sampling=vs2) <= r
    hull2 = (ndi.distance_transform_edt(dil, sampling=vs2) > r) | f2
    d_out2 = ndi.distance_transform_edt(~hull2, sampling=vs2) - ndi.distance_transform_edt(
        hull2, sampling=vs2)
    z = [n / m for n, m in zip(filled.shape, d_out2.shape)]
    out = ndi.zoom(d_out2.astype(np.float32), z, order=1, mode="nearest", grid_mode=True)
    return out[: filled.shape[0], : filled.shape[1], : filled.shape[2]]


def _mni_tentorium_z(x, y):
    """Height (MNI mm) of the tissue model's tilted tentorium plane at (x, y) mm: the image's
    cerebellum lies below it (behind y = -38 mm)."""
    return -10.0 - 0.12 * np.abs(x) + 0.1 * (y + 60.0)


def _mni_stem_box(x, y, z):
    """The tissue model's brainstem box (MNI mm): |x| < 15, -44 < y < -12, z < -8."""
    return (np.abs(x) < 15.0) & (y > -44.0) & (y < -12.0) & (z < -8.0)


def _mni_grid_coords(aff, shape):
    """Sparse MNI coordinates (mm) x, y, z of a grid with an axis-aligned affine."""
    ii, jj, kk = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij",
                             sparse=True)
    return aff[0, 0] * ii + aff[0, 3], aff[1, 1] * jj + aff[1, 3], aff[2, 2] * kk + aff[2, 3]


def _mni_rule_structures(lab, brain, gm, wm, aff):
    """Paint (in place) cerebellum and brainstem (MNI-coordinate rules and a tilted tentorium),
    then the deep nuclei, red nucleus / substantia nigra and dentate (:data:`_MNI_ELLIPSOIDS`)."""
    x, y, z = _mni_grid_coords(aff, lab.shape)
    ztent = _mni_tentorium_z(x, y)
    stem = _mni_stem_box(x, y, z) & brain
    cereb = brain & ~stem & (y < -38.0) & (z < ztent)
    lab[cereb & (gm >= wm)] = CB_GM
    lab[cereb & (gm < wm)] = CB_WM
    lab[stem] = BRAINSTEM
    ell = _MNI_ELLIPSOIDS

    def inside(e):
        return (((x - ell[e, 0]) / ell[e, 3]) ** 2 + ((y - ell[e, 1]) / ell[e, 4]) ** 2
                + ((z - ell[e, 2]) / ell[e, 5]) ** 2) <= 1.0

    for rows, cls, where in ((_E_CAUDATE, CAUDATE, brain & ~cereb & ~stem),
                             (_E_PUTAMEN, PUTAMEN, brain & ~cereb & ~stem),
                             (_E_PALLIDUM, PALLIDUM, brain & ~cereb & ~stem),
                             (_E_THALAMUS, THALAMUS, brain & ~cereb & ~stem),
                             (_E_MIDBRAIN, MIDBRAIN, stem),
                             (_E_DENTATE, DENTATE, cereb)):
        for e in rows:
            lab[inside(e) & where] = cls


# --------------------------------------------------------------------------------------------
# MARS classes of the truth (not of the image): what region a source centred at a point is in
MARS_NONE, MARS_CORTEX, MARS_BASAL_GANGLIA, MARS_THALAMUS, MARS_CEREBRAL_WM, MARS_CALLOSUM, \
    MARS_BRAINSTEM, MARS_CEREBELLUM = range(8)
_MARS_OF_TISSUE = np.zeros(32, dtype=np.uint8)
_MARS_OF_TISSUE[[GM]] = MARS_CORTEX
_MARS_OF_TISSUE[[CAUDATE, PUTAMEN, PALLIDUM]] = MARS_BASAL_GANGLIA
_MARS_OF_TISSUE[[THALAMUS]] = MARS_THALAMUS
_MARS_OF_TISSUE[[WM]] = MARS_CEREBRAL_WM
_MARS_OF_TISSUE[[BRAINSTEM, MIDBRAIN]] = MARS_BRAINSTEM
_MARS_OF_TISSUE[[CB_GM, CB_WM, DENTATE]] = MARS_CEREBELLUM

#: MARS truth rules of the MNI head (mm): cortex seeds are grey matter within this distance of
#: the pial side (CSF or outside, not a ventricle) ...
MARS_PIAL_SEED_MM = 1.5
#: ... and farther than this from the basal-ganglia ellipsoids (the insula's Sylvian surface
#: lies about 8-10 mm lateral of the putamen ellipsoid) ...
MARS_SEED_CLEARANCE_MM = 8.0
#: ... and than this from the thalamus ellipsoids (the thalamus, pulvinar included, faces the
#: cisterns and the third ventricle's CSF over much of its surface)
MARS_THALAMUS_CLEARANCE_MM = 14.0
#: the corpus callosum: cerebral white matter within this distance of the mid-sagittal plane,
#: connected inside that slab to the plane itself
MARS_CALLOSUM_HALF_MM = 5.0


def _geodesic_split(mask, markers):
    """Label every voxel of ``mask`` with the marker reached first by a breadth-first flood inside
    the mask (6-connected; a geodesic Voronoi split, ties: the seed first in C order); 0 if
    unreached."""
    from .flood import grow

    return grow(np.where(mask, markers, 0), mask)


def _mni_cerebellum(lab, brain, gm, wm, x, y, z):
    """The cerebellum of the truth: the tissue (not the brainstem box) flooded from the
    cerebellar core (y < -45, 15 mm below the image's tentorium plane) against the cerebrum
    (y > -30 or 15 mm above it) in order of rising 1 - (GM + WM) probability (a watershed in
    steps of 0.02), so the border follows the tentorial gap of the ICBM152 maps, not the image's
    plane rule."""
    from .flood import flood_by_level

    # only the box y <= -20, z <= 10 mm can hold cerebellum (its faces there are cerebrum seeds)
    box = (slice(None), slice(0, int(np.searchsorted(y.ravel(), -20.0, side="right"))),
           slice(0, int(np.searchsorted(z.ravel(), 10.0, side="right"))))
    x, y, z = x[box[0]], y[:, box[1]], z[:, :, box[2]]
    tissue = brain[box] & ~np.isin(lab[box], (BRAINSTEM, MIDBRAIN))
    zt = _mni_tentorium_z(x, y)
    mk = np.zeros(tissue.shape, dtype=np.int32)
    mk[tissue & ((y > -30.0) | (z > zt + 15.0))] = 1
    mk[tissue & (y < -45.0) & (z < zt - 15.0)] = 2
    cost = 1.0 - np.clip(gm[box] + wm[box], 0.0, 1.0)
    out = np.zeros(lab.shape, dtype=bool)
    out[box] = flood_by_level(cost, mk, tissue, _CEREBELLUM_FLOOD_LEVELS) == 2
    return out


#: cost levels (1 - tissue probability) of the cerebellum's flood (:func:`.flood.flood_by_level`)
_CEREBELLUM_FLOOD_LEVELS = np.round(np.arange(0.02, 0.51, 0.02), 2)


@functools.cache
def _mni_mars_volume():
    """MARS class (``MARS_*``, uint8) of every voxel of the 1 mm ICBM152 grid, from the phantom's
    own tissue model (the ICBM152 2009 GM / WM maps and the head's rule structures; no atlas).

    * brainstem: the image's brainstem box; cerebellum: :func:`_mni_cerebellum`;
    * cerebral grey matter (GM >= WM probability, or a deep-nucleus ellipsoid): split between
      cortex and deep grey by a geodesic flood inside it (:func:`_geodesic_split`) from the
      deep-nucleus ellipsoids (basal ganglia: caudate, putamen, pallidum; thalamus) and from the
      cortical grey matter at the pial side (within :data:`MARS_PIAL_SEED_MM` of CSF or outside,
      farther than :data:`MARS_SEED_CLEARANCE_MM` from the basal-ganglia and
      :data:`MARS_THALAMUS_CLEARANCE_MM` from the thalamus ellipsoids): each voxel goes to the
      nearer seed along the grey matter, so the caudate body and tail, the pulvinar and the rims
      of the nuclei that the ellipsoids miss are deep, and the insula and the hippocampus stay
      cortex; grey matter reached from neither is cortex;
    * corpus callosum: cerebral white matter within :data:`MARS_CALLOSUM_HALF_MM` of the
      mid-sagittal plane x = 0, connected inside that slab to the plane (MARS counts the corpus
      callosum deep); the rest of the cerebral white matter: ``MARS_CEREBRAL_WM`` (the
      juxtacortical rule of :mod:`.truth` decides).
    """
    from scipy import ndimage as ndi

    full, _, aff_full = _mni_volume()
    brain_full = np.isin(full, _BRAIN)
    # work in the brain's bounding box (+ 3 voxels): everything outside it is MARS_NONE
    box = tuple(slice(max(int(a.min()) - 3, 0), int(a.max()) + 4) for a in np.nonzero(brain_full))
    lab, brain = full[box], brain_full[box]
    gm, wm = (m[box] for m in _mni_maps()[:2])
    aff = aff_full.copy()
    aff[:3, 3] += aff[:3, :3] @ np.array([b.start for b in box], dtype=np.float64)
    x, y, z = _mni_grid_coords(aff, lab.shape)
    out = np.zeros(lab.shape, dtype=np.uint8)
    cereb = _mni_cerebellum(lab, brain, gm, wm, x, y, z)
    out[np.isin(lab, (BRAINSTEM, MIDBRAIN))] = MARS_BRAINSTEM
    out[cereb] = MARS_CEREBELLUM
    cerebrum = brain & (out == 0)
    bg = np.isin(lab, (CAUDATE, PUTAMEN, PALLIDUM)) & cerebrum
    th = (lab == THALAMUS) & cerebrum
    grey = cerebrum & ((gm >= wm) | bg | th)
    vs = np.sqrt(np.sum(aff[:3, :3] ** 2, axis=0))
    pial = ~brain & (lab != VENTRICLE)
    near_pial = _within(pial, MARS_PIAL_SEED_MM, vs)
    clear = ~_within(bg, MARS_SEED_CLEARANCE_MM, vs) & ~_within(th, MARS_THALAMUS_CLEARANCE_MM, vs)
    seeds = np.zeros(lab.shape, dtype=np.int32)
    seeds[grey & near_pial & clear] = MARS_CORTEX
    seeds[bg] = MARS_BASAL_GANGLIA
    seeds[th] = MARS_THALAMUS
    split = _geodesic_split(grey, seeds)
    out[grey] = np.where(split[grey] == 0, MARS_CORTEX, split[grey]).astype(np.uint8)
    white = cerebrum & ~grey
    out[white] = MARS_CEREBRAL_WM
    slab = white & (np.abs(x) <= MARS_CALLOSUM_HALF_MM + 1e-6)
    comp, _ = ndi.label(slab)
    mid = np.unique(comp[slab & (np.abs(x) < 0.5)])
    out[np.isin(comp, mid[mid > 0])] = MARS_CALLOSUM
    vol = np.zeros(full.shape, dtype=np.uint8)
    vol[box] = out
    vol.setflags(write=False)
    return vol


def _within(mask, dist_mm, vs):
    """Voxels within ``dist_mm`` (Euclidean, voxel centres) of ``mask``: the distance transform
    on the mask's bounding box grown by ``dist_mm`` (the rest is farther)."""
    from scipy import ndimage as ndi

    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    pad = np.ceil(dist_mm / vs).astype(int) + 1
    box = tuple(slice(max(int(a.min()) - p, 0), int(a.max()) + p + 1)
                for a, p in zip(np.nonzero(mask), pad))
    out[box] = ndi.distance_transform_edt(~mask[box], sampling=vs) <= dist_mm
    return out


class _MNIHead:
    """Tissue from the ICBM152 2009 GM/WM maps shipped inside nilearn (1 mm, nearest
    neighbour), deep nuclei / brainstem / cerebellum from MNI-coordinate rules."""

    name = "mni"
    default_fov = (172.0, 212.0, 150.0)
    default_centre = (0.0, -17.0, 4.0)

    def __init__(self, params, rng):
        lab, depth, aff = _mni_volume()
        s = float(params.head_scale)
        self.lab = lab
        self.dep = (depth * s).astype(np.float32)
        waff = aff.copy()
        waff[:3, :] *= s  # world = s * MNI
        self.vinv = np.linalg.inv(waff[:3, :3])
        self.vtrans = waff[:3, 3].copy()
        self.ell = _MNI_ELLIPSOIDS.copy() * s
        self.sc = _BASE_SCALARS.copy()
        self.sc[_S_DEEPWM] = 20.0 * s  # depth below the smooth hull of the brain
        self.lobar_max_depth = 16.0 * s
        # sinus pocket: in front of / below the orbitofrontal cortex, >= 3 mm outside the brain
        pocket = np.array([0.0, 58.0, -24.0]) * s
        radii = np.array([12.0, 9.0, 7.0]) * s
        step = np.array([0.0, 0.6, -0.8])
        for _ in range(40):
            u = rng.normal(size=(400, 3))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            shell = pocket + u * (radii + 3.0)
            lb, _ = self.points(shell)
            if not np.any(np.isin(lb, _BRAIN + (VENTRICLE,))):
                break
            pocket = pocket + step
        self.ell[_E_SINUS, :3] = pocket
        self.ell[_E_SINUS, 3:] = radii
        self.with_air = bool(params.with_air_interface)
        self.boxes = {
            "infratentorial": (np.array([0.0, -52.0, -34.0]) * s, np.array([52.0, 40.0, 34.0]) * s),
            "deep": (np.array([0.0, -6.0, 8.0]) * s, np.array([36.0, 40.0, 26.0]) * s),
            "lobar": (self.ell[_E_CEREBRUM, :3], self.ell[_E_CEREBRUM, 3:]),
        }

    def grid(self, mat, trans, shape):
        from .kernels import lookup_grid, paint_ellipsoid

        lab = lookup_grid(self.lab, self.vinv, self.vtrans, np.ascontiguousarray(mat),
                          np.ascontiguousarray(trans), np.asarray(shape, dtype=np.int64))
        if self.with_air:
            paint_ellipsoid(lab, np.ascontiguousarray(mat), np.ascontiguousarray(trans),
                            self.ell[_E_SINUS], SINUS)
        return lab

    def points(self, pts):
        from .kernels import lookup_points

        return lookup_points(self.lab, self.dep, self.vinv, self.vtrans,
                             np.ascontiguousarray(pts, dtype=np.float64))

    def mars(self, pts):
        """MARS truth class (``MARS_*``) of world points (N, 3): nearest voxel of
        :func:`_mni_mars_volume` (built on first use)."""
        from .kernels import lookup_points

        vol = _mni_mars_volume()
        lab, _ = lookup_points(vol, self.dep, self.vinv, self.vtrans,
                               np.ascontiguousarray(pts, dtype=np.float64))
        return lab.astype(np.uint8)


def _make_anatomy(params: PhantomParams, rng: np.random.Generator):
    """The head of ``params.anatomy`` (draws the analytic head's sulcal pattern, or the MNI sinus
    placement, from ``rng``: the first draws of a seed)."""
    if params.anatomy == "analytic":
        return _AnalyticHead(params, rng)
    if params.anatomy == "mni":
        return _MNIHead(params, rng)
    raise ValueError(f"anatomy must be 'analytic' or 'mni', got {params.anatomy!r}")
