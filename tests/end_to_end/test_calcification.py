"""Calcification versus microbleed from the phase (issue: phase, SWI and calcification).

Each phantom holds pairs: a microbleed and, at the mirror position in the other hemisphere, a
calcification of the same true diameter and opposite susceptibility, so that both look alike on
the magnitude and differ only in the sign of their dipole field.
"""

import numpy as np
import pytest

import microbleeds
from microbleeds.bench.phantoms import PhantomParams, simulate

BASE = dict(fov_mm=(130.0, 150.0, 48.0), voxel_size_mm=(1.0, 1.0, 2.0), b0_t=3.0, te_ms=20.0, snr=25.0,
            n_veins=30, cmb_diameter_range_mm=(1.5, 4.0), cmb_chi_range_ppm=(0.5, 1.5))


def mirrored_pairs(seed, n_pairs=8):
    """A phantom with ``n_pairs`` microbleed / calcification pairs of equal size and |chi|."""
    placed = simulate(PhantomParams(**BASE, n_cmb=n_pairs, n_calcifications=0, seed=seed)).truth
    sources = []
    for t in placed:
        if abs(t["x_mm"]) < 6.0:
            continue  # too close to the midline for a distinct mirror partner
        common = dict(y_mm=t["y_mm"], z_mm=t["z_mm"], diameter_mm=t["diameter_mm"])
        sources.append(dict(type="cmb", x_mm=t["x_mm"], chi_ppm=t["chi_ppm"], **common))
        sources.append(dict(type="calcification", x_mm=-t["x_mm"], chi_ppm=-t["chi_ppm"], **common))
    return simulate(PhantomParams(**BASE, n_cmb=0, n_calcifications=0, sources=tuple(sources), seed=seed))


def outcome(result, truth):
    """Per truth source: kept as CMB, labelled calcification, or missed."""
    xyz = np.array([[c["x_mm"], c["y_mm"], c["z_mm"]] for c in result.candidates]).reshape(-1, 3)
    out = []
    for t in truth:
        d = np.linalg.norm(xyz - [t["x_mm"], t["y_mm"], t["z_mm"]], axis=1) if len(xyz) else np.array([99.0])
        c = result.candidates[int(np.argmin(d))]
        label = "missed" if d.min() > 3 else "cmb" if c["status"] == "accepted" else c["reason"]
        out.append((t["type"], label))
    return out


HELD_OUT_SEEDS = range(51, 59)  # held out: the fit was designed on 31-48
DEFAULT_SEEDS = range(51, 55)  # the default run's half of them (each phantom costs two simulations)


def _told_apart_in_both_conventions(seeds):
    """Phantom phase is -gamma dB TE (convention -1); the negated phase is convention +1. Each
    phantom gives up to 8 pairs (those off the midline): at least 5 per phantom must be scored."""
    phantoms = [mirrored_pairs(seed) for seed in seeds]
    per_convention = {}
    for sign in (-1, 1):
        outcomes = []
        for p in phantoms:
            result = microbleeds.detect(p.magnitude, affine=p.affine, phase=-sign * p.phase, phase_sign=sign)
            outcomes += outcome(result, p.truth)
        per_convention[sign] = outcomes
        cmbs = [label for kind, label in outcomes if kind == "cmb"]
        calcs = [label for kind, label in outcomes if kind == "calcification"]
        assert len(cmbs) >= 5 * len(phantoms) and len(calcs) == len(cmbs)
        assert np.mean([label == "cmb" for label in cmbs]) >= 0.95, outcomes
        assert np.mean([label == "calcification" for label in calcs]) >= 0.95, outcomes
    assert per_convention[-1] == per_convention[1]


def test_same_size_pairs_are_told_apart_in_both_conventions():
    _told_apart_in_both_conventions(DEFAULT_SEEDS)


@pytest.mark.slow
def test_same_size_pairs_are_told_apart_in_both_conventions_all_seeds():
    _told_apart_in_both_conventions(HELD_OUT_SEEDS)


def test_estimated_convention_matches_the_forced_one():
    """Where microbleeds outnumber calcifications (as in patients), the convention is estimated
    from the data and the result equals the one with the convention forced, in both conventions."""
    p = simulate(PhantomParams(**BASE, n_cmb=10, n_calcifications=2, calc_diameter_range_mm=(2.0, 4.0),
                               calc_chi_range_ppm=(-1.2, -0.6), seed=33))
    for sign in (-1, 1):
        estimated = microbleeds.detect(p.magnitude, affine=p.affine, phase=-sign * p.phase)
        forced = microbleeds.detect(p.magnitude, affine=p.affine, phase=-sign * p.phase, phase_sign=sign)
        assert estimated.summary["phase"]["phase_sign"] == sign, estimated.summary["phase"]["sign_evidence"]
        assert outcome(estimated, p.truth) == outcome(forced, p.truth)


def test_without_phase_the_summary_says_calcifications_are_not_excluded(painted):
    volume, affine, _ = painted
    notes = " ".join(microbleeds.detect(volume, affine=affine).summary["notes"])
    assert "calcifications cannot be excluded" in notes
