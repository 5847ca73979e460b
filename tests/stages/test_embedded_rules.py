"""The ``embedded`` rule: a darker spot of a larger dark structure (a vein bend or tree, a band of
dark tissue) is not a microbleed, whatever the structure's shape; a focus much darker than what it
touches, or completely dephased, is kept."""

import numpy as np
import pytest

from microbleeds.presets import load_parameters
from microbleeds.stages import describe
from microbleeds.stages.mimics import COMPLETE_DEPTH, classify

VOX = np.array([0.9, 0.9, 3.0])  # a 1.5 T thick-slice grid, mm


def _row(**kw):
    row = dict(edge_distance_mm=5.0, diameter_mm=3.0, max_inplane_diameter_mm=3.0, inplane_elongation=1.1,
               elongation=1.2, vesselness=0.1, through_plane_ratio=0.5, centroid_shift_mm=0.2,
               halo_extent_mm=4.0, halo_elongation=1.2, halo_depth_ratio=0.0, ring_interior_mm3=0.0,
               contrast=0.6, cnr=30.0, depth=0.6, reached_limit=False, max_voxel_mm=float(VOX.max()), inside_brain=True)
    row.update(kw)
    return row


@pytest.fixture(scope="module")
def params():
    return load_parameters("gre-1.5t")


def _scene(spot_depth, band_depth, shape=(41, 41, 5)):
    """Relative intensity with a round spot (2.7 mm across in-plane, one slice) at the centre of a
    band of dark tissue 4.5 mm wide and three slices thick that crosses the patch, bent (an L: no
    line)."""
    rel = np.ones(shape, np.float32)
    c = np.array(shape) // 2
    slab = slice(c[2] - 1, c[2] + 2)
    rel[c[0] - 2:c[0] + 3, :c[1] + 3, slab] = 1.0 - band_depth     # one arm of the band
    rel[c[0] - 2:, c[1] - 2:c[1] + 3, slab] = 1.0 - band_depth     # the other, at a right angle
    ii, jj = np.indices(shape[:2])
    spot = ((ii - c[0]) ** 2 + (jj - c[1]) ** 2) * VOX[0] ** 2 <= 1.35 ** 2
    rel[spot, c[2]] = 1.0 - spot_depth
    own = np.zeros(shape, bool)
    own[spot, c[2]] = True  # its half-depth outline
    return rel, own


def _features(rel, own):
    elongation, extent, ratio, width = describe._halo(rel, np.ones(rel.shape, bool), own, np.argwhere(own), VOX)
    depth = 1.0 - float(rel[own].min())
    return dict(halo_elongation=elongation, halo_extent_mm=extent, halo_depth_ratio=ratio, halo_width_ratio=width,
                depth=depth, diameter_mm=describe._size_shape(np.argwhere(own), rel, VOX)["diameter_mm"])


def test_a_spot_on_a_bent_band_of_about_its_darkness_is_embedded(params):
    feats = _features(*_scene(spot_depth=0.45, band_depth=0.3))
    assert feats["halo_elongation"] < params.max_halo_elongation  # not a line: the tubular rule lets it pass
    assert feats["halo_extent_mm"] > feats["diameter_mm"] + 3.0
    assert feats["halo_depth_ratio"] >= params.min_halo_depth_ratio
    out = classify(_row(**feats), params)
    assert (out["status"], out["reason"]) == ("rejected", "embedded")
    assert out["confidence"] < 0.5


def test_a_focus_much_darker_than_the_band_it_touches_is_kept(params):
    feats = _features(*_scene(spot_depth=0.8, band_depth=0.32))
    assert feats["halo_extent_mm"] > feats["diameter_mm"] + 3.0  # the band is in its 3/8-depth component
    assert feats["halo_depth_ratio"] < params.min_halo_depth_ratio
    assert classify(_row(**feats), params)["status"] == "accepted"


def test_a_completely_dephased_core_is_exempt(params):
    row = _row(halo_extent_mm=14.0, halo_depth_ratio=0.7, depth=COMPLETE_DEPTH + 0.02)
    assert classify(row, params)["status"] == "accepted"
    assert classify(dict(row, depth=COMPLETE_DEPTH - 0.1), params)["reason"] == "embedded"


def test_a_short_halo_is_no_structure(params):
    row = _row(halo_extent_mm=3.0 + 2.9, halo_depth_ratio=0.9)  # within diameter + 3 mm
    assert classify(row, params)["status"] == "accepted"


