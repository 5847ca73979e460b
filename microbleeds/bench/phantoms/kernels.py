"""Numba kernels of the phantom: tissue classification of the analytic head, label lookups,
vein tubes, susceptibility and signal on the fine grid.

Imported on first use (:mod:`.head`, :mod:`.simulate`), so ``import microbleeds.bench.phantoms``
does not load numba. Units: world coordinates in mm, ``te_s`` in s, ``ppp`` rad per ppm.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .params import (
    AIR,
    BRAINSTEM,
    CAUDATE,
    CB_GM,
    CB_WM,
    CSF,
    DENTATE,
    GM,
    MIDBRAIN,
    PALLIDUM,
    PUTAMEN,
    SCALP,
    SINUS,
    SKULL,
    THALAMUS,
    VENTRICLE,
    WM,
)


@njit(cache=True)
def _ell_q(x, y, z, ell, e):
    """Normalised quadratic form of ellipsoid row ``e`` at a world point (<= 1 inside)."""
    ux = (x - ell[e, 0]) / ell[e, 3]
    uy = (y - ell[e, 1]) / ell[e, 4]
    uz = (z - ell[e, 2]) / ell[e, 5]
    return ux * ux + uy * uy + uz * uz


@njit(cache=True)
def _ell_depth(x, y, z, ell, e):
    """Approximate signed distance (mm) to an ellipsoid's surface, positive inside."""
    ux = (x - ell[e, 0]) / ell[e, 3]
    uy = (y - ell[e, 1]) / ell[e, 4]
    uz = (z - ell[e, 2]) / ell[e, 5]
    q = math.sqrt(ux * ux + uy * uy + uz * uz)
    rmin = min(ell[e, 3], min(ell[e, 4], ell[e, 5]))
    if q < 1e-9:
        return rmin
    gx = ux / ell[e, 3]
    gy = uy / ell[e, 4]
    gz = uz / ell[e, 5]
    g = math.sqrt(gx * gx + gy * gy + gz * gz) / q
    d = (1.0 - q) / g
    if d > rmin:
        d = rmin
    return d


@njit(cache=True)
def _classify(x, y, z, ell, sc, waves):
    """Tissue class and depth below the outer brain surface (mm) of one world point (mm) of the
    analytic head. ``ell`` rows and ``sc`` entries are indexed by number here; their meaning is in
    :mod:`.head` (rows ``_E_*`` of ``_BASE_ELLIPSOIDS``, entries ``_S_*`` of ``_BASE_SCALARS``: sc[0-4]
    the tentorium, sc[5-7] the interhemispheric fissure, sc[8-10] CSF / skull / scalp thickness ...)."""
    cx = ell[0, 0]
    cy = ell[0, 1]
    ztent = sc[0] - sc[1] * abs(x - cx) + sc[2] * (y - sc[3])
    d_cer = _ell_depth(x, y, z, ell, 0)
    if y < sc[4]:
        dt = z - ztent
        if abs(x - cx) < sc[18] and y > sc[19]:
            dt += sc[20]
        if dt < d_cer:
            d_cer = dt
    if z > sc[5] or abs(y - cy) > sc[6]:
        df = abs(x - cx) - sc[7]
        if df < d_cer:
            d_cer = df
    d_cb = _ell_depth(x, y, z, ell, 1)
    dt = ztent - z
    if y >= sc[4]:
        dt = -1.0e3
    if dt < d_cb:
        d_cb = dt
    d_bs = _ell_depth(x, y, z, ell, 2)
    d_brain = max(d_cer, max(d_cb, d_bs))
    if d_brain < 0.0:
        if sc[16] > 0.5 and _ell_q(x, y, z, ell, 3) <= 1.0:
            return SINUS, d_brain
        if d_brain >= -sc[8]:
            return CSF, d_brain
        if d_brain >= -(sc[8] + sc[9]):
            return SKULL, d_brain
        if d_brain >= -(sc[8] + sc[9] + sc[10]):
            return SCALP, d_brain
        return AIR, d_brain
    if d_bs >= 0.0 and z < sc[15]:
        if _ell_q(x, y, z, ell, 15) <= 1.0 or _ell_q(x, y, z, ell, 16) <= 1.0:
            return MIDBRAIN, d_bs
        return BRAINSTEM, d_bs
    if d_cb >= 0.0 and d_cb >= d_cer:
        if _ell_q(x, y, z, ell, 17) <= 1.0 or _ell_q(x, y, z, ell, 18) <= 1.0:
            return DENTATE, d_cb
        if d_cb < sc[12]:
            return CB_GM, d_cb
        return CB_WM, d_cb
    if d_cer < 0.0:
        # inside the brainstem above its top only (rare): treat as white matter
        return WM, d_brain
    for e in range(4, 7):
        if _ell_q(x, y, z, ell, e) <= 1.0:
            return VENTRICLE, d_cer
    if _ell_q(x, y, z, ell, 11) <= 1.0 or _ell_q(x, y, z, ell, 12) <= 1.0:
        return PALLIDUM, d_cer
    if _ell_q(x, y, z, ell, 9) <= 1.0 or _ell_q(x, y, z, ell, 10) <= 1.0:
        return PUTAMEN, d_cer
    if _ell_q(x, y, z, ell, 7) <= 1.0 or _ell_q(x, y, z, ell, 8) <= 1.0:
        return CAUDATE, d_cer
    if _ell_q(x, y, z, ell, 13) <= 1.0 or _ell_q(x, y, z, ell, 14) <= 1.0:
        return THALAMUS, d_cer
    if d_cer < sc[11]:
        return GM, d_cer
    if d_cer < sc[13] + sc[11]:
        return _sulcal_class(x, y, z, d_cer, sc, waves), d_cer
    return WM, d_cer


