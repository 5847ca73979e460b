"""Gaussian filters and derivatives with the values of :func:`scipy.ndimage.gaussian_filter`, bit for
bit, in parallel numba loops, and evaluated only where they are needed.

``scipy.ndimage`` correlates each line in float64 (the float32 values converted exactly, a
symmetric kernel folded: ``x[0] w[0]`` then ``+ (x[-j] + x[j]) w[-j]`` from the farthest tap in,
an antisymmetric one ``+ (x[-j] - x[j]) w[-j]``) and stores float32 after each axis. The kernels
here do the same operations in the same order per voxel, so their float32 results are identical;
the axis-0 and axis-1 passes accumulate whole rows at a time (contiguous memory, both cores), and
the last pass can be evaluated at a list of voxels only (:func:`hessian_at`: the Hessian of the
dark voxels without the three full derivative volumes per component), or every pass only on the
lines and ranges the next one reads (:func:`gaussian_filter_nearest_on`: a local mean needed
inside a mask only).

Boundary mode ``"nearest"`` (the edge value repeated) only, which is what the callers use.
Lengths in voxels.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from scipy import ndimage as ndi
from scipy.ndimage._filters import _gaussian_kernel1d

_EPS = float(np.finfo(np.float64).eps)

__all__ = ["gaussian_weights", "gaussian_filter_nearest", "gaussian_filter_nearest_on", "hessian_at"]


def gaussian_weights(sigma, order=0, truncate=4.0):
    """The float64 correlation weights ``scipy.ndimage.gaussian_filter1d`` uses (its kernel of
    radius ``int(truncate * sigma + 0.5)``, reversed) and their symmetry code: 1 symmetric, -1
    antisymmetric, 0 neither (scipy's test, to within float64 epsilon)."""
    radius = int(truncate * float(sigma) + 0.5)
    w = np.ascontiguousarray(_gaussian_kernel1d(float(sigma), int(order), radius)[::-1], np.float64)
    half = w.size // 2
    if w.size % 2 == 0:
        return w, 0
    lo, hi = w[half - 1::-1], w[half + 1:]
    if np.all(np.abs(hi - lo) <= _EPS):
        return w, 1
    if np.all(np.abs(hi + lo) <= _EPS):
        return w, -1
    return w, 0


@njit("float64(float64[::1], float64[::1], int64, int64)", cache=True, inline="always")
def _buffer_sum(buf, fw, symmetric, c):
    """``sum_j fw[half + j] buf[c + j]`` of a padded float64 line, in scipy's order."""
    half = fw.size // 2
    if symmetric == 1:
        acc = buf[c] * fw[half]
        for jj in range(-half, 0):
            acc += (buf[c + jj] + buf[c - jj]) * fw[half + jj]
    elif symmetric == -1:
        acc = buf[c] * fw[half]
        for jj in range(-half, 0):
            acc += (buf[c + jj] - buf[c - jj]) * fw[half + jj]
    else:
        top = fw.size - 1 - half
        acc = buf[c + top] * fw[fw.size - 1]
        for jj in range(-half, top):
            acc += buf[c + jj] * fw[half + jj]
    return acc


@njit("void(float32[:, :, ::1], float64[::1], int64, float32[:, :, ::1])", cache=True, nogil=True, parallel=True)
def _pass_middle(src, fw, symmetric, out):
    """Correlate along the middle axis of ``(p, n, m)``, a contiguous row of ``m`` at a time: output
    row ``(p, i)`` accumulates the rows ``(p, i + j)`` (clamped: mode nearest) in float64, in
    scipy's per-voxel order."""
    n_p, n, m = src.shape
    half = fw.size // 2
    last = n - 1
    top = fw.size - 1 - half
    for q in prange(n_p * n):
        p = q // n
        i = q % n
        acc = np.empty(m, np.float64)
        if symmetric == 1 or symmetric == -1:
            centre = src[p, i]
            w0 = fw[half]
            for k in range(m):
                acc[k] = np.float64(centre[k]) * w0
            for jj in range(-half, 0):
                a = src[p, min(max(i + jj, 0), last)]
                b = src[p, min(max(i - jj, 0), last)]
                w = fw[half + jj]
                if symmetric == 1:
                    for k in range(m):
                        acc[k] += (np.float64(a[k]) + np.float64(b[k])) * w
                else:
                    for k in range(m):
                        acc[k] += (np.float64(a[k]) - np.float64(b[k])) * w
        else:
            a = src[p, min(max(i + top, 0), last)]
            for k in range(m):
                acc[k] = np.float64(a[k]) * fw[fw.size - 1]
            for jj in range(-half, top):
                a = src[p, min(max(i + jj, 0), last)]
                w = fw[half + jj]
                for k in range(m):
                    acc[k] += np.float64(a[k]) * w
        row = out[p, i]
        for k in range(m):
            row[k] = np.float32(acc[k])


def _pass_first(src, fw, symmetric, out):
    """Correlate along axis 0: the middle axis of the ``(1, n0, n1 * n2)`` view (whole planes)."""
    n0 = src.shape[0]
    _pass_middle(src.reshape(1, n0, -1), fw, symmetric, out.reshape(1, n0, -1))


def _pass_last(src, fw, symmetric, out):
    """Correlate along the last (contiguous) axis: scipy's own pass (short lines, where it is as
    fast as a numba loop)."""
    ndi.correlate1d(src, fw, axis=2, output=out, mode="nearest")


_PASSES = (_pass_first, _pass_middle, _pass_last)


def _pass(src, axis, sigma, order, truncate, out=None):
    """One axis of ``gaussian_filter`` (float32 in and out, C-contiguous), into ``out`` (a buffer of
    ``src``'s shape other than ``src``) if given."""
    out = np.empty_like(src) if out is None else out
    fw, symmetric = gaussian_weights(sigma, order, truncate)
    _PASSES[axis](src, fw, symmetric, out)
    return out


def gaussian_filter_nearest(image, sigma, order=(0, 0, 0), truncate=4.0, overwrite_input=False):
    """``scipy.ndimage.gaussian_filter(image, sigma, order, mode="nearest", truncate=truncate)`` of a
    3D float32 image, the same float32 values (sigma in voxels per axis; an axis with sigma 0 is
    left alone, as scipy does). ``overwrite_input``: a C-contiguous float32 ``image`` may serve as
    a pass's output buffer (the passes alternate between two volumes instead of three)."""
    out = np.ascontiguousarray(image, np.float32)
    spare = out if overwrite_input and out is image else None
    for axis in range(3):
        if float(sigma[axis]) > 1e-15:
            target = spare if spare is not None and spare is not out else None
            result = _pass(out, axis, sigma[axis], order[axis], truncate, target)
            spare, out = (out if overwrite_input else None), result
    if out is image and not overwrite_input:
        out = out.copy()
    return out


@njit("void(float32[:, :, ::1], int64[::1], int64[::1], int64[::1], float64[::1], int64, float32[::1])",
      cache=True, nogil=True, parallel=True)
def _pass_last_at(src, i_idx, j_idx, k_idx, fw, symmetric, out):
    """The last axis's correlation at the voxels ``(i_idx, j_idx, k_idx)`` only (the taps clamped
    to the line: mode nearest)."""
    half = fw.size // 2
    last = src.shape[2] - 1
    for n in prange(i_idx.size):
        line = src[i_idx[n], j_idx[n]]
        buf = np.empty(2 * half + 1, np.float64)
        for t in range(2 * half + 1):
            buf[t] = np.float64(line[min(max(k_idx[n] + t - half, 0), last)])
        out[n] = np.float32(_buffer_sum(buf, fw, symmetric, half))


def hessian_at(image, idx, sigma, truncate=4.0):
    """Second derivatives ``gaussian_filter(image, sigma, order=o, mode="nearest")[idx]`` for the six
    orders ``o`` of the Hessian, as an (N, 3, 3) float32 array (voxel units), the values of the six
    scipy calls bit for bit.

    Shared passes: axis 0 at orders 0, 1, 2 (3 volumes, one at a time), axis 1 on each (6), and
    axis 2 only at the voxels ``idx`` (sigma 0 on an axis is not supported: every axis is
    filtered, as scipy does for sigma > 0)."""
    img = np.ascontiguousarray(image, np.float32)
    if min(float(s) for s in sigma) <= 1e-15:
        raise ValueError("hessian_at needs a positive sigma on every axis")
    i_idx, j_idx, k_idx = (np.ascontiguousarray(i, np.int64) for i in idx)
    H = np.empty((i_idx.size, 3, 3), np.float32)
    values = np.empty(i_idx.size, np.float32)
    for o0 in range(3):
        p0 = _pass(img, 0, sigma[0], o0, truncate)
        for o1 in range(3 - o0):
            p1 = _pass(p0, 1, sigma[1], o1, truncate)
            o2 = 2 - o0 - o1
            fw, symmetric = gaussian_weights(sigma[2], o2, truncate)
            _pass_last_at(p1, i_idx, j_idx, k_idx, fw, symmetric, values)
            del p1
            a, b = [axis for axis, o in enumerate((o0, o1, o2)) for _ in range(o)]
            H[:, a, b] = values
            H[:, b, a] = values
        del p0
    return H


# --------------------------------------------------------------------------------------------
# Passes over each line's needed range only
# --------------------------------------------------------------------------------------------
# A region is a pair of (n0, n1) int64 arrays ``lo, hi``: the voxels ``k`` in ``[lo, hi)`` of each
# line ``(i, j, :)`` along the last axis (empty when ``hi <= lo``). The last pass is needed on the
# region of the voxels asked for, the middle pass on that region grown by the last kernel's
# radius along the line, the first pass on the union of the middle pass's regions of the lines
# within the middle kernel's radius; the values there are those of the whole volume's passes.


@njit("Tuple((int64[:, ::1], int64[:, ::1]))(boolean[:, :, ::1])", cache=True, nogil=True, parallel=True)
def line_ranges(where):  # pragma: no cover - compiled
    """The region (``lo, hi``) of each line's first to last ``True`` voxel of ``where``."""
    n0, n1, n2 = where.shape
    lo = np.zeros((n0, n1), np.int64)
    hi = np.zeros((n0, n1), np.int64)
    for i in prange(n0):
        for j in range(n1):
            first = -1
            last = -1
            for k in range(n2):
                if where[i, j, k]:
                    if first < 0:
                        first = k
                    last = k
            if first >= 0:
                lo[i, j] = first
                hi[i, j] = last + 1
    return lo, hi


@njit("Tuple((int64[:, ::1], int64[:, ::1]))(int64[:, ::1], int64[:, ::1], int64, int64)", cache=True, nogil=True, parallel=True)
def grown_along_line(lo, hi, reach, n2):  # pragma: no cover - compiled
    """Each non-empty range grown by ``reach`` voxels on both sides, cut to ``[0, n2)``."""
    n0, n1 = lo.shape
    glo = np.zeros((n0, n1), np.int64)
    ghi = np.zeros((n0, n1), np.int64)
    for i in prange(n0):
        for j in range(n1):
            if hi[i, j] > lo[i, j]:
                glo[i, j] = max(lo[i, j] - reach, 0)
                ghi[i, j] = min(hi[i, j] + reach, n2)
    return glo, ghi


@njit("Tuple((int64[:, ::1], int64[:, ::1]))(int64[:, ::1], int64[:, ::1], int64)", cache=True, nogil=True, parallel=True)
def union_across_lines(lo, hi, reach):  # pragma: no cover - compiled
    """Per line ``(i, j)``: the smallest range holding the non-empty ranges of the lines ``(i, j')``,
    ``|j' - j| <= reach``."""
    n0, n1 = lo.shape
    ulo = np.zeros((n0, n1), np.int64)
    uhi = np.zeros((n0, n1), np.int64)
    for i in prange(n0):
        for j in range(n1):
            a = np.int64(-1)
            b = np.int64(-1)
            for jj in range(max(j - reach, 0), min(j + reach + 1, n1)):
                if hi[i, jj] > lo[i, jj]:
                    if a < 0 or lo[i, jj] < a:
                        a = lo[i, jj]
                    if hi[i, jj] > b:
                        b = hi[i, jj]
            if a >= 0:
                ulo[i, j] = a
                uhi[i, j] = b
    return ulo, uhi


@njit(cache=True, inline="always")
def _first_tap(acc, a, w, m):  # pragma: no cover - compiled
    """``acc[:m] = a[:m] w`` in float64."""
    for k in range(m):
        acc[k] = np.float64(a[k]) * w


@njit(cache=True, inline="always")
def _add_taps(acc, a, b, w, m, symmetric):  # pragma: no cover - compiled
    """``acc[:m] += (a + b) w`` (symmetric 1), ``(a - b) w`` (-1) or ``a w`` (0), in float64."""
    if symmetric == 1:
        for k in range(m):
            acc[k] += (np.float64(a[k]) + np.float64(b[k])) * w
    elif symmetric == -1:
        for k in range(m):
            acc[k] += (np.float64(a[k]) - np.float64(b[k])) * w
    else:
        for k in range(m):
            acc[k] += np.float64(a[k]) * w


@njit(cache=True, inline="always")
def _store(row, acc, m):  # pragma: no cover - compiled
    """``row[:m] = float32(acc[:m])``."""
    for k in range(m):
        row[k] = np.float32(acc[k])


@njit(cache=True, inline="always")
def _tap_row(src, axis, i, j, t, k0, k1):  # pragma: no cover - compiled
    """Row ``t`` (edges repeated) along ``axis`` (0 or 1) of the line ``(i, j)``, voxels ``k0:k1``."""
    if axis == 0:
        return src[min(max(t, 0), src.shape[0] - 1), j, k0:k1]
    return src[i, min(max(t, 0), src.shape[1] - 1), k0:k1]


@njit(cache=True, inline="always")
def _line_on(src, axis, i, j, fw, symmetric, k0, k1, acc, out):  # pragma: no cover - compiled
    """The correlation along ``axis`` of the line ``(i, j)``, voxels ``k0:k1``, into ``out``
    (:func:`_pass_middle`'s arithmetic, per voxel in scipy's order)."""
    half = fw.size // 2
    top = fw.size - 1 - half
    c = i if axis == 0 else j
    m = k1 - k0
    if symmetric == 1 or symmetric == -1:
        _first_tap(acc, src[i, j, k0:k1], fw[half], m)
        for jj in range(-half, 0):
            _add_taps(acc, _tap_row(src, axis, i, j, c + jj, k0, k1), _tap_row(src, axis, i, j, c - jj, k0, k1),
                      fw[half + jj], m, symmetric)
    else:
        _first_tap(acc, _tap_row(src, axis, i, j, c + top, k0, k1), fw[fw.size - 1], m)
        for jj in range(-half, top):
            a = _tap_row(src, axis, i, j, c + jj, k0, k1)
            _add_taps(acc, a, a, fw[half + jj], m, 0)
    _store(out[i, j, k0:k1], acc, m)


@njit("void(float32[:, :, ::1], float64[::1], int64, int64[:, ::1], int64[:, ::1], float32[:, :, ::1])",
      cache=True, nogil=True, parallel=True)
def _pass_first_on(src, fw, symmetric, lo, hi, out):  # pragma: no cover - compiled
    """The axis-0 correlation on the region ``lo, hi`` only: one plane ``j`` per task, its lines in
    order (the taps' rows stay in cache)."""
    n0, n1, n2 = src.shape
    for j in prange(n1):
        acc = np.empty(n2, np.float64)
        for i in range(n0):
            if hi[i, j] > lo[i, j]:
                _line_on(src, 0, i, j, fw, symmetric, lo[i, j], hi[i, j], acc, out)


@njit("void(float32[:, :, ::1], float64[::1], int64, int64[:, ::1], int64[:, ::1], float32[:, :, ::1])",
      cache=True, nogil=True, parallel=True)
def _pass_middle_on(src, fw, symmetric, lo, hi, out):  # pragma: no cover - compiled
    """The axis-1 correlation on the region ``lo, hi`` only: one plane ``i`` per task."""
    n0, n1, n2 = src.shape
    for i in prange(n0):
        acc = np.empty(n2, np.float64)
        for j in range(n1):
            if hi[i, j] > lo[i, j]:
                _line_on(src, 1, i, j, fw, symmetric, lo[i, j], hi[i, j], acc, out)


@njit("void(float32[:, :, ::1], float64[::1], int64, int64[:, ::1], int64[:, ::1], float32[:, :, ::1])",
      cache=True, nogil=True, parallel=True)
def _pass_last_on(src, fw, symmetric, lo, hi, out):  # pragma: no cover - compiled
    """The last axis's correlation (scipy's ``correlate1d``, :func:`_buffer_sum`'s arithmetic) on the
    region ``lo, hi``; 0 elsewhere. Each line is copied to a float64 buffer padded with its edge
    values (mode nearest) and accumulated tap by tap over the range."""
    n0, n1, n2 = src.shape
    half = fw.size // 2
    top = fw.size - 1 - half
    for i in prange(n0):
        buf = np.empty(n2 + 2 * half + 1, np.float64)
        acc = np.empty(n2, np.float64)
        for j in range(n1):
            k0, k1 = lo[i, j], hi[i, j]
            line = src[i, j]
            row = out[i, j]
            if k1 <= k0:
                for k in range(n2):
                    row[k] = 0.0
                continue
            for k in range(k0):
                row[k] = 0.0
            for k in range(k1, n2):
                row[k] = 0.0
            for t in range(buf.size):  # buf[half + k] = line[clamp(k)]
                buf[t] = np.float64(line[min(max(t - half, 0), n2 - 1)])
            m = k1 - k0
            b0 = k0 + half  # buffer index of voxel k0
            if symmetric == 1 or symmetric == -1:
                _first_tap(acc, buf[b0:b0 + m], fw[half], m)
                for jj in range(-half, 0):
                    _add_taps(acc, buf[b0 + jj:b0 + jj + m], buf[b0 - jj:b0 - jj + m], fw[half + jj], m, symmetric)
            else:
                _first_tap(acc, buf[b0 + top:b0 + top + m], fw[fw.size - 1], m)
                for jj in range(-half, top):
                    a = buf[b0 + jj:b0 + jj + m]
                    _add_taps(acc, a, a, fw[half + jj], m, 0)
            _store(row[k0:k1], acc, m)


def _radius(sigma, truncate):
    """scipy's kernel radius ``int(truncate * sigma + 0.5)`` (voxels)."""
    return int(truncate * float(sigma) + 0.5)


def pass_regions(lo, hi, shape, sigma, truncate=4.0):
    """The regions the first and middle passes are needed on for the last pass on ``lo, hi``."""
    lo1, hi1 = grown_along_line(lo, hi, _radius(sigma[2], truncate), int(shape[2]))
    lo0, hi0 = union_across_lines(lo1, hi1, _radius(sigma[1], truncate))
    return (lo0, hi0), (lo1, hi1)


def gaussian_filter_nearest_on(images, sigma, where, truncate=4.0):
    """``scipy.ndimage.gaussian_filter(image, sigma, mode="nearest", truncate=truncate)`` of each 3D
    float32 image of ``images`` (a list, emptied: each image's buffer serves as its last pass's
    output) on each line's range of ``where`` (bool, the images' shape; from its first to its last
    ``True`` voxel along the last axis), 0 elsewhere: the same float32 values there, each pass
    computed only where the next one reads it (sigma > 0 on every axis, voxels). Returns the list
    of filtered images."""
    if min(float(s) for s in sigma) <= 1e-15:
        raise ValueError("gaussian_filter_nearest_on needs a positive sigma on every axis")
    lo, hi = line_ranges(np.ascontiguousarray(where, np.bool_))
    (lo0, hi0), (lo1, hi1) = pass_regions(lo, hi, where.shape, sigma, truncate)
    weights = [gaussian_weights(s, 0, truncate) for s in sigma]
    outs = []
    while images:
        img = np.ascontiguousarray(images.pop(0), np.float32)
        if img.shape != where.shape:
            raise ValueError(f"image {img.shape} and where {where.shape} differ")
        p0 = np.empty_like(img)
        _pass_first_on(img, *weights[0], lo0, hi0, p0)
        p1 = np.empty_like(img)
        _pass_middle_on(p0, *weights[1], lo1, hi1, p1)
        del p0
        _pass_last_on(p1, *weights[2], lo, hi, img)
        outs.append(img)
    return outs
