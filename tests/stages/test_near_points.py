"""Seeds for small foci near other seeds: single-voxel minima that are dark blobs (stages.seeds)."""

import numpy as np
from scipy import ndimage as ndi

from microbleeds.stages import seeds

VOX = np.array([1.0, 1.0, 2.0])


def _ball(rel, centre_vox, diameter_mm, contrast, vox=VOX):
    """Darken ``rel`` by a partial-volume ball (seeds.ideal_ball) centred on a voxel."""
    ball, half = seeds.ideal_ball(diameter_mm / 2, tuple(vox), contrast)
    lo = [c - h for c, h in zip(centre_vox, half)]
    sl = tuple(slice(a, a + n) for a, n in zip(lo, ball.shape))
    rel[sl] -= 1.0 - ball


def _scene():
    """A deep 3 mm focus, a small 1.4 mm one 3 mm beside it, a vein (a tube along y) 3 mm from a seed."""
    rel = np.ones((40, 40, 12), np.float32)
    _ball(rel, (12, 12, 6), 3.0, 0.8)
    _ball(rel, (15, 12, 6), 1.4, 0.6)
    x, z = np.meshgrid((np.arange(40) - 28) * VOX[0], (np.arange(12) - 6) * VOX[2], indexing="ij")
    rel[:, 20:38, :] -= (0.6 * np.exp(-(x ** 2 + z ** 2) / (2 * 0.7 ** 2)))[:, None, :].astype(np.float32)
    return rel


def test_dark_blobs_match_the_point_hessian_reference():
    """Chunked Hessians of many points (edges included: reflect padding) against subfoci.point_hessian."""
    rng = np.random.default_rng(5)
    answers = []
    for vox in (VOX, np.array([0.6, 0.6, 0.6])):
        field = ndi.gaussian_filter(rng.normal(0.0, 1.0, (18, 16, 8)), 1.5)
        rel = (1.0 + 0.3 * field / field.std()).astype(np.float32)
        minima = np.argwhere(rel == ndi.minimum_filter(rel, size=3))[:12]  # mostly blobs
        points = np.concatenate([minima, rng.integers(0, [18, 16, 8], (6, 3)), [[0, 0, 0], [17, 15, 7]]])
        got = seeds.dark_blobs(rel, points, vox, chunk=7)
        want = [seeds.dark_blob_reference(rel, tuple(p), vox) for p in points]
        assert got.tolist() == want
        answers += want
    assert 0 < sum(answers) < len(answers)  # both answers occur: the comparison means something


def test_a_ball_is_a_dark_blob_and_a_tube_is_not():
    rel = _scene()
    assert seeds.dark_blobs(rel, [[15, 12, 6], [12, 12, 6]], VOX).all()
    assert not seeds.dark_blobs(rel, [[28, 29, 6]], VOX).any()


def test_near_seed_is_a_cube_around_each_seed():
    rng = np.random.default_rng(2)
    shape = (15, 11, 9)
    points = rng.integers(0, shape, (6, 3))
    want = np.zeros(shape, bool)
    want[tuple(points.T)] = True
    want = ndi.maximum_filter(want, size=5, mode="constant")
    np.testing.assert_array_equal(seeds._near_seed(shape, points, 2), want)


def test_a_small_focus_beside_a_seeded_one_gets_a_seed_of_its_own():
    rel = _scene()
    mask = np.ones(rel.shape, bool)
    seeded = np.array([[12, 12, 6], [28, 22, 6], [28, 35, 6]])  # the deep focus and the vein's ends
    rel[28, 29, 6] -= 0.05  # a noise dip on the vein, 6-7 mm from its seeds: a minimum, but on a tube
    got = seeds._near_points(rel, mask, VOX, seeded, 0.25, 0.02, np.float32(0.875))
    assert got.tolist() == [[15, 12, 6]]
    # nearer than NEAR_POINT_GAP_VOX voxels to a seed along every axis: that seed's focus
    beside = np.array([[13, 12, 6], [28, 22, 6], [28, 35, 6]])
    assert len(seeds._near_points(rel, mask, VOX, beside, 0.25, 0.02, np.float32(0.875))) == 0
    # too shallow for POINT_SIGMAS noise sigmas
    assert len(seeds._near_points(rel, mask, VOX, seeded, 0.25, 0.1, np.float32(0.875))) == 0


def test_find_seeds_seeds_the_small_focus_of_a_pair():
    rel = _scene()
    rel += np.random.default_rng(0).normal(0, 0.01, rel.shape).astype(np.float32)
    found, _ = seeds.find_seeds(rel, np.ones(rel.shape, bool), VOX, [0.5, 0.7, 0.98, 1.37, 1.92], 0.01, 0.25)
    assert np.abs(found - [15, 12, 6]).max(axis=1).min() <= 1
