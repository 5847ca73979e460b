"""Pictures for the report page: the scan's images, 24 mm crops around a candidate and the axial
minimum-intensity-projection overview, as base64 PNG.

Every picture is sampled along the scanner's RAS+ axes (mm) through the NIfTI affine, so the display
is anatomical whatever the voxel order on disk. Radiological by default: patient's right on the
image's left (axial and coronal), anterior at the top of axial images, anterior on the left of
sagittal images; neurological puts the patient's right on the right.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..contract import FILTERED_PHASE_FILE, MASK_FILE, SWI_FILE
from ..errors import InputError
from ..io.derivatives import result_path
from ..io.nifti import file_sha256, read_nifti, to_canonical

FOV_MM = 24.0          # field of view of a candidate crop, mm
CROP_PX = 64           # crop PNG size in pixels (0.375 mm pixels)
MOSAIC_PX_MM = 0.75    # overview pixel size, mm
MOSAIC_MARGIN_MM = 4.0  # overview margin around the brain, in-plane, mm
SLAB_MM = (5.0, 10.0)   # overview slab thickness: a tenth of the brain's height, within these, mm
MAX_SLABS = 12
MOSAIC_GAP_PX = 4
MAX_IMAGES = 3         # magnitude, SWI, filtered phase
IMAGE_LABELS = {"magnitude": "magnitude", "swi": "SWI", "phase_filtered": "filtered phase", "phase": "phase"}
FOLDER_IMAGES = {"swi": SWI_FILE, "phase_filtered": FILTERED_PHASE_FILE}
"""Images the detector writes into the result folder (``--write-swi`` / ``--report``)."""

VIEWS = ("axial", "coronal", "sagittal")
VIEW_LETTERS = {  # (left, right, top) orientation letters of a crop
    ("axial", True): ("R", "L", "A"), ("axial", False): ("L", "R", "A"),
    ("coronal", True): ("R", "L", "S"), ("coronal", False): ("L", "R", "S"),
    ("sagittal", True): ("A", "P", "S"), ("sagittal", False): ("A", "P", "S"),
}


# --------------------------------------------------------------------------- volumes
class Volume:
    """One image on its own grid (world mm through ``affine``), with a display window."""

    def __init__(self, name, data, affine, mask=None):
        self.name = name
        self.label = IMAGE_LABELS.get(name, name)
        if data.ndim == 4:  # multi-echo magnitude: root sum of squares for display
            data = np.sqrt(np.sum(np.square(data, dtype=np.float32), axis=3))
        self.data = np.nan_to_num(data.astype(np.float32, copy=False), copy=False)
        self.affine = np.asarray(affine, float)
        self.inv = np.linalg.inv(self.affine)
        self.is_phase = "phase" in name
        self.window = _display_window(self.data, mask, self.is_phase)

    def to_uint8(self, values):
        """Grey levels 0-255 of ``values`` through the display window (NaN black)."""
        lo, hi = self.window
        out = (values - lo) / (hi - lo) * 255.0
        out = np.where(np.isfinite(out), out, 0.0)
        return np.clip(out, 0, 255).astype(np.uint8)

    def sample(self, world):
        """Values at world points (array (3, ...), mm), trilinear, NaN outside the image."""
        shape = world.shape[1:]
        pts = world.reshape(3, -1)
        vox = self.inv[:3, :3] @ pts + self.inv[:3, 3:4]
        vals = ndimage.map_coordinates(self.data, vox, order=1, mode="constant", cval=np.nan, prefilter=False)
        return vals.reshape(shape)


def _display_window(data, mask, is_phase):
    """(low, high) grey window: 0.5-99.5 percentiles (phase: +-99.5 percentile of |phase|) inside
    the brain mask, else of the non-zero voxels; from a strided subsample, for speed."""
    stride = max(1, int(round((data.size / 2_000_000) ** (1 / 3))))
    sub = data[::stride, ::stride, ::stride]
    sample = None
    if mask is not None and mask.shape == data.shape:
        sample = sub[mask[::stride, ::stride, ::stride]]
    if sample is None or sample.size < 100:
        sample = sub[sub != 0] if np.any(sub) else sub.ravel()
    if is_phase:
        hi = float(np.percentile(np.abs(sample), 99.5)) or 1.0
        return (-hi, hi)
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    return (lo, hi if hi > lo else lo + 1.0)


def resolve_image(path_str, scan_dir: Path) -> Path | None:
    """Find an input image named in summary.json: absolute, or relative to the scan folder, the
    current folder or a folder above the results (the detector records the path as given on its
    command line); None when not found."""
    if not path_str:
        return None
    p = Path(str(path_str)).expanduser()
    tries = [p] if p.is_absolute() else [scan_dir / p, Path.cwd() / p] + [
        parent / p for parent in scan_dir.resolve().parents]
    for cand in tries:
        if cand.is_file():
            return cand
    return None


def read_mask(scan_dir: Path, warnings: list) -> np.ndarray | None:
    """The brain mask of the result folder as booleans; None (and a warning) when unreadable."""
    path = result_path(scan_dir, MASK_FILE)
    if not path.is_file():
        return None
    try:
        _img, data = read_nifti(path, "mask")
    except InputError:
        warnings.append(f"{MASK_FILE} cannot be read")
        return None
    return data > 0


def image_sources(summary, scan_dir: Path) -> list[tuple[str, str]]:
    """(name, path) of the images to show: the input, then SWI and filtered phase when the
    detector wrote them into the folder."""
    sources = [("magnitude", (summary.get("input") or {}).get("path"))]
    sources += [(name, str(result_path(scan_dir, file))) for name, file in FOLDER_IMAGES.items()
                if result_path(scan_dir, file).is_file()]
    return sources[:MAX_IMAGES]


def load_volumes(summary, scan_dir: Path, mask, warnings: list) -> list[Volume]:
    """The images to show (:func:`image_sources`) that can be found and read; a warning for each
    that cannot, and when the input changed since detection (its checksum differs)."""
    volumes = []
    for name, recorded in image_sources(summary, scan_dir):
        found = resolve_image(recorded, scan_dir)
        if found is None:
            warnings.append(f"{IMAGE_LABELS.get(name, name)} image not found: {recorded} (pictures omitted)")
            continue
        try:
            img, data = read_nifti(found, IMAGE_LABELS.get(name, name))
        except InputError as exc:  # the report says so and goes on
            warnings.append(str(exc))
            continue
        if data.ndim not in (3, 4):
            warnings.append(f"{found}: not a 3D image (shape {data.shape})")
            continue
        shown_mask = mask if mask is not None and mask.shape == data.shape[:3] else None
        volumes.append(Volume(name, data, img.affine, shown_mask))
    warnings.extend(_changed_input(summary, scan_dir))
    return volumes


def _changed_input(summary, scan_dir) -> list[str]:
    inp = summary.get("input") or {}
    path = resolve_image(inp.get("path"), scan_dir)
    if path is None or not inp.get("sha256") or file_sha256(path) == str(inp["sha256"]).lower():
        return []
    return [f"{path} has changed since detection (checksum differs from summary.json); pictures may "
            f"not match the results"]


# --------------------------------------------------------------------------- crops
def png_uri(arr_u8) -> str:
    """A 2D uint8 array as a ``data:image/png;base64`` URI."""
    buf = io.BytesIO()
    Image.fromarray(arr_u8, mode="L").save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def view_world(center, view, fov=FOV_MM, npx=CROP_PX, radiological=True):
    """World coordinates (3, npx, npx), mm, of the display pixels of one view around ``center``."""
    offs = (np.arange(npx) + 0.5) * (fov / npx) - fov / 2
    rows, cols = np.meshgrid(offs, offs, indexing="ij")
    cx, cy, cz = (float(v) for v in center)
    lr = -cols if radiological else cols     # radiological: patient's right (+x) on the left
    if view == "axial":      # anterior at the top
        return np.stack([cx + lr, cy - rows, np.full_like(rows, cz)])
    if view == "coronal":    # superior at the top
        return np.stack([cx + lr, np.full_like(rows, cy), cz - rows])
    if view == "sagittal":   # superior at the top, anterior on the left
        return np.stack([np.full_like(rows, cx), cy - cols, cz - rows])
    raise ValueError(view)


def crop_png(volume: Volume, center, view, radiological=True) -> str:
    """Base64 PNG of a 24 mm crop of ``volume`` centred on world point ``center`` (mm)."""
    vals = volume.sample(view_world(center, view, radiological=radiological))
    return png_uri(volume.to_uint8(vals))


# --------------------------------------------------------------------------- overview
def mosaic(volume: Volume, mask, lesions, radiological=True):
    """Axial minimum-intensity-projection slabs over the brain (5-10 mm thick, at most 12).

    ``mask``: brain mask on the volume's grid (booleans) or None (then: voxels above 5% of the
    display window). ``lesions``: dicts with ``lesion_id, candidate_id, x, y, z`` (world mm) and
    ``d`` (diameter, mm). Returns (png data URI, width, height, panels, markers) where panels is a
    list of (x0, y0, w, h, z_lo_mm, z_hi_mm) and markers a list of (lesion_id, candidate_id, x, y, r),
    in pixels of the PNG.
    """
    data, affine, brain = _canonical_brain(volume, mask)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    box = _brain_box(brain, zooms)
    edges = _slab_edges(box[2], zooms[2])
    (a0, a1), (b0, b1) = box[0], box[1]
    sub = np.where(brain, data, np.inf)[a0:a1, b0:b1, :]
    fx, fy = zooms[0] / MOSAIC_PX_MM, zooms[1] / MOSAIC_PX_MM
    slabs = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    images = [_slab_mip(sub[:, :, lo:hi], fx, fy, radiological) for lo, hi in slabs]
    h, w = images[0].shape
    ncols = 6 if len(slabs) > 8 else 4 if len(slabs) > 4 else len(slabs)
    nrows = int(math.ceil(len(slabs) / ncols))
    W, H = ncols * w + (ncols - 1) * MOSAIC_GAP_PX, nrows * h + (nrows - 1) * MOSAIC_GAP_PX
    canvas = np.zeros((H, W), np.uint8)
    lo, hi = _mosaic_window(images, volume.window)
    inv = np.linalg.inv(affine)
    panels, markers = [], []
    for s, ((z_lo, z_hi), image) in enumerate(zip(slabs, images)):
        r, c = divmod(s, ncols)
        x0, y0 = c * (w + MOSAIC_GAP_PX), r * (h + MOSAIC_GAP_PX)
        u8 = np.clip(np.nan_to_num((image - lo) / (hi - lo) * 255, nan=0.0), 0, 255).astype(np.uint8)
        canvas[y0:y0 + image.shape[0], x0:x0 + image.shape[1]] = u8
        zmm = [float((affine @ [0, 0, z, 1])[2]) for z in (z_lo - 0.5, z_hi - 0.5)]
        panels.append((x0, y0, w, h, zmm[0], zmm[1]))
        for les in lesions:
            a, b, cz = (inv @ np.array([les["x"], les["y"], les["z"], 1.0]))[:3]
            if z_lo - 0.5 <= cz < z_hi - 0.5:
                col = (a1 - 1 - a if radiological else a - a0) + 0.5
                row = (b1 - 1 - b) + 0.5
                rad = max(3.0, (les["d"] or 3.0) * 0.9 + 1.5) / MOSAIC_PX_MM
                markers.append((les["lesion_id"], les["candidate_id"], x0 + col * fx, y0 + row * fy, rad))
    return png_uri(canvas), W, H, panels, markers


def _canonical_brain(volume, mask):
    """The volume and its brain on the closest-RAS+ grid: (data, affine, brain booleans)."""
    data, affine, _ornt = to_canonical(volume.data, volume.affine)
    brain = None
    if mask is not None and mask.shape == volume.data.shape:
        brain = to_canonical(mask, volume.affine)[0]
        if not brain.any():
            brain = None
    if brain is None:
        brain = data > volume.window[0] + 0.05 * (volume.window[1] - volume.window[0])
        if not brain.any():
            brain = np.ones(data.shape, bool)
    return data, affine, brain


def _brain_box(brain, zooms):
    """Voxel ranges ``[lo, hi)`` of the brain: x and y with a 4 mm margin, z without."""
    idx = np.nonzero(brain)
    margin = [int(math.ceil(MOSAIC_MARGIN_MM / z)) for z in zooms]
    x_y = [(max(0, int(v.min()) - m), min(s, int(v.max()) + 1 + m))
           for v, m, s in zip(idx[:2], margin, brain.shape)]
    return x_y[0], x_y[1], (int(idx[2].min()), int(idx[2].max()) + 1)


def _slab_edges(z_range, dz):
    """Slice indices bounding the slabs over ``z_range`` (voxels of ``dz`` mm)."""
    c0, c1 = z_range
    extent = (c1 - c0) * dz
    thick = float(np.clip(extent / 10, *SLAB_MM))
    n = int(np.clip(math.ceil(extent / thick), 1, MAX_SLABS))
    n = max(1, min(n, c1 - c0))
    return np.unique(np.round(np.linspace(c0, c1, n + 1)).astype(int))


def _slab_mip(slab, fx, fy, radiological):
    """Minimum over z of one slab, as display rows (anterior up) and columns, at 0.75 mm pixels."""
    mip = slab.min(axis=2)
    mip = mip[::-1, ::-1].T if radiological else mip[:, ::-1].T
    return ndimage.zoom(np.where(np.isfinite(mip), mip, np.nan), (fy, fx), order=0)


def _mosaic_window(images, fallback):
    """Grey window of the overview: 1st-99.5th percentile of the brain's projected values."""
    finite = np.concatenate([p[np.isfinite(p)] for p in images])
    if not len(finite):
        return fallback
    step = max(1, len(finite) // 500_000)
    win = np.percentile(finite[::step], [1, 99.5])
    return (float(win[0]), float(win[1]) if win[1] > win[0] else float(win[0]) + 1)