def test_earlier_rules_keep_their_names(params):
    faint = _row(contrast=0.1, halo_extent_mm=14.0, halo_depth_ratio=0.7)
    assert classify(faint, params)["reason"] == "faint"
    line = _row(halo_extent_mm=14.0, halo_depth_ratio=0.7, halo_elongation=4.5)
    assert classify(line, params)["reason"] == "tubular"


def _ball_voxels(centres_mm, radius_mm, vox, shape=(40, 40, 12)):
    grid = np.indices(shape).transpose(1, 2, 3, 0) * vox
    inside = np.zeros(shape, bool)
    for c in centres_mm:
        inside |= ((grid - np.asarray(c)) ** 2).sum(-1) <= radius_mm ** 2
    return np.argwhere(inside)


def test_a_lobulated_focus_drifts_within_its_footprint_but_an_oblique_tube_does_not():
    vox = np.array([1.0, 1.0, 2.0])  # 3 T SWI, 2 mm slices
    params = load_parameters("swi-3t")
    rel = np.ones((40, 40, 12), np.float32)
    # two overlapping lobes 3.2 mm apart, one above the other and offset in-plane (a lobulated CMB)
    lobes = describe._size_shape(_ball_voxels([(18.0, 20.0, 10.0), (20.6, 20.0, 12.0)], 2.4, vox), rel, vox)
    # a 1.6 mm tube 50 degrees from the slice normal (an oblique vein crossing four slices)
    t = np.linspace(-4.0, 4.0, 33)
    axis = np.stack([20.0 + t * np.sin(np.radians(50)), np.full_like(t, 20.0), 11.0 + t * np.cos(np.radians(50))], 1)
    tube = describe._size_shape(_ball_voxels(axis, 0.8, vox), rel, vox)
    assert lobes["centroid_shift_mm"] > params.max_centroid_shift_mm  # the drift alone would call it a vein
    assert tube["centroid_shift_mm"] > params.max_centroid_shift_mm
    keep = dict(inplane_elongation=1.2, elongation=1.5, through_plane_ratio=0.8, vesselness=0.1)  # other rules pass
    for feats, expected in ((lobes, "accepted"), (tube, "rejected")):
        row = _row(**{k: feats[k] for k in ("diameter_mm", "max_inplane_diameter_mm", "centroid_shift_mm")}, **keep)
        out = classify(row, params)
        assert out["status"] == expected, (feats, out["reason"])
        if expected == "rejected":
            assert out["reason"] == "tubular"


def test_lesions_in_the_pallidum_are_counted_and_noted_not_rejected():
    from types import SimpleNamespace

    from microbleeds.stages.tabulate import CALCIFICATION_SITE, summarise_regions

    lookup = {79: SimpleNamespace(name="Pallidum_L"), 73: SimpleNamespace(name="Putamen_L")}
    labels = SimpleNamespace(data=np.zeros((2, 2, 2)), lookup=lookup, source="atlas", notes=[], registration=None)
    rows = [dict(label_id=79, region="deep", lobe="", hemisphere="left", region_source="atlas"),
            dict(label_id=73, region="deep", lobe="", hemisphere="left", region_source="atlas")]
    summary = {"counts": {}, "notes": []}
    summarise_regions(summary, rows, labels)
    assert summary["counts"]["in_pallidum"] == 1
    assert summary["counts"]["by_region"]["deep"] == 2  # counted as lesions, not rejected
    assert any(CALCIFICATION_SITE in n and n.startswith("1 lesion") for n in summary["notes"])
    none = {"counts": {}, "notes": []}
    summarise_regions(none, rows[1:], labels)
    assert none["counts"]["in_pallidum"] == 0 and not none["notes"]


@pytest.mark.parametrize("confidence, kept", [("high", False), ("none", True)])
def test_the_pallidum_note_goes_only_when_the_phase_excluded_calcifications(confidence, kept):
    from types import SimpleNamespace

    from microbleeds.stages.tabulate import CALCIFICATION_SITE, summarise_phase

    swi = SimpleNamespace(summary=lambda how: {}, sign_evidence={"confidence": confidence, "method": "forced"},
                          phase_sign=-1)
    summary = {"notes": ["Magnitude only: calcifications cannot be excluded (no phase given).",
                         f"1 lesion(s) in the globus pallidus, a {CALCIFICATION_SITE}: check them."]}
    summarise_phase(summary, swi, "given")
    assert any(CALCIFICATION_SITE in n for n in summary["notes"]) is kept
    assert not any("no phase given" in n for n in summary["notes"])
