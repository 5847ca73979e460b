"""Tests of microbleeds.stages.dipole_sign: the per-candidate dipole sign (microbleed vs
calcification) and the phase convention (handedness) from veins and compact foci, on synthetic
phantoms with analytic fields and on the sample phantom.
"""

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scipy import ndimage as ndi

from microbleeds.contract import GAMMA_BAR_HZ_PER_T
from microbleeds.io.phase_file import load_phase
from microbleeds.stages import dipole_sign as D
from microbleeds.stages import phase as P

GAMMA = 2 * np.pi * GAMMA_BAR_HZ_PER_T
B0 = np.array([0.0, 0.0, 1.0])


# --------------------------------------------------------------------------------------------
# synthetic phantoms: analytic fields of spheres and infinite cylinders, computed on a
# supersampled grid and averaged to voxels (intravoxel dephasing -> blooming), wrapped phase,
# smooth background phase, complex noise
# --------------------------------------------------------------------------------------------

def random_affine(rng, vox):
    """Affine with randomly permuted and flipped axes for voxel sizes ``vox`` (mm)."""
    perm = rng.permutation(3)
    flips = rng.choice([-1, 1], 3)
    A = np.eye(4)
    A[:3, :3] = 0
    for col in range(3):
        A[perm[col], col] = flips[col] * vox[col]
    A[:3, 3] = rng.uniform(-50, 50, 3)
    return A


def _fine_world(shape, A, ss):
    off = (np.arange(ss) + 0.5) / ss - 0.5
    axes = [(np.arange(n)[:, None] + off[None, :]).ravel() for n in shape]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    return ijk @ A[:3, :3].T + A[:3, 3]


def _sphere_field(x, centre, a, dchi_ppm):
    """dB/B0 of a sphere (Lorentz corrected): 0 inside, dchi/3 (a/r)^3 (3cos^2-1) outside."""
    d = x - centre
    r = np.linalg.norm(d, axis=-1)
    cos = (d @ B0) / np.maximum(r, 1e-9)
    f = dchi_ppm * 1e-6 / 3 * (a / np.maximum(r, a)) ** 3 * (3 * cos**2 - 1)
    inside = r < a
    f[inside] = 0.0
    return f, inside


def _cylinder_field(x, p, u, a, dchi_ppm):
    """dB/B0 of an infinite cylinder: inside dchi (3cos^2 th - 1)/6, outside
    dchi/2 sin^2 th (a/rho)^2 cos 2phi."""
    u = u / np.linalg.norm(u)
    d = x - p
    q = d - (d @ u)[..., None] * u
    rho = np.linalg.norm(q, axis=-1)
    cth = u @ B0
    inside = rho < a
    f = np.zeros(rho.shape)
    f[inside] = dchi_ppm * 1e-6 * (3 * cth**2 - 1) / 6
    bp = B0 - cth * u
    nb = np.linalg.norm(bp)
    if nb > 1e-9:
        cphi = (q @ bp) / (np.maximum(rho, 1e-9) * nb)
        out = dchi_ppm * 1e-6 / 2 * (1 - cth**2) * (a / np.maximum(rho, 1e-9)) ** 2 * (
            2 * cphi**2 - 1)
        f[~inside] = out[~inside]
    return f, inside


