"""What fools a microbleed detector on real scans, for the phantom: cavernous malformations,
cortical superficial siderosis, arterial flow voids and dural sinuses (painted as tissue classes on
the fine grid, so that their field is in the dipole convolution and their signal is averaged like
any tissue's), and the hard microbleeds: clusters, microbleeds beside veins, lobulated ones.

Every random draw here comes from its own generator (``seed``, stream number), so a phantom
without these features is the same bit for bit as before they existed.

Units: mm (world RAS+), ppm.
"""

from __future__ import annotations

import numpy as np

from .head import _E_BRAINSTEM, _E_CEREBELLUM, _E_CEREBRUM
from .params import (
    _BRAIN,
    CAV_BRIGHT,
    CAV_CORE,
    CAV_DARK,
    CAV_RIM,
    CSF,
    DURAL_SINUS,
    FLOW_VOID,
    GM,
    SIDEROSIS,
)

STREAM_PAINT, STREAM_CLUSTER, STREAM_NEAR_VEIN, STREAM_LOBES, STREAM_ACQ = 101, 102, 103, 104, 105
"""Numbers of the generators ``default_rng([seed, stream])`` of each feature."""
RIM_MM = (1.0, 1.8)
"""Thickness range of a cavernoma's haemosiderin rim (mm)."""
CLUSTER_MAX_CENTRE_MM = 5.0
CLUSTER_MIN_GAP_MM = 0.8
CLUSTER_DIAMETER_MM = (1.0, 2.5)
NEAR_VEIN_GAP_MM = (0.5, 1.5)
NEAR_VEIN_DIAMETER_MM = (1.0, 3.0)
SIDEROSIS_EXTENT_MM = (20.0, 40.0)


def feature_rng(seed, stream):
    """The generator of one feature (independent of the phantom's main random stream)."""
    return np.random.default_rng([int(seed), int(stream)])


# --------------------------------------------------------------------------------------------
# painted objects: a list of dicts {"kind", "centre", "radius", ...}, and their truth rows
def plan_painted(params, anat, fov_lo, fov_hi):
    """Objects to paint on the fine grid: cavernomas and siderosis patches (with truth rows),
    arteries and dural sinuses (centre-line tubes; no truth row)."""
    rng = feature_rng(params.seed, STREAM_PAINT)
    objects = []
    lo, hi = np.asarray(fov_lo, float), np.asarray(fov_hi, float)
    for _ in range(int(params.n_cavernomas)):
        obj = _plan_cavernoma(params, rng, anat, lo, hi, objects)
        if obj is not None:
            objects.append(obj)
    for _ in range(int(params.n_siderosis)):
        obj = _plan_siderosis(rng, anat, lo, hi, objects)
        if obj is not None:
            objects.append(obj)
    ell = anat.ell
    if params.with_arteries:
        objects += _arteries(ell)
    if params.with_dural_sinuses:
        objects += _sinuses(ell)
    return objects


def _far_from(p, r, objects, gap=6.0):
    return all(np.linalg.norm(p - o["centre"]) >= r + o["radius"] + gap
               for o in objects if "centre" in o)


def _plan_cavernoma(params, rng, anat, lo, hi, objects):
    d = rng.uniform(*params.cavernoma_diameter_range_mm)
    R = d / 2.0
    c, h = anat.boxes["lobar"]
    a, b = np.maximum(c - h, lo + R), np.minimum(c + h, hi - R)
    if np.any(b <= a):
        return None
    for p in rng.uniform(a, b, size=(2000, 3)):
        labs, deps = anat.points(p[None, :])
        if int(labs[0]) not in _BRAIN or float(deps[0]) < R + 4.0 or not _far_from(p, R, objects):
            continue
        rim = rng.uniform(*RIM_MM)
        n_lob = int(rng.integers(5, 10))
        lobules = []
        for _k in range(n_lob):
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            rr = rng.uniform(1.2, 0.35 * R + 1.0)
            off = u * rng.uniform(0.0, max(R - rim - rr, 0.1))
            lobules.append((p + off, rr, CAV_BRIGHT if _k % 2 == 0 else CAV_DARK))
        harm = rng.normal(scale=0.08, size=(4, 3))
        return {"kind": "cavernoma", "centre": p, "radius": R, "rim": rim, "lobules": lobules,
                "harmonics": harm, "diameter_mm": d}
    return None


