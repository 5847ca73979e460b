"""Phase files: read a phase image (one 3D/4D file or one file per echo), check it lies on the
magnitude's grid, and scale its stored values to radians. Files are read by
:func:`microbleeds.io.nifti.read_volume` (gzip CRC, header, memory and geometry checks).

Scanners and converters store phase in radians, degrees, milliradians or raw integer units, often
with a header scale factor (nibabel applies it). :func:`phase_to_radians` recognises the range the
values fill and says how it scaled them.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import njit, prange

from ..errors import InputError
from .nifti import read_volume

# --------------------------------------------------------------------------------------------
# 1. Scaling of stored phase to radians
# --------------------------------------------------------------------------------------------

_PI = math.pi

# (description, nominal low, nominal high, factor to radians); ordered by nominal span so the
# tightest range that holds the data wins. Data must fill at least half the nominal span.
_KNOWN_RANGES = (
    ("radians in [-pi, pi]", -_PI, _PI, 1.0),
    ("radians in [0, 2pi]", 0.0, 2 * _PI, 1.0),
    ("degrees in [-180, 180]", -180.0, 180.0, _PI / 180.0),
    ("degrees in [0, 360]", 0.0, 360.0, _PI / 180.0),
    ("scanner units 0..4095 (12-bit unsigned)", 0.0, 4095.0, 2 * _PI / 4096.0),
    ("milliradians in [-1000pi, 1000pi] (e.g. Philips/GE x1000)", -1000 * _PI, 1000 * _PI, 1e-3),
    ("scanner units -4096..4095 (Siemens 12-bit)", -4096.0, 4095.0, _PI / 4096.0),
    ("scanner units 0..65535 (16-bit unsigned)", 0.0, 65535.0, 2 * _PI / 65536.0),
    ("scanner units -32768..32767 (16-bit signed)", -32768.0, 32767.0, _PI / 32768.0),
)


_SIGNATURES = ("float32[::1]", "float64[::1]")


_RANGE_CHUNK = 1 << 20  # values per task of _finite_range


@njit([f"Tuple((float64, float64, int64))({t})" for t in _SIGNATURES], cache=True, nogil=True, parallel=True)
def _finite_range(x):  # pragma: no cover - compiled
    """(min, max, number) of the finite values of ``x``, in one parallel pass (chunks of
    :data:`_RANGE_CHUNK` values; min and max do not depend on the order)."""
    n_chunks = (x.size + _RANGE_CHUNK - 1) // _RANGE_CHUNK
    los = np.full(n_chunks, np.inf)
    his = np.full(n_chunks, -np.inf)
    counts = np.zeros(n_chunks, np.int64)
    for c in prange(n_chunks):
        lo, hi, n = np.inf, -np.inf, 0
        for i in range(c * _RANGE_CHUNK, min(x.size, (c + 1) * _RANGE_CHUNK)):
            v = x[i]
            if np.isfinite(v):
                n += 1
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
        los[c], his[c], counts[c] = lo, hi, n
    lo, hi, n = np.inf, -np.inf, 0
    for c in range(n_chunks):
        lo = min(lo, los[c])
        hi = max(hi, his[c])
        n += counts[c]
    return float(lo), float(hi), n


@njit(cache=True, inline="always")
def _shifted(v, inter, slope, factor):  # pragma: no cover - compiled
    """``(v - inter) / slope * factor + pi`` in float64: the phase shifted to ``[0, 2 pi)`` when in range."""
    return (np.float64(v) - inter) / slope * factor + np.pi


@njit(cache=True, inline="always")
def _wrap_shifted(w, two_pi):  # pragma: no cover - compiled
    """float32 ``wrap_phase`` of the shifted phase ``w``: ``np.remainder(w, 2 pi) - pi``.

    ``np.remainder(w, 2 pi)`` is ``w`` itself for ``0 <= w < 2 pi`` (the usual case: phase already in
    range), so the callers call this only outside that range: the same values, without a division
    per voxel."""
    return np.float32(np.remainder(w, two_pi) - np.pi)


_BLOCK = 4096  # values per block of _scale_and_wrap: one branch-free pass, then the few out of range
_NAN32 = np.float32(np.nan)  # marks a value out of range (or NaN) in the first pass: the scaled phase never is NaN


@njit([f"void({t}, float64, float64, float64, float32[::1])" for t in _SIGNATURES], cache=True, nogil=True,
      parallel=True)
def _scale_and_wrap(x, inter, slope, factor, out):  # pragma: no cover - compiled
    """``out = wrap_phase((x - inter) / slope * factor)`` in float64 per voxel, stored as float32: a
    branch-free pass that marks the values outside ``[0, 2 pi)`` after the shift as NaN (no count in
    the loop, so it vectorises), then those wrapped."""
    two_pi = 2.0 * np.pi
    for b in prange((x.size + _BLOCK - 1) // _BLOCK):
        start, stop = b * _BLOCK, min(x.size, (b + 1) * _BLOCK)
        for i in range(start, stop):
            w = _shifted(x[i], inter, slope, factor)
            out[i] = np.float32(w - np.pi) if (w >= 0.0 and w < two_pi) else _NAN32  # marked (NaN input too)
        for i in range(start, stop):
            if out[i] != out[i]:
                out[i] = _wrap_shifted(_shifted(x[i], inter, slope, factor), two_pi)


_TILE = 32


@njit([f"void({t.replace('[::1]', '[:, :, ::1]')}, float64, float64, float64, float32[:, :, ::1])"
       for t in _SIGNATURES], cache=True, nogil=True, parallel=True)
def _scale_and_wrap_transposed(xt, inter, slope, factor, out):  # pragma: no cover - compiled
    """``out[i, j, k]`` = :func:`_scale_and_wrap` of ``xt[k, j, i]``: the scaling of a Fortran-ordered
    volume (``xt`` its C-ordered transpose) written in C order, in 32 x 32 tiles of ``(k, i)`` per
    ``j`` (each tile scaled along ``xt``'s rows into a buffer, then written transposed)."""
    nz, ny, nx = xt.shape
    two_pi = 2.0 * np.pi
    for j in prange(ny):
        tile = np.empty((_TILE, _TILE), np.float32)
        for k0 in range(0, nz, _TILE):
            k1 = min(k0 + _TILE, nz)
            for i0 in range(0, nx, _TILE):
                i1 = min(i0 + _TILE, nx)
                for k in range(k0, k1):
                    row = xt[k, j]
                    line = tile[k - k0]
                    for i in range(i0, i1):
                        w = _shifted(row[i], inter, slope, factor)
                        line[i - i0] = np.float32(w - np.pi) if (w >= 0.0 and w < two_pi) else _NAN32
                for k in range(k0, k1):
                    for i in range(i0, i1):
                        if tile[k - k0, i - i0] != tile[k - k0, i - i0]:
                            tile[k - k0, i - i0] = _wrap_shifted(_shifted(xt[k, j, i], inter, slope, factor), two_pi)
                for i in range(i0, i1):
                    for k in range(k0, k1):
                        out[i, j, k] = tile[k - k0, i - i0]


def _memory_order(x):
    """``x`` (or its transpose, when only that is C-contiguous: nibabel's Fortran-ordered data) as a
    C-contiguous array without a copy where possible, and whether it was transposed."""
    if x.flags.f_contiguous and not x.flags.c_contiguous:
        return x.T, True
    return np.ascontiguousarray(x), False


def _radians(x, inter=0.0, slope=1.0, factor=1.0):
    """float32 radians ``wrap_phase((x - inter) / slope * factor)`` of any-shaped float data (numba;
    the same float64 arithmetic as :func:`wrap_phase`, so bit-identical to it), C-ordered for a 3D
    ``x`` (a Fortran-ordered one, as nibabel reads files, transposed in the same pass), else in the
    memory order of ``x``."""
    c, transposed = _memory_order(np.asarray(x))
    if c.dtype not in (np.float32, np.float64):
        c = c.astype(np.float64)
    if transposed and c.ndim == 3:
        out = np.empty(c.shape[::-1], np.float32)
        _scale_and_wrap_transposed(c, float(inter), float(slope), float(factor), out)
        return out
    flat = c.reshape(-1)
    out = np.empty(flat.size, np.float32)
    _scale_and_wrap(flat, float(inter), float(slope), float(factor), out)
    out = out.reshape(c.shape)
    return out.T if transposed else out


def wrap_phase(x):
    """Wrap radians into [-pi, pi)."""
    return (x + _PI) % (2 * _PI) - _PI


def _classify_range(lo, hi):
    """Return ``(description, factor)`` of the known phase range holding ``[lo, hi]`` or None."""
    span = hi - lo
    for desc, nlo, nhi, factor in _KNOWN_RANGES:
        nspan = nhi - nlo
        tol = 0.01 * nspan + (0.5 if nspan > 100 else 0.0)
        if lo >= nlo - tol and hi <= nhi + tol and span >= 0.5 * nspan:
            return desc, factor
    return None


def phase_to_radians(data, path=None, scl_slope=None, scl_inter=None):
    """Convert a stored phase image to radians in [-pi, pi).

    Cases detected, in this order:

    1. A NIfTI scale factor was applied by the reader (``scl_slope`` not 0/1/NaN or
       ``scl_inter`` != 0) and the *unscaled* values, ``(data - scl_inter) / scl_slope``, lie in
       a known phase range while the scaled ones do not (e.g. stored -pi..pi with
       ``scl_slope = 0.00117`` read as +-0.0037): the unscaled values are used.
    2. Values in a known range: radians in [-pi, pi] or [0, 2 pi], degrees, Siemens 12-bit
       -4096..4095, 12-bit 0..4095, milliradians +-1000 pi (Philips/GE export), 16-bit.
       The data must span at least half the range (wrapped phase of a head spans all of it).
    3. Values within [-pi, pi] spanning at least 0.25 rad but less than pi: radians that do
       not wrap (kept; the text says so).
    4. Otherwise the values are rescaled linearly from their min..max to [-pi, pi] (the
       convention of MRI phase readers for unknown units, e.g. +-0.0037 when a reader applied
       a scale factor it did not report); the returned text says so.

    Parameters
    ----------
    data : array_like
        Phase as read (after any scaling by the reader), any shape.
    path : str or Path, optional
        File name used in error messages.
    scl_slope, scl_inter : float, optional
        The NIfTI scale factor and intercept the reader applied (``img.dataobj.slope``,
        ``img.dataobj.inter``).

    Returns
    -------
    radians : numpy.ndarray of float32
        Phase in radians, wrapped into [-pi, pi), same shape as ``data``.
    how : str
        One line saying which case was found, e.g. ``"scanner units -4096..4095 (Siemens
        12-bit); multiplied by pi/4096"``.

    Raises
    ------
    InputError
        No finite value, or a constant image.
    """
    x = _float_data(data)
    return _to_radians(x, _finite_range(_memory_order(x)[0].reshape(-1)), path, scl_slope, scl_inter)


def _float_data(data):
    """``data`` as a float32 or float64 array (other types as float64)."""
    x = np.asarray(data)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def _to_radians(x, finite, path, scl_slope, scl_inter):
    """:func:`phase_to_radians` of the float array ``x`` whose finite values' (min, max, number) are
    ``finite``."""
    lo, hi, n_finite = finite
    if n_finite == 0:
        raise InputError(path, "phase has no finite value (all NaN/Inf)")
    if hi - lo <= 0:
        raise InputError(path, f"phase is constant ({lo:g}); not a phase image")

    slope_set = scl_slope is not None and np.isfinite(scl_slope) and scl_slope not in (0.0, 1.0)
    inter_set = scl_inter is not None and np.isfinite(scl_inter) and scl_inter != 0.0
    if slope_set or inter_set:
        s = float(scl_slope) if slope_set else 1.0
        b = float(scl_inter) if inter_set else 0.0
        scaled_kind = _classify_range(lo, hi)
        rlo, rhi = sorted(((lo - b) / s, (hi - b) / s))
        raw_kind = _classify_range(rlo, rhi)
        if raw_kind is not None and scaled_kind is None:
            desc, factor = raw_kind
            out = _radians(x, b, s, factor)
            how = (f"header scale (scl_slope={s:g}, scl_inter={b:g}) undone: the reader's "
                   f"values {lo:.4g}..{hi:.4g} are stored {desc}")
            if factor != 1.0:
                how += f"; multiplied by {factor:.6g}"
            return out, how

    kind = _classify_range(lo, hi)
    if kind is not None:
        desc, factor = kind
        how = desc + ("" if factor == 1.0 else f"; multiplied by {factor:.6g}")
        return _radians(x, factor=factor), how

    tol = 0.01 * 2 * _PI
    if lo >= -_PI - tol and hi <= _PI + tol and hi - lo >= 0.25:
        # radians that do not wrap (filtered phase, a small crop): keep them
        how = (f"radians in [-pi, pi] (spans only {hi - lo:.3g} rad: filtered or unwrapped "
               "phase, or a small field of view?)")
        return _radians(x), how
    x = x.astype(np.float64)
    out = (x - lo) / (hi - lo) * (2 * _PI) - _PI
    out = np.clip(out, -_PI, _PI)
    how = (f"unknown units ({lo:.4g}..{hi:.4g}); rescaled min..max to [-pi, pi] "
           "(check the phase source)")
    return out.astype(np.float32), how


def _squeeze_to_4d(arr):
    while arr.ndim > 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def _load_one(path_or_img):
    """Path, image, data (float32, header scaling applied, at most 4D), the header's scaling and the
    reader's notes (units converted, geometry repaired)."""
    if isinstance(path_or_img, (str, os.PathLike)):
        vol = read_volume(path_or_img, "phase")
        return vol.path, vol.img, _squeeze_to_4d(vol.data), vol.slope, vol.inter, vol.notes
    img = path_or_img
    path = img.get_filename() or "<phase image>"
    dataobj = img.dataobj
    slope = getattr(dataobj, "slope", None)
    inter = getattr(dataobj, "inter", None)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:
        raise InputError(path, f"cannot read phase data ({type(exc).__name__})") from None
    return path, img, _squeeze_to_4d(data), slope, inter, []


def load_phase(path_or_img, magnitude_shape, magnitude_affine=None, atol_mm=1e-3):
    """Read and validate a phase image and convert it to radians.

    Parameters
    ----------
    path_or_img : str, Path, nibabel image, or list of these
        One NIfTI file (3D, or 4D ``x, y, z, echo``) or one file per echo (3D each, stacked in
        the given order along a 4th axis).
    magnitude_shape : tuple of int
        Shape of the magnitude array (3D, or 4D with echoes last).
    magnitude_affine : (4, 4) array_like, optional
        Affine of the magnitude; if given the phase affine must equal it within ``atol_mm``.
    atol_mm : float
        Tolerance in mm for the affine comparison.

    Returns
    -------
    radians : numpy.ndarray of float32
        Phase in radians, [-pi, pi), with the magnitude's shape.
    how : str
        Which scaling case was detected (see :func:`phase_to_radians`), followed by what the
        reader repaired or assumed (e.g. units converted to mm), if anything.

    Raises
    ------
    InputError
        Naming the phase file: unreadable, grid or affine different from the magnitude,
        different echo count, NaN/Inf voxels, constant.
    """
    if isinstance(path_or_img, (list, tuple)):
        if len(path_or_img) == 0:
            raise InputError(None, "no phase file given")
        if len(path_or_img) == 1:
            return load_phase(path_or_img[0], magnitude_shape, magnitude_affine, atol_mm)
        parts, hows, affine = [], [], None
        names, notes = [], []
        for item in path_or_img:
            path, img, data, slope, inter, read_notes = _load_one(item)
            notes.extend(n for n in read_notes if n not in notes)
            names.append(path)
            if data.ndim != 3:
                raise InputError(path, f"one-echo phase file must be 3D, got shape {data.shape}")
            if affine is None:
                affine = img.affine
            elif not np.allclose(img.affine, affine, atol=atol_mm):
                raise InputError(path, "affine differs from the first echo's phase file")
            parts.append((path, data, slope, inter))
        stacked_shape = parts[0][1].shape + (len(parts),)
        _check_grid(names[0], stacked_shape, affine, magnitude_shape, magnitude_affine, atol_mm)
        out = np.empty(stacked_shape, np.float32)
        for e, (path, data, slope, inter) in enumerate(parts):
            if data.shape != stacked_shape[:3]:
                raise InputError(path, f"phase grid {_fmt(data.shape)} differs from the "
                                 f"magnitude grid {_fmt(magnitude_shape[:3])}")
            _check_values(path, data)
            out[..., e], how = phase_to_radians(data, path, slope, inter)
            hows.append(how)
        uniq = list(dict.fromkeys(hows))
        how = "; ".join(uniq) if len(uniq) == 1 else " | ".join(f"echo {i + 1}: {h}" for i, h in enumerate(hows))
        return out, _with_notes(how, notes)

    path, img, data, slope, inter, notes = _load_one(path_or_img)
    _check_grid(path, data.shape, img.affine, magnitude_shape, magnitude_affine, atol_mm)
    mshape = tuple(int(s) for s in magnitude_shape)
    if len(mshape) == 3 and data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        _check_values(path, data)
        radians, how = phase_to_radians(data, path, slope, inter)
        return radians, _with_notes(how, notes)
    x = _float_data(data)
    finite = _finite_range(_memory_order(x)[0].reshape(-1))  # one pass for the checks and the scaling
    _check_range(path, x.size, finite)
    radians, how = _to_radians(x, finite, path, slope, inter)
    return radians, _with_notes(how, notes)


def _with_notes(how, notes):
    """The scaling text, followed by what the reader repaired (units, geometry), if anything."""
    return "; ".join([how, *notes])


def _fmt(shape):
    return "x".join(str(int(s)) for s in shape)


def _check_grid(path, shape, affine, magnitude_shape, magnitude_affine, atol_mm):
    mshape = tuple(int(s) for s in magnitude_shape)
    while len(mshape) > 4 and mshape[-1] == 1:
        mshape = mshape[:-1]
    if len(shape) < 3 or len(shape) > 4:
        raise InputError(path, f"phase must be 3D or 4D (x, y, z, echo), got shape {_fmt(shape)}")
    if tuple(shape[:3]) != mshape[:3]:
        raise InputError(path, f"phase grid {_fmt(shape[:3])} differs from the magnitude grid "
                         f"{_fmt(mshape[:3])}")
    n_p = shape[3] if len(shape) == 4 else 1
    n_m = mshape[3] if len(mshape) == 4 else 1
    if n_p != n_m:
        raise InputError(path, f"phase has {n_p} echo{'es' if n_p != 1 else ''} but the "
                         f"magnitude has {n_m}")
    if magnitude_affine is not None and affine is not None:
        diff = float(np.max(np.abs(np.asarray(affine, float) - np.asarray(magnitude_affine,
                                                                           float))))
        if diff > atol_mm:
            raise InputError(path, f"phase affine differs from the magnitude affine (max "
                             f"difference {diff:.3g} mm)")


def _check_range(path, size, finite):
    """:func:`_check_values` of a 3D phase of ``size`` voxels from its finite values' (min, max,
    number)."""
    lo, hi, n_finite = finite
    if n_finite == 0:
        raise InputError(path, "phase is all NaN/Inf")
    if size - n_finite:
        raise InputError(path, f"phase has {int(size - n_finite)} NaN/Inf voxels")
    if hi == lo:
        raise InputError(path, f"phase is constant ({lo:g}); not a phase image")


def _check_values(path, data):
    finite = np.isfinite(data)
    if not finite.any():
        raise InputError(path, "phase is all NaN/Inf")
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad:
        raise InputError(path, f"phase has {n_bad} NaN/Inf voxels")
    echoes = [data] if data.ndim == 3 else [data[..., e] for e in range(data.shape[3])]
    for e, d in enumerate(echoes):
        if float(d.max()) == float(d.min()):
            where = "" if data.ndim == 3 else f" in echo {e + 1}"
            raise InputError(path, f"phase is constant ({float(d.min()):g}){where}; not a "
                             "phase image")


