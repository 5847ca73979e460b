"""A receive coil array: per-coil sensitivities, per-coil noise, sum-of-squares combination.

Many clinical magnitudes come from a phased-array head coil (8-32 channels) combined by root sum
of squares (SoS). Each coil ``c`` sees the complex signal ``s(x)`` through its own complex
sensitivity ``S_c(x)`` and adds its own complex Gaussian noise ``n_c`` (standard deviation sigma
per real component, independent between coils). The SoS magnitude
``M = sqrt(sum_c |S_c s + n_c|^2)`` follows a non-central chi distribution with ``2 N``
degrees of freedom: in air (``s = 0``) a central chi with mean about ``sigma sqrt(2N - 1/2)``
(5.6 sigma for 16 coils), a background that never goes near zero, unlike the Rician magnitude of
one channel (mean 1.25 sigma). In tissue at high SNR ``M ~ |s| ||S(x)|| + Gaussian(sigma)``.

Sensitivities are those of circular current loops (Biot-Savart, exact with complete elliptic
integrals) on an ellipsoidal helmet around the brain, open at the neck; by reciprocity a loop's
receive sensitivity is the transverse part of the field it would make per unit current,
``B_u - i B_v`` with ``u, v`` perpendicular to B0. They are scaled so that ``||S||`` averages
1 over white matter: the phantom's ``snr`` keeps its meaning (mean white-matter magnitude /
sigma). The phase image is the sensitivity-weighted combination ``angle(sum_c conj(S_c) I_c)``,
which has no coil phase in it (``sum |S_c|^2`` is real).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ellipe, ellipk

MIN_WIRE_DISTANCE_MM = 2.0
"""Points closer than this to a loop's wire are evaluated at this distance (no singularity)."""
MIN_NORMALISED_PROFILE = 0.2
"""Prescan normalisation divides by the coil profile, but never by less than this (of its WM mean)."""
NECK_OPENING = -0.75
"""Coils cover the helmet above this height on the unit sphere: a head coil covers the cerebellum
and brainstem and is open below them, at the neck."""


def coil_positions(n_coils, centre, radii):
    """Centres (N, 3) and inward unit normals (N, 3) of ``n_coils`` loops on an ellipsoidal
    helmet (world mm): a Fibonacci lattice, equal area per coil, above :data:`NECK_OPENING`."""
    n = int(n_coils)
    k = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - (1.0 - NECK_OPENING) * k / n
    rho = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    unit = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)
    radii = np.asarray(radii, dtype=np.float64)
    centres = np.asarray(centre, dtype=np.float64) + unit * radii
    normals = -(unit / radii)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return centres, normals


def default_loop_radius(n_coils, radii):
    """Loop radius (mm) that tiles the helmet: each coil covers its share of the surface."""
    a, b, c = (float(r) for r in radii)
    p = 1.6075
    area = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)  # Knud Thomsen
    area *= (1.0 - NECK_OPENING) / 2.0
    return math.sqrt(area / (math.pi * int(n_coils)))


def loop_field(points, centre, normal, radius):
    """Magnetic field (per unit current, arbitrary units) of a circular loop at world ``points``
    (M, 3): the exact Biot-Savart field (Simpson et al. 2001) with complete elliptic integrals."""
    d = points - centre
    z = d @ normal
    radial = d - z[:, None] * normal
    rho = np.linalg.norm(radial, axis=1)
    a = float(radius)
    r2 = rho * rho + z * z
    alpha2 = np.maximum(a * a + r2 - 2 * a * rho, MIN_WIRE_DISTANCE_MM ** 2)
    beta2 = a * a + r2 + 2 * a * rho
    beta = np.sqrt(beta2)
    m = np.clip(1.0 - alpha2 / beta2, 0.0, 1.0 - 1e-12)
    big_e, big_k = ellipe(m), ellipk(m)
    bz = ((a * a - r2) * big_e + alpha2 * big_k) / (2 * alpha2 * beta)
    safe_rho = np.maximum(rho, 1e-9)
    brho = z * ((a * a + r2) * big_e - alpha2 * big_k) / (2 * alpha2 * beta * safe_rho)
    brho = np.where(rho > 1e-9, brho, 0.0)
    e_rho = radial / safe_rho[:, None]
    return bz[:, None] * normal + brho[:, None] * e_rho