def _plan_siderosis(rng, anat, lo, hi, objects):
    ext = rng.uniform(*SIDEROSIS_EXTENT_MM)
    ell = anat.ell[_E_CEREBRUM]
    for _ in range(4000):
        u = rng.normal(size=3)
        u[2] = abs(u[2]) * 0.6  # convexity above the tentorium
        u /= np.linalg.norm(u)
        p = ell[:3] + u * ell[3:] * 1.0
        if np.any(p < lo + 5) or np.any(p > hi - 5):
            continue
        labs, deps = anat.points(p[None, :])
        p = p + u * float(deps[0])  # onto the pial surface (depth 0), from either side
        labs, deps = anat.points(p[None, :])
        if abs(float(deps[0])) > 2.0 or not _far_from(p, ext / 2, objects, gap=3.0):
            continue
        return {"kind": "siderosis", "centre": p, "radius": ext / 2.0, "diameter_mm": ext}
    return None


def _tube(points, radius, cls):
    pts = np.asarray(points, float)
    return {"kind": "tube", "points": pts, "radius": float(radius), "cls": cls}


def _polyline(a, b, n=40):
    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t


def _arteries(ell):
    """Basilar (through-plane), middle and anterior cerebral arteries of the analytic head."""
    cer, bs = ell[_E_CEREBRUM], ell[_E_BRAINSTEM]
    front = bs[:3] + np.array([0.0, bs[4] + 2.5, 0.0])
    basilar = _polyline(front - [0, 0, 0.8 * bs[5]], front + [0, 0, 0.4 * bs[5]])
    willis = front + [0.0, 6.0, 0.4 * bs[5] + 3.0]
    tubes = [_tube(basilar, 1.5, FLOW_VOID)]
    for side in (-1.0, 1.0):
        mca_end = willis + [side * 0.6 * cer[3], 4.0, 6.0]
        tubes.append(_tube(_polyline(willis + [side * 3.0, 0, 0], mca_end), 1.3, FLOW_VOID))
        aca = np.array([[side * 1.5, 0.0, 0.0], [side * 1.5, 15.0, 8.0], [side * 1.5, 25.0, 25.0],
                        [side * 1.5, 15.0, 45.0]]) + willis
        pts = np.concatenate([_polyline(aca[i], aca[i + 1], 25) for i in range(3)])
        tubes.append(_tube(pts, 1.0, FLOW_VOID))
    return tubes


def _sinuses(ell):
    """Superior sagittal, straight and transverse sinuses, just outside the analytic brain."""
    cer, cb = ell[_E_CEREBRUM], ell[_E_CEREBELLUM]
    th = np.linspace(0.15 * np.pi, 0.95 * np.pi, 120)
    out = 4.0
    sss = np.stack([np.full_like(th, cer[0]), cer[1] + (cer[4] + out) * np.cos(th),
                    cer[2] + (cer[5] + out) * np.sin(th)], axis=1)
    conf = np.array([cer[0], cer[1] - cer[4] - out, cb[2] + 0.3 * cb[5]])
    straight = _polyline(conf, [cer[0], cer[1] - 0.3 * cer[4], cer[2] + 0.1 * cer[5]])
    tubes = [_tube(sss, 3.5, DURAL_SINUS), _tube(straight, 2.5, DURAL_SINUS)]
    ph = np.linspace(0.0, 0.45 * np.pi, 50)
    for side in (-1.0, 1.0):
        pts = np.stack([cb[0] + side * (cb[3] + out) * np.sin(ph), cb[1] - (cb[4] + out) * np.cos(ph),
                        np.full_like(ph, conf[2])], axis=1)
        tubes.append(_tube(pts, 3.0, DURAL_SINUS))
    return tubes


def painted_rows(objects):
    """(kind, centre, diameter) of the painted objects that are truth rows (mimics)."""
    return [(o["kind"], o["centre"], o["diameter_mm"]) for o in objects
            if o["kind"] in ("cavernoma", "siderosis")]


def clearance_points(objects):
    """Centre-line points and radii (mm) of the painted tubes, for the sources' clearance."""
    pts = [o["points"] for o in objects if o["kind"] == "tube"]
    rad = [np.full(len(o["points"]), o["radius"]) for o in objects if o["kind"] == "tube"]
    if not pts:
        return np.zeros((0, 3)), np.zeros(0)
    return np.concatenate(pts), np.concatenate(rad)


