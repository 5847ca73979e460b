"""A dark core's phase says whether hemosiderin dephased it completely (noise: incoherent) or an
iron-rich nucleus only darkened it (signal left: coherent); ``faint``'s dark-core rule reads it
for resolved foci (``core_phase_coherence``)."""

import numpy as np
import pytest

from microbleeds.presets import load_parameters
from microbleeds.stages.dipole_sign import CORE_FRACTION, CORE_MIN_PAIRS, core_phase_coherence
from microbleeds.stages.mimics import MAX_CORE_COHERENCE, classify

SHAPE = (24, 26, 22)


def _ball(centre, radius_vox, shape=SHAPE):
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return np.argwhere(((grid - np.asarray(centre)) ** 2).sum(-1) <= radius_vox ** 2)


def _reference(voxels, phase, magnitude):
    """The mean phasor over face-adjacent core pairs, voxel by voxel."""
    darkness = np.array([magnitude[tuple(v)] for v in voxels])
    limit = np.quantile(darkness, CORE_FRACTION)
    core = {tuple(v) for v, d in zip(voxels, darkness) if d <= limit}
    phasors = []
    for v in core:
        for axis in range(3):
            w = list(v)
            w[axis] += 1
            if w[axis] < phase.shape[axis] and tuple(w) in core:
                phasors.append(np.exp(1j * (float(phase[tuple(w)]) - float(phase[v]))))
    return None if len(phasors) < CORE_MIN_PAIRS else float(abs(np.mean(phasors)))


@pytest.mark.parametrize("centre", [(12, 13, 11), (0, 25, 21), (23, 0, 5)])
def test_coherence_is_the_mean_phasor_of_the_core_pairs(centre):
    """Any phase and magnitude, regions inside the grid and cut by its faces (no pair wraps a row)."""
    rng = np.random.default_rng(sum(centre))
    phase = rng.uniform(-np.pi, np.pi, SHAPE).astype(np.float32) * rng.uniform(0, 1, SHAPE).astype(np.float32)
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
    distance = np.sqrt(((grid - np.asarray(centre)) ** 2).sum(-1))
    voxels = _ball(centre, 5.5)
    for magnitude in (rng.random(SHAPE), distance + rng.random(SHAPE)):  # scattered and compact cores
        got, want = core_phase_coherence(voxels, phase, magnitude), _reference(voxels, phase, magnitude)
        assert (got is None) == (want is None)
        assert got is None or got == pytest.approx(want, abs=1e-12)
    assert got is not None  # the compact core has pairs enough


def test_noise_core_against_a_core_with_signal():
    """A dephased core (magnitude at the noise floor: uniform phase) reads near 0.89 / sqrt(pairs); a
    core of signal-to-noise ratio 3 with a smooth phase reads exp(-1 / 3^2) = 0.89."""
    rng = np.random.default_rng(5)
    voxels = _ball((12, 13, 11), 6.0)
    grid = np.indices(SHAPE).astype(np.float32)
    magnitude = np.sqrt(((grid - np.array([12, 13, 11])[:, None, None, None]) ** 2).sum(0)).astype(np.float32)
    noise = rng.uniform(-np.pi, np.pi, SHAPE).astype(np.float32)
    dephased = core_phase_coherence(voxels, noise, magnitude)
    assert dephased < 0.25
    smooth = 0.15 * grid[0] - 0.1 * grid[2]  # a background gradient, rad per voxel
    snr = 3.0
    signal = np.exp(1j * smooth) + (rng.normal(0, 1 / snr, SHAPE) + 1j * rng.normal(0, 1 / snr, SHAPE))
    kept = core_phase_coherence(voxels, np.angle(signal).astype(np.float32), magnitude)
    assert kept == pytest.approx(np.exp(-1 / snr ** 2) * np.cos(0.15) ** (1 / 3) * np.cos(0.1) ** (1 / 3), abs=0.05)
    assert kept > MAX_CORE_COHERENCE > dephased


def test_too_few_core_pairs_measure_nothing():
    voxels = _ball((12, 13, 11), 2.0)  # 33 voxels: a core of 9, fewer than 20 pairs
    rng = np.random.default_rng(0)
    assert core_phase_coherence(voxels, rng.random(SHAPE), rng.random(SHAPE)) is None
    assert core_phase_coherence(voxels[:1], rng.random(SHAPE), rng.random(SHAPE)) is None


