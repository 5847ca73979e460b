"""Reader's report: one self-contained HTML page per scan, with review, and a cohort page.

``report.html`` (written into the scan's output folder, see docs/contract.md) needs no network
and no server: images are base64 PNG, CSS and JavaScript are inline. Top-down it shows

1. a header with the scan, acquisition, preset, counts and burden category (``summary.json``),
2. an overview: axial minimum-intensity projections (slabs of 5-10 mm, 8-12 of them) with
   every lesion ringed and numbered (click a number to jump to its card),
3. a card per candidate, accepted lesions first, then rejected candidates (most confident
   first) with the rule that rejected them; each with 24 mm axial / coronal / sagittal crops of
   the magnitude and, when ``summary.json`` lists them under ``"images"``, SWI and filtered
   phase.

Display convention: radiological by default (patient's right on the left of axial and coronal
images, anterior at the top of axial images, anterior to the left of sagittal images); every
image is resampled along the scanner's RAS axes through the NIfTI affine, so the display is
anatomical whatever the voxel order on disk.

The reader reviews in the page (keyboard: see ``KEYS``), saves ``decisions.tsv`` (a Blob
download) and :func:`microbleeds.review.apply_review` folds it into ``lesions_reviewed.tsv``.

Public functions: :func:`build_report`, :func:`build_reports`, :func:`write_cohort`,
:func:`screenshot`. Command line::

    python -m microbleeds.html_report OUTDIR            # all scan folders + cohort page
    python -m microbleeds.html_report --screenshot report.html out.png
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import io
import json
import math
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from ..errors import InputError
from .decisions import (
    REGIONS,
    as_float,
    as_int,
    atomic_write_text,
    burden_category,
    find_scan_dirs,
    is_scan_dir,
    load_results,
    read_applied_decisions,
    review_state,
    tsv_text,
)

FOV_MM = 24.0          # field of view of a candidate crop
CROP_PX = 64           # crop PNG size (0.375 mm pixels); shown at CROP_SHOW_PX by the browser
CROP_SHOW_PX = 108
MOSAIC_PX_MM = 0.75    # overview pixel size
MAX_CARDS = 300        # more candidates than this: the least confident rejected are listed only
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]
DECISIONS_FILE = "decisions.tsv"

# key -> (decision, mimic_type); shown in the page legend
KEYS = {
    "c": ("confirmed", "", "confirm: a microbleed"),
    "r": ("rejected", "", "reject: not a microbleed"),
    "v": ("rejected", "vein", "reject: vein"),
    "a": ("rejected", "calcification", "reject: calcification"),
    "o": ("rejected", "other", "reject: other mimic"),
}
IMAGE_LABELS = {"magnitude": "magnitude", "swi": "SWI", "phase_filtered": "filtered phase",
                "phase": "phase"}
MAX_IMAGES = 3


# --------------------------------------------------------------------------- images
class Volume:
    """One image on its own grid, with a display window."""

    def __init__(self, name, path, data, affine, mask=None):
        self.name = name
        self.label = IMAGE_LABELS.get(name, name)
        self.path = path
        if data.ndim == 4:  # multi-echo magnitude: root sum of squares for display
            data = np.sqrt(np.sum(np.square(data, dtype=np.float32), axis=3))
        self.data = np.nan_to_num(data.astype(np.float32, copy=False), copy=False)
        self.affine = np.asarray(affine, float)
        self.inv = np.linalg.inv(self.affine)
        self.is_phase = "phase" in name
        # window from a strided subsample (speed): inside the brain mask, else non-zero voxels
        stride = max(1, int(round((self.data.size / 2_000_000) ** (1 / 3))))
        sub = self.data[::stride, ::stride, ::stride]
        sample = None
        if mask is not None and mask.shape == self.data.shape:
            sample = sub[mask[::stride, ::stride, ::stride]]
        if sample is None or sample.size < 100:
            sample = sub[sub != 0] if np.any(sub) else sub.ravel()
        if self.is_phase:
            hi = float(np.percentile(np.abs(sample), 99.5)) or 1.0
            self.window = (-hi, hi)
        else:
            lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
            self.window = (lo, hi if hi > lo else lo + 1.0)

    def to_uint8(self, values):
        lo, hi = self.window
        out = (values - lo) / (hi - lo) * 255.0
        out = np.where(np.isfinite(out), out, 0.0)
        return np.clip(out, 0, 255).astype(np.uint8)

    def sample(self, world):
        """Values at world points (array (3, ...)), trilinear, NaN outside the image."""
        shape = world.shape[1:]
        pts = world.reshape(3, -1)
        vox = self.inv[:3, :3] @ pts + self.inv[:3, 3:4]
        vals = ndimage.map_coordinates(self.data, vox, order=1, mode="constant", cval=np.nan,
                                       prefilter=False)
        return vals.reshape(shape)


def _resolve(path_str, scan_dir: Path) -> Path | None:
    """Find an input image named in summary.json (absolute, or relative to folder or cwd)."""
    if not path_str:
        return None
    p = Path(str(path_str)).expanduser()
    # relative: to the scan folder, the current folder, or a folder above the results (the
    # detector records the path as given on its command line)
    tries = [p] if p.is_absolute() else [scan_dir / p, Path.cwd() / p] + [
        parent / p for parent in scan_dir.resolve().parents]
    for cand in tries:
        if cand.is_file():
            return cand
    return None


def _load_image(path: Path):
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # any unreadable file: the report says so and goes on
        return None, f"{path}: cannot be read ({str(exc).splitlines()[0][:120]})"
    if data.ndim not in (3, 4):
        return None, f"{path}: not a 3D image (shape {data.shape})"
    return (img, data), None


def _png(arr_u8) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr_u8, mode="L").save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _view_world(center, view, fov=FOV_MM, npx=CROP_PX, radiological=True):
    """World coordinates (3, npx, npx) of the display pixels of one view around ``center``."""
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


VIEWS = ("axial", "coronal", "sagittal")
VIEW_LETTERS = {  # (left, right, top) orientation letters
    ("axial", True): ("R", "L", "A"), ("axial", False): ("L", "R", "A"),
    ("coronal", True): ("R", "L", "S"), ("coronal", False): ("L", "R", "S"),
    ("sagittal", True): ("A", "P", "S"), ("sagittal", False): ("A", "P", "S"),
}


def crop_png(volume: Volume, center, view, radiological=True) -> str:
    """Base64 PNG of a 24 mm crop of ``volume`` centred on world point ``center``."""
    vals = volume.sample(_view_world(center, view, radiological=radiological))
    return _png(volume.to_uint8(vals))


def mosaic(volume: Volume, mask_img, lesions, radiological=True):
    """Axial minimum-intensity-projection slabs over the brain.

    Returns (png data URI, width, height, panels, markers) where panels is a list of
    (x0, y0, w, h, z_lo_mm, z_hi_mm) and markers a list of (lesion_id, candidate_id, x, y, r).
    """
    img = nib.Nifti1Image(volume.data, volume.affine)
    canon = nib.as_closest_canonical(img)
    data = np.asarray(canon.dataobj, dtype=np.float32)
    zooms = np.sqrt((canon.affine[:3, :3] ** 2).sum(axis=0))
    mask = None
    if mask_img is not None and mask_img.shape[:3] == volume.data.shape[:3]:
        m = nib.as_closest_canonical(nib.Nifti1Image(
            (np.asarray(mask_img.dataobj) > 0).astype(np.uint8), volume.affine))
        mask = np.asarray(m.dataobj).astype(bool)
        if not mask.any():
            mask = None
    if mask is None:
        lo = volume.window[0] + 0.05 * (volume.window[1] - volume.window[0])
        mask = data > lo
        if not mask.any():
            mask = np.ones(data.shape, bool)
    idx = np.nonzero(mask)
    margin = [int(math.ceil(4 / z)) for z in zooms]
    a0, b0, c0 = (max(0, int(v.min()) - m) for v, m in zip(idx, margin))
    a1, b1, c1 = (min(s, int(v.max()) + 1 + m) for v, m, s in zip(idx, margin, data.shape))
    c0, c1 = int(idx[2].min()), int(idx[2].max()) + 1
    extent = (c1 - c0) * zooms[2]
    thick = float(np.clip(extent / 10, 5.0, 10.0))
    n = int(np.clip(math.ceil(extent / thick), 1, 12))
    n = max(1, min(n, c1 - c0))
    edges = np.unique(np.round(np.linspace(c0, c1, n + 1)).astype(int))
    n = len(edges) - 1
    sub = np.where(mask, data, np.inf)[a0:a1, b0:b1, :]
    fx, fy = zooms[0] / MOSAIC_PX_MM, zooms[1] / MOSAIC_PX_MM
    panels_img, panels = [], []
    inv = np.linalg.inv(canon.affine)
    for s in range(n):
        z_lo, z_hi = int(edges[s]), int(edges[s + 1])
        mip = sub[:, :, z_lo:z_hi].min(axis=2)
        mip = mip[::-1, ::-1].T if radiological else mip[:, ::-1].T   # rows: y down; cols: x
        mip = ndimage.zoom(np.where(np.isfinite(mip), mip, np.nan), (fy, fx), order=0)
        panels_img.append(mip)
        zmm = [float((canon.affine @ [0, 0, z, 1])[2]) for z in (z_lo - 0.5, z_hi - 0.5)]
        panels.append([s, z_lo, z_hi, zmm[0], zmm[1]])
    h, w = panels_img[0].shape
    ncols = 6 if n > 8 else 4 if n > 4 else n
    nrows = int(math.ceil(n / ncols))
    gap = 4
    W, H = ncols * w + (ncols - 1) * gap, nrows * h + (nrows - 1) * gap
    canvas = np.zeros((H, W), np.uint8)
    out_panels, markers = [], []
    finite = np.concatenate([p[np.isfinite(p)] for p in panels_img]) if panels_img else []
    if len(finite):
        step = max(1, len(finite) // 500_000)
        win = np.percentile(finite[::step], [1, 99.5])
        win = (float(win[0]), float(win[1]) if win[1] > win[0] else float(win[0]) + 1)
    else:
        win = volume.window
    for (s, z_lo, z_hi, zmm0, zmm1), p in zip(panels, panels_img):
        r, c = divmod(s, ncols)
        x0, y0 = c * (w + gap), r * (h + gap)
        lo, hi = win
        u8 = np.clip(np.nan_to_num((p - lo) / (hi - lo) * 255, nan=0.0), 0, 255).astype(np.uint8)
        canvas[y0:y0 + p.shape[0], x0:x0 + p.shape[1]] = u8
        out_panels.append((x0, y0, w, h, zmm0, zmm1))
        for les in lesions:
            world = np.array([les["x"], les["y"], les["z"], 1.0])
            a, b, cz = (inv @ world)[:3]
            if not (z_lo - 0.5 <= cz < z_hi - 0.5):
                continue
            col = (a1 - 1 - a if radiological else a - a0) + 0.5
            row = (b1 - 1 - b) + 0.5
            rad = max(3.0, (les["d"] or 3.0) * 0.9 + 1.5) / MOSAIC_PX_MM
            markers.append((les["lesion_id"], les["candidate_id"], x0 + col * fx, y0 + row * fy,
                            rad))
    return _png(canvas), W, H, out_panels, markers


# --------------------------------------------------------------------------- page
def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value, digits=2, unit="") -> str:
    v = as_float(value)
    if not math.isfinite(v):
        return "n/a" if value in (None, "", "n/a", "nan") else _e(value)
    text = f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{v:.0f}"
    return text + unit


def build_report(scan_dir, out=None, radiological=True, max_cards=MAX_CARDS) -> Path:
    """Write ``report.html`` for one scan output folder and return its path.

    Parameters
    ----------
    scan_dir : path
        A scan's output folder (``summary.json``, ``candidates.tsv``, ``lesions.tsv``,
        ``mask.nii.gz``).
    out : path, optional
        Where to write (default ``scan_dir/report.html``).
    radiological : bool
        Radiological display (patient's right on the image's left); False for neurological.
    max_cards : int
        Cap on candidate cards (accepted lesions always get one; the least confident rejected
        candidates beyond the cap are listed in a table without pictures).
    """
    scan_dir = Path(scan_dir)
    res = load_results(scan_dir)
    summary = res["summary"]
    inp = summary.get("input") or {}
    warnings: list[str] = []

    mask_img = None
    if (scan_dir / "mask.nii.gz").is_file():
        try:
            mask_img = nib.load(str(scan_dir / "mask.nii.gz"))
        except Exception:
            warnings.append("mask.nii.gz cannot be read")
    volumes: list[Volume] = []
    main_path = _resolve(inp.get("path"), scan_dir)
    mask_arr = None
    sources = [("magnitude", inp.get("path"))]
    extra = dict(summary.get("images") or {})
    for name in ("swi", "phase_filtered"):  # images the detector wrote into the folder
        if name not in extra and (scan_dir / f"{name}.nii.gz").is_file():
            extra[name] = str(scan_dir / f"{name}.nii.gz")
    for name, path in extra.items():
        if path and name != "magnitude":
            sources.append((name, path))
    for name, path in sources[:MAX_IMAGES]:
        found = _resolve(path, scan_dir)
        if found is None:
            warnings.append(f"{IMAGE_LABELS.get(name, name)} image not found: {path} "
                            f"(pictures omitted)")
            continue
        loaded, err = _load_image(found)
        if err:
            warnings.append(err)
            continue
        img, data = loaded
        if mask_arr is None and mask_img is not None and mask_img.shape[:3] == data.shape[:3]:
            mask_arr = np.asarray(mask_img.dataobj) > 0
        volumes.append(Volume(name, found, data, img.affine,
                              mask_arr if mask_arr is not None and mask_arr.shape == data.shape[:3]
                              else None))
    if main_path is not None and inp.get("sha256"):
        try:
            from .load import file_sha256  # the checksum the detector recorded
        except ImportError:  # pragma: no cover - load.py is the core's
            file_sha256 = None
        if file_sha256 is not None and file_sha256(main_path) != str(inp["sha256"]).lower():
            warnings.append(f"{main_path} has changed since detection (checksum differs from "
                            f"summary.json); pictures may not match the results")

    candidates = sorted(res["candidates"], key=lambda c: as_int(c.get("candidate_id")))
    lesions = {as_int(r.get("lesion_id")): r for r in res["lesions"]}
    cards = []
    for cand in candidates:
        lid = as_int(cand.get("lesion_id"))
        row = dict(cand)
        if lid and lid in lesions:
            row.update({k: v for k, v in lesions[lid].items() if v != ""})
        row["_accepted"] = cand.get("status", "") == "accepted" or lid > 0
        cards.append(row)
    accepted = sorted([c for c in cards if c["_accepted"]],
                      key=lambda c: as_int(c.get("lesion_id")))
    rejected = sorted([c for c in cards if not c["_accepted"]],
                      key=lambda c: (-as_float(c.get("confidence"), -1), as_int(c["candidate_id"])))
    n_room = max(0, max_cards - len(accepted))
    shown = accepted + rejected[:n_room]
    listed_only = rejected[n_room:]

    marks = [{"lesion_id": as_int(c.get("lesion_id")), "candidate_id": as_int(c["candidate_id"]),
              "x": as_float(c.get("x_mm")), "y": as_float(c.get("y_mm")),
              "z": as_float(c.get("z_mm")), "d": as_float(c.get("diameter_mm"), 3.0)}
             for c in accepted]
    overview = None
    if volumes:
        try:
            overview = mosaic(volumes[0], mask_img, marks, radiological)
        except Exception as exc:  # overview is a convenience; never lose the report over it
            warnings.append(f"overview could not be drawn ({exc})")

    prior = read_applied_decisions(scan_dir)
    state = review_state(scan_dir)
    page = _page(scan_dir, summary, res, volumes, overview, shown, listed_only, warnings,
                 prior, state, radiological)
    out = Path(out) if out is not None else scan_dir / "report.html"
    return atomic_write_text(out, page)


def build_reports(root, radiological=True) -> list[Path]:
    """Build ``report.html`` in every scan folder under ``root``; return their paths."""
    root = Path(root)
    dirs = [root] if is_scan_dir(root) else find_scan_dirs(root)
    if not dirs:
        raise InputError(root, "no scan results folders (summary.json + candidates.tsv) found")
    return [build_report(d, radiological=radiological) for d in dirs]


def _stem(summary, scan_dir):
    path = (summary.get("input") or {}).get("path") or scan_dir.name
    name = Path(str(path)).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _header(summary, res, volumes, warnings, state, scan_dir):
    inp = summary.get("input") or {}
    acq = summary.get("acquisition") or {}
    pipe = summary.get("pipeline") or {}
    sw = summary.get("software") or {}
    counts = summary.get("counts") or {}
    vox = inp.get("voxel_size_mm") or []
    vox_text = " × ".join(_fmt(v, 2) for v in vox) + " mm" if vox else "n/a"
    by_region = counts.get("by_region") or {}
    cands = res["candidates"]
    n_acc = sum(1 for c in cands if c.get("status") == "accepted" or as_int(c.get("lesion_id")))
    reasons: dict[str, int] = {}
    for c in cands:
        if not (c.get("status") == "accepted" or as_int(c.get("lesion_id"))):
            reasons[c.get("reason") or "?"] = reasons.get(c.get("reason") or "?", 0) + 1
    bc = summary.get("burden_category", burden_category(as_int(counts.get("total"))))
    rows = [
        ("Input", f"<code>{_e(inp.get('path'))}</code>"),
        ("SHA-256", f"<code title='{_e(inp.get('sha256'))}'>{_e(str(inp.get('sha256'))[:16])}…</code>"),
        ("Sequence", _e(acq.get("sequence", "n/a"))),
        ("Field strength", _fmt(acq.get("field_strength_t"), 1, " T")),
        ("TE", _fmt(acq.get("echo_time_ms"), 1, " ms")),
        ("Voxel size", vox_text),
        ("Matrix", " × ".join(str(s) for s in inp.get("shape") or []) or "n/a"),
        ("Preset", f"{_e(pipe.get('name', 'n/a'))} <span class=dim>v{_e(pipe.get('version', '?'))}</span>"),
        ("Software", f"{_e(sw.get('name', 'microbleeds'))} {_e(sw.get('version', ''))}"),
        ("Images", ", ".join(v.label for v in volumes) or "none found"),
    ]
    info = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    region_cells = "".join(
        f"<div class=stat><b>{_e(by_region.get(r, 0))}</b><span>{r}</span></div>"
        for r in REGIONS if not (r == "unknown" and not by_region.get(r))
    ) if isinstance(counts.get("by_region"), dict) else ""

    reason_text = ", ".join(f"{_e(k)} {v}" for k, v in sorted(reasons.items(), key=lambda t: -t[1]))
    review_html = ""
    if state:
        rv = state.get("review") or {}
        rc = state.get("counts") or {}
        review_html = (
            f"<div class='reviewed'><b>Reviewed</b> by {_e(', '.join(rv.get('reviewers') or []))}"
            f" ({_e(rv.get('last_decision') or '')}): <b>{_e(rc.get('total'))}</b> confirmed "
            f"(burden category <b>{_e(state.get('burden_category'))}</b>; "
            f"{_e(rv.get('confirmed', 0))} confirmed, {_e(rv.get('rejected', 0))} rejected, "
            f"{_e(rv.get('added', 0))} added by the reader"
            + ("" if rv.get("complete") else
               f", <b class=warn>{_e(rv.get('unreviewed_lesions'))} lesion(s) not reviewed</b>")
            + ") — <code>summary_reviewed.json</code></div>")
    notes = list(summary.get("notes") or [])
    note_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    warn_html = "".join(f"<li class=warn>{_e(w)}</li>" for w in warnings)
    return f"""
