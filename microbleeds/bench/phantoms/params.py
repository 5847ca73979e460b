"""Phantom parameters and result, and the tissue classes with their 3 T properties.

Units: lengths in mm, field in T, times in ms (``te_ms``), R2* in 1/s, susceptibility chi in ppm
(SI, relative to water / CSF).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ...io.tables import jsonable

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
#: (M0, R2* at 3 T in 1/s, chi in ppm) of venous blood
_VEIN_PROPS = (0.85, 45.0, 0.45)
#: tissue classes of the brain proper (sources are centred in these; not CSF, ventricles)
_BRAIN = (GM, WM, CAUDATE, PUTAMEN, PALLIDUM, THALAMUS, BRAINSTEM, MIDBRAIN, CB_GM, CB_WM, DENTATE)

#: the phase convention, as stated in every sidecar
SIGN_CONVENTION = ("phase = -gamma * dB * TE; paramagnetic (chi > 0) sources have negative phase "
                   "along B0 just outside them, positive phase in their equatorial plane, 0 field "
                   "at their centre; diamagnetic sources the opposite")


# --------------------------------------------------------------------------------------------
# parameters and result
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
    n_coils : int
        Receive channels. 0 (default): one channel with complex Gaussian noise, a Rician
        magnitude whose background goes to about 1.25 sigma. 8-32: a phased-array head coil
        (:mod:`.coils`): each coil sees the signal through its own Biot-Savart loop sensitivity
        and adds its own noise (``sigma`` per coil), combined by root sum of squares, a
        non-central chi magnitude with ``2 n_coils`` degrees of freedom whose background never
        goes near zero (about ``sigma sqrt(2 n_coils)``), brighter near the coils; the phase is
        the sensitivity-weighted combination. ``snr`` keeps its meaning (the coil profile
        averages 1 over white matter).
    coil_gap_mm : float
        Distance of the coil centres beyond the brain's bounding ellipsoid (mm; scalp, skull and
        the coil housing).
    coil_radius_mm : float or None
        Loop radius (mm); None tiles the helmet (each loop covers its share of the surface).
    coil_normalised : bool
        Divide the SoS image by the coils' smooth combined profile ``||S||`` (clipped below at
        0.2), as vendors' prescan normalisation does: tissue is uniform again and the noise
        floor then varies in space, highest where the coils see least.
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
    n_coils: int = 0
    coil_gap_mm: float = 25.0
    coil_radius_mm: float | None = None
    coil_normalised: bool = False
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
        return jsonable(dataclasses.asdict(self))

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
