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
from ..io.sidecar import echo_times_ms as sidecar_echo_times
from ..io.sidecar import read_sidecar
from .prepare import c_order_copy


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
        How echoes were used (``"single echo"``, ``"T2*-weighted (TE-weighted, T2* 28 ms fitted) of
        12 echoes"``, ``"rss of 3 echoes"``, ``"echo 2 of 3"``).
    echoes : ndarray float32 (x, y, z, echo) or None
        The separate echoes of a multi-echo magnitude (canonical order), for the phase branch.
    echo_weights : ndarray float64 (echo,) or None
        The weights of ``magnitude`` as a weighted sum of ``echoes`` (the T2*-weighted combination;
        None for a single echo or the rss), for the noise of the combination
        (:func:`~microbleeds.stages.prepare.echo_noise_level`).
    sidecar : dict
        BIDS JSON sidecar beside the file, if any.
    notes : list of str
        What the reader repaired or assumed (units converted, NaN outside the brain set to 0, ...),
        one sentence each, for the run's summary.
    replaced : ndarray of bool or None
        Voxels (canonical order) whose NaN/Inf values were set to 0.
    header_descrip : bytes or None
        The file header's ``descrip`` field as stored (read with the file; None for arrays and images).
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
    echo_weights: np.ndarray | None = None
    notes: list = field(default_factory=list)
    replaced: np.ndarray | None = None
    header_descrip: bytes | None = None

    @property
    def name(self) -> str:
        """File name without its NIfTI suffix (``scan`` for arrays)."""
        return nifti_stem(self.path) if self.path else "scan"


#: T2* (ms) of brain tissue by field strength (T), used when the scan's own decay cannot be fitted
#: (too few echoes, no decay, a fit outside :data:`T2STAR_RANGE_MS`): grey / white matter averages
#: of Peters et al., MRI 2007 25:748-753 (1.5 T: 84 / 66 ms, 3 T: 66 / 53 ms, 7 T: 33 / 27 ms)
T2STAR_DEFAULT_MS = {1.5: 75.0, 3.0: 60.0, 7.0: 30.0}
#: field strength (T) assumed for the default T2* when the sidecar does not give one
DEFAULT_FIELD_T = 3.0
#: fitted T2* (ms) outside this range is not brain tissue's (a fit on noise or on fat / CSF): the
#: field-strength default is used instead
T2STAR_RANGE_MS = (5.0, 250.0)

ECHO_CHOICES = ("auto", "t2star", "rss", "first", "last")
"""How a multi-echo magnitude becomes one volume (or a 0-based echo index); see :func:`combine_echoes`."""


def t2star_weights(echo_times_ms, t2star_ms):
    """Weights ``w_e = TE_e exp(-TE_e / T2*)`` normalised to sum 1 (Posse et al., MRM 1999
    42:87-97): the matched filter for a change of R2* in tissue of ``T2*`` under equal noise per
    echo. A focus's contrast in the combination is about that of one echo near ``T2*/2`` at the
    SNR of all echoes (the rss's is the short echoes'); summing to 1 keeps one echo's scale."""
    te = np.asarray(echo_times_ms, dtype=np.float64)
    w = te * np.exp(-te / float(t2star_ms))
    return w / w.sum()


def estimate_t2star(data, echo_times_ms):
    """T2* (ms) of the imaged tissue: a mono-exponential fit of the median signal over echoes.

    The tissue is the voxels above the Otsu threshold of the echo-averaged image (brain, with some
    scalp and CSF on whole-head scans: the median is the brain's); ``log(median_e)`` is fitted
    against ``TE_e`` by least squares weighted by ``median_e^2`` (the noise of a log is
    ``sigma / S``), so late echoes near the noise floor count little. Returns None when the
    signal does not decay or the fit leaves :data:`T2STAR_RANGE_MS`."""
    te = np.asarray(echo_times_ms, dtype=np.float64)
    if te.size < 2 or np.ptp(te) <= 0:
        return None
    from skimage.filters import threshold_otsu

    step = max(1, int(round((np.prod(data.shape[:3]) / 2e6) ** (1 / 3))))  # about 2 M voxels suffice
    sub = np.asarray(data[::step, ::step, ::step], dtype=np.float32).reshape(-1, data.shape[3])
    mean = sub.mean(axis=1)
    if not float(mean.max()) > float(mean.min()):
        return None
    tissue = mean > threshold_otsu(mean)
    if not tissue.any():
        return None
    median = np.median(sub[tissue], axis=0).astype(np.float64)
    if np.any(median <= 0):
        return None
    w = median ** 2
    A = np.stack([np.ones_like(te), te], axis=1) * np.sqrt(w)[:, None]
    (_, slope), *_ = np.linalg.lstsq(A, np.log(median) * np.sqrt(w), rcond=None)
    if not slope < 0:
        return None
    t2s = -1.0 / float(slope)
    return t2s if T2STAR_RANGE_MS[0] <= t2s <= T2STAR_RANGE_MS[1] else None


def default_t2star(field_t=None):
    """:data:`T2STAR_DEFAULT_MS` at the nearest tabulated field strength (3 T when unknown)."""
    field_t = DEFAULT_FIELD_T if field_t is None else float(field_t)
    nearest = min(T2STAR_DEFAULT_MS, key=lambda b: abs(b - field_t))
    return T2STAR_DEFAULT_MS[nearest]


def combine_echoes(data, echo="rss", echo_times_ms=None, field_t=None, notes=None, weights_out=None):
    """Reduce a 4D (x, y, z, echo) magnitude to 3D.

    Parameters
    ----------
    echo : {"auto", "t2star", "rss", "first", "last"} or int
        ``"t2star"`` the T2*-weighted sum ``sum w_e S_e`` with :func:`t2star_weights` (T2* from
        :func:`estimate_t2star`, else :func:`default_t2star`): short echoes carry most signal and
        little T2* contrast, and this keeps the blooming of the long ones; needs ``echo_times_ms``.
        ``"rss"`` root-sum-of-squares over echoes (SNR-efficient, but dominated by the short
        echoes: it dilutes the blooming when echoes span short and long TEs); ``"first"``/``"last"``
        or a 0-based echo index picks one echo. ``"auto"``: ``"t2star"`` when the echo times are
        known (one per echo), else ``"rss"`` with a note saying so.
    echo_times_ms : sequence of float, optional
        One echo time (ms) per echo.
    field_t : float, optional
        Field strength (T), for the default T2* when it cannot be fitted.
    notes : list, optional
        Receives what was assumed (one sentence each).
    weights_out : list, optional
        Receives the weights (one per echo) when the volume is a weighted sum of the echoes.

    Returns
    -------
    volume : ndarray float32, 3D
    how : str
    """
    n = data.shape[3]
    notes = [] if notes is None else notes
    te = None if echo_times_ms is None else [float(t) for t in np.ravel(echo_times_ms)]
    if echo in ("auto", "t2star") and te is not None and len(te) != n and n > 1:
        if echo == "t2star":
            raise ValueError(f"echo='t2star': {len(te)} echo times for {n} echoes")
        notes.append(f"{len(te)} echo times for {n} magnitude echoes: echoes combined by root-sum-of-squares, "
                     "which dilutes the T2* contrast of the long echoes")
        te = None
    if echo == "t2star" and te is None:
        raise ValueError("echo='t2star' needs the echo times (echo_times_ms or the sidecar's EchoTime)")
    if echo == "auto":
        if te is None and n > 1:
            if not any("echo times for" in note for note in notes):
                notes.append(f"echo times of the {n} magnitude echoes unknown (no EchoTime list in a sidecar, no "
                             "echo_times_ms): echoes combined by root-sum-of-squares, which dilutes the T2* "
                             "contrast of the long echoes; give the echo times for a T2*-weighted combination")
            echo = "rss"
        elif n == 1:
            echo = "rss"
        else:
            echo = "t2star"
    if echo == "t2star":
        te_arr = np.asarray(te, dtype=np.float64)
        if np.any(~np.isfinite(te_arr)) or np.any(te_arr <= 0):
            raise ValueError(f"echo times must be positive (ms), got {te}")
        t2s = estimate_t2star(data, te_arr)
        if t2s is None:
            t2s = default_t2star(field_t)
            where = f"{'%g' % field_t} T" if field_t is not None else f"{DEFAULT_FIELD_T:g} T assumed"
            notes.append(f"T2* of the tissue could not be fitted from the echoes' decay: the {t2s:g} ms "
                         f"of brain at {where} weights the echoes")
            source = "default"
        else:
            source = "fitted"
        weights = t2star_weights(te_arr, t2s)
        if weights_out is not None:
            weights_out.append(weights)
        out = np.zeros(data.shape[:3], np.float32)
        for e in range(n):
            out += np.float32(weights[e]) * np.asarray(data[..., e], dtype=np.float32)
        return out, f"T2*-weighted (TE-weighted, T2* {t2s:.0f} ms {source}) of {n} echoes"
    if echo == "rss":
        return np.sqrt((data.astype(np.float32) ** 2).sum(axis=3)), f"rss of {n} echoes"
    index = {"first": 0, "last": n - 1}.get(echo, echo)
    if not isinstance(index, (int, np.integer)) or not -n <= index < n:
        raise ValueError(f"echo={echo!r}: use 'auto', 't2star', 'rss', 'first', 'last' or an index below {n}")
    index = int(index) % n
    return data[..., index], f"echo {index + 1} of {n}"


def load_scan(source, echo="auto", affine=None, memory_budget=None, echo_times_ms=None, sidecar=None) -> Scan:
    """Load a magnitude or SWI scan and validate it.

    Parameters
    ----------
    source : str, Path, nibabel image or ndarray
        A NIfTI file (3D, or 4D with echoes along the 4th axis), a nibabel image, or an array
        (then ``affine`` is required).
    echo : {"auto", "t2star", "rss", "first", "last"} or int
        How to reduce multi-echo magnitude to one volume; see :func:`combine_echoes`. The default
        ``"auto"`` weights the echoes for T2* contrast when their echo times are known, else takes
        their root-sum-of-squares (and notes it).
    affine : ndarray (4, 4), optional
        Voxel-to-world affine (mm) when ``source`` is an array.
    memory_budget : int, optional
        Bytes a run on the scan may need (default: the machine's memory); a larger scan is refused
        before its voxels are read.
    echo_times_ms : sequence of float, optional
        Echo times (ms) of a multi-echo magnitude, one per echo; default the sidecar's ``EchoTime``
        list.
    sidecar : dict, optional
        The scan's metadata when the caller read it (a BIDS dataset's inherited sidecars, the
        echoes of one file per echo); default the JSON sidecar beside the file.

    Raises
    ------
    InputError
        For a missing, unreadable, truncated, 2D/5D, constant image, NaN/Inf inside the brain,
        negative values beyond interpolation's, a singular affine or a field of view that is not a
        head; the message names the file. What was repaired is listed in ``Scan.notes``.
    """
    path = sha = descrip = None
    notes, units, scaling = [], "mm", None
    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        vol = read_volume(path, "magnitude", memory_budget, bytes_per_voxel=SCAN_BYTES_PER_VOXEL)
        data, native_affine, sha, units = vol.data, vol.affine, vol.sha256, vol.units
        notes.extend(vol.notes)
        scaling = (vol.slope, vol.inter) if vol.slope is not None else None
        descrip = bytes(np.asarray(vol.img.header["descrip"]).tobytes())
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
    extrema = _extrema(data)
    data, replaced = _replace_non_finite(data, native_affine, label, notes, extrema)
    if replaced is not None:
        extrema = _extrema(data)
    data = _clip_small_negatives(data, label, notes, extrema[0])
    if extrema[0] < 0:
        extrema = (0.0, extrema[1])
    _check_intensity_range(data, label, scaling, max(abs(extrema[0]), abs(extrema[1])))
    if extrema[1] == extrema[0]:  # finite here: NaN/Inf were refused or replaced
        check_values(data, label, "magnitude")  # its message for a constant image
    n_echoes = data.shape[3] if data.ndim == 4 else 1
    how = "single echo"
    echoes = None
    weights = []
    sidecar = read_sidecar(path) if sidecar is None else dict(sidecar)
    if data.ndim == 4:
        echoes = to_canonical(data, native_affine)[0] if n_echoes > 1 else None
        te = echo_times_ms if echo_times_ms is not None else sidecar_echo_times(sidecar) if sidecar else None
        field_t = sidecar.get("MagneticFieldStrength")
        field_t = float(field_t) if isinstance(field_t, (int, float)) and field_t > 0 else None
        data, how = combine_echoes(data, echo, te, field_t, notes, weights_out=weights)
    if n_echoes > 1:
        check_values(data, label, "combined magnitude")
    canon, canon_affine, ornt = to_canonical(data.astype(np.float32, copy=False), native_affine, c_order_copy)
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
        sidecar=sidecar,
        echoes=echoes,
        echo_weights=weights[0] if weights and echoes is not None else None,
        notes=notes,
        replaced=None if replaced is None else to_canonical(replaced, native_affine)[0],
        header_descrip=descrip,
    )


#: negative values down to this fraction of the image's 99.9th percentile are interpolation's
#: undershoot (set to 0 and noted); deeper ones mean a signed image (phase, real part): refused
NEGATIVE_TOLERANCE = 0.1


def _extrema(data):
    """(min, max) of the voxels as floats, two passes without temporaries; both are finite exactly
    when every voxel is (NaN propagates through min and max, +-Inf reaches one of them)."""
    return float(data.min()), float(data.max())


def _replace_non_finite(data, affine, label, notes, extrema=None):
    """Set NaN/Inf voxels outside the brain to 0 (noted); refuse them inside the brain.

    The brain is the automatic brain mask of the image with those voxels at 0 (the mask fills its
    holes, so NaN inside the brain is inside it). ``extrema``: :func:`_extrema` of ``data``."""
    if extrema is not None and np.isfinite(extrema).all():
        return data, None
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


def _clip_small_negatives(data, label, notes, lo=None):
    lo = float(data.min()) if lo is None else lo
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


def _check_intensity_range(data, label, scaling, peak=None):
    peak = float(np.max(np.abs(data))) if peak is None else peak
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
