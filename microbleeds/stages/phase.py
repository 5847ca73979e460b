"""Phase handling for SWI / GRE-T2*: scaling, multi-echo combination, high-pass filtering,
SWI, phase-sign (handedness) estimation and the per-candidate dipole sign.

Pure functions on numpy arrays plus affine / voxel sizes; only :func:`load_phase` and
:func:`read_echo_times` touch files.

Phase sign convention used throughout (``phase_sign``)
------------------------------------------------------
Vendors store phase with either sign. This module calls a phase image convention ``+1`` when
the stored phase *increases* with the local field::

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
positive phase) on the same data. Note that veins perpendicular to B0 have a *negative*
field inside, so a one-sided (paramagnetic) mask does not darken them; ``kind="symmetric"``
in :func:`phase_mask` darkens both.

Units: phase in radians, echo times in ms, frequencies in Hz, susceptibility in ppm,
lengths in mm, sizes of windows in voxels (k-space samples) unless named ``*_mm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from ..contract import GAMMA_BAR_HZ_PER_T
from ..io.phase_file import load_phase, phase_to_radians, wrap_phase  # noqa: F401
from ..io.sidecar import read_echo_times  # noqa: F401

_PI = math.pi

__all__ = [
    "phase_to_radians",
    "load_phase",
    "read_echo_times",
    "combine_magnitudes",
    "combine_phases",
    "homodyne_highpass",
    "gaussian_highpass",
    "highpass_phase",
    "phase_mask",
    "swi",
    "minimum_intensity_projection",
    "slice_axis_from_affine",
    "estimate_phase_sign",
    "source_susceptibility_sign",
    "frequency_to_ppm",
    "compute_swi",
    "SWIResult",
]


# --------------------------------------------------------------------------------------------
# 2. Echo times and multi-echo combination
# --------------------------------------------------------------------------------------------

def _te_array(echo_times_ms, n):
    te = np.asarray(echo_times_ms, dtype=np.float64).ravel()
    if te.size != n:
        raise ValueError(f"{te.size} echo times for {n} echoes")
    if np.any(~np.isfinite(te)) or np.any(te <= 0):
        raise ValueError(f"echo times must be positive (ms), got {te.tolist()}")
    return te


def combine_magnitudes(magnitude, echo_times_ms=None, method="auto"):
    """Combine multi-echo magnitudes into one image.

    Parameters
    ----------
    magnitude : numpy.ndarray
        3D (returned as float32) or 4D ``(x, y, z, echo)``.
    echo_times_ms : sequence of float, optional
        Echo times in ms (needed for ``"t2star"``).
    method : {"auto", "rss", "t2star"}
        ``"rss"``: root-sum-of-squares ``sqrt(sum S_n^2)``. ``"t2star"``: the optimal
        T2*-weighted combination (Posse 1999) with weights ``w_n = TE_n * S_n`` (the voxel's own
        signal standing in for ``exp(-TE_n / T2*)``): ``sum TE_n S_n^2 / sum TE_n S_n``, which
        is on the scale of one echo's intensity. ``"auto"``: ``"t2star"`` if echo times are
        given, else ``"rss"``.

    Returns
    -------
    numpy.ndarray of float32
        Combined magnitude, 3D.
    """
    m = np.asarray(magnitude, dtype=np.float32)
    if m.ndim == 3:
        return m.copy()
    if m.ndim != 4:
        raise ValueError(f"magnitude must be 3D or 4D, got {m.shape}")
    if method == "auto":
        method = "t2star" if echo_times_ms is not None else "rss"
    if method == "rss":
        acc = np.zeros(m.shape[:3], np.float32)
        for e in range(m.shape[3]):
            acc += m[..., e] * m[..., e]
        return np.sqrt(acc)
    if method == "t2star":
        te = _te_array(echo_times_ms, m.shape[3])
        num = np.zeros(m.shape[:3], np.float32)
        den = np.zeros(m.shape[:3], np.float32)
        for e in range(m.shape[3]):
            me = np.abs(m[..., e])
            num += np.float32(te[e]) * me * me
            den += np.float32(te[e]) * me
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    raise ValueError(f"unknown magnitude combination {method!r}")


def combine_phases(phase, magnitude, echo_times_ms, reference_te_ms=None, output="radians",
                   temporal_unwrap=True):
    """Combine high-pass filtered phases of several echoes.

    The local frequency is the weighted least-squares slope of ``phi_n = omega * TE_n``
    through the origin with weights ``|S_n|^2`` (inverse phase-noise variance)::

        omega = sum |S_n|^2 TE_n phi_n / sum |S_n|^2 TE_n^2      (radians / ms)

    i.e. each echo's frequency estimate ``phi_n / TE_n`` is weighted by ``TE_n^2 |S_n|^2``.
    Before that, the filtered phases are unwrapped along the echoes (each echo is unwrapped
    towards the prediction ``omega TE_n`` from the shorter echoes), which helps when the long
    echo's filtered phase exceeds pi in veins at high field.

    Parameters
    ----------
    phase : numpy.ndarray
        High-pass filtered phase, radians, 4D ``(x, y, z, echo)`` (3D: single echo).
    magnitude : numpy.ndarray
        Magnitude with the same shape (weights).
    echo_times_ms : sequence of float
        Echo times in ms.
    reference_te_ms : float, optional
        Echo time in ms at which the combined phase is expressed; default the longest echo.
    output : {"radians", "hz"}
        ``"radians"``: ``omega * reference_te_ms`` (phase at the reference TE, radians, not
        wrapped). ``"hz"``: the local frequency ``omega / (2 pi)`` in Hz.
    temporal_unwrap : bool
        Unwrap along echoes before fitting.

    Returns
    -------
    numpy.ndarray of float32
        3D combined phase (radians) or frequency (Hz).
    """
    omega, te = _omega(phase, magnitude, echo_times_ms, temporal_unwrap)
    if output == "radians":
        ref = float(te.max()) if reference_te_ms is None else float(reference_te_ms)
        return (omega * np.float32(ref)).astype(np.float32)
    if output == "hz":
        return (omega * np.float32(1000.0 / (2 * _PI))).astype(np.float32)
    raise ValueError(f"unknown output {output!r}")


def _omega(phase, magnitude, echo_times_ms, temporal_unwrap=True):
    """Weighted LS frequency (radians / ms, float32) and the echo times (see combine_phases)."""
    p = np.asarray(phase, dtype=np.float32)
    if p.ndim == 3:
        p = p[..., None]
    m = np.asarray(magnitude, dtype=np.float32)
    if m.ndim == 3:
        m = m[..., None]
    if m.shape != p.shape:
        raise ValueError(f"magnitude {m.shape} and phase {p.shape} differ")
    te = _te_array(echo_times_ms, p.shape[3])
    order = np.argsort(te)
    num = np.zeros(p.shape[:3], np.float32)
    den = np.zeros(p.shape[:3], np.float32)
    for k, e in enumerate(order):
        w = m[..., e] ** 2
        pe = p[..., e]
        if temporal_unwrap and k > 0:
            omega = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            pred = omega * np.float32(te[e])
            pe = pred + wrap_phase(pe - pred)
        num += w * np.float32(te[e]) * pe
        den += w * np.float32(te[e] ** 2)
    omega = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return omega, te


def frequency_to_ppm(frequency_hz, b0_t):
    """Convert a local frequency offset (Hz) to a field offset in ppm of B0.

    Parameters
    ----------
    frequency_hz : array_like
        Frequency in Hz (``phase / (2 pi TE)`` in the ``phase_sign`` = +1 convention).
    b0_t : float
        Field strength in tesla.

    Returns
    -------
    numpy.ndarray
        ``dB / B0`` in ppm.
    """
    return np.asarray(frequency_hz) / (GAMMA_BAR_HZ_PER_T * float(b0_t)) * 1e6


# --------------------------------------------------------------------------------------------
# 3. High-pass filtering of wrapped phase (on the complex signal)
# --------------------------------------------------------------------------------------------

def slice_axis_from_affine(affine):
    """Array axis whose direction is closest to the world superior (z) axis.

    Parameters
    ----------
    affine : (4, 4) array_like
        NIfTI affine (voxel -> RAS+ mm).

    Returns
    -------
    int
        0, 1 or 2.
    """
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    cols = a / np.maximum(np.linalg.norm(a, axis=0), 1e-12)
    return int(np.argmax(np.abs(cols[2])))


def _voxel_sizes(voxel_size_mm, affine=None):
    if voxel_size_mm is not None:
        v = np.asarray(voxel_size_mm, dtype=np.float64).ravel()[:3]
    elif affine is not None:
        v = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    else:
        v = np.ones(3)
    if v.size != 3 or np.any(v <= 0):
        raise ValueError(f"voxel sizes must be 3 positive numbers (mm), got {v}")
    return v


def _complex(magnitude, phase):
    ph = np.asarray(phase, dtype=np.float32)
    if magnitude is None:
        return np.exp(1j * ph).astype(np.complex64)
    mag = np.asarray(magnitude, dtype=np.float32)
    if mag.shape != ph.shape:
        raise ValueError(f"magnitude {mag.shape} and phase {ph.shape} differ")
    return (mag * np.exp(1j * ph)).astype(np.complex64)


def _hann_kspace(n, width):
    """Hanning window of full width ``width`` samples, centred at k=0, in FFT order."""
    k = sfft.fftfreq(n) * n
    w = np.zeros(n)
    inside = np.abs(k) < width / 2.0
    w[inside] = 0.5 * (1.0 + np.cos(2 * _PI * k[inside] / width))
    return w


def homodyne_highpass(magnitude, phase, voxel_size_mm=None, window=32, window_mm=None,
                      mode="2d", slice_axis=2):
    """High-pass filter wrapped phase by homodyne filtering in k-space.

    The complex image ``z = |S| exp(i phi)`` is divided by its low-pass version ``z_lp``
    (k-space multiplied by a Hanning window) and the angle kept:
    ``phi_hp = angle(z * conj(z_lp))``. This works on wrapped phase. The image is zero-padded
    before the FFT so the low-pass does not wrap around the field of view.

    Parameters
    ----------
    magnitude : numpy.ndarray or None
        Magnitude (3D or 4D, same shape as ``phase``); None for unit magnitude.
    phase : numpy.ndarray
        Wrapped phase in radians, 3D or 4D ``(x, y, z, echo)`` (echoes filtered separately).
    voxel_size_mm : sequence of 3 float, optional
        Voxel sizes in mm (needed for ``window_mm``).
    window : float
        Full width of the Hanning window in k-space samples *at a 256 matrix*; per axis it is
        scaled to ``window * n / 256`` samples (the same fraction of k-space, hence the same
        filter relative to the resolution). 32 (weak) to 64 (strong) are usual.
    window_mm : float, optional
        Instead of ``window``: the spatial scale in mm of the low-pass; the window spans
        ``FOV_mm / window_mm`` k-space samples per axis (FOV = n * voxel size).
    mode : {"2d", "3d"}
        ``"2d"``: low-pass in-plane per slice (the two axes other than ``slice_axis``);
        ``"3d"``: over all three axes.
    slice_axis : int
        Slice axis for ``"2d"`` (see :func:`slice_axis_from_affine`).

    Returns
    -------
    numpy.ndarray of float32
        High-pass filtered phase, radians in (-pi, pi], same shape as ``phase``.
    """
    ph = np.asarray(phase)
    if ph.ndim == 4:
        mags = [None] * ph.shape[3] if magnitude is None else [magnitude[..., e]
                                                                for e in range(ph.shape[3])]
        return np.stack([homodyne_highpass(mags[e], ph[..., e], voxel_size_mm, window,
                                           window_mm, mode, slice_axis)
                         for e in range(ph.shape[3])], axis=3)
    if ph.ndim != 3:
        raise ValueError(f"phase must be 3D or 4D, got {ph.shape}")
    z = _complex(magnitude, ph)
    vox = _voxel_sizes(voxel_size_mm)
    axes = [a for a in range(3) if a != slice_axis] if mode == "2d" else [0, 1, 2]
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' or '3d', got {mode!r}")
    pad = [(0, 0)] * 3
    padded_n = {}
    for a in axes:
        n = z.shape[a]
        if window_mm is not None:
            width = n * vox[a] / float(window_mm)
        else:
            width = float(window) * n / 256.0
        width = float(np.clip(width, 2.0, n))
        # spatial kernel of the Hanning window reaches ~2 n / width voxels
        p = int(min(n, math.ceil(2.0 * n / width) + 1))
        n_pad = sfft.next_fast_len(n + 2 * p)
        before = (n_pad - n) // 2
        pad[a] = (before, n_pad - n - before)
        padded_n[a] = (n_pad, width * n_pad / n)
    zp = np.pad(z, pad)
    k = sfft.fftn(zp, axes=axes, workers=-1)
    for a in axes:
        n_pad, width = padded_n[a]
        w = _hann_kspace(n_pad, width).astype(np.float32)
        shape = [1, 1, 1]
        shape[a] = n_pad
        k *= w.reshape(shape)
    lp = sfft.ifftn(k, axes=axes, workers=-1)
    sl = tuple(slice(pad[a][0], pad[a][0] + z.shape[a]) for a in range(3))
    lp = lp[sl]
    return np.angle(z * np.conj(lp)).astype(np.float32)


def gaussian_highpass(magnitude, phase, voxel_size_mm, sigma_mm=4.0, mode="2d", slice_axis=2):
    """High-pass filter wrapped phase with a Gaussian low-pass of the complex signal.

    ``phi_hp = angle(z * conj(G_sigma * z))`` with ``z = |S| exp(i phi)``, the Gaussian applied
    to real and imaginary parts (zero outside the field of view).

    Parameters
    ----------
    magnitude : numpy.ndarray or None
        Magnitude (same shape as ``phase``), None for unit magnitude.
    phase : numpy.ndarray
        Wrapped phase in radians, 3D or 4D (echoes filtered separately).
    voxel_size_mm : sequence of 3 float
        Voxel sizes in mm.
    sigma_mm : float
        Standard deviation of the Gaussian low-pass in mm.
    mode : {"2d", "3d"}
        In-plane only (``sigma = 0`` along ``slice_axis``) or 3D.
    slice_axis : int
        Slice axis for ``"2d"``.

    Returns
    -------
    numpy.ndarray of float32
        High-pass filtered phase, radians, same shape as ``phase``.
    """
    ph = np.asarray(phase)
    if ph.ndim == 4:
        return np.stack([gaussian_highpass(None if magnitude is None else magnitude[..., e],
                                           ph[..., e], voxel_size_mm, sigma_mm, mode,
                                           slice_axis) for e in range(ph.shape[3])], axis=3)
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' or '3d', got {mode!r}")
    z = _complex(magnitude, ph)
    vox = _voxel_sizes(voxel_size_mm)
    sig = [float(sigma_mm) / v for v in vox]
    if mode == "2d":
        sig[slice_axis] = 0.0
    lp_re = ndi.gaussian_filter(z.real, sig, mode="constant", truncate=3.0)
    lp_im = ndi.gaussian_filter(z.imag, sig, mode="constant", truncate=3.0)
    return np.angle(z * np.conj(lp_re + 1j * lp_im)).astype(np.float32)


def highpass_phase(magnitude, phase, voxel_size_mm, method="homodyne", window=32,
                   window_mm=None, sigma_mm=4.0, mode="2d", slice_axis=2):
    """High-pass filter wrapped phase: :func:`homodyne_highpass` or :func:`gaussian_highpass`.

    Parameters
    ----------
    magnitude, phase : numpy.ndarray
        Magnitude and wrapped phase (radians), 3D or 4D.
    voxel_size_mm : sequence of 3 float
        Voxel sizes in mm.
    method : {"homodyne", "gaussian"}
        Filter.
    window, window_mm : float
        Homodyne Hanning window (samples at a 256 matrix, or spatial scale in mm).
    sigma_mm : float
        Gaussian sigma in mm.
    mode : {"2d", "3d"}
        In-plane per slice or 3D.
    slice_axis : int
        Slice axis for ``"2d"``.

    Returns
    -------
    numpy.ndarray of float32
        Filtered phase in radians.
    """
    if method == "homodyne":
        return homodyne_highpass(magnitude, phase, voxel_size_mm, window, window_mm, mode,
                                 slice_axis)
    if method == "gaussian":
        return gaussian_highpass(magnitude, phase, voxel_size_mm, sigma_mm, mode, slice_axis)
    raise ValueError(f"unknown high-pass method {method!r}")


# --------------------------------------------------------------------------------------------
# 4. SWI
# --------------------------------------------------------------------------------------------

def phase_mask(filtered_phase, phase_sign=+1, kind="paramagnetic"):
    """Linear SWI phase mask (Haacke 2004), before raising to a power.

    With ``psi = phase_sign * phi`` (positive = increased field, the paramagnetic sign):
    ``mask = 1`` where ``psi <= 0`` and ``mask = 1 - psi / pi`` for ``0 < psi < pi``, 0 at
    ``psi >= pi``. For ``phase_sign = -1`` this is Haacke's negative phase mask (1 for
    positive phase, linearly to 0 at ``phi = -pi``).

    Parameters
    ----------
    filtered_phase : numpy.ndarray
        High-pass filtered phase in radians (values beyond +-pi are clipped).
    phase_sign : {+1, -1}
        Phase convention of the data (see module docstring).
    kind : {"paramagnetic", "symmetric"}
        ``"paramagnetic"``: the classic one-sided mask above. ``"symmetric"``:
        ``1 - |phi| / pi``, attenuating both signs (veins perpendicular to B0 have a negative
        field inside, so a one-sided mask does not darken them; the sign is then irrelevant).

    Returns
    -------
    numpy.ndarray of float32
        Mask in [0, 1].
    """
    if phase_sign not in (1, -1):
        raise ValueError(f"phase_sign must be +1 or -1, got {phase_sign!r}")
    psi = phase_sign * np.asarray(filtered_phase, dtype=np.float32)
    if kind == "symmetric":
        psi = np.abs(psi)
    elif kind != "paramagnetic":
        raise ValueError(f"unknown phase mask kind {kind!r}")
    return np.clip(1.0 - psi / np.float32(_PI), 0.0, 1.0).astype(np.float32)


def swi(magnitude, filtered_phase, phase_sign=+1, power=4, kind="paramagnetic"):
    """Susceptibility-weighted image ``magnitude * phase_mask ** power``.

    Parameters
    ----------
    magnitude : numpy.ndarray
        Magnitude (3D, combined if multi-echo).
    filtered_phase : numpy.ndarray
        High-pass filtered phase in radians, same shape.
    phase_sign : {+1, -1}
        Phase convention (see module docstring).
    power : float
        Number of multiplications by the mask (4 by default, Haacke 2004).
    kind : {"paramagnetic", "symmetric"}
        Mask type (see :func:`phase_mask`).

    Returns
    -------
    numpy.ndarray of float32
        SWI, same units as the magnitude.
    """
    m = np.asarray(magnitude, dtype=np.float32)
    mask = phase_mask(filtered_phase, phase_sign, kind)
    if mask.shape != m.shape:
        raise ValueError(f"magnitude {m.shape} and phase {mask.shape} differ")
    return (m * mask ** np.float32(power)).astype(np.float32)


def minimum_intensity_projection(volume, affine=None, slab_mm=8.0, voxel_size_mm=None,
                                 axis=None):
    """Sliding-window minimum intensity projection (mIP) for review.

    Each slice of the output is the minimum over the slices within a slab of about
    ``slab_mm`` centred on it, along the slice axis (the array axis closest to world superior
    when ``axis`` is None).

    Parameters
    ----------
    volume : numpy.ndarray
        3D image (e.g. SWI).
    affine : (4, 4) array_like, optional
        NIfTI affine (for the axis and its voxel size).
    slab_mm : float
        Slab thickness in mm; the window is the odd number of slices nearest to
        ``slab_mm / slice thickness`` (at least 1).
    voxel_size_mm : sequence of 3 float, optional
        Voxel sizes (mm) if no affine.
    axis : int, optional
        Projection axis (default: from the affine, else 2).

    Returns
    -------
    numpy.ndarray of float32
        mIP volume, same shape as ``volume``.
    """
    v = np.asarray(volume, dtype=np.float32)
    if axis is None:
        axis = slice_axis_from_affine(affine) if affine is not None else 2
    vox = _voxel_sizes(voxel_size_mm, affine)
    n = max(1, int(round(float(slab_mm) / vox[axis])))
    if n % 2 == 0:
        n += 1
    return ndi.minimum_filter1d(v, size=n, axis=axis, mode="nearest")


# --------------------------------------------------------------------------------------------
# 5./6. Dipole sign of a compact source and handedness from veins
# --------------------------------------------------------------------------------------------

def _unit(v):
    v = np.asarray(v, dtype=np.float64).ravel()
    return v / max(np.linalg.norm(v), 1e-12)


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
    if ph.shape != mag.shape or ph.ndim != 3:
        raise ValueError(f"phase {ph.shape} and magnitude {mag.shape} must be the same 3D shape")
    if phase_sign not in (1, -1):
        raise ValueError(f"phase_sign must be +1 or -1, got {phase_sign!r}")
    vox = _voxel_sizes(voxel_size_mm)
    A = np.asarray(affine, dtype=np.float64)[:3, :3]
    b0 = _unit(b0_dir_world)
    a = max(float(radius_mm), 0.5 * float(vox.min()))
    r_out = max(outer_factor * a, a + 3.0 * float(vox.max()))
    c = np.asarray(centre_vox, dtype=np.float64).ravel()[:3]
    half = np.ceil(r_out / vox).astype(int) + 1
    lo = np.maximum(np.floor(c).astype(int) - half, 0)
    hi = np.minimum(np.floor(c).astype(int) + half + 1, np.array(ph.shape))
    if np.any(hi - lo < 3):
        return float("nan"), 0
    sl = tuple(slice(int(lo[d]), int(hi[d])) for d in range(3))
    P = ph[sl].astype(np.float64) * phase_sign
    M = mag[sl].astype(np.float64)
    grids = np.meshgrid(*[np.arange(lo[d], hi[d], dtype=np.float64) for d in range(3)],
                        indexing="ij")
    ijk = np.stack(grids, axis=-1)

    def geometry(centre):
        rel = (ijk - centre) @ A.T
        r = np.linalg.norm(rel, axis=-1)
        return rel, r

    rel, r = geometry(c)
    far = (r > 2.0 * a) & (r <= r_out)
    bg = float(np.median(M[far])) if far.sum() >= 5 else float(np.median(M))
    if not bg > 0:
        return float("nan"), 0
    if refine_centre:
        near = r <= 1.5 * a
        dark = np.clip(1.0 - M / bg, 0.0, None) * near
        if dark.sum() > 0:
            c = (ijk * dark[..., None]).sum(axis=(0, 1, 2)) / dark.sum()
            rel, r = geometry(c)
    rel_b0 = rel @ b0
    with np.errstate(invalid="ignore", divide="ignore"):
        cos2 = np.where(r > 0, (rel_b0 / r) ** 2, 0.0)
        model = np.where(r > 0, (a / r) ** 3 * (3.0 * cos2 - 1.0), 0.0)
    w = np.clip(M / bg, 0.0, 1.0) ** 2
    use = (r > a) & (r <= r_out) & (w > 0.05) & np.isfinite(P)
    if use.sum() < 10:
        return float("nan"), 0
    sel = np.flatnonzero(use)
    if sel.size > max_voxels:  # large candidates: a deterministic random subset suffices
        sel = np.sort(np.random.default_rng(0).choice(sel, max_voxels, replace=False))
    m_u = model.ravel()[sel]
    # voxels inform about c in proportion to |m| (least-squares information ~ m^2)
    w_u = w.ravel()[sel] * np.abs(m_u)
    z_u = np.exp(1j * P.ravel()[sel])
    absm = np.abs(m_u)
    big = float(np.max(absm))
    med = float(np.median(absm[absm > 0])) if np.any(absm > 0) else 0.0
    if big <= 0 or med <= 0:
        return float("nan"), 0
    cs = np.geomspace(0.02 / big, 3.0 * _PI / med, 72)
    # coherence for +c and -c: |sum w z exp(-i c m)|
    wz = w_u * z_u
    pos_c = np.zeros(cs.size, complex)
    neg_c = np.zeros(cs.size, complex)
    for start in range(0, m_u.size, 8192):  # chunks bound the memory for large candidates
        E = np.exp(-1j * np.outer(cs, m_u[start:start + 8192]))
        pos_c += E @ wz[start:start + 8192]
        neg_c += np.conj(E) @ wz[start:start + 8192]
    pos, neg = np.abs(pos_c), np.abs(neg_c)
    sw = float(w_u.sum())
    score = float((pos.max() - neg.max()) / sw)
    # significance: coherence fluctuations of random phases are of order
    # sqrt(sum w^2) / sum w, scaled by the residual dispersion sqrt(1 - f_best^2)
    f_best = float(max(pos.max(), neg.max()) / sw)
    noise = float(np.sqrt(np.sum(w_u**2)) / sw) * math.sqrt(max(1.0 - f_best**2, 1e-4))
    z = score / noise
    if return_z:
        return score, z, f_best
    decided = abs(score) >= min_score and abs(z) >= min_z
    sign = 0 if not decided else (1 if score > 0 else -1)
    return score, sign


def _hessian_world_at(image, idx, vox, A, sigma_mm):
    """Hessian (world mm) of the Gaussian-smoothed image at voxels ``idx``, shape (N, 3, 3).

    One derivative volume at a time is held in memory.
    """
    sig = [sigma_mm / v for v in vox]
    Hv = np.empty((idx[0].size, 3, 3), dtype=np.float32)
    img = np.asarray(image, dtype=np.float32)
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            d = ndi.gaussian_filter(img, sig, order=order, mode="nearest", truncate=4.0)[idx]
            Hv[:, i, j] = d
            Hv[:, j, i] = d
    Ainv = np.linalg.inv(A).astype(np.float32)
    # world = A ijk + t  =>  H_world = A^-T H_vox A^-1
    return np.einsum("ka,nkl,lb->nab", Ainv, Hv, Ainv)


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
       vein direction. Dark voxels that are tube-like are grouped into connected segments.
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
       ``moderate``, >= 3 with >= 75 % ``low``. They decide when the vein evidence is weak,
       lower the confidence when they contradict it, and raise two agreeing weak lines of
       evidence to ``moderate``.

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
        ``vessel_voxels``, ``vessel_units``, ``vessel_agreement`` (weighted fraction of
        segments agreeing), ``vessel_p`` (sign test), ``vessel_statistic``, ``foci``,
        ``foci_agreement``, ``note``.
    """
    from scipy.stats import wilcoxon

    ph = np.asarray(filtered_phase, dtype=np.float32)
    mag = np.asarray(magnitude, dtype=np.float32)
    if ph.shape != mag.shape or ph.ndim != 3:
        raise ValueError(f"phase {ph.shape} and magnitude {mag.shape} must be the same 3D shape")
    A = np.asarray(affine, dtype=np.float64)[:3, :3]
    vox = np.linalg.norm(A, axis=0)
    b0 = _unit(b0_dir_world)
    if sigma_mm is None:
        sigma_mm = max(0.7, float(vox.min()))
    if mask is None:
        mask = ndi.binary_fill_holes(mag > 0.1 * np.percentile(mag, 99))
    mask = np.asarray(mask, bool)
    ev = {"confidence": "none", "method": "default", "vessel_voxels": 0, "vessel_units": 0,
          "vessel_agreement": None, "vessel_p": None, "vessel_statistic": None, "foci": 0,
          "foci_agreement": None, "note": ""}
    if mask.sum() < 100:
        ev["note"] = "too few brain voxels"
        return int(default), ev

    local = ndi.gaussian_filter(mag * mask, [4.0 / v for v in vox], mode="nearest")
    norm = ndi.gaussian_filter(mask.astype(np.float32), [4.0 / v for v in vox], mode="nearest")
    rel = np.divide(mag, local / np.maximum(norm, 1e-6), out=np.ones_like(mag),
                    where=local > 0)
    thr = np.percentile(rel[mask], dark_percentile)
    dark = mask & (rel < thr)
    idx = np.nonzero(dark)
    if idx[0].size < 20:
        ev["note"] = "too few dark voxels"
        return int(default), ev

    Hw = _hessian_world_at(mag, idx, vox, A, sigma_mm)
    n_dark = Hw.shape[0]
    lam_s = np.empty((n_dark, 3), np.float32)
    axis_vec = np.empty((n_dark, 3), np.float32)
    for start in range(0, n_dark, 500_000):  # chunks bound eigh's temporaries
        lam, vec = np.linalg.eigh(Hw[start:start + 500_000])
        order = np.argsort(np.abs(lam), axis=1)
        lam_s[start:start + 500_000] = np.take_along_axis(lam, order, axis=1)
        axis_vec[start:start + 500_000] = np.take_along_axis(vec, order[:, None, :1],
                                                              axis=2)[:, :, 0]
    del Hw
    small, midl, large = lam_s[:, 0], lam_s[:, 1], lam_s[:, 2]  # by |lambda|
    scale = np.percentile(np.abs(large), 90) + 1e-12
    tube = (midl > 0) & (large > 0) & (np.abs(small) < 0.5 * midl) & (midl > 0.1 * scale)

    # ---- veins
    n_tube = int(tube.sum())
    ev["vessel_voxels"] = n_tube
    vessel_sign, vessel_conf, vessel_stat = 0, "none", 0.0
    if n_tube >= 10:
        cosb = axis_vec[tube] @ b0
        g = 3.0 * cosb**2 - 1.0
        v = midl[tube] * (1.0 - np.abs(small[tube]) / midl[tube])
        x = ph[idx][tube] * g
        vessel_stat = float(np.sum(v * x) / np.sum(v))
        # units: blocks of block_mm in world space (veins cross and connect, so connected
        # components are not independent units; blocks also split long veins)
        pts = np.stack([i[tube] for i in idx], axis=1).astype(np.float64) @ A.T
        blk = np.floor(pts / float(block_mm)).astype(np.int64)
        _, seg = np.unique(blk, axis=0, return_inverse=True)
        seg = seg.ravel() + 1
        nlab = int(seg.max())
        seg_sum = np.bincount(seg, weights=v * x, minlength=nlab + 1)[1:]
        seg_w = np.bincount(seg, weights=v * np.abs(x), minlength=nlab + 1)[1:]
        vox_per_seg = np.bincount(seg, minlength=nlab + 1)[1:]
        keep = (seg_w > 0) & (vox_per_seg >= 3)
        seg_sum, seg_w = seg_sum[keep], seg_w[keep]
        nseg = int(keep.sum())
        ev["vessel_units"] = nseg
        ev["vessel_statistic"] = round(vessel_stat, 6)
        if nseg > 0 and vessel_stat != 0:
            vessel_sign = 1 if vessel_stat > 0 else -1
            agree = np.sign(seg_sum) == vessel_sign
            ev["vessel_agreement"] = round(float(seg_w[agree].sum() / seg_w.sum()), 4)
            # Wilcoxon signed-rank test over segments (segments are the independent units;
            # ranks keep one large vein from dominating)
            if nseg >= 2 and np.any(seg_sum != 0):
                p = float(wilcoxon(seg_sum[seg_sum != 0]).pvalue)
            else:
                p = 1.0
            ev["vessel_p"] = float(f"{p:.3g}")
            # units are spatially correlated (one vein, residual background), so p is
            # anti-conservative: thresholds calibrated on phantoms with dark veins without
            # susceptibility (p >= 4e-4, agreement <= 0.69 there)
            if p < 1e-6 and nseg >= 8 and ev["vessel_agreement"] >= 0.72:
                vessel_conf = "high"
            elif p < 1e-4 and ev["vessel_agreement"] >= 0.65:
                vessel_conf = "moderate"
            elif p < 0.01:
                vessel_conf = "low"

    # ---- compact dark foci (assumed paramagnetic): small, round dark components
    foci_votes = []
    dlab, nd = ndi.label(dark & (rel < focus_rel), structure=np.ones((3, 3, 3)))
    if nd:
        voxvol = float(np.prod(vox))
        sizes = np.bincount(dlab.ravel(), minlength=nd + 1)[1:]
        ok = (sizes >= 2) & (sizes * voxvol <= max_focus_mm3)
        cand = np.nonzero(ok)[0] + 1
        if cand.size:
            darkness = ndi.mean(rel, dlab, index=cand)
            objs = ndi.find_objects(dlab)
            for lab_id in cand[np.argsort(darkness)][: 4 * max_foci]:
                if len(foci_votes) >= max_foci:
                    break
                sl = objs[lab_id - 1]
                sub = dlab[sl] == lab_id
                pts = np.argwhere(sub) + np.array([s_.start for s_ in sl])
                world = pts @ A.T
                if len(pts) >= 4:
                    ev_ = np.linalg.eigvalsh(np.cov(world.T) + 1e-6 * np.eye(3))
                    if ev_[-1] > 9.0 * max(ev_[0], (0.3 * vox.min()) ** 2):
                        continue  # elongated: not a compact focus
                centre = pts.mean(axis=0)
                radius = max((3.0 * len(pts) * voxvol / (4.0 * _PI)) ** (1 / 3),
                             float(vox.min()))
                _, sg = source_susceptibility_sign(ph, mag, centre, radius, vox, affine,
                                                   b0_dir_world, +1)
                if sg != 0:
                    foci_votes.append(sg)
    ev["foci"] = len(foci_votes)
    foci_sign = 0
    if foci_votes:
        mean_vote = float(np.mean(foci_votes))
        foci_sign = 1 if mean_vote > 0 else (-1 if mean_vote < 0 else 0)
        if foci_sign:
            ev["foci_agreement"] = round(float(np.mean(np.array(foci_votes) == foci_sign)), 4)

    n_foci = len(foci_votes)
    foci_conf = "none"
    if foci_sign and n_foci >= 5 and ev["foci_agreement"] >= 0.8:
        foci_conf = "moderate"
    elif foci_sign and n_foci >= 3 and ev["foci_agreement"] >= 0.75:
        foci_conf = "low"
    if vessel_conf in ("high", "moderate"):
        sign, ev["confidence"], ev["method"] = vessel_sign, vessel_conf, "vein orientation"
        if foci_sign and foci_sign != vessel_sign and n_foci >= 3:
            ev["note"] = "compact foci disagree with the veins"
            ev["confidence"] = "moderate" if vessel_conf == "high" else "low"
        elif foci_conf != "none" and foci_sign == vessel_sign:
            ev["method"] = "vein orientation and dipole of compact foci"
    elif foci_conf != "none" and (vessel_conf == "none" or vessel_sign in (0, foci_sign)):
        # veins without significant evidence (p >= 0.1) do not veto the compact foci
        sign, ev["method"] = foci_sign, "dipole of compact foci"
        ev["confidence"] = foci_conf
        if vessel_conf == "low":  # two weak, independent, agreeing lines of evidence
            ev["confidence"] = "moderate"
            ev["method"] = "vein orientation and dipole of compact foci"
    elif vessel_sign and vessel_conf == "low" and not (foci_conf != "none"
                                                        and foci_sign != vessel_sign):
        sign, ev["confidence"], ev["method"] = vessel_sign, "low", "vein orientation"
    else:
        sign = int(default)
        ev["note"] = (ev["note"] + "; " if ev["note"] else "") + (
            "veins and compact foci disagree" if vessel_sign and foci_sign
            and vessel_sign != foci_sign else "insufficient evidence"
        ) + f"; default sign {int(default):+d} used"
    ev["sign"] = int(sign)
    return int(sign), ev


