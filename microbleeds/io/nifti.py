"""NIfTI files, read and written once: checks with one-line errors, closest-RAS reorientation,
reproducible gzipped output.

Reading (:func:`read_volume`) takes the file's bytes once: their SHA-256, and for ``.gz`` the whole
gzip stream decompressed with its CRC and length checked (a stream cut short, with a bad CRC or
with bytes after its end is refused), then the image is built from the decompressed bytes. The
header is checked before any voxel is allocated: dimensions, data type (complex and RGB named),
``vox_offset``, the memory the image needs against a budget (:func:`memory_budget_bytes`), the
size the header describes against the bytes present, scale factors. The geometry follows
nibabel's rules (sform if its code is set, else qform, else pixdim) with one-line errors instead of
nibabel's log lines; a zero or negative pixdim does not matter where a valid sform gives the
geometry. ``xyzt_units`` in metres or microns are converted to mm. What was repaired or assumed is
returned as notes (``NiftiVolume.notes``) for the run's summary.

Everything downstream works in closest-canonical (RAS+) voxel order, so results do not depend on
how the file stores its axes; :func:`from_canonical` takes a canonical array back to the file's own
grid for writing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.batteryrunners import BatteryRunner
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from ..errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GZIP_MAGIC = b"\x1f\x8b"

#: a field of view outside this range (mm, on any axis) is not a head: wrong voxel size or units
FOV_MIN_MM = 20.0
FOV_MAX_MM = 500.0
#: largest |intensity| the detector's float32 arithmetic (squares, Otsu's between-class variance)
#: takes without overflow, and the smallest peak it takes without underflow (measured: results are
#: identical for scale factors 1e-10 .. 1e10 of the same scan, and change beyond)
MAX_INTENSITY = 1e10
MIN_PEAK_INTENSITY = 1e-10
#: bytes per voxel a reader needs besides the stored data: the float32 image and one copy
READ_BYTES_PER_VOXEL = 8
#: bytes per voxel a detection run needs besides the stored data (measured: 21-23 bytes per voxel
#: of the file's grid for magnitude-only runs on a 320x320x160 head; rounded up)
SCAN_BYTES_PER_VOXEL = 32

_SPATIAL_UNITS = {0: ("unknown (mm assumed)", 1.0), 1: ("metres", 1000.0), 2: ("mm", 1.0), 3: ("microns", 1e-3)}
_XFORM_CODES = (0, 1, 2, 3, 4, 5)
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


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


_SHA256_OF = {}
"""SHA-256 (hex) of the files this process hashed, by :func:`_stat_key`: a file hashed for the
run's fingerprint is not hashed again when it is read (a file changed since has another key)."""
_SHA256_KEPT = 64