<header class=top>
 <div class=title><h1>Cerebral microbleeds — {_e(_stem(summary, scan_dir))}</h1>
 <div class=dim>Automatic result: the algorithm proposes, a reader confirms. Counts below are
 <b>not reviewed</b> until a reader's decisions are applied.</div></div>
 <div class=headgrid>
  <table class=info>{info}</table>
  <div>
   <div class=stats>
    <div class='stat big'><b>{_e(counts.get('total', 'n/a'))}</b><span>lesions</span></div>
    <div class=stat><b>{_e(counts.get('definite', 'n/a'))}</b><span>definite</span></div>
    <div class=stat><b>{_e(counts.get('possible', 'n/a'))}</b><span>possible</span></div>
    <div class='stat big burden'><b>{_e(bc)}</b><span>burden category</span></div>
   </div>
   <div class=stats>{region_cells}</div>
   <div class=dim>{len(cands)} candidates: {n_acc} accepted, {len(cands) - n_acc} rejected
   {('(' + reason_text + ')') if reason_text else ''}</div>
   {review_html}
   <ul class=notes>{warn_html}{note_html}</ul>
  </div>
 </div>
</header>"""


def _overview_html(overview, radiological):
    if overview is None:
        return "<section class=overview><h2>Overview</h2><p class=warn>No image to show.</p></section>"
    uri, W, H, panels, markers = overview
    svg = [f"<svg class=ovsvg viewBox='0 0 {W} {H}' preserveAspectRatio='xMidYMid meet'>"]
    left, right = ("R", "L") if radiological else ("L", "R")
    for x0, y0, w, h, z0, z1 in panels:
        svg.append(f"<text class=zl x='{x0 + 4}' y='{y0 + h - 5}'>z {z0:.0f}…{z1:.0f} mm</text>")
        svg.append(f"<text class=ol x='{x0 + 3}' y='{y0 + h / 2}'>{left}</text>"
                   f"<text class=ol x='{x0 + w - 12}' y='{y0 + h / 2}'>{right}</text>"
                   f"<text class=ol x='{x0 + w / 2 - 4}' y='{y0 + 14}'>A</text>")
    for lid, cid, x, y, r in markers:
        svg.append(f"<a href='#c{cid}' data-cid='{cid}' class=mk><circle cx='{x:.1f}' cy='{y:.1f}' "
                   f"r='{r:.1f}'/><text x='{x + r + 1:.1f}' y='{y - r + 2:.1f}'>{lid}</text></a>")
    svg.append("</svg>")
    conv = ("radiological convention: patient's right on the left" if radiological else
            "neurological convention: patient's right on the right")
    return f"""
