"""Physical phantoms of SWI / GRE-T2* brain scans with known cerebral microbleeds.

The images are simulated from a susceptibility model, not painted:

1. an analytic head (ellipsoidal cerebrum with a sulcated cortical grey-matter ribbon, white
   matter, lateral and third ventricles, iron-rich deep grey nuclei, brainstem and cerebellum
   below a tentorium, CSF / skull / scalp layers, air outside and an optional air-filled sinus
   pocket frontal-basal) is sampled on a *fine grid* (the acquisition grid oversampled by an
   integer factor per axis, default about 0.6 mm), together with branching curved veins
   (anti-aliased tubes, 0.4-1.5 mm diameter);
2. the relative field ``dB/B0`` of this susceptibility map is computed by the k-space dipole
   convolution (:func:`microbleeds._dipole.field_from_chi`, B0 direction configurable);
3. the GRE signal ``M0 exp(-R2* TE) exp(i phase)`` is computed on the fine grid and
   complex-averaged into the acquisition voxels, so intra-voxel dephasing happens as on a
   scanner;
4. microbleeds (CMBs, paramagnetic spheres) and calcifications (diamagnetic spheres) are added
   with their *analytic* sphere field evaluated on an adaptive sub-voxel grid of a local patch
   around each source: the acquisition voxel is multiplied by ``mean(w exp(i phi))`` (``w`` the
   signal left inside the sphere). Their dark "blooming" footprint therefore grows with
   ``chi * B0 * TE`` and with voxel size, and a calcification of the same ``|chi|`` and size has
   the same magnitude footprint and the opposite phase;
5. a smooth multiplicative receive-bias field, a constant receiver phase and complex Gaussian
   noise (Rician magnitude) are added; ``SNR = mean white-matter magnitude / sigma``.

Sign convention
---------------
``phase = -gamma * dB * TE`` (``gamma = 2 pi * 42.577 MHz/T``). A paramagnetic source
(CMB, vein, iron; ``chi > 0``) raises the field along B0 (``dB > 0`` on its B0 axis just
outside it), so its phase there is **negative**; its field is 0 at its centre (inside a sphere,
Lorentz-corrected) and positive phase appears in its equatorial plane. A diamagnetic
calcification gives the opposite signs. This is the "right-handed" convention in which SWI
uses a *negative*-phase mask (Haacke et al. 2004). Phases are wrapped to [-pi, pi].

Susceptibilities are in ppm (SI) relative to water / CSF; CMB and calcification ``chi`` are
relative to the tissue around them.

Ground truth
------------
``<name>_truth.tsv`` (columns :data:`TRUTH_COLUMNS`, see docs/contract.md): one row per CMB
and calcification with the world (RAS+ mm) centre, the *true* diameter (mm, not the blooming
size) and chi (ppm). ``region`` is the MARS class (``lobar | deep | infratentorial``;
Gregoire et al. 2009) of the tissue at the source centre:

* cortical grey matter -> ``lobar``; basal ganglia / thalamus -> ``deep``; brainstem /
  cerebellum -> ``infratentorial``;
* cerebral white matter -> ``lobar`` if juxtacortical, i.e. the nearest point of the source
  sphere (centre distance minus radius) is within :data:`JUXTACORTICAL_MM` = 3 mm of cortical
  grey matter (any cortex: the outer ribbon, the cortex lining sulci and the interhemispheric
  fissure) and nearer to cortex than to the basal ganglia / thalamus, with the lobe of the
  nearest cortex; otherwise ``deep`` (deep / periventricular white matter). This is the rule
  of :func:`microbleeds.locate.assign_regions` (default ``juxtacortical_mm`` 3 mm), measured
  here on the phantom's own tissue model (sampled every 0.2 mm around the source), not on a
  label map.

``lobe`` is the lobe for lobar sources (``frontal | parietal | temporal | occipital``, from a
geometric rule on the position in the cerebrum) and the structure otherwise (``basal_ganglia |
thalamus | deep_white_matter | brainstem | cerebellum``); ``hemisphere`` is ``left | right |
midline`` (centre |x| < 2 mm). Random sources are centred in brain tissue (never in sulcal CSF or
a ventricle), at least max(3 mm, radius + 2 mm) inside the brain surface, do not overlap (centre
distance >= sum of radii + 3 mm) and keep radius + 1.5 mm from every vein wall. Their
*placement* aims at the requested ``region_weights`` with a simpler target rule (white matter
less than 14 mm, times ``head_scale``, below the outer brain surface counts as lobar; 10 mm at
most for lobar targets), kept so that the images of a seed do not change; the recorded region
of a white-matter source is the MARS one above, so it can differ from the target.
``<name>_truth.nii.gz`` labels the acquisition voxels at least half inside each source plus
the voxel holding its centre. With ``write_phantom(..., include_labels=True)``,
``<name>_dseg.nii.gz`` is a FreeSurfer aparc+aseg-style label map of the phantom
(:func:`segmentation`) for ``detect(labels=...)``; its cortex parcels and sides follow the same
lobe / hemisphere rules as the truth.

Tissue parameters (3 T values; R2* is scaled linearly with B0)
--------------------------------------------------------------
===================  =====  ===========  =========
tissue               M0     R2* (1/s)    chi (ppm)
===================  =====  ===========  =========
CSF / ventricles     1.00   3            0
cortical GM          0.85   17           +0.03
white matter         0.70   22           -0.025
caudate              0.85   25           +0.07
putamen              0.85   30           +0.09
globus pallidus      0.80   45           +0.15
thalamus             0.80   22           +0.05
brainstem            0.75   22           -0.015
red nucleus / SN     0.80   45           +0.13
cerebellar GM / WM   0.85 / 0.70  18 / 22  +0.02 / -0.02
dentate nucleus      0.80   40           +0.10
venous blood         0.85   45           +0.45
skull                0.05   300          0 (omitted)
scalp                0.90   30           0
sinus air            0      0            +9.4
===================  =====  ===========  =========

Sources: Haacke et al., "Susceptibility-weighted imaging: technical aspects and clinical
applications", AJNR 2009 30:19-30 (SWI, vein and iron contrast, negative-phase mask);
Haacke et al., MRM 2004 52:612-618 (SWI); Yablonskiy & Haacke, MRM 1994 32:749-763 (static
dephasing, sphere and cylinder fields); Schweser et al., NeuroImage 2011 54:2789-2807 and
Deistung et al., NeuroImage 2013 65:299-314 (tissue susceptibilities, deep grey iron);
Wang & Liu, MRM 2015 73:82-101 (QSM review, dipole kernel, sign conventions, air +9.4 ppm);
Peters et al., MRI 2007 25:748-753 (T2* at 1.5/3/7 T); Greenberg et al., Lancet Neurol 2009
8:165-174 (CMB definition, 2-10 mm, blooming) and Gregoire et al., Neurology 2009
73:1759-1766 (MARS: lobar / deep / infratentorial); Salomir et al. 2003 and Marques & Bowtell
2005 (k-space field calculation).

Limitations: the default head is a smooth analytic model (``anatomy="mni"`` uses the ICBM152
2009 GM/WM maps from nilearn, with rule-based deep nuclei / brainstem / cerebellum); the
skull and the head-air boundary carry no susceptibility (their field is smooth in the brain and
would be removed by background-field filtering); no flow, chemical shift, T1 weighting or
multi-echo; CMB/calcification factors are applied multiplicatively after averaging the
background (a separable approximation, good while the background varies slowly in a voxel).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit, prange

from ... import __version__
from ...io.atomic import atomic_save_nifti, atomic_write_text
from ..dipole import field_from_chi, phase_per_ppm, source_factor

__all__ = [
    "PhantomParams",
    "Phantom",
    "simulate",
    "segmentation",
    "write_phantom",
    "generate_phantom",
    "insert_cmbs",
    "load_real_gre",
    "make_sample",
    "sample_params",
    "simple_swi",
    "truth_tsv",
    "TISSUE_LABELS",
    "TRUTH_COLUMNS",
    "DSEG_LABELS",
    "JUXTACORTICAL_MM",
]

# --------------------------------------------------------------------------------------------
# tissue classes
AIR, SCALP, SKULL, CSF, GM, WM, CAUDATE, PUTAMEN, PALLIDUM, THALAMUS, BRAINSTEM, MIDBRAIN, \
    CB_GM, CB_WM, DENTATE, SINUS, VENTRICLE = range(17)

TISSUE_LABELS = {
    AIR: "air", SCALP: "scalp", SKULL: "skull", CSF: "csf", GM: "cortical_gm",
    WM: "white_matter", CAUDATE: "caudate", PUTAMEN: "putamen", PALLIDUM: "globus_pallidus",
    THALAMUS: "thalamus", BRAINSTEM: "brainstem", MIDBRAIN: "red_nucleus_substantia_nigra",
    CB_GM: "cerebellar_gm", CB_WM: "cerebellar_wm", DENTATE: "dentate_nucleus",
    SINUS: "sinus_air", VENTRICLE: "ventricle",
}

#: (M0, R2* at 3 T in 1/s, chi in ppm) per tissue class
_TISSUE_PROPS = {
    AIR: (0.0, 0.0, 0.0), SCALP: (0.9, 30.0, 0.0), SKULL: (0.05, 300.0, 0.0),
    CSF: (1.0, 3.0, 0.0), GM: (0.85, 17.0, 0.03), WM: (0.70, 22.0, -0.025),
    CAUDATE: (0.85, 25.0, 0.07), PUTAMEN: (0.85, 30.0, 0.09), PALLIDUM: (0.80, 45.0, 0.15),
    THALAMUS: (0.80, 22.0, 0.05), BRAINSTEM: (0.75, 22.0, -0.015), MIDBRAIN: (0.80, 45.0, 0.13),
    CB_GM: (0.85, 18.0, 0.02), CB_WM: (0.70, 22.0, -0.02), DENTATE: (0.80, 40.0, 0.10),
    SINUS: (0.0, 0.0, 9.4), VENTRICLE: (1.0, 3.0, 0.0),
}
_VEIN_PROPS = (0.85, 45.0, 0.45)
_BRAIN = (GM, WM, CAUDATE, PUTAMEN, PALLIDUM, THALAMUS, BRAINSTEM, MIDBRAIN, CB_GM, CB_WM, DENTATE)

TRUTH_COLUMNS = ["truth_id", "type", "x_mm", "y_mm", "z_mm", "diameter_mm", "chi_ppm", "region",
                 "lobe", "hemisphere"]

SIGN_CONVENTION = ("phase = -gamma * dB * TE; paramagnetic (chi > 0) sources have negative phase "
                   "along B0 just outside them, positive phase in their equatorial plane, 0 field "
                   "at their centre; diamagnetic sources the opposite")


# --------------------------------------------------------------------------------------------
@dataclass
class PhantomParams:
    """Parameters of a simulated SWI / GRE phantom.

    Attributes
    ----------
    fov_mm : tuple of 3 float or None
        Field of view along the acquisition axes i, j, k (mm); None = the whole head of the
        chosen anatomy ((150, 180, 128) analytic at ``head_scale`` 1, (172, 212, 150) MNI).
    voxel_size_mm : tuple of 3 float
        Acquisition voxel size (mm), e.g. (1, 1, 2) or (0.9, 0.9, 3).
    b0_t : float
        Field strength (T): 1.5, 3 or 7 (any positive value works).
    te_ms : float
        Echo time (ms).
    snr : float or None
        Mean white-matter magnitude / noise sigma; None for a noise-free image.
    n_cmb, n_calcifications, n_veins : int
        Numbers of randomly placed microbleeds, calcifications and vein trees.
    cmb_diameter_range_mm, cmb_chi_range_ppm : tuple of 2 float
        Uniform ranges of true CMB diameter (mm) and susceptibility (ppm, relative).
    calc_diameter_range_mm, calc_chi_range_ppm : tuple of 2 float
        Same for calcifications (chi negative, diamagnetic).
    region_weights : dict
        Relative frequency of CMB placement targets ``lobar``, ``deep``, ``infratentorial``.
        The recorded truth region of a white-matter CMB follows MARS (juxtacortical within
        3 mm of cortex -> lobar, else deep) and can differ from its target.
    sources : tuple of dict
        Explicitly placed sources, added to the random ones; each dict has ``type``
        (``cmb``/``calcification``), ``x_mm, y_mm, z_mm`` (world), ``diameter_mm``, ``chi_ppm``.
    anatomy : str
        ``"analytic"`` (default, no extra package) or ``"mni"``: grey / white matter from the
        ICBM152 2009 symmetric tissue maps that nilearn ships inside its wheel (optional
        extra ``microbleeds[anatomy]``; nothing is downloaded), 1 mm nearest-neighbour, with
        ventricles (holes of the brain mask), CSF / skull / scalp layers from a smooth hull,
        and deep nuclei, brainstem and cerebellum from MNI-coordinate rules. World = MNI mm
        times ``head_scale``; centre the field of view near (0, -18, 8).
    head_scale : float
        Scales the whole analytic head about the world origin (1 = adult-size small head,
        brain about 112 x 140 x 100 mm).
    oblique_deg : tuple of 3 float
        Rotation of the acquisition grid relative to the head/world, about x, y, then z (deg).
    centre_mm : tuple of 3 float or None
        World position of the centre of the field of view (mm); None = the head's centre
        ((0, 0, 0) analytic, (0, -17, 4) MNI, times ``head_scale``).
    b0_direction : tuple of 3 float
        B0 direction in world coordinates (default +z, superior).
    bias_strength : float
        Amplitude of the smooth multiplicative receive-bias field (0 = none; 0.2 = about +-20 %).
    with_air_interface : bool
        Add an air-filled sinus pocket (chi +9.4 ppm) frontal-basal, outside the brain.
    oversampling : tuple of 3 int or None
        Fine-grid factor per axis; None chooses ``round(voxel / fine_target_mm)`` clipped to
        1..4 (e.g. 2 x 2 x 3 for 1 x 1 x 2 mm voxels, 2 x 2 x 4 for 0.9 x 0.9 x 3 mm).
    fine_target_mm : float
        Target fine-grid spacing when ``oversampling`` is None.
    margin_mm : float
        Extra tissue simulated around the field of view for the field calculation (mm).
    cmb_inside_signal : float
        Relative signal left inside a CMB / calcification (0.0-1.0).
    swi_hp_sigma_mm : float
        Gaussian sigma (mm) of the homodyne low-pass used by the simple SWI.
    swi_power : int
        Power of the negative-phase mask in the simple SWI.
    seed : int
        Random seed; the output is deterministic (bit for bit) for a given seed and parameters.
    """

    fov_mm: tuple | None = None
    voxel_size_mm: tuple = (1.0, 1.0, 2.0)
    b0_t: float = 3.0
    te_ms: float = 20.0
    snr: float | None = 30.0
    n_cmb: int = 10
    n_calcifications: int = 2
    n_veins: int = 70
    cmb_diameter_range_mm: tuple = (0.8, 5.0)
    cmb_chi_range_ppm: tuple = (0.5, 1.5)
    calc_diameter_range_mm: tuple = (1.0, 4.0)
    calc_chi_range_ppm: tuple = (-1.0, -0.3)
    region_weights: dict = field(
        default_factory=lambda: {"lobar": 0.5, "deep": 0.3, "infratentorial": 0.2})
    sources: tuple = ()
    anatomy: str = "analytic"
    head_scale: float = 1.0
    oblique_deg: tuple = (0.0, 0.0, 0.0)
    centre_mm: tuple | None = None
    b0_direction: tuple = (0.0, 0.0, 1.0)
    bias_strength: float = 0.2
    with_air_interface: bool = True
    oversampling: tuple | None = None
    fine_target_mm: float = 0.6
    margin_mm: float = 6.0
    cmb_inside_signal: float = 0.05
    swi_hp_sigma_mm: float = 4.0
    swi_power: int = 4
    seed: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-able dict of all fields (what the sidecar stores under ``parameters``)."""
        d = dataclasses.asdict(self)
        return json.loads(json.dumps(d, default=_json_default))

    @classmethod
    def from_dict(cls, d: dict) -> "PhantomParams":
        """Inverse of :meth:`to_dict` (e.g. from a sidecar's ``parameters``); lists become
        tuples; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown phantom parameter(s): {', '.join(unknown)}")
        kw = {}
        for k, v in d.items():
            if k == "sources":
                v = tuple(dict(x) for x in (v or ()))
            elif isinstance(v, list):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)


@dataclass
class Phantom:
    """A simulated scan and its ground truth.

    Attributes
    ----------
    magnitude, phase, swi : float32 arrays (i, j, k)
        Magnitude (arbitrary units, WM about 0.7 * exp(-R2* TE) times bias), wrapped phase (rad,
        [-pi, pi]) and the simple SWI.
    truth_labels : int16 array
        Label map on the acquisition grid, value = ``truth_id`` (voxels at least half inside the
        source, plus the voxel holding its centre).
    tissue : uint8 array
        Tissue class at each acquisition voxel centre (see :data:`TISSUE_LABELS`; veins not
        included).
    vein_fraction : float32 array
        Venous blood volume fraction per acquisition voxel.
    affine : (4, 4) float64 array
        Voxel-to-world (RAS+ mm) affine.
    truth : list of dict
        One row per CMB / calcification, keys :data:`TRUTH_COLUMNS`.
    params : PhantomParams
        The parameters used, with ``fov_mm`` and ``centre_mm`` resolved.
    info : dict
        Derived values (oversampling, noise sigma, sign convention, tissue table, timings ...).
    """

    magnitude: np.ndarray
    phase: np.ndarray
    swi: np.ndarray
    truth_labels: np.ndarray
    tissue: np.ndarray
    vein_fraction: np.ndarray
    affine: np.ndarray
    truth: list
    params: PhantomParams
    info: dict


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


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


@njit(cache=True)
def _ell_q(x, y, z, ell, e):
    ux = (x - ell[e, 0]) / ell[e, 3]
    uy = (y - ell[e, 1]) / ell[e, 4]
    uz = (z - ell[e, 2]) / ell[e, 5]
    return ux * ux + uy * uy + uz * uz


@njit(cache=True)
def _ell_depth(x, y, z, ell, e):
    """Approximate signed distance (mm) to an ellipsoid's surface, positive inside."""
    ux = (x - ell[e, 0]) / ell[e, 3]
    uy = (y - ell[e, 1]) / ell[e, 4]
    uz = (z - ell[e, 2]) / ell[e, 5]
    q = math.sqrt(ux * ux + uy * uy + uz * uz)
    rmin = min(ell[e, 3], min(ell[e, 4], ell[e, 5]))
    if q < 1e-9:
        return rmin
    gx = ux / ell[e, 3]
    gy = uy / ell[e, 4]
    gz = uz / ell[e, 5]
    g = math.sqrt(gx * gx + gy * gy + gz * gz) / q
    d = (1.0 - q) / g
    if d > rmin:
        d = rmin
    return d