def _stat_key(info) -> tuple:
    """What identifies one version of a file: device, inode, size, modification and change times (ns)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


_SETTLED_NS = 2_000_000_000
"""A file's checksum is remembered only when it last changed this long (ns) before: file times
are coarse (a few ms), so a file rewritten at once keeps its times (git's "racy" rule)."""


def _remember_sha256(key, sha):
    if time.time_ns() - key[4] < _SETTLED_NS:
        return
    if len(_SHA256_OF) >= _SHA256_KEPT:
        _SHA256_OF.pop(next(iter(_SHA256_OF)))
    _SHA256_OF[key] = sha


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, as hex (remembered for this version of the file; a read of it
    started by :func:`prefetch_volume` is waited for, and hashes it)."""
    entry = _PREFETCH.get(str(path))
    if entry is not None:
        entry[1].exception()  # wait for the read (its checksum is remembered); errors are the read's to raise
    with open(path, "rb") as handle:
        key = _stat_key(os.fstat(handle.fileno()))
        if key in _SHA256_OF:
            return _SHA256_OF[key]
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        unchanged = _stat_key(os.fstat(handle.fileno())) == key
    if unchanged:
        _remember_sha256(key, digest.hexdigest())
    return digest.hexdigest()


def memory_budget_bytes() -> int:
    """Default memory budget: the machine's physical memory, or the container's limit (cgroup)
    when that is lower."""
    budget = 1 << 62
    try:
        budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < budget:
            budget = int(text)
    return int(budget)


def _gb(nbytes) -> str:
    return f"{nbytes / 1e9:.3g} GB"


@dataclass
class NiftiVolume:
    """A NIfTI file as read by :func:`read_volume`.

    Attributes
    ----------
    path : str
    img : nibabel Nifti1Image or Nifti2Image
        Its header as nibabel repairs it; ``img.affine`` is :attr:`affine`; ``img.dataobj`` reads the
        stored values from the decompressed bytes in memory.
    affine : ndarray (4, 4)
        Voxel-to-world affine in mm (the file's units converted), from the sform, qform or pixdim.
    sha256 : str
        SHA-256 of the file's bytes as stored.
    data : ndarray of float32 or None
        The image with the header's scale factors applied (None when not asked for).
    slope, inter : float or None
        The scale factors applied (None: none).
    units : str
        The file's spatial units.
    notes : list of str
        What was repaired or assumed, one sentence each, fit for a run's summary.
    """

    path: str
    img: object
    affine: np.ndarray
    sha256: str
    data: np.ndarray | None = None
    slope: float | None = None
    inter: float | None = None
    units: str = "mm"
    notes: list = field(default_factory=list)


def read_volume(path, what="image", memory_budget=None, bytes_per_voxel=READ_BYTES_PER_VOXEL,
                data=True) -> NiftiVolume:
    """Read a NIfTI-1 or NIfTI-2 file (``.nii`` or gzipped) with every check; see the module text.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file is (``"magnitude"``, ``"mask"``, ``"phase"``), for the messages.
    memory_budget : int, optional
        Bytes the image may need (default :func:`memory_budget_bytes`).
    bytes_per_voxel : int
        Memory per voxel needed besides the stored data (:data:`SCAN_BYTES_PER_VOXEL` for a scan).
    data : bool
        Read the voxels (float32, scaled) into :attr:`NiftiVolume.data`.

    Raises
    ------
    InputError
        One line naming the file and the problem.
    """
    path = str(path)
    if data and memory_budget is None:
        vol = _prefetched(path, what, bytes_per_voxel)
        if vol is not None:
            return vol
    return _read_volume(path, what, memory_budget, bytes_per_voxel, data)[0]


_PREFETCH = {}
"""Reads started ahead by :func:`prefetch_volume`: path -> ((what, bytes_per_voxel), future)."""


def prefetch_volume(path, what="image", bytes_per_voxel=READ_BYTES_PER_VOXEL) -> None:
    """Start :func:`read_volume` of ``path`` (default memory budget, with its data) in a thread.

    The caller goes on (e.g. importing the detector: the read, the checksum and the copies
    release the GIL); the next :func:`read_volume` of that path with the same ``what`` and
    ``bytes_per_voxel`` takes the volume, and :func:`file_sha256` waits for the read. A file that
    changed since is read again, as is one whose read failed (so the error is raised where it
    was, by the caller's read). :func:`discard_prefetch` drops a read nobody took."""
    from concurrent.futures import ThreadPoolExecutor

    path = str(path)
    discard_prefetch(path)
    pool = ThreadPoolExecutor(1, thread_name_prefix="microbleeds-read")
    _PREFETCH[path] = ((what, bytes_per_voxel), pool.submit(_read_volume, path, what, None, bytes_per_voxel, True))
    pool.shutdown(wait=False)


def discard_prefetch(path=None) -> None:
    """Drop the read of ``path`` (every read when None) started by :func:`prefetch_volume`."""
    for one in list(_PREFETCH) if path is None else [str(path)]:
        entry = _PREFETCH.pop(one, None)
        if entry is not None:
            entry[1].exception()  # let it end: its thread holds the bytes until then


def _prefetched(path, what, bytes_per_voxel):
    """The volume :func:`prefetch_volume` read for these arguments, if the file is unchanged."""
    entry = _PREFETCH.pop(path, None)
    if entry is None:
        return None
    if entry[1].exception() is not None or entry[0] != (what, bytes_per_voxel):
        return None
    vol, key = entry[1].result()
    try:
        same = key is not None and _stat_key(os.stat(path)) == key
    except OSError:
        same = False
    return vol if same else None


def _read_volume(path, what, memory_budget, bytes_per_voxel, data):
    """:func:`read_volume`'s work: the volume and the file's :func:`_stat_key` (None when it
    changed while it was read)."""
    budget = memory_budget_bytes() if memory_budget is None else int(memory_budget)
    raw, key = _read_file(path, what, budget)
    sha = _SHA256_OF.get(key) if key is not None else None
    if sha is None:
        sha = hashlib.sha256(raw).hexdigest()
        if key is not None:
            _remember_sha256(key, sha)
    parsed = {}

    def expected_size(head):
        parsed.update(_parse_header(head, path, what, budget, bytes_per_voxel))
        return parsed["expected"]

    if raw[:2] == GZIP_MAGIC:
        buf = _gunzip(raw, path, expected_size)
        del raw
        where = "the decompressed file"
    else:
        buf = raw
        where = "the file"
    if not parsed:
        expected_size(buf)
    _check_size(parsed, len(buf), path, where)
    vol = _build_image(buf, parsed, path, what, sha)
    if data:
        vol.data = _scaled_data(vol, path)
    return vol, key


def _read_file(path, what, budget):
    """The bytes of a regular file and its :func:`_stat_key` (None when the file changed while it
    was read); a FIFO or device is refused before it is opened for reading."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(path, f"{what} file is a broken symbolic link") from None
        raise InputError(path, f"{what} file does not exist") from None
    except OSError as exc:
        raise InputError(path, f"{what} file cannot be read ({exc.strerror or type(exc).__name__})") from None
    _check_regular(info, path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InputError(path, f"{what} file cannot be opened ({exc.strerror or type(exc).__name__})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        _check_regular(info, path, what)
        if info.st_size > budget:
            raise InputError(path, f"{what} file is {_gb(info.st_size)}, more than the memory budget of {_gb(budget)}")
        try:
            raw = handle.read()
        except OSError as exc:
            raise InputError(path, f"{what} file cannot be read ({exc.strerror or type(exc).__name__})") from None
        key = _stat_key(info)
        return raw, (key if _stat_key(os.fstat(handle.fileno())) == key else None)


def _check_regular(info, path, what):
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise InputError(path, f"{what} path is a folder, not a NIfTI file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
        raise InputError(path, f"{what} path is not a regular file ({kind})")


def _gunzip(raw, path, expected_size) -> bytes:
    """Decompress every member of a gzip stream, CRC and length checked by zlib.

    ``expected_size(head)`` gets the first bytes (the NIfTI header) and returns the size the header
    describes; decompression stops there (plus one byte to see that nothing follows), so a header
    claiming little cannot make a small file fill the memory.
    """
    peek = 544  # a NIfTI-2 header and its extension flag
    parts, size, cap = [], 0, None
    data = raw
    while True:
        stream = zlib.decompressobj(31)
        try:
            while not stream.eof:
                if not data:
                    raise InputError(path, "gzip stream is truncated: it ends before its end marker and CRC "
                                           "(file cut short?)")
                want = (peek - size) if cap is None else (cap + 1 - size)
                chunk = stream.decompress(data, max(want, 1))
                progressed = bool(chunk) or len(stream.unconsumed_tail) != len(data)
                data = stream.unconsumed_tail
                parts.append(chunk)
                size += len(chunk)
                if cap is None and size >= peek:
                    cap = expected_size(b"".join(parts))
                if cap is not None and size > cap:
                    raise InputError(path, f"gzip stream holds more than the {cap} bytes the NIfTI header "
                                           "describes (header dim or datatype wrong?)")
                if not progressed and not stream.eof:
                    raise InputError(path, "gzip stream is truncated: it ends before its end marker and CRC")
        except zlib.error as exc:
            raise InputError(path, _zlib_problem(exc)) from None
        rest = stream.unused_data
        if rest[:2] == GZIP_MAGIC:
            data = rest  # another gzip member (concatenated gzip is one valid stream)
            continue
        if rest.strip(b"\0"):
            raise InputError(path, f"{len(rest)} bytes follow the end of the gzip stream (corrupt or appended data)")
        break
    buf = b"".join(parts)
    if cap is None:
        cap = expected_size(buf)
    return buf


def _zlib_problem(exc) -> str:
    text = str(exc)
    if "incorrect data check" in text:
        return "gzip CRC check failed: the compressed data are corrupt"
    if "incorrect length check" in text:
        return "gzip length check failed: the compressed data are corrupt"
    return f"corrupt gzip stream ({_short(exc)})"


def _parse_header(head, path, what, budget, bytes_per_voxel) -> dict:
    """Header checks that need no voxel: format, dim, datatype, vox_offset, memory."""
    if len(head) < 348:
        raise InputError(path, f"not a NIfTI file: {len(head)} bytes, shorter than a NIfTI header (348 bytes)")
    sizeof = {348: 348, 540: 540}.get(int.from_bytes(head[:4], "little")) or \
        {348: 348, 540: 540}.get(int.from_bytes(head[:4], "big"))
    if sizeof is None:
        raise InputError(path, f"not a NIfTI file (header size field {int.from_bytes(head[:4], 'little')}, "
                               "not 348 or 540)")
    if sizeof == 348:
        klass, magic = nib.Nifti1Image, bytes(head[344:348])
        if magic == b"ni1\0":
            raise InputError(path, "a NIfTI pair header (.hdr, data in a separate .img file): give a single "
                                   ".nii or .nii.gz file")
        if magic != b"n+1\0":
            raise InputError(path, "not a NIfTI file (348-byte header without the NIfTI magic: an Analyze 7.5 "
                                   "header? its orientation is undefined; convert to NIfTI)")
    else:
        if len(head) < 540:
            raise InputError(path, f"NIfTI-2 header is truncated ({len(head)} of 540 bytes)")
        klass, magic = nib.Nifti2Image, bytes(head[4:8])
        if magic == b"ni2\0":
            raise InputError(path, "a NIfTI-2 pair header (data in a separate file): give a single .nii file")
        if magic != b"n+2\0":
            raise InputError(path, "not a NIfTI file (540-byte header without the NIfTI-2 magic)")
    try:
        header = klass.header_class.from_fileobj(io.BytesIO(head), check=False)
    except Exception as exc:  # nibabel raises many types for malformed headers and extensions
        raise InputError(path, f"NIfTI header cannot be read ({_short(exc)})") from None
    dim = [int(d) for d in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise InputError(path, f"header dim[0] is {ndim}: the number of dimensions must be 1 to 7")
    shape = tuple(dim[1:ndim + 1])
    if min(shape) < 1:
        raise InputError(path, f"header dim has a zero or negative size {shape}")
    code = int(header["datatype"])
    try:
        dtype = header.get_data_dtype()
    except Exception:  # unknown code
        raise InputError(path, f"header datatype {code} is not a NIfTI data type") from None
    type_name = nib.nifti1.data_type_codes.label.get(code, str(dtype))
    if dtype.kind == "c":
        raise InputError(path, f"{what} data are complex ({type_name}): a real image is needed (the magnitude "
                               "|z| as the scan, the angle as the phase)")
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise InputError(path, f"{what} data type {type_name} is not greyscale numbers (RGB colour?)")
    offset_value = float(header["vox_offset"])
    minimum = header.single_vox_offset
    if not np.isfinite(offset_value) or offset_value < minimum:
        raise InputError(path, f"header vox_offset {offset_value:g} lies inside the {sizeof}-byte header: where "
                               f"the data start is unknown (in a .nii file they start at byte {minimum} or later)")
    offset = int(offset_value)
    n_voxels = int(np.prod(shape, dtype=object))
    nbytes = n_voxels * dtype.itemsize
    need = nbytes + n_voxels * int(bytes_per_voxel)
    if need > budget:
        raise InputError(path, f"{what} of {'x'.join(map(str, shape))} voxels ({type_name}) needs about "
                               f"{_gb(need)} of memory, more than the budget of {_gb(budget)} (header dim wrong? "
                               "or raise the memory budget)")
    return {"klass": klass, "header": header, "shape": shape, "dtype": dtype, "type_name": type_name,
            "offset": offset, "nbytes": nbytes, "expected": offset + nbytes}


def _check_size(parsed, size, path, where):
    shape = "x".join(map(str, parsed["shape"]))
    described = f"{shape} {parsed['type_name']} from byte {parsed['offset']}"
    if size < parsed["expected"]:
        raise InputError(path, f"truncated NIfTI data: the header describes {parsed['expected']} bytes "
                               f"({described}), {where} holds {size}")
    if size > parsed["expected"]:
        raise InputError(path, f"{where} holds {size - parsed['expected']} bytes more than the header describes "
                               f"({described}): header dim, datatype or vox_offset wrong?")


def _build_image(buf, parsed, path, what, sha) -> NiftiVolume:
    """The image from the decompressed bytes: header repaired as nibabel does (its messages kept as
    notes or errors, never logged), geometry chosen, units converted."""
    klass, raw_header = parsed["klass"], parsed["header"]
    try:
        header = klass.header_class.from_fileobj(io.BytesIO(buf), check=False)
        header, reports = BatteryRunner(klass.header_class._get_checks()).check_fix(header.copy())
    except Exception as exc:  # nibabel raises many types for malformed headers and extensions
        raise InputError(path, f"NIfTI header cannot be read ({_short(exc)})") from None
    notes = []
    for report in reports:
        message = report.problem_msg or ""
        if not report.problem_level or "pixdim" in message or "divisible by 16" in message:
            continue  # pixdim: below; qfac and bitpix are repaired silently, as nibabel does
        if report.problem_level >= 40:
            raise InputError(path, f"NIfTI header: {message}")
        if "form_code" in message:
            notes.append(f"{what} header {message}: treated as 0 (unknown), as nibabel does")
    affine, how = _geometry(header, raw_header, path, what, notes)
    units, affine = _units(header, affine, parsed["shape"], path, what, notes)
    raw_slope, raw_inter = float(header["scl_slope"]), float(header["scl_inter"])
    if np.isinf(raw_slope):
        raise InputError(path, f"header scl_slope is {raw_slope:g}: not a usable scale factor")
    try:
        slope, inter = header.get_slope_inter()
    except Exception:  # nibabel: a valid slope with a non-finite intercept
        raise InputError(path, f"header scl_inter is {raw_inter:g}: not a usable intercept") from None
    proxy = ArrayProxy(io.BytesIO(buf), header.copy(), mmap=False)
    img = klass(proxy, None, header)
    img._affine = affine  # as nibabel's from_file_map sets it: the header passes through unmodified
    vol = NiftiVolume(path, img, affine, sha, units=units, notes=notes)
    if slope is not None and (slope != 1.0 or inter != 0.0):
        vol.slope, vol.inter = slope, inter
    return vol


def _geometry(header, raw_header, path, what, notes):
    """Voxel-to-world affine by nibabel's rules (sform if its code is set, else qform, else pixdim),
    a valid one where the rule's choice is unusable."""
    pixdim = np.asarray(raw_header["pixdim"][1:4], dtype=float)
    pixdim_ok = bool(np.all(np.isfinite(pixdim)) and np.all(pixdim > 0))
    pixdim_text = np.round(pixdim, 6).tolist()
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    sform = qform = None
    if sform_code:
        sform = _valid(header.get_sform)
    if qform_code and pixdim_ok:
        qform = _valid(header.get_qform)
    if sform is not None:
        zooms = np.sqrt((sform[:3, :3] ** 2).sum(axis=0))
        if not pixdim_ok:
            notes.append(f"{what} header pixdim {pixdim_text} has a zero, negative or non-finite voxel size; the "
                         f"sform (code {sform_code}) gives the geometry, as NIfTI readers do")
        elif not np.allclose(zooms, pixdim, rtol=1e-3, atol=1e-5):
            notes.append(f"{what} header pixdim {pixdim_text} disagrees with the sform's voxel sizes "
                         f"{np.round(zooms, 6).tolist()}; the sform (code {sform_code}) was used")
        return sform, "sform"
    if not pixdim_ok:
        raise InputError(path, f"voxel size in header pixdim is zero or negative ({pixdim_text}) and there is no "
                               "valid sform to use instead")
    if qform is not None:
        if sform_code:
            notes.append(f"{what} header sform (code {sform_code}) is not a valid matrix; the qform "
                         f"(code {qform_code}) gives the geometry")
        return qform, "qform"
    if sform_code or qform_code:
        raise InputError(path, "header sform and qform are both unusable (not finite, singular or invalid "
                               "quaternion)")
    notes.append(f"{what} header has neither sform nor qform (codes 0): orientation unknown, the voxel axes "
                 "are taken as RAS with the pixdim voxel sizes")
    return header.get_base_affine(), "pixdim"


def _valid(getter):
    try:
        affine = np.asarray(getter(), dtype=float)
    except Exception:  # nibabel: invalid quaternion, negative pixdim in a qform
        return None
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        return None
    return affine


def _fov(shape, affine):
    shape3 = (tuple(shape) + (1, 1, 1))[:3]
    return np.asarray(shape3, float) * np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))


def _plausible(fov):
    return bool(np.all(fov >= FOV_MIN_MM) and np.all(fov <= FOV_MAX_MM))


def _units(header, affine, shape, path, what, notes):
    """Spatial units to mm: metres and microns converted, unless only mm make the head plausible."""
    code = int(header["xyzt_units"]) & 7
    name, factor = _SPATIAL_UNITS.get(code, (f"code {code} (not a NIfTI unit; mm assumed)", 1.0))
    if factor == 1.0:
        return name, affine
    fov = _fov(shape, affine)
    if not _plausible(fov * factor) and _plausible(fov):
        notes.append(f"{what} header xyzt_units says {name}, but only mm give a plausible head (field of view "
                     f"{np.round(fov, 1).tolist()}); read as mm")
        return f"mm ({name} in the header)", affine
    scaled = np.diag([factor, factor, factor, 1.0]) @ affine
    notes.append(f"{what} header xyzt_units is {name}: voxel sizes and positions converted to mm (x{factor:g})")
    return name, scaled


def check_field_of_view(shape, affine, path, units="mm"):
    """Refuse a field of view outside a plausible head (:data:`FOV_MIN_MM`..:data:`FOV_MAX_MM` on each
    axis): voxel sizes in the wrong units, or a wrong header."""
    fov = _fov(shape, affine)
    if _plausible(fov):
        return
    zooms = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))
    raise InputError(path, f"field of view {np.round(fov, 3).tolist()} mm ({'x'.join(map(str, shape[:3]))} voxels "
                           f"of {np.round(zooms, 6).tolist()} mm, header units {units}) is not a plausible head "
                           f"({FOV_MIN_MM:g} to {FOV_MAX_MM:g} mm per axis): voxel size or units wrong?")


