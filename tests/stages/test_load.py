"""Bad input gets a clear one-line error naming the file; good input keeps its geometry."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from microbleeds.errors import InputError
from microbleeds.io.nifti import from_canonical, to_canonical
from microbleeds.stages.load import load_mask, load_scan

VOXEL_3MM = np.diag([3.0, 3.0, 3.0, 1.0])  # small test grids of 10-12 voxels span a plausible 30-36 mm


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), VOXEL_3MM if affine is None else affine), path)
    return path


def _expect(path, words):
    with pytest.raises(InputError) as info:
        load_scan(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert any(w in message for w in words), message


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.nii.gz", ["does not exist"])


def test_not_nifti(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("this is not an image")
    _expect(path, ["not a readable NIfTI", "not a NIfTI"])


def test_truncated_gz(tmp_path):
    good = _save(tmp_path / "good.nii.gz", np.random.default_rng(0).random((40, 40, 40)))
    raw = good.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    _expect(bad, ["truncated", "corrupt", "not a readable"])


def test_corrupt_gz_payload(tmp_path):
    bad = tmp_path / "corrupt.nii.gz"
    raw = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)).to_bytes()
    bad.write_bytes(gzip.compress(raw[:400]))
    _expect(bad, ["truncated", "corrupt", "not a readable"])


@pytest.mark.parametrize("shape,word", [((30, 30), "2D"), ((10, 10, 10, 2, 2), "5D")])
def test_wrong_dimensions(tmp_path, shape, word):
    _expect(_save(tmp_path / "dims.nii.gz", np.random.default_rng(0).random(shape) + 1), [word])


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_constant(tmp_path, value):
    _expect(_save(tmp_path / "flat.nii.gz", np.full((10, 10, 10), value)), ["constant"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inside_the_brain(tmp_path, painted, bad):
    volume, affine, _ = painted
    data = volume.copy()
    data[48, 48, 24] = bad
    _expect(_save(tmp_path / "nan.nii.gz", data, affine), ["NaN or infinite voxels inside the brain"])


def _raw_with_pixdim(path, pixdim_xyz):
    """Write a NIfTI whose header pixdim is patched byte-wise (nibabel would repair it on save)."""
    img = nib.Nifti1Image(np.random.default_rng(0).random((10, 10, 10)).astype(np.float32), None)
    raw = bytearray(img.to_bytes())
    raw[80:92] = np.asarray(pixdim_xyz, "<f4").tobytes()  # pixdim[1:4] at byte 76 + 4
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("pixdim", [(1.0, 0.0, 1.0), (1.0, -1.0, 1.0)])
def test_zero_or_negative_voxel_size(tmp_path, pixdim):
    _expect(_raw_with_pixdim(tmp_path / "vox.nii", pixdim), ["zero or negative", "singular", "zero voxel"])


def test_singular_affine(tmp_path):
    affine = np.array([[3, 3, 0, 0], [3, 3, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1]], float)
    _expect(_save(tmp_path / "singular.nii.gz", np.random.default_rng(0).random((10, 10, 10)), affine),
            ["singular", "zero"])


def test_folder_is_refused(tmp_path):
    _expect(tmp_path, ["folder"])


def test_multi_echo_rss_and_pick(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.random((12, 12, 12, 3)).astype(np.float32) + 0.1
    path = _save(tmp_path / "me.nii.gz", data)
    rss = load_scan(path)
    assert rss.n_echoes == 3 and "rss" in rss.echo
    np.testing.assert_allclose(rss.magnitude, np.sqrt((data ** 2).sum(-1)), rtol=1e-5)
    last = load_scan(path, echo="last")
    np.testing.assert_allclose(last.magnitude, data[..., 2])


def test_canonical_round_trip_keeps_world_geometry():
    rng = np.random.default_rng(2)
    data = rng.random((7, 8, 9)).astype(np.float32)
    affine = np.array([[0, 0, -2.0, 10], [0.5, 0, 0, -3], [0, -1.0, 0, 4], [0, 0, 0, 1]])
    canon, canon_affine, ornt = to_canonical(data, affine)
    # the same world point has the same value in both
    ijk = np.array([3, 5, 2])
    xyz = nib.affines.apply_affine(affine, ijk)
    cijk = np.round(nib.affines.apply_affine(np.linalg.inv(canon_affine), xyz)).astype(int)
    assert canon[tuple(cijk)] == data[tuple(ijk)]
    assert np.all(np.diag(canon_affine[:3, :3]) > 0)
    np.testing.assert_array_equal(from_canonical(canon, ornt), data)


def test_mask_on_other_grid_is_refused(tmp_path):
    scan_path = _save(tmp_path / "scan.nii.gz", np.random.default_rng(0).random((10, 10, 10)) + 1)
    mask_path = _save(tmp_path / "mask.nii.gz", np.ones((10, 10, 9)))
    with pytest.raises(InputError, match="does not match"):
        load_mask(mask_path, load_scan(scan_path))


def test_unreadable_sidecar_is_ignored_with_a_warning(tmp_path):
    path = _save(tmp_path / "scan.nii.gz", np.random.default_rng(0).random((10, 10, 10)) + 1)
    (tmp_path / "scan.json").write_text("{ not json")
    with pytest.warns(UserWarning, match="scan.json"):
        scan = load_scan(path)
    assert scan.sidecar == {}


def test_sidecar_supplies_field_and_echo_time(tmp_path, painted):
    import json

    import microbleeds

    volume, affine, _ = painted
    path = tmp_path / "sub-01_T2starw.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    (tmp_path / "sub-01_T2starw.json").write_text(json.dumps({"MagneticFieldStrength": 1.5, "EchoTime": 0.025}))
    acquisition = microbleeds.detect(path).summary["acquisition"]
    assert acquisition == {"sequence": "SWI", "field_strength_t": 1.5, "echo_time_ms": 25.0, "source": "sidecar"}


def test_multi_echo_te_follows_the_echo_used(tmp_path):
    import json

    from microbleeds.presets import load_parameters
    from microbleeds.stages.tabulate import acquisition

    data = np.random.default_rng(0).random((12, 12, 12, 3)).astype(np.float32) + 0.5
    path = _save(tmp_path / "me.nii.gz", data)
    (tmp_path / "me.json").write_text(json.dumps({"EchoTime": [0.004, 0.008, 0.012]}))
    params = load_parameters()
    assert acquisition(load_scan(path), params)["echo_time_ms"] == [4.0, 8.0, 12.0]
    assert acquisition(load_scan(path, echo=1), params)["echo_time_ms"] == 8.0
    assert acquisition(load_scan(path, echo="last"), params)["echo_time_ms"] == 12.0
