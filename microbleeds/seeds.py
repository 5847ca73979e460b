"""Detect (seeds): dark-spot seeds from a 3D fast radial symmetry transform (FRST).

The FRST (Loy & Zelinsky 2003, IEEE PAMI 25:959) lets every voxel with a strong gradient vote
for the point one radius *against* its gradient: on a dark round focus the votes of the whole
rim meet at the centre, on a tube they spread along its axis, on a flat edge they spread along
a sheet. Bian et al. 2013 (NeuroImage: Clinical 2:282) used it per slice to propose microbleed
candidates on SWI; here it runs in 3D with radii in mm, so anisotropic voxels are handled by
the affine's voxel sizes and the result does not depend on which axis is the slice axis.

Responses are expressed relative to the response to an ideal dark ball of unit contrast with the
same radius on the same grid, so a focus of contrast ``c`` scores about ``c``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from scipy import ndimage as ndi



def strong_gradients(rel, voxel_size_mm, threshold):
    """Voxels whose gradient magnitude exceeds ``threshold`` (1/mm), in C order.

    Returns
    -------
    points : ndarray (n, 3) float32 voxel coordinates
    units : ndarray (n, 3) float32 unit gradient vectors in mm space
    magnitudes : ndarray (n,) float32 gradient magnitudes (1/mm)
    """
    vol = np.ascontiguousarray(rel, dtype=np.float32)
    vox = np.asarray(voxel_size_mm, dtype=np.float32)
    counts = np.zeros(vol.shape[0], np.int64)
    _count_strong(vol, vox, np.float32(threshold), counts)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    points = np.empty((offsets[-1], 3), np.float32)
    units = np.empty((offsets[-1], 3), np.float32)
    mags = np.empty(offsets[-1], np.float32)
    _fill_strong(vol, vox, np.float32(threshold), offsets, points, units, mags)
    return points, units, mags


@njit(cache=True, inline="always")
def _grad_at(vol, vox, i, j, k):
    gx = (vol[i + 1, j, k] - vol[i - 1, j, k]) / (2 * vox[0])
    gy = (vol[i, j + 1, k] - vol[i, j - 1, k]) / (2 * vox[1])
    gz = (vol[i, j, k + 1] - vol[i, j, k - 1]) / (2 * vox[2])
    return gx, gy, gz


@njit(cache=True, parallel=True)
def _count_strong(vol, vox, threshold, counts):
    nx, ny, nz = vol.shape
    t2 = threshold * threshold
    for i in prange(1, nx - 1):
        c = 0
        for j in range(1, ny - 1):
            for k in range(1, nz - 1):
                gx, gy, gz = _grad_at(vol, vox, i, j, k)
                if gx * gx + gy * gy + gz * gz > t2:
                    c += 1
        counts[i] = c


@njit(cache=True, parallel=True)
def _fill_strong(vol, vox, threshold, offsets, points, units, mags):
    nx, ny, nz = vol.shape
    t2 = threshold * threshold
    for i in prange(1, nx - 1):
        n = offsets[i]
        for j in range(1, ny - 1):
            for k in range(1, nz - 1):
                gx, gy, gz = _grad_at(vol, vox, i, j, k)
                g2 = gx * gx + gy * gy + gz * gz
                if g2 > t2:
                    g = np.sqrt(g2)
                    points[n, 0], points[n, 1], points[n, 2] = i, j, k
                    units[n, 0], units[n, 1], units[n, 2] = gx / g, gy / g, gz / g
                    mags[n] = g
                    n += 1


def strong_gradients_reference(rel, voxel_size_mm, threshold):
    """Plain numpy reference of :func:`strong_gradients` (for tests)."""
    grads = np.gradient(rel.astype(np.float64), *voxel_size_mm)
    norm = np.sqrt(sum(g ** 2 for g in grads))
    inner = np.zeros(rel.shape, bool)
    inner[1:-1, 1:-1, 1:-1] = True
    idx = np.nonzero((norm > threshold) & inner)
    units = np.stack([g[idx] for g in grads], axis=1) / norm[idx][:, None]
    return np.stack(idx, axis=1).astype(np.float32), units, norm[idx]


@njit(cache=True)
def _vote(points, units, mags, radius_mm, vox, orientation, magnitude):
    """Each gradient voxel votes at (point - radius * unit), split trilinearly (float32)."""
    nx, ny, nz = orientation.shape
    for p in range(points.shape[0]):
        tx = points[p, 0] - units[p, 0] * radius_mm / vox[0]
        ty = points[p, 1] - units[p, 1] * radius_mm / vox[1]
        tz = points[p, 2] - units[p, 2] * radius_mm / vox[2]
        x0 = int(np.floor(tx))
        y0 = int(np.floor(ty))
        z0 = int(np.floor(tz))
        fx = tx - x0
        fy = ty - y0
        fz = tz - z0
        for dx in range(2):
            wx = fx if dx else 1 - fx
            xi = x0 + dx
            if xi < 0 or xi >= nx:
                continue
            for dy in range(2):
                wy = fy if dy else 1 - fy
                yi = y0 + dy
                if yi < 0 or yi >= ny:
                    continue
                for dz in range(2):
                    wz = fz if dz else 1 - fz
                    zi = z0 + dz
                    if zi < 0 or zi >= nz:
                        continue
                    w = wx * wy * wz
                    orientation[xi, yi, zi] += w
                    magnitude[xi, yi, zi] += w * mags[p]


def vote_reference(points, units, mags, radius_mm, vox, shape):
    """Plain numpy reference of :func:`_vote` (for tests)."""
    orientation = np.zeros(shape, np.float64)
    magnitude = np.zeros(shape, np.float64)
    target = points - units * radius_mm / np.asarray(vox)
    base = np.floor(target).astype(int)
    frac = target - base
    for corner in np.ndindex(2, 2, 2):
        c = np.asarray(corner)
        w = np.prod(np.where(c, frac, 1 - frac), axis=1)
        pos = base + c
        ok = np.all((pos >= 0) & (pos < np.asarray(shape)), axis=1)
        np.add.at(orientation, tuple(pos[ok].T), w[ok])
        np.add.at(magnitude, tuple(pos[ok].T), w[ok] * mags[ok])
    return orientation, magnitude


@njit(cache=True)
def _vote_targets(points, units, radius_mm, vox, shape):
    """Lower corner of each point's vote target (-1 where it falls outside)."""
    n = points.shape[0]
    corners = np.empty((n, 3), np.int64)
    for p in range(n):
        for a in range(3):
            corners[p, a] = int(np.floor(points[p, a] - units[p, a] * radius_mm / vox[a]))
    return corners


