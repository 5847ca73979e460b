"""Rebuild the template files of this folder from the ICBM 2009a symmetric maps in nilearn's wheel.

    python microbleeds/atlas/make_atlas_data.py      # needs nilearn (test extra); run from the repo

Not imported by the package (the files it writes are package data). Writes, reproducibly:

* ``icbm152_2009a_sym_t1_brain_2mm.nii.gz``: the T1 template (0-255) inside the template brain,
  0 outside, 2 mm (2x2x2 block means of the 1 mm map), uint8. The registration's moving image.
* ``icbm152_2009a_sym_brain_2mm.nii.gz``: the template brain (grey + white matter probability
  >= 0.5, largest component, holes (ventricles) filled; a 2 mm voxel is brain when at least half of
  its 1 mm voxels are), uint8 0/1. Overlap with the scan's brain mask is the registration quality.
* ``icbm152_2009a_sym_tissue_1mm.nii.gz``: tissue flags on the 1 mm AAL3 grid (MNI box
  -90..90, -126..90, -72..108 mm), uint8 bits: 1 GM probability > 0.5; 2 WM probability > 0.5;
  4 WM probability > GM probability; 8 GM + WM probability >= 0.5; 16 ventricle: non-tissue
  (GM + WM < 0.5) enclosed by tissue (3D hole filling), components of >= 100 voxels. What the
  composite atlas of :func:`microbleeds.stages.labels.composite_atlas` needs of the template.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
AAL_AFFINE = np.array([[1.0, 0, 0, -90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
AAL_SHAPE = (181, 217, 181)


def _save(data, affine, name):
    img = nib.Nifti1Image(data.astype(np.uint8), affine)
    img.header.set_data_dtype(np.uint8)
    img.header["descrip"] = b"ICBM 2009a sym (c) McConnell BIC, MNI; see LICENSE_ICBM152.txt"
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    path = HERE / name
    nib.save(img, path)
    print(path, data.shape, path.stat().st_size, "bytes")


def main():
    import nilearn

    d = Path(nilearn.__file__).parent / "datasets" / "data"
    load = {t: nib.load(d / f"mni_icbm152_{t}_tal_nlin_sym_09a_converted.nii.gz") for t in ("t1", "gm", "wm")}
    aff = np.asarray(load["t1"].affine, float)
    t1, gm, wm = (np.asarray(load[t].dataobj, np.float32) for t in ("t1", "gm", "wm"))
    gm /= 255.0
    wm /= 255.0
    brain = (gm + wm) >= 0.5
    cc, n = ndi.label(brain)
    brain = cc == 1 + int(np.argmax(ndi.sum(brain, cc, np.arange(1, n + 1))))
    brain = ndi.binary_fill_holes(brain)
    # 2 mm: 2x2x2 block means (the 1 mm grid's first 196 x 232 x 188 voxels)
    s = tuple(2 * (v // 2) for v in t1.shape)

    def blocks(a):
        a = a[:s[0], :s[1], :s[2]]
        return a.reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5))

    aff2 = aff.copy()
    aff2[:3, :3] *= 2.0
    aff2[:3, 3] += aff[:3, :3] @ np.full(3, 0.5)  # centre of the first 2x2x2 block
    brain2 = blocks(brain.astype(np.float32)) >= 0.5
    t1b = np.where(brain2, np.rint(blocks(np.where(brain, t1, 0.0))), 0)
    _save(np.clip(t1b, 0, 255), aff2, "icbm152_2009a_sym_t1_brain_2mm.nii.gz")
    _save(brain2, aff2, "icbm152_2009a_sym_brain_2mm.nii.gz")
    # tissue flags on the AAL3 grid (an integer shift of the template grid)
    off = np.rint(np.linalg.solve(aff, AAL_AFFINE)[:3, 3]).astype(int)
    sl = tuple(slice(o, o + n) for o, n in zip(off, AAL_SHAPE))
    g, w = gm[sl], wm[sl]
    tissue = (g + w) >= 0.5
    holes = ndi.binary_fill_holes(tissue) & ~tissue
    cc, n = ndi.label(holes)
    sizes = ndi.sum(holes, cc, np.arange(1, n + 1)) if n else np.zeros(0)
    vent = np.isin(cc, np.flatnonzero(sizes >= 100) + 1)
    flags = (1 * (g > 0.5) + 2 * (w > 0.5) + 4 * (w > g) + 8 * tissue + 16 * vent).astype(np.uint8)
    _save(flags, AAL_AFFINE, "icbm152_2009a_sym_tissue_1mm.nii.gz")


if __name__ == "__main__":
    main()