def _scaled_data(vol, path) -> np.ndarray:
    """Voxels as float32 with the header's scale factors, refused where the factors are unusable."""
    proxy = vol.img.dataobj
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            data = np.asarray(proxy, dtype=np.float32)
    except (EOFError, OSError, ValueError) as exc:
        raise InputError(path, f"truncated or corrupt NIfTI data ({_short(exc)})") from None
    except TypeError as exc:
        raise InputError(path, f"image data type cannot be read as numbers ({_short(exc)})") from None
    slope, inter = vol.slope, vol.inter
    if slope is not None:
        finite = np.isfinite(data)
        if not finite.all():
            stored = np.asarray(proxy.get_unscaled())
            overflow = ~finite & np.isfinite(stored) if stored.dtype.kind == "f" else ~finite
            if overflow.any():
                peak = float(np.max(np.abs(stored[overflow]).astype(np.float64)))
                raise InputError(path, f"header scl_slope {slope:g} and scl_inter {inter:g} take {int(overflow.sum())} "
                                       f"voxels beyond float32's range (stored values up to {peak:g}): the scale "
                                       "factors are wrong")
    return data


def open_image(path, what="image", mgh=False, memory_budget=None):
    """Open a NIfTI file (or, with ``mgh``, a FreeSurfer ``.mgz``) without converting its data.

    NIfTI files go through :func:`read_volume`'s checks. Raises InputError naming the file when it is
    missing, a folder, not a regular file, unreadable or another format.
    """
    path = str(path)
    if mgh and path.endswith((".mgz", ".mgh")):
        _read_file(path, what, memory_budget_bytes() if memory_budget is None else memory_budget)
        try:
            img = nib.load(path)
        except Exception as exc:  # nibabel raises many types for non-MGH input
            raise InputError(path, f"not a readable MGH file ({_short(exc)})") from None
        return img
    return read_volume(path, what, memory_budget, data=False).img


