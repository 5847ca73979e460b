"""The phase as evidence in the mimic rules: a compact focus with a paramagnetic dipole needs less
magnitude contrast (``faint``); with phase under a trusted convention, a focus whose dipole fit
decides nothing is no microbleed (``no_dipole``)."""

import pytest

from microbleeds.presets import load_parameters
from microbleeds.stages.mimics import (
    CLEAR_WIDTHS,
    COMPLETE_DEPTH,
    DIPOLE_CONTRAST_FRACTION,
    EMBEDDED_SOFT,
    ROUND_VESSELNESS,
    classify,
)


def _row(**kw):
    """A 3 T focus 3 mm across, round, with a trusted paramagnetic dipole."""
    row = dict(edge_distance_mm=5.0, diameter_mm=3.0, max_inplane_diameter_mm=3.0, inplane_elongation=1.1,
               elongation=1.3, vesselness=0.2, through_plane_ratio=0.5, centroid_shift_mm=0.2,
               halo_extent_mm=4.0, halo_elongation=1.2, halo_depth_ratio=0.0, ring_interior_mm3=0.0,
               contrast=0.6, cnr=30.0, depth=0.7, reached_limit=False, max_voxel_mm=2.0, inside_brain=True,
               phase_sign=1, phase_score=0.1, phase_trusted=True)
    row.update(kw)
    return row


@pytest.fixture(scope="module")
def params():
    return load_parameters("swi-3t")


def _between(params):
    """A contrast below ``min_contrast`` but above the dipole's floor."""
    return 0.5 * (1.0 + DIPOLE_CONTRAST_FRACTION) * params.min_contrast


def test_a_compact_focus_with_a_paramagnetic_dipole_needs_less_contrast(params):
    assert classify(_row(contrast=_between(params)), params)["status"] == "accepted"
    beside = dict(halo_extent_mm=14.0, halo_depth_ratio=0.5 - 2 * CLEAR_WIDTHS * EMBEDDED_SOFT)  # a fainter vein
    assert classify(_row(contrast=_between(params), **beside), params)["status"] == "accepted"
    below = DIPOLE_CONTRAST_FRACTION * params.min_contrast - 0.02
    assert classify(_row(contrast=below), params)["reason"] == "faint"


@pytest.mark.parametrize("change", [
    dict(phase_sign=None, phase_score=None),   # magnitude only: no dipole to see
    dict(phase_trusted=False),                 # convention not trusted: the sign may be the other
    dict(elongation=2.5),                      # long in 3D: a faint vein through the slices
    dict(vesselness=ROUND_VESSELNESS + 0.1),   # line-like in-plane
    dict(halo_extent_mm=14.0, halo_depth_ratio=0.5 - 0.5 * CLEAR_WIDTHS * EMBEDDED_SOFT),  # on a dark structure
])
def test_without_the_dipole_or_a_round_shape_the_contrast_floor_stays(params, change):
    assert classify(_row(contrast=_between(params), **change), params)["reason"] == "faint"


def test_an_undecided_dipole_under_a_trusted_convention_is_no_microbleed(params):
    assert classify(_row(phase_sign=0), params)["reason"] == "no_dipole"
    row = classify(_row(phase_sign=0), params)
    assert row["status"] == "rejected" and row["confidence"] < 0.5


@pytest.mark.parametrize("change", [
    dict(phase_sign=None, phase_score=None),   # no phase
    dict(phase_trusted=False),                 # convention unknown: the fit's sign is not read
    dict(depth=COMPLETE_DEPTH + 0.02),         # completely dephased: only a strong source does that
])
def test_the_dipole_is_required_only_where_the_phase_can_decide(params, change):
    assert classify(_row(**{"phase_sign": 0, **change}), params)["status"] == "accepted"


def test_the_dipole_requirement_can_be_switched_off():
    params = load_parameters("swi-3t", require_dipole=False)
    assert classify(_row(phase_sign=0), params)["status"] == "accepted"


def test_earlier_rules_keep_their_names_on_an_undecided_dipole(params):
    assert classify(_row(phase_sign=0, contrast=0.1), params)["reason"] == "faint"
    assert classify(_row(phase_sign=0, inplane_elongation=3.0), params)["reason"] == "tubular"