@njit(cache=True)
def _classify(x, y, z, ell, sc, waves):
    """Tissue class and depth below the outer brain surface (mm) of one world point."""
    cx = ell[0, 0]
    cy = ell[0, 1]
    ztent = sc[0] - sc[1] * abs(x - cx) + sc[2] * (y - sc[3])
    d_cer = _ell_depth(x, y, z, ell, 0)
    if y < sc[4]:
        dt = z - ztent
        if abs(x - cx) < sc[18] and y > sc[19]:
            dt += sc[20]
        if dt < d_cer:
            d_cer = dt
    if z > sc[5] or abs(y - cy) > sc[6]:
        df = abs(x - cx) - sc[7]
        if df < d_cer:
            d_cer = df
    d_cb = _ell_depth(x, y, z, ell, 1)
    dt = ztent - z
    if y >= sc[4]:
        dt = -1.0e3
    if dt < d_cb:
        d_cb = dt
    d_bs = _ell_depth(x, y, z, ell, 2)
    d_brain = max(d_cer, max(d_cb, d_bs))
    if d_brain < 0.0:
        if sc[16] > 0.5 and _ell_q(x, y, z, ell, 3) <= 1.0:
            return SINUS, d_brain
        if d_brain >= -sc[8]:
            return CSF, d_brain
        if d_brain >= -(sc[8] + sc[9]):
            return SKULL, d_brain
        if d_brain >= -(sc[8] + sc[9] + sc[10]):
            return SCALP, d_brain
        return AIR, d_brain
    if d_bs >= 0.0 and z < sc[15]:
        if _ell_q(x, y, z, ell, 15) <= 1.0 or _ell_q(x, y, z, ell, 16) <= 1.0:
            return MIDBRAIN, d_bs
        return BRAINSTEM, d_bs
    if d_cb >= 0.0 and d_cb >= d_cer:
        if _ell_q(x, y, z, ell, 17) <= 1.0 or _ell_q(x, y, z, ell, 18) <= 1.0:
            return DENTATE, d_cb
        if d_cb < sc[12]:
            return CB_GM, d_cb
        return CB_WM, d_cb
    if d_cer < 0.0:
        # inside the brainstem above its top only (rare): treat as white matter
        return WM, d_brain
    for e in range(4, 7):
        if _ell_q(x, y, z, ell, e) <= 1.0:
            return VENTRICLE, d_cer
    if _ell_q(x, y, z, ell, 11) <= 1.0 or _ell_q(x, y, z, ell, 12) <= 1.0:
        return PALLIDUM, d_cer
    if _ell_q(x, y, z, ell, 9) <= 1.0 or _ell_q(x, y, z, ell, 10) <= 1.0:
        return PUTAMEN, d_cer
    if _ell_q(x, y, z, ell, 7) <= 1.0 or _ell_q(x, y, z, ell, 8) <= 1.0:
        return CAUDATE, d_cer
    if _ell_q(x, y, z, ell, 13) <= 1.0 or _ell_q(x, y, z, ell, 14) <= 1.0:
        return THALAMUS, d_cer
    if d_cer < sc[11]:
        return GM, d_cer
    if d_cer < sc[13] + sc[11]:
        g = 0.0
        gx = 0.0
        gy = 0.0
        gz = 0.0
        for w in range(waves.shape[0]):
            arg = waves[w, 0] * x + waves[w, 1] * y + waves[w, 2] * z + waves[w, 3]
            g += math.sin(arg)
            cs = math.cos(arg)
            gx += waves[w, 0] * cs
            gy += waves[w, 1] * cs
            gz += waves[w, 2] * cs
        gn = math.sqrt(gx * gx + gy * gy + gz * gz)
        if gn > 1e-12:
            dist = abs(g) / gn
            if dist < sc[14] and d_cer < sc[13]:
                return CSF, d_cer
            if dist < sc[14] + sc[11]:
                return GM, d_cer
    return WM, d_cer


