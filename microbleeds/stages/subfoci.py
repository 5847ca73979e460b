"""Sub-foci: microbleeds inside merged regions.

The watershed (:mod:`microbleeds.stages.segment`) merges basins whose saddle lies within the noise,
so a microbleed touching a vein network or a cluster neighbour becomes part of one large region,
which the rules then reject as a whole (``too_large``, ``tubular``, ``brain_edge``). Here every seed
inside such a *host* (a region that reached the growth limit, or elongated) is judged on its own,
without saddles, by the shape of the image around it:

- **a blob**: the scale-normalised Hessian of the relative intensity at its darkest voxel, at one
  of :data:`SCALES_MM`, has all eigenvalues positive and within :data:`MIN_EIGEN_RATIO` of each
  other, the smallest at least :data:`MIN_EIGENVALUE` (a dark ball; a tube has one eigenvalue near 0
  along its axis, a sheet two). Axes coarser than the scale / :data:`AXIS_SCALE_RATIO` are left out
  (in-plane on thick slices: a 5 mm slice is no curvature measurement at 1 mm);
- **dark to its core**: at least :data:`MIN_DEPTH` below tissue (hemosiderin dephases its centre
  completely; a vein at the echo times of SWI only partly, and where two veins cross or join, or a
  vein bends within a thick slice, their dephasing adds up to a round spot about 0.7 dark);
- **compact**: its half-depth outline, cut at :data:`OUTLINE_SCALES` times the scale, is round
  (elongation below :data:`MAX_ELONGATION`);
- **inside a larger structure**: the host reaches more than :data:`HOST_FAR_MM` beyond the blob's
  outline and keeps more voxels than the blob takes (else the host is one elongated focus,
  lobulated or blooming along B0, and stays whole);
- **darker than its host**: the host's voxels from :data:`HOST_NEAR_MM` to :data:`HOST_FAR_MM`
  beyond the blob are at most :data:`MAX_HOST_DEPTH_RATIO` as dark as the blob (a vein's darker
  bend or junction is about as dark as the vein around it), the blob's depth lies
  :data:`HOST_NOISE_SIGMAS` noise sigmas beyond theirs and its voxels' mean darkness beyond theirs
  reaches ``min_cnr`` (a noise dip of a few voxels on a vein is no focus);
- **not a patch of a sheet**: the host's core around it is not plate-like
  (:func:`sheet_likeness` at most :data:`MAX_HOST_SHEETNESS`). Cortical superficial siderosis lines
  the cortical surface and the sulci: a sheet, whose Hessian has one large eigenvalue (across the
  sheet); its nearly dephased, paramagnetic thickenings look like microbleeds on their own. A vein
  network is tubular (two large eigenvalues, across the vessel), a cluster neighbour a blob.

Each blob found is carved out of its host (its voxels leave the host) and becomes a candidate of
its own, which :mod:`microbleeds.stages.describe` and every rule of :mod:`microbleeds.stages.mimics`
judge like any other; the host keeps the rest. Two blobs of one host joined by a line of voxels at
least :data:`JOIN_DEPTH` dark (:func:`same_focus`) are one focus, one candidate.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .segment import FOCUS_MAX_ELONGATION, Regions, points_elongation, region_elongation

SCALES_MM = (0.7, 1.0, 1.4)
"""Gaussian scales (sigma, mm) of the blob test: microbleeds of 1-4 mm apparent diameter (a ball of
radius r answers best near sigma = r / sqrt(3) ... r / sqrt(2))."""
AXIS_SCALE_RATIO = 0.5
"""An axis whose voxel is coarser than the scale / this ratio (2 x sigma) is left out of the Hessian:
a curvature is not sampled by fewer than about one voxel per sigma."""
MIN_EIGEN_RATIO = 0.45
"""Smallest / largest eigenvalue of a blob's scale-normalised Hessian: a microbleed's blooming is
round (at most 1.26 times longer along B0), a tube or a sheet has an eigenvalue near 0."""
MIN_EIGENVALUE = 0.05
"""Smallest scale-normalised eigenvalue (sigma^2 x the curvature of the relative intensity, tissue = 1,
dimensionless): a Gaussian dip of depth d measured at its own width gives 0.18 d, so 0.05 is a dip
of about a quarter of the tissue's signal (``min_contrast``)."""
MIN_DEPTH = 0.8
"""A sub-focus's darkest voxel is at least this far below tissue (relative intensity <= 0.2): at most a
fifth of tissue's signal left, a core dephased through (hemosiderin). Crossings, junctions and bends of
veins reach 0.70-0.73 at 3 T (0.8 x 0.8 x 1.6 mm, TE 20 ms), 1-2 noise sigmas below this; the
microbleeds carved out of vein networks 0.82-0.99 (one of 1 x 1 x 2 mm at 0.72 is lost; benchmarks/README,
twelfth pass)."""
JOIN_DEPTH = 0.7
"""Two darkest voxels joined by a line of voxels at least this dark are one focus (:func:`same_focus`)."""
OUTLINE_SCALES = 2.0
"""The blob is its half-depth outline within this many scales (sigma) of its darkest voxel, mm."""
MAX_ELONGATION = 1.6
"""Elongation (sqrt of the largest / smallest eigenvalue of the voxel covariance) of a carved blob,
stricter than the watershed's round basin (:data:`~microbleeds.stages.segment.FOCUS_MAX_ELONGATION`):
the cut at the outline's radius rounds any piece of a tube somewhat."""
HOST_NEAR_MM = 1.0
HOST_FAR_MM = 3.0
"""The host's voxels between these distances (mm) beyond the blob's outline are its surroundings."""
MAX_HOST_DEPTH_RATIO = 0.6
"""Median darkness of those host voxels, as a fraction of the blob's depth, at most."""
HOST_NOISE_SIGMAS = 4.0
"""...and the blob's depth at least this many noise sigmas (of ``rel``) beyond that median: a noise
dip on a vein is no focus of its own (the watershed's split margin,
:data:`~microbleeds.stages.segment.SPLIT_NOISE_SIGMAS`)."""
SHEET_SCALE_MM = 1.5
"""Gaussian scale (sigma, mm) at which the host's shape (tube or sheet) is read, at its voxels around
the blob: about a vein's or a siderosis layer's apparent thickness."""
SHEET_REACH_MM = 5.0
"""Host voxels within this distance (mm) of the blob's darkest voxel, beyond its outline, are read..."""
RIDGE_QUANTILE = 0.75
"""...those at least as dark as this quantile of them: the structure's core (a vessel's axis, a
sheet's mid-surface), where its Hessian shows its shape; at a tube's flank one curvature fades and
it would read as a plate."""
MAX_HOST_SHEETNESS = 0.5
"""Share of those core voxels whose Hessian is plate-like (:func:`sheet_likeness`) above which the
host is a sheet (siderosis) and nothing is carved."""
PLATE_RATIO = 0.35
"""A voxel is plate-like when its second-largest Hessian eigenvalue is below this fraction of the
largest (one large curvature, across the sheet); a tube's two across it are alike."""


