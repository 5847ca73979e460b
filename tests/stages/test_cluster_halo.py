"""A microbleed of a cluster is not ``embedded`` in its neighbours: the halo of a candidate at least
``describe.FOCUS_DEPTH`` dark leaves out the voxels of other deep round foci, so it is judged against
what joins them (their blooming's overlap), not against microbleeds as dark as itself. A fainter spot
beside a microbleed is still judged against it, and a vein's pieces are no foci."""

import numpy as np
import pytest

from microbleeds.presets import load_parameters
from microbleeds.stages import describe
from microbleeds.stages.mimics import classify
from microbleeds.stages.segment import Regions, grow_regions

VOX = np.array([1.0, 1.0, 2.0])  # a 3 T clinical SWI grid, mm
SHAPE = (41, 41, 9)
CENTRES_MM = [(-8.0, 0.0), (-4.0, 0.0), (0.0, 0.0), (4.0, 0.0), (8.0, 0.0)]  # a chain of foci 4 mm apart


def _cluster(depths, radius_mm=1.5, bridge_depth=0.4):
    """Relative intensity with dark balls at ``CENTRES_MM`` (mid slice), joined by a band of
    ``bridge_depth`` (their blooming's overlap), and each ball's voxels."""
    rel = np.ones(SHAPE, np.float32)
    c = np.array(SHAPE) // 2
    ii, jj, kk = np.indices(SHAPE)
    x, y, z = (ii - c[0]) * VOX[0], (jj - c[1]) * VOX[1], (kk - c[2]) * VOX[2]
    rel[(np.abs(y) <= 1.0) & (np.abs(x) <= 8.0) & (z == 0)] = 1.0 - bridge_depth
    balls = []
    for (cx, cy), depth in zip(CENTRES_MM, depths):
        ball = (x - cx) ** 2 + (y - cy) ** 2 + z ** 2 <= radius_mm ** 2
        rel[ball] = 1.0 - depth
        balls.append(ball)
    return rel, balls


def _halo(rel, own, other_foci=None):
    return describe._halo(rel, np.ones(rel.shape, bool), own, np.argwhere(own), VOX, other_foci)


def _row(rel, own, ratio):
    shape = describe._size_shape(np.argwhere(own), rel, VOX)
    return dict(edge_distance_mm=10.0, diameter_mm=shape["diameter_mm"], max_inplane_diameter_mm=3.0,
                inplane_elongation=1.1, elongation=1.2, vesselness=0.1, through_plane_ratio=0.5,
                centroid_shift_mm=0.0, halo_extent_mm=9.0, halo_elongation=1.8, halo_depth_ratio=ratio,
                halo_width_ratio=1.0, ring_interior_mm3=0.0, contrast=0.6, cnr=30.0, depth=shape["depth"],
                reached_limit=False, max_voxel_mm=2.0, pixel_mm=1.0, inside_brain=True)


@pytest.fixture(scope="module")
def params():
    return load_parameters("swi-3t")


def test_a_cluster_member_is_judged_without_its_neighbours(params):
    rel, balls = _cluster([0.85] * 5)
    mid, others = balls[2], np.any(balls[:2] + balls[3:], axis=0)
    _, extent, with_neighbours, _ = _halo(rel, mid)
    assert extent > 3.0 + 3.0  # the chain is one 3/8-depth structure reaching beyond the focus
    assert with_neighbours >= params.min_halo_depth_ratio  # its neighbours are as dark as itself
    assert classify(_row(rel, mid, with_neighbours), params)["reason"] == "embedded"
    _, _, without, _ = _halo(rel, mid, others)
    assert without == pytest.approx(0.4 / 0.85, abs=1e-6)
    assert without < params.min_halo_depth_ratio  # the bridge between them is fainter than the focus
    assert classify(_row(rel, mid, without), params)["status"] == "accepted"


def test_a_faint_spot_beside_a_microbleed_is_still_judged_against_it(params):
    rel, balls = _cluster([0.85, 0.85, 0.6, 0.85, 0.85])  # the middle one 0.6 dark: below FOCUS_DEPTH
    assert 0.6 < describe.FOCUS_DEPTH
    mid, others = balls[2], np.any(balls[:2] + balls[3:], axis=0)
    _, _, plain, _ = _halo(rel, mid)
    _, _, excluded, _ = _halo(rel, mid, others)
    assert excluded == plain  # the neighbours are not left out for a spot that is no dephased core
    assert plain >= params.min_halo_depth_ratio


def _regions(rel, parts):
    labels = np.zeros(rel.shape, np.int32)
    voxels, starts, seeds, depth = [], [0], [], []
    for i, part in enumerate(parts):
        idx = np.argwhere(part)
        labels[part] = i + 1
        voxels.append(idx)
        starts.append(starts[-1] + len(idx))
        seeds.append(idx[np.argmin(rel[part])])
        depth.append(1.0 - rel[part].min())
    return Regions(labels, np.concatenate(voxels), np.array(starts), np.array(seeds),
                   np.array(depth, np.float32), np.zeros(len(parts), bool))


def test_deep_round_foci_are_dark_and_round():
    rel = np.ones(SHAPE, np.float32)
    ii, jj, kk = np.indices(SHAPE)
    ball = (ii - 10) ** 2 + (jj - 10) ** 2 + ((kk - 4) * 2) ** 2 <= 2
    tube = (ii == 30) & (jj >= 5) & (jj <= 15) & (kk == 4)  # a vein's piece, 11 mm long
    faint = (ii - 20) ** 2 + (jj - 30) ** 2 + ((kk - 4) * 2) ** 2 <= 2
    rel[ball], rel[tube], rel[faint] = 0.1, 0.1, 0.5
    regions = _regions(rel, [ball, tube, faint])
    assert describe.deep_round_foci(regions, VOX).tolist() == [True, False, False]


def test_described_cluster_members_pass_embedded(params):
    """The whole chain: grown from the five minima, each a region of its own, described, classified."""
    rel, balls = _cluster([0.88, 0.86, 0.87, 0.85, 0.89])
    mask = np.ones(SHAPE, bool)
    seeds = np.array([np.argwhere(b)[np.argmin(rel[b])] for b in balls])
    regions = grow_regions(rel, mask, seeds, VOX, params.max_diameter_mm, split_noise=0.05)
    assert len(regions) == 5
    rows = describe.describe_regions(regions, rel, mask, np.zeros(SHAPE, np.float32), np.diag([*VOX, 1.0]),
                                     VOX, noise_sigma=0.02)
    middle = rows[int(regions.labels[tuple(seeds[2])]) - 1]
    assert middle["halo_extent_mm"] > middle["diameter_mm"] + 3.0
    assert middle["halo_depth_ratio"] < params.min_halo_depth_ratio