def make_volume(rng, shape, A, sources, b0_t=3.0, te_ms=20.0, snr=20.0, conv=+1, ss=3, curvature=0.01, gradient=0.3):
    """Magnitude and wrapped phase (convention ``conv``) of a phantom (background: ``gradient``
    rad/mm in a random direction, curvature ``curvature`` rad/mm^2).

    ``sources``: ``("sphere", centre_world, a_mm, dchi_ppm, magnitude_inside)`` or
    ``("cyl", point_world, direction, a_mm, dchi_ppm, magnitude_inside)``.
    """
    x = _fine_world(shape, A, ss)
    db = np.zeros(x.shape[:3])
    M = np.ones(x.shape[:3])
    for s in sources:
        if s[0] == "sphere":
            f, ins = _sphere_field(x, s[1], s[2], s[3])
            M[ins] = np.minimum(M[ins], s[4])
        else:
            f, ins = _cylinder_field(x, s[1], s[2], s[3], s[4])
            M[ins] = np.minimum(M[ins], s[5])
        db += f
    psi = GAMMA * b0_t * db * te_ms * 1e-3
    c0 = x.reshape(-1, 3).mean(0)
    g = rng.normal(size=3)
    g *= gradient / np.linalg.norm(g)  # background: gradient, offset, curvature
    bg = (x - c0) @ g + rng.uniform(-np.pi, np.pi) + curvature * rng.uniform(-1, 1) * (
        (x - c0) ** 2).sum(-1)
    z = M * np.exp(1j * (conv * psi + bg))
    s_ = z.shape
    z = z.reshape(s_[0] // ss, ss, s_[1] // ss, ss, s_[2] // ss, ss).mean(axis=(1, 3, 5))
    z = z + (rng.normal(size=z.shape) + 1j * rng.normal(size=z.shape)) / (snr * np.sqrt(2))
    return np.abs(z).astype(np.float32), np.angle(z).astype(np.float32)



# --------------------------------------------------------------------------------------------
# per-candidate dipole sign
# --------------------------------------------------------------------------------------------

def _sphere_trial(rng, truth, conv):
    vox = np.array([(1, 1, 1), (0.5, 0.5, 1.0), (0.8, 0.8, 0.8), (0.47, 0.47, 2.0)][
        rng.integers(4)], float)
    shape = tuple(int(round(20 / v)) for v in vox)
    A = random_affine(rng, vox)
    b0 = float(rng.choice([1.5, 3.0, 7.0]))
    te = {1.5: 40.0, 3.0: 20.0, 7.0: 12.0}[b0] * rng.uniform(0.7, 1.3)
    a = rng.uniform(0.5, 1.5)
    dchi = truth * rng.uniform(0.5, 3.0)
    cv = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    cw = A[:3, :3] @ cv + A[:3, 3]
    mag, ph = make_volume(rng, shape, A, [("sphere", cw, a, dchi, 0.1)], b0, te,
                          rng.uniform(8, 40), conv, ss=2)
    hp = P.homodyne_highpass(mag, ph, vox, mode="3d")
    dark = mag < 0.6  # the candidate as a detector would see it: its dark blob
    radius = max((3 * dark.sum() * np.prod(vox) / (4 * np.pi)) ** (1 / 3), 0.5 * vox.min())
    centre = cv + rng.normal(0, 0.3, 3)  # detection error
    return hp, mag, centre, radius, vox, A


def test_dipole_sign_classification_rate():
    rng = np.random.default_rng(2024)
    n, correct, wrong_sign = 0, 0, 0
    for trial in range(64):
        truth = 1 if trial % 2 else -1  # +1 microbleed (paramagnetic), -1 calcification
        conv = 1 if (trial // 2) % 2 else -1  # both vendor conventions, sign forced
        hp, mag, c, r, vox, A = _sphere_trial(rng, truth, conv)
        score, sign = D.source_susceptibility_sign(hp, mag, c, r, vox, A, phase_sign=conv)
        n += 1
        correct += sign == truth
        wrong_sign += sign == -truth
    rate = correct / n
    print(f"dipole sign classification: {correct}/{n} = {rate:.3f}, wrong sign {wrong_sign}")
    assert rate >= 0.95
    assert wrong_sign <= 1


def test_dipole_sign_independent_of_array_orientation():
    rng = np.random.default_rng(7)
    vox = np.array([0.5, 0.5, 1.0])
    shape = (40, 40, 20)
    A = np.diag([0.5, 0.5, 1.0, 1.0])
    cv = np.array([20.3, 19.6, 10.2])
    mag, ph = make_volume(rng, shape, A, [("sphere", A[:3, :3] @ cv, 0.8, 1.5, 0.1)], ss=3)
    hp = P.homodyne_highpass(mag, ph, vox, mode="3d")
    ref = D.source_susceptibility_sign(hp, mag, cv, 1.5, vox, A)
    assert ref[1] == 1
    # permute and flip the array; the affine follows so world coordinates are unchanged
    perm, flip = (2, 0, 1), (True, False, True)
    hp2, mag2 = np.transpose(hp, perm), np.transpose(mag, perm)
    for ax, f in enumerate(flip):
        if f:
            hp2, mag2 = np.flip(hp2, ax), np.flip(mag2, ax)
    n2 = np.array(hp2.shape)
    # new index j maps to old index i: i[perm[ax]] = j[ax] (or n-1-j[ax] if flipped)
    M = np.zeros((4, 4))
    M[3, 3] = 1
    for ax in range(3):
        M[perm[ax], ax] = -1 if flip[ax] else 1
        M[perm[ax], 3] = n2[ax] - 1 if flip[ax] else 0
    A2 = A @ M
    cv2 = np.linalg.solve(M[:3, :3], cv - M[:3, 3])
    out = D.source_susceptibility_sign(hp2, mag2, cv2, 1.5, vox[list(perm)], A2)
    assert out[1] == 1
    assert abs(out[0] - ref[0]) < 1e-6


def test_dipole_sign_undecided_without_field():
    rng = np.random.default_rng(11)
    undecided = 0
    for _ in range(6):
        hp, mag, c, r, vox, A = _sphere_trial(rng, 0, +1)  # dark sphere, no susceptibility
        undecided += D.source_susceptibility_sign(hp, mag, c, r, vox, A)[1] == 0
    assert undecided == 6


def test_dipole_sign_undecided_on_random_phase():
    rng = np.random.default_rng(13)
    decided = 0
    for _ in range(24):
        shape = (40, 40, 20)
        A = random_affine(rng, (0.5, 0.5, 1.0))
        ph = rng.uniform(-np.pi, np.pi, shape)
        mag = rng.uniform(0.2, 1.0, shape)
        centre = rng.uniform(5, 35, 3) * np.array([1, 1, 0.5])
        decided += D.source_susceptibility_sign(ph, mag, centre, rng.uniform(0.5, 3.0),
                                                (0.5, 0.5, 1.0), A)[1] != 0
    assert decided <= 1


# --------------------------------------------------------------------------------------------
# handedness from veins; both conventions give the same classification
# --------------------------------------------------------------------------------------------

def _vein_phantom(rng, conv, n_veins=24, veins_chi=True):
    vox = np.array([0.5, 0.5, 1.0])
    shape = (48, 48, 24)
    A = random_affine(rng, vox)
    ctr = A[:3, :3] @ (np.array(shape) / 2) + A[:3, 3]
    src = []
    for _ in range(n_veins):
        u = rng.normal(size=3)
        src.append(("cyl", ctr + rng.uniform(-8, 8, 3), u / np.linalg.norm(u),
                    rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.45) * veins_chi, 0.5))
    lesions = []
    for chi_sign in (1, 1, -1):  # two microbleeds, one calcification
        cv = np.array(shape) / 2 + rng.uniform(-8, 8, 3) * np.array([2, 2, 0.6])
        src.append(("sphere", A[:3, :3] @ cv + A[:3, 3], rng.uniform(0.7, 1.2),
                    chi_sign * rng.uniform(1.0, 2.5), 0.1))
        lesions.append((cv, chi_sign))
    return vox, A, src, lesions


def test_handedness_from_veins_both_conventions():
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        vox, A, src, lesions = _vein_phantom(rng, +1)
        classes = {}
        for conv in (+1, -1):
            mag, ph = make_volume(np.random.default_rng(seed + 10), (48, 48, 24), A, src,
                                  3.0, 20.0, 20.0, conv, ss=2)
            hp = P.homodyne_highpass(mag, ph, vox, mode="3d")
            sign, ev = D.estimate_phase_sign(hp, mag, A)
            print(conv, sign, ev)
            assert sign == conv
            assert ev["confidence"] in ("high", "moderate")
            json.dumps(ev)
            classes[conv] = [D.source_susceptibility_sign(hp, mag, cv, 1.2, vox, A,
                                                          phase_sign=sign)[1]
                             for cv, _ in lesions]
        assert classes[+1] == classes[-1] == [chi for _, chi in lesions]


def test_handedness_of_multi_echo_phase_both_conventions():
    """A 3-echo acquisition (phase growing with TE) in both storage conventions: compute_swi's
    estimate, on the TE-combined phase, finds each convention with confidence, and the same phantom
    stored the other way gives the same per-lesion classes and the negated filtered phase."""
    rng = np.random.default_rng(2)
    vox, A, src, lesions = _vein_phantom(rng, +1)
    te = [8.0, 16.0, 24.0]
    echoes = [make_volume(np.random.default_rng(20 + e), (48, 48, 24), A, src, 3.0, t, 20.0, +1, ss=2)
              for e, t in enumerate(te)]
    mag = np.stack([m for m, _ in echoes], axis=3)
    ph = np.stack([p for _, p in echoes], axis=3)
    classes = {}
    for conv in (+1, -1):  # the same acquisition, its phase stored in either convention
        res = P.compute_swi(mag, conv * ph, A, echo_times_ms=te)
        print(conv, res.phase_sign, res.sign_evidence)
        assert res.phase_sign == conv
        assert res.sign_evidence["confidence"] in ("high", "moderate")
        classes[conv] = ([D.source_susceptibility_sign(res.filtered_phase, res.magnitude, cv, 1.2, vox, A,
                                                       phase_sign=res.phase_sign)[1] for cv, _ in lesions],
                         conv * res.filtered_phase)
    assert classes[+1][0] == classes[-1][0] == [chi for _, chi in lesions]
    np.testing.assert_allclose(classes[+1][1], classes[-1][1], atol=1e-4)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_handedness_without_susceptibility_is_not_confident(seed):
    rng = np.random.default_rng(seed)
    vox, A, src, _ = _vein_phantom(rng, +1, veins_chi=False)
    src = [s for s in src if s[0] == "cyl"]  # dark veins without any field
    mag, ph = make_volume(rng, (48, 48, 24), A, src, ss=2)
    hp = P.homodyne_highpass(mag, ph, vox, mode="3d")
    sign, ev = D.estimate_phase_sign(hp, mag, A, default=-1)
    assert ev["confidence"] in ("none", "low")
    if ev["confidence"] == "none":
        assert sign == -1 and "default sign -1" in ev["note"]


# --------------------------------------------------------------------------------------------
# cross-check on the independent physical phantom of microbleeds.bench.phantoms (sample_data/)
# --------------------------------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.mark.skipif(not (SAMPLE / "sample.json").exists(), reason="sample phantom not present")
def test_sample_phantom_cmb_vs_calcification():
    import csv

    meta = json.loads((SAMPLE / "sample.json").read_text())
    conv = -1 if "-gamma" in meta.get("phase_sign_convention", "").replace(" ", "") else +1
    mimg = nib.load(str(SAMPLE / meta["files"]["magnitude"]))
    mag = mimg.get_fdata(dtype=np.float32)
    ph, _ = load_phase(SAMPLE / meta["files"]["phase"], mag.shape, mimg.affine)
    vox = np.array(mimg.header.get_zooms()[:3], float)
    hp = P.homodyne_highpass(mag, ph, vox, mode="3d")
    ok = n = 0
    with open(SAMPLE / meta["files"]["truth_tsv"], encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            xyz = np.array([float(row[k]) for k in ("x_mm", "y_mm", "z_mm")])
            ijk = np.linalg.solve(mimg.affine[:3, :3], xyz - mimg.affine[:3, 3])
            _, sign = D.source_susceptibility_sign(hp, mag, ijk, float(row["diameter_mm"]) / 2,
                                                   vox, mimg.affine, phase_sign=conv)
            n += 1
            ok += sign == (1 if row["type"] == "cmb" else -1)
    print(f"sample phantom: {ok}/{n} lesions classified by dipole sign (convention {conv:+d})")
    assert ok >= 0.9 * n


# --------------------------------------------------------------------------------------------
# how the two lines of evidence settle the sign
# --------------------------------------------------------------------------------------------

def _settle(vessel_sign, vessel_conf, foci_sign, foci_conf, n_foci, default=+1, column_sign=0, column_conf="none"):
    ev = {"confidence": "none", "method": "default", "note": ""}
    sign = D._settle_sign(vessel_sign, vessel_conf, foci_sign, foci_conf, n_foci, default, ev,
                          column_sign, column_conf)
    return sign, ev["confidence"], ev["method"], ev["note"]


@pytest.mark.parametrize("case,expect", [
    # moderate columns decide over low veins and low foci (a few calcifications), not over moderate foci
    ((1, "low", 1, "low", 3, -1, "moderate"),
     (-1, "moderate", "veins along B0", "a few compact foci disagree with the veins along B0")),
    ((0, "none", -1, "moderate", 6, -1, "moderate"), (-1, "moderate", "veins along B0 and dipole of compact foci", "")),
    ((0, "none", 1, "moderate", 6, -1, "moderate"),
     (-1, "low", "veins along B0", "compact foci disagree with the veins along B0")),
    # confident vein orientation decides; disagreeing columns lower it by one step
    ((1, "high", 0, "none", 0, -1, "low"), (1, "moderate", "vein orientation",
                                            "veins along B0 disagree with the vein orientation")),
    # low columns decide before low veins when the foci give no confident sign
    ((1, "low", 0, "none", 0, -1, "low"), (-1, "low", "veins along B0", "")),
    ((0, "none", 1, "low", 3, -1, "low"), (1, "low", "dipole of compact foci", "")),
])
def test_settle_sign_rules_with_columns(case, expect):
    assert _settle(*case[:5], default=+1, column_sign=case[5], column_conf=case[6]) == expect


@pytest.mark.parametrize("case,expect", [
    # confident veins decide; disagreeing foci (>= 3) lower the confidence by one step
    ((-1, "high", 0, "none", 0), (-1, "high", "vein orientation", "")),
    ((-1, "high", 1, "none", 3), (-1, "moderate", "vein orientation", "compact foci disagree with the veins")),
    ((-1, "moderate", 1, "low", 4), (-1, "low", "vein orientation", "compact foci disagree with the veins")),
    ((-1, "high", 1, "none", 2), (-1, "high", "vein orientation", "")),
    ((1, "moderate", 1, "low", 3), (1, "moderate", "vein orientation and dipole of compact foci", "")),
    # confident foci decide when the veins have no evidence (veins: none)
    ((-1, "none", 1, "moderate", 6), (1, "moderate", "dipole of compact foci", "")),
    ((0, "none", -1, "low", 3), (-1, "low", "dipole of compact foci", "")),
    # weak agreeing veins are named but do not raise the foci's confidence (a low vote is no
    # independent evidence: 3 calcifications voting with chance-level veins gave a wrong "moderate")
    ((-1, "low", -1, "low", 3), (-1, "low", "vein orientation and dipole of compact foci", "")),
    ((1, "low", 1, "moderate", 6), (1, "moderate", "vein orientation and dipole of compact foci", "")),
    # weak veins decide alone when the foci give no confident sign, but not against confident foci
    ((1, "low", -1, "none", 2), (1, "low", "vein orientation", "")),
    ((1, "low", -1, "low", 3), (-1, "none", "default", "veins and compact foci disagree; default sign -1 used")),
    ((0, "none", 0, "none", 0), (-1, "none", "default", "insufficient evidence; default sign -1 used")),
])
def test_settle_sign_rules(case, expect):
    assert _settle(*case, default=-1) == expect


def test_vein_confidence_thresholds():
    assert D._vein_confidence(1e-7, 8, 0.72) == "high"
    assert D._vein_confidence(1e-7, 7, 0.72) == "moderate"  # too few units for high
    assert D._vein_confidence(1e-7, 8, 0.71) == "moderate"
    assert D._vein_confidence(1e-5, 20, 0.64) == "low"
    assert D._vein_confidence(0.009, 20, 0.9) == "low"
    assert D._vein_confidence(0.01, 20, 0.9) == "none"
    # thousands of correlated units give a tiny p at any agreement: half for each sign is no evidence
    assert D._vein_confidence(1e-48, 1896, 0.501) == "none"
    assert D._vein_confidence(1e-3, 50, 0.55) == "low"


def test_brain_edge_is_not_evidence():
    """The estimate leaves out the brain's outer band (3 Hessian scales: there the Hessian reaches
    the skull and CSF), and keeps the whole mask when too little would be left."""
    vox = np.array([1.0, 1.0, 2.0])
    mask = np.zeros((60, 60, 30), bool)
    mask[5:-5, 5:-5, 3:-3] = True
    inner = D._evidence_region(mask, vox, 1.0)
    assert inner[8:-8, 8:-8, 5:-5].all()  # 3 mm in from each face (1.5 slices of 2 mm: 2)
    assert not (inner & ~np.pad(np.ones((44, 44, 20), bool), ((8, 8), (8, 8), (5, 5)))).any()
    small = np.zeros_like(mask)
    small[28:32, 28:32, 14:16] = True
    assert (D._evidence_region(small, vox, 1.0) == small).all()


def test_compact_and_elongated_foci():
    vox = np.array([0.5, 0.5, 1.0])
    ball = np.argwhere(np.ones((3, 3, 3), bool)) * vox
    rod = np.argwhere(np.ones((12, 1, 1), bool)) * vox
    assert not D._is_elongated(ball, vox)
    assert D._is_elongated(rod, vox)
    assert not D._is_elongated(rod[:3], vox)  # too few voxels for a shape


# --------------------------------------------------------------------------------------------
# the voxel-averaged model of small sources (thick voxels, a few voxels across)
# --------------------------------------------------------------------------------------------

def _small_trial(rng, truth, conv, vox=(1.0, 1.0, 2.0)):
    """A small sphere (0.35-0.6 mm radius: 1-3 voxels of blooming) on thick voxels, 3 T, SNR 25;
    the candidate's centre within 0.3 voxel of the truth and its diameter the dark blob's."""
    vox = np.array(vox, float)
    shape = tuple(int(round(16 / v)) for v in vox)
    A = random_affine(rng, vox)
    a = rng.uniform(0.35, 0.6)
    dchi = truth * rng.uniform(0.6, 1.2)
    cv = np.array(shape) / 2 + rng.uniform(-0.5, 0.5, 3)
    mag, ph = make_volume(rng, shape, A, [("sphere", A[:3, :3] @ cv + A[:3, 3], a, dchi, 0.1)], 3.0, 20.0,
                          25.0, conv, ss=4)
    hp = P.homodyne_highpass(mag, ph, vox, mode="3d")
    diameter = max(2 * (3 * (mag < 0.6).sum() * np.prod(vox) / (4 * np.pi)) ** (1 / 3), vox.min())
    return hp, mag, cv + rng.normal(0, 0.15, 3), diameter, vox, A


def test_voxel_model_decides_small_sources_the_shell_fit_leaves_undecided():
    rng = np.random.default_rng(31)
    shell_right = model_right = model_wrong = n = 0
    for trial in range(24):
        truth = 1 if trial % 2 else -1
        conv = 1 if (trial // 2) % 2 else -1
        hp, mag, c, diam, vox, A = _small_trial(rng, truth, conv)
        radii = [f * diam for f in D.SOURCE_RADIUS_PER_DIAMETER]
        shell = {s for _, s in D._source_fits(hp, mag, c, radii, vox, A, phase_sign=conv) if s}
        shell_right += shell == {truth}
        _, z, sign = D.voxel_model_sign(hp, mag, c, [0.4 * diam], vox, A, phase_sign=conv)
        n += 1
        model_right += sign == truth
        model_wrong += sign == -truth
    print(f"small sources: shell fit right {shell_right}/{n}, voxel model right {model_right}/{n}, wrong {model_wrong}")
    assert model_wrong == 0
    assert model_right >= 0.75 * n
    assert model_right >= shell_right + 0.2 * n  # the point of the model: it decides where the shell fit cannot


def test_voxel_model_undecided_without_field_or_on_random_phase():
    rng = np.random.default_rng(32)
    decided = 0
    for _ in range(8):
        hp, mag, c, diam, vox, A = _small_trial(rng, 0, +1)  # a dark sphere without susceptibility
        decided += D.voxel_model_sign(hp, mag, c, [0.4 * diam], vox, A)[2] != 0
    for _ in range(16):
        A = random_affine(rng, (1.0, 1.0, 2.0))
        ph = rng.uniform(-np.pi, np.pi, (16, 16, 8))
        mag = rng.uniform(0.5, 1.0, (16, 16, 8))
        decided += D.voxel_model_sign(ph, mag, rng.uniform(6, 10, 3) * [1, 1, 0.5], [0.8], (1.0, 1.0, 2.0), A)[2] != 0
    assert decided <= 1


def test_voxel_model_same_sign_in_both_conventions_and_score_scale():
    rng = np.random.default_rng(33)
    right = 0
    for trial in range(8):
        truth = 1 if trial % 2 else -1
        hp, mag, c, diam, vox, A = _small_trial(rng, truth, +1)
        plus = D.voxel_model_sign(hp, mag, c, [0.4 * diam], vox, A, phase_sign=+1)
        minus = D.voxel_model_sign(-hp, mag, c, [0.4 * diam], vox, A, phase_sign=-1)  # the other vendor's storage
        assert plus[2] == minus[2]
        assert plus[1] == pytest.approx(minus[1], rel=1e-9)
        wrong = D.voxel_model_sign(hp, mag, c, [0.4 * diam], vox, A, phase_sign=-1)  # convention set wrong
        assert wrong[2] == -plus[2]
        if plus[2] == truth:
            right += 1
            assert 0.5 < truth * plus[0] <= 1.0  # a clean source scores near +-1
    assert right >= 6


def test_voxel_model_no_fit_at_the_image_edge_or_without_voxels():
    A = np.diag([1.0, 1.0, 2.0, 1.0])
    ph = np.zeros((16, 16, 2), np.float32)
    mag = np.ones((16, 16, 2), np.float32)
    score, z, sign = D.voxel_model_sign(ph, mag, (8, 8, 0.5), [0.5], (1, 1, 2), A)  # 2 slices: too thin
    assert np.isnan(score) and np.isnan(z) and sign == 0
    with pytest.raises(ValueError, match="phase_sign"):
        D.voxel_model_sign(ph, mag, (8, 8, 1), [0.5], (1, 1, 2), A, phase_sign=0)


def test_candidate_signs_falls_back_to_the_voxel_model():
    from types import SimpleNamespace

    rng = np.random.default_rng(34)
    rows, truths = [], []
    for trial in range(6):
        truth = 1 if trial % 2 else -1
        hp, mag, c, diam, vox, A = _small_trial(rng, truth, -1)
        swi = SimpleNamespace(filtered_phase=hp, magnitude=mag, phase_sign=-1, sign_evidence={"confidence": "forced"})
        row = {"centroid_canonical": c, "diameter_mm": diam}
        D.candidate_signs([row], swi, SimpleNamespace(voxel_size_mm=vox, affine=A))
        radii = [f * diam for f in D.SOURCE_RADIUS_PER_DIAMETER]
        shell = {s for _, s in D._source_fits(hp, mag, c, radii, vox, A, phase_sign=-1) if s}
        if len(shell) == 1:  # the shell fit decided: its sign
            assert row["phase_sign"] == shell.pop()
        else:  # undecided: the voxel model's, at the shell fit's three radii
            assert row["phase_sign"] == D.voxel_model_sign(hp, mag, c, radii, vox, A, phase_sign=-1)[2]
        assert row["phase_trusted"] is True
        rows.append(row)
        truths.append(truth)
    assert sum(r["phase_sign"] == t for r, t in zip(rows, truths)) >= 5
    assert all(np.sign(r["phase_score"]) == r["phase_sign"] for r in rows if r["phase_sign"])


def test_voxel_model_at_three_radii_decides_more_small_sources_and_no_more_noise():
    """The source's radius inside its blooming outline is unknown (0.3-0.5 of the outline's
    diameter, as for the shell fit): the radius of the best coherence decides. On small sources
    it decides at least as many as the middle radius alone, never the wrong sign; without a
    source (a dark sphere of no susceptibility, random phase) it decides as rarely."""
    rng = np.random.default_rng(36)
    one = three = wrong = 0
    for trial in range(24):
        truth = 1 if trial % 2 else -1
        conv = 1 if (trial // 2) % 2 else -1
        hp, mag, c, diam, vox, A = _small_trial(rng, truth, conv)
        radii = [f * diam for f in D.SOURCE_RADIUS_PER_DIAMETER]
        one += D.voxel_model_sign(hp, mag, c, [0.4 * diam], vox, A, phase_sign=conv)[2] == truth
        sign = D.voxel_model_sign(hp, mag, c, radii, vox, A, phase_sign=conv)[2]
        three += sign == truth
        wrong += sign == -truth
    assert wrong == 0
    assert three >= one
    decided = 0
    for _ in range(8):
        hp, mag, c, diam, vox, A = _small_trial(rng, 0, +1)
        decided += D.voxel_model_sign(hp, mag, c, [f * diam for f in D.SOURCE_RADIUS_PER_DIAMETER], vox, A)[2] != 0
    for _ in range(16):
        A = random_affine(rng, (1.0, 1.0, 2.0))
        ph = rng.uniform(-np.pi, np.pi, (16, 16, 8))
        mag = rng.uniform(0.5, 1.0, (16, 16, 8))
        decided += D.voxel_model_sign(ph, mag, rng.uniform(6, 10, 3) * [1, 1, 0.5], [0.6, 0.8, 1.0], (1.0, 1.0, 2.0),
                                      A)[2] != 0
    assert decided <= 1


def test_model_coherence_kernel_matches_numpy():
    rng = np.random.default_rng(35)
    cs = np.geomspace(0.05, 80.0, 7)
    m = rng.normal(0, 0.5, (40, 12))
    rho = (rng.uniform(size=m.shape) > 0.1).astype(float)
    data = rng.uniform(0.2, 1.0, 40) * np.exp(1j * rng.uniform(-np.pi, np.pi, 40))
    phi, pos, neg = D._model_coherence(cs, m, rho, data)
    ref_phi, ref_pos, ref_neg = D.model_coherence_reference(cs, m.astype(np.float32).astype(float), rho, data)
    assert np.allclose(np.exp(1j * phi), np.exp(1j * ref_phi), atol=1e-4)
    assert np.allclose(pos, ref_pos, rtol=1e-4) and np.allclose(neg, ref_neg, rtol=1e-4)



def test_voxel_model_no_fit_on_a_large_neighbourhood():
    ph = np.zeros((120, 120, 120), np.float32)
    mag = np.ones_like(ph)
    A = np.diag([0.6, 0.6, 0.6, 1.0])
    small = D.voxel_model_sign(ph, mag, (60, 60, 60), [1.0], (0.6, 0.6, 0.6), A)
    assert np.isfinite(small[1])  # fitted (a field-free focus: no decision)
    large = D.voxel_model_sign(ph, mag, (60, 60, 60), [4.0], (0.6, 0.6, 0.6), A)  # a 20 mm region
    assert np.isnan(large[1]) and large[2] == 0


# --------------------------------------------------------------------------------------------
# the handedness estimate's shortcuts: the same decisions and values as the plain computation
# --------------------------------------------------------------------------------------------

def _tube_voxels_lapack(mag, idx, vox, A, sigma_mm):
    """The tube test with LAPACK's eigen-decomposition of every Hessian (the plain computation)."""
    Hw = D._hessian_world_at(mag, idx, vox, A, sigma_mm)
    lam_s, axis_vec = D._eigen_by_magnitude(Hw)
    scale = np.percentile(np.abs(lam_s[:, 2]), D.TUBE_SCALE_PERCENTILE) + 1e-12
    return D._tube_test(lam_s, axis_vec, scale)


@pytest.mark.parametrize("seed", [0, 3])
def test_tube_voxels_are_lapacks_bit_for_bit(seed):
    """Analytic eigenvalues with LAPACK only where the test could change: the same tubes, axes and
    strengths as LAPACK on every dark voxel (veins, foci and noise; an oblique affine)."""
    rng = np.random.default_rng(seed)
    vox, A, src, _ = _vein_phantom(rng, +1)
    mag, _ = make_volume(np.random.default_rng(seed + 10), (48, 48, 24), A, src, 3.0, 20.0, 20.0, +1, ss=2)
    A3 = A[:3, :3] @ np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.05], [0.0, 0.0, 1.0]])  # oblique too
    for lin in (A[:3, :3], A3):
        v = np.linalg.norm(lin, axis=0)
        idx = np.nonzero(mag < np.percentile(mag, 30))
        tube, axis, strength = D._tube_voxels(mag, idx, v, lin, 0.7)
        want_tube, want_axis, want_strength = _tube_voxels_lapack(mag, idx, v, lin, 0.7)
        assert 20 < want_tube.sum() < want_tube.size
        np.testing.assert_array_equal(tube, want_tube)
        np.testing.assert_array_equal(axis.view(np.uint32), want_axis.view(np.uint32))
        np.testing.assert_array_equal(strength.view(np.uint32), want_strength.view(np.uint32))


def test_exact_percentile_of_the_largest_eigenvalue():
    """The scale's percentile from the analytic eigenvalues and a few LAPACK ones equals numpy's
    percentile of LAPACK's, also with ties and degenerate (diagonal, zero) matrices."""
    rng = np.random.default_rng(2)
    H = rng.normal(size=(5000, 3, 3)).astype(np.float32)
    H = (H + H.transpose(0, 2, 1)) / np.float32(2)
    H[:300] = H[0]  # ties
    H[300:400] = np.diag([1.0, -2.0, 0.5]).astype(np.float32)
    H[400:450] = 0.0
    lam, bound = D._symmetric_eigenvalues(H)
    for q in (0, 10, 50, 90, 100):
        got = D._exact_largest_percentile(H, lam, bound, q)
        want = np.percentile(np.abs(D._eigen_by_magnitude(H)[0][:, 2]), q)
        assert got.dtype == want.dtype and got == want


def test_signed_rank_p_is_scipys_wilcoxon_bit_for_bit():
    """The normal approximation computed without scipy.stats gives scipy's p exactly (ties, both
    signs, large and small effects); small samples go to scipy itself."""
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(4)
    for trial in range(300):
        n = int(rng.integers(D.WILCOXON_EXACT_MAX + 1, 2000))
        d = rng.normal(rng.normal(0.0, 0.2), 1.0, n)
        if trial % 2:
            d = np.round(d, 1)  # ties
        d = d[d != 0]
        if d.size > D.WILCOXON_EXACT_MAX:
            assert D._signed_rank_normal_p(d) == float(wilcoxon(d).pvalue)
    small = rng.normal(0.3, 1.0, 30)
    assert D._signed_rank_p(np.r_[small, 0.0]) == float(wilcoxon(small).pvalue)
    assert D._signed_rank_p(np.zeros(5)) == 1.0


def test_erosion_on_the_masks_box_is_the_whole_volumes():
    """The estimate's edge band eroded on the mask's bounding box: the whole volume's erosion,
    masks touching the image's edges included (beyond the image counts as inside)."""
    from microbleeds.stages.prepare import erode_mm

    rng = np.random.default_rng(5)
    for _trial in range(30):
        mask = np.zeros((21, 24, 15), bool)
        lo = rng.integers(0, 9, 3)
        hi = np.minimum(lo + rng.integers(3, 16, 3), mask.shape)
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.random(tuple(hi - lo)) > 0.1
        v = rng.uniform(0.3, 1.5, 3)
        np.testing.assert_array_equal(D._erode_on_box(mask, v, 1.7), erode_mm(mask, v, 1.7))
    assert not D._erode_on_box(np.zeros((5, 5, 5), bool), v, 1.0).any()


# --------------------------------------------------------------------------------------------
# veins along B0 seen end-on on thick slices (columns)
# --------------------------------------------------------------------------------------------

def _column_phantom(rng, conv, dchi=(0.15, 0.25), n_columns=14):
    """1 x 1 x 2 mm slices (the 2 mm axis along B0 = world z, axes flipped at random): veins within
    15 deg of B0, a few veins across it, wrapped phase in convention ``conv``."""
    vox = np.array([1.0, 1.0, 2.0])
    shape = (56, 56, 20)
    A = np.diag(np.r_[rng.choice([-1, 1], 3) * vox, 1.0])
    A[:3, 3] = rng.uniform(-50, 50, 3)
    ctr = A[:3, :3] @ (np.array(shape) / 2) + A[:3, 3]
    grid = [(x, y) for x in range(-20, 21, 8) for y in range(-20, 21, 8)]
    src = []
    for k in rng.permutation(len(grid))[:n_columns]:
        tilt = np.radians(rng.uniform(0, 15))
        az = rng.uniform(0, 2 * np.pi)
        u = np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)])
        p = ctr + np.r_[np.array(grid[k]) + rng.uniform(-1.5, 1.5, 2), 0.0]
        src.append(("cyl", p, u, rng.uniform(0.6, 0.9), rng.uniform(*dchi), 0.3))
    for _ in range(3):  # veins across B0 (negative inside, dark dephased voxels beside them)
        az = rng.uniform(0, np.pi)
        src.append(("cyl", ctr + np.r_[0.0, 0.0, rng.uniform(-12, 12)], np.array([np.cos(az), np.sin(az), 0.0]),
                    rng.uniform(0.6, 0.9), rng.uniform(*dchi), 0.3))
    # a gentle background: the 3D homodyne filter leaves a 0.3 rad/mm gradient across 2 mm slices
    # (0.6 rad a slice) as a residual ramp of up to 1 rad at the field's ends
    mag, ph = make_volume(rng, shape, A, src, 3.0, 20.0, 25.0, conv, ss=2, curvature=0.0005, gradient=0.01)
    return mag, P.homodyne_highpass(mag, ph, vox, mode="3d"), A


