"""Simulation of one phantom (the steps of the package docstring) and its simple SWI.

Random numbers are drawn in a fixed order (head geometry, veins, sources, bias, receiver phase,
noise), so the output is the same bit for bit for a given seed and parameters.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ... import __version__
from ..dipole import field_from_chi, phase_per_ppm
from ..truth_table import TRUTH_COLUMNS, TRUTH_REGIONS
from . import acquisition, echoes, lesions
from .grid import _simulation_grid
from .head import _make_anatomy
from .params import (
    _BRAIN,
    _TISSUE_PROPS,
    _VEIN_PROPS,
    CAV_RIM,
    CSF,
    SIGN_CONVENTION,
    TISSUE_LABELS,
    VENTRICLE,
    WM,
    Phantom,
    PhantomParams,
)
from .sources import _apply_sources, _explicit_sources, _place_sources, _warn_if_not_all_placed
from .veins import _make_veins


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
    params = _checked(dataclasses.replace(params or PhantomParams(), **overrides))
    t0 = time.perf_counter()
    timings = {}
    rng = np.random.default_rng(int(params.seed))
    anat = _make_anatomy(params, rng)
    params = _resolved(params, anat)
    grid = _simulation_grid(acquisition.spaced_params(params) if params.slice_gap_mm > 0 else params)
    sampling = acquisition.slice_sampling(params, grid)  # 2D with gaps: simulated on sub-slices
    sim = _simulation_grid(sampling.params) if sampling else grid
    b0w = np.asarray(params.b0_direction, dtype=np.float64)
    b0w = b0w / np.linalg.norm(b0w)
    tes = echoes.echo_times(params)
    vpts, vrad = _make_veins(params, rng, anat, sim.rot, sim.fov_lo, sim.fov_hi)
    painted = lesions.plan_painted(params, anat, sim.fov_lo, sim.fov_hi)
    timings["veins_s"] = time.perf_counter() - t0
    fine = _fine_maps(params, anat, sim, vpts, vrad, b0w, timings, painted)  # TE-independent: once

    t1 = time.perf_counter()
    explicit = _explicit_sources(params, anat)
    rows = _place_sources(params, rng, anat, sim, vpts, vrad, explicit, painted)
    _warn_if_not_all_placed(params, rows, explicit)
    truth = [{c: t[c] for c in TRUTH_COLUMNS} for t in (dict(truth_id=n + 1, **r) for n, r in enumerate(rows))]
    timings["sources_s"] = time.perf_counter() - t1
    signals, contrasts = [], []
    for e, te in enumerate(tes):
        labels = np.zeros(sim.shape, dtype=np.int16) if e == 0 else None
        signal, contrast, maps = _echo(params, anat, sim, grid, sampling, fine, rows, te, b0w, labels, timings)
        if e == 0:
            vein_fraction, tissue, truth_labels = maps
        signals.append(signal)
        contrasts.append(contrast)
    del fine

    t1 = time.perf_counter()
    if len(tes) == 1:
        signal = signals[0]
        noise = _bias_phase_noise(params, rng, signal, tissue, grid, anat, b0w)
    else:
        noise = echoes.bias_phase_noise(params, rng, signals, tissue, grid, anat, b0w, _bias_field)
    ref = echoes.reference_echo(params)
    magnitude = np.abs(signals[0] if len(tes) == 1 else np.stack(signals, axis=3)).astype(np.float32)
    phase = np.angle(signals[0] if len(tes) == 1 else np.stack(signals, axis=3)).astype(np.float32)
    if int(params.phase_sign) == 1:
        phase = -phase  # the other vendors' convention: phase = +gamma dB TE
    swi = simple_swi(signals[ref], voxel_size_mm=grid.voxel_mm, sigma_mm=params.swi_hp_sigma_mm,
                     power=params.swi_power)
    del signals
    timings["noise_swi_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    info = _info(grid, phase_per_ppm(params.b0_t, tes[ref]), b0w, noise, vpts, truth, timings)
    info.update(_hard_info(params, rows, contrasts[ref], painted, sampling))
    if len(tes) > 1:
        info.update(echoes.echo_info(params, contrasts))
    info.update(_volumes(tissue, grid))
    return Phantom(magnitude=magnitude, phase=phase, swi=swi, truth_labels=truth_labels,
                   tissue=tissue, vein_fraction=vein_fraction, affine=grid.affine, truth=truth,
                   params=params, info=info)


def _echo(params, anat, sim, grid, sampling, fine, rows, te_ms, b0w, labels, timings):
    """One echo's noise-free complex signal on the acquisition grid with the sources' blooming at
    ``te_ms``, and each source's noise-free contrast in it; with ``labels`` (the first echo) also
    the venous fraction, the tissue classes and the truth labels (TE-independent)."""
    ppp = phase_per_ppm(params.b0_t, te_ms)
    signal, vein_fraction, tissue = _decimated(params, anat, sim, fine, te_ms, ppp, timings)
    imaged = sampling is not None or acquisition.active(params)
    clean = signal.copy() if imaged else None  # the same scan without the sources
    contrast = _apply_sources(signal, sim.affine, rows, ppp, b0w, float(params.cmb_inside_signal), labels)
    t1 = time.perf_counter()
    if sampling:
        signal = acquisition.collapse(signal, sampling)
        if labels is not None:
            vein_fraction = acquisition.collapse(vein_fraction, sampling)
            labels = acquisition.collapse(labels, sampling, how="max")
            tissue = anat.grid(grid.affine[:3, :3], grid.affine[:3, 3], grid.shape)
    acquisition.kspace(signal, grid.voxel_mm, params)
    if imaged:
        if sampling:
            clean = acquisition.collapse(clean, sampling)
        acquisition.kspace(clean, grid.voxel_mm, params)
        contrast = _imaged_contrast(signal, clean, grid.affine, rows, contrast)
        del clean
    timings["acquisition_s"] = timings.get("acquisition_s", 0.0) + time.perf_counter() - t1
    return signal, contrast, (vein_fraction, tissue, labels)


def _imaged_contrast(signal, clean, affine, rows, contrast) -> dict:
    """Noise-free contrast of each source as imaged: ``1 - min |signal| / |clean|`` over its own
    voxels within its radius + one voxel (``clean``: the same acquisition without the sources),
    after the slice profile and the k-space filtering. A voxel is a source's own when no other
    source's surface is nearer to it (:func:`_nearest_surface_mm`): a CMB of a cluster is judged by
    its own darkening, not by its neighbour's core a voxel beyond its radius (as the voxel-level
    contrast of an acquisition without k-space filtering is, ``_apply_sources``)."""
    inv = np.linalg.inv(affine)
    vox = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    out = {}
    for n in contrast:
        r = rows[n]
        centre = inv[:3, :3] @ np.array([r["x_mm"], r["y_mm"], r["z_mm"]]) + inv[:3, 3]
        reach = (r["diameter_mm"] / 2.0 + vox.max()) / vox
        lo = np.maximum(np.floor(centre - reach).astype(int), 0)
        hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, np.asarray(signal.shape))
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        ratio = np.abs(signal[box]) / np.maximum(np.abs(clean[box]), 1e-6)
        idx = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1)
        points = idx @ affine[:3, :3].T + affine[:3, 3]
        others = [m for m in contrast if m != n]
        own = _surface_distance_mm(points, r) <= _nearest_surface_mm(points, [rows[m] for m in others])
        ratio = ratio[own] if own.any() else ratio
        out[n] = float(1.0 - min(float(ratio.min()), 1.0))
    return out


def _surface_distance_mm(points, row):
    """Distance (mm, negative inside) of ``points`` (..., 3) from a source's surface: its main
    sphere and, for a lobulated CMB, the nearest of its lobes."""
    centre = np.array([row["x_mm"], row["y_mm"], row["z_mm"]], dtype=np.float64)
    radius = row["main_radius_mm"] if "lobes" in row else row["diameter_mm"] / 2.0
    dist = np.linalg.norm(points - centre, axis=-1) - radius
    for q, rl in row.get("lobes", ()):
        dist = np.minimum(dist, np.linalg.norm(points - np.asarray(q, dtype=np.float64), axis=-1) - rl)
    return dist


def _nearest_surface_mm(points, rows):
    """Distance (mm) of ``points`` from the nearest surface of the sources ``rows``; inf without one."""
    nearest = np.full(points.shape[:-1], np.inf)
    for row in rows:
        nearest = np.minimum(nearest, _surface_distance_mm(points, row))
    return nearest


def _volumes(tissue, grid) -> dict:
    """Brain (tissue classes) and intracranial (brain, CSF, ventricles) volume in the field of
    view (ml), from the tissue at the voxel centres: the truth a brain mask is checked against."""
    voxel_ml = float(np.prod(grid.voxel_mm)) / 1000.0
    brain = int(np.isin(tissue, _BRAIN).sum())
    intracranial = brain + int(np.isin(tissue, (CSF, VENTRICLE)).sum())
    return {"brain_volume_ml": round(brain * voxel_ml, 3), "intracranial_volume_ml": round(intracranial * voxel_ml, 3)}


SOURCE_CONTRAST_VERSION = 2
"""How ``source_contrast_noise_free`` is measured: 2 = on each source's own voxels (:func:`_imaged_contrast`,
session 11); sidecars without it read a cluster member's contrast at its neighbour's core."""


def _hard_info(params, rows, contrast, painted, sampling) -> dict:
    """Sidecar facts of the realistic features: each source's noise-free contrast, the context of
    the hard CMBs (cluster, near_vein, lobulated), the painted objects, the phase convention."""
    out = {"source_contrast_noise_free": {str(n + 1): round(float(c), 4) for n, c in contrast.items()},
           "source_contrast_version": SOURCE_CONTRAST_VERSION,
           "cmb_context": {str(n + 1): r["context"] for n, r in enumerate(rows) if r.get("context")},
           "phase_sign": int(params.phase_sign)}
    if int(params.phase_sign) == 1:
        out["phase_sign_convention"] = SIGN_CONVENTION.replace("phase = -gamma", "phase = +gamma") \
            .replace("negative phase", "POSITIVE phase").replace("positive phase in", "negative phase in")
    if painted:
        out["painted"] = sorted({o["kind"] if o["kind"] != "tube" else TISSUE_LABELS[o["cls"]]
                                 for o in painted})
        out["lesion_properties_3t"] = {TISSUE_LABELS[k]: {"m0": v[0], "r2star_per_s": v[1], "chi_ppm": v[2]}
                                       for k, v in _TISSUE_PROPS.items() if k >= CAV_RIM}
    if sampling:
        out["slices"] = {"thickness_mm": float(params.voxel_size_mm[2]), "gap_mm": float(params.slice_gap_mm),
                         "sub_slices_per_slice": sampling.per_slice, "imaged_sub_slices": sampling.imaged}
    if acquisition.active(params):
        out["kspace"] = {"fraction": [float(v) for v in params.kspace_fraction], "filter": params.kspace_filter,
                         "ghost_amplitude_mm": float(params.ghost_amplitude_mm),
                         "phase_encode_axis": int(params.phase_encode_axis)}
    return out


def _checked(params: PhantomParams) -> PhantomParams:
    """``params``, or ValueError for a non-positive field / echo time or bad region weights."""
    acquisition.check(params)
    echoes.check(params)
    if params.b0_t <= 0 or params.te_ms <= 0:
        raise ValueError("b0_t and te_ms must be positive")
    if int(params.n_coils) < 0 or int(params.n_coils) != params.n_coils:
        raise ValueError(f"n_coils must be an integer >= 0, got {params.n_coils!r}")
    weights = params.region_weights
    if (set(weights) - set(TRUTH_REGIONS) or not weights or min(weights.values()) < 0
            or sum(weights.values()) <= 0):
        raise ValueError("region_weights must map lobar / deep / infratentorial to weights >= 0 "
                         f"with a positive sum, got {params.region_weights!r}")
    return params


def _resolved(params: PhantomParams, anat) -> PhantomParams:
    """``params`` with ``fov_mm`` and ``centre_mm`` set (the anatomy's defaults x ``head_scale``)."""
    hs = float(params.head_scale)
    fov = params.fov_mm if params.fov_mm is not None else np.asarray(anat.default_fov) * hs
    centre = params.centre_mm if params.centre_mm is not None else np.asarray(anat.default_centre) * hs
    return dataclasses.replace(params, fov_mm=tuple(float(v) for v in fov),
                               centre_mm=tuple(float(v) for v in centre))


def _luts(b0_t):
    """Per-tissue M0, R2* (1/s, scaled linearly with B0 from 3 T) and chi (ppm) lookup tables."""
    n_lab = max(_TISSUE_PROPS) + 1
    m0 = np.array([_TISSUE_PROPS[t][0] for t in range(n_lab)], dtype=np.float64)
    r2 = np.array([_TISSUE_PROPS[t][1] for t in range(n_lab)], dtype=np.float64) * (float(b0_t) / 3.0)
    chi = np.array([_TISSUE_PROPS[t][2] for t in range(n_lab)], dtype=np.float64)
    return m0, r2, chi


def _fine_maps(params, anat, grid, vpts, vrad, b0w, timings, painted=()):
    """Tissue classes, venous fraction and relative field ``dB/B0`` (ppm) on the fine grid (steps
    1-2 of the package docstring): what every echo's signal is computed from."""
    from .kernels import chi_grid, stamp_tubes

    t1 = time.perf_counter()
    fine_mm = grid.voxel_mm / grid.oversampling
    lab = anat.grid(grid.fmat, grid.ftrans, grid.fshape)
    if painted:
        lesions.paint(lab, grid.fmat, grid.ftrans, painted, anat)
    frac = np.zeros(tuple(int(n) for n in grid.fshape), dtype=np.float32)
    if vpts.shape[0]:
        h = float(np.exp(np.mean(np.log(fine_mm))))
        stamp_tubes(vpts, vrad, np.linalg.inv(grid.fmat), grid.fmat, grid.ftrans, grid.fshape, h, frac)
    timings["anatomy_s"] = time.perf_counter() - t1

    _, _, chi_lut = _luts(params.b0_t)
    t1 = time.perf_counter()
    chi = chi_grid(lab, frac, chi_lut, _VEIN_PROPS[2])
    fld = field_from_chi(chi, fine_mm, grid.rot.T @ b0w, workers=-1)  # B0 in the grid's axes
    del chi
    timings["field_s"] = time.perf_counter() - t1
    return lab, frac, fld


def _decimated(params, anat, grid, fine, te_ms, ppp, timings):
    """Complex GRE signal of tissue and veins at ``te_ms`` on the acquisition grid (step 3 of the
    package docstring); returns (signal complex64, venous fraction float32, tissue class uint8)."""
    from .kernels import signal_decimate

    lab, frac, fld = fine
    m0_lut, r2_lut, _ = _luts(params.b0_t)
    t1 = time.perf_counter()
    sig_e, vfrac_e = signal_decimate(lab, frac, fld, m0_lut, r2_lut, _VEIN_PROPS[0],
                                     _VEIN_PROPS[1] * (float(params.b0_t) / 3.0), te_ms * 1e-3,
                                     ppp, grid.oversampling, grid.eshape)
    crop = tuple(slice(int(a), int(a + n)) for a, n in zip(grid.margin, grid.shape))
    signal = np.ascontiguousarray(sig_e[crop])
    vein_fraction = np.ascontiguousarray(vfrac_e[crop])
    del sig_e, vfrac_e
    tissue = anat.grid(grid.affine[:3, :3], grid.affine[:3, 3], grid.shape)
    timings["signal_s"] = timings.get("signal_s", 0.0) + time.perf_counter() - t1
    return signal, vein_fraction, tissue


def _bias_field(shape, affine, rng, strength):
    """Smooth multiplicative receive bias (float32, exp of a quadratic in world position / 100 mm),
    or None for ``strength <= 0``."""
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


def _bias_phase_noise(params, rng, signal, tissue, grid, anat=None, b0w=None) -> dict:
    """Apply (in place) the receive bias, a constant receiver phase and complex Gaussian noise
    (``sigma = mean white-matter magnitude / snr``); returns those values for the sidecar.

    With ``params.n_coils`` > 0 the noise is that of a receive array combined by sum of squares
    (:mod:`.coils`; needs the anatomy ``anat`` and the B0 direction ``b0w``)."""
    bias = _bias_field(grid.shape, grid.affine, rng, float(params.bias_strength))
    if bias is not None:
        signal *= bias
    phi0 = rng.uniform(-np.pi, np.pi)
    signal *= np.complex64(np.exp(1j * phi0))
    wm = tissue == WM
    wm_mean = float(np.mean(np.abs(signal[wm]))) if np.any(wm) else float(np.mean(np.abs(signal)))
    if int(params.n_coils) > 0:
        from .coils import apply_coil_array

        cerebrum = anat.ell[0]
        coil = apply_coil_array(signal, params, grid, cerebrum[:3], cerebrum[3:], b0w, wm, rng, wm_mean)
        return {"receiver_phase_rad": float(phi0), "wm_mean_magnitude": wm_mean, **coil}
    sigma = 0.0
    if params.snr is not None and params.snr > 0:
        sigma = wm_mean / float(params.snr)
        noise = rng.standard_normal(size=(2,) + tuple(grid.shape), dtype=np.float32)
        signal += (sigma * noise[0] + 1j * sigma * noise[1]).astype(np.complex64)
    return {"receiver_phase_rad": float(phi0), "noise_sigma": sigma, "wm_mean_magnitude": wm_mean}


def _info(grid, ppp, b0w, noise, vpts, truth, timings) -> dict:
    """The derived values of a simulation (``Phantom.info``; the sidecar holds all but timings)."""
    return {
        "software": {"name": "microbleeds.phantoms", "version": __version__},
        "shape": list(grid.shape),
        "voxel_size_mm": [float(v) for v in grid.voxel_mm],
        "affine": grid.affine.tolist(),
        "oversampling": [int(o) for o in grid.oversampling],
        "fine_shape": [int(n) for n in grid.fshape],
        "margin_voxels": [int(v) for v in grid.margin],
        "phase_sign_convention": SIGN_CONVENTION,
        "phase_per_ppm_rad": ppp,
        "b0_direction_world": b0w.tolist(),
        **noise,
        "n_vein_points": int(vpts.shape[0]),
        "n_cmb_placed": sum(1 for t in truth if t["type"] == "cmb"),
        "n_calcifications_placed": sum(1 for t in truth if t["type"] == "calcification"),
        "tissue_labels": {str(k): v for k, v in TISSUE_LABELS.items() if k < CAV_RIM},
        "tissue_properties_3t": {TISSUE_LABELS[k]: {"m0": v[0], "r2star_per_s": v[1], "chi_ppm": v[2]}
                                 for k, v in _TISSUE_PROPS.items() if k < CAV_RIM},
        "vein_properties_3t": {"m0": _VEIN_PROPS[0], "r2star_per_s": _VEIN_PROPS[1],
                               "chi_ppm": _VEIN_PROPS[2]},
        "r2star_scaling": "linear with B0 (3 T values x B0/3)",
        "timings_s": timings,
    }


def simple_swi(signal_or_mag, phase=None, voxel_size_mm=(1.0, 1.0, 1.0), sigma_mm=4.0, power=4):
    """Simple SWI: magnitude x (negative-phase mask)^power of a homodyne high-passed phase.

    ``signal_or_mag`` is a complex image, or a magnitude with ``phase`` (rad). The high-pass
    is ``angle(s * conj(G * s))`` with ``G`` a Gaussian of ``sigma_mm`` (mm; ``voxel_size_mm``
    gives the voxel size). The mask is ``1 + phase/pi`` for negative phase and 1 otherwise
    (paramagnetic = negative phase). This is the phantom's own SWI, kept apart from the detector's.
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
