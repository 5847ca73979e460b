"""Reading BIDS as BIDS means it: which files are scans, echoes and parts grouped, inherited
sidecars, selection, and the plain-folder modality guard (no detection run here)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synthetic import TOP_SIDECAR, bids_dataset

from microbleeds.io.bids import discover, name_guard, read_filter_file
from microbleeds.presets import preset_for


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return bids_dataset(tmp_path_factory.mktemp("bids") / "ds")


def _by_prefix(found):
    return {scan.prefix(): scan for scan in found.scans}


def test_only_t2star_weighted_anatomical_files_are_scans(dataset):
    found = discover(dataset)
    assert {scan.entities["suffix"] for scan in found.scans} == {"T2starw", "MEGRE"}
    assert len(found.scans) == 3 * 2 + 3 + 1  # T2starw per session, 3-echo MEGRE in ses-1, one 4-echo MEGRE
    skipped = dict(found.skipped)
    assert "sourcedata/" in skipped and "code/" in skipped
    for name in ("anat/sub-02_ses-1_T1w.nii.gz", "anat/sub-02_ses-1_FLAIR.nii.gz",
                 "func/sub-02_ses-1_task-rest_bold.nii.gz", "dwi/sub-02_ses-1_dwi.nii.gz"):
        assert f"sub-02/ses-1/{name}" in skipped, name
    assert "not T2*-weighted" in skipped["sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]
    assert "func datatype" in skipped["sub-02/ses-1/func/sub-02_ses-1_task-rest_bold.nii.gz"]
    assert not any("sourcedata/" in rel and rel != "sourcedata/" for rel in skipped)  # never indexed inside


def test_echoes_of_one_acquisition_are_one_scan_with_their_echo_times(dataset):
    scans = _by_prefix(discover(dataset))
    me3 = scans["sub-01_ses-1_acq-me3"]
    assert [p.name for p in me3.magnitude] == [f"sub-01_ses-1_acq-me3_echo-{e}_part-mag_MEGRE.nii.gz" for e in (1, 2, 3)]
    assert [p.name for p in me3.phase] == [f"sub-01_ses-1_acq-me3_echo-{e}_part-phase_MEGRE.nii.gz" for e in (1, 2, 3)]
    assert me3.echo_times_ms == pytest.approx([5.0, 10.0, 15.0])
    me4 = scans["sub-01_ses-2_acq-me4"]
    assert len(me4.magnitude) == 4 and me4.phase is None
    assert me4.echo_times_ms == pytest.approx([6.0, 12.0, 18.0, 24.0])
    assert me4.bids_block() == {"participant_id": "sub-01", "session_id": "ses-2",
                                "entities": {"subject": "01", "session": "2", "acquisition": "me4",
                                             "suffix": "MEGRE", "datatype": "anat"},
                                "source": "sub-01/ses-2/anat/sub-01_ses-2_acq-me4_echo-1_part-mag_MEGRE.nii.gz"}


def test_sidecars_are_inherited_nearest_last(tmp_path):
    root = bids_dataset(tmp_path / "ds", subjects=2, sessions=1)
    (root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T2starw.json").write_text(json.dumps({"MagneticFieldStrength": 3}))
    scans = _by_prefix(discover(root))
    assert scans["sub-01_ses-1"].metadata == TOP_SIDECAR  # only the top-level T2starw.json applies
    assert scans["sub-01_ses-1"].echo_times_ms == [25.0]
    near = scans["sub-02_ses-1"].metadata
    assert near["MagneticFieldStrength"] == 3 and near["EchoTime"] == 0.025  # nearest wins, the rest inherited


def test_maps_and_orphan_phase_are_never_scans(tmp_path):
    root = bids_dataset(tmp_path / "ds", subjects=1, sessions=1)
    anat = root / "sub-01" / "ses-1" / "anat"
    data = np.ones((24, 24, 12), np.float32)
    for name in ("sub-01_ses-1_acq-swi_T2starmap", "sub-01_ses-1_acq-swi_PDw", "sub-01_ses-1_acq-lone_part-phase_T2starw"):
        nib.save(nib.Nifti1Image(data, np.eye(4)), anat / f"{name}.nii.gz")
    found = discover(root, swi_acq=("swi",))
    skipped = dict(found.skipped)
    assert "quantitative map" in skipped["sub-01/ses-1/anat/sub-01_ses-1_acq-swi_T2starmap.nii.gz"]
    assert "without a magnitude" in skipped["sub-01/ses-1/anat/sub-01_ses-1_acq-lone_part-phase_T2starw.nii.gz"]
    assert "sub-01_ses-1_acq-swi" in _by_prefix(found)  # SWI stored as acq-swi_PDw: named by the user, a scan
    assert "sub-01_ses-1_acq-swi" not in _by_prefix(discover(root))  # not named: not a scan


def test_participant_session_and_filter_selection(dataset, tmp_path):
    assert {s.entities["sub"] for s in discover(dataset, participant_label=["sub-02"]).scans} == {"02"}
    assert {s.entities["ses"] for s in discover(dataset, session_label=["2"]).scans} == {"2"}
    only_megre = discover(dataset, filters={"acquisition": ["me3", "me4"]})
    assert {s.entities["suffix"] for s in only_megre.scans} == {"MEGRE"}
    no_acq = discover(dataset, filters={"acquisition": None})
    assert {s.entities["suffix"] for s in no_acq.scans} == {"T2starw"}
    path = tmp_path / "filter.json"
    path.write_text(json.dumps({"t2starw": {"datatype": "anat", "session": "1"}}))
    assert read_filter_file(path) == {"session": "1"}


def test_plain_folder_guard(tmp_path):
    data = np.ones((24, 24, 12), np.float32)
    for name in ("sub-01_T1w", "sub-01_swi", "scan", "rest", "diff", "flair_like"):
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"{name}.nii.gz")
    (tmp_path / "rest.json").write_text(json.dumps({"TaskName": "rest"}))
    (tmp_path / "diff.bval").write_text("0 1000\n")
    (tmp_path / "flair_like.json").write_text(json.dumps({"EchoTime": 0.12}))
    assert "T1w" in name_guard(tmp_path / "sub-01_T1w.nii.gz")
    assert "functional" in name_guard(tmp_path / "rest.nii.gz")
    assert "diffusion" in name_guard(tmp_path / "diff.nii.gz")
    assert "120 ms" in name_guard(tmp_path / "flair_like.nii.gz")
    assert name_guard(tmp_path / "sub-01_swi.nii.gz") == "" and name_guard(tmp_path / "scan.nii.gz") == ""


@pytest.mark.parametrize("field_t, preset", [(1.5, "gre-1.5t"), (3.0, "swi-3t"), (2.89, "swi-3t"), (7.0, "swi-7t"),
                                             (None, "swi-3t")])
def test_preset_follows_field_strength(field_t, preset):
    assert preset_for(field_t)[0] == preset


@pytest.mark.parametrize("name", [
    "sub-01_T2starw.nii.gz", "sub-01/ses-2/anat/sub-01_ses-2_acq-swi_echo-3_part-phase_MEGRE.nii",
    "bids/sub-A1/anat/sub-A1_run-01_T2starw.json", "scan.nii", "scan", "sub-01", "a_b-c_d-e-f.nii.gz",
    "x/sub-01/func/sub-01_task-rest_bold.nii.gz", "sub-01_acq-a_acq-b_T2starw.tar.nii.gz", "my scan_v2.nii",
    "sub-01/Anat/sub-01_T2starw.nii", "sub-01/ses-x/anat/notbids.nii", "_sub-01_.nii", ".hidden",
    "data/sub-01\\anat\\sub-01_T2starw.nii.gz", "sub-01_echo-1-2_part-mag.nii.gz",
])
def test_file_entities_as_bids2table_parses_them(name):
    """The own parser (no pyarrow import on a plain folder's file) gives bids2table's dict, order included."""
    bids2table = pytest.importorskip("bids2table")
    from microbleeds.io.bids import file_entities

    for path in (name, Path(name)):
        ours, theirs = file_entities(path), bids2table.parse_bids_entities(path)
        assert ours == theirs and list(ours) == list(theirs), name
