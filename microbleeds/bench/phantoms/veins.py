"""Veins of the phantom: branching, curved centre lines with radii (mm), drawn at random inside
the brain of the field of view (random walks in world mm; "through" veins cross the slices,
"medullary" veins run towards the ventricles, "cortical" veins follow the brain surface).
Their occupancy on the fine grid is stamped by :func:`.kernels.stamp_tubes`.
"""

from __future__ import annotations

import numpy as np

from .head import _E_CEREBRUM, _E_VENT
from .params import _BRAIN, CB_GM, CB_WM, CSF, GM, VENTRICLE, WM


def _make_veins(params, rng, anat, rot, fov_lo, fov_hi):
    """Centre-line points (N, 3) and radii (N,) of branching curved vein trees."""
    s = float(params.head_scale)
    ell = anat.ell
    c0 = ell[_E_CEREBRUM, :3]
    slice_normal = rot[:, 2]
    vent_c = 0.5 * (ell[_E_VENT[0], :3] + ell[_E_VENT[1], :3])
    pts_all, rad_all = [], []
    step = 0.3

    def inside_brain(p):
        lab, dep = anat.points(p[None, :])
        return int(lab[0]), float(dep[0])

    def walk(p, d, r0, length, kind, level):
        r_end = max(0.2, 0.5 * r0)
        n = int(length / step)
        p = p.copy()
        d = d / np.linalg.norm(d)
        for it in range(n):
            t = it / max(n - 1, 1)
            r = r0 + (r_end - r0) * t
            lab, dep = inside_brain(p)
            if lab not in _BRAIN and lab != CSF:
                break
            if lab == VENTRICLE:
                break
            pts_all.append(p.copy())
            rad_all.append(r)
            if level < 2 and r > 0.3 and rng.random() < 0.012:
                nd = d + rng.normal(size=3) * 0.9
                walk(p, nd, 0.7 * r, (length - it * step) * rng.uniform(0.3, 0.6), kind,
                     level + 1)
            d = d + rng.normal(size=3) * 0.08
            if kind == "cortical":
                # stay roughly tangential to the outer surface
                rad = (p - c0) / ell[_E_CEREBRUM, 3:] ** 2
                rad /= np.linalg.norm(rad)
                d = d - 0.6 * np.dot(d, rad) * rad
                if dep > 3.0:
                    d = d + 0.3 * rad
            d /= np.linalg.norm(d)
            p = p + step * d

    lo = np.asarray(fov_lo)
    hi = np.asarray(fov_hi)
    for _vein in range(int(params.n_veins)):
        u = rng.random()
        kind = "through" if u < 0.35 else ("medullary" if u < 0.75 else "cortical")
        for _try in range(200):
            p = rng.uniform(lo, hi)
            lab, dep = inside_brain(p)
            if kind == "cortical" and lab == GM and dep < 3.0:
                break
            if kind == "medullary" and lab in (GM, WM) and 1.5 < dep < 5.0:
                break
            if kind == "through" and lab in (GM, WM, CB_WM, CB_GM) and dep > 3.0:
                break
        else:
            continue
        if kind == "through":
            d = slice_normal * (1 if rng.random() < 0.5 else -1) + rng.normal(size=3) * 0.15
            r0 = rng.uniform(0.3, 0.75)
            length = rng.uniform(15, 40) * s
        elif kind == "medullary":
            d = vent_c - p + rng.normal(size=3) * 5.0
            r0 = rng.uniform(0.25, 0.6)
            length = rng.uniform(15, 35) * s
        else:
            d = np.cross((p - c0), rng.normal(size=3))
            r0 = rng.uniform(0.4, 0.75)
            length = rng.uniform(20, 45) * s
        walk(p, d, r0, length, kind, 0)
    if not pts_all:
        return np.zeros((0, 3)), np.zeros(0)
    return np.asarray(pts_all, dtype=np.float64), np.asarray(rad_all, dtype=np.float64)

