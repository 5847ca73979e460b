"""Region growing splits touching foci at their saddle and keeps a vein in one piece."""

import numpy as np
from scipy import ndimage as ndi

from microbleeds.stages import segment

VOX = np.array([0.5, 0.5, 0.5])


def _ball(shape, centre_mm, radius_mm, depth):
    grid = np.indices(shape).transpose(1, 2, 3, 0) * VOX
    dist = np.sqrt(((grid - np.asarray(centre_mm)) ** 2).sum(-1))
    return depth * np.clip(1.5 - dist / radius_mm, 0, 1).clip(0, 1)


def _cluster(gap_mm=2.8, noise=0.02, seed=0):
    """Two dark blurred foci (contrast 0.85 and 0.75) ``gap_mm`` apart, centre to centre."""
    shape = (40, 40, 40)
    darkness = np.maximum(_ball(shape, (10, 10, 10), 1.2, 0.85), _ball(shape, (10 + gap_mm, 10, 10), 1.2, 0.75))
    rel = 1.0 - ndi.gaussian_filter(darkness, 1.0)
    rel += np.random.default_rng(seed).normal(0, noise, shape)
    return rel.astype(np.float32)


def _seeds_of(rel, *centres_mm):
    return np.array([np.round(np.asarray(c) / VOX).astype(int) for c in centres_mm])


def test_two_touching_foci_are_two_regions():
    rel = _cluster()
    seeds = _seeds_of(rel, (10, 10, 10), (12.8, 10, 10))
    mask = np.ones(rel.shape, bool)
    regions = segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=6.0)
    assert len(regions) == 2
    merged = segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=6.0, split_fraction=0.0)
    assert len(merged) == 1  # the old growth takes both foci into one region


def test_a_noisy_vein_stays_one_region():
    """A straight dark tube with noise minima along it: its segments are merged as before."""
    shape = (40, 40, 40)
    grid = np.indices(shape).transpose(1, 2, 3, 0) * VOX
    dist = np.sqrt((grid[..., 1] - 10) ** 2 + (grid[..., 2] - 10) ** 2)
    darkness = 0.55 * np.clip(1.5 - dist / 0.6, 0, 1)
    rng = np.random.default_rng(3)
    rel = (1.0 - ndi.gaussian_filter(darkness, 0.8) + rng.normal(0, 0.02, shape)).astype(np.float32)
    seeds = _seeds_of(rel, (4, 10, 10), (10, 10, 10), (16, 10, 10))
    regions = segment.grow_regions(rel, np.ones(shape, bool), seeds, VOX, max_extent_mm=8.0)
    assert len(regions) == 1


def test_a_single_noisy_focus_is_not_split():
    rel = _cluster(gap_mm=30.0, noise=0.03, seed=5)  # the second focus far away
    seeds = _seeds_of(rel, (10, 10, 10))
    regions = segment.grow_regions(rel, np.ones(rel.shape, bool), seeds, VOX, max_extent_mm=5.0)
    reference = segment.grow_reference(rel, np.ones(rel.shape, bool), seeds[0], VOX, 5.0)
    np.testing.assert_array_equal(regions.labels == 1, reference)


def test_watershed_kernel_is_cached_and_runs_on_float32():
    rel = _cluster()
    segment.grow_regions(rel, np.ones(rel.shape, bool), _seeds_of(rel, (10, 10, 10)), VOX, max_extent_mm=4.0)
    assert segment._grow_split._cache.__class__.__name__ != "NullCache"
    assert any("float32" in str(s) for s in segment._grow_split.signatures)


def _vein(shape, radius_mm, depth, narrow_at_mm=None, narrow_depth=None, noise=0.02, seed=3):
    """A straight dark tube along axis 0 (blurred); optionally fainter over 1 mm at ``narrow_at_mm``."""
    grid = np.indices(shape).transpose(1, 2, 3, 0) * VOX
    dist = np.sqrt((grid[..., 1] - 10) ** 2 + (grid[..., 2] - 10) ** 2)
    darkness = np.clip(1.5 - dist / radius_mm, 0, 1) * depth
    if narrow_at_mm is not None:
        along = np.abs(grid[..., 0] - narrow_at_mm) < 0.5
        darkness = np.where(along, darkness * narrow_depth / depth, darkness)
    rng = np.random.default_rng(seed)
    return (1.0 - ndi.gaussian_filter(darkness, 0.8) + rng.normal(0, noise, shape)).astype(np.float32)


