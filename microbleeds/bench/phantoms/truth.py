"""The phantom's truth: region, lobe and hemisphere of each source (MARS, on the phantom's own
tissue model), and the FreeSurfer-style label map of the phantom (:func:`segmentation`).

The instrument keeps its own MARS rule, measured on the continuous tissue model and the true
sphere, apart from the detector's (which works on label maps and blooming lesions).
"""

from __future__ import annotations

import math

import numpy as np

from ...contract import LOBES, MARS_JUXTACORTICAL_MM
from .grid import _fine_grid, _grid_points, _oversampling
from .head import (
    _E_CEREBRUM,
    _E_VENT,
    _S_DEEPWM,
    MARS_BASAL_GANGLIA,
    MARS_BRAINSTEM,
    MARS_CALLOSUM,
    MARS_CEREBELLUM,
    MARS_CEREBRAL_WM,
    MARS_CORTEX,
    MARS_THALAMUS,
    _make_anatomy,
)
from .params import (
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
    Phantom,
)

# --------------------------------------------------------------------------------------------
# region, lobe and hemisphere of a source
_DEEP_NAMES = {CAUDATE: "basal_ganglia", PUTAMEN: "basal_ganglia", PALLIDUM: "basal_ganglia",
               THALAMUS: "thalamus", VENTRICLE: "choroid_plexus"}


_MIDLINE, _LEFT, _RIGHT = 0, 1, 2
_SIDE_NAMES = ("midline", "left", "right")


def _side_codes(pts, ell):
    """Hemisphere code (:data:`_MIDLINE`, :data:`_LEFT`, :data:`_RIGHT`) of world points (N, 3):
    midline within 2 mm (times the head scale) of the cerebrum's mid-sagittal plane."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    x = pts[:, 0] - ell[_E_CEREBRUM, 0]
    out = np.where(x > 0, _RIGHT, _LEFT)
    out[np.abs(x) < 2.0 * (ell[_E_CEREBRUM, 3] / 56.0)] = _MIDLINE
    return out


def _lobe_codes(pts, ell):
    """Lobe of world points (N, 3) as indices into :data:`~microbleeds.contract.LOBES` (0-3: the phantom has no insula): the geometric lobe rule
    of the phantom (normalised position in the cerebrum ellipsoid), used for the truth ``lobe``
    of lobar sources and for the cortex parcels of :func:`segmentation`."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    x = pts[:, 0] - ell[_E_CEREBRUM, 0]
    ny = (pts[:, 1] - ell[_E_CEREBRUM, 1]) / ell[_E_CEREBRUM, 4]
    nz = (pts[:, 2] - ell[_E_CEREBRUM, 2]) / ell[_E_CEREBRUM, 5]
    temporal = (nz < -0.2) & (np.abs(x) > 0.45 * ell[_E_CEREBRUM, 3])
    return np.where(ny < -0.62, 3, np.where(ny > 0.1, 0, np.where(temporal, 2, 1)))


def _location(p, lab, dep, ell, sc):
    """*Placement target* (region, lobe, hemisphere) of a world point given its tissue class and
    depth: white matter less than ``sc[_S_DEEPWM]`` below the outer brain surface counts as
    lobar. Only used to choose where random sources go (kept so that placements, and hence the
    images, stay the same for a given seed); the recorded truth follows MARS on the truth classes
    (:func:`_truth_location`), so a source may be recorded in another region than its target."""
    hemi = _SIDE_NAMES[int(_side_codes(p, ell)[0])]
    if lab in (BRAINSTEM, MIDBRAIN):
        return "infratentorial", "brainstem", hemi
    if lab in (CB_GM, CB_WM, DENTATE):
        return "infratentorial", "cerebellum", hemi
    if lab in _DEEP_NAMES:
        return "deep", _DEEP_NAMES[lab], hemi
    if lab == WM and dep >= sc[_S_DEEPWM]:
        return "deep", "deep_white_matter", hemi
    return "lobar", LOBES[int(_lobe_codes(p, ell)[0])], hemi


#: spacing (mm) of the local sampling grid used to measure distances to cortex / deep grey
_MARS_STEP_MM = 0.2
_MARS_DEEP_GM = (MARS_BASAL_GANGLIA, MARS_THALAMUS)


