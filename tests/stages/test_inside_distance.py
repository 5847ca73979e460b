"""The thickness transform of the halo's structure runs on the structure's bounding box: the same
distances as over the whole patch (beyond the patch counting as inside)."""

import numpy as np
from scipy import ndimage as ndi

from microbleeds.stages.describe import _inside_distance


def test_the_box_gives_the_whole_patch_distances():
    rng = np.random.default_rng(0)
    for _ in range(100):
        shape = tuple(rng.integers(5, 25, 3))
        vox = rng.uniform(0.4, 3.0, 3)
        component = ndi.binary_dilation(rng.random(shape) < 0.02, iterations=int(rng.integers(1, 4)))
        if not component.any():
            continue
        whole = ndi.distance_transform_edt(np.pad(component, 1, constant_values=True), sampling=vox)[1:-1, 1:-1, 1:-1]
        box, lo = _inside_distance(component, vox)
        where = np.argwhere(component)
        np.testing.assert_array_equal(box[tuple((where - lo).T)], whole[tuple(where.T)])


def test_a_structure_leaving_the_patch_is_not_thinned_by_its_edge():
    component = np.zeros((20, 20, 5), bool)
    component[:, 8:12, :] = True  # a slab 4 voxels thick, crossing the patch along axes 0 and 2
    inside, lo = _inside_distance(component, np.ones(3))
    at = lambda i, j, k: inside[i - lo[0], j - lo[1], k - lo[2]]  # noqa: E731
    assert at(10, 9, 2) == 2.0  # half its thickness inside the patch
    assert at(0, 9, 0) == 2.0 and at(19, 10, 4) == 2.0  # and at the patch's corners: the slab goes on
