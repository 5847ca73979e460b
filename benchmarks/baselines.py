"""Two baselines a user of this field might reach for instead of microbleeds.

Both share microbleeds' brain mask and background normalisation so that the comparison is about
the detection step, and both write a ``lesions.tsv`` in the microbleeds layout for scoring.

- ``blob_log_frangi``: scikit-image ``blob_log`` (Laplacian of Gaussian) on the inverted
  relative-intensity image, blobs on a Frangi vessel mask removed.
- ``threshold``: a plain intensity threshold (relative intensity below 0.5) with connected
  components kept when their equivalent diameter lies in the CMB range (1-10 mm).
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import apply_affine
from scipy import ndimage as ndi
from skimage.feature import blob_log
from skimage.filters import frangi

from microbleeds.stages.load import load_scan
from microbleeds.stages.prepare import brain_mask, relative_intensity


def _prepared(path):
    scan = load_scan(path)
    mask = brain_mask(scan.magnitude, scan.voxel_size_mm)
    rel = relative_intensity(scan.magnitude, mask, scan.voxel_size_mm)
    return scan, mask, rel


def _rows(scan, centres_vox, diameters):
    rows = []
    for n, (c, d) in enumerate(sorted(zip(map(tuple, centres_vox), diameters)), start=1):
        x, y, z = apply_affine(scan.affine, c)
        rows.append({"lesion_id": n, "x_mm": x, "y_mm": y, "z_mm": z, "diameter_mm": d})
    return rows


def blob_log_frangi(path, min_diameter_mm=1.0, max_diameter_mm=10.0, threshold=0.3, vessel_quantile=0.99):
    """LoG blobs on the inverted image, minus those on Frangi-bright (vessel) voxels."""
    scan, mask, rel = _prepared(path)
    vox = scan.voxel_size_mm
    dark = np.clip(1.0 - rel, 0, 1) * mask
    # sigma = radius / sqrt(3) for a 3D blob; at least one voxel (below that the LoG sees noise)
    min_sigma = [max(min_diameter_mm / 2 / np.sqrt(3) / v, 1.0) for v in vox]
    max_sigma = [max(max_diameter_mm / 2 / np.sqrt(3) / v, 1.0) for v in vox]
    blobs = blob_log(dark, min_sigma=min_sigma, max_sigma=max_sigma, num_sigma=6, threshold=threshold)
    if len(blobs) == 0:
        return []
    vessels = frangi(rel, sigmas=(1.0, 1.5, 2.0), black_ridges=True)  # voxel units (isotropic)
    cut = np.quantile(vessels[mask], vessel_quantile)
    centres = blobs[:, :3].astype(int)
    keep = mask[tuple(centres.T)] & (vessels[tuple(centres.T)] < cut)
    sigmas_mm = blobs[keep, 3:6] * np.asarray(vox) if blobs.shape[1] == 6 else blobs[keep, 3:4] * vox.mean()
    diameters = 2 * np.sqrt(3) * sigmas_mm.mean(axis=1)
    return _rows(scan, blobs[keep, :3], diameters)


def threshold(path, level=0.5, min_diameter_mm=1.0, max_diameter_mm=10.0):
    """Connected components of relative intensity < ``level``, filtered by size."""
    scan, mask, rel = _prepared(path)
    labels, n = ndi.label((rel < level) & mask, structure=np.ones((3, 3, 3)))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    sizes = ndi.sum_labels(np.ones_like(rel), labels, index)
    diameters = (6 * sizes * np.prod(scan.voxel_size_mm) / np.pi) ** (1 / 3)
    keep = (diameters >= min_diameter_mm) & (diameters <= max_diameter_mm)
    centres = np.array(ndi.center_of_mass(np.ones_like(rel), labels, index[keep])).reshape(-1, 3)
    return _rows(scan, centres, diameters[keep])


BASELINES = {"blob_log_frangi": blob_log_frangi, "threshold": threshold}
