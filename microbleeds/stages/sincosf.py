"""glibc's float32 ``sinf`` / ``cosf`` in numba, bit for bit, inlined where a kernel needs both.

numpy's complex64 ``exp`` and numba's ``math.sin`` / ``math.cos`` on float32 call glibc's
``sinf`` / ``cosf`` (glibc >= 2.28, x86-64 FMA build): one call each per value, which dominates the
phase branch's kernels. :func:`sincosf` is the same algorithm (Szabolcs Nagy's: the argument reduced
by multiples of pi/2 in float64 below 120, an even or odd float64 polynomial in the reduced argument,
rounded to float32) written out with the same constants and fused multiply-adds, so LLVM inlines and
schedules it; beyond 120 (and for infinities and NaN) it calls glibc. The kernels check it against
``math.sin`` / ``math.cos`` (tests/stages/test_kernels.py; every float32 below 120 was compared once,
:func:`libm_mismatches`).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

__all__ = ["sincosf", "sincosf_reduced", "sincosf_array", "libm_mismatches"]


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (float64; LLVM's ``llvm.fma``)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d]))
        return builder.call(fn, args)

    return sig, codegen


# glibc sysdeps/ieee754/flt-32/s_sincosf.h, __sincosf_table[0] (the second entry negates the cosine's)
_HPI_INV = float.fromhex("0x1.45F306DC9C883p+23")  # 2 / pi, scaled by 2^24 (quadrant in bits 24..31)
_HPI = float.fromhex("0x1.921FB54442D18p0")  # pi / 2
_C0, _C1, _C2, _C3, _C4 = (float.fromhex(h) for h in (
    "0x1p0", "-0x1.ffffffd0c621cp-2", "0x1.55553e1068f19p-5", "-0x1.6c087e89a359dp-10", "0x1.99343027bf8c3p-16"))
_S1, _S2, _S3 = (float.fromhex(h) for h in ("-0x1.555545995a603p-3", "0x1.1107605230bc4p-7", "-0x1.994eb3774cf24p-13"))
# glibc's range tests compare the top 12 bits of |y|: |y| below these float32 values
_SMALL, _TINY, _LARGE = 0.75, 2.0 ** -12, 120.0


@njit(inline="always")
def sincosf_reduced(y):
    """``(sinf(y), cosf(y))`` of a float32 ``y`` with ``|y| < 120`` (glibc's values bit for bit),
    without branches: both polynomials in the argument reduced to ``[-pi/4, pi/4]``, the quadrant
    selecting (below 0.75 glibc skips the reduction, which then leaves the argument as it is; below
    2^-12 it returns ``y`` and 1). Other arguments give garbage: see :func:`sincosf`."""
    x = np.float64(y)
    # the quadrant, rounded, in int32 as glibc's ``(int32_t) r`` (|x * 2^24 * 2 / pi| < 2^31 below 120):
    # AVX2 converts four float64 to int32 at once, not to int64
    n = (np.int32(x * _HPI_INV) + np.int32(0x800000)) >> np.int32(24)
    xr = _fma(-np.float64(n), _HPI, x)
    q = n & 3
    xs = xr if (q == 0 or q == 3) else -xr
    x2 = xr * xr
    g = -1.0 if (n & 2) != 0 else 1.0  # the second table entry: the cosine polynomial negated
    x3 = xs * x2
    sine = _fma(x3 * x2, _fma(x2, _S3, _S2), _fma(x3, _S1, xs))
    x4 = x2 * x2
    cosine = _fma(x4 * x2, _fma(x2, g * _C4, g * _C3), _fma(x4, g * _C2, _fma(x2, g * _C1, g * _C0)))
    odd = (n & 1) == 1
    tiny = abs(y) < _TINY
    s = y if tiny else np.float32(cosine if odd else sine)
    c = np.float32(1.0) if tiny else np.float32(sine if odd else cosine)
    return s, c


@njit(inline="always")
def sincosf(y):
    """``(sinf(y), cosf(y))`` of a float32 ``y``, glibc's values bit for bit (glibc itself from 120)."""
    if abs(y) < _LARGE:
        return sincosf_reduced(y)
    return math.sin(y), math.cos(y)


@njit(inline="always")
def sincosf_array(x, s, c):
    """``s[i], c[i] = sincosf(x[i])`` over 1D float32 arrays: a loop LLVM vectorises, then glibc for
    the arguments from 120 (and infinities, NaN) if there are any."""
    n_out = 0
    for i in range(x.size):
        s[i], c[i] = sincosf_reduced(x[i])
        n_out += 0 if abs(x[i]) < _LARGE else 1
    if n_out:
        for i in range(x.size):
            if not abs(x[i]) < _LARGE:
                s[i], c[i] = math.sin(x[i]), math.cos(x[i])


@njit(inline="always")
def _same(a, b):
    """Equal, or both NaN."""
    return a == b or (a != a and b != b)


@njit("int64(float32[::1])", cache=True, parallel=True)
def libm_mismatches(values):
    """How many of ``values`` :func:`sincosf` gives other than ``math.sin`` / ``math.cos`` (glibc)."""
    bad = 0
    for start in prange((values.size + 4095) // 4096):
        x = values[start * 4096:(start + 1) * 4096]
        s = np.empty(x.size, np.float32)
        c = np.empty(x.size, np.float32)
        sincosf_array(x, s, c)
        for i in range(x.size):
            one, other = sincosf(x[i])
            if not (_same(s[i], math.sin(x[i])) and _same(c[i], math.cos(x[i])) and _same(one, s[i])
                    and _same(other, c[i])):
                bad += 1
    return bad