# --------------------------------------------------------------------------------------------
# Convenience: the whole phase branch
# --------------------------------------------------------------------------------------------

@dataclass
class SWIResult:
    """Output of :func:`compute_swi`.

    Attributes
    ----------
    swi : numpy.ndarray of float32
        ``magnitude * phase_mask ** power`` (3D).
    magnitude : numpy.ndarray of float32
        Combined magnitude (3D).
    filtered_phase : numpy.ndarray of float32
        High-pass filtered (combined) phase in radians at ``reference_te_ms`` (3D).
    frequency_hz : numpy.ndarray of float32 or None
        Local frequency in Hz in the data's own sign (None without echo times).
    phase_sign : int
        Convention used (+1 / -1, see module docstring).
    sign_evidence : dict
        Evidence from :func:`estimate_phase_sign` or ``{"method": "forced"}``.
    mip : numpy.ndarray of float32 or None
        Sliding-window minimum intensity projection of the SWI.
    parameters : dict
        Parameters used (JSON-serialisable), for ``summary.json``.
    """

    swi: np.ndarray
    magnitude: np.ndarray
    filtered_phase: np.ndarray
    frequency_hz: np.ndarray | None
    phase_sign: int
    sign_evidence: dict
    mip: np.ndarray | None = None
    parameters: dict = field(default_factory=dict)

    def summary(self, how=None):
        """JSON-serialisable ``"phase"`` entry for ``summary.json``.

        Parameters
        ----------
        how : str, optional
            The scaling text from :func:`load_phase`.

        Returns
        -------
        dict
            ``{"scaling", "phase_sign", "sign_evidence", "parameters"}``.
        """
        return {"scaling": how, "phase_sign": int(self.phase_sign),
                "sign_evidence": dict(self.sign_evidence), "parameters": dict(self.parameters)}


