"""Dipole sign: is a compact focus paramagnetic (hemosiderin) or diamagnetic (calcium), and which
sign convention does this scanner's phase use (handedness, from the veins and the foci)?

Conventions and physics are those of :mod:`microbleeds.stages.phase` (``phase_sign`` +1: stored
phase increases with the local field). Phase in radians, lengths in mm, susceptibility in ppm.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..io.nifti import voxel_sizes

_PI = math.pi

# The half-depth outline includes the blooming halo, so the susceptibility source is smaller than
# the outline: the dipole is fitted from 0.6, 0.8 and 1.0 of the outline's radius (per diameter).
SOURCE_RADIUS_PER_DIAMETER = (0.3, 0.4, 0.5)
TRUSTED_SIGN = ("forced", "high", "moderate")  # phase-sign confidence that lets the calcification rule act

# --------------------------------------------------------------------------------------------
# 5./6. Dipole sign of a compact source and handedness from veins
# --------------------------------------------------------------------------------------------

def _unit(v):
    v = np.asarray(v, dtype=np.float64).ravel()
    return v / max(np.linalg.norm(v), 1e-12)


def source_susceptibility_sign(filtered_phase, magnitude, centre_vox, radius_mm,
                               voxel_size_mm, affine, b0_dir_world=(0, 0, 1), phase_sign=+1,
                               outer_factor=3.0, min_score=0.01, min_z=1.5,
                               refine_centre=True, max_voxels=30000, return_z=False):
    """Sign of the susceptibility of a compact dark source from its dipole field pattern.

    The phase around a sphere of radius ``a`` is, in the ``phase_sign`` convention,
    ``psi(r) = c * (a / r)**3 * (3 cos^2(theta) - 1)`` outside the sphere, with ``theta`` the
    angle between ``r`` (world mm, via the affine, so array permutations and flips do not
    matter) and B0, and ``c = gamma * B0 * dchi / 3 * TE`` (radians) positive for a
    paramagnetic source (hemosiderin: microbleed), negative for a diamagnetic one
    (calcification). Positive lobes along B0, a negative equatorial ring half as strong.

    The fit uses voxels between ``radius_mm`` and ``outer_factor * radius_mm`` (at least 3
    voxels beyond the radius), weighted by the squared magnitude relative to the local
    background (dark, dephased voxels count little). Because the phase near the source can
    wrap, ``c`` is found by maximising the phase coherence
    ``f(c) = |sum w exp(i (psi - c m))| / sum w`` on a logarithmic grid of both signs (a free
    constant offset is implicit in the modulus); this is least squares on the unit circle.

    Parameters
    ----------
    filtered_phase : numpy.ndarray
        3D high-pass filtered phase, radians (or any quantity proportional to the local field
        with the same sign, e.g. Hz).
    magnitude : numpy.ndarray
        3D magnitude, same shape.
    centre_vox : sequence of 3 float
        Centre of the dark focus in voxel indices (may be fractional).
    radius_mm : float
        Radius of the dark focus in mm (e.g. the equivalent-sphere radius of the candidate).
    voxel_size_mm : sequence of 3 float
        Voxel sizes in mm (neighbourhood extent).
    affine : (4, 4) array_like
        NIfTI affine (voxel -> world mm).
    b0_dir_world : sequence of 3 float
        Direction of B0 in world coordinates (scanner z: ``(0, 0, 1)``).
    phase_sign : {+1, -1}
        Phase convention of ``filtered_phase``.
    outer_factor : float
        Outer radius of the fitted shell in units of ``radius_mm``.
    min_score : float
        Scores with a smaller absolute value give sign 0.
    min_z : float
        Scores below ``min_z`` times their noise level give sign 0; the noise level is
        ``sqrt(sum w^2) / sum w * sqrt(1 - f_best^2)`` (coherence fluctuation of phases with
        the residual dispersion of the best fit). Random phases stay below ~1.2.
    refine_centre : bool
        Move the centre to the darkness-weighted centroid within 1.5 radii first.
    max_voxels : int
        At most this many shell voxels are used (a fixed random subset beyond).
    return_z : bool
        Return ``(score, z, f_best)`` instead (diagnostics).

    Returns
    -------
    score : float
        ``max_{c>0} f(c) - max_{c<0} f(c)`` in [-1, 1]: how much better a paramagnetic than a
        diamagnetic dipole explains the phase. NaN if too few usable voxels.
    sign : int
        +1 paramagnetic (microbleed-like), -1 diamagnetic (calcification-like), 0 undecided.
    """
    ph = np.asarray(filtered_phase)
    mag = np.asarray(magnitude)
    if ph.shape != mag.shape or ph.ndim != 3:
        raise ValueError(f"phase {ph.shape} and magnitude {mag.shape} must be the same 3D shape")
    if phase_sign not in (1, -1):
        raise ValueError(f"phase_sign must be +1 or -1, got {phase_sign!r}")
    vox = voxel_sizes(voxel_size_mm)
    A = np.asarray(affine, dtype=np.float64)[:3, :3]
    b0 = _unit(b0_dir_world)
    a = max(float(radius_mm), 0.5 * float(vox.min()))
    r_out = max(outer_factor * a, a + 3.0 * float(vox.max()))
    c = np.asarray(centre_vox, dtype=np.float64).ravel()[:3]
    half = np.ceil(r_out / vox).astype(int) + 1
    lo = np.maximum(np.floor(c).astype(int) - half, 0)
    hi = np.minimum(np.floor(c).astype(int) + half + 1, np.array(ph.shape))
    if np.any(hi - lo < 3):
        return float("nan"), 0
    sl = tuple(slice(int(lo[d]), int(hi[d])) for d in range(3))
    P = ph[sl].astype(np.float64) * phase_sign
    M = mag[sl].astype(np.float64)
    grids = np.meshgrid(*[np.arange(lo[d], hi[d], dtype=np.float64) for d in range(3)],
                        indexing="ij")
    ijk = np.stack(grids, axis=-1)

    def geometry(centre):
        rel = (ijk - centre) @ A.T
        r = np.linalg.norm(rel, axis=-1)
        return rel, r

    rel, r = geometry(c)
    far = (r > 2.0 * a) & (r <= r_out)
    bg = float(np.median(M[far])) if far.sum() >= 5 else float(np.median(M))
    if not bg > 0:
        return float("nan"), 0
    if refine_centre:
        near = r <= 1.5 * a
        dark = np.clip(1.0 - M / bg, 0.0, None) * near
        if dark.sum() > 0:
            c = (ijk * dark[..., None]).sum(axis=(0, 1, 2)) / dark.sum()
            rel, r = geometry(c)
    rel_b0 = rel @ b0
    with np.errstate(invalid="ignore", divide="ignore"):
        cos2 = np.where(r > 0, (rel_b0 / r) ** 2, 0.0)
        model = np.where(r > 0, (a / r) ** 3 * (3.0 * cos2 - 1.0), 0.0)
    w = np.clip(M / bg, 0.0, 1.0) ** 2
    use = (r > a) & (r <= r_out) & (w > 0.05) & np.isfinite(P)
    if use.sum() < 10:
        return float("nan"), 0
    sel = np.flatnonzero(use)
    if sel.size > max_voxels:  # large candidates: a deterministic random subset suffices
        sel = np.sort(np.random.default_rng(0).choice(sel, max_voxels, replace=False))
    m_u = model.ravel()[sel]
    # voxels inform about c in proportion to |m| (least-squares information ~ m^2)
    w_u = w.ravel()[sel] * np.abs(m_u)
    z_u = np.exp(1j * P.ravel()[sel])
    absm = np.abs(m_u)
    big = float(np.max(absm))
    med = float(np.median(absm[absm > 0])) if np.any(absm > 0) else 0.0
    if big <= 0 or med <= 0:
        return float("nan"), 0
    cs = np.geomspace(0.02 / big, 3.0 * _PI / med, 72)
    # coherence for +c and -c: |sum w z exp(-i c m)|
    wz = w_u * z_u
    pos_c = np.zeros(cs.size, complex)
    neg_c = np.zeros(cs.size, complex)
    for start in range(0, m_u.size, 8192):  # chunks bound the memory for large candidates
        E = np.exp(-1j * np.outer(cs, m_u[start:start + 8192]))
        pos_c += E @ wz[start:start + 8192]
        neg_c += np.conj(E) @ wz[start:start + 8192]
    pos, neg = np.abs(pos_c), np.abs(neg_c)
    sw = float(w_u.sum())
    score = float((pos.max() - neg.max()) / sw)
    # significance: coherence fluctuations of random phases are of order
    # sqrt(sum w^2) / sum w, scaled by the residual dispersion sqrt(1 - f_best^2)
    f_best = float(max(pos.max(), neg.max()) / sw)
    noise = float(np.sqrt(np.sum(w_u**2)) / sw) * math.sqrt(max(1.0 - f_best**2, 1e-4))
    z = score / noise
    if return_z:
        return score, z, f_best
    decided = abs(score) >= min_score and abs(z) >= min_z
    sign = 0 if not decided else (1 if score > 0 else -1)
    return score, sign


def _hessian_world_at(image, idx, vox, A, sigma_mm):
    """Hessian (world mm) of the Gaussian-smoothed image at voxels ``idx``, shape (N, 3, 3).

    One derivative volume at a time is held in memory.
    """
    sig = [sigma_mm / v for v in vox]
    Hv = np.empty((idx[0].size, 3, 3), dtype=np.float32)
    img = np.asarray(image, dtype=np.float32)
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            d = ndi.gaussian_filter(img, sig, order=order, mode="nearest", truncate=4.0)[idx]
            Hv[:, i, j] = d
            Hv[:, j, i] = d
    Ainv = np.linalg.inv(A).astype(np.float32)
    # world = A ijk + t  =>  H_world = A^-T H_vox A^-1
    return np.einsum("ka,nkl,lb->nab", Ainv, Hv, Ainv)


def estimate_phase_sign(filtered_phase, magnitude, affine, mask=None, b0_dir_world=(0, 0, 1),
                        sigma_mm=None, dark_percentile=15.0, default=+1, max_foci=30,
                        max_focus_mm3=270.0, focus_rel=0.6, block_mm=3.0):
    """Estimate the phase convention (``phase_sign``) from veins and compact dark foci.

    Physics: venous blood is paramagnetic relative to tissue. Inside a vein at angle theta to
    B0 the field offset is ``dB = B0 dchi (3 cos^2 theta - 1) / 6`` (positive parallel to B0,
    negative perpendicular, zero at the magic angle 54.7 deg), and the filtered phase at the
    vein's centre is ``phase_sign * gamma * dB * TE``. So with ``g = 3 cos^2 theta - 1`` from
    the vein's direction, ``phase * g`` has the sign of ``phase_sign`` for every vein.

    Method:

    1. Dark voxels: magnitude relative to a 4 mm local mean below the ``dark_percentile``-th
       percentile inside the mask.
    2. Hessian of the magnitude (Gaussian scale ``sigma_mm``, world mm via the affine): dark
       tubes have two large positive eigenvalues and one small one; its eigenvector is the
       vein direction. Dark voxels that are tube-like are grouped into connected segments.
    3. The estimate is the sign of ``sum v * phase * g`` over tube voxels (``v`` = tube
       strength). Tube voxels are grouped into units by ``block_mm`` cubes in world space
       (>= 3 voxels each): the p-value is a Wilcoxon signed-rank test of the unit sums,
       ``vessel_agreement`` the weighted fraction of units agreeing.
       Units are spatially correlated, so p is anti-conservative; the thresholds are
       calibrated on phantoms whose dark veins carry no susceptibility (there p >= 4e-4 and
       agreement <= 0.69): ``high``: p < 1e-6, >= 8 units, agreement >= 0.72;
       ``moderate``: p < 1e-4, agreement >= 0.65; ``low``: p < 0.01.
    4. Compact dark foci (connected voxels with magnitude < ``focus_rel`` of the local mean,
       at most ``max_focus_mm3``, not elongated: largest/smallest spatial SD <= 3) vote with
       their dipole sign (:func:`source_susceptibility_sign`, assuming they are paramagnetic
       microbleeds or vessel cross-sections). >= 5 foci with >= 80 % agreement give
       ``moderate``, >= 3 with >= 75 % ``low``. They decide when the vein evidence is weak,
       lower the confidence when they contradict it, and raise two agreeing weak lines of
       evidence to ``moderate``.

    Estimate on 3D-filtered phase (the cylinder physics is 3D; 2D in-plane filtering distorts
    the field of in-plane veins). Multi-echo: the combined phase, or any single echo.

    Parameters
    ----------
    filtered_phase : numpy.ndarray
        3D high-pass filtered phase (radians or Hz: only the sign matters).
    magnitude : numpy.ndarray
        3D (combined) magnitude.
    affine : (4, 4) array_like
        NIfTI affine.
    mask : numpy.ndarray of bool, optional
        Brain mask; default magnitude above 10% of its 99th percentile.
    b0_dir_world : sequence of 3 float
        B0 direction in world coordinates.
    sigma_mm : float, optional
        Hessian scale in mm; default ``max(0.7, smallest voxel size)`` (small veins; larger
        scales pick up tissue boundaries as "tubes").
    dark_percentile : float
        Percentile of the relative magnitude below which voxels are vein candidates.
    default : {+1, -1}
        Sign returned when the evidence is insufficient.
    max_foci : int
        At most this many compact foci are tested.
    max_focus_mm3 : float
        Largest volume (mm^3) of a compact focus.
    focus_rel : float
        Magnitude relative to the local mean below which voxels can form a focus.
    block_mm : float
        Edge (mm) of the world-space cubes grouping vein voxels into test units.

    Returns
    -------
    sign : int
        +1 or -1.
    evidence : dict
        JSON-serialisable: ``confidence`` (``high|moderate|low|none``), ``method``,
        ``vessel_voxels``, ``vessel_units``, ``vessel_agreement`` (weighted fraction of
        segments agreeing), ``vessel_p`` (sign test), ``vessel_statistic``, ``foci``,
        ``foci_agreement``, ``note``.
    """
    from scipy.stats import wilcoxon

    ph = np.asarray(filtered_phase, dtype=np.float32)
    mag = np.asarray(magnitude, dtype=np.float32)
    if ph.shape != mag.shape or ph.ndim != 3:
        raise ValueError(f"phase {ph.shape} and magnitude {mag.shape} must be the same 3D shape")
    A = np.asarray(affine, dtype=np.float64)[:3, :3]
    vox = np.linalg.norm(A, axis=0)
    b0 = _unit(b0_dir_world)
    if sigma_mm is None:
        sigma_mm = max(0.7, float(vox.min()))
    if mask is None:
        mask = ndi.binary_fill_holes(mag > 0.1 * np.percentile(mag, 99))
    mask = np.asarray(mask, bool)
    ev = {"confidence": "none", "method": "default", "vessel_voxels": 0, "vessel_units": 0,
          "vessel_agreement": None, "vessel_p": None, "vessel_statistic": None, "foci": 0,
          "foci_agreement": None, "note": ""}
    if mask.sum() < 100:
        ev["note"] = "too few brain voxels"
        return int(default), ev

    local = ndi.gaussian_filter(mag * mask, [4.0 / v for v in vox], mode="nearest")
    norm = ndi.gaussian_filter(mask.astype(np.float32), [4.0 / v for v in vox], mode="nearest")
    rel = np.divide(mag, local / np.maximum(norm, 1e-6), out=np.ones_like(mag),
                    where=local > 0)
    thr = np.percentile(rel[mask], dark_percentile)
    dark = mask & (rel < thr)
    idx = np.nonzero(dark)
    if idx[0].size < 20:
        ev["note"] = "too few dark voxels"
        return int(default), ev

    Hw = _hessian_world_at(mag, idx, vox, A, sigma_mm)
    n_dark = Hw.shape[0]
    lam_s = np.empty((n_dark, 3), np.float32)
    axis_vec = np.empty((n_dark, 3), np.float32)
    for start in range(0, n_dark, 500_000):  # chunks bound eigh's temporaries
        lam, vec = np.linalg.eigh(Hw[start:start + 500_000])
        order = np.argsort(np.abs(lam), axis=1)
        lam_s[start:start + 500_000] = np.take_along_axis(lam, order, axis=1)
        axis_vec[start:start + 500_000] = np.take_along_axis(vec, order[:, None, :1],
                                                              axis=2)[:, :, 0]
    del Hw
    small, midl, large = lam_s[:, 0], lam_s[:, 1], lam_s[:, 2]  # by |lambda|
    scale = np.percentile(np.abs(large), 90) + 1e-12
    tube = (midl > 0) & (large > 0) & (np.abs(small) < 0.5 * midl) & (midl > 0.1 * scale)

    # ---- veins
    n_tube = int(tube.sum())
    ev["vessel_voxels"] = n_tube
    vessel_sign, vessel_conf, vessel_stat = 0, "none", 0.0
    if n_tube >= 10:
        cosb = axis_vec[tube] @ b0
        g = 3.0 * cosb**2 - 1.0
        v = midl[tube] * (1.0 - np.abs(small[tube]) / midl[tube])
        x = ph[idx][tube] * g
        vessel_stat = float(np.sum(v * x) / np.sum(v))
        # units: blocks of block_mm in world space (veins cross and connect, so connected
        # components are not independent units; blocks also split long veins)
        pts = np.stack([i[tube] for i in idx], axis=1).astype(np.float64) @ A.T
        blk = np.floor(pts / float(block_mm)).astype(np.int64)
        _, seg = np.unique(blk, axis=0, return_inverse=True)
        seg = seg.ravel() + 1
        nlab = int(seg.max())
        seg_sum = np.bincount(seg, weights=v * x, minlength=nlab + 1)[1:]
        seg_w = np.bincount(seg, weights=v * np.abs(x), minlength=nlab + 1)[1:]
        vox_per_seg = np.bincount(seg, minlength=nlab + 1)[1:]
        keep = (seg_w > 0) & (vox_per_seg >= 3)
        seg_sum, seg_w = seg_sum[keep], seg_w[keep]
        nseg = int(keep.sum())
        ev["vessel_units"] = nseg
        ev["vessel_statistic"] = round(vessel_stat, 6)
        if nseg > 0 and vessel_stat != 0:
            vessel_sign = 1 if vessel_stat > 0 else -1
            agree = np.sign(seg_sum) == vessel_sign
            ev["vessel_agreement"] = round(float(seg_w[agree].sum() / seg_w.sum()), 4)
            # Wilcoxon signed-rank test over segments (segments are the independent units;
            # ranks keep one large vein from dominating)
            if nseg >= 2 and np.any(seg_sum != 0):
                p = float(wilcoxon(seg_sum[seg_sum != 0]).pvalue)
            else:
                p = 1.0
            ev["vessel_p"] = float(f"{p:.3g}")
            # units are spatially correlated (one vein, residual background), so p is
            # anti-conservative: thresholds calibrated on phantoms with dark veins without
            # susceptibility (p >= 4e-4, agreement <= 0.69 there)
            if p < 1e-6 and nseg >= 8 and ev["vessel_agreement"] >= 0.72:
                vessel_conf = "high"
            elif p < 1e-4 and ev["vessel_agreement"] >= 0.65:
                vessel_conf = "moderate"
            elif p < 0.01:
                vessel_conf = "low"

    # ---- compact dark foci (assumed paramagnetic): small, round dark components
    foci_votes = []
    dlab, nd = ndi.label(dark & (rel < focus_rel), structure=np.ones((3, 3, 3)))
    if nd:
        voxvol = float(np.prod(vox))
        sizes = np.bincount(dlab.ravel(), minlength=nd + 1)[1:]
        ok = (sizes >= 2) & (sizes * voxvol <= max_focus_mm3)
        cand = np.nonzero(ok)[0] + 1
        if cand.size:
            darkness = ndi.mean(rel, dlab, index=cand)
            objs = ndi.find_objects(dlab)
            for lab_id in cand[np.argsort(darkness)][: 4 * max_foci]:
                if len(foci_votes) >= max_foci:
                    break
                sl = objs[lab_id - 1]
                sub = dlab[sl] == lab_id
                pts = np.argwhere(sub) + np.array([s_.start for s_ in sl])
                world = pts @ A.T
                if len(pts) >= 4:
                    ev_ = np.linalg.eigvalsh(np.cov(world.T) + 1e-6 * np.eye(3))
                    if ev_[-1] > 9.0 * max(ev_[0], (0.3 * vox.min()) ** 2):
                        continue  # elongated: not a compact focus
                centre = pts.mean(axis=0)
                radius = max((3.0 * len(pts) * voxvol / (4.0 * _PI)) ** (1 / 3),
                             float(vox.min()))
                _, sg = source_susceptibility_sign(ph, mag, centre, radius, vox, affine,
                                                   b0_dir_world, +1)
                if sg != 0:
                    foci_votes.append(sg)
    ev["foci"] = len(foci_votes)
    foci_sign = 0
    if foci_votes:
        mean_vote = float(np.mean(foci_votes))
        foci_sign = 1 if mean_vote > 0 else (-1 if mean_vote < 0 else 0)
        if foci_sign:
            ev["foci_agreement"] = round(float(np.mean(np.array(foci_votes) == foci_sign)), 4)

    n_foci = len(foci_votes)
    foci_conf = "none"
    if foci_sign and n_foci >= 5 and ev["foci_agreement"] >= 0.8:
        foci_conf = "moderate"
    elif foci_sign and n_foci >= 3 and ev["foci_agreement"] >= 0.75:
        foci_conf = "low"
    if vessel_conf in ("high", "moderate"):
        sign, ev["confidence"], ev["method"] = vessel_sign, vessel_conf, "vein orientation"
        if foci_sign and foci_sign != vessel_sign and n_foci >= 3:
            ev["note"] = "compact foci disagree with the veins"
            ev["confidence"] = "moderate" if vessel_conf == "high" else "low"
        elif foci_conf != "none" and foci_sign == vessel_sign:
            ev["method"] = "vein orientation and dipole of compact foci"
    elif foci_conf != "none" and (vessel_conf == "none" or vessel_sign in (0, foci_sign)):
        # veins without significant evidence (p >= 0.1) do not veto the compact foci
        sign, ev["method"] = foci_sign, "dipole of compact foci"
        ev["confidence"] = foci_conf
        if vessel_conf == "low":  # two weak, independent, agreeing lines of evidence
            ev["confidence"] = "moderate"
            ev["method"] = "vein orientation and dipole of compact foci"
    elif vessel_sign and vessel_conf == "low" and not (foci_conf != "none"
                                                        and foci_sign != vessel_sign):
        sign, ev["confidence"], ev["method"] = vessel_sign, "low", "vein orientation"
    else:
        sign = int(default)
        ev["note"] = (ev["note"] + "; " if ev["note"] else "") + (
            "veins and compact foci disagree" if vessel_sign and foci_sign
            and vessel_sign != foci_sign else "insufficient evidence"
        ) + f"; default sign {int(default):+d} used"
    ev["sign"] = int(sign)
    return int(sign), ev


# --------------------------------------------------------------------------------------------
# Convenience: the whole phase branch
# --------------------------------------------------------------------------------------------


def candidate_signs(rows, swi_result, scan):
    """Sign (+1 paramagnetic, -1 diamagnetic, 0 undecided) and strength of each candidate's
    dipole pattern in the filtered phase.

    The susceptibility source lies somewhere inside the half-depth outline (blooming), so the
    dipole is fitted from three inner radii, 0.6, 0.8 and 1.0 of the outline's radius: the sign is
    decided when at least one fit decides and none contradicts it.
    """
    trusted = swi_result.sign_evidence.get("confidence") in TRUSTED_SIGN
    for row in rows:
        row["phase_trusted"] = trusted
        fits = [source_susceptibility_sign(
            swi_result.filtered_phase, swi_result.magnitude, row["centroid_canonical"],
            fraction * row["diameter_mm"], scan.voxel_size_mm, scan.affine, phase_sign=swi_result.phase_sign)
            for fraction in SOURCE_RADIUS_PER_DIAMETER]
        signs = {sign for _, sign in fits if sign}
        sign = signs.pop() if len(signs) == 1 else 0
        scores = [score for score, s in fits if s == sign and sign] or [fits[1][0]]
        score = max(scores, key=abs)
        row["phase_score"] = None if np.isnan(score) else float(score)
        row["phase_sign"] = int(sign)
