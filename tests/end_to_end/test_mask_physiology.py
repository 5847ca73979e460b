"""Loud warnings, never silence: a real clinical spin-echo T2 given as SWI, and a mask that fails
the physiology check, are warned about in summary.json and on stderr."""

from pathlib import Path

import numpy as np
import pytest

import microbleeds
from microbleeds.stages.tabulate import sequence_warnings

T2 = next((Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "tcga-fg-6692").glob("*_t2.nii.gz"),
          None) if (Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "tcga-fg-6692").is_dir() else None


@pytest.mark.skipif(T2 is None, reason="the real clinical T2 (shared/data/real/tcga-fg-6692) is not here")
def test_real_spin_echo_t2_is_flagged_from_its_header():
    with pytest.warns(UserWarning, match="not T2\\*-weighted") as record:
        result = microbleeds.detect(T2)
    summary = result.summary
    assert summary["acquisition"]["echo_time_ms"] == 91.0  # from the header's descrip, not the preset's 20
    assert summary["acquisition_metadata"]["sources"]["echo_time_ms"] == "header"
    assert any("not T2*-weighted" in w and "91" in w for w in summary["warnings"])
    assert any(T2.name in str(r.message) for r in record)


def test_sidecar_sequence_rules():
    tse = {"sequence_in_file": {"ScanningSequence": "SE", "SequenceName": "*tse2d1_11"}, "echo_time_ms": 91.0,
           "sources": {"echo_time_ms": "sidecar"}}
    assert len(sequence_warnings(tse)) == 1 and "spin echo" in sequence_warnings(tse)[0]
    swi = {"sequence_in_file": {"ScanningSequence": "GR", "SequenceName": "*swi3d1r"}, "echo_time_ms": 20.0,
           "sources": {"echo_time_ms": "sidecar"}}
    assert sequence_warnings(swi) == []
    preset_only = {"sequence_in_file": None, "echo_time_ms": 200.0, "sources": {"echo_time_ms": "preset"}}
    assert sequence_warnings(preset_only) == []  # the preset is never judged, only the file


def test_mask_filling_the_field_of_view_is_a_loud_warning():
    rng = np.random.default_rng(0)
    volume = (1.0 + 0.02 * rng.standard_normal((150, 180, 60))).astype(np.float32)  # no background at all
    with pytest.warns(UserWarning, match="brain mask"):
        result = microbleeds.detect(volume, affine=np.diag([1.0, 1.0, 2.0, 1.0]), brain_coverage="whole")
    assert any("fills" in w for w in result.summary["warnings"])
    assert any("above the physiological maximum" in w for w in result.summary["warnings"])
    assert result.summary["brain_mask"]["fov_fraction"] == 1.0