def read_nifti(path, what="image", memory_budget=None):
    """Open a NIfTI file and read its data as float32, with the checks of :func:`read_volume`.

    Returns
    -------
    img : nibabel image (``img.affine`` in mm)
    data : ndarray of float32 (scaled by the header's slope and intercept)
    """
    vol = read_volume(path, what, memory_budget)
    return vol.img, vol.data


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


def to_canonical(array, affine, contiguous=np.ascontiguousarray):
    """Reorder and flip a 3D array to closest RAS+; return (array, canonical affine, ornt).
    ``contiguous`` makes the C-ordered copy of the reoriented view (e.g. a tiled copy)."""
    ornt = canonical_ornt(affine)
    shape = array.shape[:3]
    out = contiguous(apply_orientation(array, ornt))
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    return out, new_affine, ornt


def native_ornt(ornt) -> np.ndarray:
    """The orientation transform from canonical (RAS+) axes back to the native ones of ``ornt``."""
    return ornt_transform(axcodes2ornt("RAS"), np.asarray(ornt))


def native_view(array, ornt) -> np.ndarray:
    """The canonical ``array`` on the native grid, as a view (flipped and transposed strides)."""
    return apply_orientation(array, native_ornt(ornt))


def from_canonical(array, ornt) -> np.ndarray:
    """Inverse of :func:`to_canonical` for an array computed on the canonical grid.

    ``ornt`` (native -> RAS) equals the native grid's own orientation, since RAS is the identity.
    """
    return np.ascontiguousarray(native_view(array, ornt))