def paint(lab, fmat, ftrans, objects, anat):
    """Paint ``objects`` (in place) into the fine label grid ``lab`` of voxel-to-world
    ``(fmat, ftrans)``; only brain / CSF voxels change, except for the sinuses."""
    inv = np.linalg.inv(fmat)
    for o in objects:
        if o["kind"] == "tube":
            pts, r = o["points"], o["radius"]
            lo_w, hi_w = pts.min(axis=0) - r - 1.0, pts.max(axis=0) + r + 1.0
        else:
            lo_w, hi_w = o["centre"] - o["radius"] - 2.0, o["centre"] + o["radius"] + 2.0
        box, world = _box_points(lo_w, hi_w, inv, fmat, ftrans, lab.shape)
        if world is None:
            continue
        sub = lab[box]
        new = _paint_one(o, world, sub.reshape(-1), anat)
        sub[...] = new.reshape(sub.shape)


def _box_points(lo_w, hi_w, inv, fmat, ftrans, shape):
    corners = np.array([[x, y, z] for x in (lo_w[0], hi_w[0]) for y in (lo_w[1], hi_w[1])
                        for z in (lo_w[2], hi_w[2])])
    idx = (corners - ftrans) @ inv.T
    lo = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None, None
    grids = np.meshgrid(*(np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi)), indexing="ij")
    ijk = np.stack([g.reshape(-1) for g in grids], axis=1)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), ijk @ fmat.T + ftrans


def _paint_one(o, world, labs, anat):
    out = labs.copy()
    if o["kind"] == "tube":
        d = _distance_to_polyline(world, o["points"])
        inside = d <= o["radius"]
        if o["cls"] == FLOW_VOID:
            inside &= np.isin(labs, _BRAIN + (CSF,))
        out[inside] = o["cls"]
        return out
    rel = world - o["centre"]
    r = np.sqrt(np.sum(rel * rel, axis=1))
    if o["kind"] == "cavernoma":
        u = rel / np.maximum(r, 1e-9)[:, None]
        h = o["harmonics"]
        wobble = 1.0 + (h[0] @ u.T) + (h[1] @ (u * u).T) + (h[2] @ (u[:, [1, 2, 0]] * u).T)
        R = o["radius"] * np.clip(wobble, 0.75, 1.25)
        inside = r <= R
        out[inside] = CAV_CORE
        for centre, rr, cls in o["lobules"]:
            out[inside & (np.sum((world - centre) ** 2, axis=1) <= rr * rr)] = cls
        out[inside & (r > R - o["rim"])] = CAV_RIM
        return out
    # siderosis: the pial surface (1 mm either side) and the sulcal CSF within the patch
    near = r <= o["radius"]
    if not np.any(near):
        return out
    sel = np.flatnonzero(near)
    plab, pdep = anat.points(np.ascontiguousarray(world[sel]))
    plab, pdep = np.asarray(plab), np.asarray(pdep)
    surface = (pdep >= -1.0) & (pdep <= 0.8) & np.isin(plab, (CSF, GM))
    sulcal = (plab == CSF) & (pdep > 0.0) & (pdep < 6.0)
    out[sel[surface | sulcal]] = SIDEROSIS
    return out