@njit(cache=True)
def _collect_response(corners, orientation, magnitude, k_norm, scale, response):
    """At every voxel that received votes: response = max(response, scale * F_n), then clear
    the votes; F_n = (M / k) * min(O / k, 1)^2 (Loy & Zelinsky with alpha = 2), float32."""
    nx, ny, nz = orientation.shape
    for clear in range(2):
        for p in range(corners.shape[0]):
            for dx in range(2):
                xi = corners[p, 0] + dx
                if xi < 0 or xi >= nx:
                    continue
                for dy in range(2):
                    yi = corners[p, 1] + dy
                    if yi < 0 or yi >= ny:
                        continue
                    for dz in range(2):
                        zi = corners[p, 2] + dz
                        if zi < 0 or zi >= nz:
                            continue
                        if clear:
                            orientation[xi, yi, zi] = 0
                            magnitude[xi, yi, zi] = 0
                            continue
                        o = orientation[xi, yi, zi]
                        if o <= 0:
                            continue
                        ratio = min(o / k_norm, np.float32(1.0))
                        f = magnitude[xi, yi, zi] / k_norm * ratio * ratio * scale
                        if f > response[xi, yi, zi]:
                            response[xi, yi, zi] = f


def response_reference(orientation, magnitude, k_norm, scale, response):
    """Plain numpy reference of :func:`_collect_response` (for tests)."""
    f = np.where(orientation > 0, magnitude / k_norm * np.minimum(orientation / k_norm, 1.0) ** 2 * scale, 0)
    return np.maximum(response, f)


def ideal_ball(radius_mm, voxel_size_mm, contrast=1.0, supersample=5):
    """Dark ball (relative intensity 1 - contrast inside, 1 outside) with partial volume."""
    vox = np.asarray(voxel_size_mm, dtype=float)
    half = np.ceil((radius_mm + 3 * vox.max()) / vox).astype(int) + 1
    shape = tuple(2 * half + 1)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    inside = np.zeros(shape)
    for ox in offsets:
        for oy in offsets:
            for oz in offsets:
                grids = np.ogrid[tuple(slice(0, s) for s in shape)]
                dist2 = sum(((g + o - h) * v) ** 2 for g, o, h, v in zip(grids, (ox, oy, oz), half, vox))
                inside += dist2 <= radius_mm ** 2
    inside /= supersample ** 3
    return (1.0 - contrast * inside).astype(np.float32), tuple(half)