def transverse_axes(b0_world):
    """Two unit vectors (u, v) perpendicular to B0, right-handed with it."""
    b = np.asarray(b0_world, dtype=np.float64)
    b = b / np.linalg.norm(b)
    helper = np.array([1.0, 0.0, 0.0]) if abs(b[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(helper, b)
    u /= np.linalg.norm(u)
    return u, np.cross(b, u)


def sensitivities(affine, shape, centres, normals, radius, b0_world):
    """Complex receive sensitivities (N, *shape) complex64 of loops on a grid (``affine`` voxel
    to world mm), by reciprocity ``B_u - i B_v``."""
    u, v = transverse_axes(b0_world)
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    points = idx @ affine[:3, :3].T + affine[:3, 3]
    out = np.empty((len(centres),) + tuple(shape), np.complex64)
    for c, (centre, normal) in enumerate(zip(centres, normals)):
        field = loop_field(points, centre, normal, radius)
        out[c] = (field @ u - 1j * (field @ v)).reshape(shape)
    return out


def sum_of_squares(signal, coil_sens, sigma, rng):
    """Per-coil images ``S_c s + n_c`` (``n_c`` complex Gaussian, ``sigma`` per component, drawn
    coil by coil), combined: SoS magnitude with the phase of ``sum_c conj(S_c) I_c``. Returns a
    complex64 image whose modulus is the SoS magnitude."""
    sos = np.zeros(signal.shape, np.float64)
    weighted = np.zeros(signal.shape, np.complex128)
    for sens in coil_sens:
        image = sens * signal
        if sigma > 0:
            noise = rng.standard_normal(size=(2,) + tuple(signal.shape), dtype=np.float32)
            image = image + (sigma * noise[0] + 1j * sigma * noise[1]).astype(np.complex64)
        sos += image.real.astype(np.float64) ** 2 + image.imag.astype(np.float64) ** 2
        weighted += np.conj(sens) * image
    return (np.sqrt(sos) * np.exp(1j * np.angle(weighted))).astype(np.complex64)


def coil_array(params, grid, anat_centre, anat_radii, b0_world, wm):
    """The receive array of ``params`` on the acquisition grid: (sensitivities (N, *shape)
    complex64 scaled so that ``||S||`` averages 1 over white matter, that profile ``||S||``,
    the loop radius in mm). The same array receives every echo of a multi-echo acquisition."""
    radii = np.asarray(anat_radii, dtype=np.float64) + float(params.coil_gap_mm)
    centres, normals = coil_positions(params.n_coils, anat_centre, radii)
    loop = params.coil_radius_mm or default_loop_radius(params.n_coils, radii)
    sens = sensitivities(grid.affine, grid.shape, centres, normals, loop, b0_world)
    norm = np.sqrt((np.abs(sens) ** 2).sum(axis=0))
    scale = float(np.mean(norm[wm])) if np.any(wm) else float(np.mean(norm))
    sens /= np.float32(scale)
    return sens, norm / scale, float(loop)


def receive(signal, sens, profile, sigma, rng, normalised):
    """Replace ``signal`` (in place) by its SoS image through the array (``sigma`` per coil and
    component; ``normalised``: divided by the clipped ``profile``, prescan normalisation)."""
    signal[...] = sum_of_squares(signal, sens, sigma, rng)
    if normalised:
        signal /= np.maximum(profile, MIN_NORMALISED_PROFILE).astype(np.float32)


def coil_info(params, sigma, loop, profile, wm):
    """The sidecar values of a receive array."""
    return {"noise_sigma": sigma, "n_coils": int(params.n_coils), "coil_loop_radius_mm": float(loop),
            "noise_model": (f"sum of squares of {int(params.n_coils)} coils: non-central chi, "
                            f"{2 * int(params.n_coils)} degrees of freedom; noise_sigma per coil and component"
                            + ("; divided by the coil profile (prescan normalisation)" if params.coil_normalised else "")),
            "coil_profile_wm_range": [float(np.percentile(profile[wm], 1)), float(np.percentile(profile[wm], 99))]
            if np.any(wm) else None}


def apply_coil_array(signal, params, grid, anat_centre, anat_radii, b0_world, wm, rng, wm_mean):
    """Replace ``signal`` (in place) by its coil-array SoS image; returns the sidecar values."""
    sens, profile, loop = coil_array(params, grid, anat_centre, anat_radii, b0_world, wm)
    sigma = wm_mean / float(params.snr) if params.snr is not None and params.snr > 0 else 0.0
    receive(signal, sens, profile, sigma, rng, params.coil_normalised)
    return coil_info(params, sigma, loop, profile, wm)
