"""A large microbleed on a vein is no piece of the vein: the halo rules (``tubular``'s vein
fragment, ``embedded``) let a round focus pass when it is much thicker than the dark line it touches
(``halo_width_ratio``), however dark the line reads beside it; a darker stretch of the vein, as thick
as the vein, stays a fragment."""

import numpy as np
import pytest

from microbleeds.presets import load_parameters
from microbleeds.stages import describe
from microbleeds.stages.mimics import WIDER_THAN_LINE, classify

VOX = np.array([0.5, 0.5, 1.0])  # the ITP protocol's 3 T SWI grid, mm
SHAPE = (61, 61, 15)


@pytest.fixture(scope="module")
def params():
    return load_parameters("itp-3t-swi")


def _vein(rel, depth):
    """A straight vein along axis 0 through the centre, 1 mm thick (two voxels in-plane, one slice)."""
    c = np.array(SHAPE) // 2
    rel[:, c[1]:c[1] + 2, c[2]] = 1.0 - depth


def _ball(rel, radius_mm, depth, centre_mm=None):
    """A dark ball (the half-depth outline of a focus) centred on the vein; returns its voxels."""
    c = (np.array(SHAPE) // 2) * VOX if centre_mm is None else np.asarray(centre_mm)
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0) * VOX
    own = ((grid - c) ** 2).sum(-1) <= radius_mm ** 2
    rel[own] = 1.0 - depth
    return own


def _row(rel, own):
    """The candidate's features as describe computes them, on a focus that passes every other rule."""
    elongation, extent, ratio, width = describe._halo(rel, np.ones(rel.shape, bool), own, np.argwhere(own), VOX)
    shape = describe._size_shape(np.argwhere(own), rel, VOX)
    return dict(shape, halo_elongation=elongation, halo_extent_mm=extent, halo_depth_ratio=ratio,
                halo_width_ratio=width, edge_distance_mm=5.0, vesselness=0.1, centroid_shift_mm=0.2,
                ring_interior_mm3=0.0, contrast=0.5, cnr=40.0, reached_limit=False,
                max_voxel_mm=float(VOX.max()), pixel_mm=float(VOX[:2].min()), inside_brain=True)


def test_a_large_focus_on_a_vein_as_dark_as_its_halo_is_kept(params):
    rel = np.ones(SHAPE, np.float32)
    _vein(rel, depth=0.48)  # under a coil array's noise floor the focus reads 0.87, the vein 0.48
    row = _row(rel, _ball(rel, radius_mm=2.5, depth=0.87))
    # the vein reads as the focus's own line: the halo rule alone would take it for a fragment
    assert row["halo_depth_ratio"] >= params.min_halo_depth_ratio
    assert row["halo_elongation"] > params.max_halo_elongation
    assert row["halo_width_ratio"] >= WIDER_THAN_LINE
    out = classify(row, params)
    assert (out["status"], out["reason"]) == ("accepted", "")
    assert classify(dict(row, halo_width_ratio=1.0), params)["reason"] == "tubular"


def test_a_large_focus_where_a_vein_branches_is_not_embedded(params):
    rel = np.ones(SHAPE, np.float32)
    _vein(rel, depth=0.48)
    c = np.array(SHAPE) // 2
    rel[c[0]:c[0] + 2, :, c[2]] = 1.0 - 0.48  # veins along the other two axes: a tree, no line
    rel[c[0]:c[0] + 2, c[1] + 6:c[1] + 8, :] = 1.0 - 0.48
    row = _row(rel, _ball(rel, radius_mm=2.5, depth=0.87))
    assert row["halo_elongation"] <= params.max_halo_elongation  # read as a structure, not a line
    assert row["halo_depth_ratio"] >= params.min_halo_depth_ratio
    assert classify(row, params)["status"] == "accepted"
    assert classify(dict(row, halo_width_ratio=1.0), params)["reason"] == "embedded"


def test_a_darker_stretch_of_a_vein_is_a_fragment(params):
    rel = np.ones(SHAPE, np.float32)
    _vein(rel, depth=0.48)
    c = np.array(SHAPE) // 2
    own = np.zeros(SHAPE, bool)
    own[c[0] - 4:c[0] + 5, c[1]:c[1] + 2, c[2]] = True  # 4.5 mm of the vein, darker, as thick as it
    rel[own] = 1.0 - 0.8
    row = _row(rel, own)
    assert row["halo_width_ratio"] < WIDER_THAN_LINE
    assert classify(row, params)["reason"] == "tubular"


def test_a_focus_on_a_dark_band_thicker_than_itself_gets_no_exemption(params):
    rel = np.ones(SHAPE, np.float32)
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0) * VOX
    c = (np.array(SHAPE) // 2) * VOX
    band = (np.abs(grid[..., 1] - c[1]) <= 2.5) & (np.abs(grid[..., 2] - c[2]) <= 3.0)  # 5 x 6 mm across
    rel[band] = 1.0 - 0.45
    row = _row(rel, _ball(rel, radius_mm=2.0, depth=0.8))
    assert row["halo_depth_ratio"] >= params.min_halo_depth_ratio
    assert row["halo_width_ratio"] < WIDER_THAN_LINE
    assert classify(row, params)["status"] == "rejected"


def test_an_elongated_region_gets_no_exemption(params):
    rel = np.ones(SHAPE, np.float32)
    _vein(rel, depth=0.48)
    row = _row(rel, _ball(rel, radius_mm=2.5, depth=0.87))
    assert classify(dict(row, elongation=params.max_elongation + 0.5), params)["reason"] == "tubular"


def test_no_structure_beyond_the_focus_gives_no_ratio():
    rel = np.ones(SHAPE, np.float32)
    row = _row(rel, _ball(rel, radius_mm=2.0, depth=0.9))
    assert row["halo_width_ratio"] == 0.0


def test_thicker_than_the_vein_is_not_clearly_darker_than_it(params):
    """The exemption says the focus is no piece of the vein, not that it stands out from it: a faint
    focus on a vein keeps the full contrast floor even with a paramagnetic dipole (a faint region
    of 9 mm on a 1 x 1 x 5 mm scan came through when it did)."""
    rel = np.ones(SHAPE, np.float32)
    _vein(rel, depth=0.48)
    row = _row(rel, _ball(rel, radius_mm=2.5, depth=0.87))
    assert row["halo_width_ratio"] >= WIDER_THAN_LINE
    between = 0.5 * (params.min_contrast + 0.75 * params.min_contrast)
    faint = dict(row, contrast=between, phase_sign=1, phase_trusted=True)
    assert classify(faint, params)["reason"] == "faint"
    # the same focus standing clear of what it touches gets the dipole's floor
    clear = dict(faint, halo_depth_ratio=0.3)
    assert classify(clear, params)["status"] == "accepted"