@njit(cache=True, parallel=True)
def _tissue_grid(mat, trans, shape, ell, sc, waves):
    lab = np.empty((shape[0], shape[1], shape[2]), dtype=np.uint8)
    for i in prange(shape[0]):
        for j in range(shape[1]):
            for k in range(shape[2]):
                x = mat[0, 0] * i + mat[0, 1] * j + mat[0, 2] * k + trans[0]
                y = mat[1, 0] * i + mat[1, 1] * j + mat[1, 2] * k + trans[1]
                z = mat[2, 0] * i + mat[2, 1] * j + mat[2, 2] * k + trans[2]
                lab[i, j, k] = _classify(x, y, z, ell, sc, waves)[0]
    return lab


@njit(cache=True)
def _classify_points(pts, ell, sc, waves):
    n = pts.shape[0]
    lab = np.empty(n, dtype=np.int64)
    dep = np.empty(n, dtype=np.float64)
    for p in range(n):
        lab[p], dep[p] = _classify(pts[p, 0], pts[p, 1], pts[p, 2], ell, sc, waves)
    return lab, dep


@njit(cache=True)
def _stamp_tubes(pts, radii, inv, mat, trans, shape, h, frac):
    """Anti-aliased tube occupancy on a grid (max over the centre-line points)."""
    for p in range(pts.shape[0]):
        r = radii[p]
        qx = pts[p, 0] - trans[0]
        qy = pts[p, 1] - trans[1]
        qz = pts[p, 2] - trans[2]
        ci = inv[0, 0] * qx + inv[0, 1] * qy + inv[0, 2] * qz
        cj = inv[1, 0] * qx + inv[1, 1] * qy + inv[1, 2] * qz
        ck = inv[2, 0] * qx + inv[2, 1] * qy + inv[2, 2] * qz
        reach = max(r, 0.5 * h) + h
        lo = np.empty(3, dtype=np.int64)
        hi = np.empty(3, dtype=np.int64)
        cc = (ci, cj, ck)
        for a in range(3):
            rn = math.sqrt(inv[a, 0] ** 2 + inv[a, 1] ** 2 + inv[a, 2] ** 2)
            lo[a] = max(0, int(math.floor(cc[a] - reach * rn)))
            hi[a] = min(shape[a] - 1, int(math.ceil(cc[a] + reach * rn)))
        for i in range(lo[0], hi[0] + 1):
            for j in range(lo[1], hi[1] + 1):
                for k in range(lo[2], hi[2] + 1):
                    di = i - ci
                    dj = j - cj
                    dk = k - ck
                    dx = mat[0, 0] * di + mat[0, 1] * dj + mat[0, 2] * dk
                    dy = mat[1, 0] * di + mat[1, 1] * dj + mat[1, 2] * dk
                    dz = mat[2, 0] * di + mat[2, 1] * dj + mat[2, 2] * dk
                    d = math.sqrt(dx * dx + dy * dy + dz * dz)
                    if r >= 0.5 * h:
                        f = (r - d) / h + 0.5
                    else:
                        f = 3.0 * r * r / (h * h) * (1.0 - d / h)
                    if f > 1.0:
                        f = 1.0
                    if f > frac[i, j, k]:
                        frac[i, j, k] = f


@njit(cache=True, parallel=True)
def _chi_grid(lab, frac, chi_lut, chi_vein):
    out = np.empty(lab.shape, dtype=np.float32)
    for i in prange(lab.shape[0]):
        for j in range(lab.shape[1]):
            for k in range(lab.shape[2]):
                f = frac[i, j, k]
                out[i, j, k] = (1.0 - f) * chi_lut[lab[i, j, k]] + f * chi_vein
    return out


@njit(cache=True, parallel=True)
def _signal_decimate(lab, frac, fld, m0_lut, r2_lut, m0_vein, r2_vein, te_s, ppp, os_, ashape):
    out = np.empty((ashape[0], ashape[1], ashape[2]), dtype=np.complex64)
    vfrac = np.empty((ashape[0], ashape[1], ashape[2]), dtype=np.float32)
    mt_lut = np.empty(m0_lut.shape[0], dtype=np.float64)
    for t in range(m0_lut.shape[0]):
        mt_lut[t] = m0_lut[t] * math.exp(-r2_lut[t] * te_s)
    mv = m0_vein * math.exp(-r2_vein * te_s)
    n = os_[0] * os_[1] * os_[2]
    for I in prange(ashape[0]):  # noqa: E741 (I, J, K: acquisition voxel, i, j, k: fine voxel)
        for J in range(ashape[1]):
            for K in range(ashape[2]):
                sre = 0.0
                sim = 0.0
                sf = 0.0
                for u in range(os_[0]):
                    i = I * os_[0] + u
                    for v in range(os_[1]):
                        j = J * os_[1] + v
                        for w in range(os_[2]):
                            k = K * os_[2] + w
                            f = frac[i, j, k]
                            m = (1.0 - f) * mt_lut[lab[i, j, k]] + f * mv
                            phi = ppp * fld[i, j, k]
                            sre += m * math.cos(phi)
                            sim += m * math.sin(phi)
                            sf += f
                out[I, J, K] = complex(sre / n, sim / n)
                vfrac[I, J, K] = sf / n
    return out, vfrac