<section class=overview><h2>Overview <span class=dim>— axial minimum-intensity projections,
 {len(panels)} slabs of ~{abs(panels[0][5] - panels[0][4]):.0f} mm, inferior → superior;
 {conv}; lesions ringed and numbered (click to open)</span></h2>
 <div class=ovwrap style='aspect-ratio:{W}/{H}'><img class=ovimg alt='overview' src='{uri}'>
 {''.join(svg)}</div></section>"""


def _card(c, volumes, radiological):
    cid = as_int(c["candidate_id"])
    lid = as_int(c.get("lesion_id"))
    acc = c["_accepted"]
    center = (as_float(c.get("x_mm")), as_float(c.get("y_mm")), as_float(c.get("z_mm")))
    ok = all(math.isfinite(v) for v in center)
    diam = as_float(c.get("diameter_mm"))
    ring = min(92.0, max(2.5, (diam if math.isfinite(diam) else 3.0) * 1.4 + 1.5) / FOV_MM * 100)
    grid = []
    if volumes and ok:
        grid.append("<table class=views><tr><td></td>"
                    + "".join(f"<th>{v}</th>" for v in VIEWS) + "</tr>")
        for vol in volumes:
            cells = []
            for view in VIEWS:
                le, ri, to = VIEW_LETTERS[(view, radiological)]
                cells.append(
                    f"<td><div class=v><img alt='{vol.label} {view}' width={CROP_SHOW_PX} "
                    f"height={CROP_SHOW_PX} src='{crop_png(vol, center, view, radiological)}'>"
                    f"<i class=ring style='width:{ring:.1f}%;height:{ring:.1f}%'></i>"
                    f"<u class=l>{le}</u><u class=r>{ri}</u><u class=t>{to}</u></div></td>")
            grid.append(f"<tr><th class=rowh>{_e(vol.label)}</th>{''.join(cells)}</tr>")
        grid.append("</table>")
    else:
        grid.append("<p class=dim>no pictures (image not available)</p>")
    if acc:
        title = f"Lesion {lid}"
        status = "<span class='badge acc'>accepted</span>"
    else:
        title = "Rejected candidate"
        status = f"<span class='badge rej'>rejected: {_e(c.get('reason') or '?')}</span>"
    region = c.get("region") or "unknown"
    extra = [x for x in (c.get("lobe"), c.get("hemisphere")) if x and x != "n/a"]
    facts = [
        ("diameter", _fmt(c.get("diameter_mm"), 1, " mm")),
        ("confidence", _fmt(c.get("confidence"), 2)),
        ("certainty", _e(c.get("certainty") or "n/a")),
        ("region", _e(region) + (f" <span class=dim>({_e(', '.join(extra))})</span>" if extra else "")),
        ("contrast", _fmt(c.get("contrast"), 2)),
        ("position", f"{_fmt(center[0], 1)}, {_fmt(center[1], 1)}, {_fmt(center[2], 1)} mm RAS"),
    ]
    if not acc:
        facts.insert(0, ("rejected by", f"<b>{_e(c.get('reason') or '?')}</b>"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    btns = "".join(f"<button type=button data-key='{k}' title='{_e(t)} (key {k})'>"
                   f"<kbd>{k}</kbd> {_e(t.split(': ')[1])}</button>" for k, (_d, _m, t) in KEYS.items())
    return f"""