# gzip level of the written files when the ``isal`` package (Intel ISA-L's igzip) is installed:
# nibabel's own default level (``nibabel.openers.Opener.default_compresslevel``)
ISAL_COMPRESS_LEVEL = 1


def nifti_bytes(array, affine, dtype):
    """Gzipped NIfTI-1 bytes with a fixed gzip header (no time stamp), so output is reproducible.

    Compressed by ``isal.igzip`` at :data:`ISAL_COMPRESS_LEVEL` when ``isal`` is installed (about
    40x faster than zlib at its level 9, files as small for a lesion map), else by the standard
    library's ``gzip`` at level 9. Either way the decompressed bytes are the same; the compressed
    bytes differ between the two (each is reproducible).
    """
    array = np.asarray(array)
    if array.dtype == np.bool_ and np.dtype(dtype) == np.uint8:
        array = array.view(np.uint8)  # the same bytes, in the array's own (e.g. Fortran) order
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=float))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return gzip_bytes(img.to_bytes())


def gzip_bytes(raw: bytes) -> bytes:
    """``raw`` as one gzip member with no time stamp and no file name (see :func:`nifti_bytes`)."""
    try:
        from isal import igzip
    except ImportError:
        igzip = None
    if igzip is not None:
        return igzip.compress(raw, compresslevel=ISAL_COMPRESS_LEVEL, mtime=0)
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