def _mars_white_matter(anat, centre, radius, jx_mm=MARS_JUXTACORTICAL_MM, step=_MARS_STEP_MM):
    """MARS class of a sphere in cerebral white matter, measured on the phantom's own tissue.

    The truth's MARS classes (``anat.mars``: the analytic tissue classes, or the MNI head's
    :func:`~.head._mni_mars_volume`) are sampled on a local grid of ``step`` mm around the centre.
    ``dc`` / ``dg`` are the distances from the nearest point of the sphere (centre distance
    minus radius, 0 if the sphere reaches in) to the nearest cortex / deep grey (basal ganglia,
    thalamus) sample.

    Returns
    -------
    (region, lobe, dc_mm, dg_mm)
        ``("lobar", <lobe of the nearest cortex sample>, ...)`` if ``dc <= jx_mm`` and
        ``dc < dg`` (juxtacortical), else ``("deep", "deep_white_matter", ...)``; distances
        beyond the sampled reach are ``inf``.
    """
    c = np.asarray(centre, dtype=np.float64).reshape(3)
    reach = float(radius) + float(jx_mm) + 2.0 * step
    n = int(math.ceil(reach / step))
    g = np.arange(-n, n + 1, dtype=np.float64) * step
    off = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    r = np.sqrt(np.sum(off * off, axis=1))
    keep = r <= reach
    off, r = off[keep], r[keep]
    labs = np.asarray(anat.mars(c + off))
    dist = {}
    near = None
    for name, cls in (("cortex", (MARS_CORTEX,)), ("deep_gm", _MARS_DEEP_GM)):
        sel = np.isin(labs, cls)
        if not np.any(sel):
            dist[name] = math.inf
            continue
        idx = np.flatnonzero(sel)
        best = idx[int(np.argmin(r[idx]))]
        dist[name] = max(float(r[best]) - float(radius), 0.0)
        if name == "cortex":
            near = c + off[best]
    dc, dg = dist["cortex"], dist["deep_gm"]
    if dc <= jx_mm and dc < dg:
        lobe = LOBES[int(_lobe_codes(near, anat.ell)[0])]
        return "lobar", lobe, dc, dg
    return "deep", "deep_white_matter", dc, dg


_MARS_FIXED = {MARS_BASAL_GANGLIA: ("deep", "basal_ganglia"), MARS_THALAMUS: ("deep", "thalamus"),
               MARS_CALLOSUM: ("deep", "corpus_callosum"),
               MARS_BRAINSTEM: ("infratentorial", "brainstem"),
               MARS_CEREBELLUM: ("infratentorial", "cerebellum")}


def _truth_location(p, radius, lab, dep, anat):
    """Recorded truth (region, lobe, hemisphere) of a source centred at world point ``p``.

    MARS (Gregoire et al. 2009) on the phantom's own tissue model: the truth class at the centre
    (``anat.mars``; for the MNI head :func:`~.head._mni_mars_volume`: deep grey grown from the
    nuclei along the ICBM152 grey matter, the cerebellum bounded by the tentorial gap of its
    tissue maps, the corpus callosum) decides: cortex -> lobar with the lobe rule; basal
    ganglia, thalamus, corpus callosum -> deep; brainstem, cerebellum -> infratentorial;
    cerebral white matter -> :func:`_mars_white_matter` (juxtacortical: nearest point of the
    sphere within :data:`~microbleeds.contract.MARS_JUXTACORTICAL_MM` of cortex, and cortex
    nearer than deep grey -> lobar with the lobe of the nearest cortex; else deep). A centre in
    CSF or a ventricle (explicit sources only): :func:`_location`'s guess.
    """
    hemi = _SIDE_NAMES[int(_side_codes(p, anat.ell)[0])]
    m = int(np.asarray(anat.mars(np.asarray(p, dtype=np.float64).reshape(1, 3)))[0])
    if m in _MARS_FIXED:
        return (*_MARS_FIXED[m], hemi)
    if m == MARS_CORTEX:
        return "lobar", LOBES[int(_lobe_codes(p, anat.ell)[0])], hemi
    if m == MARS_CEREBRAL_WM:
        reg, lobe, _, _ = _mars_white_matter(anat, p, radius)
        return reg, lobe, hemi
    return _location(p, lab, dep, anat.ell, anat.sc)