@njit(cache=True, parallel=True)
def _lookup_grid(vol, vinv, vtrans, mat, trans, shape):
    """Nearest-neighbour lookup of a label volume at the voxel centres of another grid."""
    out = np.zeros((shape[0], shape[1], shape[2]), dtype=np.uint8)
    n0, n1, n2 = vol.shape
    for i in prange(shape[0]):
        for j in range(shape[1]):
            for k in range(shape[2]):
                x = mat[0, 0] * i + mat[0, 1] * j + mat[0, 2] * k + trans[0] - vtrans[0]
                y = mat[1, 0] * i + mat[1, 1] * j + mat[1, 2] * k + trans[1] - vtrans[1]
                z = mat[2, 0] * i + mat[2, 1] * j + mat[2, 2] * k + trans[2] - vtrans[2]
                a = int(math.floor(vinv[0, 0] * x + vinv[0, 1] * y + vinv[0, 2] * z + 0.5))
                b = int(math.floor(vinv[1, 0] * x + vinv[1, 1] * y + vinv[1, 2] * z + 0.5))
                c = int(math.floor(vinv[2, 0] * x + vinv[2, 1] * y + vinv[2, 2] * z + 0.5))
                if 0 <= a < n0 and 0 <= b < n1 and 0 <= c < n2:
                    out[i, j, k] = vol[a, b, c]
    return out


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
        return _tissue_grid(np.ascontiguousarray(mat), np.ascontiguousarray(trans),
                            np.asarray(shape, dtype=np.int64), self.ell, self.sc, self.waves)

    def points(self, pts):
        return _classify_points(np.ascontiguousarray(pts, dtype=np.float64), self.ell, self.sc,
                                self.waves)


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

_MNI_CACHE = {}


def _mni_files():
    try:
        import nilearn  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError("anatomy='mni' needs nilearn (pip install 'microbleeds[anatomy]'); "
                          "nothing is downloaded: the ICBM152 2009 maps ship inside nilearn") \
            from exc
    import nilearn as _nl

    d = Path(_nl.__file__).parent / "datasets" / "data"
    files = {t: d / f"mni_icbm152_{t}_tal_nlin_sym_09a_converted.nii.gz" for t in ("gm", "wm")}
    for f in files.values():
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found in the installed nilearn")
    return files


def _mni_volume():
    """Tissue labels and depth (mm) on the 1 mm ICBM152 2009 grid, built from nilearn's GM/WM
    maps (cached in memory)."""
    if "vol" in _MNI_CACHE:
        return _MNI_CACHE["vol"]
    import nibabel as nib
    from scipy import ndimage as ndi

    files = _mni_files()
    gi = nib.load(str(files["gm"]))
    gm = np.asarray(gi.dataobj, dtype=np.float32)
    wm = np.asarray(nib.load(str(files["wm"])).dataobj, dtype=np.float32)
    top = max(float(gm.max()), float(wm.max()), 1e-6)
    gm /= top
    wm /= top
    aff = np.asarray(gi.affine, dtype=np.float64)
    vs = np.sqrt(np.sum(aff[:3, :3] ** 2, axis=0))
    brain = (gm + wm) > 0.5
    lab_cc, n = ndi.label(brain)
    if n > 1:
        sizes = ndi.sum(brain, lab_cc, index=np.arange(1, n + 1))
        brain = lab_cc == (1 + int(np.argmax(sizes)))
    filled = ndi.binary_fill_holes(brain)
    # smooth hull (closing with a 6 mm ball) and distances, on a 2 mm grid for speed, then
    # linearly interpolated back to 1 mm
    f2 = filled[::2, ::2, ::2]
    vs2 = vs * 2.0
    r = 6.0
    dil = ndi.distance_transform_edt(~f2, sampling=vs2) <= r
    hull2 = (ndi.distance_transform_edt(dil, sampling=vs2) > r) | f2
    d_out2 = ndi.distance_transform_edt(~hull2, sampling=vs2) - ndi.distance_transform_edt(
        hull2, sampling=vs2)

    def up(a):
        z = [n / m for n, m in zip(gm.shape, a.shape)]
        out = ndi.zoom(a.astype(np.float32), z, order=1, mode="nearest", grid_mode=True)
        return out[: gm.shape[0], : gm.shape[1], : gm.shape[2]]

    sd = up(d_out2)  # signed distance to the hull, > 0 outside
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
    ii, jj, kk = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in gm.shape), indexing="ij",
                             sparse=True)
    x = aff[0, 0] * ii + aff[0, 3]
    y = aff[1, 1] * jj + aff[1, 3]
    z = aff[2, 2] * kk + aff[2, 3]
    ztent = -10.0 - 0.12 * np.abs(x) + 0.1 * (y + 60.0)
    stem = brain & (np.abs(x) < 15.0) & (y > -44.0) & (y < -12.0) & (z < -8.0)
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
    vol = (lab, depth, aff)
    _MNI_CACHE["vol"] = vol
    return vol


@njit(cache=True)
def _lookup_points(vol, dep, vinv, vtrans, pts):
    n = pts.shape[0]
    lab = np.zeros(n, dtype=np.int64)
    d = np.full(n, -100.0)
    for p in range(n):
        x = pts[p, 0] - vtrans[0]
        y = pts[p, 1] - vtrans[1]
        z = pts[p, 2] - vtrans[2]
        a = int(math.floor(vinv[0, 0] * x + vinv[0, 1] * y + vinv[0, 2] * z + 0.5))
        b = int(math.floor(vinv[1, 0] * x + vinv[1, 1] * y + vinv[1, 2] * z + 0.5))
        c = int(math.floor(vinv[2, 0] * x + vinv[2, 1] * y + vinv[2, 2] * z + 0.5))
        if 0 <= a < vol.shape[0] and 0 <= b < vol.shape[1] and 0 <= c < vol.shape[2]:
            lab[p] = vol[a, b, c]
            d[p] = dep[a, b, c]
    return lab, d


class _MNIHead:
    """Tissue from the ICBM152 2009 GM/WM maps shipped inside nilearn (1 mm, nearest
    neighbour), deep nuclei / brainstem / cerebellum from MNI-coordinate rules."""

    name = "mni"
    default_fov = (172.0, 212.0, 150.0)
    default_centre = (0.0, -17.0, 4.0)

    def __init__(self, params, rng):
        lab, depth, aff = _mni_volume()
        s = float(params.head_scale)
        self.s = s
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
        lab = _lookup_grid(self.lab, self.vinv, self.vtrans, np.ascontiguousarray(mat),
                           np.ascontiguousarray(trans), np.asarray(shape, dtype=np.int64))
        if self.with_air:
            _paint_ellipsoid(lab, np.ascontiguousarray(mat), np.ascontiguousarray(trans),
                             self.ell[_E_SINUS], SINUS)
        return lab

    def points(self, pts):
        lab, dep = _lookup_points(self.lab, self.dep, self.vinv, self.vtrans,
                                  np.ascontiguousarray(pts, dtype=np.float64))
        return lab, dep


@njit(cache=True, parallel=True)
def _paint_ellipsoid(lab, mat, trans, e, value):
    for i in prange(lab.shape[0]):
        for j in range(lab.shape[1]):
            for k in range(lab.shape[2]):
                x = mat[0, 0] * i + mat[0, 1] * j + mat[0, 2] * k + trans[0]
                y = mat[1, 0] * i + mat[1, 1] * j + mat[1, 2] * k + trans[1]
                z = mat[2, 0] * i + mat[2, 1] * j + mat[2, 2] * k + trans[2]
                q = (((x - e[0]) / e[3]) ** 2 + ((y - e[1]) / e[4]) ** 2
                     + ((z - e[2]) / e[5]) ** 2)
                if q <= 1.0:
                    lab[i, j, k] = value


def _make_anatomy(params, rng):
    if params.anatomy == "analytic":
        return _AnalyticHead(params, rng)
    if params.anatomy == "mni":
        return _MNIHead(params, rng)
    raise ValueError(f"anatomy must be 'analytic' or 'mni', got {params.anatomy!r}")


