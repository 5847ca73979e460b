"""io.phase_file: phase images to radians (units, header scaling), grid checks; sidecar echo times."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synthetic import nifti_file

from microbleeds.errors import InputError
from microbleeds.io.phase_file import load_phase, phase_to_radians
from microbleeds.io.sidecar import read_echo_times

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real" / "romeo-small-gre"



# --------------------------------------------------------------------------------------------
# scaling of the stored phase (io.phase_file)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wrapped():
    rng = np.random.default_rng(1)
    return rng.uniform(-np.pi, np.pi, (12, 11, 10))


def test_radians_pass_through(wrapped):
    out, how = phase_to_radians(wrapped)
    assert out.dtype == np.float32
    assert "radians in [-pi, pi]" in how
    np.testing.assert_allclose(out, wrapped, atol=1e-6)


@pytest.mark.parametrize("stored,expect", [
    ("siemens", "Siemens 12-bit"),
    ("uint12", "0..4095"),
    ("mrad", "milliradians"),
    ("zero2pi", "[0, 2pi]"),
    ("degrees", "degrees in [-180, 180]"),
    ("int16", "16-bit signed"),
])
def test_scanner_units(wrapped, stored, expect):
    if stored == "siemens":
        data = np.round(wrapped / np.pi * 4096).clip(-4096, 4095).astype(np.int16)
        tol = np.pi / 4096
    elif stored == "uint12":
        data = np.round(np.mod(wrapped, 2 * np.pi) / (2 * np.pi) * 4096).clip(0, 4095)
        data = data.astype(np.uint16)
        tol = 2 * np.pi / 4096
    elif stored == "mrad":
        data = np.round(wrapped * 1000).astype(np.int16)
        tol = 1e-3
    elif stored == "zero2pi":
        data, tol = np.mod(wrapped, 2 * np.pi), 1e-6
    elif stored == "degrees":
        data, tol = np.degrees(wrapped), 1e-5
    else:
        data = np.round(wrapped / np.pi * 32768).clip(-32768, 32767).astype(np.int16)
        tol = np.pi / 32768
    out, how = phase_to_radians(data)
    assert expect in how, how
    diff = np.angle(np.exp(1j * (out - wrapped)))
    assert np.max(np.abs(diff)) <= tol * 1.01 + 1e-6


def test_header_scaled_phase_is_unscaled(wrapped):
    slope = 0.0011695906
    out, how = phase_to_radians(wrapped * slope, scl_slope=slope, scl_inter=0.0)
    assert "header scale" in how and "radians" in how
    np.testing.assert_allclose(out, wrapped, atol=1e-5)


def test_unknown_units_rescaled_min_max(wrapped):
    data = wrapped * 0.0011 + 7.0  # nothing known, no header information
    out, how = phase_to_radians(data)
    assert "rescaled min..max" in how
    lo, hi = wrapped.min(), wrapped.max()
    np.testing.assert_allclose(out, (wrapped - lo) / (hi - lo) * 2 * np.pi - np.pi, atol=1e-4)


def test_small_range_radians_kept_and_tiny_range_rescaled(wrapped):
    out, how = phase_to_radians(wrapped * 0.3)
    assert "spans only" in how
    np.testing.assert_allclose(out, wrapped * 0.3, atol=1e-6)
    # the +-0.0037 case without the header's scale factor: rescaled min..max
    out, how = phase_to_radians(wrapped * 0.00117)
    assert "rescaled min..max" in how
    assert out.min() == pytest.approx(-np.pi, abs=1e-5)
    assert out.max() == pytest.approx(np.pi, abs=1e-5)


def test_scaling_bad_values():
    with pytest.raises(InputError, match="x.nii: phase is constant"):
        phase_to_radians(np.full((4, 4, 4), 2.0), "x.nii")
    with pytest.raises(InputError, match="no finite value"):
        phase_to_radians(np.full((4, 4, 4), np.nan), "x.nii")


@pytest.mark.skipif(not (REAL / "small_Phase.nii").exists(), reason="real data not available")
def test_real_phase_scaling_detected():
    img = nib.load(str(REAL / "small_Phase.nii"))
    assert abs(img.get_fdata().max()) < 0.01  # nibabel applies scl_slope: +-0.0037
    mag_img = nib.load(str(REAL / "small_Mag.nii"))
    rad, how = load_phase(REAL / "small_Phase.nii", mag_img.shape, mag_img.affine)
    assert "header scale" in how and "scl_slope=0.00116959" in how
    assert rad.shape == (51, 51, 41, 3)
    assert rad.min() < -3.1 and rad.max() > 3.1
    raw = np.asarray(img.dataobj.get_unscaled(), dtype=np.float64)
    np.testing.assert_allclose(np.angle(np.exp(1j * (rad - raw))), 0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# bad phase input -> InputError naming the file (io.phase_file)
# --------------------------------------------------------------------------------------------

def test_load_phase_validation(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.uniform(-np.pi, np.pi, (8, 9, 7, 3)).astype(np.float32)
    mshape, maff = (8, 9, 7, 3), np.diag([0.5, 0.5, 1.0, 1.0])
    ok = nifti_file(tmp_path / "ok.nii.gz", good, maff)
    rad, how = load_phase(ok, mshape, maff)
    assert rad.shape == mshape and "radians" in how

    cases = {
        "grid.nii.gz": (good[:, :8], "differs from the magnitude grid 8x9x7"),
        "const.nii.gz": (np.zeros_like(good), "constant"),
        "nan.nii.gz": (np.full_like(good, np.nan), "all NaN"),
        "somenan.nii.gz": (np.where(good > 3.0, np.nan, good), "NaN/Inf voxels"),
        "echoes.nii.gz": (good[..., :2], "phase has 2 echoes but the magnitude has 3"),
    }
    for name, (data, msg) in cases.items():
        path = nifti_file(tmp_path / name, data, maff)
        with pytest.raises(InputError) as exc:
            load_phase(path, mshape, maff)
        assert str(exc.value).startswith(path + ": "), str(exc.value)
        assert msg in str(exc.value)
        assert "\n" not in str(exc.value)

    shifted = maff.copy()
    shifted[0, 3] = 2.0
    path = nifti_file(tmp_path / "affine.nii.gz", good, shifted)
    with pytest.raises(InputError, match="affine.nii.gz: phase affine differs"):
        load_phase(path, mshape, maff)
    with pytest.raises(InputError, match="missing.nii: phase file does not exist"):
        load_phase(tmp_path / "missing.nii", mshape)
    # one echo of a 3D magnitude must not be a multi-echo phase
    with pytest.raises(InputError, match="phase has 3 echoes but the magnitude has 1"):
        load_phase(ok, mshape[:3])


def test_load_phase_one_file_per_echo(tmp_path):
    rng = np.random.default_rng(3)
    echoes = [rng.uniform(-np.pi, np.pi, (6, 6, 5)) for _ in range(3)]
    paths = [nifti_file(tmp_path / f"e{i}.nii", np.round(e / np.pi * 4096).astype(np.int16))
             for i, e in enumerate(echoes)]
    rad, how = load_phase(paths, (6, 6, 5, 3))
    assert rad.shape == (6, 6, 5, 3) and "Siemens" in how
    assert np.max(np.abs(np.angle(np.exp(1j * (rad[..., 1] - echoes[1]))))) < 1e-3
    with pytest.raises(InputError, match="phase has 2 echoes but the magnitude has 3"):
        load_phase(paths[:2], (6, 6, 5, 3))


def test_load_phase_header_slope_file(tmp_path):
    rng = np.random.default_rng(4)
    raw = rng.uniform(-np.pi, np.pi, (7, 7, 6)).astype(np.float32)
    path = nifti_file(tmp_path / "scaled.nii", raw, slope=0.00117)
    rad, how = load_phase(path, (7, 7, 6))
    assert "header scale" in how
    np.testing.assert_allclose(rad, raw, atol=1e-5)


# --------------------------------------------------------------------------------------------
# echo times (io.sidecar) and combination
# --------------------------------------------------------------------------------------------

def test_read_echo_times(tmp_path):
    paths = []
    for i, te in enumerate([0.004, 0.008, 0.012]):
        p = tmp_path / f"sub_echo-{i + 1}_part-phase.nii.gz"
        p.write_bytes(b"")
        (tmp_path / f"sub_echo-{i + 1}_part-phase.json").write_text(json.dumps({"EchoTime": te}))
        paths.append(p)
    np.testing.assert_allclose(read_echo_times(paths), [4, 8, 12])
    one = tmp_path / "multi.nii"
    (tmp_path / "multi.json").write_text(json.dumps({"EchoTime": [0.005, 0.010]}))
    np.testing.assert_allclose(read_echo_times(one), [5, 10])
    assert read_echo_times(tmp_path / "nosidecar.nii.gz") is None
    (tmp_path / "note.json").write_text(json.dumps({"RepetitionTime": 0.03}))
    assert read_echo_times(tmp_path / "note.nii") is None