# FreeSurfer aparc+aseg label IDs of the phantom's tissues (see :func:`segmentation`)
#: label ID -> FreeSurfer name of every ID :func:`segmentation` can write
DSEG_LABELS = {
    0: "Unknown", 2: "Left-Cerebral-White-Matter", 4: "Left-Lateral-Ventricle",
    7: "Left-Cerebellum-White-Matter", 8: "Left-Cerebellum-Cortex", 10: "Left-Thalamus",
    11: "Left-Caudate", 12: "Left-Putamen", 13: "Left-Pallidum", 14: "3rd-Ventricle",
    16: "Brain-Stem", 24: "CSF", 41: "Right-Cerebral-White-Matter", 43: "Right-Lateral-Ventricle",
    46: "Right-Cerebellum-White-Matter", 47: "Right-Cerebellum-Cortex", 49: "Right-Thalamus",
    50: "Right-Caudate", 51: "Right-Putamen", 52: "Right-Pallidum",
    1011: "ctx-lh-lateraloccipital", 1028: "ctx-lh-superiorfrontal",
    1029: "ctx-lh-superiorparietal", 1030: "ctx-lh-superiortemporal",
    2011: "ctx-rh-lateraloccipital", 2028: "ctx-rh-superiorfrontal",
    2029: "ctx-rh-superiorparietal", 2030: "ctx-rh-superiortemporal",
}
# (left, right) aseg IDs of sided tissues; unsided ones map to one ID
_DSEG_SIDED = {WM: (2, 41), CAUDATE: (11, 50), PUTAMEN: (12, 51), PALLIDUM: (13, 52),
               THALAMUS: (10, 49), CB_GM: (8, 47), CB_WM: (7, 46), DENTATE: (7, 46),
               VENTRICLE: (4, 43)}
_DSEG_UNSIDED = {AIR: 0, SCALP: 0, SKULL: 0, SINUS: 0, CSF: 24, BRAINSTEM: 16, MIDBRAIN: 16}
# one representative Desikan-Killiany parcel per lobe (left IDs; right = left + 1000), in the
# order of LOBES
_DSEG_CORTEX = np.array([1028, 1029, 1030, 1011], dtype=np.int32)
_DSEG_THIRD_VENTRICLE = 14


def _dseg_ids(tissue, pts, ell):
    """FreeSurfer label IDs (int32, shape of ``tissue``) of tissue classes at world points
    ``pts`` (``tissue.shape + (3,)``)."""
    tissue = np.asarray(tissue)
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    t = tissue.reshape(-1)
    side = _side_codes(pts, ell)
    # the truth's "midline" band is split by the sign of x (labels have a side)
    right = (side == _RIGHT) | ((side == _MIDLINE) & (pts[:, 0] - ell[_E_CEREBRUM, 0] > 0))
    out = np.zeros(t.shape, dtype=np.int32)
    for cls, lid in _DSEG_UNSIDED.items():
        out[t == cls] = lid
    for cls, (lid_l, lid_r) in _DSEG_SIDED.items():
        sel = t == cls
        out[sel] = np.where(right[sel], lid_r, lid_l)
    gm = t == GM
    if np.any(gm):
        ids = _DSEG_CORTEX[_lobe_codes(pts[gm], ell)]
        out[gm] = np.where(right[gm], ids + 1000, ids)
    vent = t == VENTRICLE
    if np.any(vent):
        q = [(((pts[vent] - ell[e, :3]) / ell[e, 3:]) ** 2).sum(axis=1) for e in _E_VENT]
        third = (q[2] <= 1.0) & (q[0] > 1.0) & (q[1] > 1.0)
        sub = out[vent]
        sub[third] = _DSEG_THIRD_VENTRICLE
        out[vent] = sub
    return out.reshape(tissue.shape)


