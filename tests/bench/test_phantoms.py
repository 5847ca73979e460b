"""Tests of the physical phantom generator (microbleeds.bench.phantoms, microbleeds.bench.dipole)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from microbleeds.bench import phantoms as P
from microbleeds.bench.dipole import field_from_chi, phase_per_ppm, source_factor, sphere_field_ppm
from microbleeds.bench.phantoms.head import _BASE_ELLIPSOIDS, _E_VENT, _make_anatomy
from microbleeds.bench.phantoms.params import _BRAIN

ROMEO = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "romeo-small-gre"

TINY = dict(fov_mm=(112.0, 132.0, 96.0), voxel_size_mm=(1.5, 1.5, 2.0), head_scale=0.75,
            n_veins=15, n_cmb=6, n_calcifications=1, cmb_diameter_range_mm=(1.5, 4.0))

REGION_TISSUES = {
    "lobar": {P.GM, P.WM},
    "deep": {P.CAUDATE, P.PUTAMEN, P.PALLIDUM, P.THALAMUS, P.WM},
    "infratentorial": {P.BRAINSTEM, P.MIDBRAIN, P.CB_GM, P.CB_WM, P.DENTATE},
}


@pytest.fixture(scope="module")
def tiny():
    return P.simulate(P.PhantomParams(seed=11, **TINY))


def _centre_ijk(ph, row):
    inv = np.linalg.inv(ph.affine)
    xyz = np.array([row["x_mm"], row["y_mm"], row["z_mm"]])
    return tuple(np.rint(inv[:3, :3] @ xyz + inv[:3, 3]).astype(int))


def _uniform_image(shape=(40, 40, 24), vs=(1.0, 1.0, 2.0)):
    aff = np.diag(list(vs) + [1.0])
    aff[:3, 3] = -np.asarray(vs) * (np.asarray(shape) - 1) / 2.0
    return np.ones(shape), np.zeros(shape), aff


# ------------------------------------------------------------------------------------------
# physics
def _sphere_chi(n, a_vox, chi, sub=4):
    """Anti-aliased sphere of radius a_vox (voxels) at the grid centre."""
    c = (n - 1) / 2.0
    g = np.arange(n) - c
    occ = np.zeros((n, n, n))
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    for du in offs:
        for dv in offs:
            for dw in offs:
                r2 = ((g + du)[:, None, None] ** 2 + (g + dv)[None, :, None] ** 2
                      + (g + dw)[None, None, :] ** 2)
                occ += r2 <= a_vox ** 2
    return chi * occ / sub ** 3, g


@pytest.mark.parametrize("b0,method", [((0.0, 0.0, 1.0), "spatial"), ((0.0, 0.6, 0.8), "spatial"),
                                       ((0.5, -0.5, 0.7071), "spatial"),
                                       ((0.0, 0.0, 1.0), "kspace")])
def test_kspace_sphere_field_matches_analytic(b0, method):
    n, a, chi = 96, 4.0, 1.0
    chimap, g = _sphere_chi(n, a, chi)
    fld = field_from_chi(chimap, (1.0, 1.0, 1.0), b0, method=method).astype(np.float64)
    rel = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1)
    ana = sphere_field_ppm(rel, a, chi, b0)
    r = np.linalg.norm(rel, axis=-1)
    shell = (r > 2 * a) & (r < 5 * a)
    err = fld[shell] - ana[shell]
    scale = np.abs(ana[shell]).max()
    assert np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(ana[shell] ** 2)) < 0.03
    assert np.abs(err).max() / scale < 0.03
    # inside the sphere the Lorentz-corrected field is ~0 compared with the outside peak
    assert np.abs(fld[r < a / 2]).max() < 0.1 * scale


@pytest.mark.parametrize("b0,vs", [((0.0, 0.0, 1.0), (0.5, 0.5, 1.0)),
                                   ((0.6, 0.0, 0.8), (0.5, 0.5, 1.0)),
                                   ((0.0, 0.0, 1.0), (0.5, 0.5, 0.75))])
def test_sphere_field_on_anisotropic_grid(b0, vs):
    vs = np.asarray(vs)
    shape, a, sub = (96, 96, 48), 2.5, 4
    g = [(np.arange(n) - (n - 1) / 2) * v for n, v in zip(shape, vs)]
    occ = np.zeros(shape)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    for du in offs:
        for dv in offs:
            for dw in offs:
                occ += ((g[0] + du * vs[0])[:, None, None] ** 2
                        + (g[1] + dv * vs[1])[None, :, None] ** 2
                        + (g[2] + dw * vs[2])[None, None, :] ** 2) <= a * a
    occ /= sub ** 3
    rel = np.stack(np.meshgrid(*g, indexing="ij"), axis=-1)
    r = np.linalg.norm(rel, axis=-1)
    fld = field_from_chi(occ, vs, b0)
    ana = sphere_field_ppm(rel, a, 1.0, b0)
    shell = (r > 2 * a) & (r < 5 * a)
    err = fld[shell] - ana[shell]
    assert np.sqrt(np.mean(err ** 2) / np.mean(ana[shell] ** 2)) < 0.02
    # Lorentz-corrected: ~0 inside the sphere (no lattice self-term on anisotropic voxels)
    assert np.abs(fld[r < a / 2]).max() < 0.01


def test_analytic_subvoxel_cmb_matches_fine_kspace_simulation():
    """The two routes of the generator agree: the analytic sphere on an adaptive sub-grid
    (used for CMBs) and a k-space field on a 4 x 4 x 8 finer grid, complex-averaged."""
    acq, vs, os_ = np.array([32, 32, 16]), np.array([1.0, 1.0, 2.0]), np.array([4, 4, 8])
    fvs, fsh = vs / os_, acq * os_
    centre, a, chi, te = np.array([0.3, -0.2, 0.4]), 1.5, 1.0, 20.0
    aff = np.diag(list(vs) + [1.0])
    aff[:3, 3] = -vs * (acq - 1) / 2
    x = [aff[i, i] * ((np.arange(n) + 0.5) / o - 0.5) + aff[i, 3] - centre[i]
         for i, (n, o) in enumerate(zip(fsh, os_))]
    occ = np.zeros(tuple(fsh), np.float32)
    offs = np.array([-0.25, 0.25])
    for du in offs:
        for dv in offs:
            for dw in offs:
                occ += ((x[0] + du * fvs[0])[:, None, None] ** 2
                        + (x[1] + dv * fvs[1])[None, :, None] ** 2
                        + (x[2] + dw * fvs[2])[None, None, :] ** 2) <= a * a
    occ /= 8
    pad = [(n // 2, n // 2) for n in fsh]
    fld = field_from_chi(np.pad(occ * chi, pad), fvs, (0, 0, 1))
    fld = fld[tuple(slice(p[0], p[0] + n) for p, n in zip(pad, fsh))]
    ppp = phase_per_ppm(3.0, te)
    fine = (1 - occ) * np.exp(1j * ppp * fld)
    ks = fine.reshape(acq[0], os_[0], acq[1], os_[1], acq[2], os_[2]).mean(axis=(1, 3, 5))
    sl, fac, _ = source_factor(aff, tuple(acq), centre, a, chi, ppp, inside_amp=0.0)
    an = np.ones(tuple(acq), complex)
    an[sl] = fac
    assert np.abs(np.abs(ks) - np.abs(an)).max() < 0.08
    assert abs(int(np.sum(np.abs(ks) < 0.5)) - int(np.sum(np.abs(an) < 0.5))) <= 2
    assert np.sum(np.abs(an) < 0.5) > 5
    ok = np.abs(an) > 0.3
    assert np.abs(np.angle(ks * np.conj(an)))[ok].max() < 0.1


def test_phase_per_ppm_scales_with_b0_and_te():
    base = phase_per_ppm(3.0, 20.0)
    assert base < 0  # sign convention: paramagnetic -> negative phase along B0
    assert phase_per_ppm(7.0, 20.0) / base == pytest.approx(7.0 / 3.0)
    assert phase_per_ppm(3.0, 10.0) / base == pytest.approx(0.5)
    assert abs(base) == pytest.approx(2 * np.pi * 42.577478518 * 3.0 * 0.020, rel=1e-9)


def _dark_area(b0, te, chi=1.0, d=2.0):
    mag, ph, aff = _uniform_image()
    m, _, _ = P.insert_cmbs(mag, ph, aff, [[0.3, -0.2, 0.4]], d, chi, b0, te)
    return int(np.sum(m < 0.5))


def test_blooming_grows_with_te_and_field():
    areas_te = [_dark_area(3.0, te) for te in (5.0, 10.0, 20.0, 40.0)]
    assert all(b >= a for a, b in zip(areas_te, areas_te[1:])), areas_te
    assert areas_te[-1] > 2 * areas_te[0], areas_te
    areas_b0 = [_dark_area(b0, 20.0) for b0 in (1.5, 3.0, 7.0)]
    assert areas_b0[0] < areas_b0[1] < areas_b0[2], areas_b0
    # the footprint depends on chi * B0 * TE only
    assert _dark_area(3.0, 20.0, chi=1.0) == _dark_area(1.5, 40.0, chi=1.0)
    assert _dark_area(3.0, 20.0, chi=0.5) == _dark_area(3.0, 10.0, chi=1.0)


@pytest.mark.slow  # two whole-head simulations (~10-15 s each on 2 cores)
def test_blooming_grows_with_te_in_simulated_phantom():
    src = ({"type": "cmb", "x_mm": 20.0, "y_mm": 10.0, "z_mm": 20.0, "diameter_mm": 2.0,
            "chi_ppm": 1.0},)
    kw = dict(TINY, n_cmb=0, n_calcifications=0, n_veins=0, snr=None, bias_strength=0.0,
              sources=src, seed=5)
    areas, centre_values = [], []
    for te in (8.0, 30.0):
        ph = P.simulate(P.PhantomParams(te_ms=te, **kw))
        # reference: the same voxels far from the source have tissue signal
        ijk = _centre_ijk(ph, ph.truth[0])
        box = tuple(slice(c - 8, c + 9) for c in ijk[:2]) + (slice(ijk[2] - 4, ijk[2] + 5),)
        patch = ph.magnitude[box]
        tissue = ph.tissue[box]
        ref = np.median(patch[tissue == tissue[8, 8, 4]])
        areas.append(int(np.sum(patch < 0.5 * ref)))
        centre_values.append(ph.magnitude[ijk] / ref)
    assert areas[1] > areas[0], areas
    assert centre_values[1] < centre_values[0] and centre_values[1] < 0.5


def test_calcification_and_cmb_same_footprint_opposite_phase():
    mag, ph, aff = _uniform_image()
    c = [[0.0, 0.0, 0.0]]
    m1, p1, _ = P.insert_cmbs(mag, ph, aff, c, 3.0, 0.8, 3.0, 10.0)
    m2, p2, _ = P.insert_cmbs(mag, ph, aff, c, 3.0, -0.8, 3.0, 10.0)
    assert np.sum(m1 < 0.5) > 1
    np.testing.assert_allclose(m1, m2, atol=1e-6)
    np.testing.assert_allclose(p1, -p2, atol=1e-5)
    # along B0 (k axis here), just outside the source: CMB negative, calcification positive
    inv = np.linalg.inv(aff)
    i, j, k = np.rint(inv[:3, 3]).astype(int)
    for dk in (-2, 2):
        assert p1[i, j, k + dk] < -0.05
        assert p2[i, j, k + dk] > 0.05
    # in the equatorial plane the signs swap
    assert p1[i + 3, j, k] > 0.01
    assert p2[i + 3, j, k] < -0.01


def test_source_factor_is_unity_far_away_and_conserves_nothing_inside():
    mag, ph, aff = _uniform_image()
    ppp = phase_per_ppm(3.0, 20.0)
    sl, fac, frac = source_factor(aff, mag.shape, [0.0, 0.0, 0.0], 2.0, 1.0, ppp)
    assert fac.shape == frac.shape and fac.size > 0
    assert np.abs(fac).max() <= 1.0 + 1e-9
    # corners of the patch: negligible effect
    assert abs(abs(fac[0, 0, 0]) - 1.0) < 0.02
    # total inside fraction equals the sphere volume / voxel volume (within sampling error)
    vol = 4.0 / 3.0 * np.pi * 2.0 ** 3 / 2.0
    assert np.sum(frac) == pytest.approx(vol, rel=0.1)


# ------------------------------------------------------------------------------------------
# simulated phantom
def test_determinism_for_a_seed(tiny):
    again = P.simulate(P.PhantomParams(seed=11, **TINY))
    for name in ("magnitude", "phase", "swi", "truth_labels", "tissue"):
        assert np.array_equal(getattr(tiny, name), getattr(again, name)), name
    assert tiny.truth == again.truth
    other = P.simulate(P.PhantomParams(seed=12, **TINY))
    assert not np.array_equal(tiny.magnitude, other.magnitude)
    assert tiny.truth != other.truth


def test_outputs_ranges_and_truth_table(tiny):
    ph = tiny
    assert ph.magnitude.dtype == np.float32 and ph.phase.dtype == np.float32
    assert ph.phase.min() >= -np.pi - 1e-6 and ph.phase.max() <= np.pi + 1e-6
    assert ph.magnitude.min() >= 0
    assert ph.swi.shape == ph.magnitude.shape
    assert np.all(ph.swi <= ph.magnitude + 1e-5)
    n_cmb = sum(t["type"] == "cmb" for t in ph.truth)
    n_calc = sum(t["type"] == "calcification" for t in ph.truth)
    assert n_cmb == TINY["n_cmb"] and n_calc == TINY["n_calcifications"]
    for t in ph.truth:
        assert tuple(t) == P.TRUTH_COLUMNS
        assert t["region"] in ("lobar", "deep", "infratentorial")
        if t["type"] == "cmb":
            assert 1.5 <= t["diameter_mm"] <= 4.0 and 0.5 <= t["chi_ppm"] <= 1.5
        else:
            assert t["chi_ppm"] < 0
    ids = sorted(set(np.unique(ph.truth_labels)) - {0})
    assert ids == [t["truth_id"] for t in ph.truth]


def _check_dark_and_placed(ph):
    brain = np.isin(ph.tissue, list(_BRAIN))
    for t in ph.truth:
        ijk = _centre_ijk(ph, t)
        assert ph.truth_labels[ijk] == t["truth_id"]
        box = tuple(slice(max(c - 7, 0), c + 8) for c in ijk)
        ref = np.median(ph.magnitude[box][brain[box] & (ph.truth_labels[box] == 0)])
        assert ph.magnitude[ijk] < 0.5 * ref, (t, ph.magnitude[ijk], ref)
        if t["type"] == "cmb":
            tis = ph.tissue[ph.truth_labels == t["truth_id"]]
            allowed = np.isin(tis, list(REGION_TISSUES[t["region"]]))
            assert allowed.mean() >= 0.5, (t, tis)
            x = t["x_mm"]
            if t["hemisphere"] == "left":
                assert x < 0
            elif t["hemisphere"] == "right":
                assert x > 0
    # non-overlapping sources
    cs = np.array([[t["x_mm"], t["y_mm"], t["z_mm"]] for t in ph.truth])
    rs = np.array([t["diameter_mm"] / 2 for t in ph.truth])
    for a in range(len(cs)):
        for b in range(a + 1, len(cs)):
            assert np.linalg.norm(cs[a] - cs[b]) > rs[a] + rs[b]


def test_truth_centres_are_dark_and_regions_match(tiny):
    _check_dark_and_placed(tiny)


def test_oblique_affine(tiny):
    ph = P.simulate(P.PhantomParams(seed=11, oblique_deg=(12.0, -6.0, 25.0), **TINY))
    rot = ph.affine[:3, :3] / np.linalg.norm(ph.affine[:3, :3], axis=0)
    assert abs(rot[0, 1]) > 0.2  # really oblique
    np.testing.assert_allclose(np.linalg.norm(ph.affine[:3, :3], axis=0), TINY["voxel_size_mm"])
    # the head is fixed in world space: a ventricle point is ventricle on both grids
    ell = _BASE_ELLIPSOIDS * TINY["head_scale"]
    vent = ell[_E_VENT[1], :3]
    for p in (tiny, ph):
        inv = np.linalg.inv(p.affine)
        ijk = tuple(np.rint(inv[:3, :3] @ vent + inv[:3, 3]).astype(int))
        assert p.tissue[ijk] == P.VENTRICLE
    _check_dark_and_placed(ph)


@pytest.mark.parametrize("region", ["infratentorial", "deep", "lobar"])
def test_region_weights_place_cmbs_in_that_region(region):
    ph = P.simulate(P.PhantomParams(seed=4, region_weights={region: 1.0}, n_calcifications=0,
                                    **{k: v for k, v in TINY.items() if k != "n_calcifications"}))
    assert len(ph.truth) == TINY["n_cmb"]
    anat = _make_anatomy(ph.params, np.random.default_rng(4))
    for t in ph.truth:
        centre = anat.points(np.array([[t["x_mm"], t["y_mm"], t["z_mm"]]]))[0][0]
        if centre == P.WM:
            # placed by the target rule, recorded by MARS (juxtacortical -> lobar, else deep)
            assert region != "infratentorial" and t["region"] in ("lobar", "deep")
            assert (t["lobe"] == "deep_white_matter") == (t["region"] == "deep")
        else:
            assert t["region"] == region
        tis = ph.tissue[ph.truth_labels == t["truth_id"]]
        assert np.isin(tis, list(REGION_TISSUES[t["region"]])).mean() >= 0.5
        if region == "infratentorial":
            assert t["lobe"] in ("brainstem", "cerebellum")
            assert t["z_mm"] < 0
        if region == "lobar":
            assert t["lobe"] in ("frontal", "parietal", "temporal", "occipital")


def test_snr_matches_definition():
    ph = P.simulate(P.PhantomParams(seed=2, snr=20.0, bias_strength=0.0, **TINY))
    sigma = ph.info["noise_sigma"]
    assert sigma == pytest.approx(ph.info["wm_mean_magnitude"] / 20.0)
    from scipy.ndimage import binary_erosion

    air = binary_erosion(ph.tissue == P.AIR, iterations=3)
    assert air.sum() > 1000
    # Rayleigh mean of pure noise = sigma * sqrt(pi / 2)
    assert np.mean(ph.magnitude[air]) == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.05)
    wm = ph.tissue == P.WM
    assert np.mean(ph.magnitude[wm]) / sigma == pytest.approx(20.0, rel=0.1)


def test_veins_present_and_dark_on_swi():
    ph = P.simulate(P.PhantomParams(seed=8, n_cmb=0, n_calcifications=0, n_veins=25, snr=None,
                                    bias_strength=0.0, **{k: v for k, v in TINY.items() if k not in
                                                          ("n_cmb", "n_calcifications",
                                                           "n_veins")}))
    vein = ph.vein_fraction > 0.3
    assert vein.sum() > 20
    wm = (ph.tissue == P.WM) & (ph.vein_fraction == 0)
    assert np.median(ph.swi[vein & (ph.tissue == P.WM)]) < 0.9 * np.median(ph.swi[wm])
    # some veins cross the slices: vein voxels on consecutive slices at the same (i, j)
    cont = vein[:, :, 1:] & vein[:, :, :-1]
    assert cont.sum() > 3


def test_air_interface_darkens_frontobasal_brain():
    kw = dict(TINY, n_cmb=0, n_calcifications=0, n_veins=0, snr=None, bias_strength=0.0, seed=1)
    with_air = P.simulate(P.PhantomParams(with_air_interface=True, **kw))
    without = P.simulate(P.PhantomParams(with_air_interface=False, **kw))
    assert np.any(with_air.tissue == P.SINUS) and not np.any(without.tissue == P.SINUS)
    brain = np.isin(without.tissue, list(_BRAIN))
    ratio = with_air.magnitude[brain] / np.maximum(without.magnitude[brain], 1e-6)
    # a dropout somewhere at the brain edge near the sinus, nothing far away
    assert np.sum(ratio < 0.5) > 5
    sinus_ijk = np.argwhere(with_air.tissue == P.SINUS).mean(axis=0)
    ijk = np.argwhere(brain)
    dist = np.linalg.norm((ijk - sinus_ijk) * np.asarray(TINY["voxel_size_mm"]), axis=1)
    assert np.all(ratio[dist > 60] > 0.9)
    # and the dropout is close to the sinus
    assert np.median(dist[ratio < 0.5]) < 30


def test_write_phantom_files(tiny, tmp_path):
    nib = pytest.importorskip("nibabel")
    paths = P.write_phantom(tiny, tmp_path, "ph")
    for key in ("magnitude", "phase", "swi", "truth_tsv", "truth_labels", "sidecar"):
        assert Path(paths[key]).is_file(), key
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    mag = nib.load(paths["magnitude"])
    np.testing.assert_allclose(mag.affine, tiny.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(mag.dataobj), tiny.magnitude)
    lab = np.asarray(nib.load(paths["truth_labels"]).dataobj)
    np.testing.assert_array_equal(lab, tiny.truth_labels)
    with open(paths["truth_tsv"], newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert tuple(rows[0]) == P.TRUTH_COLUMNS
    assert len(rows) == len(tiny.truth)
    assert float(rows[0]["x_mm"]) == pytest.approx(tiny.truth[0]["x_mm"], abs=1e-3)
    side = json.loads(Path(paths["sidecar"]).read_text())
    assert side["seed"] == 11 and side["parameters"]["voxel_size_mm"] == [1.5, 1.5, 2.0]
    # the sidecar alone regenerates the identical phantom
    again = P.simulate(P.PhantomParams.from_dict(side["parameters"]))
    assert np.array_equal(again.magnitude, tiny.magnitude)
    with pytest.raises(ValueError):
        P.PhantomParams.from_dict({"not_a_field": 1})
    assert side["acquisition"]["field_strength_t"] == 3.0
    # compact int16 storage reads back in radians
    p16 = P.write_phantom(tiny, tmp_path / "i16", "ph", dtype="int16", include_swi=False)
    assert "swi" not in p16
    nib_mag = np.asarray(nib.load(p16["magnitude"]).dataobj)
    step = tiny.magnitude.max() / 4095
    assert np.abs(nib_mag - tiny.magnitude).max() <= 0.51 * step + 1e-6
    phase = np.asarray(nib.load(p16["phase"]).dataobj)
    assert np.abs(np.angle(np.exp(1j * (phase - tiny.phase)))).max() < 1e-3


def test_bad_parameters():
    with pytest.raises(ValueError):
        P.simulate(P.PhantomParams(anatomy="atlas-that-does-not-exist", **TINY))
    with pytest.raises(ValueError):
        P.simulate(P.PhantomParams(te_ms=0.0, **TINY))
    with pytest.raises(ValueError):
        P.simulate(P.PhantomParams(oversampling=(0, 1, 1), **TINY))
    with pytest.raises(ValueError):
        P.simulate(P.PhantomParams(region_weights={"cortex": 1.0}, **TINY))
    with pytest.raises(ValueError):
        P.simulate(P.PhantomParams(sources=({"type": "vein", "x_mm": 0, "y_mm": 0, "z_mm": 0,
                                             "diameter_mm": 1, "chi_ppm": 1},), **TINY))


def test_warns_when_sources_do_not_fit():
    kw = dict(TINY, fov_mm=(112.0, 132.0, 4.0), centre_mm=(0.0, 0.0, 60.0), n_cmb=3)
    with pytest.warns(RuntimeWarning, match="placed"):
        ph = P.simulate(P.PhantomParams(seed=1, **kw))
    assert len(ph.truth) < 3


@pytest.mark.slow  # nilearn's MNI template resampled and one whole-head simulation (~15 s on 2 cores)
def test_mni_anatomy_from_nilearn():
    pytest.importorskip("nilearn")
    kw = dict(fov_mm=(150.0, 186.0, 100.0), voxel_size_mm=(2.0, 2.0, 2.5),
              centre_mm=(0.0, -18.0, 0.0), n_veins=15, n_cmb=6, n_calcifications=1,
              cmb_diameter_range_mm=(2.0, 4.0), calc_diameter_range_mm=(2.5, 4.0), seed=3,
              anatomy="mni")
    ph = P.simulate(P.PhantomParams(**kw))
    assert ph.info["n_cmb_placed"] == 6
    # MNI landmarks: putamen, thalamus, lateral ventricle, cerebellum, outside the head
    inv = np.linalg.inv(ph.affine)
    for xyz, allowed in (((-25, 2, 1), {P.PUTAMEN}), ((11, -18, 7), {P.THALAMUS}),
                         ((-20, -60, -35), {P.CB_GM, P.CB_WM}),
                         ((0, -18, 48), {P.CSF, P.GM, P.WM}), ((-80, 60, 45), {P.AIR})):
        ijk = tuple(np.rint(inv[:3, :3] @ np.asarray(xyz, float) + inv[:3, 3]).astype(int))
        assert ph.tissue[ijk] in allowed, (xyz, P.TISSUE_LABELS[int(ph.tissue[ijk])])
    assert np.any(ph.tissue == P.VENTRICLE) and np.any(ph.tissue == P.SINUS)
    _check_dark_and_placed(ph)


# ------------------------------------------------------------------------------------------
# real data
@pytest.mark.skipif(not (ROMEO / "small_Mag.nii").is_file(), reason="ROMEO sample not available")
def test_insert_cmb_into_real_romeo_crop():
    mag, phase, aff = P.load_real_gre(ROMEO / "small_Mag.nii", ROMEO / "small_Phase.nii", echo=0)
    assert mag.ndim == 3 and phase.shape == mag.shape
    assert phase.min() >= -np.pi - 1e-3 and phase.max() <= np.pi + 1e-3
    assert phase.max() - phase.min() > 5.0  # really rescaled to radians
    # pick the brightest voxel near the middle (tissue, not background)
    box = mag[20:31, 20:31, 18:23]
    ijk = np.array(np.unravel_index(np.argmax(box), box.shape)) + [20, 20, 18]
    centre = aff[:3, :3] @ ijk + aff[:3, 3]
    new_mag, new_phase, labels = P.insert_cmbs(mag, phase, aff, [centre], 2.0, 1.0, 3.0, 4.0)
    t = tuple(ijk)
    assert new_mag[t] < 0.5 * mag[t]
    assert labels[t] == 1
    # voxels far away are untouched
    assert np.allclose(new_mag[:5, :5, :5], mag[:5, :5, :5], rtol=1e-5)
    changed = np.abs(new_mag - mag) > 0.01 * mag.max()
    assert 1 < changed.sum() < 0.2 * mag.size



def test_inserted_cmb_core_carries_the_receivers_noise():
    """A scanner adds its receiver noise after the tissue dephases, so a completely dephased core
    is noise in magnitude and phase; scaling the image's own noise with the signal left the core's
    phase coherent (read 0.57-0.97 on the real 7 T crop's inserted CMBs). ``noise_sigma`` restores
    it; without it the insertion is unchanged."""
    from microbleeds.stages.dipole_sign import core_phase_coherence

    rng = np.random.default_rng(4)
    shape, sigma = (40, 40, 30), 0.05  # SNR 20
    aff = np.diag([0.5, 0.5, 1.0, 1.0])
    grid = np.indices(shape)
    clean = np.exp(1j * (0.05 * grid[0] + 0.03 * grid[2]))
    noisy = clean + sigma * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    mag, phase = np.abs(noisy), np.angle(noisy)
    centre = aff[:3, :3] @ [20, 20, 15]
    plain = P.insert_cmbs(mag, phase, aff, [centre], 4.0, 1.0, 7.0, 15.0)
    restored = P.insert_cmbs(mag, phase, aff, [centre], 4.0, 1.0, 7.0, 15.0, noise_sigma=sigma, seed=1)
    np.testing.assert_array_equal(plain[2], restored[2])
    voxels = np.argwhere(restored[2] == 1)
    inner = np.sqrt(((grid.transpose(1, 2, 3, 0) - [20, 20, 15]) ** 2).sum(-1))  # the core: its inner voxels
    assert core_phase_coherence(voxels, plain[1], inner) > 0.9
    assert core_phase_coherence(voxels, restored[1], inner) < 0.3
    far = (slice(0, 5), slice(0, 5), slice(0, 5))
    np.testing.assert_array_equal(restored[0][far], plain[0][far])
    core = restored[0][voxels[:, 0], voxels[:, 1], voxels[:, 2]]
    assert np.median(core) == pytest.approx(sigma * np.sqrt(2 * np.log(2)), rel=0.5)  # Rayleigh median

@pytest.mark.slow
def test_default_phantom_and_sample(tmp_path):
    ph = P.simulate(P.PhantomParams(seed=1))
    assert ph.info["timings_s"]["total_s"] < 30
    assert ph.info["n_cmb_placed"] == 10
    _check_dark_and_placed(ph)
    pytest.importorskip("nilearn")  # the sample's ICBM152 anatomy (the anatomy extra)
    paths = P.make_sample(tmp_path / "sample", include_swi=False)
    total = sum(Path(p).stat().st_size for p in paths.values())
    assert total < 4.0e6


def test_multicoil_sum_of_squares_background_is_central_chi(tiny):
    """n_coils: air follows a central chi with 2N degrees of freedom (mean ~ sigma sqrt(2N - 1/2),
    std ~ sigma / sqrt(2)), white matter keeps the SNR definition, and the default (n_coils 0) is
    the single-channel phantom, unchanged."""
    from scipy import ndimage as ndi
    from scipy.special import gammaln

    ph = P.simulate(P.PhantomParams(seed=11, **TINY), n_coils=16)
    sigma = ph.info["noise_sigma"]
    air = ndi.binary_erosion(ph.tissue == 0, iterations=3)
    assert air.sum() > 1000
    k = 32
    mean = sigma * np.sqrt(2) * np.exp(gammaln((k + 1) / 2) - gammaln(k / 2))
    assert np.median(ph.magnitude[air]) == pytest.approx(mean, rel=0.05)
    assert np.std(ph.magnitude[air]) == pytest.approx(sigma * np.sqrt(k - (mean / sigma) ** 2), rel=0.1)
    assert ph.info["n_coils"] == 16 and "non-central chi" in ph.info["noise_model"]
    assert np.array_equal(ph.truth_labels, tiny.truth_labels)  # same sources: noise is drawn last
    assert "n_coils" not in tiny.info and tiny.params.n_coils == 0