def _close_pair(gap_mm, noise=0.02, seed=0, blur=1.0):
    """Two dark round foci (contrast 0.85, 0.8) ``gap_mm`` apart, centre to centre, blurred (blooming)."""
    shape = (40, 40, 40)
    darkness = np.maximum(_ball(shape, (10, 10, 10), 1.2, 0.85), _ball(shape, (10 + gap_mm, 10, 10), 1.2, 0.8))
    rel = 1.0 - ndi.gaussian_filter(darkness, blur)
    rel += np.random.default_rng(seed).normal(0, noise, shape)
    return rel.astype(np.float32)


def _basins(rel, seeds, split_noise):
    """The watershed's basins before merging, with the touching pairs and their saddles."""
    labels = np.zeros(rel.shape, np.int32)
    out = segment._grow_split(rel, np.ones(rel.shape, bool), np.ascontiguousarray(seeds), np.float32(0.5),
                              np.float32(0.1), np.full(3, 12.0), 20000, labels, np.float32(segment.SPLIT_FRACTION),
                              np.float32(split_noise))
    voxels, starts, centres, depths, limits, pairs, saddles = out
    return segment.Regions(labels, voxels, starts, centres, depths, limits), pairs, saddles


def test_two_round_foci_over_a_shallow_saddle_are_two_regions(monkeypatch):
    """The saddle is within 0.3 x depth of the shallower floor (the vein margin would merge them)
    but above the noise margin (4 sigma), and each basin is round: two foci of a cluster, not a vein."""
    rel = _close_pair(2.4)
    seeds = _seeds_of(rel, (10, 10, 10), (12.4, 10, 10))
    basins, pairs, saddles = _basins(rel, seeds, 4 * 0.02)
    assert len(pairs) == 1
    rise = saddles[0] - (1.0 - basins.depth.min())
    assert 4 * 0.02 < rise < segment.SPLIT_FRACTION * basins.depth.min()
    assert (segment.region_elongation(basins, VOX) < segment.FOCUS_MAX_ELONGATION).all()
    mask = np.ones(rel.shape, bool)
    regions = segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=6.0, split_noise=4 * 0.02)
    assert len(regions) == 2
    first, second = (regions.labels[tuple(s)] for s in seeds)
    assert first != second and first > 0 and second > 0
    monkeypatch.setattr(segment, "FOCUS_MAX_ELONGATION", 0.0)  # the vein margin alone merges them
    merged = segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=6.0, split_noise=4 * 0.02)
    assert len(merged) == 1


def test_noise_sized_saddle_between_round_halves_is_one_region():
    """One round focus with two noise minima: the saddle between them is noise, so one region."""
    rel = _close_pair(0.6, noise=0.02, seed=4)
    seeds = _seeds_of(rel, (10, 10, 10), (10.5, 10, 10))
    regions = segment.grow_regions(rel, np.ones(rel.shape, bool), seeds, VOX, max_extent_mm=6.0, split_noise=0.08)
    assert len(regions) == 1


def test_vein_with_a_constriction_stays_one_region():
    """A vein fainter over 1 mm (a narrowing): its saddle rises above the noise, but its pieces are
    long, not round: segments of one vein, merged."""
    shape = (40, 40, 40)
    rel = _vein(shape, 0.6, 0.6, narrow_at_mm=10.0, narrow_depth=0.45)
    seeds = _seeds_of(rel, (5, 10, 10), (15, 10, 10))
    basins, pairs, saddles = _basins(rel, seeds, 0.08)
    assert len(pairs) == 1
    assert saddles[0] - (1.0 - basins.depth.min()) > 0.08  # above the noise margin: not a noise dip
    assert (segment.region_elongation(basins, VOX) > segment.FOCUS_MAX_ELONGATION).all()
    regions = segment.grow_regions(rel, np.ones(shape, bool), seeds, VOX, max_extent_mm=8.0, split_noise=0.08)
    assert len(regions) == 1