def _majority(ids):
    """Most frequent value along the last axis (ties: the smallest value)."""
    eq = (ids[..., :, None] == ids[..., None, :]).sum(axis=-1).astype(np.int64)
    key = eq * (1 << 32) - ids.astype(np.int64)
    pick = np.argmax(key, axis=-1)
    return np.take_along_axis(ids, pick[..., None], axis=-1)[..., 0]


def segmentation(phantom: Phantom, method: str = "centre") -> np.ndarray:
    """A FreeSurfer aparc+aseg-style label map of a phantom on its acquisition grid.

    The label IDs are those of FreeSurfer's ``FreeSurferColorLUT.txt`` (aseg and the
    Desikan-Killiany cortex; see :data:`DSEG_LABELS`), so the map can be given to
    ``microbleeds.detect(..., labels=...)`` like a real ``aparc+aseg`` / SynthSeg / BIDS
    ``*_dseg`` file:

    =========================  ====================================================
    phantom tissue             label ID (left / right)
    =========================  ====================================================
    cerebral cortex (GM)       one parcel per lobe: superiorfrontal 1028 / 2028,
                               superiorparietal 1029 / 2029, superiortemporal
                               1030 / 2030, lateraloccipital 1011 / 2011
    white matter               2 / 41 (no deep / juxtacortical split: see below)
    lateral ventricles         4 / 43; third ventricle 14
    caudate, putamen,          11 / 50, 12 / 51, 13 / 52, 10 / 49
    pallidum, thalamus
    brainstem, red nucleus/SN  16
    cerebellar GM              8 / 47
    cerebellar WM, dentate     7 / 46
    CSF                        24
    air, skull, scalp, sinus   0
    =========================  ====================================================

    Lobe and hemisphere come from the same geometric rules (``_lobe_codes``,
    ``_side_codes``) that give the truth ``lobe`` / ``hemisphere`` of every source; voxels
    within the truth's 2 mm "midline" band get the side of their x coordinate. The phantom
    has no insula lobe (insula 1035 / 2035 is never written).

    White matter is one label per side; the truth's ``region`` of white-matter sources follows
    the same MARS distance rule as the detector (``microbleeds.stages.locate``) (juxtacortical: nearest point of
    the source within 3 mm of cortex -> lobar; else deep), but measured on the continuous
    tissue model and the true sphere, so a detector working on this map (voxel centres, the
    blooming lesion) can still differ near the 3 mm boundary.

    Parameters
    ----------
    phantom : Phantom
        From :func:`simulate` (its ``params`` re-create the anatomy; the geometry is the
        first thing drawn from the seed, so nothing random is changed).
    method : ``"centre"`` or ``"majority"``
        ``"centre"``: the tissue at each voxel centre (``phantom.tissue``); ``"majority"``:
        the most frequent label ID over the phantom's fine simulation grid in each voxel
        (ties: the smaller ID).

    Returns
    -------
    numpy.ndarray
        int32 label IDs, shape and affine of the phantom's acquisition grid.
    """
    if method not in ("centre", "majority"):
        raise ValueError(f"method must be 'centre' or 'majority', got {method!r}")
    params = phantom.params
    anat = _make_anatomy(params, np.random.default_rng(int(params.seed)))
    aff = np.asarray(phantom.affine, dtype=np.float64)
    mat, trans = aff[:3, :3], aff[:3, 3]
    shape = tuple(int(n) for n in phantom.tissue.shape)
    if method == "centre":
        return _dseg_ids(phantom.tissue, _grid_points(mat, trans, shape), anat.ell)
    os_ = _oversampling(params)
    fmat, ftrans0 = _fine_grid(mat, trans, os_)
    sub = (shape[0] * int(os_[0]), shape[1] * int(os_[1]), int(os_[2]))
    out = np.zeros(shape, dtype=np.int32)
    for k in range(shape[2]):
        ftrans = ftrans0 + mat[:, 2] * k
        lab = anat.grid(fmat, ftrans, sub)
        ids = _dseg_ids(lab, _grid_points(fmat, ftrans, sub), anat.ell)
        ids = ids.reshape(shape[0], int(os_[0]), shape[1], int(os_[1]), int(os_[2]))
        ids = ids.transpose(0, 2, 1, 3, 4).reshape(shape[0], shape[1], -1)
        out[:, :, k] = _majority(ids)
    return out
