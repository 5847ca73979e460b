"""Prepare: brain mask, background normalisation and noise level of a magnitude volume.

All functions take canonical arrays and voxel sizes in mm. The heavy lifting is done on a
coarse (~2 mm) grid, since the brain outline and the background vary slowly.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

COARSE_MM = 2.0
"""Grid of the mask and the background, mm: the brain outline and the background vary slowly."""
AIR_LEVEL = 0.1
"""Air is darker than this fraction of bright tissue (98th percentile)."""
AIR_FRACTION = 0.1
"""A field of view with more air voxels than this fraction shows the head's outline."""
COARSE_SMOOTH_VOX = 0.5
"""Gaussian sigma on the coarse grid before thresholding, voxels: removes single-voxel noise."""
MIN_N4_VOXELS = 1000
"""N4 needs a volume of at least this many coarse voxels (~8 ml at 2 mm) to fit a bias field."""
OPENING_PER_VOXEL = 2.0
MAX_OPENING_MM = 6.0
"""The opening radius grows with the slice thickness (2 x the largest voxel size, 6 mm at most):
on 0.9 x 0.9 x 3 mm and 2D 5 mm GRE with a coil array the scalp stayed attached through 4 mm
(masks 1.2-1.36 x the truth's intracranial volume on the phantoms, 0.97-1.05 with 6 mm); on thin
slices 6 mm cut off brain (0.35-0.77), so they keep 4 mm."""
RESTORE_MM = 3.0
"""After the opening, the brain grows back into the tissue by at most this (mm): the surface the
opening rounded off, but not across the dark skull to the scalp (0: by the opening radius)."""
CLOSING_MM = 3.0
"""Closing radius of the brain mask, mm: closes sulci and vessels at the brain's surface."""
OUTLINE_MM = 10.0
"""Closing radius (mm) of the brain's outline, within which faint tissue joins the mask: a
microbleed blooms to at most ~10 mm, and a dark focus at the surface cut a notch that deep."""
HULL_OPENING_MM = 3.0
"""Opening radius (mm) of the faint tissue added in the brain's convex hull (:func:`faint_in_hull`):
as the mask's closing (:data:`CLOSING_MM`), the skull's partial volume in a notch of the brain is
thinner; on the 53 phantoms 4 mm left 76 ml more brain out, 2 mm took 12 ml more skull in (0 = off).
"""
MIN_HULL_VOXELS = 10
"""A slice's hull is taken where the brain has at least this many voxels of the coarse grid there."""
FAINT_FRACTION = 0.4
"""Faint tissue is above this fraction of the tissue threshold (air, noise-floor subtracted, is
near zero; the darkest brain under a coil array's weakest profile sits at 0.6-0.7 of it)."""
DENSITY_FLOOR = 1e-3
"""Normalised convolution: below this fraction of the densest weight a coarse voxel has no estimate."""
NOISE_IF_UNMEASURABLE = 0.05
"""Relative noise assumed when the mask has no neighbouring pair of voxels (SNR 20)."""
MAD_TO_SIGMA = 1.4826
"""Median absolute deviation to standard deviation of a normal distribution."""
FLOOR_SAMPLES = 2_000_000
"""Voxels sampled (deterministic stride) for the noise-floor histogram."""
FLOOR_BINS = 256
"""Bins of the noise-floor histogram, from 0 to the 99.5th percentile."""
FLOOR_MIN_FRACTION = 0.05
"""A background population holds at least this fraction of the field of view."""
FLOOR_MAX_SIGMAS = 16.0
"""Pure noise sits at most this many noise sigmas above zero: the mean of a central chi
magnitude is about ``sigma sqrt(2N)``, 1.25 sigma for one channel (Rician), 8 for 32 coils,
11.3 for 64 (mean / std 16). Tissue sits at its SNR, 15 and more on a usable T2*-weighted scan."""
FLOOR_MAX_OF_TISSUE = 0.5
"""The background population is darker than half the median of the voxels above it."""
BRAIN_VOLUME_RANGE_ML = (600.0, 2200.0)
"""Plausible adult intracranial volume of a whole-brain mask (ml): CSF is bright on T2*-weighted
images and the mask closes the sulci, so it follows the inner skull (adult ICV ~1100-1900 ml)."""
MAX_SECTION_CM2 = 250.0
"""Largest plausible brain cross-section (cm2) in any plane: an adult brain is at most about
19 cm long, 15 cm wide and 14 cm high (the ellipse of 19 x 15 cm is 224 cm2)."""
FILLS_FOV = 0.95
"""A mask holding more than this fraction of the field of view found no background."""
TOUCH_FRACTION = 0.02
"""The field of view cuts the brain where the mask covers more than this fraction of a face."""


def block_factors(voxel_size_mm, target_mm=COARSE_MM):
    """Integer down-sampling factor per axis that brings voxels close to ``target_mm``."""
    return tuple(max(1, int(round(target_mm / v))) for v in voxel_size_mm)


