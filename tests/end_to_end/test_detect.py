"""End-to-end behaviour of the detector on painted volumes (mechanics, not accuracy)."""

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import BALLS, TUBES, world
from nibabel.orientations import apply_orientation, inv_ornt_aff

import microbleeds
from microbleeds.contract import LESION_COLUMNS
from microbleeds.io import results as report


def _lesion_xyz(result):
    return np.array([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in result.lesions]).reshape(-1, 3)


def _segment_distance_mm(point_mm, start_mm, end_mm):
    axis = end_mm - start_mm
    t = np.clip(np.dot(point_mm - start_mm, axis) / np.dot(axis, axis), 0, 1)
    return np.linalg.norm(point_mm - (start_mm + t * axis))


@pytest.fixture(scope="module")
def result(painted):
    volume, affine, _ = painted
    return microbleeds.detect(volume, affine=affine)


def test_finds_every_ball_and_no_tube(result, painted):
    _, affine, truth = painted
    found = _lesion_xyz(result)
    for centre in truth:
        distances = np.linalg.norm(found - world(affine, centre), axis=1)
        assert distances.min() < 1.5, f"ball at voxel {centre} missed"
    for start, end, _, _ in TUBES:
        s, e = world(affine, start), world(affine, end)
        for xyz in found:
            assert _segment_distance_mm(xyz, s, e) > 2.0, f"tube reported as lesion at {xyz}"
    assert len(found) == len(BALLS)


def test_tables_have_the_contract_columns(result):
    assert list(result.lesions[0]) == list(LESION_COLUMNS)
    ids = [c["candidate_id"] for c in result.candidates]
    assert ids == list(range(1, len(ids) + 1))
    accepted = [c for c in result.candidates if c["status"] == "accepted"]
    assert [c["lesion_id"] for c in accepted] == list(range(1, len(result.lesions) + 1))
    assert all(c["reason"] for c in result.candidates if c["status"] == "rejected")
    assert all(0.5 < lesion["confidence"] <= 1 for lesion in result.lesions)


def test_label_map_marks_each_lesion_at_its_voxel(result):
    for lesion in result.lesions:
        assert result.labels[lesion["i"], lesion["j"], lesion["k"]] == lesion["lesion_id"]
    assert set(np.unique(result.labels)) == {0} | {r["lesion_id"] for r in result.lesions}


def test_summary_counts_and_burden(result):
    s = result.summary
    assert s["counts"]["total"] == len(result.lesions) == s["counts"]["definite"] + s["counts"]["possible"]
    assert s["burden_category"] == "2-4"
    assert sum(s["counts"]["by_size"].values()) == s["counts"]["total"]
    assert s["pipeline"]["name"] == "swi-3t"


@pytest.mark.parametrize("ornt", [
    [[0, -1], [1, 1], [2, 1]],          # x flipped
    [[1, 1], [0, 1], [2, -1]],          # x/y swapped, z flipped
    [[2, 1], [0, -1], [1, -1]],         # all permuted, two flipped
])
def test_world_coordinates_do_not_depend_on_storage_order(tmp_path, painted, result, ornt):
    volume, affine, _ = painted
    ornt = np.asarray(ornt)
    stored = apply_orientation(volume, ornt)
    stored_affine = affine @ inv_ornt_aff(ornt, volume.shape)
    path = tmp_path / "reoriented.nii.gz"
    nib.save(nib.Nifti1Image(stored, stored_affine), path)
    other = microbleeds.detect(path)
    a, b = _lesion_xyz(result), _lesion_xyz(other)
    assert a.shape == b.shape
    assert np.abs(a - b).max() < 0.5
    # voxel indices refer to the stored grid
    for lesion in other.lesions:
        assert other.labels[lesion["i"], lesion["j"], lesion["k"]] == lesion["lesion_id"]


def test_rerun_reproduces_files_bit_for_bit(tmp_path, painted_file):
    first = microbleeds.detect(painted_file).write(tmp_path / "a")
    second = microbleeds.detect(painted_file).write(tmp_path / "b")
    for name in report.RESULT_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    summary = json.loads((first / "summary.json").read_text())
    assert summary["input"]["sha256"] and summary["input"]["path"].endswith("sub-01_swi.nii.gz")


def test_failed_write_leaves_nothing_half_written(tmp_path, painted_file, monkeypatch):
    result = microbleeds.detect(painted_file)
    out = tmp_path / "out"
    done = result.write(out)
    before = {p.name: p.read_bytes() for p in done.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "json_text", boom)
    with pytest.raises(OSError):
        result.write(out)
    assert sorted(p.name for p in out.iterdir()) == [done.name]  # no temp folder left
    assert {p.name: p.read_bytes() for p in done.iterdir()} == before


def test_array_and_image_sources_agree(painted):
    volume, affine, _ = painted
    from_image = microbleeds.detect(nib.Nifti1Image(volume, affine))
    from_array = microbleeds.detect(volume, affine=affine)
    np.testing.assert_allclose(_lesion_xyz(from_image), _lesion_xyz(from_array))


def test_user_mask_restricts_the_search(painted):
    volume, affine, truth = painted
    mask = np.zeros(volume.shape, bool)
    centre = np.asarray(truth[0]).astype(int)
    mask[centre[0] - 8:centre[0] + 8, centre[1] - 8:centre[1] + 8, centre[2] - 5:centre[2] + 5] = True
    result = microbleeds.detect(volume, affine=affine, mask=mask)
    assert len(result.lesions) == 1
    assert np.linalg.norm(_lesion_xyz(result)[0] - world(affine, centre)) < 1.5


def test_bad_parameter_is_named():
    with pytest.raises(ValueError, match="min_diameter_mm"):
        microbleeds.detect(np.ones((5, 5, 5)), affine=np.eye(4), min_diameter_mm=9, max_diameter_mm=5)


def test_repairs_and_mask_warnings_reach_the_summary_and_the_page(tmp_path, painted):
    """What the reader repaired (NaN in the air) is a note, a failed mask check a warning, and the
    review page shows the warning; the lesions are those of the clean scan."""
    import warnings

    from microbleeds.review.page import build_report

    volume, affine, _ = painted
    clean = microbleeds.detect(volume, affine=affine)
    dirty = volume.copy()
    dirty[:3, :3, :3] = np.nan  # a corner of air
    path = tmp_path / "sub-01_T2starw.nii.gz"
    nib.save(nib.Nifti1Image(dirty, affine), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = microbleeds.detect(path, brain_coverage="whole")
    assert any("NaN" in note for note in result.summary["notes"])
    assert [row["x_mm"] for row in result.lesions] == [row["x_mm"] for row in clean.lesions]
    assert result.summary["warnings"], "a 96 x 96 x 96 mm painted head is no whole adult brain"
    page = build_report(result.write(tmp_path / "out")).read_text()
    assert result.summary["warnings"][0].split(":")[0] in page
