"""The seed stage's darkness map against scipy."""

import numpy as np
from scipy import ndimage as ndi

from microbleeds.stages import seeds


def test_darkness_map_is_one_minus_scipys_uniform_filter_bit_for_bit():
    """Float32 volumes of several shapes (one-voxel axes, rows wider than one work unit)."""
    rng = np.random.default_rng(21)
    for shape in ((5, 7, 9), (1, 4, 3), (30, 2, 17), (1, 1, 1), (2, 1, 300), (3, 4, seeds.BOX_CHUNK + 11),
                  (40, 30, 20)):
        rel = (rng.random(shape) * rng.uniform(0.1, 3.0)).astype(np.float32)
        got = seeds.darkness_map(rel)
        assert got.dtype == np.float32 and got.shape == rel.shape
        np.testing.assert_array_equal(got, 1.0 - ndi.uniform_filter(rel, size=3))
    strided = rng.random((12, 10, 8)).astype(np.float32)[::2, :, ::-1]
    np.testing.assert_array_equal(seeds.darkness_map(strided), 1.0 - ndi.uniform_filter(strided, size=3))


def test_darkness_kernels_are_cached_and_typed_float32():
    seeds.darkness_map(np.ones((4, 5, 6), np.float64))  # converted to float32 before the kernels
    for kernel in (seeds._box3_middle, seeds._box3_last_darkness):
        assert kernel._cache.__class__.__name__ != "NullCache"
        assert kernel.signatures and all("float32" in str(sig) for sig in kernel.signatures)


def test_nearest_distance_matches_a_kd_tree():
    from scipy.spatial import cKDTree

    from microbleeds.stages.seeds import _nearest_distance_mm

    rng = np.random.default_rng(3)
    points = rng.integers(0, 60, (600, 3)) * np.array([0.45, 0.45, 5.0])
    others = rng.integers(0, 60, (300, 3)) * np.array([0.45, 0.45, 5.0])
    np.testing.assert_allclose(_nearest_distance_mm(points, others), cKDTree(others).query(points)[0],
                               rtol=0, atol=1e-12)
