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

from functools import lru_cache

import numpy as np
from numba import njit, prange


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


@njit(cache=True, nogil=True, parallel=True)
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


@njit(cache=True, nogil=True, parallel=True)
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


SLAB_PLANES = 4  # x-planes per work unit of the transform: small enough to stay in cache


@njit(cache=True, inline="always")
def _add_vote(votes, a, yi, zi, w, mag):
    """One corner's share ``w`` of a vote: ``O += w``, ``M += w * mag`` (side by side in memory)."""
    votes[a, yi, zi, 0] += w
    votes[a, yi, zi, 1] += w * mag


@njit(cache=True, inline="always")
def _vote_slab(points, units, mags, first, last, radius, vox, x0, x1, votes):
    """Votes of points[first:last] at ``point - radius * unit`` that land in planes [x0, x1).

    ``votes[..., 0]`` is ``O``, ``votes[..., 1]`` ``M``. A vote whose 8 corners all lie in the
    slab takes the unrolled path; the others test each corner. Either way each corner receives
    the same float64 weight ``(wx * wy) * wz`` added in float32, point by point."""
    ny, nz = votes.shape[1], votes.shape[2]
    for p in range(first, last):
        tx = points[p, 0] - units[p, 0] * radius / vox[0]
        xa = int(np.floor(tx))
        if xa + 1 < x0 or xa >= x1:
            continue
        ty = points[p, 1] - units[p, 1] * radius / vox[1]
        tz = points[p, 2] - units[p, 2] * radius / vox[2]
        ya = int(np.floor(ty))
        za = int(np.floor(tz))
        fx, fy, fz = tx - xa, ty - ya, tz - za
        mag = mags[p]
        if xa >= x0 and xa + 1 < x1 and ya >= 0 and ya + 1 < ny and za >= 0 and za + 1 < nz:
            gx, gy, gz = 1 - fx, 1 - fy, 1 - fz
            a = xa - x0
            _add_vote(votes, a, ya, za, gx * gy * gz, mag)
            _add_vote(votes, a, ya, za + 1, gx * gy * fz, mag)
            _add_vote(votes, a, ya + 1, za, gx * fy * gz, mag)
            _add_vote(votes, a, ya + 1, za + 1, gx * fy * fz, mag)
            _add_vote(votes, a + 1, ya, za, fx * gy * gz, mag)
            _add_vote(votes, a + 1, ya, za + 1, fx * gy * fz, mag)
            _add_vote(votes, a + 1, ya + 1, za, fx * fy * gz, mag)
            _add_vote(votes, a + 1, ya + 1, za + 1, fx * fy * fz, mag)
            continue
        for dx in range(2):
            xi = xa + dx
            if xi < x0 or xi >= x1:
                continue
            wx = fx if dx else 1 - fx
            for dy in range(2):
                yi = ya + dy
                if yi < 0 or yi >= ny:
                    continue
                wy = fy if dy else 1 - fy
                for dz in range(2):
                    zi = za + dz
                    if zi < 0 or zi >= nz:
                        continue
                    _add_vote(votes, xi - x0, yi, zi, wx * wy * (fz if dz else 1 - fz), mag)


