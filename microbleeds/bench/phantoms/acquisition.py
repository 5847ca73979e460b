"""What the scanner's acquisition does to the object's signal, for the phantom: partial k-space
with zero filling (Gibbs ringing) and the vendor's apodisation, motion ghosts along the
phase-encode axis, 2D multi-slice with gaps (sub-slice grid, averaged over each slice's
thickness), and the vendor's phase sign convention.

Applied to the noise-free complex signal of the acquisition grid (the noise stays white, so the
phantom's ``snr`` keeps its meaning); in-plane axes are the grid's first two.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft as sfft

from .lesions import STREAM_ACQ, feature_rng

FILTERS = ("none", "hamming", "fermi")
FERMI_WIDTH = 0.05
"""Transition width of the Fermi filter, as a fraction of the kept k-space half-width."""
GHOST_PERIODS_LINES = (6.0, 14.0)
"""Period of the motion, in phase-encode lines (pulsation / breathing over the acquisition)."""


def check(params):
    """ValueError for acquisition parameters out of range."""
    kf = tuple(float(v) for v in params.kspace_fraction)
    if len(kf) != 2 or min(kf) <= 0.0 or max(kf) > 1.0:
        raise ValueError(f"kspace_fraction must be two values in (0, 1], got {params.kspace_fraction!r}")
    if params.kspace_filter not in FILTERS:
        raise ValueError(f"kspace_filter must be one of {FILTERS}, got {params.kspace_filter!r}")
    if params.phase_encode_axis not in (0, 1):
        raise ValueError("phase_encode_axis must be 0 or 1")
    if params.phase_sign not in (-1, 1):
        raise ValueError("phase_sign must be -1 or +1")
    if params.slice_gap_mm < 0 or params.ghost_amplitude_mm < 0:
        raise ValueError("slice_gap_mm and ghost_amplitude_mm must be >= 0")


def active(params):
    """True if the k-space step changes anything."""
    return (tuple(float(v) for v in params.kspace_fraction) != (1.0, 1.0)
            or params.kspace_filter != "none" or params.ghost_amplitude_mm > 0)


def kspace(signal, voxel_mm, params):
    """The acquisition-grid complex ``signal`` (in place) through the scanner's k-space: lines
    acquired with the motion of their time (ghosts), truncated to ``kspace_fraction`` and
    apodised by ``kspace_filter``, zero-filled back to the grid."""
    if not active(params):
        return signal
    rng = feature_rng(params.seed, STREAM_ACQ)
    n0, n1 = signal.shape[:2]
    k0 = sfft.fftfreq(n0, d=float(voxel_mm[0]))  # cycles / mm
    k1 = sfft.fftfreq(n1, d=float(voxel_mm[1]))
    window = np.outer(_window(n0, float(params.kspace_fraction[0]), params.kspace_filter),
                      _window(n1, float(params.kspace_fraction[1]), params.kspace_filter))
    spec = sfft.fft2(signal, axes=(0, 1), workers=-1)
    if params.ghost_amplitude_mm > 0:
        pe = int(params.phase_encode_axis)
        n_pe = (n0, n1)[pe]
        order = np.arange(n_pe)  # lines acquired in index order (sequential phase encoding)
        period = rng.uniform(*GHOST_PERIODS_LINES)
        phase0 = rng.uniform(0, 2 * np.pi)
        amp = float(params.ghost_amplitude_mm)
        t = order.astype(np.float64)
        shift_pe = amp * np.sin(2 * np.pi * t / period + phase0)
        shift_ro = 0.5 * amp * np.sin(2 * np.pi * t / (1.7 * period) + 2 * phase0)
        kp, kr = (k0, k1) if pe == 0 else (k1, k0)
        # line l (index along the PE axis) sees the object shifted by (shift_pe, shift_ro)
        ramp = np.exp(-2j * np.pi * (kp[:, None] * shift_pe[:, None] + kr[None, :] * shift_ro[:, None]))
        ramp = ramp if pe == 0 else ramp.T
        window = window * ramp
    spec *= window[:, :, None].astype(np.complex64)
    signal[...] = sfft.ifft2(spec, axes=(0, 1), workers=-1).astype(signal.dtype)
    return signal


def _window(n, fraction, kind):
    """1D k-space weights of ``n`` points (FFT order): 1 inside the acquired ``fraction`` (apodised
    by ``kind``), 0 beyond (zero filled)."""
    k = np.abs(sfft.fftfreq(n)) * 2.0  # 0 at the centre, 1 at Nyquist
    inside = k <= fraction + 1e-12
    x = k / fraction
    if kind == "hamming":
        w = 0.54 + 0.46 * np.cos(np.pi * np.clip(x, 0, 1))
    elif kind == "fermi":
        w = 1.0 / (1.0 + np.exp((x - 1.0 + 4 * FERMI_WIDTH) / FERMI_WIDTH))
    else:
        w = np.ones(n)
    return np.where(inside, w, 0.0)


# --------------------------------------------------------------------------------------------
# 2D multi-slice with gaps
@dataclasses.dataclass(frozen=True)
class SliceSampling:
    """Sub-slices of a gapped 2D acquisition: ``per_slice`` sub-slices every slice spacing, the
    first ``imaged`` of them inside the slice's thickness."""

    params: object      # parameters of the sub-slice grid
    per_slice: int
    imaged: int


def slice_sampling(params, grid, max_sub_mm=1.25):
    """The sub-slice sampling of a gapped acquisition (``params.slice_gap_mm`` > 0), else None.

    The slices of ``grid`` (thickness ``voxel_size_mm[2]``, spacing thickness + gap: the affine's)
    are cut into sub-slices of at most ``max_sub_mm`` that tile both the slice and the gap."""
    gap = float(params.slice_gap_mm)
    if gap <= 0:
        return None
    thick = float(params.voxel_size_mm[2])
    spacing = thick + gap
    for m in range(1, 64):
        n = thick / spacing * m
        if abs(n - round(n)) < 1e-6 and spacing / m <= max_sub_mm and round(n) >= 1:
            break
    else:
        raise ValueError(f"slice thickness {thick} mm and gap {gap} mm have no common sub-slice")
    sub = spacing / m
    k_axis = grid.rot[:, 2]
    centre = np.asarray(params.centre_mm, dtype=np.float64) + 0.5 * gap * k_axis
    vx, vy = params.voxel_size_mm[:2]
    fx, fy = params.fov_mm[:2]
    sub_params = dataclasses.replace(params, voxel_size_mm=(vx, vy, sub),
                                     fov_mm=(fx, fy, grid.shape[2] * spacing),
                                     centre_mm=tuple(float(v) for v in centre), slice_gap_mm=0.0)
    return SliceSampling(params=sub_params, per_slice=m, imaged=int(round(n)))


def spaced_params(params):
    """The parameters of the final grid of a gapped acquisition: voxel z = the slice spacing."""
    vx, vy, vz = params.voxel_size_mm
    return dataclasses.replace(params, voxel_size_mm=(vx, vy, float(vz) + float(params.slice_gap_mm)))


def collapse(array, sampling, how="mean"):
    """Sub-slice array (I, J, K * m) to slices (I, J, K): mean (signal, fractions) or max
    (labels) over each slice's imaged sub-slices."""
    i, j, km = array.shape
    m = sampling.per_slice
    view = array.reshape(i, j, km // m, m)[..., : sampling.imaged]
    if how == "max":
        return np.ascontiguousarray(view.max(axis=-1))
    return np.ascontiguousarray(view.mean(axis=-1).astype(array.dtype))