<section class='card {"acc" if acc else "rej"}' id='c{cid}' data-cid='{cid}'
 data-status='{"accepted" if acc else "rejected"}' tabindex=-1>
 <div class=ch><span class=cid>#{cid}</span> <b>{title}</b> {status}
  <span class=dec data-role=dec>undecided</span></div>
 {''.join(grid)}
 <dl>{dl}</dl>
 <div class=btns>{btns}<button type=button data-key='u' title='clear decision (key u)'><kbd>u</kbd> clear</button></div>
</section>"""


def _page(scan_dir, summary, res, volumes, overview, shown, listed_only, warnings, prior,
          state, radiological):
    inp = summary.get("input") or {}
    data = {
        "sha256": str(inp.get("sha256") or ""),
        "input_path": str(inp.get("path") or ""),
        "scan": _stem(summary, scan_dir),
        "decisions_file": DECISIONS_FILE,
        "prior": prior,
        "keys": {k: [d, m] for k, (d, m, _t) in KEYS.items()},
        "candidates": [{"id": as_int(c.get("candidate_id")), "lesion_id": as_int(c.get("lesion_id")),
                        "status": c.get("status", ""), "x": c.get("x_mm", ""),
                        "y": c.get("y_mm", ""), "z": c.get("z_mm", "")}
                       for c in sorted(res["candidates"], key=lambda c: as_int(c.get("candidate_id")))],
    }
    data_json = json.dumps(data).replace("</", "<\\/")
    n_acc = sum(c["_accepted"] for c in shown)
    acc_cards = "".join(_card(c, volumes, radiological) for c in shown if c["_accepted"])
    rej_cards = "".join(_card(c, volumes, radiological) for c in shown if not c["_accepted"])
    listed = ""
    if listed_only:
        trs = "".join(f"<tr><td>{as_int(c['candidate_id'])}</td><td>{_e(c.get('reason'))}</td>"
                      f"<td>{_fmt(c.get('confidence'), 2)}</td><td>{_fmt(c.get('diameter_mm'), 1)}</td></tr>"
                      for c in listed_only)
        listed = (f"<details class=listed><summary>{len(listed_only)} more rejected candidates "
                  f"(least confident; no pictures, not reviewable here)</summary><table>"
                  f"<tr><th>candidate</th><th>reason</th><th>confidence</th><th>diameter mm</th>"
                  f"</tr>{trs}</table></details>")
    legend = "".join(f"<span><kbd>{k}</kbd> {_e(t)}</span>" for k, (_d, _m, t) in KEYS.items())
    conv = "radiological (R on the left)" if radiological else "neurological (R on the right)"
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content='width=device-width, initial-scale=1'>
<title>Microbleeds — {_e(data['scan'])}</title>
<style>{CSS}</style></head>
<body>
{_header(summary, res, volumes, warnings, state, scan_dir)}
{_overview_html(overview, radiological)}
<div class=toolbar id=toolbar>
 <label>Reviewer <input id=reviewer type=text placeholder='your name' autocomplete=off></label>
 <span id=progress class=prog></span>
 <label>Show <select id=filter><option value=all>all</option><option value=accepted>accepted</option>
  <option value=rejected>rejected</option><option value=undecided>undecided</option></select></label>
 <label><input id=advance type=checkbox checked> advance after a decision</label>
 <button type=button id=save><kbd>s</kbd> save {DECISIONS_FILE}</button>
 <a id=dl class=dim download='{DECISIONS_FILE}' href='#'>{DECISIONS_FILE}</a>
 <label class=dim title='load decisions saved earlier (same scan only)'>load <input id=load
  type=file accept='.tsv,.txt,text/tab-separated-values' style='width:90px'></label>
 <span id=msg class=msg></span>
 <div class=legend id=legend>{legend}
  <span><kbd>u</kbd> clear</span><span><kbd>j</kbd>/<kbd>→</kbd> next</span>
  <span><kbd>k</kbd>/<kbd>←</kbd> previous</span><span><kbd>n</kbd> next undecided</span>
  <span><kbd>m</kbd> rings on/off</span><span><kbd>s</kbd> save</span>
  <span><kbd>?</kbd> legend</span></div>
</div>
<main>
<h2>Accepted lesions <span class=dim>({n_acc}) — crops 24 mm, {conv}; sagittal: anterior on the left;
 ring = candidate</span></h2>
<div class=cards>{acc_cards or '<p class=dim>none</p>'}</div>
<h2>Rejected candidates <span class=dim>({len(shown) - n_acc} shown, most confident first) —
 the rule that rejected each is named</span></h2>
<div class=cards>{rej_cards or '<p class=dim>none</p>'}</div>
{listed}
</main>
<footer class=dim>Generated {generated} from <code>{_e(scan_dir)}</code>. Decisions are kept in this
browser (localStorage, keyed by the input's checksum) and saved as <code>{DECISIONS_FILE}</code>;
apply them with <code>microbleeds review apply {DECISIONS_FILE} OUTDIR</code>.</footer>
<script type=application/json id=mb-data>{data_json}</script>
<script>{JS}</script>
</body></html>
"""


CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;
background:#f4f5f7;color:#1d2330}h1{font-size:20px;margin:0 0 2px}h2{font-size:16px;margin:18px 0 8px}
code{font-size:12px}.dim{color:#667;font-weight:normal;font-size:13px}.warn{color:#b00020}
header.top{background:#fff;padding:12px 18px;border-bottom:1px solid #dde}
.headgrid{display:flex;gap:24px;flex-wrap:wrap;margin-top:8px}
table.info{border-collapse:collapse;font-size:13px}table.info th{text-align:left;color:#556;
font-weight:600;padding:1px 10px 1px 0;white-space:nowrap}table.info td{padding:1px 0}
.stats{display:flex;gap:8px;margin:0 0 8px;flex-wrap:wrap}.stat{background:#eef1f6;border-radius:6px;
padding:4px 10px;min-width:70px;text-align:center}.stat b{display:block;font-size:20px}
.stat span{font-size:12px;color:#556}.stat.big b{font-size:28px}.stat.burden{background:#fff1d6}
.reviewed{background:#e3f6e8;border-radius:6px;padding:4px 10px;margin:6px 0}
ul.notes{margin:4px 0;padding-left:18px;font-size:13px}
main,section.overview{padding:0 18px}footer{padding:12px 18px}
.ovwrap{position:relative;width:100%;max-width:1180px;background:#000;border-radius:4px}
.ovimg{position:absolute;inset:0;width:100%;height:100%;image-rendering:auto}
.ovsvg{position:absolute;inset:0;width:100%;height:100%}
.ovsvg circle{fill:none;stroke:#ffd400;stroke-width:1.2}.ovsvg .mk text{fill:#ffd400;font:bold 11px sans-serif}
.ovsvg .mk:hover circle{stroke:#0ff}.ovsvg .zl{fill:#9ab;font:9px sans-serif}
.ovsvg .ol{fill:#6cf;font:bold 10px sans-serif}
body.nomark .ovsvg .mk,body.nomark .ring{display:none}
.toolbar{position:sticky;top:0;z-index:5;background:#1d2330;color:#eee;padding:6px 18px;
display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;font-size:13px}
.toolbar input[type=text]{width:150px}.toolbar .dim{color:#aab}.toolbar a{color:#9cf}
.prog{font-weight:600}.msg{color:#ffd400}.legend{flex-basis:100%;display:flex;flex-wrap:wrap;gap:4px 14px;
color:#ccd;font-size:12px}.legend.hide{display:none}
kbd{display:inline-block;border:1px solid #99a;border-radius:3px;padding:0 4px;font:11px monospace;
background:#fafafa;color:#222}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:2px solid #dde;border-radius:8px;padding:6px 8px;width:372px;outline:none}
.card.acc{border-left:6px solid #2a7de1}.card.rej{border-left:6px solid #999}
.card.current{box-shadow:0 0 0 3px #ffb000}
.card.d-confirmed{background:#e6f7ea}.card.d-rejected{background:#fbe9e9}
.ch{display:flex;gap:6px;align-items:baseline;flex-wrap:wrap}.cid{color:#667;font-size:12px}
.badge{font-size:11px;border-radius:8px;padding:0 6px}.badge.acc{background:#dbe9fb;color:#134}
.badge.rej{background:#eee;color:#444}.dec{margin-left:auto;font-size:12px;font-weight:700;color:#667}
.d-confirmed .dec{color:#146c2e}.d-rejected .dec{color:#a01818}
table.views{border-collapse:collapse;margin:4px 0}table.views th{font-size:10px;color:#667;
font-weight:600}table.views td{padding:1px}th.rowh{writing-mode:vertical-rl;transform:rotate(180deg);
max-width:16px}
.v{position:relative;width:108px;height:108px;background:#000;overflow:hidden}.v img{display:block;width:108px;
height:108px}.ring{position:absolute;left:50%;top:50%;transform:translate(-50%,-50%);
border:1.5px dashed #ffd400;border-radius:50%;pointer-events:none}
.v u{position:absolute;text-decoration:none;color:#6cf;font:bold 9px sans-serif}
.v u.l{left:2px;top:46%}.v u.r{right:2px;top:46%}.v u.t{left:48%;top:1px}
dl{display:grid;grid-template-columns:auto 1fr;gap:0 8px;margin:4px 0;font-size:12px}
dt{color:#667}dd{margin:0}
.btns{display:flex;flex-wrap:wrap;gap:3px}.btns button{font-size:11px;padding:1px 4px;cursor:pointer}
details.listed{margin:12px 0}details.listed table{font-size:12px;border-collapse:collapse}
details.listed td,details.listed th{padding:1px 8px}
"""

JS = r"""
(function () {
'use strict';
const D = JSON.parse(document.getElementById('mb-data').textContent);
const STORE = 'microbleeds-review:' + D.sha256;
const cards = Array.from(document.querySelectorAll('.card'));
const byId = {};
D.candidates.forEach(function (c) { byId[String(c.id)] = c; });
const $ = function (id) { return document.getElementById(id); };
const reviewer = $('reviewer'), filter = $('filter'), advance = $('advance');
let state = load();
let cur = -1;

function load() {
  let s = null;
  try { s = JSON.parse(localStorage.getItem(STORE) || 'null'); } catch (e) { s = null; }
  if (!s || typeof s !== 'object' || typeof s.decisions !== 'object' || !s.decisions) {
    s = {reviewer: '', decisions: {}};
  }
  if (Object.keys(s.decisions).length === 0 && D.prior && Object.keys(D.prior).length) {
    s.decisions = JSON.parse(JSON.stringify(D.prior));
    if (!s.reviewer) {
      const names = Object.values(D.prior).map(function (d) { return d.reviewer; }).filter(Boolean);
      s.reviewer = names[0] || '';
    }
  }
  return s;
}
function persist() {
  try { localStorage.setItem(STORE, JSON.stringify(state)); } catch (e) { /* private mode */ }
}
function msg(text) { $('msg').textContent = text; }
function render(card) {
  const d = state.decisions[card.dataset.cid];
  card.classList.remove('d-confirmed', 'd-rejected');
  const el = card.querySelector('[data-role=dec]');
  if (!d) { el.textContent = 'undecided'; return; }
  card.classList.add('d-' + d.decision);
  el.textContent = d.decision + (d.mimic_type ? ' (' + d.mimic_type + ')' : '');
}
function burden(n) { return n <= 0 ? '0' : n === 1 ? '1' : n <= 4 ? '2-4' : '>=5'; }
function progress() {
  const ids = Object.keys(byId);
  let decided = 0, confirmed = 0, accUndecided = 0;
  ids.forEach(function (id) {
    const d = state.decisions[id];
    if (d) { decided++; if (d.decision === 'confirmed') confirmed++; }
    else if (byId[id].lesion_id > 0) accUndecided++;
  });
  $('progress').textContent = decided + '/' + ids.length + ' decided · ' + confirmed +
    ' confirmed (burden ' + burden(confirmed) + ')' +
    (accUndecided ? ' · ' + accUndecided + ' accepted lesion(s) undecided' : '');
}
function visible() { return cards.filter(function (c) { return c.style.display !== 'none'; }); }
function focusCard(card, scroll) {
  if (!card) return;
  if (cur >= 0 && cards[cur]) cards[cur].classList.remove('current');
  cur = cards.indexOf(card);
  card.classList.add('current');
  if (scroll !== false) card.scrollIntoView({block: 'center'});
}
function move(step) {
  const vis = visible();
  if (!vis.length) return;
  let i = vis.indexOf(cards[cur]);
  if (i < 0) i = step > 0 ? 0 : vis.length - 1;
  else i = Math.min(vis.length - 1, Math.max(0, i + step));
  focusCard(vis[i]);
}
function nextUndecided() {
  const vis = visible();
  const start = Math.max(0, vis.indexOf(cards[cur]));
  for (let n = 1; n <= vis.length; n++) {
    const c = vis[(start + n) % vis.length];
    if (!state.decisions[c.dataset.cid]) { focusCard(c); return; }
  }
  msg('every shown candidate has a decision');
}
function decide(card, key) {
  if (!card) { msg('select a card first (j / → or click)'); return; }
  const cid = card.dataset.cid;
  if (key === 'u') { delete state.decisions[cid]; }
  else {
    const a = D.keys[key];
    state.decisions[cid] = {decision: a[0], mimic_type: a[1],
      reviewer: state.reviewer, time: new Date().toISOString()};
  }
  persist(); render(card); progress(); msg('');
  if (key !== 'u' && advance.checked) {
    if (filter.value === 'undecided') { applyFilter(); nextUndecided(); } else move(1);
  }
}
function clean(s) { return String(s == null ? '' : s).replace(/[\t\r\n]+/g, ' ').trim(); }
function tsv() {
  const head = ['sha256', 'candidate_id', 'lesion_id', 'decision', 'mimic_type', 'reviewer',
                'time', 'x_mm', 'y_mm', 'z_mm'];
  const lines = [head.join('\t')];
  Object.keys(state.decisions).map(Number).sort(function (a, b) { return a - b; })
    .forEach(function (id) {
      const d = state.decisions[String(id)], c = byId[String(id)];
      if (!c) return;
      lines.push([D.sha256, id, c.lesion_id, d.decision, d.mimic_type || '',
        clean(d.reviewer || state.reviewer), d.time, c.x, c.y, c.z].map(clean).join('\t'));
    });
  return lines.join('\n') + '\n';
}
function save() {
  if (!clean(state.reviewer)) { msg('enter your name as reviewer before saving'); reviewer.focus(); return; }
  Object.keys(state.decisions).forEach(function (id) {
    if (!state.decisions[id].reviewer) state.decisions[id].reviewer = clean(state.reviewer);
  });
  persist();
  const blob = new Blob([tsv()], {type: 'text/tab-separated-values'});
  const link = $('dl');
  if (link.dataset.url) URL.revokeObjectURL(link.dataset.url);
  const url = URL.createObjectURL(blob);
  link.href = url; link.dataset.url = url; link.download = D.decisions_file;
  link.click();
  msg('saved ' + Object.keys(state.decisions).length + ' decision(s) to ' + D.decisions_file);
}
function applyFilter() {
  const f = filter.value;
  cards.forEach(function (c) {
    const d = state.decisions[c.dataset.cid];
    const show = f === 'all' || f === c.dataset.status || (f === 'undecided' && !d);
    c.style.display = show ? '' : 'none';
  });
}
function loadTsv(text) {
  const lines = text.split(/\r?\n/).filter(function (l) { return l.trim() !== ''; });
  if (!lines.length) { msg('empty file'); return; }
  const head = lines[0].split('\t').map(function (h) { return h.trim(); });
  const col = function (n) { return head.indexOf(n); };
  if (col('sha256') < 0 || col('candidate_id') < 0 || col('decision') < 0) {
    msg('not a decisions file (needs sha256, candidate_id, decision)'); return;
  }
  const got = {};
  for (let i = 1; i < lines.length; i++) {
    const f = lines[i].split('\t');
    if ((f[col('sha256')] || '').toLowerCase() !== D.sha256.toLowerCase()) {
      msg('refused: line ' + (i + 1) + ' is for another scan (checksum differs)'); return;
    }
    const id = String(parseInt(f[col('candidate_id')], 10));
    if (!byId[id]) { msg('refused: unknown candidate ' + f[col('candidate_id')]); return; }
    const dec = (f[col('decision')] || '').trim();
    if (dec !== 'confirmed' && dec !== 'rejected') continue;
    got[id] = {decision: dec, mimic_type: col('mimic_type') >= 0 ? (f[col('mimic_type')] || '') : '',
      reviewer: col('reviewer') >= 0 ? clean(f[col('reviewer')]) : '',
      time: col('time') >= 0 ? (f[col('time')] || '') : ''};
  }
  state.decisions = got;
  const names = Object.values(got).map(function (d) { return d.reviewer; }).filter(Boolean);
  if (!state.reviewer && names.length) { state.reviewer = names[0]; reviewer.value = names[0]; }
  persist(); cards.forEach(render); applyFilter(); progress();
  msg('loaded ' + Object.keys(got).length + ' decision(s)');
}
$('load').addEventListener('change', function () {
  const file = this.files && this.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = function () { loadTsv(String(reader.result)); };
  reader.readAsText(file);
  this.blur();
});
reviewer.value = state.reviewer || '';
reviewer.addEventListener('input', function () { state.reviewer = clean(reviewer.value); persist(); });
filter.addEventListener('change', function () { applyFilter(); filter.blur(); });
$('save').addEventListener('click', save);
$('dl').addEventListener('click', function (e) {
  if (e.isTrusted) { e.preventDefault(); save(); }  // a reader's click: save the current state
});
cards.forEach(function (card) {
  render(card);
  card.addEventListener('click', function (e) {
    const b = e.target.closest('button[data-key]');
    focusCard(card, false);
    if (b) decide(card, b.dataset.key);
  });
});
document.querySelectorAll('.ovsvg a.mk').forEach(function (a) {
  a.addEventListener('click', function (e) {
    e.preventDefault();
    const c = $('c' + a.dataset.cid);
    if (c) { if (c.style.display === 'none') { filter.value = 'all'; applyFilter(); } focusCard(c); }
  });
});
document.addEventListener('keydown', function (e) {
  const t = e.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) {
    if (e.key === 'Escape' || e.key === 'Enter') t.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (Object.prototype.hasOwnProperty.call(D.keys, k) || k === 'u') {
    decide(cards[cur], k);
  } else if (k === 'j' || k === 'ArrowRight') { move(1); }
  else if (k === 'k' || k === 'ArrowLeft') { move(-1); }
  else if (k === 'n') { nextUndecided(); }
  else if (k === 'm') { document.body.classList.toggle('nomark'); }
  else if (k === 's') { save(); }
  else if (k === '?' || k === 'h') { $('legend').classList.toggle('hide'); }
  else return;
  e.preventDefault();
});
progress();
window.microbleedsReview = {state: function () { return state; }, tsv: tsv, save: save};
})();
"""


# --------------------------------------------------------------------------- cohort
COHORT_COLUMNS = [
    "scan", "input", "sha256", "sequence", "field_strength_t", "echo_time_ms", "preset",
    "candidates", "total", "definite", "possible", "lobar", "deep", "infratentorial", "unknown",
    "burden_category", "review", "reviewers", "confirmed_total", "confirmed_definite",
    "confirmed_possible", "confirmed_lobar", "confirmed_deep", "confirmed_infratentorial",
    "confirmed_unknown", "reviewed_burden_category", "report",
]


def write_cohort(results_root) -> dict[str, Path]:
    """Write ``cohort.tsv`` and ``cohort.html`` in ``results_root`` over all scan folders.

    One row per scan: automatic counts (total, certainty, region), burden category, review
    state (``none``, ``partial``, ``complete``) with reader-confirmed counts, and a relative
    link to the scan's ``report.html``. Returns ``{"tsv": path, "html": path}``.
    """
    root = Path(results_root)
    dirs = find_scan_dirs(root)
    rows = []
    for d in dirs:
        res = load_results(d)
        s = res["summary"]
        inp, acq, counts = s.get("input") or {}, s.get("acquisition") or {}, s.get("counts") or {}
        reg = counts.get("by_region") or {}
        row = {
            "scan": d.relative_to(root).as_posix() or ".",
            "input": inp.get("path", ""), "sha256": inp.get("sha256", ""),
            "sequence": acq.get("sequence", ""), "field_strength_t": acq.get("field_strength_t", ""),
            "echo_time_ms": acq.get("echo_time_ms", ""),
            "preset": (s.get("pipeline") or {}).get("name", ""),
            "candidates": s.get("candidates", len(res["candidates"])),
            "total": counts.get("total", ""), "definite": counts.get("definite", ""),
            "possible": counts.get("possible", ""),
            "burden_category": s.get("burden_category", ""),
            "report": (d.relative_to(root) / "report.html").as_posix()
            if (d / "report.html").is_file() else "",
        }
        for r in REGIONS:
            row[r] = reg.get(r, 0) if reg else ""
        st = review_state(d)
        if st is None:
            row["review"] = "none"
        else:
            rv, rc = st.get("review") or {}, st.get("counts") or {}
            rreg = rc.get("by_region") or {}
            row.update({
                "review": "complete" if rv.get("complete") else "partial",
                "reviewers": ";".join(rv.get("reviewers") or []),
                "confirmed_total": rc.get("total", ""),
                "confirmed_definite": rc.get("definite", ""),
                "confirmed_possible": rc.get("possible", ""),
                "reviewed_burden_category": st.get("burden_category", ""),
            })
            for r in REGIONS:
                row["confirmed_" + r] = rreg.get(r, 0)
        rows.append(row)
    tsv_path = atomic_write_text(root / "cohort.tsv", tsv_text(COHORT_COLUMNS, rows))
    html_path = atomic_write_text(root / "cohort.html", _cohort_page(root, rows))
    return {"tsv": tsv_path, "html": html_path}


def _cohort_page(root, rows):
    show = ["scan", "sequence", "field_strength_t", "preset", "candidates", "total", "definite",
            "possible", "lobar", "deep", "infratentorial", "unknown", "burden_category", "review",
            "reviewers", "confirmed_total", "reviewed_burden_category"]
    heads = {"field_strength_t": "B0 (T)", "burden_category": "burden",
             "confirmed_total": "confirmed", "reviewed_burden_category": "reviewed burden",
             "infratentorial": "infratent."}
    body = []
    for r in rows:
        cells = []
        for c in show:
            v = r.get(c, "")
            if c == "scan" and r.get("report"):
                v = f"<a href='{_e(r['report'])}'>{_e(v)}</a>"
            else:
                v = _e(v)
            cls = f" class='rv-{_e(r.get('review'))}'" if c == "review" else ""
            cells.append(f"<td{cls}>{v}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    n = len(rows)
    n_rev = sum(r.get("review") == "complete" for r in rows)
    n_part = sum(r.get("review") == "partial" for r in rows)
    order = ["0", "1", "2-4", ">=5"]

    def dist(key, subset):
        counts = {k: 0 for k in order}
        for r in subset:
            v = str(r.get(key) or "?")
            counts[v] = counts.get(v, 0) + 1
        return ", ".join(f"{k}: {v}" for k, v in counts.items())

    done = [r for r in rows if r.get("review") == "complete"]
    dist_text = (f"automatic ({n} scans) — {dist('burden_category', rows)}; reader-confirmed "
                 f"({len(done)} completely reviewed scans) — "
                 f"{dist('reviewed_burden_category', done) if done else 'none yet'}")
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Microbleeds cohort</title>
<style>body{{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1d2330}}table{{border-collapse:collapse}}
th,td{{padding:3px 8px;border-bottom:1px solid #e2e4ea;text-align:right}}th{{cursor:pointer;
background:#eef1f6;position:sticky;top:0}}td:first-child,th:first-child{{text-align:left;white-space:nowrap}}
.rv-none{{color:#b00020}}.rv-partial{{color:#a06000}}.rv-complete{{color:#146c2e}}.dim{{color:#667}}
</style></head><body><h1>Cerebral microbleeds — cohort</h1>
<p>{n} scan(s) under <code>{_e(root)}</code>; review complete for {n_rev}, partial for {n_part},
none for {n - n_rev - n_part}.<br>Burden categories: {_e(dist_text)}.<br> <span class=dim>Counts are automatic unless under “confirmed”. Click a column to
sort; click a scan for its report. Table: <code>cohort.tsv</code>. Generated {generated}.</span></p>
<table id=t><thead><tr>{''.join(f'<th>{_e(heads.get(c, c))}</th>' for c in show)}</tr></thead>
<tbody>{''.join(body)}</tbody></table>
<script>
document.querySelectorAll('#t th').forEach(function (th, i) {{
  let asc = true;
  th.addEventListener('click', function () {{
    const tb = document.querySelector('#t tbody');
    const rs = Array.from(tb.rows);
    rs.sort(function (a, b) {{
      const x = a.cells[i].textContent, y = b.cells[i].textContent;
      const nx = parseFloat(x), ny = parseFloat(y);
      const r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? r : -r;
    }});
    asc = !asc;
    rs.forEach(function (r) {{ tb.appendChild(r); }});
  }});
}});
</script></body></html>
"""


# --------------------------------------------------------------------------- screenshots
def screenshot(html_path, png_path, width=1400, height=1000, full_page=False,
               chromium=CHROMIUM, actions=None) -> Path:
    """Save a PNG screenshot of a report page in headless Debian chromium (via Playwright).

    Only ``file:``, ``data:`` and ``blob:`` URLs are allowed to load; the browser is never
    downloaded (``playwright install`` is not needed). ``actions`` is an optional list of keys
    to press before the shot (e.g. ``["j", "c"]`` to show a decided card; the page
    scrolls to the current card).
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise InputError(html_path, "screenshots need the Python package 'playwright' "
                                    "(pip install playwright; no browser download needed)") from None
    html_path, png_path = Path(html_path).resolve(), Path(png_path)
    if not html_path.is_file():
        raise InputError(html_path, "report does not exist")
    if not os.path.exists(chromium):
        raise InputError(chromium, "chromium not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": int(width), "height": int(height)})
            page.route("**/*", lambda route: route.continue_()
                       if route.request.url.startswith(("file:", "data:", "blob:"))
                       else route.abort())
            page.goto(html_path.as_uri())
            for key in actions or []:
                page.keyboard.press(key)
            page.screenshot(path=str(png_path), full_page=bool(full_page))
        finally:
            browser.close()
    return png_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m microbleeds.html_report",
                                 description="Build microbleed reports, or screenshot one.")
    ap.add_argument("paths", nargs="+", help="OUTDIR (scan folder or run root); with "
                                             "--screenshot: REPORT.html OUT.png")
    ap.add_argument("--screenshot", action="store_true", help="screenshot REPORT.html to OUT.png")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--full-page", action="store_true")
    ap.add_argument("--press", default="", help="keys to press before a screenshot, comma "
                                                "separated (e.g. j,c,v)")
    ap.add_argument("--neurological", action="store_true",
                    help="patient's right on the right (default radiological)")
    args = ap.parse_args(argv)
    try:
        if args.screenshot:
            if len(args.paths) != 2:
                ap.error("--screenshot needs REPORT.html OUT.png")
            keys = [k for k in args.press.split(",") if k]
            print(screenshot(args.paths[0], args.paths[1], args.width, args.height,
                             args.full_page, actions=keys))
            return 0
        for root in args.paths:
            for path in build_reports(root, radiological=not args.neurological):
                print(path)
            if not is_scan_dir(root):
                print(write_cohort(root)["html"])
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