def _resolved_row(**extra):
    """A 6 mm round focus at 0.6 mm voxels (7 T) that passes every rule on its magnitude features."""
    row = dict(diameter_mm=6.0, max_inplane_diameter_mm=6.0, depth=0.78, contrast=0.46, cnr=60.0,
               elongation=1.3, inplane_elongation=1.2, vesselness=0.1, through_plane_ratio=0.8,
               centroid_shift_mm=0.1, halo_elongation=1.2, halo_extent_mm=7.0, halo_depth_ratio=0.4,
               halo_width_ratio=0.0, ring_interior_mm3=0.0, edge_distance_mm=8.0, reached_limit=False,
               max_voxel_mm=0.6, pixel_mm=0.6, inside_brain=True, phase_sign=1, phase_score=0.04,
               phase_trusted=True)
    row.update(extra)
    return row


@pytest.mark.parametrize("coherence, status", [(0.96, "rejected"), (0.75, "rejected"), (0.45, "accepted"),
                                               (0.05, "accepted"), (None, "accepted")])
def test_a_resolved_focus_with_signal_in_its_core_is_faint(coherence, status):
    """The 7 T phantoms' red nuclei / substantia nigra (6 x 10 x 6 mm, depth 0.72-0.81 under 16
    coils) read 0.87-0.97; their microbleeds of 3-7.6 mm 0.01-0.49."""
    params = load_parameters("swi-7t")
    out = classify(_resolved_row(core_phase_coherence=coherence), params)
    assert out["status"] == status
    if status == "rejected":
        assert out["reason"] == "faint"


def test_small_or_thick_slice_foci_are_not_judged_by_their_core():
    """A focus under three voxels across (partial volume: its core keeps signal) passes, whatever its phase."""
    params = load_parameters("gre-1.5t")
    thick = _resolved_row(core_phase_coherence=0.95, max_voxel_mm=5.0, diameter_mm=8.7, contrast=0.5)
    assert classify(thick, params)["status"] == "accepted"
    small = _resolved_row(core_phase_coherence=0.95, diameter_mm=2.5, max_inplane_diameter_mm=2.5)
    assert classify(small, load_parameters("swi-7t"))["status"] == "accepted"


def test_red_nuclei_at_7t_are_faint_and_microbleeds_are_kept():
    """A simulated 7 T SWI (0.6 mm, TE 15 ms) of the midbrain: the red nuclei / substantia nigra
    (R2* 105 /s, +0.13 ppm) read 7 mm across, depth 0.68, contrast 0.5: above every magnitude
    threshold, as a large microbleed would be. Their cores keep a coherent phase; the microbleeds'
    dephased cores do not."""
    from microbleeds import detect
    from microbleeds.bench.phantoms import simulate
    from microbleeds.bench.phantoms.params import MIDBRAIN

    ph = simulate(fov_mm=(60.0, 60.0, 30.0), centre_mm=(0.0, -16.0, -8.0), voxel_size_mm=(0.6, 0.6, 0.6),
                  b0_t=7.0, te_ms=15.0, snr=25.0, n_cmb=4, n_calcifications=0, n_veins=10, seed=19)
    affine = np.array(ph.info["affine"])
    result = detect(ph.magnitude, affine=affine, phase=ph.phase, phase_sign=ph.info["phase_sign"],
                    pipeline="swi-7t", brain_coverage="partial")
    params = load_parameters("swi-7t", brain_coverage="partial")
    to_voxel = np.linalg.inv(affine)
    nuclei = []
    for c in result.candidates:
        v = np.round(to_voxel @ [c["x_mm"], c["y_mm"], c["z_mm"], 1.0])[:3].astype(int)
        if ph.tissue[tuple(np.clip(v, 0, np.array(ph.tissue.shape) - 1))] == MIDBRAIN and c["diameter_mm"] > 5:
            nuclei.append(c)
    assert len(nuclei) == 2
    for c in nuclei:
        assert (c["status"], c["reason"]) == ("rejected", "faint")
        assert c["core_phase_coherence"] > 0.9
        assert c["contrast"] > params.min_contrast and c["depth"] > params.min_core_depth
    found = [c for c in result.candidates if c["status"] == "accepted"]
    truth = np.array([[t["x_mm"], t["y_mm"], t["z_mm"]] for t in ph.truth if t["type"] == "cmb"])
    near = [np.linalg.norm(truth - [c["x_mm"], c["y_mm"], c["z_mm"]], axis=1).min() for c in found]
    assert len(found) >= 3 and max(near) < 3.0
    assert all(c["core_phase_coherence"] is None or c["core_phase_coherence"] < 0.4 for c in found)
