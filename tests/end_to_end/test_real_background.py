"""Simulated microbleeds inserted into a real in-vivo GRE crop are found; its own veins are not.

The crop (../shared/data/real/romeo-small-gre, 0.47 x 0.47 x 1 mm, probably 7 T) has visible veins
and real noise. CMBs are inserted by multiplying its complex signal by each sphere's sub-voxel
dephasing (microbleeds.bench.phantoms.insert_cmbs), at positions chosen by a fixed rule: away from dark
structures and from the border of the field of view.
"""

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED
from scipy import ndimage as ndi

import microbleeds
from microbleeds.bench.phantoms import insert_cmbs, load_real_gre

ROMEO = SHARED / "romeo-small-gre"
pytestmark = pytest.mark.skipif(not (ROMEO / "small_Mag.nii").is_file(), reason="shared real data not present")
ECHO, TE_MS, B0_T = 1, 8.0, 7.0


@pytest.fixture(scope="module")
def crop():
    return load_real_gre(ROMEO / "small_Mag.nii", ROMEO / "small_Phase.nii", echo=ECHO)


def _quiet_positions(mag, affine, n, rng, min_gap_mm=6.0):
    """Voxels at least 4 mm from the field-of-view border with no dark structure within 3 mm."""
    vox = np.sqrt((affine[:3, :3] ** 2).sum(0))
    dark = mag < 0.7 * np.median(mag)
    near_dark = ndi.distance_transform_edt(~dark, sampling=vox) < 3.0
    border = np.ceil(4.0 / vox).astype(int)
    allowed = ~near_dark
    allowed[: border[0]] = allowed[-border[0]:] = False
    allowed[:, : border[1]] = allowed[:, -border[1]:] = False
    allowed[:, :, : border[2]] = allowed[:, :, -border[2]:] = False
    chosen = []
    for index in rng.permutation(np.argwhere(allowed)):
        xyz = nib.affines.apply_affine(affine, index)
        if all(np.linalg.norm(xyz - c) >= min_gap_mm for c in chosen):
            chosen.append(xyz)
        if len(chosen) == n:
            break
    return np.array(chosen)


def test_crop_veins_are_not_reported(crop):
    mag, _, affine = crop
    result = microbleeds.detect(mag.astype(np.float32), affine=affine)
    assert result.summary["counts"]["total"] == 0
    assert result.summary["rejected_by_rule"].get("tubular", 0) >= 3  # the veins were seen, and rejected


@pytest.mark.parametrize("seed", [1, 2])
def test_inserted_cmbs_are_found(crop, seed):
    mag, phase, affine = crop
    rng = np.random.default_rng(seed)
    centres = _quiet_positions(mag, affine, 3, rng)
    diameters = rng.uniform(1.2, 2.5, len(centres))
    chi = rng.uniform(0.6, 1.2, len(centres))
    new_mag, _, _ = insert_cmbs(mag, phase, affine, centres, diameters, chi, b0_t=B0_T, te_ms=TE_MS)
    result = microbleeds.detect(new_mag, affine=affine)
    found = np.array([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in result.lesions]).reshape(-1, 3)
    for centre in centres:
        assert len(found) and np.linalg.norm(found - centre, axis=1).min() < 1.5, f"CMB at {centre} missed"
    assert len(found) == len(centres), "a vein of the real crop was reported"