@njit(cache=True, nogil=True, parallel=True)
def _frst_slabs(points, units, mags, plane_start, radii, band_start, k_norms, scales, vox, slab, response):
    """Fast radial symmetry transform, dark foci, max over radius bands (float32).

    Each gradient voxel votes at ``point - radius * unit`` (split trilinearly over 8 voxels):
    ``O`` counts votes, ``M`` sums gradient magnitudes. Band ``b`` holds the radii
    ``radii[band_start[b]:band_start[b + 1]]`` (sub-voxel steps), whose votes add up in one
    ``O, M`` pair, so a focus whose radius falls between two nominal radii, or whose edge is soft
    (blooming), still gathers its votes. Per band, ``F = (M / O) * min(O / k, 1)^2 * scale``:
    the mean gradient of the voters (which scales with contrast) times the radial strictness of
    Loy & Zelinsky (2003) with alpha = 2; ``response = max(response, F)``. (Loy & Zelinsky's
    ``M / k`` would let a large focus outscore its contrast in bands of smaller radius.) Work is split into
    slabs of ``slab`` x-planes, each owned by one thread with its own small vote buffer, so the
    result does not depend on threading (nor on ``slab``: a voxel's votes add up radius by radius,
    point by point). ``points`` must be sorted by x-plane; ``plane_start[i]`` is the first point of plane i.
    """
    nx, ny, nz = response.shape
    n_slabs = (nx + slab - 1) // slab
    for s in prange(n_slabs):
        x0 = s * slab
        x1 = min(x0 + slab, nx)
        votes = np.zeros((x1 - x0, ny, nz, 2), np.float32)  # O and M of a voxel in one cache line
        for band in range(band_start.shape[0] - 1):
            for q in range(band_start[band], band_start[band + 1]):
                reach = int(np.ceil(radii[q] / vox[0])) + 2
                first = plane_start[max(x0 - reach, 0)]
                last = plane_start[min(x1 + reach, nx)]
                _vote_slab(points, units, mags, first, last, radii[q], vox, x0, x1, votes)
            k = k_norms[band]
            for a in range(x1 - x0):
                for b in range(ny):
                    for c in range(nz):
                        o = votes[a, b, c, 0]
                        if o > 0:
                            ratio = min(o / k, np.float32(1.0))
                            f = votes[a, b, c, 1] / o * ratio * ratio * scales[band]
                            if f > response[x0 + a, b, c]:
                                response[x0 + a, b, c] = f
                            votes[a, b, c, 0] = 0
                            votes[a, b, c, 1] = 0


def radius_bands(radii_mm, voxel_size_mm):
    """Sub-radii of each nominal radius: from the geometric midpoint with the previous radius to
    the one with the next, in steps of half the smallest voxel (mm); radii below 3/4 of the
    smallest voxel are dropped. Returns a list of lists."""
    step = 0.5 * float(min(voxel_size_mm))
    # a radius below 3/4 of a voxel cannot be resolved: its votes land on the neighbours
    radii = sorted(float(r) for r in radii_mm if r >= 1.5 * step) or [1.5 * step]
    edges = [radii[0]] + [np.sqrt(a * b) for a, b in zip(radii[:-1], radii[1:])] + [radii[-1]]
    bands = []
    for lo, hi, centre in zip(edges[:-1], edges[1:], radii):
        n = max(1, int(np.ceil((hi - lo) / step)))
        sub = [centre] if hi - lo < 1e-9 else list(lo + (np.arange(n) + 0.5) * (hi - lo) / n)
        bands.append([round(float(x), 5) for x in sub])
    return bands


def _transform(points, units, mags, shape, bands, k_norms, scales, vox):
    """Run :func:`_frst_slabs` on gradient voxels (sorted by plane); returns the response."""
    response = np.zeros(shape, np.float32)
    plane_start = np.searchsorted(points[:, 0], np.arange(shape[0] + 1), side="left").astype(np.int64)
    radii = np.asarray([r for band in bands for r in band], np.float32)
    band_start = np.cumsum([0] + [len(band) for band in bands]).astype(np.int64)
    _frst_slabs(points, units, mags, plane_start, radii, band_start,
                np.asarray(k_norms, np.float32), np.asarray(scales, np.float32),
                np.asarray(vox, np.float32), SLAB_PLANES, response)
    return response


def vote_reference(points, units, mags, radius_mm, vox, shape):
    """Plain numpy votes of one radius: orientation and magnitude projection images."""
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


def frst_reference(points, units, mags, shape, bands, k_norms, scales, vox):
    """Plain numpy reference of :func:`_transform` (for tests)."""
    response = np.zeros(shape)
    for band, k, scale in zip(bands, k_norms, scales):
        o = np.zeros(shape)
        m = np.zeros(shape)
        for radius in band:
            o_r, m_r = vote_reference(points, units, mags, radius, vox, shape)
            o += o_r
            m += m_r
        f = np.where(o > 0, m / np.where(o > 0, o, 1) * np.minimum(o / k, 1.0) ** 2 * scale, 0)
        response = np.maximum(response, f)
    return response