def test_deep_focus_beside_a_fainter_vein_is_its_own_region(monkeypatch):
    """A deep round focus touching a fainter vein: the saddle is a dip for the vein but a rise of
    far more than the noise for the focus, which is round: not a segment of the vein."""
    shape = (40, 40, 40)
    grid = np.indices(shape).transpose(1, 2, 3, 0) * VOX
    dist = np.sqrt((grid[..., 1] - 10) ** 2 + (grid[..., 2] - 10) ** 2)
    vein = 0.8 * np.clip(1.5 - dist / 1.0, 0, 1)
    darkness = np.maximum(vein, _ball(shape, (10, 12.2, 10), 1.2, 0.97))
    rel = (1.0 - ndi.gaussian_filter(darkness, 0.8) + np.random.default_rng(1).normal(0, 0.02, shape)).astype(np.float32)
    seeds = _seeds_of(rel, (10, 12.2, 10), (4, 10, 10), (16, 10, 10))
    mask = np.ones(shape, bool)
    regions = segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=8.0, split_noise=0.08)
    focus = regions.labels[tuple(seeds[0])]
    assert focus > 0 and regions.labels[tuple(seeds[1])] != focus
    assert regions.labels[tuple(seeds[1])] == regions.labels[tuple(seeds[2])]  # the vein: one region
    assert len(regions.region(focus - 1)) < 0.5 * np.count_nonzero(regions.labels)
    monkeypatch.setattr(segment, "FOCUS_MAX_ELONGATION", 0.0)  # the vein margin alone: one region
    merged = segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=8.0, split_noise=0.08)
    assert merged.labels[tuple(seeds[0])] == merged.labels[tuple(seeds[1])]


def test_region_elongation_of_a_ball_and_a_rod():
    shape = (30, 30, 30)
    labels = np.zeros(shape, np.int32)
    grid = np.indices(shape).transpose(1, 2, 3, 0) * VOX
    ball = np.sqrt(((grid - 5.0) ** 2).sum(-1)) <= 2.0
    rod = (np.abs(grid[..., 0] - 7.5) <= 5.0) & (np.sqrt((grid[..., 1] - 12) ** 2 + (grid[..., 2] - 12) ** 2) <= 0.8)
    voxels = np.concatenate([np.argwhere(ball), np.argwhere(rod)])
    starts = np.array([0, ball.sum(), ball.sum() + rod.sum()])
    regions = segment.Regions(labels, voxels, starts, voxels[[0, ball.sum()]], np.ones(2, np.float32), np.zeros(2, bool))
    ratio = segment.region_elongation(regions, VOX)
    assert ratio[0] < 1.2 and ratio[1] > 3.0


def _minimax_saddle(rel, a, b):
    """Plain reference: the lowest level at which voxels a and b are 26-connected through voxels
    no brighter than it (Kruskal order, union-find)."""
    shape = rel.shape
    parent = {}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    steps = [s for s in np.ndindex(3, 3, 3) if s != (1, 1, 1)]
    for flat in np.argsort(rel, axis=None, kind="stable"):
        p = np.unravel_index(flat, shape)
        parent[p] = p
        for s in steps:
            q = tuple(int(c + d - 1) for c, d in zip(p, s))
            if all(0 <= c < n for c, n in zip(q, shape)) and q in parent:
                parent[find(q)] = find(p)
        if a in parent and b in parent and find(a) == find(b):
            return float(rel[p])
    return np.inf


def test_watershed_saddle_matches_a_minimax_reference():
    rel = _close_pair(2.4, noise=0.0)[6:34, 10:30, 10:30].copy()
    seeds = _seeds_of(rel, (7, 5, 5), (9.4, 5, 5))  # the foci at 10 and 12.4 mm, in the crop
    basins, pairs, saddles = _basins(rel, seeds, 0.08)
    assert len(pairs) == 1 and saddles.dtype == np.float32
    floors = [tuple(int(v) for v in c) for c in basins.seeds]
    assert saddles[0] == np.float32(_minimax_saddle(rel, floors[0], floors[1]))


def _sliced_focus_beside_vein(noise=0.005, seed=2):
    """A large deep focus (2.5 mm radius, rel 0.1) cut into three slabs by two noise-sized ridges
    (rel 0.12: the pieces of one focus that noise makes at 7 T), touching a fainter vein (rel 0.45,
    0.5 at the contact) that runs past it along axis 2."""
    shape = (40, 40, 40)
    grid = np.indices(shape).transpose(1, 2, 3, 0) * VOX
    rel = np.ones(shape)
    tube = np.sqrt((grid[..., 0] - 10) ** 2 + (grid[..., 1] - 13.5) ** 2) <= 0.75
    rel[tube] = np.where(np.abs(grid[..., 2] - 10) <= 1.5, 0.5, 0.45)[tube]
    ball = np.sqrt(((grid - 10.0) ** 2).sum(-1)) <= 2.5
    rel[ball] = 0.1
    rel[ball & (np.isclose(grid[..., 0], 9.0) | np.isclose(grid[..., 0], 11.0))] = 0.12
    seeds = _seeds_of(rel, (8.0, 10, 10), (10, 10, 10), (12.0, 10, 10), (10, 13.5, 3), (10, 13.5, 17))
    for s, floor in zip(seeds[:3], (0.08, 0.07, 0.09)):
        rel[tuple(s)] = floor
    rel += np.random.default_rng(seed).normal(0, noise, shape)
    return rel.astype(np.float32), seeds