def compute_swi(magnitude, phase, affine, echo_times_ms=None, phase_sign=None,
                method="homodyne", window=32, window_mm=None, sigma_mm=4.0, mode="2d",
                power=4, reference_te_ms=None, mask=None, mip_slab_mm=None,
                b0_dir_world=(0, 0, 1), mask_kind="paramagnetic"):
    """Run the phase branch: high-pass, echo combination, handedness, SWI (and mIP).

    Parameters
    ----------
    magnitude, phase : numpy.ndarray
        Magnitude and phase in radians (see :func:`load_phase`), 3D or 4D ``(x, y, z, echo)``.
    affine : (4, 4) array_like
        NIfTI affine.
    echo_times_ms : sequence of float, optional
        Echo times in ms; required for more than one echo.
    phase_sign : {+1, -1, None}
        Force the convention; None estimates it (:func:`estimate_phase_sign`).
    method, window, window_mm, sigma_mm, mode
        High-pass filter (see :func:`highpass_phase`); the in-plane axes are those other than
        the axis closest to world superior.
    power : float
        SWI mask power.
    reference_te_ms : float, optional
        TE (ms) at which the combined phase is expressed (default: longest echo).
    mask : numpy.ndarray of bool, optional
        Brain mask for the handedness estimate.
    mip_slab_mm : float, optional
        If given, also compute the sliding-window mIP with this slab (mm).
    b0_dir_world : sequence of 3 float
        B0 direction in world coordinates.
    mask_kind : {"paramagnetic", "symmetric"}
        Phase mask type (see :func:`phase_mask`).

    Returns
    -------
    SWIResult
    """
    mag = np.asarray(magnitude, dtype=np.float32)
    ph = np.asarray(phase, dtype=np.float32)
    if mag.shape != ph.shape:
        raise ValueError(f"magnitude {mag.shape} and phase {ph.shape} differ")
    n_echo = mag.shape[3] if mag.ndim == 4 else 1
    if n_echo > 1 and echo_times_ms is None:
        raise ValueError("echo times are needed to combine several echoes")
    vox = _voxel_sizes(None, affine)
    sax = slice_axis_from_affine(affine)
    hp = highpass_phase(mag, ph, vox, method, window, window_mm, sigma_mm, mode, sax)
    freq = None
    if n_echo > 1:
        te = _te_array(echo_times_ms, n_echo)
        ref = float(te.max()) if reference_te_ms is None else float(reference_te_ms)
        omega, _ = _omega(hp, mag, te)
        filt = (omega * np.float32(ref)).astype(np.float32)
        freq = (omega * np.float32(1000.0 / (2 * _PI))).astype(np.float32)
        del omega
        cmag = combine_magnitudes(mag, te, "t2star")
    else:
        mag3 = mag[..., 0] if mag.ndim == 4 else mag
        filt = hp[..., 0] if hp.ndim == 4 else hp
        cmag = mag3
        ref = None
        if echo_times_ms is not None:
            ref = float(np.ravel(echo_times_ms)[0])
            freq = (filt / (2 * _PI * ref / 1000.0)).astype(np.float32)
    if phase_sign is None:
        # the vein physics holds for the 3D field: estimate on 3D homodyne-filtered phase
        hp3 = hp if mode == "3d" and method == "homodyne" else highpass_phase(
            mag, ph, vox, "homodyne", window, window_mm, sigma_mm, "3d", sax)
        if n_echo > 1:
            filt3 = combine_phases(hp3, mag, te, ref, "radians")
        else:
            filt3 = hp3[..., 0] if hp3.ndim == 4 else hp3
        sign, ev = estimate_phase_sign(filt3, cmag, affine, mask, b0_dir_world)
    else:
        if phase_sign not in (1, -1):
            raise ValueError(f"phase_sign must be +1 or -1, got {phase_sign!r}")
        sign, ev = int(phase_sign), {"method": "forced", "confidence": "forced",
                                     "sign": int(phase_sign)}
    out = swi(cmag, filt, sign, power, mask_kind)
    mip = None
    if mip_slab_mm is not None:
        mip = minimum_intensity_projection(out, affine, mip_slab_mm)
    params = {"highpass": method, "window": window, "window_mm": window_mm,
              "sigma_mm": sigma_mm if method == "gaussian" else None, "mode": mode,
              "slice_axis": sax, "power": power, "reference_te_ms": ref,
              "echo_times_ms": None if echo_times_ms is None else
              [float(t) for t in np.ravel(echo_times_ms)],
              "magnitude_combination": "t2star" if n_echo > 1 else None,
              "phase_combination": "weighted LS, |S|^2, temporal unwrap" if n_echo > 1 else None,
              "phase_sign": sign, "mask_kind": mask_kind, "mip_slab_mm": mip_slab_mm}
    return SWIResult(out, cmag, filt, freq, sign, ev, mip, params)