# --------------------------------------------------------------------------------------------
# grids
def _rotation(deg) -> np.ndarray:
    ax, ay, az = (math.radians(float(a)) for a in deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _acq_grid(params: PhantomParams):
    vs = np.asarray(params.voxel_size_mm, dtype=np.float64)
    fov = np.asarray(params.fov_mm, dtype=np.float64)
    shape = np.maximum(np.round(fov / vs).astype(np.int64), 1)
    rot = _rotation(params.oblique_deg)
    mat = rot @ np.diag(vs)
    centre = np.asarray(params.centre_mm, dtype=np.float64)
    trans = centre - mat @ ((shape - 1) / 2.0)
    aff = np.eye(4)
    aff[:3, :3] = mat
    aff[:3, 3] = trans
    return tuple(int(s) for s in shape), aff, rot


def _oversampling(params: PhantomParams):
    if params.oversampling is not None:
        os_ = np.asarray(params.oversampling, dtype=np.int64)
    else:
        vs = np.asarray(params.voxel_size_mm, dtype=np.float64)
        os_ = np.clip(np.round(vs / float(params.fine_target_mm)).astype(np.int64), 1, 4)
    if os_.shape != (3,) or np.any(os_ < 1):
        raise ValueError(f"oversampling must be 3 integers >= 1, got {params.oversampling!r}")
    return os_


# --------------------------------------------------------------------------------------------
# veins
def _make_veins(params, rng, anat, rot, fov_lo, fov_hi):
    """Centre-line points (N, 3) and radii (N,) of branching curved vein trees."""
    s = float(params.head_scale)
    ell = anat.ell
    c0 = ell[_E_CEREBRUM, :3]
    slice_normal = rot[:, 2]
    vent_c = 0.5 * (ell[_E_VENT[0], :3] + ell[_E_VENT[1], :3])
    pts_all, rad_all = [], []
    step = 0.3

    def inside_brain(p):
        lab, dep = anat.points(p[None, :])
        return int(lab[0]), float(dep[0])

    def walk(p, d, r0, length, kind, level):
        r_end = max(0.2, 0.5 * r0)
        n = int(length / step)
        p = p.copy()
        d = d / np.linalg.norm(d)
        for it in range(n):
            t = it / max(n - 1, 1)
            r = r0 + (r_end - r0) * t
            lab, dep = inside_brain(p)
            if lab not in _BRAIN and lab != CSF:
                break
            if lab == VENTRICLE:
                break
            pts_all.append(p.copy())
            rad_all.append(r)
            if level < 2 and r > 0.3 and rng.random() < 0.012:
                nd = d + rng.normal(size=3) * 0.9
                walk(p, nd, 0.7 * r, (length - it * step) * rng.uniform(0.3, 0.6), kind,
                     level + 1)
            d = d + rng.normal(size=3) * 0.08
            if kind == "cortical":
                # stay roughly tangential to the outer surface
                rad = (p - c0) / ell[_E_CEREBRUM, 3:] ** 2
                rad /= np.linalg.norm(rad)
                d = d - 0.6 * np.dot(d, rad) * rad
                if dep > 3.0:
                    d = d + 0.3 * rad
            d /= np.linalg.norm(d)
            p = p + step * d

    lo = np.asarray(fov_lo)
    hi = np.asarray(fov_hi)
    for _vein in range(int(params.n_veins)):
        u = rng.random()
        kind = "through" if u < 0.35 else ("medullary" if u < 0.75 else "cortical")
        for _try in range(200):
            p = rng.uniform(lo, hi)
            lab, dep = inside_brain(p)
            if kind == "cortical" and lab == GM and dep < 3.0:
                break
            if kind == "medullary" and lab in (GM, WM) and 1.5 < dep < 5.0:
                break
            if kind == "through" and lab in (GM, WM, CB_WM, CB_GM) and dep > 3.0:
                break
        else:
            continue
        if kind == "through":
            d = slice_normal * (1 if rng.random() < 0.5 else -1) + rng.normal(size=3) * 0.15
            r0 = rng.uniform(0.3, 0.75)
            length = rng.uniform(15, 40) * s
        elif kind == "medullary":
            d = vent_c - p + rng.normal(size=3) * 5.0
            r0 = rng.uniform(0.25, 0.6)
            length = rng.uniform(15, 35) * s
        else:
            d = np.cross((p - c0), rng.normal(size=3))
            r0 = rng.uniform(0.4, 0.75)
            length = rng.uniform(20, 45) * s
        walk(p, d, r0, length, kind, 0)
    if not pts_all:
        return np.zeros((0, 3)), np.zeros(0)
    return np.asarray(pts_all, dtype=np.float64), np.asarray(rad_all, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# regions
_DEEP_NAMES = {CAUDATE: "basal_ganglia", PUTAMEN: "basal_ganglia", PALLIDUM: "basal_ganglia",
               THALAMUS: "thalamus", VENTRICLE: "choroid_plexus"}


_LOBE_NAMES = ("frontal", "parietal", "temporal", "occipital")
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
    """Lobe of world points (N, 3) as indices into :data:`_LOBE_NAMES`: the geometric lobe rule
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
    images, stay the same for a given seed); the recorded truth of white-matter sources follows
    MARS (:func:`_truth_location`)."""
    hemi = _SIDE_NAMES[int(_side_codes(p, ell)[0])]
    if lab in (BRAINSTEM, MIDBRAIN):
        return "infratentorial", "brainstem", hemi
    if lab in (CB_GM, CB_WM, DENTATE):
        return "infratentorial", "cerebellum", hemi
    if lab in _DEEP_NAMES:
        return "deep", _DEEP_NAMES[lab], hemi
    if lab == WM and dep >= sc[_S_DEEPWM]:
        return "deep", "deep_white_matter", hemi
    return "lobar", _LOBE_NAMES[int(_lobe_codes(p, ell)[0])], hemi


#: MARS juxtacortical distance (mm): white matter whose nearest point is within this distance of
#: cortical grey matter is lobar (as ``microbleeds.locate``'s default ``juxtacortical_mm``)
JUXTACORTICAL_MM = 3.0
#: spacing (mm) of the local sampling grid used to measure distances to cortex / deep grey
_MARS_STEP_MM = 0.2
_DEEP_GM = (CAUDATE, PUTAMEN, PALLIDUM, THALAMUS)


def _mars_white_matter(anat, centre, radius, jx_mm=JUXTACORTICAL_MM, step=_MARS_STEP_MM):
    """MARS class of a sphere in cerebral white matter, measured on the phantom's own tissue.

    The tissue is sampled (``anat.points``: the analytic classifier, or the MNI label volume)
    on a local grid of ``step`` mm around the centre. ``dc`` / ``dg`` are the distances from the
    nearest point of the sphere (centre distance minus radius, 0 if the sphere reaches in) to
    the nearest cortical grey-matter / deep grey (basal ganglia, thalamus) sample.

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
    labs, _ = anat.points(c + off)
    labs = np.asarray(labs)
    dist = {}
    near = None
    for name, cls in (("cortex", (GM,)), ("deep_gm", _DEEP_GM)):
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
        lobe = _LOBE_NAMES[int(_lobe_codes(near, anat.ell)[0])]
        return "lobar", lobe, dc, dg
    return "deep", "deep_white_matter", dc, dg


def _truth_location(p, radius, lab, dep, anat):
    """Recorded truth (region, lobe, hemisphere) of a source centred at world point ``p``.

    Tissue other than cerebral white matter: as :func:`_location` (cortex -> lobar with the
    lobe rule, basal ganglia / thalamus -> deep, brainstem / cerebellum -> infratentorial).
    Cerebral white matter: MARS (:func:`_mars_white_matter`): juxtacortical (nearest point of
    the sphere within :data:`JUXTACORTICAL_MM` of cortex, any cortex: outer, sulcal, fissural)
    -> lobar with the lobe of the nearest cortex; else deep white matter -> deep.
    """
    reg, lobe, hemi = _location(p, lab, dep, anat.ell, anat.sc)
    if lab == WM:
        reg, lobe, _, _ = _mars_white_matter(anat, p, radius)
    return reg, lobe, hemi


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
# order of _LOBE_NAMES
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


def _grid_points(mat, trans, shape):
    """World coordinates (shape + (3,)) of the points of a grid."""
    idx = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape),
                               indexing="ij"), axis=-1)
    return idx @ np.asarray(mat, dtype=np.float64).T + np.asarray(trans, dtype=np.float64)


def _majority(ids):
    """Most frequent value along the last axis (ties: the smallest value)."""
    eq = (ids[..., :, None] == ids[..., None, :]).sum(axis=-1).astype(np.int64)
    key = eq * (1 << 32) - ids.astype(np.int64)
    pick = np.argmax(key, axis=-1)
    return np.take_along_axis(ids, pick[..., None], axis=-1)[..., 0]


def segmentation(phantom: "Phantom", method: str = "centre") -> np.ndarray:
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
    the same MARS distance rule as :mod:`microbleeds.locate` (juxtacortical: nearest point of
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
    fmat = mat / os_[None, :]
    ftrans0 = trans + mat @ (0.5 / os_ - 0.5)
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


def _place_sources(params, rng, anat, fov_lo, fov_hi, vein_pts, vein_rad, inset, explicit=()):
    """Randomly place CMBs and calcifications around the explicit ones; returns all rows
    (explicit first, without ids)."""
    rows = list(explicit)
    ell, sc = anat.ell, anat.sc

    def ok_spacing(p, a):
        for r in rows:
            q = np.array([r["x_mm"], r["y_mm"], r["z_mm"]])
            if np.linalg.norm(p - q) < a + r["diameter_mm"] / 2.0 + 3.0:
                return False
        if vein_pts.shape[0]:
            d = np.sqrt(np.sum((vein_pts - p) ** 2, axis=1)) - vein_rad
            if np.min(d) < a + 1.5:
                return False
        return True

    offs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                    dtype=np.float64)

    def ring_ok(p, a, allowed):
        labs, _ = anat.points(p + (a + 0.5) * offs)
        return all(int(lb) in allowed for lb in labs)

    def sample_box(region):
        c, h = anat.boxes[region]
        lo = np.maximum(c - h, fov_lo + inset)
        hi = np.minimum(c + h, fov_hi - inset)
        if np.any(hi <= lo):
            return None
        return lo, hi

    def try_place(kind, region, a, chi, max_tries=4000):
        box = sample_box(region)
        if box is None:
            return None
        lo, hi = box
        cand = rng.uniform(lo, hi, size=(max_tries, 3))
        labs, deps = anat.points(cand)
        min_depth = max(3.0, a + 2.0)
        for p, lab, dep in zip(cand, labs, deps):
            lab = int(lab)
            if dep < min_depth:
                continue
            if lab not in _BRAIN:
                # centre in sulcal CSF / a ventricle: not a brain-tissue source (MARS has no
                # class for it; locate calls it outside the brain). Skipping a candidate of the
                # batch already drawn leaves the random stream unchanged.
                continue
            reg, lobe, hemi = _location(p, lab, dep, ell, sc)
            if kind == "calcification":
                if region == "deep" and lab not in (PALLIDUM, PUTAMEN):
                    continue
                allowed = (PALLIDUM, PUTAMEN, CAUDATE, WM, THALAMUS)
            else:
                if reg != region:
                    continue
                if region == "lobar" and dep > anat.lobar_max_depth:
                    continue
                allowed = _BRAIN
            if not ring_ok(p, a, allowed):
                continue
            if not ok_spacing(p, a):
                continue
            # placed by the target rule above; recorded by MARS (white matter may change)
            reg, lobe, hemi = _truth_location(p, a, lab, dep, anat)
            return dict(type=kind, x_mm=float(p[0]), y_mm=float(p[1]), z_mm=float(p[2]),
                        diameter_mm=float(2 * a), chi_ppm=float(chi), region=reg, lobe=lobe,
                        hemisphere=hemi)
        return None

    regions = list(params.region_weights.keys())
    weights = np.array([float(params.region_weights[r]) for r in regions])
    weights = weights / weights.sum()
    for _ in range(int(params.n_cmb)):
        d = rng.uniform(*params.cmb_diameter_range_mm)
        chi = rng.uniform(*params.cmb_chi_range_ppm)
        first = regions[int(rng.choice(len(regions), p=weights))]
        order = [first] + [r for r in regions if r != first]
        for region in order:
            row = try_place("cmb", region, d / 2.0, chi)
            if row is not None:
                rows.append(row)
                break
    for _ in range(int(params.n_calcifications)):
        d = rng.uniform(*params.calc_diameter_range_mm)
        chi = rng.uniform(*params.calc_chi_range_ppm)
        row = try_place("calcification", "deep", d / 2.0, chi)
        if row is not None:
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
def _apply_sources(signal, affine, rows, ppp, b0_world, inside_amp, labels=None, first_id=1):
    """Multiply a complex image by each source's intra-voxel factor (in place)."""
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


def _bias_field(shape, affine, rng, strength):
    if strength <= 0:
        return None
    coef = rng.normal(size=7)
    ii, jj, kk = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij",
                             sparse=True)
    x = affine[0, 0] * ii + affine[0, 1] * jj + affine[0, 2] * kk + affine[0, 3]
    y = affine[1, 0] * ii + affine[1, 1] * jj + affine[1, 2] * kk + affine[1, 3]
    z = affine[2, 0] * ii + affine[2, 1] * jj + affine[2, 2] * kk + affine[2, 3]
    x, y, z = x / 100.0, y / 100.0, z / 100.0
    poly = (coef[0] * x + coef[1] * y + coef[2] * z + coef[3] * x * y + coef[4] * y * z
            + coef[5] * (x * x - 0.3) + coef[6] * (z * z - 0.3))
    return np.exp(strength * poly / 2.0).astype(np.float32)


def simple_swi(signal_or_mag, phase=None, voxel_size_mm=(1.0, 1.0, 1.0), sigma_mm=4.0, power=4):
    """Simple SWI: magnitude x (negative-phase mask)^power of a homodyne high-passed phase.

    ``signal_or_mag`` is a complex image, or a magnitude with ``phase`` (rad). The high-pass
    is ``angle(s * conj(G * s))`` with ``G`` a Gaussian of ``sigma_mm``. The mask is
    ``1 + phase/pi`` for negative phase and 1 otherwise (paramagnetic = negative phase).
    """
    from scipy.ndimage import gaussian_filter

    if phase is None:
        s = np.asarray(signal_or_mag)
    else:
        s = np.asarray(signal_or_mag) * np.exp(1j * np.asarray(phase))
    s = s.astype(np.complex64)
    sig = [float(sigma_mm) / float(v) for v in voxel_size_mm]
    lp = gaussian_filter(s.real, sig, mode="nearest") + 1j * gaussian_filter(s.imag, sig,
                                                                             mode="nearest")
    hp = np.angle(s * np.conj(lp))
    mask = np.where(hp < 0, np.clip(1.0 + hp / np.pi, 0.0, 1.0), 1.0)
    return (np.abs(s) * mask ** int(power)).astype(np.float32)


def simulate(params: PhantomParams | None = None, **overrides) -> Phantom:
    """Simulate one SWI / GRE phantom.

    Parameters
    ----------
    params : PhantomParams, optional
        All parameters; keyword ``overrides`` replace fields of it (or of the defaults).

    Returns
    -------
    Phantom
        Magnitude, wrapped phase (rad), simple SWI, truth label map and truth table on an
        acquisition grid with affine ``phantom.affine`` (world RAS+ mm).
    """
    if params is None:
        params = PhantomParams()
    if overrides:
        params = dataclasses.replace(params, **overrides)
    if params.b0_t <= 0 or params.te_ms <= 0:
        raise ValueError("b0_t and te_ms must be positive")
    bad = sorted(set(params.region_weights) - {"lobar", "deep", "infratentorial"})
    if bad or not params.region_weights or min(params.region_weights.values()) < 0 or sum(
            params.region_weights.values()) <= 0:
        raise ValueError("region_weights must map lobar / deep / infratentorial to weights >= 0 "
                         f"with a positive sum, got {params.region_weights!r}")
    t0 = time.perf_counter()
    timings = {}
    rng = np.random.default_rng(int(params.seed))
    anat = _make_anatomy(params, rng)
    hs = float(params.head_scale)
    params = dataclasses.replace(
        params,
        fov_mm=tuple(float(v) for v in (params.fov_mm if params.fov_mm is not None
                                        else np.asarray(anat.default_fov) * hs)),
        centre_mm=tuple(float(v) for v in (params.centre_mm if params.centre_mm is not None
                                           else np.asarray(anat.default_centre) * hs)))
    shape, aff, rot = _acq_grid(params)
    vs = np.asarray(params.voxel_size_mm, dtype=np.float64)
    os_ = _oversampling(params)
    b0w = np.asarray(params.b0_direction, dtype=np.float64)
    b0w = b0w / np.linalg.norm(b0w)
    ppp = phase_per_ppm(params.b0_t, params.te_ms)
    rscale = float(params.b0_t) / 3.0

    # extended acquisition grid (margin) and its fine grid
    m = np.ceil(float(params.margin_mm) / vs).astype(np.int64)
    eshape = np.asarray(shape) + 2 * m
    mat = aff[:3, :3]
    etrans = aff[:3, 3] - mat @ m
    fshape = eshape * os_
    fmat = mat / os_[None, :]
    ftrans = etrans + mat @ (0.5 / os_ - 0.5)
    finv = np.linalg.inv(fmat)

    # world box of the field of view (for placement)
    corners = np.array([[a, b, c] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1)
                        for c in (0, shape[2] - 1)], dtype=np.float64)
    wc = corners @ mat.T + aff[:3, 3]
    fov_lo, fov_hi = wc.min(axis=0), wc.max(axis=0)

    # veins (random numbers are drawn in a fixed order: geometry, veins, sources, bias, noise)
    vpts, vrad = _make_veins(params, rng, anat, rot, fov_lo, fov_hi)
    timings["veins_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    lab = anat.grid(fmat, ftrans, fshape)
    frac = np.zeros(tuple(int(n) for n in fshape), dtype=np.float32)
    if vpts.shape[0]:
        h = float(np.exp(np.mean(np.log(vs / os_))))
        _stamp_tubes(vpts, vrad, finv, fmat, ftrans, fshape, h, frac)
    timings["anatomy_s"] = time.perf_counter() - t1

    n_lab = max(_TISSUE_PROPS) + 1
    m0_lut = np.array([_TISSUE_PROPS[t][0] for t in range(n_lab)], dtype=np.float64)
    r2_lut = np.array([_TISSUE_PROPS[t][1] for t in range(n_lab)], dtype=np.float64) * rscale
    chi_lut = np.array([_TISSUE_PROPS[t][2] for t in range(n_lab)], dtype=np.float64)

    t1 = time.perf_counter()
    chi = _chi_grid(lab, frac, chi_lut, _VEIN_PROPS[2])
    b0_grid = rot.T @ b0w  # B0 in the grid's axes
    fld = field_from_chi(chi, vs / os_, b0_grid, workers=-1)
    del chi
    timings["field_s"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    sig_e, vfrac_e = _signal_decimate(lab, frac, fld, m0_lut, r2_lut, _VEIN_PROPS[0],
                                      _VEIN_PROPS[1] * rscale, params.te_ms * 1e-3, ppp, os_,
                                      eshape)
    del lab, frac, fld
    crop = tuple(slice(int(a), int(a + n)) for a, n in zip(m, shape))
    signal = np.ascontiguousarray(sig_e[crop])
    vein_fraction = np.ascontiguousarray(vfrac_e[crop])
    tissue = anat.grid(mat, aff[:3, 3], shape)
    timings["signal_s"] = time.perf_counter() - t1

    # sources
    t1 = time.perf_counter()
    inset = vs.max()
    explicit = []
    for src in params.sources:
        p = np.array([src["x_mm"], src["y_mm"], src["z_mm"]], dtype=np.float64)
        kind = str(src.get("type", "cmb"))
        if kind not in ("cmb", "calcification"):
            raise ValueError(f"source type must be 'cmb' or 'calcification', got {kind!r}")
        lb, dp = anat.points(p[None, :])
        if int(lb[0]) not in _BRAIN:
            warnings.warn(f"source at ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm is centred in "
                          f"{TISSUE_LABELS.get(int(lb[0]), 'unknown tissue')}, not in brain "
                          "tissue; its truth region is a guess (the lobe rule's, 'lobar', for "
                          "cerebral CSF)", RuntimeWarning, stacklevel=2)
        reg, lobe, hemi = _truth_location(p, 0.5 * float(src["diameter_mm"]), int(lb[0]),
                                          float(dp[0]), anat)
        explicit.append(dict(type=kind, x_mm=float(p[0]), y_mm=float(p[1]), z_mm=float(p[2]),
                             diameter_mm=float(src["diameter_mm"]),
                             chi_ppm=float(src["chi_ppm"]), region=reg, lobe=lobe,
                             hemisphere=hemi))
    rows = _place_sources(params, rng, anat, fov_lo, fov_hi, vpts, vrad, inset, explicit)
    n_cmb_random = sum(r["type"] == "cmb" for r in rows) - sum(
        r["type"] == "cmb" for r in explicit)
    n_calc_random = len(rows) - len(explicit) - n_cmb_random
    if n_cmb_random < params.n_cmb or n_calc_random < params.n_calcifications:
        warnings.warn(f"placed {n_cmb_random} of {params.n_cmb} CMBs and {n_calc_random} of "
                      f"{params.n_calcifications} calcifications (no room left in the field of "
                      "view / requested regions)", RuntimeWarning, stacklevel=2)
    truth_labels = np.zeros(shape, dtype=np.int16)
    _apply_sources(signal, aff, rows, ppp, b0w, float(params.cmb_inside_signal), truth_labels)
    truth = [dict(truth_id=n + 1, **r) for n, r in enumerate(rows)]
    truth = [{c: t[c] for c in TRUTH_COLUMNS} for t in truth]
    timings["sources_s"] = time.perf_counter() - t1

    # bias, receiver phase, noise
    t1 = time.perf_counter()
    bias = _bias_field(shape, aff, rng, float(params.bias_strength))
    if bias is not None:
        signal *= bias
    phi0 = rng.uniform(-np.pi, np.pi)
    signal *= np.complex64(np.exp(1j * phi0))
    wm = tissue == WM
    wm_mean = float(np.mean(np.abs(signal[wm]))) if np.any(wm) else float(
        np.mean(np.abs(signal)))
    sigma = 0.0
    if params.snr is not None and params.snr > 0:
        sigma = wm_mean / float(params.snr)
        noise = rng.standard_normal(size=(2,) + tuple(shape), dtype=np.float32)
        signal += (sigma * noise[0] + 1j * sigma * noise[1]).astype(np.complex64)
        del noise
    magnitude = np.abs(signal).astype(np.float32)
    phase = np.angle(signal).astype(np.float32)
    swi = simple_swi(signal, voxel_size_mm=vs, sigma_mm=params.swi_hp_sigma_mm,
                     power=params.swi_power)
    timings["noise_swi_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0

    info = {
        "software": {"name": "microbleeds.phantoms", "version": __version__},
        "shape": list(shape),
        "voxel_size_mm": [float(v) for v in vs],
        "affine": aff.tolist(),
        "oversampling": [int(o) for o in os_],
        "fine_shape": [int(n) for n in fshape],
        "margin_voxels": [int(v) for v in m],
        "phase_sign_convention": SIGN_CONVENTION,
        "phase_per_ppm_rad": ppp,
        "b0_direction_world": b0w.tolist(),
        "receiver_phase_rad": float(phi0),
        "noise_sigma": sigma,
        "wm_mean_magnitude": wm_mean,
        "n_vein_points": int(vpts.shape[0]),
        "n_cmb_placed": sum(1 for t in truth if t["type"] == "cmb"),
        "n_calcifications_placed": sum(1 for t in truth if t["type"] == "calcification"),
        "tissue_labels": {str(k): v for k, v in TISSUE_LABELS.items()},
        "tissue_properties_3t": {TISSUE_LABELS[k]: {"m0": v[0], "r2star_per_s": v[1],
                                                    "chi_ppm": v[2]}
                                 for k, v in _TISSUE_PROPS.items()},
        "vein_properties_3t": {"m0": _VEIN_PROPS[0], "r2star_per_s": _VEIN_PROPS[1],
                               "chi_ppm": _VEIN_PROPS[2]},
        "r2star_scaling": "linear with B0 (3 T values x B0/3)",
        "timings_s": timings,
    }
    return Phantom(magnitude=magnitude, phase=phase, swi=swi, truth_labels=truth_labels,
                   tissue=tissue, vein_fraction=vein_fraction, affine=aff, truth=truth,
                   params=params, info=info)


# --------------------------------------------------------------------------------------------
# writing
def _nifti(data, affine, dtype, descrip, kind=None):
    """NIfTI image; ``dtype="int16"`` stores 12-bit scanner-like integers with scl_slope
    (magnitude 0..4095, phase -2048..2047 with slope pi/2048 so it reads back in radians)."""
    import nibabel as nib

    data = np.asarray(data)
    if dtype == "int16" and kind is not None:
        if kind == "phase":
            slope = np.pi / 2048.0
            raw = np.rint(data / slope)
            raw[raw >= 2048] -= 4096
            raw = np.clip(raw, -2048, 2047)
        else:
            top = float(np.max(data)) if data.size else 0.0
            slope = top / 4095.0 if top > 0 else 1.0
            raw = np.clip(np.rint(data / slope), 0, 4095)
        img = nib.Nifti1Image(raw.astype(np.int16), affine)
        img.header.set_slope_inter(slope, 0.0)
    else:
        img = nib.Nifti1Image(data.astype(dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = descrip[:79].encode()
    return img


def truth_tsv(rows) -> str:
    """The ground-truth table as TSV text (columns :data:`TRUTH_COLUMNS`)."""
    lines = ["\t".join(TRUTH_COLUMNS)]
    for r in rows:
        vals = []
        for c in TRUTH_COLUMNS:
            v = r[c]
            if isinstance(v, float):
                vals.append(f"{v:.4f}")
            else:
                vals.append(str(v))
        lines.append("\t".join(vals))
    return "\n".join(lines) + "\n"


def write_phantom(phantom: Phantom, out_dir, name: str = "phantom", dtype: str = "float32",
                  include_swi: bool = True, include_labels: bool = False,
                  labels_method: str = "centre") -> dict:
    """Write a phantom and its ground truth, each file atomically.

    Parameters
    ----------
    phantom : Phantom
    out_dir : path
        Created if missing.
    name : str
        File stem.
    dtype : ``"float32"`` or ``"int16"``
        Storage of magnitude / phase / SWI. ``"int16"`` stores 12-bit integers as many
        scanners do (magnitude 0..4095, phase -2048..2047) with ``scl_slope`` set so that
        nibabel reads magnitude in the original units and phase in radians; files are about
        3x smaller. Quantisation step: max/4095 (magnitude), pi/2048 rad (phase).
    include_swi : bool
        Also write ``<name>_swi.nii.gz``.
    include_labels : bool
        Also write ``<name>_dseg.nii.gz``, a FreeSurfer aparc+aseg-style label map on the
        acquisition grid (:func:`segmentation`), and ``<name>_dseg.tsv`` (BIDS lookup table:
        ``index``, ``name``); give the map to ``microbleeds.detect(..., labels=...)``.
    labels_method : ``"centre"`` or ``"majority"``
        See :func:`segmentation`.

    Returns
    -------
    dict
        Paths keyed ``magnitude, phase, swi, truth_tsv, truth_labels, sidecar`` (and
        ``dseg``, ``dseg_tsv`` with ``include_labels``).
    """
    if dtype not in ("float32", "int16"):
        raise ValueError("dtype must be 'float32' or 'int16'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    aff = phantom.affine
    paths = {
        "magnitude": out / f"{name}_mag.nii.gz",
        "phase": out / f"{name}_phase.nii.gz",
        "truth_tsv": out / f"{name}_truth.tsv",
        "truth_labels": out / f"{name}_truth.nii.gz",
        "sidecar": out / f"{name}.json",
    }
    if include_swi:
        paths["swi"] = out / f"{name}_swi.nii.gz"
    if include_labels:
        paths["dseg"] = out / f"{name}_dseg.nii.gz"
        paths["dseg_tsv"] = out / f"{name}_dseg.tsv"
    atomic_save_nifti(_nifti(phantom.magnitude, aff, dtype, "microbleeds phantom GRE magnitude",
                         "magnitude"), paths["magnitude"])
    atomic_save_nifti(_nifti(phantom.phase, aff, dtype, "microbleeds phantom GRE phase (rad)",
                         "phase"), paths["phase"])
    if include_swi:
        atomic_save_nifti(_nifti(phantom.swi, aff, dtype, "microbleeds phantom simple SWI",
                             "magnitude"), paths["swi"])
    atomic_save_nifti(_nifti(phantom.truth_labels, aff, "int16", "microbleeds phantom truth labels"),
                  paths["truth_labels"])
    atomic_write_text(paths["truth_tsv"], truth_tsv(phantom.truth))
    if include_labels:
        dseg = segmentation(phantom, method=labels_method)
        atomic_save_nifti(_nifti(dseg, aff, "int32", "microbleeds phantom aparc+aseg-style labels"),
                          paths["dseg"])
        atomic_write_text(paths["dseg_tsv"], "index\tname\n" + "".join(
            f"{k}\t{v}\n" for k, v in sorted(DSEG_LABELS.items())))
    p = phantom.params
    side = {
        "name": name,
        "seed": int(p.seed),
        "parameters": p.to_dict(),
        "acquisition": {"sequence": "GRE (simulated)", "field_strength_t": float(p.b0_t),
                        "echo_time_ms": float(p.te_ms)},
        "files": {k: v.name for k, v in paths.items()},
        "storage_dtype": dtype,
        "truth_columns": TRUTH_COLUMNS,
        "n_truth": len(phantom.truth),
        **{k: v for k, v in phantom.info.items() if k != "timings_s"},
    }
    atomic_write_text(paths["sidecar"], json.dumps(side, indent=2, default=_json_default) + "\n")
    return {k: str(v) for k, v in paths.items()}


def generate_phantom(out_dir, name: str = "phantom", dtype: str = "float32",
                     include_swi: bool = True, params: PhantomParams | None = None,
                     include_labels: bool = False, **overrides) -> dict:
    """Simulate and write one phantom (:func:`simulate` + :func:`write_phantom`).

    Parameters
    ----------
    out_dir : path
        Output folder (created if missing).
    name : str
        File stem: ``<name>_mag.nii.gz``, ``<name>_phase.nii.gz``, ``<name>_swi.nii.gz``,
        ``<name>_truth.tsv``, ``<name>_truth.nii.gz``, ``<name>.json``.
    dtype, include_swi, include_labels
        See :func:`write_phantom` (``include_labels`` adds ``<name>_dseg.nii.gz``).
    params : PhantomParams, optional
        Base parameters (default: ``PhantomParams()``).
    **overrides
        Any :class:`PhantomParams` field, e.g. ``seed=3, b0_t=1.5, te_ms=40,
        voxel_size_mm=(0.9, 0.9, 3), oblique_deg=(0, 15, 0), snr=20, n_cmb=12``.

    Returns
    -------
    dict
        Paths of the written files (see :func:`write_phantom`).
    """
    ph = simulate(params, **overrides)
    return write_phantom(ph, out_dir, name, dtype=dtype, include_swi=include_swi,
                         include_labels=include_labels)


# --------------------------------------------------------------------------------------------
# real data
def load_real_gre(mag_path, phase_path, echo: int = 0):
    """Read a magnitude / phase NIfTI pair as (magnitude, phase in rad [-pi, pi], affine).

    Phase stored in other units (e.g. a tiny ``scl_slope`` as in the ROMEO test data, or
    integer 0..4095) is rescaled from its raw stored range to [-pi, pi]. 4-D files: ``echo``
    picks the volume.
    """
    import nibabel as nib

    mimg = nib.load(str(mag_path))
    pimg = nib.load(str(phase_path))
    mag = np.asarray(mimg.dataobj, dtype=np.float64)
    ph = np.asarray(pimg.dataobj, dtype=np.float64)
    if np.nanmax(np.abs(ph)) > np.pi * 1.01 or np.nanmax(ph) - np.nanmin(ph) < 1.0:
        raw = np.asarray(pimg.dataobj.get_unscaled(), dtype=np.float64)
        lo, hi = float(np.nanmin(raw)), float(np.nanmax(raw))
        if abs(lo + np.pi) < 0.05 and abs(hi - np.pi) < 0.05:
            ph = raw
        else:
            ph = (raw - lo) / (hi - lo) * 2.0 * np.pi - np.pi
    if mag.ndim == 4:
        mag = mag[..., echo]
    if ph.ndim == 4:
        ph = ph[..., echo]
    return mag, ph, np.asarray(mimg.affine, dtype=np.float64)


def insert_cmbs(magnitude, phase, affine, centres_mm, diameters_mm, chi_ppm, b0_t, te_ms,
                b0_direction=(0.0, 0.0, 1.0), inside_signal=0.05, phase_sign=-1.0):
    """Insert simulated microbleeds into a real complex GRE image.

    The complex signal ``magnitude * exp(i phase)`` of every voxel near each source is
    multiplied by the source's sub-voxel factor ``mean(w exp(i phi))`` (analytic sphere
    field, adaptive sub-grid), so the CMB blooms and dephases as on the scanner that took the
    image. Noise in the affected voxels is scaled with the signal (not re-added).

    Parameters
    ----------
    magnitude, phase : 3-D arrays
        Real image; phase in radians.
    affine : (4, 4) array
        Voxel-to-world affine (mm).
    centres_mm : (N, 3) array
        World coordinates of the CMB centres.
    diameters_mm : float or (N,) array
        True diameters (mm).
    chi_ppm : float or (N,) array
        Susceptibility relative to tissue (ppm); negative values give calcifications.
    b0_t, te_ms : float
        Field strength (T) and echo time (ms) of the real image.
    b0_direction : (3,) array
        B0 direction in world coordinates.
    inside_signal : float
        Relative signal left inside each sphere.
    phase_sign : float
        -1 if the image follows ``phase = -gamma dB TE`` (paramagnetic negative), else +1.

    Returns
    -------
    magnitude, phase, labels : arrays
        New magnitude (float32), wrapped phase (float32, rad) and an int16 label map
        (value = 1-based source index).
    """
    mag = np.asarray(magnitude, dtype=np.float64)
    ph = np.asarray(phase, dtype=np.float64)
    if mag.shape != ph.shape or mag.ndim != 3:
        raise ValueError("magnitude and phase must be 3-D arrays of the same shape")
    centres = np.atleast_2d(np.asarray(centres_mm, dtype=np.float64))
    n = centres.shape[0]
    diam = np.broadcast_to(np.asarray(diameters_mm, dtype=np.float64), (n,))
    chis = np.broadcast_to(np.asarray(chi_ppm, dtype=np.float64), (n,))
    signal = (mag * np.exp(1j * ph)).astype(np.complex128)
    rows = [dict(x_mm=c[0], y_mm=c[1], z_mm=c[2], diameter_mm=float(d), chi_ppm=float(x))
            for c, d, x in zip(centres, diam, chis)]
    labels = np.zeros(mag.shape, dtype=np.int16)
    ppp = phase_per_ppm(b0_t, te_ms, sign=phase_sign)
    b0w = np.asarray(b0_direction, dtype=np.float64)
    _apply_sources(signal, np.asarray(affine, dtype=np.float64), rows, ppp,
                   b0w / np.linalg.norm(b0w), float(inside_signal), labels)
    return np.abs(signal).astype(np.float32), np.angle(signal).astype(np.float32), labels


# --------------------------------------------------------------------------------------------
def sample_params(seed: int = 2026) -> PhantomParams:
    """Parameters of the shipped sample: 3 T, TE 20 ms, 0.75 x 0.75 x 1.5 mm, a 39 mm slab
    through the basal ganglia and the centrum semiovale of a slightly small head
    (``head_scale`` 0.92), 8 CMBs of 1.5-5 mm (lobar and deep), 2 calcifications, 60 vein
    trees, SNR 25."""
    return PhantomParams(
        fov_mm=(134.0, 162.0, 39.0), voxel_size_mm=(0.75, 0.75, 1.5), centre_mm=(0.0, -4.0, 10.0),
        head_scale=0.92,
        b0_t=3.0, te_ms=20.0, snr=25.0, n_cmb=8, n_calcifications=2, n_veins=60,
        cmb_diameter_range_mm=(1.5, 5.0), region_weights={"lobar": 0.6, "deep": 0.4},
        bias_strength=0.2, seed=seed)


def make_sample(out_dir, name: str = "sample", seed: int = 2026, include_swi: bool = True) -> dict:
    """Write the small sample phantom (see :func:`sample_params`) into ``out_dir``.

    Images are stored as 12-bit integers with scaling (``dtype="int16"`` of
    :func:`write_phantom`) so that magnitude + phase + SWI + truth stay below about 5 MB.
    Returns the dict of paths from :func:`write_phantom`.
    """
    ph = simulate(sample_params(seed))
    return write_phantom(ph, out_dir, name, dtype="int16", include_swi=include_swi)
