"""Numba kernels of :mod:`.dipole` (imported on first use, so importing the bench loads no numba)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def spatial_dipole(shape, vs, b):
    """Sampled real-space unit dipole ``v (3 cos^2 theta - 1) / (4 pi r^3)`` (float32) on a periodic
    grid of ``shape`` with voxel sizes ``vs`` (mm), minimum-image distances, 0 at the origin."""
    out = np.empty((shape[0], shape[1], shape[2]), dtype=np.float32)
    vol = vs[0] * vs[1] * vs[2] / (4.0 * math.pi)
    for i in prange(shape[0]):
        ii = i if i <= shape[0] // 2 else i - shape[0]
        x = ii * vs[0]
        for j in range(shape[1]):
            jj = j if j <= shape[1] // 2 else j - shape[1]
            y = jj * vs[1]
            for k in range(shape[2]):
                kk = k if k <= shape[2] // 2 else k - shape[2]
                z = kk * vs[2]
                r2 = x * x + y * y + z * z
                if r2 == 0.0:
                    out[i, j, k] = 0.0
                else:
                    pb = x * b[0] + y * b[1] + z * b[2]
                    out[i, j, k] = vol * (3.0 * pb * pb / r2 - 1.0) / (r2 * math.sqrt(r2))
    return out


@njit(cache=True, parallel=True)
def source_factor_kernel(mat, trans, lo, pshape, centre, radius, chi_ppm, bdir, ppp,
                         inside_amp, max_sub, factor, frac):
    """Fill ``factor`` (complex ``mean(w exp(i phi))``) and ``frac`` (fraction inside the sphere)
    for each voxel of the patch starting at voxel ``lo`` (see :func:`.dipole.source_factor`)."""
    n0, n1, n2 = pshape[0], pshape[1], pshape[2]
    vs = np.empty(3)
    for a in range(3):
        vs[a] = math.sqrt(mat[0, a] ** 2 + mat[1, a] ** 2 + mat[2, a] ** 2)
    half_diag = 0.5 * math.sqrt(vs[0] ** 2 + vs[1] ** 2 + vs[2] ** 2)
    amp = abs(ppp * chi_ppm) / 3.0
    a3 = radius ** 3
    total = n0 * n1 * n2
    for flat in prange(total):
        i = flat // (n1 * n2)
        rem = flat - i * n1 * n2
        j = rem // n2
        k = rem - j * n2
        fi = lo[0] + i
        fj = lo[1] + j
        fk = lo[2] + k
        cx = mat[0, 0] * fi + mat[0, 1] * fj + mat[0, 2] * fk + trans[0] - centre[0]
        cy = mat[1, 0] * fi + mat[1, 1] * fj + mat[1, 2] * fk + trans[1] - centre[1]
        cz = mat[2, 0] * fi + mat[2, 1] * fj + mat[2, 2] * fk + trans[2] - centre[2]
        rc = math.sqrt(cx * cx + cy * cy + cz * cz)
        reff = rc - half_diag
        if reff < radius:
            reff = radius
        # largest phase gradient near this voxel (rad / mm), |grad| <= 6 amp a^3 / r^4
        grad = 6.0 * amp * a3 / reff ** 4
        nsub = np.empty(3, dtype=np.int64)
        for a in range(3):
            n = int(math.ceil(grad * vs[a] / 0.5))
            if rc - half_diag <= radius:
                nres = int(math.ceil(vs[a] / (radius / 3.0)))
                if nres > n:
                    n = nres
                if n < 3:
                    n = 3
            if n < 1:
                n = 1
            if n > max_sub:
                n = max_sub
            nsub[a] = n
        sre = 0.0
        sim = 0.0
        nin = 0
        for u in range(nsub[0]):
            du = (u + 0.5) / nsub[0] - 0.5
            for v in range(nsub[1]):
                dv = (v + 0.5) / nsub[1] - 0.5
                for w in range(nsub[2]):
                    dw = (w + 0.5) / nsub[2] - 0.5
                    px = cx + mat[0, 0] * du + mat[0, 1] * dv + mat[0, 2] * dw
                    py = cy + mat[1, 0] * du + mat[1, 1] * dv + mat[1, 2] * dw
                    pz = cz + mat[2, 0] * du + mat[2, 1] * dv + mat[2, 2] * dw
                    r2 = px * px + py * py + pz * pz
                    if r2 <= radius * radius:
                        sre += inside_amp
                        nin += 1
                    else:
                        pb = px * bdir[0] + py * bdir[1] + pz * bdir[2]
                        cos2 = pb * pb / r2
                        r3 = r2 * math.sqrt(r2)
                        phi = ppp * (chi_ppm / 3.0) * (a3 / r3) * (3.0 * cos2 - 1.0)
                        sre += math.cos(phi)
                        sim += math.sin(phi)
        nt = nsub[0] * nsub[1] * nsub[2]
        factor[i, j, k] = complex(sre / nt, sim / nt)
        frac[i, j, k] = nin / nt
