"""Microbleeds in real images: read a real GRE magnitude / phase pair, insert simulated CMBs or
calcifications into it with the phantom's sub-voxel physics."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from ..dipole import phase_per_ppm
from .sources import _apply_sources


def load_real_gre(mag_path, phase_path, echo: int = 0):
    """Read a magnitude / phase NIfTI pair as (magnitude, phase in rad [-pi, pi], affine).

    Phase stored in other units (e.g. a tiny ``scl_slope`` as in the ROMEO test data, or
    integer 0..4095) is rescaled from its raw stored range to [-pi, pi]. 4-D files: ``echo``
    picks the volume.
    """
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
                b0_direction=(0.0, 0.0, 1.0), inside_signal=0.05, phase_sign=-1.0, noise_sigma=None, seed=0):
    """Insert simulated microbleeds into a real complex GRE image.

    The complex signal ``magnitude * exp(i phase)`` of every voxel near each source is
    multiplied by the source's sub-voxel factor ``mean(w exp(i phi))`` (analytic sphere
    field, adaptive sub-grid), so the CMB blooms and dephases as on the scanner that took the
    image. The image's noise in the affected voxels is scaled with the signal; with
    ``noise_sigma`` the receiver noise the scanner adds after the dephasing is restored: complex
    Gaussian noise of variance ``noise_sigma^2 (1 - |factor|^2)`` per voxel, so that every voxel
    carries the image's noise again (a completely dephased core is noise, magnitude and phase).

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
    noise_sigma : float, optional
        The image's noise standard deviation per real / imaginary channel (same units as
        ``magnitude``); None keeps only the scaled noise.
    seed : int
        Seed of the restored noise.

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
    before = signal.copy() if noise_sigma else None
    _apply_sources(signal, np.asarray(affine, dtype=np.float64), rows, ppp,
                   b0w / np.linalg.norm(b0w), float(inside_signal), labels)
    if noise_sigma:
        changed = signal != before
        factor = np.abs(signal[changed]) / np.maximum(np.abs(before[changed]), 1e-30)
        scale = float(noise_sigma) * np.sqrt(np.clip(1.0 - factor ** 2, 0.0, 1.0))
        rng = np.random.default_rng(seed)
        signal[changed] += scale * (rng.standard_normal(scale.size) + 1j * rng.standard_normal(scale.size))
    return np.abs(signal).astype(np.float32), np.angle(signal).astype(np.float32), labels
