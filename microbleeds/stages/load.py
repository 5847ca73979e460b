"""Load: a NIfTI magnitude (3D, or 4D echoes) and an optional user mask into a validated :class:`Scan`.

Files are read and checked by :mod:`microbleeds.io.nifti`. Here the values are checked as a
magnitude: NaN/Inf voxels outside the brain are set to 0 and noted, inside it refused; small
negative values (interpolation) set to 0 and noted, large ones refused; intensities too large or
too small for float32 arithmetic refused. A user mask must be binary. Everything downstream works on the scan
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
    MAX_INTENSITY,
    MIN_PEAK_INTENSITY,
    SCAN_BYTES_PER_VOXEL,
    check_affine,
    check_field_of_view,
    check_values,
    nifti_stem,
    read_volume,
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
    notes : list of str
        What the reader repaired or assumed (units converted, NaN outside the brain set to 0, ...),
        one sentence each, for the run's summary.
    replaced : ndarray of bool or None
        Voxels (canonical order) whose NaN/Inf values were set to 0.
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
    notes: list = field(default_factory=list)
    replaced: np.ndarray | None = None

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


def load_scan(source, echo="rss", affine=None, memory_budget=None) -> Scan:
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
    memory_budget : int, optional
        Bytes a run on the scan may need (default: the machine's memory); a larger scan is refused
        before its voxels are read.

    Raises
    ------
    InputError
        For a missing, unreadable, truncated, 2D/5D, constant image, NaN/Inf inside the brain,
        negative values beyond interpolation's, a singular affine or a field of view that is not a
        head; the message names the file. What was repaired is listed in ``Scan.notes``.
    """
    path = sha = None
    notes, units, scaling = [], "mm", None
    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        vol = read_volume(path, "magnitude", memory_budget, bytes_per_voxel=SCAN_BYTES_PER_VOXEL)
        data, native_affine, sha, units = vol.data, vol.affine, vol.sha256, vol.units
        notes.extend(vol.notes)
        scaling = (vol.slope, vol.inter) if vol.slope is not None else None
    elif isinstance(source, (nib.Nifti1Image, nib.Nifti2Image)):
        img = source
        with np.errstate(over="ignore", invalid="ignore"):
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
    check_field_of_view(data.shape[:3], native_affine, label, units)
    data, replaced = _replace_non_finite(data, native_affine, label, notes)
    data = _clip_small_negatives(data, label, notes)
    _check_intensity_range(data, label, scaling)
    check_values(data, label, "magnitude")
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
        notes=notes,
        replaced=None if replaced is None else to_canonical(replaced, native_affine)[0],
    )


#: negative values down to this fraction of the image's 99.9th percentile are interpolation's
#: undershoot (set to 0 and noted); deeper ones mean a signed image (phase, real part): refused
NEGATIVE_TOLERANCE = 0.1


def _replace_non_finite(data, affine, label, notes):
    """Set NaN/Inf voxels outside the brain to 0 (noted); refuse them inside the brain.

    The brain is the automatic brain mask of the image with those voxels at 0 (the mask fills its
    holes, so NaN inside the brain is inside it)."""
    bad = ~np.isfinite(data)
    if not bad.any():
        return data, None
    bad3 = bad.any(axis=3) if data.ndim == 4 else bad
    n_bad = int(bad3.sum())
    if n_bad == bad3.size:
        raise InputError(label, "magnitude has no finite voxel (all NaN or infinite)")
    filled = np.where(bad, np.float32(0), data).astype(np.float32)
    from .prepare import brain_mask, fill_holes  # loads numba: only for scans that need it

    volume = filled if filled.ndim == 3 else np.sqrt((filled.astype(np.float64) ** 2).sum(axis=3)).astype(np.float32)
    zooms = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))
    if float(volume.max()) > float(volume.min()):
        inside = int((bad3 & fill_holes(brain_mask(volume, zooms, bias_correction=False))).sum())
        if inside:
            raise InputError(label, f"magnitude has {inside} NaN or infinite voxels inside the brain "
                                    f"({n_bad} in all): its values there are unknown")
    notes.append(f"magnitude had {n_bad} NaN or infinite voxels outside the brain: set to 0")
    return filled, bad3


def _clip_small_negatives(data, label, notes):
    lo = float(data.min())
    if lo >= 0:
        return data
    negative = int(np.count_nonzero(data < 0))
    reference = float(np.percentile(data, 99.9))
    if reference > 0 and -lo <= NEGATIVE_TOLERANCE * reference:
        notes.append(f"magnitude had {negative} small negative values (down to {lo:.3g}, within "
                     f"{NEGATIVE_TOLERANCE:.0%} of its 99.9th percentile {reference:.3g}), as interpolation "
                     "leaves: set to 0")
        return np.maximum(data, np.float32(0))
    raise InputError(label, f"magnitude has negative values (min {lo:g}, {100.0 * negative / data.size:.3g}% "
                            "of voxels); is this a phase image?")


def _check_intensity_range(data, label, scaling):
    peak = float(np.max(np.abs(data)))
    by = (f" after the header's scl_slope {scaling[0]:g} and scl_inter {scaling[1]:g}" if scaling else "")
    if peak > MAX_INTENSITY:
        raise InputError(label, f"intensities reach {peak:.3g}{by}: beyond {MAX_INTENSITY:g}, where the "
                                "detector's float32 arithmetic overflows (scale factors wrong?)")
    if 0 < peak < MIN_PEAK_INTENSITY:
        raise InputError(label, f"intensities are at most {peak:.3g}{by}: below {MIN_PEAK_INTENSITY:g}, where "
                                "the detector's float32 arithmetic underflows (scale factors wrong?)")


def load_mask(path, scan: Scan, memory_budget=None) -> np.ndarray:
    """Load a user brain mask on the scan's grid; return it as a canonical bool array.

    The mask must be binary: 0 and one other positive value (1, True, 255, ...). A label map,
    probability map or intensity image is refused (threshold it into a 0/1 mask first: which
    labels are brain is the user's choice, not the detector's), and so is the scan itself.
    """
    vol = read_volume(path, "mask", memory_budget)
    path = vol.path
    if scan.sha256 is not None and vol.sha256 == scan.sha256:
        raise InputError(path, f"mask is the scan itself (same bytes as {scan.path}): a binary brain mask is needed")
    data = squeeze_to_3d_or_4d(vol.data, path)
    if data.ndim != 3:
        raise InputError(path, f"mask must be 3D, got shape {data.shape}")
    if data.shape != scan.native_shape or not np.allclose(vol.affine, scan.native_affine, atol=1e-3):
        raise InputError(path, f"mask grid {data.shape} does not match the scan grid {scan.native_shape} (shape and affine must agree)")
    if not np.isfinite(data).all():
        raise InputError(path, "mask has NaN or infinite voxels")
    mask = data != 0
    values = data[mask]
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        if lo < 0:
            raise InputError(path, f"mask has negative values (min {lo:g}): a binary 0/1 mask is needed")
        if lo != hi:
            raise InputError(path, f"mask is not binary: it holds values {lo:g} to {hi:g} besides 0 (a label map, "
                                   "probability map or image?); a 0/1 mask is needed (threshold it first)")
    if not mask.any():
        raise InputError(path, "mask is empty")
    canon, _, _ = to_canonical(mask, scan.native_affine)
    if scan.replaced is not None and (scan.replaced & canon).any():
        raise InputError(scan.path, f"{int((scan.replaced & canon).sum())} NaN or infinite voxels lie inside "
                                    f"the brain mask {path}")
    return canon
