"""The phantom's truth regions follow MARS (Gregoire et al. 2009) on its own tissue model.

MNI head (``anatomy="mni"``): the truth classes of :func:`~microbleeds.bench.phantoms.head._mni_mars_volume`
(deep grey grown from the nuclei ellipsoids along the ICBM152 grey matter, the cerebellum bounded
by the tentorial gap of the ICBM152 tissue maps, the corpus callosum deep), and the juxtacortical
rule for cerebral white matter, checked here independently with a distance transform. The
images never depend on these rules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from microbleeds.bench import phantoms as P
from microbleeds.bench.phantoms import head as H
from microbleeds.bench.phantoms.params import _BRAIN
from microbleeds.bench.phantoms.truth import _truth_location
from microbleeds.contract import MARS_JUXTACORTICAL_MM

pytest.importorskip("nilearn")


@pytest.fixture(scope="module")
def mni():
    """(anatomy, MARS volume, its 1 mm affine) of the MNI head at scale 1."""
    anat = H._make_anatomy(P.PhantomParams(anatomy="mni", seed=5), np.random.default_rng(5))
    _, _, aff = H._mni_volume()
    return anat, H._mni_mars_volume(), aff


# (MNI point mm, MARS class): landmarks on either side of each boundary the truth draws
LANDMARKS = [
    ((-25, 3, 2), H.MARS_BASAL_GANGLIA),    # putamen (inside its ellipsoid)
    ((15, -5, 22), H.MARS_BASAL_GANGLIA),   # caudate body: grey matter beyond the caudate-head ellipsoid
    ((-11, -30, 5), H.MARS_THALAMUS),       # pulvinar: behind the thalamus ellipsoid
    ((-38, 0, 0), H.MARS_CORTEX),           # insula, 8-13 mm lateral of the putamen
    ((38, 2, 2), H.MARS_CORTEX),
    ((-28, -20, -12), H.MARS_CORTEX),       # hippocampus (MARS: temporal lobe)
    ((40, -55, -20), H.MARS_CORTEX),        # fusiform gyrus, under the image's tentorium plane
    ((-40, -55, -20), H.MARS_CORTEX),
    ((30, -65, -35), H.MARS_CEREBELLUM),
    ((-30, -65, -35), H.MARS_CEREBELLUM),
    ((0, -30, -30), H.MARS_BRAINSTEM),
    ((0, 0, 22), H.MARS_CALLOSUM),          # body of the corpus callosum
    ((-4, -20, 25), H.MARS_CALLOSUM),
    ((-10, 20, 40), H.MARS_CEREBRAL_WM),    # medial frontal white matter: not the callosum
    ((-12, -40, 40), H.MARS_CEREBRAL_WM),
]


@pytest.mark.parametrize("xyz, cls", LANDMARKS)
def test_mni_truth_classes_at_landmarks(mni, xyz, cls):
    anat, _, _ = mni
    assert int(anat.mars(np.array([xyz], float))[0]) == cls


def test_mni_truth_classes_are_plausible_volumes(mni):
    _, vol, aff = mni
    ml = np.bincount(vol.ravel(), minlength=8) * abs(np.linalg.det(aff[:3, :3])) / 1000.0
    # deep grey: the nuclei ellipsoids hold 13 ml; grown along the grey matter, not into the
    # cortex (an adult's striatum + pallidum + thalami: roughly 35-50 ml)
    deep = ml[H.MARS_BASAL_GANGLIA] + ml[H.MARS_THALAMUS]
    assert 30.0 < deep < 60.0, ml
    assert 100.0 < ml[H.MARS_CEREBELLUM] < 220.0, ml
    assert 2.0 < ml[H.MARS_CALLOSUM] < 20.0, ml
    # the callosum is a midline structure, and every ellipsoid nucleus voxel is deep grey
    lab, _, _ = H._mni_volume()
    x = aff[0, 0] * np.arange(vol.shape[0]) + aff[0, 3]
    cc_x = x[np.nonzero(vol == H.MARS_CALLOSUM)[0]]
    assert np.abs(cc_x).max() <= H.MARS_CALLOSUM_HALF_MM + 1e-6
    nuclei = np.isin(lab, (P.CAUDATE, P.PUTAMEN, P.PALLIDUM, P.THALAMUS))
    assert np.isin(vol[nuclei], (H.MARS_BASAL_GANGLIA, H.MARS_THALAMUS)).all()


def _cortex_gap_mm(vol, aff, centre, radius):
    """Independent juxtacortical distance: from the sphere's surface to the nearest face of a
    cortex voxel of the MARS volume (exact distance to an axis-aligned voxel cube), in mm."""
    inv = np.linalg.inv(aff)
    v = inv[:3, :3] @ centre + inv[:3, 3]
    lo = np.floor(v - radius - 8).astype(int)
    hi = np.ceil(v + radius + 8).astype(int) + 1
    idx = np.argwhere(vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == H.MARS_CORTEX) + lo
    if not len(idx):
        return math.inf
    gap = np.maximum(np.abs(idx - v) - 0.5, 0.0)  # 1 mm voxels: centre to cube face per axis
    return max(float(np.sqrt((gap ** 2).sum(axis=1)).min()) - radius, 0.0)


def test_mni_truth_regions_follow_the_mars_rule(mni):
    """300 random sources in the MNI head: fixed classes give their region; cerebral white matter
    is lobar exactly when the sphere lies within 3 mm of cortex (checked away from the boundary,
    where the 0.2 mm sampling of the truth and this exact distance can differ)."""
    anat, vol, aff = mni
    rng = np.random.default_rng(2009)
    pts = rng.uniform((-65, -100, -50), (65, 70, 75), size=(6000, 3))
    lab, dep = anat.points(pts)
    keep = np.isin(lab, _BRAIN)
    pts, lab, dep = pts[keep][:300], lab[keep][:300], dep[keep][:300]
    expect = {H.MARS_CORTEX: "lobar", H.MARS_BASAL_GANGLIA: "deep", H.MARS_THALAMUS: "deep",
              H.MARS_CALLOSUM: "deep", H.MARS_BRAINSTEM: "infratentorial",
              H.MARS_CEREBELLUM: "infratentorial"}
    checked = {"fixed": 0, "juxtacortical": 0, "deep_wm": 0}
    for p, lb, dp in zip(pts, lab, dep):
        radius = 1.5
        region, lobe, _ = _truth_location(p, radius, int(lb), float(dp), anat)
        cls = int(anat.mars(p[None])[0])
        if cls in expect:
            assert region == expect[cls], (p, cls, region)
            checked["fixed"] += 1
            continue
        assert cls == H.MARS_CEREBRAL_WM
        gap = _cortex_gap_mm(vol, aff, p, radius)
        if gap < MARS_JUXTACORTICAL_MM - 0.5:
            # juxtacortical unless deep grey is nearer (capsules)
            inv = np.linalg.inv(aff)
            v = np.rint(inv[:3, :3] @ p + inv[:3, 3]).astype(int)
            near = vol[tuple(slice(a - 6, a + 7) for a in v)]
            if not np.isin(near, (H.MARS_BASAL_GANGLIA, H.MARS_THALAMUS)).any():
                assert region == "lobar", (p, gap, region)
                checked["juxtacortical"] += 1
        elif gap > MARS_JUXTACORTICAL_MM + 0.5:
            assert region == "deep" and lobe == "deep_white_matter", (p, gap, region)
            checked["deep_wm"] += 1
    assert min(checked.values()) >= 10, checked


def test_truth_rules_do_not_touch_the_image(monkeypatch):
    """The MNI phantom's images do not depend on the truth classes: with every truth class
    replaced by cortex the magnitude and phase are bit-identical, and only the truth changes."""
    kw = dict(fov_mm=(150.0, 186.0, 40.0), voxel_size_mm=(2.0, 2.0, 2.5), centre_mm=(0.0, -18.0, 10.0),
              n_veins=8, n_cmb=6, n_calcifications=0, cmb_diameter_range_mm=(2.0, 4.0), seed=8,
              anatomy="mni", region_weights={"deep": 1.0})
    a = P.simulate(P.PhantomParams(**kw))
    vol = H._mni_mars_volume()
    fake = np.where(vol > 0, H.MARS_CORTEX, 0).astype(np.uint8)
    monkeypatch.setattr(H, "_mni_mars_volume", lambda: fake)
    b = P.simulate(P.PhantomParams(**kw))
    np.testing.assert_array_equal(a.magnitude, b.magnitude)
    np.testing.assert_array_equal(a.phase, b.phase)
    assert {t["region"] for t in b.truth} == {"lobar"}
    assert "deep" in {t["region"] for t in a.truth}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grow_matches_numpy_reference(seed):
    """The breadth-first kernel gives the reference's labels, ties included, on random masks."""
    from microbleeds.bench.phantoms.flood import grow, grow_reference

    rng = np.random.default_rng(seed)
    allowed = rng.random((9, 11, 7)) < 0.7
    labels = np.zeros(allowed.shape, np.int32)
    for v in (1, 2, 3):
        labels[tuple(rng.integers(0, n) for n in allowed.shape)] = v
    out = grow(labels, allowed)
    np.testing.assert_array_equal(out, grow_reference(labels, allowed))
    assert set(np.unique(out[allowed & (out > 0)])) <= {1, 2, 3}


def test_grow_is_a_geodesic_voronoi_split():
    """In a corridor the two seeds meet half-way along the corridor, not in a straight line: a
    U-shaped tube whose ends are 2 voxels apart across a wall."""
    from microbleeds.bench.phantoms.flood import flood_by_level, grow

    allowed = np.zeros((12, 5, 1), bool)
    allowed[:, 0] = allowed[:, 4] = True  # two arms
    allowed[11, :] = True  # joined at the far end
    labels = np.zeros(allowed.shape, np.int32)
    labels[0, 0, 0], labels[0, 4, 0] = 1, 2
    out = grow(labels, allowed)
    assert (out[:, 0, 0] == 1).all() and (out[:, 4, 0] == 2).all()  # each arm to its own seed
    assert out[11, 1, 0] == 1 and out[11, 3, 0] == 2
    # by level: a cheap path is flooded first even when it is longer
    cost = np.where(allowed, 0.0, 1.0)
    cost[11, 2, 0] = 0.9  # the joint is expensive: both arms are filled first
    out = flood_by_level(cost, labels, allowed, [0.1, 0.5])
    assert (out[:, 0, 0] == 1).all() and (out[:, 4, 0] == 2).all()
