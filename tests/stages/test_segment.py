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
