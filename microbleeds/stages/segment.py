"""Segment: 3D region growing from each seed, relative to the local background.

From the darkest voxel next to a seed, a region takes every 26-connected voxel darker than a
threshold halfway (by default) between the focus's darkest value and the local background
(relative intensity 1): the half-depth outline of the focus. Growth is confined to a ball of
radius ``max_extent_mm`` around the seed; a region that reaches that limit is marked, since a
round focus never does and a vein or a dropout does.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from numba import njit

SPLIT_FRACTION = 0.3
"""Touching foci are split at a saddle higher than this fraction of the focus's depth above the
next one's floor: two microbleeds of a cluster, each dark to its core, are separated by tissue
at least partly spared (a vein's darkness varies far less along it)."""
SPLIT_NOISE_SIGMAS = 4.0
"""...and higher than this many noise sigmas (``rel``'s, from neighbour differences), so that noise
inside one focus or along one vein does not split it."""
FOCUS_MAX_ELONGATION = 2.0
"""A basin less elongated than this (sqrt of its covariance's largest / smallest eigenvalue; the
tubular rule's in-plane limit) is round: a microbleed's blooming follows the dipole field, at most
2^(1/3) = 1.26 times longer along B0 than across, while a vein's piece between two minima is long."""


@dataclass
class Regions:
    """Segmented candidates on the canonical grid.

    Attributes
    ----------
    labels : ndarray int32, 3D
        Region index + 1 per voxel, 0 elsewhere.
    voxels : ndarray (n, 3) int64
        Voxel indices of all regions, region after region.
    starts : ndarray (m + 1,) int64
        Region r owns ``voxels[starts[r]:starts[r + 1]]``.
    seeds : ndarray (m, 3) int64
        Darkest voxel each region grew from.
    depth : ndarray (m,) float32
        1 - relative intensity at that voxel.
    reached_limit : ndarray (m,) bool
        The region touched the growth limit (``max_extent_mm``) or the voxel budget.
    """

    labels: np.ndarray
    voxels: np.ndarray
    starts: np.ndarray
    seeds: np.ndarray
    depth: np.ndarray
    reached_limit: np.ndarray
    cluster: np.ndarray = None
    """(m,) int64: regions with the same index are foci of one cluster, split from each other over
    their saddles (:func:`cluster_contacts`); each region alone has an index of its own. None: no
    cluster splitting."""

    def __len__(self):
        return len(self.seeds)

    def region(self, r):
        """Voxel indices (n, 3) of region ``r`` (0-based)."""
        return self.voxels[self.starts[r]:self.starts[r + 1]]



@njit("int64[:, ::1]()", cache=True)
def _neighbour_steps():  # pragma: no cover - compiled
    """The 26 offsets (di, dj, dk) of a voxel's 3D neighbourhood."""
    steps = np.empty((26, 3), np.int64)
    n = 0
    for di in range(-1, 2):
        for dj in range(-1, 2):
            for dk in range(-1, 2):
                if di != 0 or dj != 0 or dk != 0:
                    steps[n, 0], steps[n, 1], steps[n, 2] = di, dj, dk
                    n += 1
    return steps

@njit(cache=True, nogil=True)
def _grow(rel, mask, seeds, depth_fraction, min_depth, radius_vox, max_voxels, labels):
    """Grow regions from seeds in order; returns flat voxel list and per-region records."""
    nx, ny, nz = rel.shape
    n_seeds = seeds.shape[0]
    voxels = np.empty((max(4 * max_voxels, 65536), 3), np.int64)
    starts = np.zeros(n_seeds + 1, np.int64)
    centres = np.zeros((n_seeds, 3), np.int64)
    depths = np.zeros(n_seeds, np.float32)
    limits = np.zeros(n_seeds, np.bool_)
    queue = np.empty((max_voxels, 3), np.int64)
    steps = _neighbour_steps()
    n_regions = 0
    used = 0
    contacts = [(np.int32(0), np.int32(0))]
    contacts.pop()
    thresholds = np.zeros(n_seeds + 1, np.float32)
    for s in range(n_seeds):
        si, sj, sk = seeds[s, 0], seeds[s, 1], seeds[s, 2]
        if labels[si, sj, sk] != 0:
            continue
        # darkest free voxel within one voxel of the seed
        ci, cj, ck = si, sj, sk
        for di in range(-1, 2):
            for dj in range(-1, 2):
                for dk in range(-1, 2):
                    a, b, c = si + di, sj + dj, sk + dk
                    if 0 <= a < nx and 0 <= b < ny and 0 <= c < nz and labels[a, b, c] == 0 \
                            and mask[a, b, c] and rel[a, b, c] < rel[ci, cj, ck]:
                        ci, cj, ck = a, b, c
        depth = 1.0 - rel[ci, cj, ck]
        if depth < min_depth:
            continue
        if used + max_voxels > voxels.shape[0]:
            bigger = np.empty((2 * voxels.shape[0] + max_voxels, 3), np.int64)
            bigger[:used] = voxels[:used]
            voxels = bigger
        threshold = 1.0 - depth_fraction * depth
        label = n_regions + 1
        thresholds[label] = threshold
        labels[ci, cj, ck] = label
        queue[0, 0], queue[0, 1], queue[0, 2] = ci, cj, ck
        head, tail = 0, 1
        limit = False
        while head < tail:
            qi, qj, qk = queue[head, 0], queue[head, 1], queue[head, 2]
            head += 1
            for t in range(26):
                a, b, c = qi + steps[t, 0], qj + steps[t, 1], qk + steps[t, 2]
                if a < 0 or b < 0 or c < 0 or a >= nx or b >= ny or c >= nz:
                    continue
                other = labels[a, b, c]
                if not mask[a, b, c] or rel[a, b, c] >= threshold:
                    continue
                if other != 0:
                    # touching another region: merge only if each would grow into the other
                    if other != label and rel[qi, qj, qk] < thresholds[other]:
                        contacts.append((label, other))
                    continue
                d = ((a - ci) / radius_vox[0]) ** 2 + ((b - cj) / radius_vox[1]) ** 2 \
                    + ((c - ck) / radius_vox[2]) ** 2
                if d > 1.0 or tail >= max_voxels:
                    limit = True
                    continue
                labels[a, b, c] = label
                queue[tail, 0], queue[tail, 1], queue[tail, 2] = a, b, c
                tail += 1
        voxels[used:used + tail] = queue[:tail]
        used += tail
        centres[n_regions, 0], centres[n_regions, 1], centres[n_regions, 2] = ci, cj, ck
        depths[n_regions] = depth
        limits[n_regions] = limit
        n_regions += 1
        starts[n_regions] = used
    return (voxels[:used], starts[:n_regions + 1], centres[:n_regions], depths[:n_regions],
            limits[:n_regions], contacts)


@njit(cache=True, nogil=True)
def _grow_split(rel, mask, seeds, depth_fraction, min_depth, radius_vox, max_voxels, labels, split_fraction,
                split_noise):
    """:func:`_grow` as a watershed: every seed floods at once, by priority (lowest level first).

    A voxel's level is the highest ``rel`` on the best path from its region's seed (its ``top``);
    the regions grow together, so two foci of a cluster meet at their saddle, each keeping its
    own basin. A region does not descend more than ``margin = max(split_fraction * depth,
    split_noise)`` below its path's top (into a basin without a seed). Every pair of regions that
    touch where each is below the other's threshold is returned with its saddle (the lowest, over
    their contacts, of the higher of the two tops); :func:`vein_contacts` decides which are
    segments of one vein. Seeds already flooded by another region are dropped, as in :func:`_grow`.

    Returns voxels, starts, centres, depths, limits (per region) and ``pairs`` (k, 2) of 1-based
    labels (a < b, in order of first contact) with their ``saddles`` (k,) float32."""
    nx, ny, nz = rel.shape
    n_seeds = seeds.shape[0]
    owner = np.zeros(n_seeds + 1, np.int64)  # region label -> seed index
    centres = np.zeros((n_seeds, 3), np.int64)
    depths = np.zeros(n_seeds, np.float32)
    limits = np.zeros(n_seeds + 1, np.bool_)
    counts = np.zeros(n_seeds + 1, np.int64)
    thresholds = np.zeros(n_seeds + 1, np.float32)
    margins = np.zeros(n_seeds + 1, np.float32)
    floors = np.zeros(n_seeds + 1, np.float32)
    top = np.full((nx, ny, nz), np.float32(np.inf), np.float32)
    steps = _neighbour_steps()
    saddles = {np.int64(0): np.float32(0.0)}  # pair key a * (n_seeds + 1) + b (a < b) -> lowest saddle
    saddles.pop(np.int64(0))
    heap = [(np.float32(0.0), np.int64(0), np.int64(0), np.int64(0), np.int64(0))]
    heap.pop()
    candidates = 0
    for s in range(n_seeds):
        si, sj, sk = seeds[s, 0], seeds[s, 1], seeds[s, 2]
        ci, cj, ck = si, sj, sk
        for di in range(-1, 2):
            for dj in range(-1, 2):
                for dk in range(-1, 2):
                    a, b, c = si + di, sj + dj, sk + dk
                    if 0 <= a < nx and 0 <= b < ny and 0 <= c < nz and mask[a, b, c] \
                            and rel[a, b, c] < rel[ci, cj, ck]:
                        ci, cj, ck = a, b, c
        depth = 1.0 - rel[ci, cj, ck]
        if depth < min_depth:
            continue
        candidates += 1
        owner[candidates] = s
        centres[candidates - 1, 0], centres[candidates - 1, 1], centres[candidates - 1, 2] = ci, cj, ck
        depths[candidates - 1] = depth
        thresholds[candidates] = 1.0 - depth_fraction * depth
        margins[candidates] = max(split_fraction * depth, split_noise)
        floors[candidates] = rel[ci, cj, ck]
        heapq.heappush(heap, (np.float32(rel[ci, cj, ck]), np.int64(candidates), ci, cj, ck))
    order = np.zeros(nx * ny * nz if candidates else 1, np.int64)  # labelled voxels, in labelling order
    n_labelled = 0
    started = np.zeros(candidates + 1, np.bool_)
    alive = np.ones(candidates + 1, np.bool_)
    while len(heap) > 0:
        level, label, qi, qj, qk = heapq.heappop(heap)
        if not started[label]:
            # a seed: dropped if another region has flooded its start voxel
            if labels[qi, qj, qk] != 0:
                alive[label] = False
                continue
            started[label] = True
            labels[qi, qj, qk] = label
            top[qi, qj, qk] = level
            order[n_labelled] = (qi * ny + qj) * nz + qk
            n_labelled += 1
            counts[label] = 1
        ci, cj, ck = centres[label - 1, 0], centres[label - 1, 1], centres[label - 1, 2]
        for t in range(26):
            a, b, c = qi + steps[t, 0], qj + steps[t, 1], qk + steps[t, 2]
            if a < 0 or b < 0 or c < 0 or a >= nx or b >= ny or c >= nz:
                continue
            if not mask[a, b, c] or rel[a, b, c] >= thresholds[label]:
                continue
            other = labels[a, b, c]
            if other != 0:
                if other != label and rel[qi, qj, qk] < thresholds[other]:
                    saddle = np.float32(max(level, top[a, b, c]))
                    key = np.int64(min(label, other)) * (n_seeds + 1) + max(label, other)
                    if key not in saddles or saddle < saddles[key]:
                        saddles[key] = saddle
                continue
            if rel[a, b, c] < level - margins[label]:
                continue  # down into a basin without a seed of its own
            d = ((a - ci) / radius_vox[0]) ** 2 + ((b - cj) / radius_vox[1]) ** 2 \
                + ((c - ck) / radius_vox[2]) ** 2
            if d > 1.0 or counts[label] >= max_voxels:
                limits[label] = True
                continue
            labels[a, b, c] = label
            reach = max(level, rel[a, b, c])
            top[a, b, c] = reach
            order[n_labelled] = (a * ny + b) * nz + c
            n_labelled += 1
            counts[label] += 1
            heapq.heappush(heap, (np.float32(reach), np.int64(label), a, b, c))
    # renumber the regions that started (seed order) and gather their voxels, region by region
    new = np.zeros(candidates + 1, np.int64)
    m = 0
    for r in range(1, candidates + 1):
        if started[r] and alive[r]:
            m += 1
            new[r] = m
    starts = np.zeros(m + 1, np.int64)
    for r in range(1, candidates + 1):
        if new[r]:
            starts[new[r]] = counts[r]
    for r in range(1, m + 1):
        starts[r] += starts[r - 1]
    fill = starts[:m].copy()
    voxels = np.empty((n_labelled, 3), np.int64)
    for n in range(n_labelled):
        flat = order[n]
        i, rest = flat // (ny * nz), flat % (ny * nz)
        j, k = rest // nz, rest % nz
        r = new[labels[i, j, k]] - 1
        labels[i, j, k] = r + 1
        voxels[fill[r], 0], voxels[fill[r], 1], voxels[fill[r], 2] = i, j, k
        fill[r] += 1
    out_centres = np.zeros((m, 3), np.int64)
    out_depths = np.zeros(m, np.float32)
    out_limits = np.zeros(m, np.bool_)
    for r in range(1, candidates + 1):
        if new[r]:
            out_centres[new[r] - 1] = centres[r - 1]
            out_depths[new[r] - 1] = depths[r - 1]
            out_limits[new[r] - 1] = limits[r]
    pairs = np.zeros((len(saddles), 2), np.int64)
    levels = np.zeros(len(saddles), np.float32)
    n = 0
    for key, saddle in saddles.items():
        pairs[n, 0], pairs[n, 1] = new[key // (n_seeds + 1)], new[key % (n_seeds + 1)]
        levels[n] = saddle
        n += 1
    return voxels, starts, out_centres, out_depths, out_limits, pairs, levels


def grow_regions(rel, mask, seeds, voxel_size_mm, max_extent_mm, depth_fraction=0.5, min_depth=0.1,
                 split_fraction=SPLIT_FRACTION, split_noise=None):
    """Segment one region per seed by thresholded 26-connected growth.

    Parameters
    ----------
    rel : ndarray float32, 3D
        Relative intensity (tissue ~ 1).
    mask : ndarray bool, 3D
        Brain mask; regions stay inside it.
    seeds : ndarray (n, 3) int
        Seed voxels, strongest first; a seed inside an earlier region is dropped.
    voxel_size_mm : sequence of 3 floats
    max_extent_mm : float
        Radius of the ball around the seed that a region may fill, mm.
    depth_fraction : float
        Where the outline sits between background (0) and the darkest voxel (1); 0.5 is the
        half-depth outline. Lower it to segment more of the blooming halo.
    min_depth : float
        Seeds whose darkest voxel is less than this below background are skipped.
    split_fraction : float
        Touching foci are split at their saddle when it is more than ``split_fraction`` of the
        focus's depth and ``split_noise`` above the next focus's floor, or more than ``split_noise``
        above the floor of a round one (:func:`_grow_split`, :func:`vein_contacts`), or, in a group
        no larger than a microbleed, more than :data:`CLUSTER_SIGMAS` noise sigmas above both
        compact basins' floors (:func:`cluster_contacts`: foci of a cluster; ``Regions.cluster``);
        0 = off (one region takes every connected voxel below its threshold, :func:`_grow`).
    split_noise : float, optional
        Relative intensity; default :data:`SPLIT_NOISE_SIGMAS` times the noise of ``rel`` in
        ``mask`` (:func:`microbleeds.stages.prepare.noise_level`).

    Returns
    -------
    Regions
    """
    vox = np.asarray(voxel_size_mm, dtype=float)
    radius_vox = (max_extent_mm / vox).astype(np.float64)
    max_voxels = int(np.prod(2 * np.floor(radius_vox) + 1))
    labels = np.zeros(rel.shape, np.int32)
    seeds = np.ascontiguousarray(np.asarray(seeds, dtype=np.int64).reshape(-1, 3))
    rel32 = rel.astype(np.float32, copy=False)
    if split_fraction > 0:
        if split_noise is None:
            from .prepare import noise_level

            split_noise = SPLIT_NOISE_SIGMAS * noise_level(rel, mask)
        voxels, starts, centres, depths, limits, pairs, levels = _grow_split(
            rel32, mask, seeds, np.float32(depth_fraction), np.float32(min_depth), radius_vox, max_voxels,
            labels, np.float32(split_fraction), np.float32(split_noise))
        regions = Regions(labels, voxels, starts, centres, depths, limits.astype(bool))
        vein = vein_contacts(regions, pairs, levels, split_fraction, split_noise, vox)
        apart = cluster_contacts(regions, pairs, levels, split_noise, vox)
        if CLUSTER_HOST_LIMIT:
            apart &= within_focus_size(regions, pairs[vein] - 1, pairs[:, 0] - 1, max_extent_mm, vox)
        centres = regions.seeds.copy()
        merged = merge_touching(regions, [tuple(p) for p in pairs[vein & ~apart]])
        merged.cluster = cluster_index(merged.labels[tuple(centres.T)] - 1, pairs[apart] - 1, len(merged))
        return merged
    else:
        voxels, starts, centres, depths, limits, contacts = _grow(
            rel32, mask, seeds, np.float32(depth_fraction), np.float32(min_depth), radius_vox, max_voxels,
            labels)
    regions = Regions(labels, voxels, starts, centres, depths, limits.astype(bool))
    return merge_touching(regions, contacts)


def vein_contacts(regions, pairs, saddles, split_fraction, split_noise, voxel_size_mm):
    """Which touching pairs of basins are segments of one vein (merged), not two lesions.

    A pair is merged when the saddle between them is within the shallower basin's margin
    (``max(split_fraction * depth, split_noise)``) of its floor, unless either basin is a focus of
    its own: round (:func:`region_elongation` below :data:`FOCUS_MAX_ELONGATION`) with the saddle
    more than ``split_noise`` above its floor. The depth-relative part of the margin allows for a
    vein's darkness varying along it; a vein's piece between two minima is long (the vein goes on
    beyond the saddle), while a microbleed's blooming is round, so a round basin whose saddle
    rises above the noise is a focus touching the other: a neighbour in a cluster, or a vein
    beside it. A basin is also round when its focus group is (:data:`FOCUS_GROUPS`): noise cuts a
    large focus into pieces that may each be long; the group's floor (its deepest) is then the one
    the saddle must rise above. Pairs inside one focus group are merged.

    Parameters
    ----------
    regions : Regions
        The watershed's basins (before merging).
    pairs : ndarray (k, 2) int
        Touching basins (1-based labels, ``a < b``).
    saddles : ndarray (k,) float
        The lowest saddle (relative intensity) between each pair.
    split_fraction, split_noise : float
        The vein margin (:func:`grow_regions`).
    voxel_size_mm : sequence of 3 floats

    Returns
    -------
    ndarray (k,) bool
    """
    if len(pairs) == 0:
        return np.zeros(0, bool)
    depth = regions.depth.astype(np.float64)
    floor = 1.0 - depth
    margin = np.maximum(split_fraction * depth, split_noise)
    a, b = pairs[:, 0] - 1, pairs[:, 1] - 1
    shallow = np.where(floor[a] >= floor[b], a, b)
    vein = saddles - floor[shallow] <= margin[shallow]
    round_ = region_elongation(regions, voxel_size_mm) < FOCUS_MAX_ELONGATION
    if FOCUS_GROUPS:
        focus = focus_groups(regions, pairs, saddles, split_noise)
        round_ |= group_elongation(regions, focus, voxel_size_mm)[focus] < FOCUS_MAX_ELONGATION
        floor = _group_min(floor, focus)
        same = focus[a] == focus[b]
    else:
        same = np.zeros(len(pairs), bool)
    own = (round_[a] & (saddles - floor[a] > split_noise)) | (round_[b] & (saddles - floor[b] > split_noise))
    return same | (vein & ~own)


FOCUS_GROUPS = True
"""Judge a basin's roundness together with the basins it meets within the noise (:func:`focus_groups`):
noise cuts a large dark focus (a 4 mm microbleed at 7 T, sigma 0.06) into several minima, each piece
of which may be long while the focus they make is round."""


def focus_groups(regions, pairs, saddles, split_noise):
    """Basins (0-based) of one focus: joined by saddles no more than ``split_noise`` above *both*
    floors (noise minima of one dark structure, not two). Returns each basin's group (its smallest
    member)."""
    floor = 1.0 - regions.depth.astype(np.float64)
    a, b = pairs[:, 0] - 1, pairs[:, 1] - 1
    joined = saddles - np.minimum(floor[a], floor[b]) <= split_noise
    return _components(len(regions), np.stack([a[joined], b[joined]], 1))


def _group_min(values, group):
    """Each element's group minimum."""
    out = np.full(len(values), np.inf)
    np.minimum.at(out, group, values)
    return out[group]


def group_elongation(regions, group, voxel_size_mm):
    """:func:`region_elongation` of the union of each group's basins (indexed by group id, ``group``
    giving each basin's id): from the voxels' summed moments, each voxel its own box."""
    vox = np.asarray(voxel_size_mm, dtype=float)
    of_voxel = group[np.repeat(np.arange(len(regions)), np.diff(regions.starts))]
    n = max(len(regions), int(group.max()) + 1 if len(group) else 0)
    pts = regions.voxels * vox
    count = np.bincount(of_voxel, minlength=n).astype(float)
    safe = np.maximum(count, 1.0)
    mean = np.stack([np.bincount(of_voxel, pts[:, d], minlength=n) for d in range(3)], 1) / safe[:, None]
    cov = np.empty((n, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            m = np.bincount(of_voxel, pts[:, i] * pts[:, j], minlength=n) / safe - mean[:, i] * mean[:, j]
            cov[:, i, j] = cov[:, j, i] = m
    cov += np.diag(vox ** 2 / 12.0)
    eig = np.linalg.eigvalsh(cov)
    return np.sqrt(eig[:, -1] / np.maximum(eig[:, 0], 1e-12))


CLUSTER_SIGMAS = 2.0
"""Two touching basins are foci of a cluster when the saddle between them rises more than this many
noise sigmas above *both* floors (:func:`cluster_contacts`)."""


CLUSTER_MAX_FLATNESS = 2.5
"""...and each less elongated than this, its longest axis against its shortest (a half ball: 1.83): a
ball cut flat by its neighbour, not a slab or sheet (a vein piece flattened by its neighbours, siderosis)."""


def cluster_contacts(regions, pairs, saddles, split_noise, voxel_size_mm):
    """Which touching pairs of basins are two foci of a cluster (split), whatever the vein margin says.

    Both basins are compact (:func:`region_elongation` of their longest axis against the middle one
    below :data:`FOCUS_MAX_ELONGATION`, against the shortest below :data:`CLUSTER_MAX_FLATNESS`) and the saddle rises more than :data:`CLUSTER_SIGMAS` noise
    sigmas above each one's floor: each minimum is deep relative to the saddle, so tissue at least
    partly spared lies between them. A watershed cuts a ball where a neighbour touches it, so a
    cluster's basins are balls with a flat side (their smallest axis short), not the rods a vein
    is cut into (one long axis); noise minima inside one focus or along one vein rise less.

    Returns
    -------
    ndarray (k,) bool
    """
    if len(pairs) == 0:
        return np.zeros(0, bool)
    sigma = split_noise / SPLIT_NOISE_SIGMAS
    floor = 1.0 - regions.depth.astype(np.float64)
    a, b = pairs[:, 0] - 1, pairs[:, 1] - 1
    compact = region_elongation(regions, voxel_size_mm, flat_ok=True) < FOCUS_MAX_ELONGATION
    compact &= region_elongation(regions, voxel_size_mm) < CLUSTER_MAX_FLATNESS
    rise = np.minimum(saddles - floor[a], saddles - floor[b])
    return compact[a] & compact[b] & (rise > CLUSTER_SIGMAS * sigma)


CLUSTER_HOST_LIMIT = True
"""Split the foci of a cluster only inside a group (the basins the vein margin joins) no larger than a
microbleed (:func:`within_focus_size`): a larger dark structure is a vein network or siderosis, whose
round pieces over its saddles are not foci of their own (carving foci out of such hosts is another
stage's job)."""


def within_focus_size(regions, merged_pairs, basins, max_diameter_mm, voxel_size_mm):
    """True for each of ``basins`` (0-based) whose group, the basins ``merged_pairs`` (0-based)
    join, is no larger than a microbleed can be: its equivalent diameter at most ``max_diameter_mm``
    and no basin of it at the growth limit."""
    n = len(regions)
    root = _components(n, merged_pairs)
    volume = np.bincount(root, np.diff(regions.starts), minlength=n) * float(np.prod(voxel_size_mm))
    limit = np.bincount(root, regions.reached_limit.astype(float), minlength=n) > 0
    small = (volume <= np.pi / 6.0 * max_diameter_mm ** 3) & ~limit
    return small[root[np.asarray(basins, np.int64)]]


def cluster_index(region_of_basin, pairs, n_regions):
    """Cluster index (n_regions,) of the regions: the connected components of the split ``pairs``
    (0-based basins) between the regions their basins ended in (``region_of_basin``, 0-based)."""
    region_of_basin = np.asarray(region_of_basin, np.int64)
    return _components(n_regions, region_of_basin[np.asarray(pairs, np.int64).reshape(-1, 2)])


def _components(n, pairs):
    """Connected components of ``n`` nodes joined by ``pairs`` (0-based): each node's smallest member."""
    parent = np.arange(n)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(x) for x in range(n)], np.int64)


def cluster_extent(regions, rel, voxel_size_mm):
    """Size and place of each region's cluster (the union of its foci, :attr:`Regions.cluster`).

    Returns
    -------
    members : ndarray (m,) int
        Regions in the region's cluster (1: alone).
    centroid_vox : ndarray (m, 3) float
        Darkness-weighted centroid of the cluster's voxels (voxel coordinates).
    diameter_mm : ndarray (m,) float
        Equivalent-sphere diameter of the cluster's voxels, mm.
    """
    m = len(regions)
    cluster = np.arange(m) if regions.cluster is None else regions.cluster
    members = np.bincount(cluster, minlength=m)[cluster]
    of_voxel = cluster[np.repeat(np.arange(m), np.diff(regions.starts))]
    weights = np.maximum(1.0 - rel[tuple(regions.voxels.T)].astype(float), 1e-3)
    total = np.bincount(of_voxel, weights, minlength=m)
    centroid = np.stack([np.bincount(of_voxel, weights * regions.voxels[:, d], minlength=m) for d in range(3)], 1)
    centroid = centroid[cluster] / total[cluster][:, None]
    volume = np.bincount(of_voxel, minlength=m)[cluster] * float(np.prod(voxel_size_mm))
    return members, centroid, (6.0 * volume / np.pi) ** (1.0 / 3.0)


def region_elongation(regions, voxel_size_mm, flat_ok=False, only=None):
    """sqrt of the largest / smallest eigenvalue of each region's voxel covariance (mm; each voxel
    counted as its own box, so a one-slice region of thick slices is not called round by the
    slice's thickness alone): about 1 for a ball, L / (sqrt(3) d) for a rod L long, d wide.
    ``flat_ok``: the largest against the middle eigenvalue (a disk or a ball cut flat is about 1).
    ``only``: the regions (0-based) to measure; the others read 1."""
    out = np.ones(len(regions))
    for r in (range(len(regions)) if only is None else only):
        out[r] = points_elongation(regions.region(r), voxel_size_mm, flat_ok)
    return out


def points_elongation(points, voxel_size_mm, flat_ok=False):
    """:func:`region_elongation` of one voxel set (n, 3)."""
    vox = np.asarray(voxel_size_mm, dtype=float)
    pts = np.asarray(points) * vox
    cov = (np.cov(pts.T, bias=True) if len(pts) > 1 else np.zeros((3, 3))) + np.diag(vox ** 2 / 12.0)
    eig = np.linalg.eigvalsh(cov)
    return float(np.sqrt(eig[-1] / max(eig[1 if flat_ok else 0], 1e-12)))


def merge_touching(regions, contacts):
    """Merge regions that touch where each is below the other's threshold (segments of one vein).

    A deep focus beside a fainter vein is not merged: the vein's voxels are above the focus's
    threshold.

    The merged region keeps the deepest seed; it reached the limit if any part did.
    """
    n = len(regions)
    if not contacts or n == 0:
        return regions
    roots = _components(n + 1, contacts)  # labels 1..n, 0 the background
    unique_roots = np.unique(roots[1:])
    new_of_root = np.zeros(n + 1, np.int32)
    new_of_root[unique_roots] = np.arange(1, len(unique_roots) + 1)
    new_label = new_of_root[roots]
    new_label[0] = 0
    region_of_voxel = np.repeat(np.arange(n), np.diff(regions.starts))
    new_region_of_voxel = new_label[region_of_voxel + 1] - 1
    order = np.argsort(new_region_of_voxel, kind="stable")
    counts = np.bincount(new_region_of_voxel, minlength=len(unique_roots))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    m = len(unique_roots)
    seeds = np.zeros((m, 3), np.int64)
    depth = np.full(m, -np.inf, np.float32)
    limit = np.zeros(m, bool)
    for r in range(n):
        t = new_label[r + 1] - 1
        limit[t] |= regions.reached_limit[r]
        if regions.depth[r] > depth[t]:
            depth[t] = regions.depth[r]
            seeds[t] = regions.seeds[r]
    labels = regions.labels
    labels[tuple(regions.voxels.T)] = new_label[region_of_voxel + 1]  # relabel only region voxels
    return Regions(labels, regions.voxels[order], starts, seeds, depth, limit)


def grow_reference(rel, mask, seed, voxel_size_mm, max_extent_mm, depth_fraction=0.5):
    """Plain scipy reference for one isolated seed (for tests): the connected component of
    voxels below the threshold that contains the darkest voxel next to the seed, within the
    growth ball."""
    from scipy import ndimage as ndi

    vox = np.asarray(voxel_size_mm, dtype=float)
    seed = np.asarray(seed)
    lo = np.maximum(seed - 1, 0)
    hi = np.minimum(seed + 2, rel.shape)
    window = np.where(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], rel[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], np.inf)
    centre = lo + np.array(np.unravel_index(np.argmin(window), window.shape))
    threshold = 1.0 - depth_fraction * (1.0 - rel[tuple(centre)])
    grid = np.indices(rel.shape)
    radius = max_extent_mm / vox
    ball = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1.0
    candidates = (rel < threshold) & mask & ball
    candidates[tuple(centre)] = True
    labels, _ = ndi.label(candidates, structure=np.ones((3, 3, 3)))
    return labels == labels[tuple(centre)]