def _distance_to_polyline(points, line):
    """Distance (mm) of each point (N, 3) to a polyline (M, 3) (segments)."""
    best = np.full(len(points), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        d = np.linalg.norm(points - (a + t[:, None] * ab), axis=1)
        np.minimum(best, d, out=best)
    return best


# --------------------------------------------------------------------------------------------
# hard microbleeds
def place_clusters(params, placer, anat):
    """Clusters of 2-4 lobar CMBs (rows appended to ``placer.rows``); their truth ids' order."""
    rng = feature_rng(params.seed, STREAM_CLUSTER)
    placed = []
    for _ in range(int(params.n_clusters)):
        a0 = rng.uniform(*CLUSTER_DIAMETER_MM) / 2.0
        chi0 = rng.uniform(*params.cmb_chi_range_ppm)
        first = placer.place("cmb", "lobar", a0, chi0)
        if first is None:
            continue
        first["extra"] = True
        first["context"] = "cluster"
        mates = [first]
        placed.append(first)
        c0 = np.array([first["x_mm"], first["y_mm"], first["z_mm"]])
        for _m in range(int(rng.integers(1, 4))):
            a = rng.uniform(*CLUSTER_DIAMETER_MM) / 2.0
            chi = rng.uniform(*params.cmb_chi_range_ppm)
            for _t in range(400):
                u = rng.normal(size=3)
                u /= np.linalg.norm(u)
                p = c0 + u * rng.uniform(a0 + a + CLUSTER_MIN_GAP_MM, CLUSTER_MAX_CENTRE_MM)
                if _fits_with_mates(p, a, mates, placer, anat):
                    row = placer.add_row("cmb", p, a)
                    row["chi_ppm"] = float(chi)
                    row["context"] = "cluster"
                    mates.append(row)
                    placed.append(row)
                    break
    return placed


def _fits_with_mates(p, a, mates, placer, anat):
    labs, deps = anat.points(p[None, :])
    if int(labs[0]) not in _BRAIN or float(deps[0]) < max(3.0, a + 2.0):
        return False
    for m in mates:
        q = np.array([m["x_mm"], m["y_mm"], m["z_mm"]])
        dist = np.linalg.norm(p - q)
        if dist < a + m["diameter_mm"] / 2.0 + CLUSTER_MIN_GAP_MM or dist > CLUSTER_MAX_CENTRE_MM + 1e-9:
            return False
    others = [r for r in placer.rows if all(r is not m for m in mates)]
    return placer.clear_of(p, a, others)


def place_near_veins(params, placer, anat, vein_pts, vein_rad):
    """CMBs whose surface is 0.5-1.5 mm from a vein wall (rows appended to ``placer.rows``)."""
    rng = feature_rng(params.seed, STREAM_NEAR_VEIN)
    placed = []
    if vein_pts.shape[0] < 3:
        return placed
    for _ in range(int(params.n_cmb_near_vein)):
        a = rng.uniform(*NEAR_VEIN_DIAMETER_MM) / 2.0
        chi = rng.uniform(*params.cmb_chi_range_ppm)
        for _t in range(600):
            v = int(rng.integers(1, vein_pts.shape[0] - 1))
            if vein_rad[v] < 0.3:
                continue
            tangent = vein_pts[v + 1] - vein_pts[v - 1]
            if np.linalg.norm(tangent) < 1e-6 or np.linalg.norm(tangent) > 1.0:
                continue  # the ends of two different trees
            tangent /= np.linalg.norm(tangent)
            u = rng.normal(size=3)
            u -= (u @ tangent) * tangent
            u /= np.linalg.norm(u)
            gap = rng.uniform(*NEAR_VEIN_GAP_MM)
            p = vein_pts[v] + u * (vein_rad[v] + gap + a)
            labs, deps = anat.points(p[None, :])
            if int(labs[0]) not in _BRAIN or float(deps[0]) < max(3.0, a + 2.0):
                continue
            d = np.sqrt(np.sum((vein_pts - p) ** 2, axis=1)) - vein_rad - a
            if np.min(d) < NEAR_VEIN_GAP_MM[0] - 0.05 or not placer.clear_of(p, a, placer.rows, veins=False):
                continue
            row = placer.add_row("cmb", p, a)
            row["chi_ppm"] = float(chi)
            row["context"] = "near_vein"
            placed.append(row)
            break
    return placed


def add_lobes(params, rows, vein_pts=None):
    """Make a fraction of the random CMB rows lobulated: ``row["lobes"]`` = [(centre, radius)],
    and ``diameter_mm`` the volume-equivalent diameter of the union."""
    rng = feature_rng(params.seed, STREAM_LOBES)
    for row in rows:
        if row["type"] != "cmb" or rng.random() >= float(params.lobulated_fraction):
            continue
        a = row["diameter_mm"] / 2.0
        c = np.array([row["x_mm"], row["y_mm"], row["z_mm"]])
        lobes = []
        for _k in range(int(rng.integers(1, 3))):
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            lobes.append((c + u * a * rng.uniform(0.6, 0.9), a * rng.uniform(0.5, 0.7)))
        row["lobes"] = lobes
        row["context"] = "lobulated"
        row["main_radius_mm"] = a
        row["diameter_mm"] = _union_diameter(c, a, lobes)
    return rows


def _union_diameter(c, a, lobes, n=24):
    """Volume-equivalent diameter (mm) of a sphere and its lobes (regular-grid quadrature)."""
    reach = a * 2.0
    g = (np.arange(n) + 0.5) / n * 2 * reach - reach
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3) + c
    inside = np.sum((pts - c) ** 2, axis=1) <= a * a
    for q, r in lobes:
        inside |= np.sum((pts - q) ** 2, axis=1) <= r * r
    vol = inside.sum() * (2 * reach / n) ** 3
    return float((6.0 * vol / np.pi) ** (1.0 / 3.0))
