"""Phase branch of the detector: multi-echo combination, high-pass filtering of the wrapped phase,
the susceptibility-weighted image (SWI) and its minimum intensity projection (mIP).

:func:`phase_branch` is the stage: it reads the phase (scaling to radians in
:mod:`microbleeds.io.phase_file`, echo times from the sidecar in :mod:`microbleeds.io.sidecar`),
brings it to the canonical grid and runs :func:`compute_swi`: :func:`highpass_phase` per echo,
:func:`combine_phases` / :func:`combine_magnitudes` over the echoes, the phase convention (forced,
or estimated from the veins and compact foci by
:func:`microbleeds.stages.dipole_sign.estimate_phase_sign`) and :func:`swi`. All other functions
are pure, on numpy arrays plus affine / voxel sizes.

``phase_sign`` is the convention of the stored phase: ``+1`` when it increases with the local
field (``phase = +gamma * dB * TE``), ``-1`` when it decreases (Haacke's "right-handed" systems,
veins with negative phase). The convention, the field of spheres and cylinders and how the sign is
estimated are described in :mod:`microbleeds.stages.dipole_sign`. Veins perpendicular to B0 have a
*negative* field inside, so a one-sided (paramagnetic) SWI mask does not darken them;
``kind="symmetric"`` in :func:`phase_mask` darkens both.

Units: phase in radians, echo times in ms, frequencies in Hz, field offsets in ppm of B0,
lengths in mm, widths of k-space windows in samples unless named ``*_mm``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import nibabel as nib
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic
from scipy import fft as sfft
from scipy import ndimage as ndi

from ..contract import FILTERED_PHASE_FILE, GAMMA_BAR_HZ_PER_T, SWI_FILE
from ..errors import InputError
from ..io.nifti import native_view, to_canonical, voxel_sizes
from ..io.phase_file import load_phase, wrap_phase
from ..io.sidecar import read_echo_times
from .atan2f import atan2f_array
from .dipole_sign import estimate_phase_sign, with_vendor_prior
from .sincosf import sincosf_array

_PI = math.pi
_HZ_PER_RAD_PER_MS = 1000.0 / (2 * _PI)  # angular frequency (radians / ms) -> frequency (Hz)

# Homodyne window widths are given in k-space samples at a 256 matrix (the same fraction of
# k-space at any matrix size); a window is at least 2 samples wide.
WINDOW_REFERENCE_MATRIX = 256.0
MIN_WINDOW_SAMPLES = 2.0

__all__ = [
    "combine_magnitudes",
    "combine_phases",
    "homodyne_highpass",
    "gaussian_highpass",
    "highpass_phase",
    "phase_mask",
    "swi",
    "minimum_intensity_projection",
    "slice_axis_from_affine",
    "frequency_to_ppm",
    "compute_swi",
    "SWIResult",
    "phase_branch",
]


# --------------------------------------------------------------------------------------------
# Echo times and multi-echo combination
# --------------------------------------------------------------------------------------------

def _te_array(echo_times_ms, n):
    """Echo times (ms) as a float64 vector of ``n`` positive values."""
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
        return (omega * np.float32(_HZ_PER_RAD_PER_MS)).astype(np.float32)
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
# High-pass filtering of wrapped phase (on the complex signal)
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


def _complex(magnitude, phase):
    """Complex64 image ``|S| exp(i phi)`` (unit magnitude if None)."""
    ph = np.asarray(phase, dtype=np.float32)
    if magnitude is None:
        return np.exp(1j * ph).astype(np.complex64)
    mag = np.asarray(magnitude, dtype=np.float32)
    if mag.shape != ph.shape:
        raise ValueError(f"magnitude {mag.shape} and phase {ph.shape} differ")
    if ph.ndim != 3:
        return (mag * np.exp(1j * ph)).astype(np.complex64)
    return _polar_kernel(mag, ph)


@njit(["complex64[:, :, ::1](float32[:, :, :], float32[:, :, :])"], cache=True, parallel=True)
def _polar_kernel(mag, ph):
    """``mag * exp(1j * ph)`` as numpy computes it in complex64 (``1j * ph`` is complex64 for a
    float32 ``ph``): ``exp(0 + i p) = (cosf p, sinf p)`` (glibc's, :func:`sincosf_array`), times
    ``(mag, 0)`` by the complex product's formula, bit for bit; one pass, no complex temporaries."""
    out = np.empty(mag.shape, np.complex64)
    zero = np.float32(0.0)
    n2 = mag.shape[2]
    for i in prange(mag.shape[0]):
        row = np.empty(n2, np.float32)
        s = np.empty(n2, np.float32)
        c = np.empty(n2, np.float32)
        for j in range(mag.shape[1]):
            for k in range(n2):
                row[k] = ph[i, j, k]
            sincosf_array(row, s, c)
            for k in range(n2):
                m = mag[i, j, k]
                out[i, j, k] = complex(m * c[k] - zero * s[k], m * s[k] + zero * c[k])
    return out


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
    plan = _homodyne_plan(ph.shape, voxel_size_mm, window, window_mm, mode, slice_axis)
    return _homodyne_slabs(magnitude, ph, plan)


def _homodyne_plan(shape, voxel_size_mm, window, window_mm, mode, slice_axis):
    """The axes, zero-paddings ``(before, after)`` and k-space windows (FFT order, float32) of the
    homodyne low-pass of a 3D image of ``shape`` (see :func:`homodyne_highpass`)."""
    vox = voxel_sizes(voxel_size_mm)
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' or '3d', got {mode!r}")
    axes = [a for a in range(3) if a != slice_axis] if mode == "2d" else [0, 1, 2]
    pads, windows = [], []
    for a in axes:
        n = shape[a]
        if window_mm is not None:
            width = n * vox[a] / float(window_mm)
        else:
            width = float(window) * n / WINDOW_REFERENCE_MATRIX
        width = float(np.clip(width, MIN_WINDOW_SAMPLES, n))
        # spatial kernel of the Hanning window reaches ~2 n / width voxels
        p = int(min(n, math.ceil(2.0 * n / width) + 1))
        n_pad = sfft.next_fast_len(n + 2 * p)
        before = (n_pad - n) // 2
        pads.append((before, n_pad - n - before))
        windows.append(_hann_kspace(n_pad, width * n_pad / n).astype(np.float32))
    return axes, pads, windows


# numpy evaluates ``z * conj(lp)`` as ``conj(lp) *= z`` (temporary elision: the operands swapped,
# which rounds differently in complex64) for arrays of at least this many bytes (NPY_MIN_ELIDE_BYTES)
_ELIDE_BYTES = 256 * 1024


def _phase_difference(z, lp, elided=None, out=None):
    """``angle(z * conj(lp))`` (radians, float32): the phase of ``z`` relative to its low-pass.

    Not in place: ``lp`` is a strided view, and numpy's strided complex product rounds differently
    from its contiguous (SIMD) one, which the contiguous ``conj(lp)`` gets. ``elided``: the product
    as numpy evaluates the expression on an array of that many bytes or more (``conj(lp) * z``, see
    :data:`_ELIDE_BYTES`); default ``z``'s own size (a slab of a volume passes the volume's). A 3D
    complex64 ``z`` in C order (or with ``out``, a float32 array of its shape to fill) runs
    :func:`_phase_difference_kernel`: the same numbers in one pass."""
    elided = z.nbytes >= _ELIDE_BYTES if elided is None else elided
    if (z.ndim == 3 and z.dtype == lp.dtype == np.complex64 and z.flags.c_contiguous and lp.shape == z.shape
            and _kernel_is_numpy()):  # numpy's contiguous complex64 product and float32 arctan2, in one pass
        out = np.empty(z.shape, np.float32) if out is None else out
        _phase_difference_kernel(lp, z, bool(elided), out)
        return out
    c = np.conj(lp)
    product = np.multiply(c, z, out=c) if elided else z * c
    angle = np.angle(product).astype(np.float32, copy=False)
    if out is None:
        return angle
    out[...] = angle
    return out


@functools.cache
def _kernel_is_numpy():
    """Whether :func:`_phase_difference_kernel` gives numpy's numbers on this machine (once per process,
    on 4096 random values of both operand orders): numpy's complex64 product fuses its first products
    where the CPU has FMA, and its float32 ``arctan2`` is glibc's ``atan2f`` unless numpy dispatches it
    to SVML (AVX-512); elsewhere the numpy expression runs."""
    rng = np.random.default_rng(0)
    z, lp = (rng.normal(size=(2, 2048, 2)).astype(np.float32).view(np.complex64)[..., 0] for _ in range(2))
    z, lp = z.reshape(2, 32, 64).copy(), lp.reshape(2, 32, 64).copy()
    out = np.empty(z.shape, np.float32)
    for elided in (True, False):
        c = np.conj(lp)
        want = np.angle(np.multiply(c, z, out=c) if elided else z * c).astype(np.float32)
        _phase_difference_kernel(lp, z, elided, out)
        if not np.array_equal(out.view(np.uint32), want.view(np.uint32)):
            return False
    return True


@intrinsic
def _fmaf(typingctx, a, b, c):
    """``a * b + c`` of float32 values rounded once (LLVM's ``llvm.fma``)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f], ir.FunctionType(f, [f, f, f]))
        return builder.call(fn, args)

    return sig, codegen


@njit(["void(complex64[:, :, :], complex64[:, :, ::1], boolean, float32[:, :, :])"], cache=True, parallel=True,
      error_model="numpy")
def _phase_difference_kernel(lp, z, elided, out):  # pragma: no cover - compiled
    """``out = angle(conj(lp) * z)`` (``elided``) or ``angle(z * conj(lp))`` as numpy computes them
    on contiguous complex64 arrays, bit for bit: its SIMD product ``(a.r b.r - a.i b.i,
    a.r b.i + a.i b.r)`` with the first product of each part fused (``fmaddsub``; not symmetric in
    the operands), then glibc's ``atan2f`` (numpy's float32 ``arctan2``, :func:`atan2f_array`), line
    by line."""
    n2 = z.shape[2]
    for i in prange(z.shape[0]):
        re = np.empty(n2, np.float32)
        im = np.empty(n2, np.float32)
        angle = np.empty(n2, np.float32)
        for j in range(z.shape[1]):
            for k in range(n2):
                cr, ci = lp[i, j, k].real, -lp[i, j, k].imag
                zr, zi = z[i, j, k].real, z[i, j, k].imag
                if elided:
                    re[k] = _fmaf(cr, zr, -(ci * zi))
                    im[k] = _fmaf(cr, zi, ci * zr)
                else:
                    re[k] = _fmaf(zr, cr, -(zi * ci))
                    im[k] = _fmaf(zr, ci, zi * cr)
            atan2f_array(im, re, angle)
            for k in range(n2):
                out[i, j, k] = angle[k]


def _homodyne_both(magnitude, phase, voxel_size_mm, window, window_mm, slice_axis):
    """:func:`homodyne_highpass` in modes ``"2d"`` and ``"3d"`` of one 3D (or single-echo 4D) image,
    bit for bit, sharing the complex image and the forward transforms the two low-passes have in
    common (with the slice axis last, the 3D low-pass starts with the 2D one's two passes)."""
    ph = np.asarray(phase)
    if ph.ndim == 4:  # echoes filtered separately, as homodyne_highpass does
        pairs = [_homodyne_both(magnitude[..., e], ph[..., e], voxel_size_mm, window, window_mm, slice_axis)
                 for e in range(ph.shape[3])]
        return tuple(np.stack([pair[i] for pair in pairs], axis=3) for i in range(2))
    plans = [_homodyne_plan(ph.shape, voxel_size_mm, window, window_mm, mode, slice_axis)
             for mode in ("2d", "3d")]
    shared = {}
    z_of, ends = _complex_slabs(magnitude, ph), []
    for plan in plans:
        ends.append(_cut_lowpass(ph.shape, z_of, plan, shared))
    del shared
    return tuple(_last_inverses(ends, ph.shape, z_of))


# complex64 working set (bytes) of one slab of the full-size transforms in _homodyne_slabs
SLAB_BYTES = 32 * 2**20


def _slab_rows(bytes_per_row):
    """Rows in a slab of about :data:`SLAB_BYTES`."""
    return int(max(1, SLAB_BYTES // max(1, bytes_per_row)))


def _slabs(n, bytes_per_row):
    """``(start, stop)`` of consecutive slabs of ``n`` rows of about :data:`SLAB_BYTES` each."""
    rows = _slab_rows(bytes_per_row)
    return [(s, min(n, s + rows)) for s in range(0, n, rows)]


def _along(axis, start, stop, ndim=3):
    """Index of rows ``start:stop`` along ``axis`` of an ``ndim``-dimensional array."""
    where = [slice(None)] * ndim
    where[axis] = slice(start, stop)
    return tuple(where)


def _homodyne_slabs(magnitude, phase, plan, shared=None):
    """``_phase_difference(z, _windowed_lowpass(z, *plan, shared=shared))`` with
    ``z = _complex(magnitude, phase)`` (3D), bit for bit, without a full-size complex volume: ``z`` is
    made slab by slab where it is needed (the first forward transform and the phase difference), and
    the two transforms over the padded extent (the first forward, the last inverse) run slab by slab
    along another axis (transforms along an axis are one-dimensional transforms of its lines, the
    same numbers in any batch); the last inverse transform feeds the phase difference directly.
    Peak: the cut spectra (a window's fraction of the volume) plus a few slabs."""
    ph = np.asarray(phase, dtype=np.float32)
    z_of = _complex_slabs(magnitude, ph)
    return _last_inverses([_cut_lowpass(ph.shape, z_of, plan, shared)], ph.shape, z_of)[0]


def _complex_slabs(magnitude, phase):
    """``z_of(where)``: ``_complex(magnitude, phase)[where]`` of a 3D image, made when asked."""
    ph = np.asarray(phase, dtype=np.float32)
    mag = None if magnitude is None else np.asarray(magnitude, dtype=np.float32)
    if mag is not None and mag.shape != ph.shape:
        raise ValueError(f"magnitude {mag.shape} and phase {ph.shape} differ")

    def z_of(where):
        return _complex(None if mag is None else mag[where], ph[where])

    return z_of


def _cut_lowpass(shape, z_of, plan, shared=None):
    """The windowed low-pass spectrum of ``z`` (:func:`_homodyne_slabs`) up to its last inverse pass:
    ``(k, axis, before, window, support, n_total)``, the arguments of that pass (:func:`_last_inverses`)."""
    axes, pads, windows = plan
    supports = [np.flatnonzero(w) for w in windows]
    key = ()
    k = None
    for i, (a, (before, after), w, support) in enumerate(zip(axes, pads, windows, supports)):
        key += ((a, before, after, w.tobytes()),)
        if shared is not None and key in shared:
            k = shared[key]
            continue
        widths = [(0, 0)] * 3
        widths[a] = (before, after)
        # the padded copies and the spectra below are temporaries: the transforms may write into them
        # (overwrite_x: no output array to allocate; the same one-dimensional transforms, the same numbers)
        if i == 0:  # over the whole padded extent: slab by slab
            c = 0 if a != 0 else 1
            cut = list(shape)
            cut[a] = support.size
            k = np.empty(cut, np.complex64)
            for s0, s1 in _slabs(shape[c], 8 * w.size * math.prod(shape) // (shape[a] * shape[c])):
                where = _along(c, s0, s1)
                k[where] = np.take(sfft.fft(np.pad(z_of(where), widths), axis=a, workers=-1, overwrite_x=True), support, axis=a)
        else:
            k = np.take(sfft.fft(np.pad(k, widths), axis=a, workers=-1, overwrite_x=True), support, axis=a)
        if shared is not None:
            shared[key] = k
    if not axes:
        raise ValueError("no homodyne axes")
    k = k.copy() if shared is not None else k
    for a, w, support in zip(axes, windows, supports):
        bshape = [1] * 3
        bshape[a] = support.size
        k *= w[support].reshape(bshape)
    n_total = int(np.prod([w.size for w in windows]))
    last = len(axes) - 1
    for i, (a, (before, _), w, support) in enumerate(zip(axes, pads, windows, supports)):
        if i == last:
            return k, a, before, w, support, (n_total if i == 0 else None)
        k = _inverse_pass(k, a, before, w, support, shape[a], n_total if i == 0 else None)
    raise ValueError("no homodyne axes")


def _inverse_pass(k, a, before, w, support, n, n_total=None):
    """One inverse transform along ``a`` of the cut spectrum ``k`` (zeros outside ``support``), scaled
    by ``1 / n_total`` if given (pocketfft scales an n-dimensional inverse in its first axis's pass),
    cut back to the ``n`` unpadded voxels from ``before``."""
    full = list(k.shape)
    full[a] = w.size
    spectrum = np.zeros(full, k.dtype)
    where = [slice(None)] * k.ndim
    where[a] = support
    spectrum[tuple(where)] = k
    k = sfft.ifft(spectrum, axis=a, workers=-1, norm="forward", overwrite_x=True)  # unscaled
    if n_total is not None:
        k.view(k.real.dtype)[...] *= k.real.dtype.type(1.0 / n_total)
    return k[_along(a, before, before + n, k.ndim)]


def _last_inverses(ends, shape, z_of):
    """The last inverse pass (:func:`_inverse_pass`) of each cut spectrum ``ends[i]`` (from
    :func:`_cut_lowpass`) and its phase difference with ``z`` (float32 radians, ``shape``), slab by
    slab along another axis (0, or 1 for a pass along 0): low-passes with the same slab axis share
    each slab of ``z`` (made once for them)."""
    slab_axes = {0 if end[1] != 0 else 1 for end in ends}
    if len(slab_axes) > 1:
        return [out for end in ends for out in _last_inverses([end], shape, z_of)]
    return _last_inverses_along(ends, shape, z_of, slab_axes.pop())


def _last_inverses_along(ends, shape, z_of, c):
    """:func:`_last_inverses` with slabs along axis ``c`` (not one of the passes' axes)."""
    outs = [np.empty(shape, np.float32) for _ in ends]
    rows = min(_slab_rows(8 * end[3].size * math.prod(shape) // (shape[end[1]] * shape[c])) for end in ends)
    elided = 8 * math.prod(shape) >= _ELIDE_BYTES
    for s0 in range(0, shape[c], rows):
        where = _along(c, s0, min(shape[c], s0 + rows))
        z = z_of(where)
        for out, (k, a, before, w, support, n_total) in zip(outs, ends):
            lp = _inverse_pass(k[where], a, before, w, support, shape[a], n_total)
            _phase_difference(z, lp, elided, out[where])
        del z
    return outs


def _windowed_lowpass(z, axes, pads, windows, shared=None):
    """``ifftn(fftn(pad(z)) * w_0 * w_1 ...)`` cut back to ``z``'s extent, computed only where it
    is not zero: the padding, the transforms and the windows axis by axis, in the order
    ``scipy.fft.fftn`` / ``ifftn`` take the axes, keeping after each forward transform only the
    frequencies inside that axis's window and after each inverse transform only the unpadded
    voxels.

    The same one-dimensional transforms of the same numbers as the n-dimensional ones (the
    inverse's ``1 / prod(n)`` applied after its first axis, as pocketfft does), so the values
    are those of ``ifftn(fftn(...))`` bit for bit wherever they are not zero; the work is that of
    the first forward and last inverse axis plus a window's fraction (1/8 at the default width)
    for the others. ``shared`` (a dict) keeps the forward passes between calls on the same ``z``:
    a call whose first axes, paddings and windows are another's reuses its transforms.
    """
    k = z
    supports = []
    key = ()
    for a, (before, after), w in zip(axes, pads, windows):
        key += ((a, before, after, w.tobytes()),)
        support = np.flatnonzero(w)
        supports.append(support)
        if shared is not None and key in shared:
            k = shared[key]
            continue
        widths = [(0, 0)] * k.ndim
        widths[a] = (before, after)
        k = np.take(sfft.fft(np.pad(k, widths), axis=a, workers=-1), support, axis=a)
        if shared is not None:
            shared[key] = k
    k = k.copy() if shared is not None else k
    for a, w, support in zip(axes, windows, supports):
        shape = [1] * k.ndim
        shape[a] = support.size
        k *= w[support].reshape(shape)
    n_total = int(np.prod([w.size for w in windows]))
    for i, (a, (before, _), w, support) in enumerate(zip(axes, pads, windows, supports)):
        k = _inverse_pass(k, a, before, w, support, z.shape[a], n_total if i == 0 else None)
    return k


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
    vox = voxel_sizes(voxel_size_mm)
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
# SWI
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
        Phase convention of the data (see :mod:`microbleeds.stages.dipole_sign`).
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
    if kind not in ("paramagnetic", "symmetric"):
        raise ValueError(f"unknown phase mask kind {kind!r}")
    phi = np.asarray(filtered_phase, dtype=np.float32)
    if phi.ndim == 3:
        return _mask_kernel(phi, np.float32(phase_sign), kind == "symmetric")
    psi = phase_sign * phi
    if kind == "symmetric":
        psi = np.abs(psi)
    return np.clip(1.0 - psi / np.float32(_PI), 0.0, 1.0).astype(np.float32)


@njit(["float32[:, :, ::1](float32[:, :, :], float32, boolean)"], cache=True, parallel=True)
def _mask_kernel(phi, sign, symmetric):
    """The linear phase mask of :func:`phase_mask` in one pass: ``clip(1 - psi / pi, 0, 1)`` with
    ``psi = sign * phi`` (``|psi|`` if ``symmetric``), the float32 operations numpy does (NaN
    stays NaN), bit for bit."""
    out = np.empty(phi.shape, np.float32)
    pi = np.float32(_PI)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for i in prange(phi.shape[0]):
        for j in range(phi.shape[1]):
            for k in range(phi.shape[2]):
                psi = sign * phi[i, j, k]
                if symmetric:
                    psi = abs(psi)
                v = one - psi / pi
                if v < zero:
                    v = zero
                elif v > one:
                    v = one
                out[i, j, k] = v
    return out


def swi(magnitude, filtered_phase, phase_sign=+1, power=4, kind="paramagnetic"):
    """Susceptibility-weighted image ``magnitude * phase_mask ** power``.

    Parameters
    ----------
    magnitude : numpy.ndarray
        Magnitude (3D, combined if multi-echo).
    filtered_phase : numpy.ndarray
        High-pass filtered phase in radians, same shape.
    phase_sign : {+1, -1}
        Phase convention (see :mod:`microbleeds.stages.dipole_sign`).
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
    # the same float32 ufuncs as ``m * mask ** power``, in place in the mask's buffer
    np.power(mask, np.float32(power), out=mask)
    return np.multiply(m, mask, out=mask)


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
    vox = voxel_sizes(voxel_size_mm, affine)
    n = max(1, int(round(float(slab_mm) / vox[axis])))
    if n % 2 == 0:
        n += 1
    return ndi.minimum_filter1d(v, size=n, axis=axis, mode="nearest")


@dataclass
class SWIResult:
    """Output of :func:`compute_swi`.

    Attributes
    ----------
    swi : numpy.ndarray of float32
        ``magnitude * phase_mask ** power`` (3D), computed when first read (the detection reads
        only the filtered phase and the magnitude: a run that writes no images never makes it).
    magnitude : numpy.ndarray of float32
        Combined magnitude (3D).
    filtered_phase : numpy.ndarray of float32
        High-pass filtered (combined) phase in radians at ``reference_te_ms`` (3D).
    frequency_hz : numpy.ndarray of float32 or None
        Local frequency in Hz in the data's own sign (None without echo times).
    phase_sign : int
        Convention used (+1 / -1, see :mod:`microbleeds.stages.dipole_sign`).
    sign_evidence : dict
        Evidence from :func:`estimate_phase_sign`, or ``{"method": "forced", "confidence":
        "forced", "sign": phase_sign}``.
    mip : numpy.ndarray of float32 or None
        Sliding-window minimum intensity projection of the SWI.
    parameters : dict
        Parameters used (JSON-serialisable), for ``summary.json``.
    """

    magnitude: np.ndarray
    filtered_phase: np.ndarray
    frequency_hz: np.ndarray | None
    phase_sign: int
    sign_evidence: dict
    mip: np.ndarray | None = None
    parameters: dict = field(default_factory=dict)

    @cached_property
    def swi(self):
        """:func:`swi` of the magnitude and filtered phase with the convention, power and mask kind
        of ``parameters``."""
        return swi(self.magnitude, self.filtered_phase, self.phase_sign, self.parameters.get("power", 4),
                   self.parameters.get("mask_kind", "paramagnetic"))

    def native_images(self, ornt):
        """``{SWI_FILE: (swi, float32), FILTERED_PHASE_FILE: (filtered phase, float32)}`` as views on the
        input's own grid (orientation ``ornt``, see :func:`microbleeds.io.nifti.native_view`); the SWI is
        computed only when its entry is read (an image that is written)."""
        return _NativeImages(self, ornt)

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


class _NativeImages(Mapping):
    """The images of :meth:`SWIResult.native_images`, each made when read."""

    def __init__(self, result, ornt):
        self._result, self._ornt = result, ornt

    def __getitem__(self, name):
        if name == SWI_FILE:
            return native_view(self._result.swi, self._ornt), np.float32
        if name == FILTERED_PHASE_FILE:
            return native_view(self._result.filtered_phase, self._ornt), np.float32
        raise KeyError(name)

    def __iter__(self):
        return iter((SWI_FILE, FILTERED_PHASE_FILE))

    def __len__(self):
        return 2


def compute_swi(magnitude, phase, affine, echo_times_ms=None, phase_sign=None,
                method="homodyne", window=32, window_mm=None, sigma_mm=4.0, mode="2d",
                power=4, reference_te_ms=None, mask=None, mip_slab_mm=None,
                b0_dir_world=(0, 0, 1), mask_kind="paramagnetic", manufacturer=None):
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
    manufacturer : str, optional
        The scanner's vendor (BIDS ``Manufacturer``): its usual convention is a prior for the
        estimate (:func:`microbleeds.stages.dipole_sign.with_vendor_prior`).

    Returns
    -------
    SWIResult
    """
    return _compute_swi(magnitude, [phase], affine, echo_times_ms, phase_sign, method, window, window_mm,
                        sigma_mm, mode, power, reference_te_ms, mask, mip_slab_mm, b0_dir_world, mask_kind,
                        manufacturer)


def _compute_swi(magnitude, held_phase, affine, echo_times_ms=None, phase_sign=None, method="homodyne",
                 window=32, window_mm=None, sigma_mm=4.0, mode="2d", power=4, reference_te_ms=None, mask=None,
                 mip_slab_mm=None, b0_dir_world=(0, 0, 1), mask_kind="paramagnetic", manufacturer=None):
    """:func:`compute_swi` of the phase in the one-item list ``held_phase``, which it empties: the
    phase is released once filtered (a caller holding no other reference frees it before the
    estimate and the SWI)."""
    mag = np.asarray(magnitude, dtype=np.float32)
    ph = np.asarray(held_phase.pop(), dtype=np.float32)
    if mag.shape != ph.shape:
        raise ValueError(f"magnitude {mag.shape} and phase {ph.shape} differ")
    n_echo = mag.shape[3] if mag.ndim == 4 else 1
    if n_echo > 1 and echo_times_ms is None:
        raise ValueError("echo times are needed to combine several echoes")
    vox = voxel_sizes(None, affine)
    sax = slice_axis_from_affine(affine)
    hp3 = None  # the 3D homodyne filtered phase for the sign estimate
    if phase_sign is None and method == "homodyne" and mode == "2d":
        hp, hp3 = _homodyne_both(mag, ph, vox, window, window_mm, sax)
    else:
        hp = highpass_phase(mag, ph, vox, method, window, window_mm, sigma_mm, mode, sax)
        if phase_sign is None:  # the vein physics holds for the 3D field: the estimate's filter
            hp3 = hp if mode == "3d" and method == "homodyne" else highpass_phase(
                mag, ph, vox, "homodyne", window, window_mm, sigma_mm, "3d", sax)
    del ph
    te = _te_array(echo_times_ms, n_echo) if n_echo > 1 else None
    if te is not None:
        filt, freq, cmag, ref = _combine_echoes(hp, mag, te, reference_te_ms)
    else:
        filt, freq, cmag, ref = _single_echo(hp, mag, echo_times_ms)
    if phase_sign is None:  # estimated on the 3D homodyne-filtered phase
        filt3 = _first_echo(hp3) if te is None else combine_phases(hp3, mag, te, ref, "radians")
        del hp3
        sign, ev = estimate_phase_sign(filt3, cmag, affine, mask, b0_dir_world)
        del filt3
        sign, ev = with_vendor_prior(sign, ev, manufacturer)
    else:
        sign, ev = _forced_sign(phase_sign)
    params = {"highpass": method, "window": window, "window_mm": window_mm,
              "sigma_mm": sigma_mm if method == "gaussian" else None, "mode": mode,
              "slice_axis": sax, "power": power, "reference_te_ms": ref,
              "echo_times_ms": None if echo_times_ms is None else
              [float(t) for t in np.ravel(echo_times_ms)],
              "magnitude_combination": "t2star" if n_echo > 1 else None,
              "phase_combination": "weighted LS, |S|^2, temporal unwrap" if n_echo > 1 else None,
              "phase_sign": sign, "mask_kind": mask_kind, "mip_slab_mm": mip_slab_mm}
    result = SWIResult(cmag, filt, freq, sign, ev, None, params)
    if mip_slab_mm is not None:
        result.mip = minimum_intensity_projection(result.swi, affine, mip_slab_mm)
    return result


def _combine_echoes(hp, mag, te, reference_te_ms):
    """Several echoes: filtered phase (radians at the reference TE), local frequency (Hz),
    T2*-weighted magnitude and the reference TE (ms, default the longest echo)."""
    ref = float(te.max()) if reference_te_ms is None else float(reference_te_ms)
    omega, _ = _omega(hp, mag, te)
    filt = (omega * np.float32(ref)).astype(np.float32)
    freq = (omega * np.float32(_HZ_PER_RAD_PER_MS)).astype(np.float32)
    del omega
    return filt, freq, combine_magnitudes(mag, te, "t2star"), ref


def _single_echo(hp, mag, echo_times_ms):
    """One echo: filtered phase (radians), frequency (Hz, None without an echo time), magnitude
    and the echo time (ms, or None), 3D."""
    cmag = _first_echo(mag)
    filt = _first_echo(hp)
    if echo_times_ms is None:
        return filt, None, cmag, None
    ref = float(np.ravel(echo_times_ms)[0])
    return filt, (filt / (2 * _PI * ref / 1000.0)).astype(np.float32), cmag, ref


def _first_echo(volume):
    """The 3D volume of a single-echo image, 3D or 4D with one echo."""
    return volume[..., 0] if volume.ndim == 4 else volume


def _forced_sign(phase_sign):
    """The sign and evidence of a convention given by the user."""
    if phase_sign not in (1, -1):
        raise ValueError(f"phase_sign must be +1 or -1, got {phase_sign!r}")
    return int(phase_sign), {"method": "forced", "confidence": "forced", "sign": int(phase_sign)}


def phase_branch(scan, phase, brain, params, echo_times_ms=None):
    """Load the phase, high-pass filter it, settle its sign and compute the SWI (canonical).

    Parameters
    ----------
    scan : microbleeds.stages.load.Scan
        The loaded magnitude (canonical; ``echoes`` for multi-echo, native grid and path).
    phase : str, path, list of paths, nibabel image or numpy.ndarray
        The phase (see :func:`microbleeds.io.phase_file.load_phase`); an array is on the
        magnitude's own (native) grid.
    brain : numpy.ndarray of bool
        Brain mask (canonical) for the sign estimate.
    params : microbleeds.presets.Parameters
        ``phase_sign`` (+1, -1 or None to estimate) and ``highpass_window_vox``.
    echo_times_ms : sequence of float, optional
        Echo times in ms; multi-echo without them reads the BIDS sidecar.

    Returns
    -------
    swi_result : SWIResult
    how : str
        How the phase values were scaled to radians.
    """
    magnitude = scan.echoes if scan.echoes is not None else scan.magnitude
    native_shape = tuple(scan.native_shape) + ((scan.n_echoes,) if scan.n_echoes > 1 else ())
    if isinstance(phase, np.ndarray):  # an array on the magnitude's own (native) grid
        phase = nib.Nifti1Image(np.asarray(phase, np.float32), scan.native_affine)
    radians, how = load_phase(phase, native_shape, scan.native_affine)
    radians = to_canonical(radians, scan.native_affine)[0]
    if scan.n_echoes > 1 and echo_times_ms is None:
        echo_times_ms = read_echo_times([scan.path]) if scan.path else None
        if echo_times_ms is None:
            raise InputError(scan.path, "multi-echo phase needs echo times (BIDS sidecar EchoTime or --echo-times)")
    manufacturer = (scan.sidecar or {}).get("Manufacturer")
    held = [radians]  # compute_swi's phase, released once filtered
    del radians
    result = _compute_swi(magnitude, held, scan.affine, echo_times_ms=echo_times_ms,
                          phase_sign=params.phase_sign, window=params.highpass_window_vox, mask=brain,
                          manufacturer=manufacturer if isinstance(manufacturer, str) else None)
    return result, how