def ideal_ball(radius_mm, voxel_size_mm, contrast=1.0, supersample=5):
    """Dark ball (relative intensity 1 - contrast inside, 1 outside) with partial volume."""
    vox = np.asarray(voxel_size_mm, dtype=float)
    half = np.ceil((radius_mm + 3 * vox.max()) / vox).astype(int) + 1
    shape = tuple(2 * half + 1)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    # squared distance along each axis, per sub-voxel offset: (offsets, voxels)
    tx, ty, tz = (((np.arange(n)[None, :] + offsets[:, None] - h) * v) ** 2 for n, h, v in zip(shape, half, vox))
    count = np.zeros(shape, np.int64)
    for ox in range(supersample):
        for oy in range(supersample):  # every z offset at once; (x + y) + z as a sum over the axes
            dist2 = (tx[ox][:, None] + ty[oy][None, :])[None, :, :, None] + tz[:, None, None, :]
            count += np.count_nonzero(dist2 <= radius_mm ** 2, axis=0)
    inside = count.astype(np.float64)
    inside /= supersample ** 3
    return (1.0 - contrast * inside).astype(np.float32), tuple(half)


@lru_cache(maxsize=64)
def calibrate(band, voxel_size_mm, threshold):
    """Normalisers of one FRST radius band from an ideal unit-contrast ball on this grid.

    The ball has the band's middle radius. Parameters are hashable (tuples) so that results
    are cached per grid.

    Returns
    -------
    k_norm : float
        Orientation votes collected at the ball's centre.
    scale : float
        1 / (mean voter gradient at the centre), so that the ideal ball scores 1.
    """
    radius = float(np.median(band))
    ball, centre = ideal_ball(radius, voxel_size_mm)
    points, units, mags = strong_gradients(ball, voxel_size_mm, threshold)
    o = m = 0.0
    for r in band:
        o_r, m_r = vote_reference(points, units, mags, r, voxel_size_mm, ball.shape)
        o, m = o + o_r[centre], m + m_r[centre]
    k_norm = max(float(o), 1.0)
    return k_norm, k_norm / max(float(m), 1e-6)


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
    vox = tuple(float(v) for v in voxel_size_mm)
    points, units, mags = strong_gradients(rel, vox, gradient_threshold)
    bands = radius_bands(radii_mm, vox)
    norms = [calibrate(tuple(band), vox, round(float(gradient_threshold), 9)) for band in bands]
    return _transform(points, units, mags, rel.shape, bands, [n[0] for n in norms],
                      [n[1] for n in norms], vox)


@njit(cache=True, nogil=True)
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

    Seeds are local maxima of the FRST response of at least half the minimum contrast, plus
    local minima of the locally averaged image at least ``min_contrast`` below background (a
    focus with a flat dark interior and soft edges has little radial symmetry at its centre);
    either kind needs a voxel at most ``1 - min_contrast / 2`` within one voxel of it; plus single
    dark voxels far from every other seed (:func:`_isolated_points`: foci narrower than a voxel) and, as deep,
    near other seeds where they are dark blobs (:func:`_near_points`: the small foci of a cluster). Which
    seeds are lesions is for segmentation and the rules to decide.

    Returns
    -------
    seeds : ndarray (n, 3) int64 voxel indices
    response : ndarray float32 FRST response map
    """
    vox = np.asarray(voxel_size_mm, dtype=float)
    threshold = gradient_threshold(noise_sigma, vox)
    response = frst_response(rel, vox, radii_mm, threshold)
    max_rel = np.float32(1.0 - 0.5 * min_contrast)
    symmetric = _local_maxima(response, rel, mask, np.float32(0.5 * min_contrast), max_rel)
    darkness = darkness_map(rel)
    dark = _local_maxima(darkness, rel, mask, np.float32(min_contrast), max_rel)
    found = [np.asarray(x, dtype=np.int64).reshape(-1, 3) for x in (symmetric, dark)]
    seeds = np.unique(np.concatenate(found), axis=0)
    seeds = np.unique(np.concatenate([seeds, _isolated_points(rel, mask, vox, seeds, min_contrast, noise_sigma,
                                                              max_rel)]), axis=0)
    if NEAR_POINTS:
        seeds = np.unique(np.concatenate([seeds, _near_points(rel, mask, vox, seeds, min_contrast, noise_sigma,
                                                              max_rel)]), axis=0)
    if len(seeds):
        offsets = np.array(list(np.ndindex(3, 3, 3))) - 1
        around = np.clip(seeds[:, None, :] + offsets[None], 0, np.array(rel.shape) - 1)
        darkest = rel[tuple(np.moveaxis(around, 2, 0))].min(axis=1)
        order = np.lexsort((seeds[:, 2], seeds[:, 1], seeds[:, 0], -response[tuple(seeds.T)], darkest))
        seeds = seeds[order]
    return seeds, response


BOX_CHUNK = 512
"""Columns of a row per work unit of :func:`_box3_middle` (a contiguous run, so the loop vectorises)."""


def darkness_map(rel):
    """``1 - scipy.ndimage.uniform_filter(rel, 3)`` of a float32 volume, bit for bit: scipy's
    reflected edges and per-line running sum in float64, rounded to float32 after each axis;
    the first two axes with the rows' voxels inner (vectorised), the last one line by line."""
    vol = np.ascontiguousarray(rel, dtype=np.float32)
    first = np.empty_like(vol)
    _box3_middle(vol.reshape(1, vol.shape[0], -1), first.reshape(1, vol.shape[0], -1))
    second = np.empty_like(vol)
    _box3_middle(first, second)
    _box3_last_darkness(second, first)
    return first