def calibrate(radius_mm, voxel_size_mm, threshold):
    """Normalisers of the FRST at ``radius_mm`` from an ideal unit-contrast ball on this grid.

    Returns
    -------
    k_norm : float
        Orientation votes collected at the ball's centre.
    scale : float
        1 / (F_n at the centre), so that the ideal ball scores 1.
    """
    ball, centre = ideal_ball(radius_mm, voxel_size_mm)
    vox = np.asarray(voxel_size_mm, dtype=np.float32)
    points, units, mags = strong_gradients(ball, vox, threshold)
    orientation = np.zeros(ball.shape, np.float32)
    magnitude = np.zeros(ball.shape, np.float32)
    _vote(points, units, mags, np.float32(radius_mm), vox, orientation, magnitude)
    k_norm = max(float(orientation[centre]), 1.0)
    f_centre = float(magnitude[centre]) / k_norm
    return k_norm, 1.0 / max(f_centre, 1e-6)


def frst_response(rel, voxel_size_mm, radii_mm, gradient_threshold):
    """Dark radial-symmetry response of ``rel``: max over radii, ~ the contrast of a focus.

    Parameters
    ----------
    rel : ndarray float32, 3D
        Relative intensity (tissue ~ 1).
    voxel_size_mm : sequence of 3 floats
    radii_mm : sequence of floats
        Radii of the foci to look for, mm (half the diameters).
    gradient_threshold : float
        Gradient magnitude (1/mm) below which a voxel does not vote; set it above the noise.

    Returns
    -------
    response : ndarray float32, same shape as ``rel``
    """
    vox = np.asarray(voxel_size_mm, dtype=np.float32)
    points, units, mags = strong_gradients(rel, vox, gradient_threshold)
    response = np.zeros(rel.shape, np.float32)
    orientation = np.zeros(rel.shape, np.float32)
    magnitude = np.zeros(rel.shape, np.float32)
    for radius in radii_mm:
        k_norm, scale = calibrate(radius, vox, gradient_threshold)
        _vote(points, units, mags, np.float32(radius), vox, orientation, magnitude)
        corners = _vote_targets(points, units, np.float32(radius), vox, rel.shape)
        _collect_response(corners, orientation, magnitude, np.float32(k_norm), np.float32(scale), response)
    return response


@njit(cache=True)
def _local_maxima(response, rel, mask, min_response, max_rel):
    """Voxels that are the maximum of their 3x3x3 neighbourhood (ties: first wins)."""
    nx, ny, nz = response.shape
    out = []
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                v = response[i, j, k]
                if v < min_response or not mask[i, j, k]:
                    continue
                best = True
                for di in range(-1, 2):
                    for dj in range(-1, 2):
                        for dk in range(-1, 2):
                            a, b, c = i + di, j + dj, k + dk
                            if a < 0 or b < 0 or c < 0 or a >= nx or b >= ny or c >= nz:
                                continue
                            w = response[a, b, c]
                            if w > v or (w == v and (di * 9 + dj * 3 + dk) < 0):
                                best = False
                if not best:
                    continue
                darkest = rel[i, j, k]
                for di in range(-1, 2):
                    for dj in range(-1, 2):
                        for dk in range(-1, 2):
                            a, b, c = i + di, j + dj, k + dk
                            if 0 <= a < nx and 0 <= b < ny and 0 <= c < nz and rel[a, b, c] < darkest:
                                darkest = rel[a, b, c]
                if darkest <= max_rel:
                    out.append((i, j, k))
    return out


def find_seeds(rel, mask, voxel_size_mm, radii_mm, noise_sigma, min_contrast):
    """Seed voxels of dark round foci, darkest first (so a deep focus is segmented before a
    fainter vein beside it can take its voxels).

    A seed is a local maximum of the FRST response with a response of at least half the
    minimum contrast, and a voxel at most ``1 - min_contrast / 2`` within one voxel of it.

    Returns
    -------
    seeds : ndarray (n, 3) int64 voxel indices
    response : ndarray float32 FRST response map
    """
    vox = np.asarray(voxel_size_mm, dtype=float)
    threshold = gradient_threshold(noise_sigma, vox)
    response = frst_response(rel, vox, radii_mm, threshold)
    found = _local_maxima(response, rel, mask, np.float32(0.5 * min_contrast), np.float32(1.0 - 0.5 * min_contrast))
    seeds = np.asarray(found, dtype=np.int64).reshape(-1, 3)
    if len(seeds):
        darkest = ndi.minimum_filter(rel, size=3)[tuple(seeds.T)]
        order = np.lexsort((seeds[:, 2], seeds[:, 1], seeds[:, 0], -response[tuple(seeds.T)], darkest))
        seeds = seeds[order]
    return seeds, response


def gradient_threshold(noise_sigma, voxel_size_mm, k=2.0):
    """Gradient magnitude (1/mm) that noise alone rarely exceeds: k x its expected size."""
    vox = np.asarray(voxel_size_mm, dtype=float)
    return float(k * noise_sigma * np.sqrt(np.sum(1.0 / (2.0 * vox ** 2))))
