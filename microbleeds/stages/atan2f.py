"""glibc's float32 ``atan2f`` in numba, bit for bit, in a form LLVM vectorises.

numpy's float32 ``arctan2`` (and so ``np.angle`` of complex64) and numba's ``math.atan2`` on float32
call glibc's ``atan2f`` (glibc 2.36, x86-64: fdlibm's ``__ieee754_atan2f`` and ``__atanf``, float32
arithmetic, no fused multiply-adds): one call per value, which dominates the homodyne filter's phase
difference. :func:`atan2f_fast` is the same arithmetic for the common arguments (finite, non-zero,
``x != 1``, ``2^-29 <= |y / x| < 2^25``): ``atanf`` of ``|y / x|`` with the range reduction as one
division of selected operands, fdlibm's polynomial with its constants (read from glibc's table) and
the quadrant, all selects, no branches; the other arguments go to glibc (:func:`atan2f_array`). Checked
against ``math.atan2`` (tests/stages/test_kernels.py, :func:`libm_mismatches`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["atan2f_fast", "atan2f_array", "libm_mismatches"]


def _f32(bits):
    """The float32 of the IEEE bit pattern ``bits``."""
    return np.uint32(bits).view(np.float32)


# fdlibm s_atanf.c: atan(0.5), atan(1), atan(1.5), atan(inf) split in high and low parts
_H0, _H1, _H2, _H3 = (_f32(b) for b in (0x3EED6338, 0x3F490FDA, 0x3F7B985E, 0x3FC90FDA))
_L0, _L1, _L2, _L3 = (_f32(b) for b in (0x31AC3769, 0x33222168, 0x33140FB4, 0x33A22168))
_A0, _A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9, _A10 = (_f32(b) for b in (
    0x3EAAAAAB, 0xBE4CCCCD, 0x3E124925, 0xBDE38E38, 0x3DBA2E6E, 0xBD9D8795, 0x3D886B35, 0xBD6EF16B,
    0x3D4BDA59, 0xBD15A221, 0x3C8569D7))
# e_atan2f.c: pi and the low part subtracted in the left half-plane
_PI, _PI_LO = _f32(0x40490FDB), _f32(0xB3BBBD2E)
_ZERO, _ONE, _TWO, _THREE_HALVES = np.float32(0.0), np.float32(1.0), np.float32(2.0), np.float32(1.5)
_INF, _NAN = np.float32(np.inf), np.float32(np.nan)
_Q_MIN, _Q_MAX = np.float32(2.0**-29), np.float32(2.0**25)  # atanf's polynomial range
# atanf's reduction intervals: |x| below 7/16 (none), 11/16, 19/16, 39/16 (else -1/x)
_B0, _B1, _B2, _B3 = np.float32(0.4375), np.float32(0.6875), np.float32(1.1875), np.float32(2.4375)


@njit(inline="always", error_model="numpy")
def atan2f_fast(y, x):
    """``(atan2f(y, x), True)`` (glibc's value) for finite non-zero float32 ``y`` and ``x != 1`` with
    ``2^-29 <= |y / x| < 2^25``; ``(anything, False)`` for other arguments."""
    q = abs(y / x)
    ok = ((abs(x) < _INF) & (abs(y) < _INF) & (x != _ZERO) & (y != _ZERO) & (x != _ONE)
          & (q >= _Q_MIN) & (q < _Q_MAX))
    small, r0, r1, r2 = q < _B0, q < _B1, q < _B2, q < _B3
    num = q if small else ((_TWO * q - _ONE) if r0 else ((q - _ONE) if r1 else (
        (q - _THREE_HALVES) if r2 else -_ONE)))
    den = _ONE if small else ((_TWO + q) if r0 else ((q + _ONE) if r1 else (
        (_ONE + _THREE_HALVES * q) if r2 else q)))
    t = num / den  # q itself below 7/16
    hi = _H0 if r0 else (_H1 if r1 else (_H2 if r2 else _H3))
    lo = _L0 if r0 else (_L1 if r1 else (_L2 if r2 else _L3))
    z = t * t
    w = z * z
    s1 = z * (_A0 + w * (_A2 + w * (_A4 + w * (_A6 + w * (_A8 + w * _A10)))))
    s2 = w * (_A1 + w * (_A3 + w * (_A5 + w * (_A7 + w * _A9))))
    p = t * (s1 + s2)
    a = (t - p) if small else (hi - ((p - lo) - t))  # atanf(q)
    left = (_PI - (a - _PI_LO)) if y > _ZERO else ((a - _PI_LO) - _PI)
    right = -a if y < _ZERO else a
    return (right if x > _ZERO else left), ok


@njit(inline="always", error_model="numpy")
def atan2f_array(y, x, out):
    """``out[i] = atan2f(y[i], x[i])`` over 1D float32 arrays: a loop LLVM vectorises, then glibc for
    the arguments :func:`atan2f_fast` leaves (marked NaN, which it never returns)."""
    for i in range(out.size):
        v, ok = atan2f_fast(y[i], x[i])
        out[i] = v if ok else _NAN
    for i in range(out.size):
        if out[i] != out[i]:
            out[i] = math.atan2(y[i], x[i])


@njit("int64(float32[::1], float32[::1])", cache=True, parallel=True, error_model="numpy")
def libm_mismatches(y, x):
    """How many of the pairs ``(y[i], x[i])`` :func:`atan2f_array` gives other than ``math.atan2``
    (glibc's ``atan2f``): values and signs of zeros, NaN for NaN."""
    bad = 0
    for start in prange((y.size + 4095) // 4096):
        ys, xs = y[start * 4096:(start + 1) * 4096], x[start * 4096:(start + 1) * 4096]
        got = np.empty(ys.size, np.float32)
        atan2f_array(ys, xs, got)
        for i in range(ys.size):
            want = math.atan2(ys[i], xs[i])
            if not ((got[i] == want and math.copysign(1.0, got[i]) == math.copysign(1.0, want))
                    or (got[i] != got[i] and want != want)):
                bad += 1
    return bad