@pytest.mark.parametrize("conv", [+1, -1])
def test_veins_along_b0_give_the_convention_on_thick_slices(conv):
    """Inside a vein parallel to B0 the field is +dchi/3 B0: each column votes with the sign of its
    phase against its ring, and the columns settle the convention in both storage conventions."""
    mag, hp, A = _column_phantom(np.random.default_rng(40), conv)
    vox = np.linalg.norm(A[:3, :3], axis=0)
    mask = np.ones(mag.shape, bool)
    rel = D._relative_magnitude(mag, mask, vox)
    inner = D._evidence_region(mask, vox, 1.0)
    contrasts = D._column_votes(hp, rel, inner, A[:3, :3], vox, B0)
    ev = {}
    sign, conf = D._column_evidence(contrasts, ev)
    print(conv, ev, np.round(contrasts, 2))
    assert (sign, conf) == (conv, "moderate")
    assert ev["columns"] >= 10 and ev["column_agreement"] >= 0.9
    est, ev = D.estimate_phase_sign(hp, mag, A)
    print(est, ev)
    assert est == conv and ev["confidence"] in ("high", "moderate") and "veins along B0" in ev["method"]


def test_columns_without_susceptibility_or_across_b0_give_no_vote():
    """Dark columns without a field stay under the phase floor; with B0 at 45 deg to every grid axis
    there are no columns to test."""
    mag, hp, A = _column_phantom(np.random.default_rng(41), +1, dchi=(0.0, 0.0))
    vox = np.linalg.norm(A[:3, :3], axis=0)
    mask = np.ones(mag.shape, bool)
    rel = D._relative_magnitude(mag, mask, vox)
    inner = D._evidence_region(mask, vox, 1.0)
    ev = {}
    assert D._column_evidence(D._column_votes(hp, rel, inner, A[:3, :3], vox, B0), ev)[1] == "none"
    oblique = np.array([1.0, 0.0, 1.0]) / np.sqrt(2)
    assert D._column_votes(hp, rel, inner, A[:3, :3], vox, oblique).size == 0
    assert D._column_evidence(np.zeros(0), ev) == (0, "none") and ev["columns"] == 0