@njit(cache=True)
def _sulcal_class(x, y, z, d_cer, sc, waves):
    """Class of a cerebral point within sulcal depth: sulcal CSF, the cortex lining the sulcus or
    white matter, from its distance to the zero-set of the sum of plane waves."""
    g = 0.0
    gx = 0.0
    gy = 0.0
    gz = 0.0
    for w in range(waves.shape[0]):
        arg = waves[w, 0] * x + waves[w, 1] * y + waves[w, 2] * z + waves[w, 3]
        g += math.sin(arg)
        cs = math.cos(arg)
        gx += waves[w, 0] * cs
        gy += waves[w, 1] * cs
        gz += waves[w, 2] * cs
    gn = math.sqrt(gx * gx + gy * gy + gz * gz)
    if gn > 1e-12:
        dist = abs(g) / gn
        if dist < sc[14] and d_cer < sc[13]:
            return CSF
        if dist < sc[14] + sc[11]:
            return GM
    return WM


@njit(cache=True, parallel=True)
def tissue_grid(mat, trans, shape, ell, sc, waves):
    """Analytic-head tissue class (uint8) at every point of the grid ``world = mat @ ijk + trans``."""
    lab = np.empty((shape[0], shape[1], shape[2]), dtype=np.uint8)
    for i in prange(shape[0]):
        for j in range(shape[1]):
            for k in range(shape[2]):
                x = mat[0, 0] * i + mat[0, 1] * j + mat[0, 2] * k + trans[0]
                y = mat[1, 0] * i + mat[1, 1] * j + mat[1, 2] * k + trans[1]
                z = mat[2, 0] * i + mat[2, 1] * j + mat[2, 2] * k + trans[2]
                lab[i, j, k] = _classify(x, y, z, ell, sc, waves)[0]
    return lab


@njit(cache=True)
def classify_points(pts, ell, sc, waves):
    """Analytic-head tissue class and depth below the brain surface (mm) of world points (N, 3)."""
    n = pts.shape[0]
    lab = np.empty(n, dtype=np.int64)
    dep = np.empty(n, dtype=np.float64)
    for p in range(n):
        lab[p], dep[p] = _classify(pts[p, 0], pts[p, 1], pts[p, 2], ell, sc, waves)
    return lab, dep


