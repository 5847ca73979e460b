"""Load: read a NIfTI magnitude (and optional mask) into a validated :class:`Scan`.

Everything downstream works on the scan in its closest-canonical (RAS+) voxel order, so results
do not depend on how the file stores its axes. :func:`from_canonical` takes a canonical array
back to the file's own grid for writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from .errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Scan:
    """A magnitude scan ready for detection, in closest-canonical (RAS+) voxel order.

    Attributes
    ----------
    magnitude : ndarray of float32, 3D
        Magnitude (or SWI) image, canonical voxel order.
    affine : ndarray (4, 4)
        Voxel-to-world (scanner RAS+, mm) affine of ``magnitude``.
    voxel_size_mm : ndarray (3,)
        Voxel edge lengths along the three canonical axes, mm.
    path : str or None
        File it came from.
    sha256 : str or None
        Checksum of the file's bytes.
    native_affine, native_shape :
        The file's own affine and 3D shape, for writing results back on its grid.
    ornt : ndarray
        Orientation transform from the file's axes to canonical axes (nibabel ``ornt``).
    echo : str
        How echoes were used (``"single"``, ``"rss of 3"``, ``"echo 2 of 3"``).
    echoes : ndarray float32 (x, y, z, echo) or None
        The separate echoes of a multi-echo magnitude (canonical order), for the phase branch.
    sidecar : dict
        BIDS JSON sidecar beside the file, if any.
    """

    magnitude: np.ndarray
    affine: np.ndarray
    voxel_size_mm: np.ndarray
    path: str | None = None
    sha256: str | None = None
    native_affine: np.ndarray | None = None
    native_shape: tuple | None = None
    ornt: np.ndarray | None = None
    echo: str = "single"
    n_echoes: int = 1
    sidecar: dict = field(default_factory=dict)
    echoes: np.ndarray | None = None

    @property
    def name(self) -> str:
        """File name without its NIfTI suffix (``scan`` for arrays)."""
        return nifti_stem(self.path) if self.path else "scan"


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


def read_sidecar(path) -> dict:
    """Read the BIDS JSON sidecar beside a NIfTI file; ``{}`` when there is none or it is unreadable
    (it only supplies field strength and echo time; a warning names the file)."""
    if path is None:
        return {}
    sidecar = Path(path).with_name(nifti_stem(path) + ".json")
    if not sidecar.is_file():
        return {}
    try:
        with open(sidecar) as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"{sidecar}: JSON sidecar ignored, it cannot be read ({exc})", stacklevel=2)
        return {}
    return data if isinstance(data, dict) else {}


def read_nifti(path, what="image"):
    """Open a NIfTI file and read its data as float32, with clear errors.

    Returns
    -------
    img : nibabel image
    data : ndarray of float32 (scaled by the header's slope and intercept)
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
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI file (read as {type(img).__name__})")
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


def combine_echoes(data, echo="rss"):
    """Reduce a 4D (x, y, z, echo) magnitude to 3D.

    Parameters
    ----------
    echo : {"rss", "first", "last"} or int
        ``"rss"`` root-sum-of-squares over echoes (SNR-efficient, keeps the blooming of late
        echoes); ``"first"``/``"last"`` or a 0-based echo index picks one echo (later echoes
        bloom more: larger, more conspicuous CMBs, less signal).

    Returns
    -------
    volume : ndarray float32, 3D
    how : str
    """
    n = data.shape[3]
    if echo == "rss":
        return np.sqrt((data.astype(np.float32) ** 2).sum(axis=3)), f"rss of {n} echoes"
    index = {"first": 0, "last": n - 1}.get(echo, echo)
    if not isinstance(index, (int, np.integer)) or not -n <= index < n:
        raise ValueError(f"echo={echo!r}: use 'rss', 'first', 'last' or an index below {n}")
    index = int(index) % n
    return data[..., index], f"echo {index + 1} of {n}"


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


def load_scan(source, echo="rss", affine=None) -> Scan:
    """Load a magnitude or SWI scan and validate it.

    Parameters
    ----------
    source : str, Path, nibabel image or ndarray
        A NIfTI file (3D, or 4D with echoes along the 4th axis), a nibabel image, or an array
        (then ``affine`` is required).
    echo : {"rss", "first", "last"} or int
        How to reduce multi-echo magnitude to one volume; see :func:`combine_echoes`.
    affine : ndarray (4, 4), optional
        Voxel-to-world affine (mm) when ``source`` is an array.

    Raises
    ------
    InputError
        For a missing, unreadable, truncated, 2D/5D, constant or non-finite image, or a singular
        affine; the message names the file.
    """
    path = sha = None
    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        img, data = read_nifti(path, "magnitude")
        check_header_zooms(img, path)
        native_affine = img.affine
        sha = file_sha256(path)
    elif isinstance(source, (nib.Nifti1Image, nib.Nifti2Image)):
        img = source
        data = np.asarray(img.dataobj, dtype=np.float32)
        native_affine = img.affine
        path = img.get_filename()
    else:
        if affine is None:
            raise ValueError("affine: an array source needs its 4x4 voxel-to-world affine (mm)")
        data = np.asarray(source, dtype=np.float32)
        native_affine = np.asarray(affine, dtype=float)
    label = path or "<array>"
    check_affine(native_affine, label)
    data = squeeze_to_3d_or_4d(data, label)
    check_values(data, label, "magnitude")
    if float(data.min()) < 0:
        raise InputError(label, f"magnitude has negative values (min {float(data.min()):g}); is this a phase image?")
    n_echoes = data.shape[3] if data.ndim == 4 else 1
    how = "single echo"
    echoes = None
    if data.ndim == 4:
        echoes = to_canonical(data, native_affine)[0] if n_echoes > 1 else None
        data, how = combine_echoes(data, echo)
    if n_echoes > 1:
        check_values(data, label, "combined magnitude")
    canon, canon_affine, ornt = to_canonical(data.astype(np.float32, copy=False), native_affine)
    return Scan(
        magnitude=canon,
        affine=canon_affine,
        voxel_size_mm=check_affine(canon_affine, label),
        path=path,
        sha256=sha,
        native_affine=np.asarray(native_affine, dtype=float),
        native_shape=tuple(data.shape),
        ornt=ornt,
        echo=how,
        n_echoes=n_echoes,
        sidecar=read_sidecar(path),
        echoes=echoes,
    )


def load_mask(path, scan: Scan) -> np.ndarray:
    """Load a user brain mask on the scan's grid; return it as a canonical bool array."""
    img, data = read_nifti(path, "mask")
    data = squeeze_to_3d_or_4d(data, path)
    if data.ndim != 3:
        raise InputError(path, f"mask must be 3D, got shape {data.shape}")
    if data.shape != scan.native_shape or not np.allclose(img.affine, scan.native_affine, atol=1e-3):
        raise InputError(path, f"mask grid {data.shape} does not match the scan grid {scan.native_shape} (shape and affine must agree)")
    if not np.isfinite(data).all():
        raise InputError(path, "mask has NaN or infinite voxels")
    mask = data > 0.5
    if not mask.any():
        raise InputError(path, "mask is empty")
    canon, _, _ = to_canonical(mask, scan.native_affine)
    return canon
