"""Load: a NIfTI magnitude (3D, or 4D echoes) and an optional user mask into a validated :class:`Scan`.

Files are read and checked by :mod:`microbleeds.io.nifti`. Everything downstream works on the scan
in its closest-canonical (RAS+) voxel order, so results do not depend on how the file stores its
axes; :func:`microbleeds.io.nifti.from_canonical` takes a canonical array back to the file's grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from ..errors import InputError
from ..io.nifti import (
    check_affine,
    check_header_zooms,
    check_values,
    file_sha256,
    nifti_stem,
    read_nifti,
    squeeze_to_3d_or_4d,
    to_canonical,
)
from ..io.sidecar import read_sidecar


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