@njit(cache=True, nogil=True, parallel=True)
def _box3_middle(src, out):  # pragma: no cover - compiled
    """Mean of 3 along the middle axis of ``(p, n, m)``, scipy's running sum (reflect mode)."""
    n_p, n, m = src.shape
    n_chunks = (m + BOX_CHUNK - 1) // BOX_CHUNK
    for q in prange(n_p * n_chunks):
        p = q // n_chunks
        k0 = (q % n_chunks) * BOX_CHUNK
        w = min(k0 + BOX_CHUNK, m) - k0
        tmp = np.empty(w)
        head = src[p, 0]
        nxt = src[p, min(1, n - 1)]
        row = out[p, 0]
        for k in range(w):
            x0 = np.float64(head[k0 + k])
            tmp[k] = x0 + x0 + np.float64(nxt[k0 + k])
            row[k0 + k] = tmp[k] / 3.0
        for t in range(1, n):
            ahead = src[p, min(t + 1, n - 1)]
            behind = src[p, max(t - 2, 0)]
            row = out[p, t]
            for k in range(w):
                tmp[k] += np.float64(ahead[k0 + k]) - np.float64(behind[k0 + k])
                row[k0 + k] = tmp[k] / 3.0


@njit(cache=True, nogil=True, parallel=True)
def _box3_last_darkness(src, out):  # pragma: no cover - compiled
    """``1 -`` the mean of 3 along the last axis (scipy's running sum, reflect mode), float32."""
    n0, n1, n = src.shape
    for q in prange(n0 * n1):
        line = src[q // n1, q % n1]
        row = out[q // n1, q % n1]
        x0 = np.float64(line[0])
        tmp = x0 + x0 + np.float64(line[min(1, n - 1)])
        row[0] = np.float32(1.0) - np.float32(tmp / 3.0)
        for t in range(1, n):
            tmp += np.float64(line[min(t + 1, n - 1)]) - np.float64(line[max(t - 2, 0)])
            row[t] = np.float32(1.0) - np.float32(tmp / 3.0)


POINT_SIGMAS = 6.0
"""Depth, in noise sigmas, at which a single voxel darker than its 26 neighbours is a focus of its
own (``min_cnr``'s default: the CNR of a one-voxel focus)."""
POINT_ISOLATION_MM = 5.0
"""A single-voxel minimum seeds a focus only this far (mm) from every other seed: a focus narrower
than a voxel (1-1.5 mm at 1 x 1 x 2 mm) darkens one voxel, which neither its radial symmetry nor its
3 x 3 x 3 mean shows; nearer other seeds, the minimum is a point of a structure already seeded
(a vein, whose segments a watershed would otherwise cut at every dark voxel)."""


def _isolated_points(rel, mask, vox, seeds, min_contrast, noise_sigma, max_rel):
    """Single-voxel minima at least ``min_contrast`` and :data:`POINT_SIGMAS` noise sigmas deep,
    :data:`POINT_ISOLATION_MM` from every seed in ``seeds`` (voxel indices)."""
    depth = np.float32(max(min_contrast, POINT_SIGMAS * noise_sigma))
    points = np.asarray(_local_maxima(np.float32(1.0) - rel, rel, mask, depth, max_rel), dtype=np.int64).reshape(-1, 3)
    if len(points) == 0 or len(seeds) == 0:
        return points
    return points[_nearest_distance_mm(points * vox, np.asarray(seeds) * vox) > POINT_ISOLATION_MM]


NEAR_POINTS = True
"""Seed single-voxel minima near other seeds too when they are dark blobs of their own (:func:`_near_points`)."""
NEAR_POINT_GAP_VOX = 2
"""A minimum within this many voxels of a seed along every axis (Chebyshev) is that seed's focus."""


def _near_points(rel, mask, vox, seeds, min_contrast, noise_sigma, max_rel):
    """Single-voxel minima as deep as :func:`_isolated_points` asks but within
    :data:`POINT_ISOLATION_MM` of a seed (``seeds`` must hold the isolated points already: the others
    are near one) and more than :data:`NEAR_POINT_GAP_VOX` voxels from every seed along some axis,
    that are a dark blob at a microbleed's scale (:func:`dark_blobs`).

    A small focus of a cluster, one or two voxels across and 2-4 mm from a deeper neighbour, is a
    minimum of its own, but its rim's FRST votes are weak beside the neighbour's and its 3 x 3 x 3
    mean is no maximum; the isolation rule, there for the points of veins, drops it. A point of a
    vein is a tube at the focus's scale (one curvature near 0 along it), not a blob."""
    depth = np.float32(max(min_contrast, POINT_SIGMAS * noise_sigma))
    points = np.asarray(_local_maxima(np.float32(1.0) - rel, rel, mask, depth, max_rel), dtype=np.int64).reshape(-1, 3)
    seeds = np.asarray(seeds, np.int64).reshape(-1, 3)
    if len(points) == 0 or len(seeds) == 0:
        return points[:0]
    # beyond POINT_ISOLATION_MM of the other seeds, a minimum is an isolated point, a seed already
    points = points[~_near_seed(rel.shape, seeds, NEAR_POINT_GAP_VOX)[tuple(points.T)]]
    return points[dark_blobs(rel, points, vox)]


def _near_seed(shape, seeds, gap_vox):
    """Voxels within ``gap_vox`` voxels of a seed along every axis (a cube around each seed)."""
    near = np.zeros(shape, bool)
    near[tuple(seeds.T)] = True
    for axis in range(3):  # a cube is the product of three 1D dilations
        grown = near.copy()
        for step in range(1, gap_vox + 1):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(step, None), slice(None, -step)
            grown[tuple(lo)] |= near[tuple(hi)]
            grown[tuple(hi)] |= near[tuple(lo)]
        near = grown
    return near


def dark_blobs(rel, points, voxel_size_mm, chunk=128):
    """True for each of ``points`` (voxel indices (n, 3)) where ``rel`` is a dark blob at one of the
    sub-foci scales: the scale-normalised Hessian over the axes fine enough for the scale has all
    eigenvalues at least ``MIN_EIGENVALUE`` and within ``MIN_EIGEN_RATIO`` of each other
    (:func:`microbleeds.stages.subfoci.blob_scale`'s test, without its demand that a grid resolving all
    three axes at some scale show the blob in 3D: two foci stacked over adjacent thick slices are one
    in-plane blob whose curvature along the slices is negative). The Hessians are
    :func:`~microbleeds.stages.subfoci.point_hessian`'s, by chunks of points."""
    from .subfoci import AXIS_SCALE_RATIO, MIN_EIGEN_RATIO, MIN_EIGENVALUE, SCALES_MM, gaussian_kernels

    vox = np.asarray(voxel_size_mm, dtype=float)
    points = np.asarray(points, np.int64).reshape(-1, 3)
    found = np.zeros(len(points), bool)
    for sigma in SCALES_MM:
        axes = tuple(a for a in range(3) if vox[a] <= sigma / AXIS_SCALE_RATIO)
        todo = np.flatnonzero(~found)
        if len(axes) < 2 or len(todo) == 0:
            continue
        kernels = [gaussian_kernels(sigma / vox[a] if a in axes else 0.0, vox[a]) for a in range(3)]
        radius = [(len(k[0]) - 1) // 2 for k in kernels]
        orders = [(p, q) for p in range(len(axes)) for q in range(p, len(axes))]
        for start in range(0, len(todo), chunk):
            rows = todo[start:start + chunk]
            i, j, k = (_mirrored_indices(points[rows, a], radius[a], rel.shape[a]) for a in range(3))
            patches = np.asarray(rel[i[:, :, None, None], j[:, None, :, None], k[:, None, None, :]], np.float64)
            along_k = [patches @ kernels[2][o] for o in range(3)]  # (n, i, j) per derivative order
            hessian = np.empty((len(rows), len(axes), len(axes)))
            for p, q in orders:
                order = [0, 0, 0]
                order[axes[p]] += 1
                order[axes[q]] += 1
                value = (along_k[order[2]] @ kernels[1][order[1]]) @ kernels[0][order[0]]
                hessian[:, p, q] = hessian[:, q, p] = value
            eig = np.linalg.eigvalsh(sigma ** 2 * hessian)
            found[rows] = (eig[:, 0] >= MIN_EIGENVALUE) & (eig[:, 0] >= MIN_EIGEN_RATIO * eig[:, -1])
    return found


def _mirrored_indices(centres, radius, n):
    """Indices ``centres - radius ... centres + radius`` (n_points, 2 radius + 1) along an axis of ``n``
    voxels, mirrored beyond its faces as numpy's ``pad(mode="symmetric")`` (the edge voxel repeated),
    so a patch is read without padding the whole volume."""
    idx = np.mod(np.asarray(centres, np.int64)[:, None] + np.arange(-radius, radius + 1), 2 * n)
    return np.where(idx >= n, 2 * n - 1 - idx, idx)


def dark_blob_reference(rel, centre, voxel_size_mm):
    """One point of :func:`dark_blobs` from :func:`~microbleeds.stages.subfoci.point_hessian` (for tests)."""
    from .subfoci import AXIS_SCALE_RATIO, MIN_EIGEN_RATIO, MIN_EIGENVALUE, SCALES_MM, point_hessian

    vox = np.asarray(voxel_size_mm, dtype=float)
    for sigma in SCALES_MM:
        axes = tuple(a for a in range(3) if vox[a] <= sigma / AXIS_SCALE_RATIO)
        if len(axes) < 2:
            continue
        eig = np.linalg.eigvalsh(sigma ** 2 * point_hessian(rel, centre, sigma, vox, axes))
        if eig[0] >= MIN_EIGENVALUE and eig[0] >= MIN_EIGEN_RATIO * eig[-1]:
            return True
    return False


def _nearest_distance_mm(points_mm, others_mm, chunk=256):
    """Distance (mm) from each of ``points_mm`` (N, 3) to the nearest of ``others_mm`` (M, 3), by
    chunks of points (no scipy.spatial import on the detector's path: issue 14)."""
    out = np.empty(len(points_mm))
    for start in range(0, len(points_mm), chunk):
        diff = points_mm[start:start + chunk, None, :] - others_mm[None, :, :]
        out[start:start + chunk] = np.sqrt(np.min(np.einsum("pmk,pmk->pm", diff, diff), axis=1))
    return out


def gradient_threshold(noise_sigma, voxel_size_mm, k=2.0):
    """Gradient magnitude (1/mm) that noise alone rarely exceeds: k x its expected size."""
    vox = np.asarray(voxel_size_mm, dtype=float)
    return float(k * noise_sigma * np.sqrt(np.sum(1.0 / (2.0 * vox ** 2))))
