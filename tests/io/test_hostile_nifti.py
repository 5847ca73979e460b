"""Hostile and odd NIfTI files (scan, mask, phase): each gets a one-line error naming the file and
the problem, or is read as the clean scan (with a note when something was repaired or assumed).

The corpus (``CASES``) is built in tmp_path from one small synthetic head; the property-based tests
(hypothesis) mutate its header fields and its gzip stream.
"""

import gzip
import io
import os
import sys
import zlib

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import head_volume

from microbleeds.errors import InputError
from microbleeds.io.nifti import read_volume
from microbleeds.io.phase_file import load_phase
from microbleeds.stages.load import load_mask, load_scan

SHAPE = (40, 40, 24)
VOXEL = (1.5, 1.5, 2.0)


# --------------------------------------------------------------------------------------------
# the clean scan and its byte-level mutations
# --------------------------------------------------------------------------------------------

def _clean_image(dtype=np.float32):
    volume, affine, _ = head_volume(shape=SHAPE, voxel_mm=VOXEL, balls=(((20, 20, 12), 3.0, 0.7),), snr=25, seed=3)
    img = nib.Nifti1Image(volume.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


CLEAN = _clean_image()
CLEAN_RAW = CLEAN.to_bytes()
CLEAN_GZ = gzip.compress(CLEAN_RAW, mtime=0)


def _patched(raw=CLEAN_RAW, **fields):
    """NIfTI bytes with header fields set byte-wise (nibabel would repair them when saving)."""
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for name, value in fields.items():
        if isinstance(value, dict):  # element-wise: {"pixdim": {1: 0.0}}
            array = header[name].copy()
            for index, item in value.items():
                array[index] = item
            header[name] = array
        else:
            header[name] = value
    return header.binaryblock + raw[348:]


def _scaled_image(raw=CLEAN_RAW, factor=1.0):
    """Clean bytes with the voxel sizes (sform, qform, pixdim) multiplied by ``factor``."""
    affine = CLEAN.affine.copy()
    affine[:3] *= factor
    img = nib.Nifti1Image(np.asanyarray(CLEAN.dataobj), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def _gz(raw):
    return gzip.compress(raw, mtime=0)


def _flip(data, index):
    data = bytearray(data)
    data[index] ^= 0xFF
    return bytes(data)


def _with_data(array, dtype=None, affine=None, **fields):
    img = nib.Nifti1Image(np.asarray(array) if dtype is None else np.asarray(array, dtype), CLEAN.affine if affine is None else affine)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return _patched(img.to_bytes(), **fields) if fields else img.to_bytes()


def _volume():
    return np.asanyarray(CLEAN.dataobj).astype(np.float32)


def _set(index, value):
    data = _volume()
    data[index] = value
    return data


BACKGROUND = [(0, 0, 0), (1, 2, 0), (39, 39, 23), (0, 39, 5), (39, 0, 10), (2, 2, 22), (38, 1, 1), (0, 20, 0),
              (20, 0, 23), (39, 20, 12)]


def _nan_in_background():
    data = _volume()
    for ijk in BACKGROUND:
        data[ijk] = np.nan
    return data


def _offset(value):
    data = _volume()
    background = data < 0.2
    data[background] = value
    return data


def _two_members(raw):
    half = len(raw) // 2
    return _gz(raw[:half]) + _gz(raw[half:])


# Each case: (name, bytes builder, expected). expected is ("error", words), ("note", words) (read, with a
# note holding the words) or ("same", None) (read as the clean scan, without notes).
CASES = [
    # 1. gzip stream: end, CRC, length, members, trailing data
    ("gzip_missing_trailer", lambda: CLEAN_GZ[:-8], ("error", "gzip stream is truncated")),
    ("gzip_missing_isize", lambda: CLEAN_GZ[:-4], ("error", "gzip stream is truncated")),
    ("gzip_missing_last_byte", lambda: CLEAN_GZ[:-1], ("error", "gzip stream is truncated")),
    ("gzip_cut_in_half", lambda: CLEAN_GZ[: len(CLEAN_GZ) // 2], ("error", "truncated")),
    ("gzip_cut_in_header", lambda: CLEAN_GZ[:20], ("error", "truncated")),
    ("gzip_crc_mismatch", lambda: _flip(CLEAN_GZ, -8), ("error", "CRC check failed")),
    ("gzip_length_mismatch", lambda: _flip(CLEAN_GZ, -2), ("error", "length check failed")),
    ("gzip_flipped_payload_byte", lambda: _flip(CLEAN_GZ, len(CLEAN_GZ) // 2), ("error", "gzip")),
    ("gzip_trailing_garbage", lambda: CLEAN_GZ + b"garbage", ("error", "follow the end of the gzip stream")),
    ("gzip_trailing_zero_padding", lambda: CLEAN_GZ + b"\0" * 16, ("same", None)),
    ("gzip_two_members", lambda: _two_members(CLEAN_RAW), ("same", None)),
    ("gzip_header_only", lambda: _gz(CLEAN_RAW[:352]), ("error", "truncated NIfTI data")),
    ("gzip_extra_bytes_in_payload", lambda: _gz(CLEAN_RAW + b"\0" * 64), ("error", "more than")),
    ("gzip_bomb_header_claims_less", lambda: _gz(_patched(dim={3: 2}) + b"\0" * 4_000_000), ("error", "more than")),
    ("uncompressed_named_gz", lambda: CLEAN_RAW, ("same", None)),
    ("empty_file", lambda: b"", ("error", "not a NIfTI file")),
    ("text_file", lambda: b"this is not an image" * 30, ("error", "not a NIfTI file")),
    # 2. scale factors
    ("scl_slope_1e30", lambda: _patched(scl_slope=1e30, scl_inter=0), ("error", "scl_slope")),
    ("scl_slope_overflows_float32", lambda: _patched(scl_slope=3e38, scl_inter=0), ("error", "beyond float32")),
    ("scl_slope_int16_overflow", lambda: _with_data(np.full(SHAPE, 30000), np.int16, scl_slope=1e36, scl_inter=0),
     ("error", "beyond float32")),
    ("scl_slope_inf", lambda: _patched(scl_slope=np.inf, scl_inter=0), ("error", "scl_slope is inf")),
    ("scl_slope_minus_inf", lambda: _patched(scl_slope=-np.inf, scl_inter=0), ("error", "scl_slope is -inf")),
    ("scl_inter_inf", lambda: _patched(scl_slope=1.0, scl_inter=np.inf), ("error", "scl_inter")),
    ("scl_inter_nan_with_slope", lambda: _patched(scl_slope=2.0, scl_inter=np.nan), ("error", "scl_inter")),
    ("scl_slope_1e-30", lambda: _patched(scl_slope=1e-30, scl_inter=0), ("error", "underflows")),
    ("scl_slope_zero_means_none", lambda: _patched(scl_slope=0.0, scl_inter=5.0), ("same", None)),
    ("scl_slope_nan_means_none", lambda: _patched(scl_slope=np.nan, scl_inter=np.nan), ("same", None)),
    ("scl_slope_negative", lambda: _patched(scl_slope=-1.0, scl_inter=0), ("error", "negative values")),
    ("scl_inter_large_negative", lambda: _patched(scl_slope=1.0, scl_inter=-1e6), ("error", "negative values")),
    # 11. memory, field of view, units
    ("dim_20000_cubed", lambda: _patched(dim={1: 20000, 2: 20000, 3: 20000}), ("error", "more than the budget")),
    ("dim_larger_than_data", lambda: _patched(dim={3: 25}), ("error", "truncated NIfTI data")),
    ("dim_smaller_than_data", lambda: _patched(dim={3: 23}), ("error", "more than the header describes")),
    ("dim0_zero", lambda: _patched(dim={0: 0}), ("error", "dim[0]")),
    ("dim0_eight", lambda: _patched(dim={0: 8}), ("error", "dim[0]")),
    ("dim_zero_size", lambda: _patched(dim={2: 0}), ("error", "zero or negative size")),
    ("dim_negative_size", lambda: _patched(dim={1: -40}), ("error", "zero or negative size")),
    ("voxels_in_metres_units_mm", lambda: _scaled_image(factor=1e-3).to_bytes(), ("error", "not a plausible head")),
    ("voxels_in_metres_units_metres", lambda: _patched(_scaled_image(factor=1e-3).to_bytes(), xyzt_units=1),
     ("note", "converted to mm")),
    ("voxels_in_microns_units_microns", lambda: _patched(_scaled_image(factor=1e3).to_bytes(), xyzt_units=3),
     ("note", "converted to mm")),
    ("units_metres_but_sizes_mm", lambda: _patched(xyzt_units=1), ("note", "read as mm")),
    ("units_microns_but_sizes_mm", lambda: _patched(xyzt_units=3), ("note", "read as mm")),
    ("field_of_view_too_large", lambda: _scaled_image(factor=20.0).to_bytes(), ("error", "not a plausible head")),
    ("field_of_view_too_small", lambda: _scaled_image(factor=0.1).to_bytes(), ("error", "not a plausible head")),
    # 12. pixdim and the sform / qform
    ("pixdim_zero_with_sform", lambda: _patched(pixdim={2: 0.0}), ("note", "the sform (code 1) gives the geometry")),
    ("pixdim_negative_with_sform", lambda: _patched(pixdim={1: -1.5}), ("note", "the sform (code 1)")),
    ("pixdim_nan_with_sform", lambda: _patched(pixdim={3: np.nan}), ("note", "the sform (code 1)")),
    ("pixdim_zero_no_sform", lambda: _patched(pixdim={2: 0.0}, sform_code=0), ("error", "zero or negative")),
    ("pixdim_negative_qform_only", lambda: _patched(pixdim={1: -1.5}, sform_code=0), ("error", "zero or negative")),
    ("pixdim_zero_no_xform", lambda: _patched(pixdim={2: 0.0}, sform_code=0, qform_code=0), ("error", "zero or negative")),
    ("pixdim_disagrees_with_sform", lambda: _patched(pixdim={1: 3.0}), ("note", "disagrees with the sform")),
    ("sform_singular_qform_valid", lambda: _patched(srow_x=np.zeros(4)), ("note", "the qform (code 1) gives the geometry")),
    ("sform_nan_qform_valid", lambda: _patched(srow_y=np.full(4, np.nan)), ("note", "qform")),
    ("sform_and_qform_unusable", lambda: _patched(srow_x=np.zeros(4), pixdim={1: 0.0}), ("error", "zero or negative")),
    ("qform_only", lambda: _patched(sform_code=0), ("same", None)),
    ("no_sform_no_qform", lambda: _patched(sform_code=0, qform_code=0), ("note", "neither sform nor qform")),
    ("sform_code_invalid", lambda: _patched(sform_code=99), ("note", "sform_code 99 not valid")),
    ("qfac_zero", lambda: _patched(pixdim={0: 0.0}), ("same", None)),
    # 13. the right problem named; NaN / Inf / small negatives outside the head
    ("complex64", lambda: _with_data(_volume() + 0j, np.complex64), ("error", "complex")),
    ("complex128", lambda: _with_data(_volume() + 0j, np.complex128), ("error", "complex")),
    ("rgb24", lambda: _patched(_with_data(np.zeros(SHAPE + (3,), np.uint8)), datatype=128, bitpix=24,
                               dim={0: 3, 4: 1}), ("error", "RGB")),
    ("datatype_unknown", lambda: _patched(datatype=999), ("error", "not a NIfTI data type")),
    ("vox_offset_zero", lambda: _patched(vox_offset=0), ("error", "vox_offset 0")),
    ("vox_offset_inside_header", lambda: _patched(vox_offset=100), ("error", "vox_offset 100")),
    ("vox_offset_beyond_data", lambda: _patched(vox_offset=368), ("error", "truncated NIfTI data")),
    ("analyze_header", lambda: _patched(magic=b"\0\0\0"), ("error", "Analyze")),
    ("nifti_pair_header", lambda: _patched(magic=b"ni1"), ("error", "pair header")),
    ("nifti2", lambda: nib.Nifti2Image(np.asanyarray(CLEAN.dataobj), CLEAN.affine, CLEAN.header).to_bytes(),
     ("same", None)),
    ("nan_in_background", lambda: _with_data(_nan_in_background()), ("note", "10 NaN or infinite voxels outside")),
    ("inf_in_background", lambda: _with_data(_set((0, 0, 0), np.inf)), ("note", "outside the brain")),
    ("nan_inside_brain", lambda: _with_data(_set((20, 20, 12), np.nan)), ("error", "inside the brain")),
    ("nan_block_inside_brain", lambda: _with_data(_set((slice(18, 22), slice(18, 22), slice(10, 13)), np.nan)),
     ("error", "inside the brain")),
    ("all_nan", lambda: _with_data(np.full(SHAPE, np.nan, np.float32)), ("error", "no finite voxel")),
    ("background_offset_minus_0.01", lambda: _with_data(_offset(-0.01)), ("note", "small negative values")),
    ("phase_given_as_magnitude", lambda: _with_data(np.random.default_rng(0).uniform(-np.pi, np.pi, SHAPE)),
     ("error", "phase image")),
]


def _expect(path, expected, clean):
    kind, words = expected
    if kind == "error":
        with pytest.raises(InputError) as info:
            load_scan(path)
        message = str(info.value)
        assert message.startswith(str(path)) and "\n" not in message, message
        assert words in message, message
        return None
    scan = load_scan(path)
    if kind == "same":
        assert scan.notes == []
        np.testing.assert_array_equal(scan.magnitude, clean.magnitude)
        np.testing.assert_allclose(scan.affine, clean.affine, atol=1e-4)
    else:
        assert any(words in note for note in scan.notes), scan.notes
    return scan


@pytest.fixture(scope="module")
def clean_scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "clean.nii.gz"
    path.write_bytes(CLEAN_GZ)
    return load_scan(path)


def test_corpus_is_large_enough():
    assert len(CASES) + len(MASK_CASES) + len(FILE_CASES) >= 45


@pytest.mark.parametrize("name,build,expected", CASES, ids=[c[0] for c in CASES])
def test_corpus(tmp_path, clean_scan, capfd, name, build, expected):
    path = tmp_path / f"{name}.nii.gz"
    path.write_bytes(build())
    _expect(path, expected, clean_scan)
    assert capfd.readouterr().err == ""  # nibabel's log lines never reach stderr


def test_metres_scan_matches_the_mm_scan(tmp_path, clean_scan):
    path = tmp_path / "metres.nii.gz"
    path.write_bytes(_patched(_scaled_image(factor=1e-3).to_bytes(), xyzt_units=1))
    scan = load_scan(path)
    np.testing.assert_array_equal(scan.magnitude, clean_scan.magnitude)
    np.testing.assert_allclose(scan.affine, clean_scan.affine, atol=1e-4)


def test_nan_in_background_changes_only_those_voxels(tmp_path, clean_scan):
    path = tmp_path / "nan.nii.gz"
    path.write_bytes(_with_data(_nan_in_background()))
    scan = load_scan(path)
    assert int(scan.replaced.sum()) == len(BACKGROUND)
    np.testing.assert_array_equal(scan.magnitude[~scan.replaced], clean_scan.magnitude[~scan.replaced])
    assert np.all(scan.magnitude[scan.replaced] == 0)


def test_memory_budget_is_a_parameter(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(CLEAN_GZ)
    with pytest.raises(InputError, match=r"needs about .* GB of memory, more than the budget of 0.001 GB"):
        load_scan(path, memory_budget=1_000_000)
    assert load_scan(path, memory_budget=10_000_000).magnitude.shape == SHAPE


def test_checksum_is_of_the_bytes_read(tmp_path):
    import hashlib

    path = tmp_path / "scan.nii.gz"
    path.write_bytes(CLEAN_GZ)
    assert load_scan(path).sha256 == hashlib.sha256(CLEAN_GZ).hexdigest()


def test_clean_scan_reads_as_nibabel_does(tmp_path, clean_scan):
    for name, raw in (("a.nii.gz", CLEAN_GZ), ("b.nii", CLEAN_RAW)):
        path = tmp_path / name
        path.write_bytes(raw)
        img = nib.load(path)
        vol = read_volume(path)
        np.testing.assert_array_equal(vol.data, np.asarray(img.dataobj, dtype=np.float32))
        np.testing.assert_array_equal(vol.affine, img.affine)
        assert vol.notes == []


# --------------------------------------------------------------------------------------------
# masks (item 3)
# --------------------------------------------------------------------------------------------

def _mask_from_scan():
    return (_volume() > 0.5)


MASK_CASES = [
    ("mask_probability_map", lambda: _with_data(_mask_from_scan() * 0.7 + 0.1 * (_volume() > 0.9)), ("error", "not binary")),
    ("mask_label_map", lambda: _with_data(_mask_from_scan() * (1 + (np.indices(SHAPE)[0] > 20)), np.int16),
     ("error", "not binary")),
    ("mask_negative", lambda: _with_data(-1.0 * _mask_from_scan()), ("error", "negative values")),
    ("mask_int16_intensities", lambda: _with_data(np.round(_volume() * 1000), np.int16), ("error", "not binary")),
    ("mask_0_255", lambda: _with_data(_mask_from_scan() * 255, np.uint8), ("ok", None)),
    ("mask_uint8_0_1", lambda: _with_data(_mask_from_scan(), np.uint8), ("ok", None)),
    ("mask_float_0_1", lambda: _with_data(_mask_from_scan(), np.float32), ("ok", None)),
    ("mask_empty", lambda: _with_data(np.zeros(SHAPE), np.uint8), ("error", "empty")),
    ("mask_gzip_truncated", lambda: _gz(_with_data(_mask_from_scan(), np.uint8))[:-8], ("error", "truncated")),
    ("mask_slope_breaks_binary", lambda: _with_data(_mask_from_scan(), np.uint8, scl_slope=0.5, scl_inter=0.25),
     ("error", "not binary")),
]


@pytest.mark.parametrize("name,build,expected", MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_mask_corpus(tmp_path, clean_scan, name, build, expected):
    path = tmp_path / f"{name}.nii.gz"
    path.write_bytes(build())
    kind, words = expected
    if kind == "error":
        with pytest.raises(InputError) as info:
            load_mask(path, clean_scan)
        assert str(info.value).startswith(str(path)) and words in str(info.value), str(info.value)
    else:
        np.testing.assert_array_equal(load_mask(path, clean_scan), _mask_from_scan())


@pytest.mark.parametrize("copy", [False, True])
def test_the_scan_itself_as_mask_is_refused(tmp_path, copy):
    scan_path = tmp_path / "scan.nii.gz"
    scan_path.write_bytes(CLEAN_GZ)
    mask_path = tmp_path / "copy.nii.gz" if copy else scan_path
    mask_path.write_bytes(CLEAN_GZ)
    with pytest.raises(InputError, match="mask is the scan itself"):
        load_mask(mask_path, load_scan(scan_path))


def test_nan_voxels_inside_a_user_mask_are_refused(tmp_path):
    scan_path = tmp_path / "scan.nii.gz"
    scan_path.write_bytes(_with_data(_nan_in_background()))
    mask_path = tmp_path / "everything.nii.gz"
    mask_path.write_bytes(_with_data(np.ones(SHAPE), np.uint8))
    with pytest.raises(InputError, match="NaN or infinite voxels lie inside the brain mask"):
        load_mask(mask_path, load_scan(scan_path))


# --------------------------------------------------------------------------------------------
# files that are not regular files, and phase files
# --------------------------------------------------------------------------------------------

def _fifo(tmp_path):
    path = tmp_path / "pipe.nii.gz"
    os.mkfifo(path)
    return path


def _device(tmp_path):
    return "/dev/null"


def _broken_link(tmp_path):
    path = tmp_path / "link.nii.gz"
    path.symlink_to(tmp_path / "gone.nii.gz")
    return path


def _folder(tmp_path):
    path = tmp_path / "folder.nii.gz"
    path.mkdir()
    return path


FILE_CASES = [
    ("fifo", _fifo, "not a regular file (a FIFO"),
    ("device", _device, "not a regular file (a character device)"),
    ("broken_link", _broken_link, "broken symbolic link"),
    ("folder", _folder, "folder"),
]


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and devices are POSIX")
@pytest.mark.parametrize("name,make,words", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_not_a_regular_file(tmp_path, name, make, words):
    path = make(tmp_path)
    with pytest.raises(InputError) as info:  # a FIFO without a writer would hang an open() for reading
        load_scan(path)
    assert words in str(info.value) and str(path) in str(info.value)


def test_phase_file_goes_through_the_same_reader(tmp_path):
    phase = np.random.default_rng(0).uniform(-np.pi, np.pi, SHAPE).astype(np.float32)
    good = _gz(_with_data(phase))
    (tmp_path / "cut.nii.gz").write_bytes(good[:-8])
    (tmp_path / "complex.nii.gz").write_bytes(_gz(_with_data(phase + 0j, np.complex64)))
    with pytest.raises(InputError, match="gzip stream is truncated"):
        load_phase(tmp_path / "cut.nii.gz", SHAPE, CLEAN.affine)
    with pytest.raises(InputError, match="complex"):
        load_phase(tmp_path / "complex.nii.gz", SHAPE, CLEAN.affine)
    metres = _patched(_with_data(phase, affine=_scaled_image(factor=1e-3).affine), xyzt_units=1)
    (tmp_path / "metres.nii.gz").write_bytes(_gz(metres))
    radians, how = load_phase(tmp_path / "metres.nii.gz", SHAPE, CLEAN.affine)
    assert "converted to mm" in how and radians.shape == SHAPE


# --------------------------------------------------------------------------------------------
# property-based: mutated headers and gzip streams
# --------------------------------------------------------------------------------------------

HOSTILE_FLOATS = [0.0, -1.0, np.nan, np.inf, -np.inf, 1e-45, 1e-30, 1e30, -1e30, 3e38, 1e9, 0.5]
HEADER_MUTATIONS = st.one_of(
    st.tuples(st.just("dim"), st.integers(0, 7), st.sampled_from([-1, 0, 1, 2, 8, 23, 25, 32767, 20000])),
    st.tuples(st.just("pixdim"), st.integers(0, 4), st.sampled_from(HOSTILE_FLOATS)),
    st.tuples(st.just("datatype"), st.just(0), st.sampled_from([0, 1, 2, 4, 32, 64, 128, 256, 512, 999, 1536, 1792,
                                                                2048, 2304, -1])),
    st.tuples(st.just("vox_offset"), st.just(0), st.sampled_from([0.0, 1.0, 100.0, 348.0, 351.0, 353.0, 368.0, 1e9,
                                                                  np.nan, -1.0, 352.5])),
    st.tuples(st.just("scl_slope"), st.just(0), st.sampled_from(HOSTILE_FLOATS)),
    st.tuples(st.just("scl_inter"), st.just(0), st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, -1e6])),
    st.tuples(st.just("qform_code"), st.just(0), st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 6, 255])),
    st.tuples(st.just("sform_code"), st.just(0), st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 6, 255])),
    st.tuples(st.just("xyzt_units"), st.just(0), st.integers(0, 255)),
)
PROPERTY = settings(max_examples=40, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mutate(mutations):
    fields = {}
    for name, index, value in mutations:
        if name in ("dim", "pixdim"):
            fields.setdefault(name, {})[index] = value
        else:
            fields[name] = value
    return _patched(**fields)


def _check_property(path, clean, fields=None):
    """Never an exception other than InputError (one line naming the file); never a result that
    differs from the clean scan's without a note. A scale factor the header declares (scl_slope a
    finite non-zero number) is not damage: the intensities must then be the clean ones scaled by it
    (the detector's results do not change with the scale, 1e-10..1e10)."""
    try:
        scan = load_scan(path)
    except InputError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    if scan.notes:
        return
    expected = clean.magnitude
    slope = float(np.float32((fields or {}).get("scl_slope", np.nan)))
    if np.isfinite(slope) and slope != 0:
        inter = float(np.float32((fields or {}).get("scl_inter", np.nan)))
        expected = clean.magnitude.astype(np.float64) * slope + (inter if np.isfinite(inter) else 0.0)
        np.testing.assert_allclose(scan.magnitude, expected, rtol=1e-6, atol=0)
    else:
        np.testing.assert_array_equal(scan.magnitude, expected)
    np.testing.assert_allclose(scan.affine, clean.affine, atol=1e-4)


@PROPERTY
@given(st.lists(HEADER_MUTATIONS, min_size=1, max_size=3))
def test_property_mutated_headers(tmp_path, clean_scan, mutations):
    path = tmp_path / "mutated.nii.gz"
    path.write_bytes(_gz(_mutate(mutations)))
    _check_property(path, clean_scan, {name: value for name, _, value in mutations})


@PROPERTY
@given(st.integers(0, len(CLEAN_GZ) - 1), st.integers(1, 255), st.booleans())
def test_property_mutated_gzip(tmp_path, clean_scan, position, xor, truncate):
    data = bytearray(CLEAN_GZ)
    if truncate:
        data = data[:position]
    else:
        data[position] ^= xor
    path = tmp_path / "mutated.nii.gz"
    path.write_bytes(bytes(data))
    _check_property(path, clean_scan)


def test_zlib_checks_crc_and_length():
    """The premise of the gzip checks: zlib's gzip mode verifies the trailer."""
    stream = zlib.decompressobj(31)
    with pytest.raises(zlib.error, match="incorrect data check"):
        stream.decompress(_flip(CLEAN_GZ, -8))