def test_focus_cut_by_noise_is_judged_round_as_a_whole(monkeypatch):
    """Each slab of the noise-cut focus is long, so alone none is a focus of its own and the vein
    margin would merge the whole focus into the vein; judged together (its focus group), it is round,
    and its saddle to the vein rises far above the noise: the focus stays its own region."""
    rel, seeds = _sliced_focus_beside_vein()
    basins, pairs, saddles = _basins(rel, seeds, 0.1)
    assert len(basins) == 5
    slabs = segment.region_elongation(basins, VOX)[:3]
    assert slabs[1] > segment.FOCUS_MAX_ELONGATION  # the middle slab, the one touching the vein
    groups = segment.focus_groups(basins, pairs, saddles, 0.1)
    assert len(set(groups[:3])) == 1 and groups[3] not in groups[:3]
    assert segment.group_elongation(basins, groups, VOX)[groups[0]] < segment.FOCUS_MAX_ELONGATION
    mask = np.ones(rel.shape, bool)
    regions = segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=8.0, split_noise=0.1)
    focus = regions.labels[tuple(seeds[1])]
    assert {regions.labels[tuple(s)] for s in seeds[:3]} == {focus}
    assert regions.labels[tuple(seeds[3])] != focus
    ball = np.count_nonzero(np.sqrt(((np.indices(rel.shape).transpose(1, 2, 3, 0) * VOX - 10.0) ** 2).sum(-1)) <= 2.5)
    assert ball <= len(regions.region(focus - 1)) < 1.2 * ball  # the focus, and at most the vein's contact
    monkeypatch.setattr(segment, "FOCUS_GROUPS", False)  # each slab judged alone: the vein takes the focus
    merged = segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=8.0, split_noise=0.1)
    assert merged.labels[tuple(seeds[1])] == merged.labels[tuple(seeds[3])]


def test_focus_groups_join_minima_within_the_noise_of_both_floors():
    """Two pieces of one focus (floors 0.10, 0.12, saddle 0.15) are one group; a deep focus and a
    shallow vein piece (floors 0.1, 0.5, saddle 0.52: a dip for the vein only) are not."""
    basins = segment.Regions(np.zeros((1, 1, 1), np.int32), np.zeros((4, 3), np.int64), np.arange(5),
                             np.zeros((4, 3), np.int64), np.array([0.9, 0.88, 0.5, 0.9], np.float32),
                             np.zeros(4, bool))
    pairs = np.array([[1, 2], [2, 3], [3, 4]])
    groups = segment.focus_groups(basins, pairs, np.array([0.15, 0.52, 0.52]), split_noise=0.1)
    assert groups[0] == groups[1] and len(set(groups)) == 3


def test_group_elongation_matches_region_elongation_of_the_merged_regions():
    rng = np.random.default_rng(7)
    rel = _cluster(gap_mm=2.4, noise=0.03, seed=11)
    seeds = np.argwhere(rel < 0.8)[rng.choice(np.count_nonzero(rel < 0.8), 12, replace=False)]
    basins, pairs, saddles = _basins(rel, seeds, 0.05)
    groups = rng.integers(0, 4, len(basins))
    contacts = [(a + 1, b + 1) for a in range(len(basins)) for b in range(a + 1, len(basins)) if groups[a] == groups[b]]
    merged = segment.merge_touching(basins, contacts)
    expected = segment.region_elongation(merged, VOX)
    got = segment.group_elongation(basins, groups, VOX)
    present = np.unique(groups)
    np.testing.assert_allclose(np.sort(got[present]), np.sort(expected), rtol=1e-9)


def test_region_elongation_measures_only_the_regions_asked():
    rel = _cluster(gap_mm=2.4, noise=0.03, seed=11)
    seeds = _seeds_of(rel, (10, 10, 10), (12.4, 10, 10))
    basins, _, _ = _basins(rel, seeds, 0.05)
    full = segment.region_elongation(basins, VOX)
    part = segment.region_elongation(basins, VOX, only=[1])
    assert part[1] == full[1] and part[0] == 1.0 != full[0]