def gaussian_kernels(sigma_vox, spacing_mm):
    """Sampled Gaussian kernel of ``sigma_vox`` voxels and its first and second derivatives per mm
    (scipy.ndimage's construction, truncated at 4 sigma); ``sigma_vox`` 0 is the identity."""
    if sigma_vox <= 0:
        return [np.ones(1), np.zeros(1), np.zeros(1)]
    radius = int(4.0 * sigma_vox + 0.5)
    x = np.arange(-radius, radius + 1, dtype=float)
    phi = np.exp(-0.5 * x ** 2 / sigma_vox ** 2)
    phi /= phi.sum()
    # scipy correlates with the kernel: the first derivative's sign follows from that
    first = -x / sigma_vox ** 2 * phi
    second = (x ** 2 / sigma_vox ** 4 - 1.0 / sigma_vox ** 2) * phi
    return [phi, first[::-1] / spacing_mm, second / spacing_mm ** 2]


def point_hessian(rel, centre, sigma_mm, voxel_size_mm, axes=(0, 1, 2)):
    """Hessian (1/mm^2) of ``rel`` smoothed by a Gaussian of ``sigma_mm`` at voxel ``centre``,
    over ``axes`` only (the others neither smoothed nor differentiated): equal to
    ``scipy.ndimage.gaussian_filter(rel, sigma, order=...)`` at that voxel (mode ``reflect``),
    computed from the voxel's neighbourhood alone. Returns a (len(axes),) * 2 array."""
    vox = np.asarray(voxel_size_mm, dtype=float)
    kernels = [gaussian_kernels(sigma_mm / vox[a] if a in axes else 0.0, vox[a]) for a in range(3)]
    radius = [(len(k[0]) - 1) // 2 for k in kernels]
    patch = _patch(rel, centre, radius)
    n = len(axes)
    out = np.empty((n, n))
    for p in range(n):
        for q in range(p, n):
            order = [0, 0, 0]
            order[axes[p]] += 1
            order[axes[q]] += 1
            value = np.einsum("ijk,i,j,k->", patch, kernels[0][order[0]], kernels[1][order[1]],
                              kernels[2][order[2]])
            out[p, q] = out[q, p] = value
    return out


def _patch(volume, centre, radius):
    """``volume`` within ``radius`` voxels (per axis) of ``centre``, mirrored beyond its faces
    (scipy's ``reflect``: the edge voxel repeated)."""
    lo = [c - r for c, r in zip(centre, radius)]
    hi = [c + r + 1 for c, r in zip(centre, radius)]
    inner = tuple(slice(max(a, 0), min(b, s)) for a, b, s in zip(lo, hi, volume.shape))
    pad = [(max(0, -a), max(0, b - s)) for a, b, s in zip(lo, hi, volume.shape)]
    patch = np.asarray(volume[inner], dtype=float)
    if any(p != (0, 0) for p in pad):
        patch = np.pad(patch, pad, mode="symmetric")
    return patch


def blob_scale(rel, centre, voxel_size_mm):
    """The scale (mm, of :data:`SCALES_MM`) at which ``rel`` is a dark blob at ``centre``, or None.

    At each scale the scale-normalised Hessian (sigma^2 H) over the axes fine enough for it
    (:data:`AXIS_SCALE_RATIO`) must have all eigenvalues positive, the smallest at least
    :data:`MIN_EIGENVALUE` and :data:`MIN_EIGEN_RATIO` of the largest; of the scales that pass, the
    one with the largest smallest eigenvalue (Lindeberg's scale selection). Where the grid resolves
    all three axes at one of the scales, the blob must pass at such a scale too: round in-plane alone,
    a vein crossing the slices is a blob as well."""
    vox = np.asarray(voxel_size_mm, dtype=float)
    best, best_value = None, -np.inf
    resolved = passed_3d = False
    for sigma in SCALES_MM:
        axes = tuple(a for a in range(3) if vox[a] <= sigma / AXIS_SCALE_RATIO)
        if len(axes) < 2:
            continue
        resolved |= len(axes) == 3
        eig = np.linalg.eigvalsh(sigma ** 2 * point_hessian(rel, centre, sigma, vox, axes))
        if eig[0] >= MIN_EIGENVALUE and eig[0] >= MIN_EIGEN_RATIO * eig[-1]:
            passed_3d |= len(axes) == 3
            if eig[0] > best_value:
                best, best_value = sigma, eig[0]
    return best if passed_3d or not resolved else None


def sheet_likeness(rel, points, voxel_size_mm, sigma_mm=SHEET_SCALE_MM):
    """Share of ``points`` (voxel indices (n, 3)) where the dark structure of ``rel`` is a plate:
    its Hessian at ``sigma_mm`` (axes coarser than 2 sigma left out) has a positive largest eigenvalue
    and the second below :data:`PLATE_RATIO` of it (one large curvature, across the sheet). A tube has
    two alike (across the vessel), a blob three; 0 without points."""
    if len(points) == 0:
        return 0.0
    vox = np.asarray(voxel_size_mm, dtype=float)
    axes = tuple(a for a in range(3) if vox[a] <= sigma_mm / AXIS_SCALE_RATIO)
    plates = 0
    for point in points:
        eig = np.linalg.eigvalsh(point_hessian(rel, tuple(point), sigma_mm, vox, axes))
        if eig[-1] > 0 and eig[-2] < PLATE_RATIO * eig[-1]:
            plates += 1
    return plates / len(points)


def host_indices(regions, voxel_size_mm):
    """Regions (0-based) a microbleed may hide in: those that reached the growth limit or are
    elongated (at least :data:`~microbleeds.stages.segment.FOCUS_MAX_ELONGATION`)."""
    # a region at the limit is a host whatever its shape: only the others are measured (the largest
    # regions, vein networks of millions of voxels, would each need a float64 copy of their voxels)
    elongated = region_elongation(regions, voxel_size_mm, only=np.flatnonzero(~regions.reached_limit)) \
        >= FOCUS_MAX_ELONGATION
    return np.flatnonzero(regions.reached_limit | elongated)


def _darkest_near(rel, mask, seed):
    """The darkest brain voxel within one voxel of ``seed`` (as the growth starts)."""
    lo = np.maximum(np.asarray(seed) - 1, 0)
    hi = np.minimum(np.asarray(seed) + 2, rel.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    window = np.where(mask[box], rel[box], np.inf)
    return tuple(int(v) for v in lo + np.array(np.unravel_index(np.argmin(window), window.shape)))


def _ball_patch(shape, centre, radius_mm, vox):
    """Bounds (lo, hi) of the box within ``radius_mm`` of ``centre`` and the voxels' distances (mm)."""
    reach = np.maximum(np.ceil(radius_mm / vox).astype(int), 1)
    lo = np.maximum(np.asarray(centre) - reach, 0)
    hi = np.minimum(np.asarray(centre) + reach + 1, shape)
    grid = np.meshgrid(*[(np.arange(a, b) - c) * v for a, b, c, v in zip(lo, hi, centre, vox)], indexing="ij")
    return lo, hi, np.sqrt(sum(g ** 2 for g in grid))


def carve_blob(rel, labels, host_label, centre, sigma_mm, voxel_size_mm, noise_sigma=0.0, min_cnr=0.0):
    """The sub-focus at ``centre`` (voxel) of host ``host_label`` (1-based), measured at ``sigma_mm``,
    as voxel indices (n, 3), or None when it fails the outline, host or sheet tests (module doc).

    Only voxels still labelled ``host_label`` can be taken. ``noise_sigma`` is the noise of ``rel``
    (:data:`HOST_NOISE_SIGMAS`); ``min_cnr`` the contrast-to-noise ratio (the rules' ``min_cnr``) its
    voxels' mean darkness must reach beyond the host's."""
    vox = np.asarray(voxel_size_mm, dtype=float)
    depth = 1.0 - float(rel[centre])
    reach = OUTLINE_SCALES * sigma_mm
    lo, hi, dist = _ball_patch(rel.shape, centre, reach + HOST_FAR_MM + SHEET_REACH_MM, vox)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    p_rel, p_labels = rel[box], labels[box]
    local = tuple(np.asarray(centre) - lo)
    # the outline may leave the ball by one voxel's diagonal on coarse axes
    within = dist <= max(reach, float(vox.max()) * 0.5 + 1e-6)
    dark = (p_rel < 1.0 - 0.5 * depth) & (p_labels == host_label) & within
    component, _ = ndi.label(dark, structure=np.ones((3, 3, 3)))
    if component[local] == 0:
        return None
    blob = component == component[local]
    points = np.argwhere(blob)
    if points_elongation(points, vox) >= MAX_ELONGATION:
        return None
    outline = float(dist[blob].max())
    host = (p_labels == host_label) & ~blob
    if not (host & (dist > outline + HOST_FAR_MM)).any():
        return None  # the host ends within its fringe: one elongated focus (lobulated, blooming), left whole
    ring = host & (dist > outline + HOST_NEAR_MM) & (dist <= outline + HOST_FAR_MM)
    host_depth = float(np.median(1.0 - p_rel[ring])) if ring.any() else 0.0
    if host_depth > MAX_HOST_DEPTH_RATIO * depth or depth - host_depth < HOST_NOISE_SIGMAS * noise_sigma:
        return None
    excess = float(np.mean(1.0 - p_rel[blob])) - host_depth
    if excess * np.sqrt(len(points)) < min_cnr * noise_sigma:
        return None  # a few voxels a little darker than the vein: noise
    around = host & (dist > outline) & (dist <= SHEET_REACH_MM)
    if around.any():
        darkness = 1.0 - p_rel[around]
        core = np.argwhere(around)[darkness >= np.quantile(darkness, RIDGE_QUANTILE)] + lo
        if sheet_likeness(rel, core, vox) > MAX_HOST_SHEETNESS:
            return None
    return points + lo


def carve_subfoci(regions, rel, mask, seeds, voxel_size_mm, noise_sigma=0.0, min_cnr=6.0):
    """Carve the sub-foci of every host region (:func:`host_indices`) out of it as regions of their
    own, appended after the others (module doc).

    Parameters
    ----------
    regions : segment.Regions
        The segmentation (its ``labels`` volume is relabelled in place).
    rel : ndarray float32, 3D
        Relative intensity (tissue ~ 1).
    mask : ndarray bool, 3D
    seeds : ndarray (n, 3) int
        Every seed of :func:`microbleeds.stages.seeds.find_seeds` (darkest first).
    voxel_size_mm : sequence of 3 floats
    noise_sigma : float
        Noise standard deviation of ``rel`` (:func:`microbleeds.stages.prepare.noise_level`).
    min_cnr : float
        Contrast-to-noise ratio a blob must reach against its host (``Parameters.min_cnr``).

    Returns
    -------
    Regions
        ``regions`` itself when nothing was carved.
    """
    vox = np.asarray(voxel_size_mm, dtype=float)
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1, 3)
    hosts = host_indices(regions, vox)
    if len(hosts) == 0 or len(seeds) == 0:
        return regions
    labels = regions.labels
    is_host = np.zeros(len(regions) + 1, bool)
    is_host[hosts + 1] = True
    inside = seeds[is_host[labels[tuple(seeds.T)]]]
    n = len(regions)
    left = np.concatenate([[0], np.diff(regions.starts)])  # voxels each host keeps, by label
    blobs, hosts_of = [], []
    for seed in inside:
        centre = _darkest_near(rel, mask, seed)
        host = int(labels[centre])  # a voxel carved already carries its blob's label, beyond n
        if host > n or not is_host[host] or 1.0 - float(rel[centre]) < MIN_DEPTH:
            continue
        sigma = blob_scale(rel, centre, vox)
        if sigma is None:
            continue
        points = carve_blob(rel, labels, host, centre, sigma, vox, noise_sigma, min_cnr)
        if points is None:
            continue
        same = next((b for b, (_, other) in enumerate(blobs)
                     if hosts_of[b] == host and same_focus(rel, centre, other)), None)
        if same is None and left[host] - len(points) <= len(points):
            continue  # the host is no larger than the blob: a focus of its own, left whole
        left[host] -= len(points)
        if same is not None:  # a second darkest voxel of a focus already carved
            labels[tuple(points.T)] = n + 1 + same
            blobs[same] = (np.concatenate([blobs[same][0], points]), blobs[same][1])
            continue
        labels[tuple(points.T)] = n + 1 + len(blobs)
        blobs.append((points, centre))
        hosts_of.append(host)
    if not blobs:
        return regions
    return _with_blobs(regions, rel, blobs)


def same_focus(rel, a, b):
    """True when voxels ``a`` and ``b`` are joined by a straight line of voxels at least
    :data:`JOIN_DEPTH` dark all the way (two darkest voxels of one dephased focus; two microbleeds of a
    cluster are parted by tissue at least partly spared)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    steps = max(2, int(np.ceil(2.0 * np.abs(b - a).max())) + 1)
    line = np.round(a + np.linspace(0.0, 1.0, steps)[:, None] * (b - a)).astype(int)
    return bool(np.all(rel[tuple(line.T)] <= 1.0 - JOIN_DEPTH))


def _with_blobs(regions, rel, blobs):
    """``regions`` with each blob's voxels moved out of its host into a new region (seed: its darkest
    voxel), appended in order."""
    labels = regions.labels
    n = len(regions)
    for b, (points, _) in enumerate(blobs):
        labels[tuple(points.T)] = n + 1 + b
    # the voxel list of every region can be tens of millions of rows: 32-bit temporaries, and the
    # kept rows compressed straight into the new list
    keep = _at(labels, regions.voxels) == np.repeat(np.arange(1, n + 1, dtype=np.int32), np.diff(regions.starts))
    counts = np.add.reduceat(keep, regions.starts[:-1], dtype=np.int64) if n else np.zeros(0, np.int64)
    n_kept = int(counts.sum())
    voxels = np.empty((n_kept + sum(len(points) for points, _ in blobs), 3), np.int64)
    np.compress(keep, regions.voxels, axis=0, out=voxels[:n_kept])
    del keep
    at = n_kept
    for points, _ in blobs:
        voxels[at:at + len(points)] = points
        at += len(points)
    counts = np.concatenate([counts, [len(points) for points, _ in blobs]])
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    centres = np.array([centre for _, centre in blobs], np.int64).reshape(-1, 3)
    seeds = np.concatenate([regions.seeds, centres]).astype(np.int64)
    depth = np.concatenate([regions.depth, (1.0 - rel[tuple(centres.T)]).astype(np.float32)])
    limit = np.concatenate([regions.reached_limit, np.zeros(len(blobs), bool)])
    # a host whose seed was carved keeps its darkest remaining voxel as its seed
    for r in range(n):
        own = voxels[starts[r]:starts[r + 1]]
        if len(own) and labels[tuple(seeds[r])] != r + 1:
            darkest = own[np.argmin(rel[tuple(own.T)])]
            seeds[r] = darkest
            depth[r] = 1.0 - rel[tuple(darkest)]
    cluster = None if regions.cluster is None else \
        np.concatenate([regions.cluster, np.arange(n, n + len(blobs))]).astype(np.int64)  # a blob: its own
    out = Regions(labels, voxels, starts, seeds, depth.astype(np.float32), limit, cluster)
    return _drop_empty(out) if (counts == 0).any() else out


def _at(volume, voxels):
    """``volume`` at the (n, 3) ``voxels``, through one flat index (fancy indexing by the three columns
    would copy each of them)."""
    return volume.ravel()[np.ravel_multi_index(voxels.T, volume.shape)]


def _drop_empty(regions):
    """``regions`` without those left with no voxel (a host carved whole), renumbered in order."""
    counts = np.diff(regions.starts)
    keep = counts > 0
    new_label = np.zeros(len(regions) + 1, np.int32)
    new_label[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    labels = regions.labels
    labels[tuple(regions.voxels.T)] = new_label[np.repeat(np.arange(len(regions)), counts) + 1]
    starts = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
    return Regions(labels, regions.voxels, starts, regions.seeds[keep], regions.depth[keep],
                   regions.reached_limit[keep], _renumbered_clusters(regions.cluster, keep))


def _renumbered_clusters(cluster, keep):
    """:attr:`Regions.cluster` of the ``keep`` regions, each cluster named again by its smallest
    remaining member's new index (None stays None)."""
    if cluster is None:
        return None
    kept = np.asarray(cluster)[keep]
    _, inverse = np.unique(kept, return_inverse=True)
    first = np.full(inverse.max() + 1 if len(kept) else 0, len(kept), np.int64)
    np.minimum.at(first, inverse, np.arange(len(kept)))
    return first[inverse]