@njit(cache=True)
def stamp_tubes(pts, radii, inv, mat, trans, shape, h, frac):
    """Anti-aliased tube occupancy on a grid (max over the centre-line points)."""
    for p in range(pts.shape[0]):
        r = radii[p]
        qx = pts[p, 0] - trans[0]
        qy = pts[p, 1] - trans[1]
        qz = pts[p, 2] - trans[2]
        ci = inv[0, 0] * qx + inv[0, 1] * qy + inv[0, 2] * qz
        cj = inv[1, 0] * qx + inv[1, 1] * qy + inv[1, 2] * qz
        ck = inv[2, 0] * qx + inv[2, 1] * qy + inv[2, 2] * qz
        reach = max(r, 0.5 * h) + h
        lo = np.empty(3, dtype=np.int64)
        hi = np.empty(3, dtype=np.int64)
        cc = (ci, cj, ck)
        for a in range(3):
            rn = math.sqrt(inv[a, 0] ** 2 + inv[a, 1] ** 2 + inv[a, 2] ** 2)
            lo[a] = max(0, int(math.floor(cc[a] - reach * rn)))
            hi[a] = min(shape[a] - 1, int(math.ceil(cc[a] + reach * rn)))
        for i in range(lo[0], hi[0] + 1):
            for j in range(lo[1], hi[1] + 1):
                for k in range(lo[2], hi[2] + 1):
                    di = i - ci
                    dj = j - cj
                    dk = k - ck
                    dx = mat[0, 0] * di + mat[0, 1] * dj + mat[0, 2] * dk
                    dy = mat[1, 0] * di + mat[1, 1] * dj + mat[1, 2] * dk
                    dz = mat[2, 0] * di + mat[2, 1] * dj + mat[2, 2] * dk
                    d = math.sqrt(dx * dx + dy * dy + dz * dz)
                    if r >= 0.5 * h:
                        f = (r - d) / h + 0.5
                    else:
                        f = 3.0 * r * r / (h * h) * (1.0 - d / h)
                    if f > 1.0:
                        f = 1.0
                    if f > frac[i, j, k]:
                        frac[i, j, k] = f


@njit(cache=True, parallel=True)
def chi_grid(lab, frac, chi_lut, chi_vein):
    """Susceptibility (ppm, float32): tissue ``chi_lut[lab]`` mixed with venous blood by ``frac``."""
    out = np.empty(lab.shape, dtype=np.float32)
    for i in prange(lab.shape[0]):
        for j in range(lab.shape[1]):
            for k in range(lab.shape[2]):
                f = frac[i, j, k]
                out[i, j, k] = (1.0 - f) * chi_lut[lab[i, j, k]] + f * chi_vein
    return out


@njit(cache=True, parallel=True)
def signal_decimate(lab, frac, fld, m0_lut, r2_lut, m0_vein, r2_vein, te_s, ppp, os_, ashape):
    """GRE signal ``M0 exp(-R2* TE) exp(i ppp fld)`` on the fine grid, complex-averaged over the
    ``os_`` fine voxels of each acquisition voxel; returns (complex64 signal, venous fraction)."""
    out = np.empty((ashape[0], ashape[1], ashape[2]), dtype=np.complex64)
    vfrac = np.empty((ashape[0], ashape[1], ashape[2]), dtype=np.float32)
    mt_lut = np.empty(m0_lut.shape[0], dtype=np.float64)
    for t in range(m0_lut.shape[0]):
        mt_lut[t] = m0_lut[t] * math.exp(-r2_lut[t] * te_s)
    mv = m0_vein * math.exp(-r2_vein * te_s)
    n = os_[0] * os_[1] * os_[2]
    for I in prange(ashape[0]):  # noqa: E741 (I, J, K: acquisition voxel, i, j, k: fine voxel)
        for J in range(ashape[1]):
            for K in range(ashape[2]):
                sre = 0.0
                sim = 0.0
                sf = 0.0
                for u in range(os_[0]):
                    i = I * os_[0] + u
                    for v in range(os_[1]):
                        j = J * os_[1] + v
                        for w in range(os_[2]):
                            k = K * os_[2] + w
                            f = frac[i, j, k]
                            m = (1.0 - f) * mt_lut[lab[i, j, k]] + f * mv
                            phi = ppp * fld[i, j, k]
                            sre += m * math.cos(phi)
                            sim += m * math.sin(phi)
                            sf += f
                out[I, J, K] = complex(sre / n, sim / n)
                vfrac[I, J, K] = sf / n
    return out, vfrac


