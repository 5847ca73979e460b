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
#: classes painted on the fine grid only (lesions and vessels of :mod:`.lesions`; never in ``tissue``)
CAV_RIM, CAV_CORE, CAV_BRIGHT, CAV_DARK, SIDEROSIS, FLOW_VOID, DURAL_SINUS = range(17, 24)

TISSUE_LABELS = {
    AIR: "air", SCALP: "scalp", SKULL: "skull", CSF: "csf", GM: "cortical_gm",
    WM: "white_matter", CAUDATE: "caudate", PUTAMEN: "putamen", PALLIDUM: "globus_pallidus",
    THALAMUS: "thalamus", BRAINSTEM: "brainstem", MIDBRAIN: "red_nucleus_substantia_nigra",
    CB_GM: "cerebellar_gm", CB_WM: "cerebellar_wm", DENTATE: "dentate_nucleus",
    SINUS: "sinus_air", VENTRICLE: "ventricle",
    CAV_RIM: "cavernoma_rim", CAV_CORE: "cavernoma_core", CAV_BRIGHT: "cavernoma_methaemoglobin",
    CAV_DARK: "cavernoma_deoxyhaemoglobin", SIDEROSIS: "superficial_siderosis",
    FLOW_VOID: "arterial_flow_void", DURAL_SINUS: "dural_sinus_blood",
}

#: (M0, R2* at 3 T in 1/s, chi in ppm) per tissue class
_TISSUE_PROPS = {
    AIR: (0.0, 0.0, 0.0), SCALP: (0.9, 30.0, 0.0), SKULL: (0.05, 300.0, 0.0),
    CSF: (1.0, 3.0, 0.0), GM: (0.85, 17.0, 0.03), WM: (0.70, 22.0, -0.025),
    CAUDATE: (0.85, 25.0, 0.07), PUTAMEN: (0.85, 30.0, 0.09), PALLIDUM: (0.80, 45.0, 0.15),
    THALAMUS: (0.80, 22.0, 0.05), BRAINSTEM: (0.75, 22.0, -0.015), MIDBRAIN: (0.80, 45.0, 0.13),
    CB_GM: (0.85, 18.0, 0.02), CB_WM: (0.70, 22.0, -0.02), DENTATE: (0.80, 40.0, 0.10),
    SINUS: (0.0, 0.0, 9.4), VENTRICLE: (1.0, 3.0, 0.0),
    # cavernous malformation (Zabramski type II): a hemosiderin rim (paramagnetic, R2* like a
    # CMB's haemosiderin), a core of mixed-age blood (reticulated "popcorn"): methaemoglobin
    # lobules (bright, little chi), deoxyhaemoglobin lobules (dark, paramagnetic)
    CAV_RIM: (0.55, 220.0, 1.2), CAV_CORE: (0.85, 35.0, 0.15), CAV_BRIGHT: (1.05, 12.0, 0.05),
    CAV_DARK: (0.7, 90.0, 0.6),
    # cortical superficial siderosis: haemosiderin lining the pial surface and the sulci
    SIDEROSIS: (0.5, 160.0, 0.8),
    # arterial flow void (fast flow dephases / washes out the spins): no signal, no chi
    FLOW_VOID: (0.03, 0.0, 0.0),
    # dural venous sinus: venous blood (as the veins)
    DURAL_SINUS: (0.85, 45.0, 0.45),
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
        Echo time (ms) of a single-echo phantom (unused when ``echo_times_ms`` is given).
    echo_times_ms : tuple of float
        A multi-echo acquisition (:mod:`.echoes`): one echo per time (ms, 4-12 echoes as
        clinical multi-echo GRE), all from the same susceptibility map and field (the dipole
        convolution is computed once), each with its own phase ``gamma dB TE``, T2* decay and
        blooming, and its own noise; magnitude and phase are 4D ``(i, j, k, echo)``. Empty
        (default): one echo at ``te_ms``.
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
    n_clusters : int
        Clusters of 2-4 lobar CMBs (1-2.5 mm) with centres within 5 mm of the first and surfaces
        at least 0.8 mm apart, as in cerebral amyloid angiopathy (:mod:`.lesions`).
    n_cmb_near_vein : int
        CMBs (1-3 mm) whose surface is 0.5-1.5 mm from the wall of a vein.
    lobulated_fraction : float
        Fraction of the random CMBs made irregular: 1-2 overlapping lobes (radius 0.5-0.7 of the
        main sphere) are added; the truth keeps the main centre, with the union's
        volume-equivalent diameter.
    n_cavernomas : int
        Cavernous malformations (:attr:`cavernoma_diameter_range_mm`): a lobulated paramagnetic
        haemosiderin rim around a heterogeneous core of bright methaemoglobin and dark
        deoxyhaemoglobin lobules, painted on the fine grid (their field is in the dipole
        convolution). Truth type ``cavernoma``: a mimic, never to be reported.
    cavernoma_diameter_range_mm : tuple of 2 float
    n_siderosis : int
        Patches (20-40 mm across) of cortical superficial siderosis: haemosiderin lining the
        pial surface and the sulcal CSF. Truth type ``siderosis`` (centre, extent as diameter).
    with_arteries : bool
        Arterial flow voids (no signal, no chi): basilar (through-plane, 3 mm), both middle
        cerebral arteries (in-plane, 2.6 mm), the anterior cerebral arteries (2 mm).
    with_dural_sinuses : bool
        Superior sagittal, straight and transverse sinuses (venous blood, 5-7 mm) just outside
        the brain.
    kspace_fraction : tuple of 2 float
        Fraction of k-space acquired along the two in-plane axes (1 = all); the rest is zero
        filled, as when a 256 matrix is interpolated to 512: Gibbs ringing at every edge and a
        coarser true resolution than the voxel. Applied to the noise-free signal.
    kspace_filter : str
        ``"none"``, ``"hamming"`` or ``"fermi"``: the vendor's k-space apodisation.
    ghost_amplitude_mm : float
        Periodic rigid motion (pulsation, breathing) during the phase encoding: each k-space line
        along the phase-encode axis (``phase_encode_axis``) is acquired with the object shifted by
        up to this amount (mm), giving ghosts along that axis.
    phase_encode_axis : int
        0 or 1: the in-plane axis phase-encoded.
    slice_gap_mm : float
        2D multi-slice with gaps: slices of thickness ``voxel_size_mm[2]`` every
        ``voxel_size_mm[2] + slice_gap_mm`` mm (the affine's slice spacing); the gap is not
        imaged (simulated on sub-slices, averaged over the slice's thickness only).
    phase_sign : int
        -1 (default): ``phase = -gamma dB TE``; +1: the opposite convention (as some vendors
        store it): the phase image is negated.
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
    n_clusters: int = 0
    n_cmb_near_vein: int = 0
    lobulated_fraction: float = 0.0
    n_cavernomas: int = 0
    cavernoma_diameter_range_mm: tuple = (8.0, 15.0)
    n_siderosis: int = 0
    with_arteries: bool = False
    with_dural_sinuses: bool = False
    kspace_fraction: tuple = (1.0, 1.0)
    kspace_filter: str = "none"
    ghost_amplitude_mm: float = 0.0
    phase_encode_axis: int = 1
    slice_gap_mm: float = 0.0
    phase_sign: int = -1
    echo_times_ms: tuple = ()

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
        [-pi, pi]) and the simple SWI. A multi-echo phantom's magnitude and phase are 4D
        ``(i, j, k, echo)``; its SWI is that of the reference echo (:func:`.echoes.reference_echo`).
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
