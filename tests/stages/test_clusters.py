"""Touching foci of a cluster are split by their own minima; a beaded vein is not cut into foci."""

import numpy as np
from scipy import ndimage as ndi

from microbleeds.stages import dipole_sign, segment

VOX = np.array([0.5, 0.5, 0.5])
SHAPE = (44, 36, 36)


def _ball(centre_mm, radius_mm, depth):
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0) * VOX
    dist = np.sqrt(((grid - np.asarray(centre_mm)) ** 2).sum(-1))
    return depth * np.clip(1.5 - dist / radius_mm, 0, 1)


def _image(*foci, blur=1.0):
    """Noise-free relative intensity of dark blurred foci ``(centre_mm, radius_mm, depth)``."""
    darkness = np.max([_ball(*focus) for focus in foci], axis=0)
    return (1.0 - ndi.gaussian_filter(darkness, blur)).astype(np.float32)


def _seed(centre_mm):
    return np.round(np.asarray(centre_mm) / VOX).astype(int)


FIRST, SECOND = ((8.0, 9.0, 9.0), 1.2, 0.85), ((10.6, 9.0, 9.0), 1.2, 0.8)


def _rise(rel):
    """Noise-free rise of the saddle between the two foci above the shallower floor."""
    line = rel[_seed(FIRST[0])[0]:_seed(SECOND[0])[0] + 1, _seed(FIRST[0])[1], _seed(FIRST[0])[2]]
    return float(line.max() - max(line[0], line[-1]))


def test_two_touching_foci_are_split_with_their_own_sizes(monkeypatch):
    """A saddle inside the vein margin (0.3 x depth) and below the round-focus margin (4 sigma),
    but 3 noise sigmas above both floors: two foci of a cluster, each about its size alone."""
    rel = _image(FIRST, SECOND)
    rise = _rise(rel)
    sigma = rise / 3.0
    assert 0 < rise < segment.SPLIT_FRACTION * (1.0 - rel[tuple(_seed(SECOND[0]))])
    seeds = np.array([_seed(FIRST[0]), _seed(SECOND[0])])
    mask = np.ones(SHAPE, bool)
    regions = segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=8.0, split_noise=4 * sigma)
    assert len(regions) == 2
    assert regions.cluster is not None and regions.cluster[0] == regions.cluster[1]
    for r, focus in enumerate((FIRST, SECOND)):
        alone = segment.grow_regions(_image(focus), mask, seeds[r:r + 1], VOX, max_extent_mm=8.0,
                                     split_noise=4 * sigma)
        own = len(regions.region(regions.labels[tuple(seeds[r])] - 1))
        assert 0.6 * len(alone.region(0)) < own < 1.4 * len(alone.region(0))  # its neighbour adds a little
    members, _, diameter = segment.cluster_extent(regions, rel, VOX)
    assert list(members) == [2, 2] and diameter[0] == diameter[1]
    monkeypatch.setattr(segment, "CLUSTER_SIGMAS", np.inf)  # the saddle rule alone merges them
    assert len(segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=8.0, split_noise=4 * sigma)) == 1


def test_a_saddle_within_the_noise_keeps_one_focus():
    rel = _image(FIRST, SECOND)
    sigma = _rise(rel) / 1.5  # the same saddle rises only 1.5 sigma
    seeds = np.array([_seed(FIRST[0]), _seed(SECOND[0])])
    regions = segment.grow_regions(rel, np.ones(SHAPE, bool), seeds, VOX, max_extent_mm=8.0, split_noise=4 * sigma)
    assert len(regions) == 1


def test_a_beaded_vein_longer_than_a_microbleed_is_not_cut_into_foci(monkeypatch):
    """Dark beads in a chain (a vein of varying calibre), saddles 3 sigmas above the floors: two
    beads alone are split as a cluster, but a chain larger than the largest focus
    (``max_extent_mm``) stays one region."""
    beads = [((4.0 + 2.6 * n, 9.0, 9.0), 1.2, 0.85) for n in range(7)]
    rel = _image(*beads)
    line = rel[_seed(beads[2][0])[0]:_seed(beads[3][0])[0] + 1, _seed(beads[0][0])[1], _seed(beads[0][0])[2]]
    sigma = float(line.max() - line[0]) / 3.0
    seeds = np.array([_seed(b[0]) for b in beads])
    mask = np.ones(SHAPE, bool)
    pair = segment.grow_regions(_image(*beads[:2]), mask, seeds[:2], VOX, max_extent_mm=3.5, split_noise=4 * sigma)
    assert len(pair) == 2
    assert len(segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=3.5, split_noise=4 * sigma)) == 1
    monkeypatch.setattr(segment, "CLUSTER_HOST_LIMIT", False)  # without the size limit: cut into beads
    assert len(segment.grow_regions(rel, mask, seeds, VOX, max_extent_mm=3.5, split_noise=4 * sigma)) == len(beads)


def test_region_elongation_flat_ok_calls_a_half_ball_compact():
    labels = np.zeros(SHAPE, np.int32)
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0) * VOX
    half = (np.sqrt(((grid - 9.0) ** 2).sum(-1)) <= 3.0) & (grid[..., 0] >= 9.0)
    voxels = np.argwhere(half)
    regions = segment.Regions(labels, voxels, np.array([0, len(voxels)]), voxels[:1], np.ones(1, np.float32),
                              np.zeros(1, bool))
    assert segment.region_elongation(regions, VOX, flat_ok=True)[0] < 1.2
    assert segment.region_elongation(regions, VOX)[0] > 1.6


class _Phase:
    filtered_phase = np.zeros((4, 4, 4), np.float32)
    magnitude = np.ones((4, 4, 4), np.float32)
    phase_sign = -1


class _Scan:
    voxel_size_mm = (1.0, 1.0, 1.0)
    affine = np.eye(4)


def test_cluster_sign_fills_undecided_members_of_small_clusters_only(monkeypatch):
    calls = []

    def fake(ph, mag, centre, diameter_mm, vox, affine, phase_sign):
        calls.append(diameter_mm)
        return 1, 0.4

    monkeypatch.setattr(dipole_sign, "_focus_sign", fake)
    small = {"members": 3, "centroid_canonical": np.array([1.0, 1.0, 1.0]), "diameter_mm": 6.0}
    large = {"members": 5, "centroid_canonical": np.array([2.0, 2.0, 2.0]), "diameter_mm": 24.0}
    rows = [{"phase_sign": 0, "phase_score": 0.0, "cluster": small},
            {"phase_sign": 0, "phase_score": 0.0, "cluster": small},
            {"phase_sign": -1, "phase_score": -0.5, "cluster": small},
            {"phase_sign": 0, "phase_score": 0.0, "cluster": large},
            {"phase_sign": 0, "phase_score": 0.0, "cluster": {**small, "members": 1}}]
    dipole_sign.cluster_signs(rows, _Phase(), _Scan(), max_diameter_mm=10.0)
    assert [row["phase_sign"] for row in rows] == [1, 1, -1, 0, 0]
    assert calls == [6.0]  # one fit per cluster
