"""Issue 10, rules for small foci and thick slices: a region one or two pixels across has no
in-plane shape, and on slices thicker than its shell reaches a focus's contrast is judged against
the slices above and below it as well as its in-plane shell (the slice profile)."""

import numpy as np
import pytest

from microbleeds.presets import load_parameters
from microbleeds.stages import describe
from microbleeds.stages.mimics import LINE_MIN_PIXELS, classify

VOX = np.array([1.0, 1.0, 2.0])


def _row(**kw):
    row = dict(edge_distance_mm=5.0, diameter_mm=2.5, max_inplane_diameter_mm=2.0, inplane_elongation=1.1,
               elongation=1.2, vesselness=0.1, through_plane_ratio=0.0, centroid_shift_mm=0.0,
               halo_extent_mm=2.0, halo_elongation=1.2, halo_depth_ratio=0.0, ring_interior_mm3=0.0,
               contrast=0.6, cnr=30.0, depth=0.8, reached_limit=False, max_voxel_mm=2.0, inside_brain=True)
    row.update(kw)
    return row


@pytest.fixture(scope="module")
def params():
    return load_parameters("swi-3t")


def _shape(pixels):
    """describe's size and shape of a one-slice region of the given in-plane pixels (1 x 1 x 2 mm)."""
    voxels = np.array([[i, j, 3] for i, j in pixels], dtype=np.int64)
    rel = np.full((12, 12, 6), 1.0, np.float32)
    rel[tuple(voxels.T)] = 0.3
    shape = describe._size_shape(voxels, rel, VOX)
    return {k: shape[k] for k in ("inplane_elongation", "max_inplane_diameter_mm")}


@pytest.mark.parametrize("pixels", [[(5, 5), (6, 6)], [(5, 5), (6, 5), (7, 6)]])
def test_a_region_of_a_few_pixels_is_not_a_line(params, pixels):
    shape = _shape(pixels)
    assert shape["inplane_elongation"] > params.max_elongation  # the grid alone makes it "elongated"
    assert shape["max_inplane_diameter_mm"] < LINE_MIN_PIXELS * VOX[0]
    assert classify(_row(**shape), params)["reason"] == "tubular"  # without its pixel size: as before
    assert classify(_row(**shape, pixel_mm=1.0), params)["status"] == "accepted"


def test_a_line_of_pixels_is_still_tubular(params):
    shape = _shape([(3, 5), (4, 5), (5, 5), (6, 5), (7, 5)])
    assert shape["max_inplane_diameter_mm"] >= LINE_MIN_PIXELS * VOX[0]
    assert classify(_row(**shape, pixel_mm=1.0), params)["reason"] == "tubular"


def _thick_focus(slice_mm, ring_rel=0.8):
    """A one-slice focus (rel 0.5, 1.2 mm radius) whose in-plane surroundings (to 5 mm) are
    darkened to ``ring_rel``; the slices above and below are tissue (1.0)."""
    vox = np.array([0.45, 0.45, slice_mm])
    shape = (48, 48, 5)
    xy = np.indices(shape[:2]).transpose(1, 2, 0) * vox[:2]
    r = np.sqrt(((xy - 24 * vox[:2]) ** 2).sum(-1))
    rel = np.ones(shape, np.float32)
    rel[:, :, 2][r < 5.0] = ring_rel
    focus = np.zeros(shape, bool)
    focus[:, :, 2] = r < 1.2
    rel[focus] = 0.5
    labels = focus.astype(np.int32)
    context = describe._context(np.argwhere(focus), 1, labels, rel, np.ones(shape, bool), vox, 0.05, 1.5)
    return context


def test_on_thick_slices_the_background_is_judged_against_the_slice_profile():
    thick = _thick_focus(5.0)
    assert thick["background"] == pytest.approx(0.5 * (0.8 + 1.0), abs=1e-6)
    assert thick["contrast"] == pytest.approx(1.0 - 0.5 / 0.9, abs=1e-3)  # in-plane shell alone: 0.375


def test_on_thin_slices_the_shell_already_holds_the_slices_around():
    thin = _thick_focus(1.0)  # the shell reaches 1.5 mm + half a voxel: slices above and below are in it
    assert thin["background"] in (pytest.approx(0.8), pytest.approx(1.0))  # a plain median, as before
    assert thin["background"] != pytest.approx(0.9)


def test_a_focus_beside_a_fainter_vein_must_be_round_in_3d(params):
    beside = dict(halo_extent_mm=14.0, halo_elongation=4.5, halo_depth_ratio=0.42, diameter_mm=3.0)
    assert classify(_row(**beside, elongation=1.4), params)["status"] == "accepted"
    assert classify(_row(**beside, elongation=2.6), params)["reason"] == "tubular"  # a vein's darker stretch
    assert classify(_row(elongation=2.6), params)["status"] == "accepted"  # touching nothing: max_elongation_3d


def test_isolated_single_voxel_minima_seed_a_focus_and_points_of_a_seeded_structure_do_not():
    from microbleeds.stages.seeds import POINT_ISOLATION_MM, _isolated_points

    vox = np.array([1.0, 1.0, 2.0])
    rel = np.ones((30, 30, 10), np.float32)
    rel[8, 8, 5] = 0.4  # a focus narrower than a voxel: one dark voxel
    rel[20, 20, 5] = 0.4  # the same, 2 mm from a seeded structure
    rel[5, 25, 5] = 0.8  # too shallow for min_contrast 0.4
    mask = np.ones(rel.shape, bool)
    seeds = np.array([[22, 20, 5]])
    points = _isolated_points(rel, mask, vox, seeds, 0.4, 0.05, np.float32(0.8))
    assert points.tolist() == [[8, 8, 5]]
    assert np.linalg.norm((points[0] - seeds[0]) * vox) > POINT_ISOLATION_MM
    noisy = _isolated_points(rel, mask, vox, seeds, 0.4, 0.11, np.float32(0.8))  # 6 sigma = 0.66 > 0.6
    assert len(noisy) == 0


@pytest.mark.parametrize("pixel, n_pixels, too_small", [(0.8, 1, False), (1.0, 1, False), (0.45, 1, True),
                                                        (0.45, 2, False), (0.45, 3, False)])
def test_the_in_plane_width_is_read_to_half_a_pixel(params, pixel, n_pixels, too_small):
    """A one-pixel outline of 0.8 mm pixels may be a 1.2 mm focus (it passes ``min_inplane_diameter_mm``
    1 mm); a one-voxel dip of 0.45 mm pixels (a thick 2D slice) is at most 0.7 mm wide (too small)."""
    width = n_pixels * pixel  # describe's extent: centre distance plus one pixel
    row = _row(max_inplane_diameter_mm=width, pixel_mm=pixel, diameter_mm=1.3)
    assert (classify(row, params)["reason"] == "too_small") is too_small
    assert classify(_row(max_inplane_diameter_mm=width, diameter_mm=1.3), params)["reason"] == \
        ("too_small" if width < params.min_inplane_diameter_mm else "")  # without its pixel size: as before
