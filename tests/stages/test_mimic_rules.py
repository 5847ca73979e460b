"""The mimic rules of the realistic-scans work: cavernoma (a rim around a spared core), a focus
beside a vein versus a vein fragment (halo darkness), thick-slice dips (in-plane width)."""

import numpy as np
import pytest

from microbleeds.presets import load_parameters
from microbleeds.stages import describe
from microbleeds.stages.mimics import classify


def _row(**kw):
    row = dict(edge_distance_mm=5.0, diameter_mm=3.0, max_inplane_diameter_mm=3.0, inplane_elongation=1.1,
               elongation=1.2, vesselness=0.1, through_plane_ratio=0.5, centroid_shift_mm=0.2,
               halo_extent_mm=4.0, halo_elongation=1.2, halo_depth_ratio=0.0, ring_interior_mm3=0.0,
               contrast=0.6, cnr=30.0, depth=0.8, reached_limit=False, max_voxel_mm=1.0, inside_brain=True)
    row.update(kw)
    return row


@pytest.fixture(scope="module")
def params():
    return load_parameters("swi-3t")


def test_a_plain_focus_is_accepted(params):
    assert classify(_row(), params)["status"] == "accepted"


def test_a_rim_around_a_spared_core_is_a_cavernoma(params):
    assert classify(_row(diameter_mm=9.0, ring_interior_mm3=80.0), params)["reason"] == "cavernoma"


def test_a_focus_beside_a_fainter_vein_is_kept_but_a_vein_fragment_is_not(params):
    long_halo = dict(halo_extent_mm=14.0, halo_elongation=4.5)
    assert classify(_row(**long_halo, halo_depth_ratio=0.42), params)["status"] == "accepted"
    assert classify(_row(**long_halo, halo_depth_ratio=0.7), params)["reason"] == "tubular"


def test_a_one_voxel_dip_of_a_thick_slice_is_too_small(params):
    row = _row(diameter_mm=1.32, max_inplane_diameter_mm=0.45)  # 0.45 x 0.45 x 6 mm voxel
    assert classify(row, params)["reason"] == "too_small"


def test_ring_interior_of_a_ring_and_of_a_disk():
    vox = np.array([0.5, 0.5, 1.0])
    grid = np.indices((40, 40, 6)).transpose(1, 2, 3, 0)[..., :2] * vox[:2]
    r = np.sqrt(((grid - 10.0) ** 2).sum(-1))
    ring = (r > 3.0) & (r < 4.5)
    disk = r < 4.5
    rel = np.ones((40, 40, 6), np.float32)
    assert describe._ring_interior(disk, rel, vox) == 0.0
    inside = describe._ring_interior(ring, rel, vox)
    assert inside == pytest.approx(6 * np.pi * 3.0 ** 2, rel=0.15)