def block_mean(volume, factors, square=False):
    """Mean over non-overlapping blocks of ``factors`` voxels (partial blocks at the far edges);
    with ``square``, the block means of ``volume ** 2`` (squared in float32, summed in float64)."""
    factors = np.asarray(factors, np.int64)
    shape = tuple(int(-(-n // f)) for n, f in zip(volume.shape, factors))
    sums = np.zeros(shape, np.float64)
    counts = np.zeros(shape, np.float64)
    _block_sums_all(volume.astype(np.float32, copy=False), factors, bool(square), sums, counts)
    return (sums / np.maximum(counts, 1)).astype(np.float32)


@njit(cache=True, nogil=True, parallel=True)
def _block_sums_all(volume, factors, square, sums, counts):
    """Per-block sums of every voxel (or its float32 square) and counts; as :func:`_block_sums`
    with ``include`` all true (same order of additions), without the mask or the squared copy:
    each line's voxels added block by block (a block's voxels are a run of the line)."""
    nx, ny, nz = volume.shape
    cx, cy, cz = sums.shape
    for bx in prange(cx):
        for i in range(bx * factors[0], min((bx + 1) * factors[0], nx)):
            for j in range(ny):
                by = j // factors[1]
                line = volume[i, j]
                block = sums[bx, by]
                tally = counts[bx, by]
                for bz in range(cz):
                    acc = block[bz]
                    k1 = min((bz + 1) * factors[2], nz)
                    for k in range(bz * factors[2], k1):
                        v = line[k]
                        if square:
                            v = v * v
                        acc += v
                    block[bz] = acc
                    tally[bz] += k1 - bz * factors[2]


def block_sums(volume, include, factors, reference=None, cutoff=0.0):
    """Sum and count of ``volume`` over the voxels of each block where ``include`` holds.

    With ``reference`` (a coarse array) and ``cutoff`` > 0, a voxel also needs
    ``volume >= cutoff * reference[its block]``.
    """
    factors = np.asarray(factors, np.int64)
    shape = tuple(int(-(-n // f)) for n, f in zip(volume.shape, factors))
    if reference is None:
        reference = np.zeros((1, 1, 1), np.float32)
        cutoff = 0.0
    sums = np.zeros(shape, np.float64)
    counts = np.zeros(shape, np.float64)
    _block_sums(volume.astype(np.float32, copy=False), include, factors,
                reference.astype(np.float32, copy=False), np.float32(cutoff), sums, counts)
    return sums, counts


@njit(cache=True, nogil=True, parallel=True)
def _block_sums(volume, include, factors, reference, cutoff, sums, counts):
    """Per-block masked sums (float32 in, float64 out); each thread owns whole coarse x-planes."""
    nx, ny, nz = volume.shape
    cx = sums.shape[0]
    for bx in prange(cx):
        for i in range(bx * factors[0], min((bx + 1) * factors[0], nx)):
            for j in range(ny):
                by = j // factors[1]
                for k in range(nz):
                    if not include[i, j, k]:
                        continue
                    bz = k // factors[2]
                    v = volume[i, j, k]
                    if cutoff > 0 and v < cutoff * reference[bx, by, bz]:
                        continue
                    sums[bx, by, bz] += v
                    counts[bx, by, bz] += 1.0


def block_sums_reference(volume, include, factors, reference=None, cutoff=0.0):
    """Plain numpy reference of :func:`block_sums` (for tests)."""
    shape = tuple(int(-(-n // f)) for n, f in zip(volume.shape, factors))
    sums = np.zeros(shape)
    counts = np.zeros(shape)
    idx = np.indices(volume.shape).reshape(3, -1).T
    blocks = idx // np.asarray(factors)
    keep = include.ravel().copy()
    values = volume.ravel().astype(np.float64)
    if reference is not None and cutoff > 0:
        keep &= values >= cutoff * reference[tuple(blocks.T)]
    np.add.at(sums, tuple(blocks[keep].T), values[keep])
    np.add.at(counts, tuple(blocks[keep].T), 1.0)
    return sums, counts


def upsample_nearest(coarse, factors, shape):
    """Each fine voxel takes the value of the coarse block it lies in."""
    out = np.empty(shape, coarse.dtype)
    _upsample_nearest(coarse, np.asarray(factors, np.int64), out)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _upsample_nearest(coarse, factors, out):
    nx, ny, nz = out.shape
    kz = np.arange(nz) // factors[2]
    for i in prange(nx):
        for j in range(ny):
            src = coarse[i // factors[0], j // factors[1]]
            row = out[i, j]
            for k in range(nz):
                row[k] = src[kz[k]]


def fortran_copy(array):
    """A 3D array (any strides, e.g. a reoriented view) copied into Fortran (column-major) order,
    the voxel order of a NIfTI file: writing it is then one copy of memory, not a transposition."""
    out = np.empty(array.shape[::-1], array.dtype)
    _fortran_copy(array, out)
    return out.T


def c_order_copy(array):
    """A C-contiguous copy of a 3D array of any strides (e.g. a NIfTI file's Fortran-ordered
    voxels, reoriented): where the source's first axis is its fastest, the tiled copy of
    :func:`fortran_copy` (a plain copy crawls across memory); otherwise
    :func:`numpy.ascontiguousarray`."""
    strides = [abs(s) for s in array.strides] if array.ndim == 3 else []
    if array.ndim != 3 or array.dtype != np.float32 or array.flags.c_contiguous or strides[0] != min(strides):
        return np.ascontiguousarray(array)
    out = np.empty(array.shape, array.dtype)
    _fortran_copy(array.T, out)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _fortran_copy(array, out):
    """out[k, j, i] = array[i, j, k] in 32 x 32 tiles of (i, k) per j (reads and writes stay in cache)."""
    nx, ny, nz = array.shape
    for j in prange(ny):
        for i0 in range(0, nx, 32):
            for k0 in range(0, nz, 32):
                for i in range(i0, min(i0 + 32, nx)):
                    for k in range(k0, min(k0 + 32, nz)):
                        out[k, j, i] = array[i, j, k]


def n4_correct(volume, mask=None, shrink=1, iterations=(20, 20, 10)):
    """Bias-field-correct a (coarse) volume with SimpleITK's N4; returns float32."""
    import SimpleITK as sitk  # slow to import: only for presets with bias correction

    image = sitk.GetImageFromArray(np.maximum(volume, 1e-6).astype(np.float32))
    mask_image = sitk.OtsuThreshold(image, 0, 1, 200) if mask is None else sitk.GetImageFromArray(mask.astype(np.uint8))
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(iterations))
    try:
        out = corrector.Execute(image, mask_image)
    except RuntimeError:
        return volume.astype(np.float32)
    return sitk.GetArrayFromImage(out).astype(np.float32)


def _ball(radius_vox):
    """Ellipsoidal structuring element with per-axis radius in voxels."""
    r = [max(0, int(np.floor(x))) for x in radius_vox]
    grids = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    dist = sum((g / max(x, 1e-6)) ** 2 for g, x in zip(grids, radius_vox))
    return dist <= 1.0


def binary_dilation(mask, structure):
    """:func:`scipy.ndimage.binary_dilation` of a 3D mask by a symmetric structuring element of odd
    sizes (e.g. :func:`_ball`), beyond the array False: the same voxels, in parallel."""
    return _morph(mask, structure, False)


def binary_erosion(mask, structure):
    """:func:`scipy.ndimage.binary_erosion` (border False) by a symmetric odd-sized structure."""
    return _morph(mask, structure, True)


def binary_opening(mask, structure):
    """:func:`scipy.ndimage.binary_opening`: erosion, then dilation, by the same structure."""
    return binary_dilation(binary_erosion(mask, structure), structure)


def binary_closing(mask, structure):
    """:func:`scipy.ndimage.binary_closing` (border False): dilation, then erosion."""
    return binary_erosion(binary_dilation(mask, structure), structure)


def _morph(mask, structure, erode):
    """Dilation or erosion by a structure made of rows along the last axis, each a run
    ``-r..r`` (an ellipsoid's): per voxel, each row's test is one look-up of the distance along
    the last axis to the nearest True (dilation) or False (erosion; beyond the array is False)."""
    structure = np.asarray(structure, bool)
    if structure.ndim != 3 or any(n % 2 == 0 for n in structure.shape) or not np.array_equal(
            structure, structure[::-1, ::-1, ::-1]):
        raise ValueError("binary morphology: a symmetric 3D structure of odd sizes is needed")
    centre = np.array(structure.shape) // 2
    rows = []
    for a, b in zip(*np.nonzero(structure.any(axis=2))):
        run = np.flatnonzero(structure[a, b]) - centre[2]
        if not np.array_equal(run, np.arange(run[0], -run[0] + 1)):
            raise ValueError("binary morphology: each row of the structure must be one centred run")
        rows.append((a - centre[0], b - centre[1], -run[0]))
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    near = np.empty(mask.shape, np.int32)
    _run_distance(mask, bool(erode), near)
    out = np.empty(mask.shape, np.bool_)
    _morph_rows(near, np.array(rows, np.int64).reshape(-1, 3), bool(erode), out)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _run_distance(mask, erode, near):
    """Distance (voxels) along the last axis to the nearest True voxel (``erode``: False voxel,
    beyond the array counting as False); 2**30 where the line has none."""
    nx, ny, nz = mask.shape
    big = 1 << 30
    for q in prange(nx * ny):
        i = q // ny
        j = q % ny
        last = -big if not erode else -1
        for k in range(nz):
            if mask[i, j, k] != erode:
                last = k
            near[i, j, k] = k - last if last > -big else big
        last = big if not erode else nz
        for k in range(nz - 1, -1, -1):
            if mask[i, j, k] != erode:
                last = k
            if last < big and last - k < near[i, j, k]:
                near[i, j, k] = last - k


@njit(cache=True, nogil=True, parallel=True)
def _morph_rows(near, rows, erode, out):
    """Per voxel: any row within reach of a True voxel (dilation), or every row in the array and
    farther than its reach from a False voxel (erosion)."""
    nx, ny, nz = near.shape
    m = rows.shape[0]
    for q in prange(nx * ny):
        i = q // ny
        j = q % ny
        for k in range(nz):
            hit = erode
            for t in range(m):
                a = i + rows[t, 0]
                b = j + rows[t, 1]
                inside = 0 <= a < nx and 0 <= b < ny
                if erode:
                    if not inside or near[a, b, k] <= rows[t, 2]:
                        hit = False
                        break
                elif inside and near[a, b, k] <= rows[t, 2]:
                    hit = True
                    break
            out[i, j, k] = hit


def has_background(volume) -> bool:
    """True when the field of view contains air around the head.

    Air shows as a large population (over 10 %) of voxels below a tenth of the bright tissue
    level. A crop entirely inside the brain has none, and then every voxel is brain.
    """
    bright = np.percentile(volume, 98)
    return np.mean(volume < AIR_LEVEL * bright) > AIR_FRACTION


def noise_floor(magnitude):
    """The background noise floor of a magnitude volume, or None when it shows no background.

    Air in a magnitude image is pure noise: Rician for one receive channel (mean about 1.25
    sigma), a central chi with ``2N`` degrees of freedom for ``N`` coils combined by sum of
    squares (mean about ``sigma sqrt(2N)``, never near zero), zero where the scanner masks it.
    Its population is the lowest mode of the histogram; it is taken for background when it
    holds at least :data:`FLOOR_MIN_FRACTION` of the field of view, its level is at most
    :data:`FLOOR_MAX_SIGMAS` times its own local noise (neighbour differences: pure noise has
    no structure) and below :data:`FLOOR_MAX_OF_TISSUE` of the tissue above it. A crop
    inside the brain has no such population.

    Returns
    -------
    dict or None
        ``level`` (the mode), ``mean_square`` (mean of M^2 over the population, what the
        background adds to a voxel's M^2), ``sigma`` (noise sigma from the neighbour
        differences), ``fraction`` and ``effective_channels`` (``mean_square / (2 sigma^2)``:
        1 for Rician, N for N coils of equal noise).
    """
    step = max(1, int(np.ceil((magnitude.size / FLOOR_SAMPLES) ** 0.5)))
    sub = np.asarray(magnitude[:, ::step, ::step], dtype=np.float32)
    values = sub.ravel()
    top = float(np.percentile(values, 99.5))
    if not top > 0:
        return None
    zero = float(np.mean(values <= top * 1e-6))
    if zero >= FLOOR_MIN_FRACTION:
        return {"level": 0.0, "mean_square": 0.0, "sigma": 0.0, "fraction": round(zero, 4),
                "effective_channels": None, "kind": "zero-filled"}
    counts, edges = np.histogram(values, bins=FLOOR_BINS, range=(0.0, top))
    smooth = ndi.gaussian_filter1d(counts.astype(np.float64), 1.5)
    peaks = np.flatnonzero((smooth[1:-1] >= smooth[:-2]) & (smooth[1:-1] > smooth[2:])) + 1
    if smooth[0] > smooth[1]:
        peaks = np.concatenate([[0], peaks])
    width = edges[1] - edges[0]
    for peak in peaks:
        level = float(edges[peak] + width / 2)
        # the population: the peak down to where the histogram falls to a quarter of it
        above = np.flatnonzero(smooth[peak:] < 0.25 * smooth[peak])
        if not above.size or smooth[peak:peak + above[0]].max() > smooth[peak]:
            continue  # a shoulder of a larger mode above it, not a population of its own
        hi = edges[peak + above[0]]
        below = np.flatnonzero(smooth[:peak + 1][::-1] < 0.25 * smooth[peak])
        lo = edges[peak - below[0] + 1] if below.size else 0.0
        inside = (values >= lo) & (values <= hi)
        fraction = float(inside.mean())
        if fraction < FLOOR_MIN_FRACTION / 2:
            continue  # a small bump (a few voxels): look further up
        if fraction < FLOOR_MIN_FRACTION:
            return None
        pair = (sub[1:] >= lo) & (sub[1:] <= hi) & (sub[:-1] >= lo) & (sub[:-1] <= hi)
        diff = (sub[1:] - sub[:-1])[pair]
        if diff.size < 100:
            return None
        local = MAD_TO_SIGMA * float(np.median(np.abs(diff - np.median(diff)))) / np.sqrt(2.0)
        tissue = values[values > hi]
        if tissue.size == 0 or local <= 0:
            return None
        if level > FLOOR_MAX_SIGMAS * local or level > FLOOR_MAX_OF_TISSUE * float(np.median(tissue)):
            return None
        # pure noise of N channels: std of the magnitude ~0.66-0.71 sigma; sigma ~ local / 0.68
        mean_square = float(np.mean(values[inside].astype(np.float64) ** 2))
        sigma = local / 0.68
        return {"level": round(level, 6), "mean_square": mean_square, "sigma": round(sigma, 6),
                "fraction": round(fraction, 4),
                "effective_channels": round(mean_square / (2.0 * sigma * sigma), 2), "kind": "noise"}
    return None


@njit(cache=True, inline="always")
def _voronoi_line(f, n, coor, d, s, g, out):
    """scipy's ``_VoronoiFT`` on one line: ``f`` (n, 3) the line's features (component 0 < 0:
    none yet), ``coor`` the line's position on the other axes, ``s`` the sampling; the nearest
    feature of each point into ``out`` (n, 3); returns False (``out`` untouched) without features."""
    top = -1
    for ii in range(n):
        if f[ii, 0] >= 0:
            fd = np.float64(f[ii, d])
            wR = 0.0
            for jj in range(3):
                if jj != d:
                    tw = np.float64(f[ii, jj] - coor[jj]) * s[jj]
                    wR += tw * tw
            while top >= 1:
                idx1 = g[top]
                f1 = np.float64(f[idx1, d])
                idx2 = g[top - 1]
                a = (f1 - np.float64(f[idx2, d])) * s[d]
                b = (fd - f1) * s[d]
                c = a + b
                uR = 0.0
                vR = 0.0
                for jj in range(3):
                    if jj != d:
                        cc = np.float64(coor[jj])
                        tu = (np.float64(f[idx2, jj]) - cc) * s[jj]
                        tv = (np.float64(f[idx1, jj]) - cc) * s[jj]
                        uR += tu * tu
                        vR += tv * tv
                if c * vR - b * uR - a * wR - a * b * c <= 0.0:
                    break
                top -= 1
            top += 1
            g[top] = ii
    last = top
    if last < 0:
        return False
    top = 0
    for ii in range(n):
        delta1 = 0.0
        for jj in range(3):
            t = np.float64(f[g[top], jj] - (ii if jj == d else coor[jj])) * s[jj]
            delta1 += t * t
        while top < last:
            delta2 = 0.0
            for jj in range(3):
                t = np.float64(f[g[top + 1], jj] - (ii if jj == d else coor[jj])) * s[jj]
                delta2 += t * t
            if delta1 <= delta2:
                break
            delta1 = delta2
            top += 1
        for jj in range(3):
            out[ii, jj] = f[g[top], jj]
    return True


@njit(cache=True, nogil=True, parallel=True)
def _feature_transform(inside, s, ft, dist, want_dist):
    """scipy's exact Euclidean feature transform (Maurer et al. 2003, ``_ComputeFT``): ``ft``
    (3, n0, n1, n2) int32 the nearest voxel where ``inside`` is False; with ``want_dist`` its
    distance (mm, ``s`` the sampling) into ``dist`` as scipy computes it."""
    n0, n1, n2 = inside.shape
    shape = (n0, n1, n2)
    for d in range(3):
        a1 = 1 if d == 0 else 0
        a2 = 1 if d == 2 else 2
        m1, m2 = shape[a1], shape[a2]
        n = shape[d]
        for q in prange(m1 * m2):
            u = q // m2
            v = q % m2
            f = np.empty((n, 3), np.int64)
            out = np.empty((n, 3), np.int64)
            g = np.empty(n, np.int64)
            coor = np.zeros(3, np.int64)
            coor[a1] = u
            coor[a2] = v
            idx = np.zeros(3, np.int64)
            idx[a1] = u
            idx[a2] = v
            for t in range(n):
                idx[d] = t
                if d == 0:
                    if inside[idx[0], idx[1], idx[2]]:
                        f[t, 0] = -1
                        f[t, 1] = 0
                        f[t, 2] = 0
                    else:
                        f[t, 0] = t
                        f[t, 1] = idx[1]
                        f[t, 2] = idx[2]
                else:
                    for jj in range(3):
                        f[t, jj] = ft[jj, idx[0], idx[1], idx[2]]
            src = out if _voronoi_line(f, n, coor, d, s, g, out) else f
            for t in range(n):
                idx[d] = t
                for jj in range(3):
                    ft[jj, idx[0], idx[1], idx[2]] = src[t, jj]
    if want_dist:
        for i in prange(n0):
            for j in range(n1):
                for k in range(n2):
                    a = np.float64(ft[0, i, j, k] - i) * s[0]
                    b = np.float64(ft[1, i, j, k] - j) * s[1]
                    c = np.float64(ft[2, i, j, k] - k) * s[2]
                    dist[i, j, k] = np.sqrt(a * a + b * b + c * c)


def distance_transform_edt(inside, sampling=None, return_distances=True, return_indices=False):
    """:func:`scipy.ndimage.distance_transform_edt` of a 3D array, its values bit for bit (the same
    feature transform, tie-breaking and float64 arithmetic), its lines in parallel; distances in
    the units of ``sampling`` (per-axis voxel size, default 1), indices int32 (3, ...)."""
    inside = np.ascontiguousarray(np.asarray(inside, dtype=bool))
    if inside.ndim != 3:
        raise ValueError(f"distance_transform_edt: a 3D array is needed, got {inside.ndim}D")
    s = np.ones(3) if sampling is None else np.broadcast_to(np.asarray(sampling, np.float64), (3,)).copy()
    ft = np.empty((3,) + inside.shape, np.int32)
    dist = np.empty(inside.shape if return_distances else (0, 0, 0), np.float64)
    _feature_transform(inside, s, ft, dist, bool(return_distances))
    out = [x for x, want in ((dist, return_distances), (ft, return_indices)) if want]
    return out[0] if len(out) == 1 else tuple(out)


FLOOR_SMOOTH_MM = 15.0
"""Gaussian sigma (mm) of the local noise-floor map: a coil array's profile varies slowly."""
FLOOR_AIR_RATIO = 2.0
"""On the coarse grid a block is air while its mean M^2 stays below this times the local floor
(tissue at SNR 15 or more over a floor of at most 8 sigma is 3.5 times above it)."""
FLOOR_PASSES = 4
"""Passes of the local floor map: each lets the air reach where the floor is higher."""


def gaussian_nearest(image, sigma, truncate=4.0):
    """``scipy.ndimage.gaussian_filter(image, sigma, mode="nearest")`` of a 3D float64 image, the
    same float64 values (sigma in voxels per axis; 0 leaves an axis alone, as scipy does), each
    axis in a parallel numba pass with scipy's per-voxel order of operations
    (:mod:`microbleeds.stages.gaussian` does the same for float32)."""
    out = np.ascontiguousarray(image, np.float64)
    for axis in range(3):
        if float(sigma[axis]) <= 1e-15:
            continue
        fw = _gaussian_taps(sigma[axis], truncate)
        result = np.empty_like(out)
        if not np.array_equal(fw, fw[::-1]):
            ndi.correlate1d(out, fw, axis=axis, output=result, mode="nearest")
        elif axis == 2:
            _symmetric_last64(out, fw, result)
        elif axis == 0:
            _symmetric_pass64(out.reshape(1, out.shape[0], -1), fw, result.reshape(1, out.shape[0], -1))
        else:
            _symmetric_pass64(out, fw, result)
        out = result
    return out.copy() if out is image else out


@njit(cache=True, nogil=True, parallel=True)
def _symmetric_last64(src, fw, out):
    """Correlate the last (contiguous) axis of a float64 volume with a symmetric kernel, mode
    nearest, as scipy does: each line padded with its end values, then per voxel ``x[0] w[0]``
    and ``+ (x[-j] + x[j]) w[-j]`` from the farthest tap in (the taps outer and the voxels inner,
    so the loop over the line vectorises; each voxel's sum keeps that order)."""
    n0, n1, n = src.shape
    half = fw.size // 2
    w0 = fw[half]
    for q in prange(n0 * n1):
        i = q // n1
        j = q % n1
        line = src[i, j]
        buf = np.empty(n + 2 * half)
        for t in range(n + 2 * half):
            buf[t] = line[min(max(t - half, 0), n - 1)]
        acc = np.empty(n)
        for k in range(n):
            acc[k] = buf[k + half] * w0
        for jj in range(-half, 0):
            w = fw[half + jj]
            lo = buf[half + jj:half + jj + n]
            hi = buf[half - jj:half - jj + n]
            for k in range(n):
                acc[k] += (lo[k] + hi[k]) * w
        row = out[i, j]
        for k in range(n):
            row[k] = acc[k]


def _gaussian_taps(sigma, truncate):
    """The float64 correlation weights of ``scipy.ndimage.gaussian_filter1d`` (order 0)."""
    from scipy.ndimage._filters import _gaussian_kernel1d

    radius = int(truncate * float(sigma) + 0.5)
    return np.ascontiguousarray(_gaussian_kernel1d(float(sigma), 0, radius)[::-1], np.float64)


@njit(cache=True, nogil=True, parallel=True)
def _symmetric_pass64(src, fw, out):
    """Correlate the middle axis of ``(p, n, m)`` float64 with a symmetric kernel, mode nearest:
    per voxel ``x[0] w[0]`` then ``+ (x[-j] + x[j]) w[-j]`` from the farthest tap in (scipy's
    order), a contiguous row of ``m`` at a time."""
    n_p, n, m = src.shape
    half = fw.size // 2
    last = n - 1
    for q in prange(n_p * n):
        p = q // n
        i = q % n
        row = out[p, i]
        centre = src[p, i]
        w0 = fw[half]
        for k in range(m):
            row[k] = centre[k] * w0
        for jj in range(-half, 0):
            a = src[p, min(max(i + jj, 0), last)]
            b = src[p, min(max(i - jj, 0), last)]
            w = fw[half + jj]
            for k in range(m):
                row[k] += (a[k] + b[k]) * w


def local_floor(square, mean_square, coarse_mm):
    """Local background mean of M^2 on the coarse grid (``square``: block means of M^2).

    Prescan-normalised coil-array images have a noise floor that rises where the coils see
    least; the floor is followed by normalised smoothing over the air blocks, in a few passes
    starting from the global ``mean_square``, and carried into the head from the air around it.
    """
    floor = np.full(square.shape, mean_square, np.float32)
    sigma = [FLOOR_SMOOTH_MM / c for c in coarse_mm]
    for _ in range(FLOOR_PASSES):
        air = square < FLOOR_AIR_RATIO * floor
        if not air.any():
            break
        num = gaussian_nearest(np.where(air, square, 0).astype(np.float64), sigma)
        den = gaussian_nearest(air.astype(np.float64), sigma)
        known = den > 0.05
        if not known.any():
            break
        estimate = np.where(known, num / np.maximum(den, 1e-12), 0.0)
        if not known.all():
            estimate = fill_from_nearest(estimate, ~known)
        floor = np.maximum(estimate, mean_square).astype(np.float32)
    return floor


def brain_mask(magnitude, voxel_size_mm, bias_correction=True, opening_mm=4.0):
    """Automatic brain mask of a magnitude / SWI volume.

    The background's noise floor (:func:`noise_floor`) is taken off first: on the ~2 mm grid
    each block's signal is ``sqrt(mean(M^2) - floor)``, with ``floor`` the background's mean
    of M^2 (for Rician and non-central chi magnitudes alike, ``E[M^2] = A^2 + 2 N sigma^2``),
    so that air is near zero even where a coil array's sum of squares keeps it far from zero.
    Then threshold (Otsu) after optional N4 bias-field correction; opening to cut the scalp
    loose (``opening_mm``, at least :data:`OPENING_PER_VOXEL` times the largest voxel size up to
    :data:`MAX_OPENING_MM`: thick slices partial-volume the skull where it runs oblique to them,
    and a coil array's bright scalp then bridges it), largest connected component grown back by
    at most :data:`RESTORE_MM` into the tissue, the faint tissue inside its outline added
    (:func:`inside_outline`: Otsu's threshold can fall inside the tissue's range where a coil array
    sees the head's centre least, and the faint region, reaching the surface, is no hole), then the
    faint tissue filling the brain's convex hull in its axial slices (:func:`faint_in_hull`: where
    that faint region is wider than the outline bridges), closing
    and hole filling, so that dark foci and veins inside the brain stay in the mask. Without a
    background (a crop inside the brain) every voxel is brain; :func:`mask_checks` says whether
    that is plausible.

    Parameters
    ----------
    magnitude : ndarray, 3D
    voxel_size_mm : sequence of 3 floats
    bias_correction : bool
        Run N4 on the coarse image before thresholding (helps strong receive-coil bias).
    opening_mm : float
        Radius of the opening that separates brain from scalp, mm.

    Returns
    -------
    mask : ndarray of bool, same shape as ``magnitude``
    """
    factors = block_factors(voxel_size_mm)
    coarse_mm = np.asarray(voxel_size_mm) * factors
    opening_mm = max(opening_mm, min(OPENING_PER_VOXEL * float(np.max(voxel_size_mm)), MAX_OPENING_MM))
    floor = noise_floor(magnitude)
    if floor is None:
        return magnitude > 0
    if floor["mean_square"] > 0:
        square = block_mean(magnitude, factors, square=True)
        local = local_floor(square, floor["mean_square"], coarse_mm)
        coarse = np.sqrt(np.maximum(square - local, 0)).astype(np.float32)
    else:
        coarse = block_mean(magnitude, factors)
    if not has_background(coarse):
        return magnitude > 0
    coarse = ndi.gaussian_filter(coarse, COARSE_SMOOTH_VOX)
    if bias_correction and coarse.size >= MIN_N4_VOXELS:
        coarse = n4_correct(coarse)
    threshold = threshold_otsu(coarse)
    tissue = coarse > threshold
    # pad by replication: where the field of view cuts the head, the brain goes on beyond it
    pad = int(np.ceil(max(opening_mm, CLOSING_MM, OUTLINE_MM) / coarse_mm.min())) + 1
    tissue = np.pad(tissue, pad, mode="edge")
    opened = binary_opening(tissue, _ball(opening_mm / coarse_mm))
    if not opened.any():
        opened = tissue
    labels, n = ndi.label(opened)
    if n == 0:
        return magnitude > 0
    sizes = np.bincount(labels.ravel())[1:]
    brain = labels == (1 + int(np.argmax(sizes)))
    restore = min(opening_mm, RESTORE_MM) if RESTORE_MM else opening_mm
    brain = binary_dilation(brain, _ball(restore / coarse_mm)) & tissue | brain
    faint = np.pad(coarse > FAINT_FRACTION * threshold, pad, mode="edge")
    brain = inside_outline(brain, faint, coarse_mm)
    if HULL_OPENING_MM:
        brain = faint_in_hull(brain, faint & ~tissue, coarse_mm)  # tissue here: above the threshold
    brain = binary_closing(brain, _ball(CLOSING_MM / coarse_mm))
    brain = fill_holes(brain)[pad:-pad, pad:-pad, pad:-pad]
    return upsample_nearest(np.ascontiguousarray(brain), factors, magnitude.shape)


def faint_in_hull(brain, faint, coarse_mm):
    """Add the faint tissue (``faint``: above the air, below the threshold) that fills the brain's
    convex hull in its axial slices (canonical axis 2), where it is thicker than a skull notch.

    A coil array sees the head's centre least: in the inferior slices the frontal lobes' medial
    part, the brainstem and the deep grey matter can fall below Otsu's threshold over a region
    30-40 mm wide that reaches the surface, wider than the outline's closing (:data:`OUTLINE_MM`)
    bridges, so :func:`inside_outline` leaves it out (microbleeds there are outside the mask). The
    skull is convex in an axial section, so the intracranial space fills the brain's convex hull in
    each slice; what lies in the hull and is faint but not air is brain or CSF, except partial volume
    of the skull in the brain's own concavities (the tentorial notch), a few millimetres thick: the
    added voxels are opened by :data:`HULL_OPENING_MM`, and only those touching the brain join it.
    Tissue above the threshold that the mask left out (scalp cut loose by the opening) is not faint.
    """
    from skimage.morphology import convex_hull_image  # imported here only (its first call: +0.04 s)

    hull = np.zeros_like(brain)
    for k in range(brain.shape[2]):
        if brain[..., k].sum() >= MIN_HULL_VOXELS:
            hull[..., k] = convex_hull_image(brain[..., k])
    return _with_touching(brain, binary_opening(faint & hull & ~brain, _ball(HULL_OPENING_MM / coarse_mm)))


def _with_touching(brain, candidate):
    """``brain`` and the voxels of ``candidate`` connected to it."""
    labels, _ = ndi.label(brain | candidate)
    keep = np.unique(labels[brain])
    return np.isin(labels, keep[keep > 0])


def inside_outline(brain, faint, coarse_mm):
    """Add the faint tissue (``faint``: above the air, below the threshold) inside the brain's outline.

    The outline is the brain closed by :data:`OUTLINE_MM`, its holes filled (:func:`fill_holes`):
    it bridges the brain's own concavities (a blooming focus or a shaded region cut from the edge:
    a coil array sees the head's centre least) but never reaches the scalp across the skull, which
    lies outside it. The filling takes in a faint centre that the closing rings but cannot cover:
    where a slab's faces cut the head the centre is open to them (no 3D hole), and a fissure wider
    than the mask's own closing opens it to the outside in the slice. Faint voxels in the outline
    that touch the brain join it; air and signal dropout stay below ``faint``.
    """
    outline = fill_holes(closing_edt(brain, OUTLINE_MM, coarse_mm))
    return _with_touching(brain, faint & outline)


def closing_edt(mask, radius_mm, voxel_mm):
    """Binary closing by a ball of ``radius_mm`` from two Euclidean distance transforms (the
    same voxels as :func:`scipy.ndimage.binary_closing` with :func:`_ball` away from the array's
    border, where the padding is; a fraction of its time at a radius of 5 voxels).

    Both transforms run on the mask's bounding box grown by the radius and one voxel: nothing
    beyond it is within the radius of the mask, and every voxel of the dilated mask is nearer to
    the box's background than to any voxel outside it, so the values are those of the whole array."""
    if not mask.any() or radius_mm <= 0:
        return mask.copy()
    reach = [int(np.ceil(radius_mm / float(v))) + 1 for v in np.broadcast_to(voxel_mm, (3,))]
    box = bounding_box(mask, reach)
    grown = distance_transform_edt(~mask[box], sampling=voxel_mm) <= radius_mm
    out = np.zeros(mask.shape, bool)
    out[box] = distance_transform_edt(grown, sampling=voxel_mm) > radius_mm
    return out


def bounding_box(mask, margin=0):
    """Slices of the True voxels' bounding box grown by ``margin`` voxels (an int or one per
    axis), clipped to the array; None when the mask is empty."""
    margin = np.broadcast_to(np.asarray(margin, np.int64), (mask.ndim,))
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not present.size:
            return None
        box.append(slice(max(int(present[0]) - int(margin[axis]), 0),
                         min(int(present[-1]) + int(margin[axis]) + 1, mask.shape[axis])))
    return tuple(box)


def fill_from_nearest(values, holes):
    """``values`` with each voxel of ``holes`` replaced by the value of its nearest voxel outside
    them (``scipy.ndimage.distance_transform_edt``'s indices, its ties), from a transform on the
    holes' bounding box grown by one voxel: that box's rim lies outside the holes and is nearer
    to every hole than any voxel beyond it, so the nearest voxels are those of the whole array."""
    box = bounding_box(holes, 1)
    if box is None:
        return values.copy()
    nearest = distance_transform_edt(holes[box], return_distances=False, return_indices=True)
    out = values.copy()
    out[box] = values[box][tuple(nearest)]
    return out


def fill_holes(mask):
    """Fill 3D holes, then 2D holes slice by slice along each axis (sulci open to one side).

    A 2D hole is a background component of one slice that does not touch the slice's border;
    one labelling per axis, with a structure that connects voxels within slices only.
    """
    mask = _fill_holes_3d(mask)
    for axis in range(3):
        structure = np.zeros((3, 3, 3), bool)
        index = [slice(None)] * 3
        index[axis] = 1
        structure[tuple(index)] = ndi.generate_binary_structure(2, 1)
        labels, n = ndi.label(~mask, structure=structure)
        if n == 0:
            continue
        border = np.zeros(n + 1, bool)
        for other in range(3):
            if other == axis:
                continue
            for end in (0, -1):
                edge = [slice(None)] * 3
                edge[other] = end
                border[np.unique(labels[tuple(edge)])] = True
        border[0] = True
        mask = mask | ~border[labels]
    return mask


def _fill_holes_3d(mask):
    """:func:`scipy.ndimage.binary_fill_holes` (face connectivity): background that no path of
    face neighbours joins to the array's border, from one labelling instead of a dilation
    repeated until it stops."""
    labels, n = ndi.label(~mask)
    border = np.zeros(n + 1, bool)
    for axis in range(3):
        for end in (0, mask.shape[axis] - 1):
            border[np.unique(np.take(labels, end, axis=axis))] = True
    border[0] = True
    return mask | ~border[labels]


def background_level(magnitude, mask, voxel_size_mm, sigma_mm=6.0, dark_cutoff=0.75):
    """Smooth local tissue intensity (the 'background' a focus is dark against).

    Normalised convolution on a ~2 mm grid, in two passes: the second ignores voxels darker
    than ``dark_cutoff`` times the first estimate (veins, foci, dropouts), so dark structures do
    not pull their own background down.

    Returns
    -------
    coarse_background : ndarray float32 on the coarse grid
    factors : per-axis block factors of that grid
    """
    factors = block_factors(voxel_size_mm)
    coarse_mm = np.asarray(voxel_size_mm) * factors
    sigma = [sigma_mm / c for c in coarse_mm]
    values, weight = block_sums(magnitude, mask, factors)
    background = _normalised_smooth(values, weight, sigma)
    values, weight = block_sums(magnitude, mask, factors, background, dark_cutoff)
    background2 = _normalised_smooth(values, weight, sigma)
    background2 = np.where(background2 > 0, background2, background)
    return background2.astype(np.float32), factors


def _normalised_smooth(values, weight, sigma):
    num = gaussian_nearest(values, sigma)
    den = gaussian_nearest(weight, sigma)
    out = np.where(den > DENSITY_FLOOR * max(den.max(), 1e-12), num / np.maximum(den, 1e-12), 0.0)
    if np.any(out > 0):
        out[out <= 0] = np.median(out[out > 0])
    return out.astype(np.float32)


def relative_intensity(magnitude, mask, voxel_size_mm, sigma_mm=6.0):
    """Magnitude divided by its smooth local tissue level: tissue ~ 1, a focus < 1.

    Voxels outside the mask are set to 1 so that the brain edge makes no gradient.
    """
    coarse, factors = background_level(magnitude, mask, voxel_size_mm, sigma_mm)
    rel = np.empty(magnitude.shape, dtype=np.float32)
    _divide_by_upsampled(magnitude.astype(np.float32, copy=False), coarse,
                         np.asarray(factors, dtype=np.int64), mask, rel)
    return rel


@njit(cache=True, nogil=True, parallel=True)
def _divide_by_upsampled(magnitude, coarse, factors, mask, out):
    """out = magnitude / trilinear-upsampled(coarse) inside mask, 1 outside (float32).

    The last axis's coarse neighbours and weights are the same on every line: computed once."""
    nx, ny, nz = magnitude.shape
    cx, cy, cz = coarse.shape
    z0s = np.empty(nz, np.int64)
    z1s = np.empty(nz, np.int64)
    wzs = np.empty(nz)
    for k in range(nz):
        fz = (k + 0.5) / factors[2] - 0.5
        z0 = min(max(int(np.floor(fz)), 0), cz - 1)
        z0s[k] = z0
        z1s[k] = min(z0 + 1, cz - 1)
        wzs[k] = min(max(fz - z0, 0.0), 1.0)
    for i in prange(nx):
        fx = (i + 0.5) / factors[0] - 0.5
        x0 = min(max(int(np.floor(fx)), 0), cx - 1)
        x1 = min(x0 + 1, cx - 1)
        wx = min(max(fx - x0, 0.0), 1.0)
        for j in range(ny):
            fy = (j + 0.5) / factors[1] - 0.5
            y0 = min(max(int(np.floor(fy)), 0), cy - 1)
            y1 = min(y0 + 1, cy - 1)
            wy = min(max(fy - y0, 0.0), 1.0)
            for k in range(nz):
                if not mask[i, j, k]:
                    out[i, j, k] = 1.0
                    continue
                z0 = z0s[k]
                z1 = z1s[k]
                wz = wzs[k]
                c00 = coarse[x0, y0, z0] * (1 - wx) + coarse[x1, y0, z0] * wx
                c10 = coarse[x0, y1, z0] * (1 - wx) + coarse[x1, y1, z0] * wx
                c01 = coarse[x0, y0, z1] * (1 - wx) + coarse[x1, y0, z1] * wx
                c11 = coarse[x0, y1, z1] * (1 - wx) + coarse[x1, y1, z1] * wx
                b = (c00 * (1 - wy) + c10 * wy) * (1 - wz) + (c01 * (1 - wy) + c11 * wy) * wz
                out[i, j, k] = np.float32(magnitude[i, j, k] / b) if b > 0 else np.float32(1.0)


def divide_by_upsampled_reference(magnitude, coarse, factors, mask):
    """Plain numpy reference of :func:`_divide_by_upsampled` (for tests)."""
    coords = [(np.arange(n) + 0.5) / f - 0.5 for n, f in zip(magnitude.shape, factors)]
    coords = [np.clip(c, 0, s - 1) for c, s in zip(coords, coarse.shape)]
    grid = np.meshgrid(*coords, indexing="ij")
    background = ndi.map_coordinates(coarse.astype(np.float64), grid, order=1, mode="nearest")
    out = np.where(background > 0, magnitude / np.where(background > 0, background, 1), 1.0)
    return np.where(mask, out, 1.0).astype(np.float32)


def noise_level(rel, mask, max_samples=2_000_000):
    """Robust noise standard deviation of the relative image inside the mask.

    From neighbour differences along the first axis (MAD / sqrt(2)), which ignores smooth
    anatomy; subsampled deterministically for speed.
    """
    step = max(1, int(np.sqrt(rel.size / max_samples)))
    sub_rel, sub_mask = rel[:, ::step, ::step], mask[:, ::step, ::step]
    diff = (sub_rel[1:] - sub_rel[:-1])[sub_mask[1:] & sub_mask[:-1]]
    if diff.size == 0:
        return NOISE_IF_UNMEASURABLE
    mad = np.median(np.abs(diff - np.median(diff)))
    return float(max(MAD_TO_SIGMA * mad / np.sqrt(2.0), 1e-4))


def echo_noise_level(echoes, weights, combined, rel, mask):
    """Noise standard deviation of a weighted echo sum ``combined = sum w_e S_e``, in the units of
    its relative image ``rel``.

    :func:`noise_level` on a combined image reads its anatomy as well as its noise: the fine
    structure (vessels, grey-white borders) is common to all echoes and survives the sum, the
    thermal noise, independent between echoes and of one sigma at every TE, falls by
    ``sqrt(sum w_e^2)``. Here the noise is read from adjacent echoes with the tissue's decay
    cancelled, ``S_e - r S_(e+1)`` (``r`` the ratio of the echoes' brain medians), whose
    structure is only the small difference of R2* between tissues: :func:`noise_level` of it
    (relative to ``combined``'s tissue level) over ``sqrt(1 + r^2)`` is one echo's sigma; the
    median over pairs, times ``sqrt(sum w_e^2)``, is the combination's.
    """
    w = np.asarray(weights, dtype=np.float64)
    inside = mask & (combined > 0)
    scale = np.divide(rel, combined, out=np.zeros(rel.shape, np.float32), where=inside)
    medians = [float(np.median(echoes[..., e][inside])) for e in range(echoes.shape[3])]
    sigmas = []
    for e in range(echoes.shape[3] - 1):
        if not medians[e + 1] > 0:
            continue
        r = medians[e] / medians[e + 1]
        diff = (echoes[..., e] - np.float32(r) * echoes[..., e + 1]) * scale
        sigmas.append(noise_level(diff, inside) / np.sqrt(1.0 + r * r))
    if not sigmas:
        return noise_level(rel, mask)
    return float(max(np.median(sigmas) * np.sqrt(np.sum(w * w)), 1e-4))


def erode_mm(mask, voxel_size_mm, margin_mm):
    """Erode a mask by a box of half-width ``margin_mm`` per axis.

    Beyond the image counts as inside: where the field of view cuts the brain, that cut is not
    a brain edge."""
    out = np.ascontiguousarray(mask, dtype=np.bool_)
    for axis, v in enumerate(voxel_size_mm):
        radius = int(round(margin_mm / v))
        if radius > 0:
            eroded = np.empty_like(out)
            if axis == 2:
                _erode_last(out, radius, eroded)
            elif axis == 0:
                _erode_axis(out.reshape(1, out.shape[0], -1), radius, eroded.reshape(1, out.shape[0], -1))
            else:
                _erode_axis(out, radius, eroded)
            out = eroded
    return out


ERODE_CHUNK = 256
"""Columns of a row per work unit of :func:`_erode_axis` (contiguous, so the loops vectorise)."""


@njit(cache=True, nogil=True, parallel=True)
def _erode_axis(mask, radius, out):  # pragma: no cover - compiled
    """out = all(mask within +-radius along the middle axis of ``(p, n, m)``), clipped to the
    image: per column the run of True voxels ending at each voxel, a row of columns at a time."""
    n_p, n, m = mask.shape
    n_chunks = (m + ERODE_CHUNK - 1) // ERODE_CHUNK
    for q in prange(n_p * n_chunks):
        p = q // n_chunks
        k0 = (q % n_chunks) * ERODE_CHUNK
        w = min(k0 + ERODE_CHUNK, m) - k0
        run = np.empty((n, w), np.int32)
        row = mask[p, 0]
        for k in range(w):
            run[0, k] = 1 if row[k0 + k] else 0
        for t in range(1, n):
            row = mask[p, t]
            for k in range(w):
                run[t, k] = run[t - 1, k] + 1 if row[k0 + k] else 0
        for t in range(n):
            lo = max(t - radius, 0)
            hi = min(t + radius, n - 1)
            need = hi - lo + 1
            dst = out[p, t]
            for k in range(w):
                dst[k0 + k] = run[hi, k] >= need


@njit(cache=True, nogil=True, parallel=True)
def _erode_last(mask, radius, out):  # pragma: no cover - compiled
    """out = all(mask within +-radius along the last axis), clipped to the image (run lengths)."""
    n0, n1, n = mask.shape
    for q in prange(n0 * n1):
        line = mask[q // n1, q % n1]
        dst = out[q // n1, q % n1]
        run = np.empty(n, np.int32)
        count = 0
        for t in range(n):
            count = count + 1 if line[t] else 0
            run[t] = count
        for t in range(n):
            lo = max(t - radius, 0)
            hi = min(t + radius, n - 1)
            dst[t] = run[hi] >= hi - lo + 1


def erode_reference(mask, voxel_size_mm, margin_mm):
    """Plain scipy reference of :func:`erode_mm` (for tests)."""
    size = [2 * int(round(margin_mm / v)) + 1 for v in voxel_size_mm]
    return ndi.minimum_filter(mask.astype(np.uint8), size=size, mode="constant", cval=1).astype(bool)


def brain_box(mask, affine, margin=2):
    """Slices of the mask's bounding box (plus ``margin`` voxels; the whole array for an empty
    mask) and the affine of that crop."""
    box = bounding_box(mask, margin) or tuple(slice(0, n) for n in mask.shape)
    shift = np.eye(4)
    shift[:3, 3] = [b.start for b in box]
    return tuple(box), affine @ shift


def mask_checks(mask, voxel_size_mm, coverage="auto", volume_range_ml=BRAIN_VOLUME_RANGE_ML):
    """Check a brain mask against physiology; returns (facts dict, list of warning strings).

    ``coverage``: ``"whole"`` (the field of view holds the whole brain: the volume must lie in
    ``volume_range_ml``), ``"partial"`` (a slab or partial field of view: only the upper bound
    and the cross-sections are checked), ``"auto"`` (partial where the mask reaches a face of
    the field of view, i.e. the field of view cuts the brain). Whatever the coverage, no
    cross-section may exceed :data:`MAX_SECTION_CM2`, and a mask that fills the field of view
    (no background found) is reported unless coverage is declared partial.
    """
    vox = np.asarray(voxel_size_mm, dtype=np.float64)
    # voxel counts per plane of each axis, from one projection (bool counts: no int64 copy)
    plane = np.count_nonzero(mask, axis=2)
    profiles = (plane.sum(axis=1), plane.sum(axis=0), np.count_nonzero(mask, axis=(0, 1)))
    total = int(profiles[0].sum())
    fraction = total / mask.size  # = mask.mean()
    volume = float(total * np.prod(vox)) / 1000.0
    cut = []
    for axis in range(3):
        for end, name in ((0, "low"), (-1, "high")):
            face = np.take(mask, end if end == 0 else mask.shape[axis] - 1, axis=axis)
            if face.mean() > TOUCH_FRACTION:
                cut.append(f"{'ijk'[axis]}-{name}")
    partial = coverage == "partial" or (coverage == "auto" and bool(cut))
    sections = []
    for axis in range(3):
        area = np.prod(np.delete(vox, axis)) / 100.0
        sections.append(float(profiles[axis].max() * area) if total else 0.0)
    facts = {"volume_ml": round(volume, 3), "coverage": "partial" if partial else "whole",
             "cut_faces": cut, "fov_fraction": round(float(fraction), 4),
             "max_section_cm2": round(max(sections), 1)}
    lo, hi = (float(v) for v in volume_range_ml)
    warnings = []
    if fraction > FILLS_FOV and coverage != "partial":
        warnings.append(f"brain mask fills {100 * fraction:.0f} % of the field of view: no background "
                        "was found; unless the scan is a crop inside the brain (then set brain_coverage "
                        "= 'partial'), the mask is wrong and so are the counts")
    if volume > hi:
        warnings.append(f"brain mask volume {volume:.0f} ml is above the physiological maximum {hi:.0f} ml: "
                        "the mask includes background or scalp; the counts are not reliable")
    elif not partial and volume < lo:
        warnings.append(f"brain mask volume {volume:.0f} ml is below the physiological minimum {lo:.0f} ml "
                        "for a whole-brain scan: the mask misses brain (set brain_coverage = 'partial' for a slab)")
    if max(sections) > MAX_SECTION_CM2:
        warnings.append(f"brain mask cross-section {max(sections):.0f} cm2 is larger than any brain's "
                        f"({MAX_SECTION_CM2:.0f} cm2): the mask includes background or scalp")
    return facts, warnings
