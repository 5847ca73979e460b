"""NIfTI files, read and written once: checks with one-line errors, closest-RAS reorientation,
reproducible gzipped output.

Everything downstream works in closest-canonical (RAS+) voxel order, so results do not depend on
how the file stores its axes; :func:`from_canonical` takes a canonical array back to the file's own
grid for writing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from ..errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def nifti_stem(path) -> str:
    """Return the file name of ``path`` without ``.nii`` or ``.nii.gz``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_nifti(path) -> bool:
    """True when the file name ends in .nii or .nii.gz."""
    return str(path).endswith(NIFTI_SUFFIXES)


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_image(path, what="image", mgh=False):
    """Open a NIfTI file (or, with ``mgh``, a FreeSurfer ``.mgz``) without reading its data.

    Raises InputError naming the file when it is missing, a folder, unreadable or another format.
    """
    path = str(path)
    if not os.path.exists(path):
        raise InputError(path, f"{what} file does not exist")
    if os.path.isdir(path):
        raise InputError(path, f"{what} path is a folder, not a NIfTI file")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for non-NIfTI input
        raise InputError(path, f"not a readable NIfTI file ({_short(exc)})") from None
    kinds = (nib.Nifti1Image, nib.Nifti2Image) + ((nib.MGHImage,) if mgh else ())
    if not isinstance(img, kinds):
        raise InputError(path, f"not a NIfTI file (read as {type(img).__name__})")
    return img


def read_nifti(path, what="image"):
    """Open a NIfTI file and read its data as float32, with clear errors.

    Returns
    -------
    img : nibabel image
    data : ndarray of float32 (scaled by the header's slope and intercept)
    """
    path = str(path)
    img = open_image(path, what)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise InputError(path, f"truncated or corrupt NIfTI data ({_short(exc)})") from None
    except TypeError as exc:
        raise InputError(path, f"image data type cannot be read as numbers ({_short(exc)})") from None
    return img, data


def _short(exc) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def check_affine(affine, path) -> np.ndarray:
    """Validate a voxel-to-world affine; return the voxel sizes (mm) of its three axes."""
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(path, "affine is not a finite 4x4 matrix")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(zooms < 1e-6) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, f"singular affine or zero voxel size (voxel sizes {np.round(zooms, 4).tolist()} mm)")
    return zooms


def check_header_zooms(img, path):
    """Refuse zero or negative voxel sizes in the header's pixdim, as stored in the file.

    nibabel silently repairs such headers when loading, so the raw header is read again.
    """
    try:
        with ImageOpener(path) as handle:
            raw = type(img.header).from_fileobj(handle, check=False)
    except Exception:
        raw = img.header
    zooms = np.asarray(raw["pixdim"][1:4], dtype=float)
    if np.any(~np.isfinite(zooms)) or np.any(zooms <= 0):
        raise InputError(path, f"voxel size in header pixdim is zero or negative ({zooms.tolist()})")


def squeeze_to_3d_or_4d(data, path) -> np.ndarray:
    """Drop trailing singleton axes; refuse anything that is not 3D or 4D."""
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim < 3:
        raise InputError(path, f"image is {len(shape)}D {tuple(shape)}; a 3D volume (or 4D echoes) is needed")
    if data.ndim > 4:
        raise InputError(path, f"image is {data.ndim}D {tuple(shape)}; only 3D or 4D (echoes) is supported")
    if min(data.shape[:3]) < 3:
        raise InputError(path, f"volume {tuple(data.shape[:3])} is too thin for 3D detection (needs >= 3 voxels per axis)")
    return data


def check_values(data, path, what="image"):
    """Refuse NaN/Inf values and constant (e.g. all-zero) images."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise InputError(path, f"{what} has {bad} NaN or infinite voxels")
    if float(data.max()) == float(data.min()):
        raise InputError(path, f"{what} is constant (every voxel = {float(data.min()):g}); nothing to detect")


def canonical_ornt(affine) -> np.ndarray:
    """Orientation transform taking the affine's voxel axes to closest RAS+."""
    return ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))


def to_canonical(array, affine):
    """Reorder and flip a 3D array to closest RAS+; return (array, canonical affine, ornt)."""
    ornt = canonical_ornt(affine)
    shape = array.shape[:3]
    out = np.ascontiguousarray(apply_orientation(array, ornt))
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    return out, new_affine, ornt


def from_canonical(array, ornt) -> np.ndarray:
    """Inverse of :func:`to_canonical` for an array computed on the canonical grid.

    ``ornt`` (native -> RAS) equals the native grid's own orientation, since RAS is the identity.
    """
    inverse = ornt_transform(axcodes2ornt("RAS"), np.asarray(ornt))
    return np.ascontiguousarray(apply_orientation(array, inverse))


def nifti_bytes(array, affine, dtype):
    """Gzipped NIfTI-1 bytes with a fixed gzip header (no time stamp), so output is reproducible."""
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=float))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    raw = img.to_bytes()
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as handle:
        handle.write(raw)
    return buffer.getvalue()


def voxel_sizes(voxel_size_mm, affine=None):
    """Voxel sizes (mm): the three given, else the affine's column norms, else 1 mm."""
    if voxel_size_mm is not None:
        v = np.asarray(voxel_size_mm, dtype=np.float64).ravel()[:3]
    elif affine is not None:
        v = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    else:
        v = np.ones(3)
    if v.size != 3 or np.any(v <= 0):
        raise ValueError(f"voxel sizes must be 3 positive numbers (mm), got {v}")
    return v