@njit(cache=True, parallel=True)
def lookup_grid(vol, vinv, vtrans, mat, trans, shape):
    """Nearest-neighbour lookup of a label volume at the voxel centres of another grid."""
    out = np.zeros((shape[0], shape[1], shape[2]), dtype=np.uint8)
    n0, n1, n2 = vol.shape
    for i in prange(shape[0]):
        for j in range(shape[1]):
            for k in range(shape[2]):
                x = mat[0, 0] * i + mat[0, 1] * j + mat[0, 2] * k + trans[0] - vtrans[0]
                y = mat[1, 0] * i + mat[1, 1] * j + mat[1, 2] * k + trans[1] - vtrans[1]
                z = mat[2, 0] * i + mat[2, 1] * j + mat[2, 2] * k + trans[2] - vtrans[2]
                a = int(math.floor(vinv[0, 0] * x + vinv[0, 1] * y + vinv[0, 2] * z + 0.5))
                b = int(math.floor(vinv[1, 0] * x + vinv[1, 1] * y + vinv[1, 2] * z + 0.5))
                c = int(math.floor(vinv[2, 0] * x + vinv[2, 1] * y + vinv[2, 2] * z + 0.5))
                if 0 <= a < n0 and 0 <= b < n1 and 0 <= c < n2:
                    out[i, j, k] = vol[a, b, c]
    return out


@njit(cache=True)
def lookup_points(vol, dep, vinv, vtrans, pts):
    """Nearest-neighbour label and depth (mm) of a label volume at world points (N, 3); outside the
    volume: label 0, depth -100."""
    n = pts.shape[0]
    lab = np.zeros(n, dtype=np.int64)
    d = np.full(n, -100.0)
    for p in range(n):
        x = pts[p, 0] - vtrans[0]
        y = pts[p, 1] - vtrans[1]
        z = pts[p, 2] - vtrans[2]
        a = int(math.floor(vinv[0, 0] * x + vinv[0, 1] * y + vinv[0, 2] * z + 0.5))
        b = int(math.floor(vinv[1, 0] * x + vinv[1, 1] * y + vinv[1, 2] * z + 0.5))
        c = int(math.floor(vinv[2, 0] * x + vinv[2, 1] * y + vinv[2, 2] * z + 0.5))
        if 0 <= a < vol.shape[0] and 0 <= b < vol.shape[1] and 0 <= c < vol.shape[2]:
            lab[p] = vol[a, b, c]
            d[p] = dep[a, b, c]
    return lab, d


@njit(cache=True, parallel=True)
def paint_ellipsoid(lab, mat, trans, e, value):
    """Set ``lab`` to ``value`` (in place) inside ellipsoid row ``e`` (cx, cy, cz, rx, ry, rz mm)."""
    for i in prange(lab.shape[0]):
        for j in range(lab.shape[1]):
            for k in range(lab.shape[2]):
                x = mat[0, 0] * i + mat[0, 1] * j + mat[0, 2] * k + trans[0]
                y = mat[1, 0] * i + mat[1, 1] * j + mat[1, 2] * k + trans[1]
                z = mat[2, 0] * i + mat[2, 1] * j + mat[2, 2] * k + trans[2]
                q = (((x - e[0]) / e[3]) ** 2 + ((y - e[1]) / e[4]) ** 2
                     + ((z - e[2]) / e[5]) ** 2)
                if q <= 1.0:
                    lab[i, j, k] = value
