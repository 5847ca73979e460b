"""A scan read ahead in a thread (batch: while the detector is imported) is the scan read then."""

import os

import nibabel as nib
import numpy as np
import pytest

from microbleeds.errors import InputError
from microbleeds.io import nifti


def _write(path, data):
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 1.0, 1.0])), path)
    old = os.stat(path).st_mtime_ns - 5_000_000_000  # settled: its checksum may be remembered
    os.utime(path, ns=(old, old))


@pytest.fixture
def scan(tmp_path):
    path = tmp_path / "scan.nii"
    _write(path, np.random.default_rng(0).random((20, 18, 12)).astype(np.float32))
    yield path
    nifti.discard_prefetch()


def test_prefetched_volume_is_the_volume_read_then(scan):
    want = nifti.read_volume(scan, "magnitude", bytes_per_voxel=nifti.SCAN_BYTES_PER_VOXEL)
    nifti._SHA256_OF.clear()
    nifti.prefetch_volume(scan, "magnitude", bytes_per_voxel=nifti.SCAN_BYTES_PER_VOXEL)
    assert nifti.file_sha256(scan) == want.sha256  # waits for the read
    got = nifti.read_volume(scan, "magnitude", bytes_per_voxel=nifti.SCAN_BYTES_PER_VOXEL)
    assert str(scan) not in nifti._PREFETCH
    np.testing.assert_array_equal(got.data, want.data)
    assert got.data.dtype == want.data.dtype and got.sha256 == want.sha256
    np.testing.assert_array_equal(got.affine, want.affine)


def test_other_arguments_or_a_changed_file_read_again(scan):
    nifti.prefetch_volume(scan, "magnitude")
    first = nifti.read_volume(scan, "mask")  # another purpose: its own read (and messages)
    assert first.data.shape == (20, 18, 12)
    nifti.prefetch_volume(scan, "magnitude")
    nifti._PREFETCH[str(scan)][1].result()
    _write(scan, np.ones((20, 18, 12), np.float32))  # rewritten after the read ahead
    got = nifti.read_volume(scan, "magnitude")
    np.testing.assert_array_equal(got.data, 1.0)


def test_a_failed_read_ahead_fails_where_the_read_is(tmp_path):
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"not a nifti file" * 40)
    nifti.prefetch_volume(bad, "magnitude")
    with pytest.raises(InputError) as caught:
        nifti.read_volume(bad, "magnitude")
    with pytest.raises(InputError) as direct:
        nifti.read_volume(bad, "magnitude")
    assert str(caught.value) == str(direct.value)


def test_discard_drops_the_read(scan):
    nifti.prefetch_volume(scan, "magnitude")
    nifti.discard_prefetch(scan)
    assert not nifti._PREFETCH