def test_column_evidence_thresholds():
    """A binomial sign test over columns: 11 of 11 (p 0.001) moderate, 10 of 10 (p 0.002) low,
    9 of 10 (p 0.02), 7 of 10 and a tie none."""
    ev = {}
    assert D._column_evidence(np.ones(11), ev) == (1, "moderate") and ev["column_p"] < 1e-3
    assert D._column_evidence(-np.ones(10), ev) == (-1, "low")
    assert D._column_evidence(np.r_[-np.ones(9), np.ones(1)], ev) == (-1, "none")
    assert D._column_evidence(np.r_[np.ones(7), -np.ones(3)], ev) == (1, "none")
    assert D._column_evidence(np.r_[np.ones(5), -np.ones(5)], ev) == (0, "none")



def test_ring_mean_is_the_mean_over_the_ring():
    """The ring mean at an interior voxel is the plain mean of the box's border voxels."""
    img = np.random.default_rng(3).normal(size=(12, 9, 7)).astype(np.float32)
    for outer, at in (([5, 5, 1], (6, 4, 3)), ([1, 7, 5], (5, 4, 3))):
        box = img[tuple(slice(c - n // 2, c + n // 2 + 1) for c, n in zip(at, outer))].astype(np.float64)
        core = box[tuple(slice(None) if n == 1 else slice(1, -1) for n in outer)]
        want = (box.sum() - core.sum()) / (box.size - core.size)
        assert abs(float(D._ring_mean(img, outer)[at]) - want) < 1e-5


@pytest.mark.parametrize("size", [[11, 11, 1], [9, 1, 9], [1, 5, 7], [3, 3, 3], [1, 1, 1], [25, 1, 1]])
def test_box_mean_is_scipys_uniform_filter_bit_for_bit(size):
    """The numba box means against ``scipy.ndimage.uniform_filter`` (mode nearest) on a float32 image,
    a strided view of one and lines shorter than the window; and the ring mean against scipy's."""
    rng = np.random.default_rng(8)
    img = (rng.normal(size=(23, 17, 600)) * 10 + 50).astype(np.float32)
    for view in (img, img[2:20, ::2, 5:40]):
        want = ndi.uniform_filter(view, size=size, mode="nearest")
        np.testing.assert_array_equal(D._box_mean(view, size).view(np.uint32), want.view(np.uint32))
    ring = ndi.uniform_filter(img, size=[11, 11, 1], mode="nearest")
    ring *= 121
    ring -= 81 * ndi.uniform_filter(img, size=[9, 9, 1], mode="nearest")
    ring /= 40
    np.testing.assert_array_equal(D._ring_mean(img, [11, 11, 1]).view(np.uint32), ring.view(np.uint32))


def test_sign_test_p_is_scipys_binomtest():
    from scipy.stats import binomtest

    for n in (1, 2, 5, 8, 10, 17, 40, 101):
        for k in range((n + 1) // 2, n + 1):
            assert math.isclose(D._sign_test_p(k, n), binomtest(k, n).pvalue, rel_tol=1e-9)


def test_candidate_signs_in_threads_match_one_thread():
    """The candidates' fits run on as many threads as numba has: the rows get the same values
    as on one thread, bit for bit, in any order of completion."""
    import numba
    from types import SimpleNamespace

    rng = np.random.default_rng(35)
    hp, mag, c, diam, vox, A = _small_trial(rng, 1, -1)
    swi = SimpleNamespace(filtered_phase=hp, magnitude=mag, phase_sign=-1, sign_evidence={"confidence": "forced"})
    scan = SimpleNamespace(voxel_size_mm=vox, affine=A)
    centres = [c] + [np.array(hp.shape) / 2 + rng.uniform(-3, 3, 3) for _ in range(11)]
    diameters = [diam] + list(rng.uniform(0.8, 3.0, 11))
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            rows = [{"centroid_canonical": ce, "diameter_mm": d} for ce, d in zip(centres, diameters)]
            D.candidate_signs(rows, swi, scan)
            results.append([(r["phase_sign"], r["phase_score"], r["phase_trusted"]) for r in rows])
    finally:
        numba.set_num_threads(before)
    assert results[0] == results[1]
    assert any(sign for sign, _, _ in results[0])  # the true source is decided
