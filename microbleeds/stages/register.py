"""Registration in scanner RAS+ mm. Matrices returned map scan (fixed) world to moving world.

:func:`register` (SimpleITK, Mattes mutual information, multi-resolution) brings a segmentation's
T1w onto the scan. :func:`register_template` places the atlas template: the brain's shape fitted
by least squares on coarse grids (about a second, deterministic), with a quality measure (Dice of
the registered template brain with the scan's brain mask, plausibility of scale and rotation) that
decides whether the atlas's regions are given at all.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""RAS+ <-> LPS (ITK's world) flip."""


# --------------------------------------------------------------------------------------------------
# registration (SimpleITK)
# --------------------------------------------------------------------------------------------------
def _to_sitk(data, affine):
    """numpy array on a NIfTI grid -> SimpleITK image with the same physical (LPS) geometry."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).transpose(2, 1, 0)))
    a = _LPS @ np.asarray(affine, float)
    spacing = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    direction = a[:3, :3] / spacing
    u, _, vt = np.linalg.svd(direction)  # nearest orthonormal matrix (ITK needs one; shear dropped)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(x) for x in (u @ vt).ravel()])
    img.SetOrigin([float(x) for x in a[:3, 3]])
    return img


def _transform_to_ras_matrix(tx):
    """SimpleITK (Euler / affine) transform, fixed->moving in LPS, as a 4x4 RAS matrix."""
    a = np.array(tx.GetMatrix(), float).reshape(3, 3)
    c = np.array(tx.GetCenter(), float)
    t = np.array(tx.GetTranslation(), float)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t + c - a @ c
    return _LPS @ m @ _LPS


def register(fixed, fixed_affine, moving, moving_affine, fixed_mask=None, moving_mask=None, kind="rigid",
             seed=0, max_samples=60000, shrink=(4, 2, 1), initial=None):
    """Register ``moving`` to ``fixed`` (SimpleITK, Mattes mutual information, multi-resolution).

    Parameters
    ----------
    fixed, moving : numpy.ndarray
        3D images (any contrast: mutual information).
    fixed_affine, moving_affine : numpy.ndarray
        4x4 voxel-to-world affines (RAS+ mm).
    fixed_mask, moving_mask : numpy.ndarray or None
        Optional masks restricting the metric.
    kind : {'rigid', 'affine'}
        ``rigid``: Euler, 6 degrees of freedom; ``affine``: similarity (7) then affine (12).
    seed : int
        Seed of the metric's random sampling (results are reproducible).
    max_samples : int or None
        About this many random metric samples (at most 25% of the fixed voxels or mask); None:
        every voxel (of the fixed mask).
    shrink : tuple of int
        Shrink factor of each resolution level (smoothing sigma: half the factor, in mm; 0 at 1).
    initial : numpy.ndarray or None
        4x4 rigid matrix (fixed world -> moving world, RAS+ mm) to start from instead of the
        moments initialiser.

    Returns
    -------
    matrix : numpy.ndarray
        4x4 matrix mapping fixed-world points (RAS+ mm) to moving-world points (RAS+ mm).
    metric : float
        Final metric value (negative mutual information; lower is better).
    """
    import SimpleITK as sitk

    f = _to_sitk(fixed, fixed_affine)
    m = _to_sitk(moving, moving_affine)
    first = sitk.Similarity3DTransform() if kind == "affine" else sitk.Euler3DTransform()
    if initial is None:
        init = sitk.CenteredTransformInitializer(f, m, first, sitk.CenteredTransformInitializerFilter.MOMENTS)
        stages = [type(first)(init)]
    else:
        stages = [_sitk_rigid(initial, _image_centre(f), similarity=kind == "affine")]
    if kind == "affine":
        stages.append(None)
    elif kind != "rigid":
        raise ValueError(f"kind must be 'rigid' or 'affine', not {kind!r}")
    nvox = int(np.count_nonzero(fixed_mask)) if fixed_mask is not None else int(np.asarray(fixed).size)
    pct = float(min(0.25, max(0.01, (max_samples or 0) / max(nvox, 1))))  # ~max_samples metric samples
    metric = float("nan")
    tx = stages[0]
    for stage, nxt in enumerate(stages):
        if nxt is None:  # affine stage initialised from the rigid result
            aff = sitk.AffineTransform(3)
            aff.SetCenter(tx.GetCenter())
            aff.SetMatrix(tx.GetMatrix())
            aff.SetTranslation(tx.GetTranslation())
            tx = aff
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        if max_samples is None:  # every voxel (of the mask): deterministic, for coarse grids
            reg.SetMetricSamplingStrategy(reg.NONE)
        else:
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(pct, seed)
        if fixed_mask is not None:
            reg.SetMetricFixedMask(sitk.Cast(_to_sitk(np.asarray(fixed_mask) > 0, fixed_affine), sitk.sitkUInt8))
        if moving_mask is not None:
            reg.SetMetricMovingMask(sitk.Cast(_to_sitk(np.asarray(moving_mask) > 0, moving_affine), sitk.sitkUInt8))
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0 if stage == 0 else 0.5, minStep=1e-3,
                                                     numberOfIterations=100, gradientMagnitudeTolerance=1e-6,
                                                     relaxationFactor=0.5)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([int(v) for v in shrink])
        reg.SetSmoothingSigmasPerLevel([0.0 if v == 1 else v / 2.0 for v in shrink])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetInitialTransform(tx, inPlace=True)
        reg.Execute(f, m)
        metric = float(reg.GetMetricValue())
    return _transform_to_ras_matrix(tx), metric


def _image_centre(img):
    """Physical (LPS) centre of a SimpleITK image's grid."""
    size = np.array(img.GetSize(), float)
    return np.array(img.TransformContinuousIndexToPhysicalPoint(list((size - 1) / 2.0)))


def _sitk_rigid(matrix_ras, centre_lps, similarity=False):
    """A rigid 4x4 RAS matrix (fixed -> moving) as a SimpleITK Euler (or similarity) transform."""
    import SimpleITK as sitk

    m = _LPS @ np.asarray(matrix_ras, float) @ _LPS
    u, _, vt = np.linalg.svd(m[:3, :3])
    r = u @ vt
    tx = sitk.Similarity3DTransform() if similarity else sitk.Euler3DTransform()
    tx.SetCenter([float(v) for v in centre_lps])
    tx.SetMatrix([float(v) for v in r.ravel()])
    tx.SetTranslation([float(v) for v in m[:3, 3] + r @ centre_lps - centre_lps])
    return tx


# --------------------------------------------------------------------------------------------------
# template registration: coarse, initialised from the brain mask, with a quality measure
# --------------------------------------------------------------------------------------------------
COARSE_MM = 3.0
"""Voxel size (mm) of the grid the template registration works on: regions, not voxels (the
template's 2 mm grid is the finest it is compared with)."""

DICE_HIGH = 0.85
"""Registered template brain vs the scan's brain mask: Dice at or above this is quality ``high``."""

DICE_MIN = 0.75
"""Dice below this is quality ``failed``: no regions (a wrong registration gives wrong regions)."""

SCALE_RANGE = (0.8, 1.25)
"""Plausible cube root of the affine's determinant (adult head sizes against the template)."""

MIN_COVERAGE = 0.4
"""A scan that shows less than this fraction of the template brain cannot be placed in it (a crop
slides along the brain with a high overlap): quality ``failed``."""

MAX_ROTATION_DEG = 45.0
"""A head lies within some tens of degrees of the scanner's axes (tilts up to about 30 deg): a
registration that turns the template further is a wrong solution (a brain's outline fits itself
upside down with a Dice near 0.86), quality ``failed``."""


def block_mean(data, affine, factors):
    """Mean of non-overlapping blocks of ``factors`` voxels (trailing partial blocks dropped).

    Returns the coarse array (float32) and its 4x4 affine (voxel centres at the blocks' centres)."""
    f = np.maximum(np.asarray(factors, int), 1)
    a = np.asarray(data)
    a = a.view(np.uint8) if a.dtype == bool else a.astype(np.float32, copy=False)
    s = (np.array(a.shape[:3]) // f) * f
    if np.any(s == 0):
        f = np.minimum(f, np.maximum(np.array(a.shape[:3]), 1))
        s = (np.array(a.shape[:3]) // f) * f
    a = a[:s[0], :s[1], :s[2]]
    for axis in range(3):  # one axis at a time: contiguous reductions, the array shrinks each time
        if f[axis] > 1:
            shp = a.shape[:axis] + (a.shape[axis] // f[axis], f[axis]) + a.shape[axis + 1:]
            a = a.reshape(shp).sum(axis=axis + 1, dtype=np.float32)
    out = (a / np.float32(np.prod(f))).astype(np.float32)
    aff = np.asarray(affine, float).copy()
    aff[:3, 3] = aff[:3, :3] @ ((f - 1) / 2.0) + aff[:3, 3]
    aff[:3, :3] = aff[:3, :3] * f
    return out, aff


def coarse_factors(affine, target_mm=COARSE_MM):
    """Block factors per axis that bring the voxel size near ``target_mm`` (never below 1)."""
    vox = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))
    return np.maximum(np.rint(target_mm / vox), 1).astype(int)


def mask_moments(mask, affine):
    """Centre of mass (mm) and principal axes (columns, largest variance first) of a mask in world."""
    idx = np.argwhere(np.asarray(mask) > 0).astype(float)
    idx = idx[::max(1, len(idx) // 20000)]
    pts = idx @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3]
    c = pts.mean(axis=0)
    w, v = np.linalg.eigh(np.cov((pts - c).T))
    return c, v[:, ::-1], np.sqrt(np.maximum(w[::-1], 0))


def rotation_angle_deg(r):
    """Rotation angle (deg) of a 3x3 rotation matrix."""
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


def axis_rotation(scan_axes, template_axes, max_deg=40.0):
    """Rotation (scan world -> template world) matching principal axes, or None.

    Of the sign choices that keep a proper rotation, the one closest to identity is taken (scanner
    axes are within some tens of degrees of the head's); None if even that turns by more than
    ``max_deg`` (axes ill-defined, e.g. a slab or a round brain)."""
    best = None
    for sx in (1, -1):
        for sy in (1, -1):
            d = np.diag([sx, sy, sx * sy * np.linalg.det(scan_axes) * np.linalg.det(template_axes)])
            r = template_axes @ d @ scan_axes.T
            ang = rotation_angle_deg(r)
            if best is None or ang < best[0]:
                best = (ang, r)
    return best[1] if best[0] <= max_deg else None


def _inside_fov(pts_world, shape, affine):
    v = pts_world @ np.linalg.inv(affine)[:3, :3].T + np.linalg.inv(affine)[:3, 3]
    return np.all((v > -0.5) & (v < np.array(shape[:3]) - 0.5), axis=1)


def fov_centred(rotation, scan_mask, scan_affine, template_mask, template_affine, iterations=6):
    """Rigid start (scan world -> template world): ``rotation`` about the scan brain's centre and
    the translation that puts the centre of mass of the template brain *within the scan's field of
    view* on the scan brain's (iterated: a slab sees part of the brain)."""
    cs = mask_moments(scan_mask, scan_affine)[0]
    tpts = np.argwhere(template_mask > 0).astype(float)[::11]
    tpts = tpts @ template_affine[:3, :3].T + template_affine[:3, 3]
    ct = tpts.mean(axis=0)
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = ct - rotation @ cs
    for _ in range(iterations):
        inv = np.linalg.inv(m)
        back = tpts @ inv[:3, :3].T + inv[:3, 3]
        inside = _inside_fov(back, scan_mask.shape, scan_affine)
        if inside.sum() < 50:
            break
        delta = cs - back[inside].mean(axis=0)
        if np.linalg.norm(delta) < 0.5:
            break
        shift = np.eye(4)
        shift[:3, 3] = -delta
        m = m @ shift
    return m


def warp_mask(mask, mask_affine, matrix, shape, affine):
    """A mask (moving grid) brought to a fixed grid through ``matrix`` (fixed world -> moving
    world), linear interpolation thresholded at 0.5."""
    m = np.linalg.inv(mask_affine) @ matrix @ affine
    return affine_linear(mask, m, shape) >= 0.5


def dice(a, b):
    """Dice overlap of two boolean arrays (NaN if both are empty)."""
    n = int(a.sum()) + int(b.sum())
    return float(2.0 * np.logical_and(a, b).sum() / n) if n else float("nan")


SHAPE_LEVELS = ((8.0, 6.0), (4.0, 3.0))
"""Coarse-to-fine levels of the brain-shape fit: (grid mm, Gaussian smoothing sigma mm)."""


def _params_to_matrix(p, kind, centre):
    """Parameters -> 4x4 matrix (scan world -> template world) about ``centre`` (scan mm).

    rigid: rotation vector (rad) + translation (mm); similarity: + log scale; affine: 9 matrix
    entries + translation."""
    m = np.eye(4)
    if kind == "affine":
        a = np.asarray(p[:9]).reshape(3, 3)
        t = np.asarray(p[9:12])
    else:
        a = rotvec_to_matrix(p[:3]) * (np.exp(p[6]) if kind == "similarity" else 1.0)
        t = np.asarray(p[3:6])
    m[:3, :3] = a
    m[:3, 3] = t - a @ centre + centre
    return m


def _matrix_to_params(m, kind, centre):
    a = m[:3, :3]
    t = m[:3, 3] + a @ centre - centre
    if kind == "affine":
        return np.concatenate([a.ravel(), t])
    s = float(np.cbrt(abs(np.linalg.det(a))))
    u, _, vt = np.linalg.svd(a / s)
    rv = matrix_to_rotvec(u @ vt)
    return np.concatenate([rv, t, [np.log(s)]]) if kind == "similarity" else np.concatenate([rv, t])


def rotvec_to_matrix(rotvec):
    """``scipy.spatial.transform.Rotation.from_rotvec(rotvec).as_matrix()`` (rad), its float64 values
    bit for bit (its quaternion and Taylor branch), without importing scipy.spatial (0.1-0.4 s)."""
    x, y, z = (float(v) for v in rotvec[:3])
    angle = math.sqrt(x * x + y * y + z * z)
    if angle <= 1e-3:
        a2 = angle * angle
        scale = 0.5 - a2 / 48 + a2 * a2 / 3840
    else:
        scale = math.sin(angle / 2) / angle
    x, y, z, w = x * scale, y * scale, z * scale, math.cos(angle / 2)
    x2, y2, z2, w2 = x * x, y * y, z * z, w * w
    xy, zw, xz, yw, yz, xw = x * y, z * w, x * z, y * w, y * z, x * w
    return np.array([[x2 - y2 - z2 + w2, 2 * (xy - zw), 2 * (xz + yw)],
                     [2 * (xy + zw), -x2 + y2 - z2 + w2, 2 * (yz - xw)],
                     [2 * (xz - yw), 2 * (yz + xw), -x2 - y2 + z2 + w2]])


def matrix_to_rotvec(matrix):
    """``Rotation.from_matrix(matrix).as_rotvec()`` of a rotation matrix (rad), bit for bit; a
    matrix that is not orthonormal to 1e-13 or not proper goes to scipy itself (its projection,
    its error)."""
    m = np.asarray(matrix, float)
    if np.abs(m @ m.T - np.eye(3)).max() > 1e-13 or np.linalg.det(m) <= 0:
        from scipy.spatial.transform import Rotation

        return Rotation.from_matrix(m).as_rotvec()
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    choice = int(np.argmax([m[0, 0], m[1, 1], m[2, 2], trace]))
    if choice == 3:
        q = [m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], 1 + trace]
    else:
        i, j, k = choice, (choice + 1) % 3, (choice + 2) % 3
        q = [0.0] * 4
        q[i] = 1 - trace + 2 * m[i, i]
        q[j] = m[j, i] + m[i, j]
        q[k] = m[k, i] + m[i, k]
        q[3] = m[k, j] - m[j, k]
    q = [float(v) for v in q]
    norm = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    x, y, z, w = (v / norm for v in q)
    if w < 0 or (w == 0 and (x < 0 or (x == 0 and (y < 0 or (y == 0 and z < 0))))):
        x, y, z, w = -x, -y, -z, -w  # the canonical quaternion (w >= 0)
    angle = 2 * math.atan2(math.sqrt(x * x + y * y + z * z), w)
    if angle <= 1e-3:
        a2 = angle * angle
        scale = 2 + a2 / 12 + 7 * a2 * a2 / 2880
    else:
        scale = angle / math.sin(angle / 2)
    return np.array([scale * x, scale * y, scale * z])


GOOD_START_DICE = 0.92
"""A start whose rigid fit overlaps the scan's brain this well ends the search for starts."""

MAX_FIT_POINTS = 20000
"""At most about this many grid points enter a level of the shape fit (every n-th beyond)."""


def _shape_level(mask, affine, template_mask, template_affine, grid_mm, sigma_mm):
    """One level of the shape fit: smoothed scan brain (its grid, affine, fit points) and smoothed
    template brain with its gradient images."""
    from scipy import ndimage as ndi

    cm, ca = block_mean(mask, affine, coarse_factors(affine, grid_mm))
    fs = ndi.gaussian_filter(cm, sigma_mm / np.sqrt((ca[:3, :3] ** 2).sum(axis=0)), mode="constant")
    tvs = np.sqrt((np.asarray(template_affine)[:3, :3] ** 2).sum(axis=0))
    step = max(1, int(round(grid_mm / 2 / float(tvs.min()))))  # template at about half the grid
    sub = np.asarray(template_mask, np.float32)[::step, ::step, ::step]
    taff = np.asarray(template_affine, float) @ np.diag([step, step, step, 1.0])
    ts = ndi.gaussian_filter(sub, sigma_mm / (tvs * step), mode="constant").astype(np.float32)
    idx = np.argwhere(fs > 1e-3)
    idx = idx[::max(1, len(idx) // MAX_FIT_POINTS)]  # a regular subset: deterministic
    world = idx.astype(float) @ ca[:3, :3].T + ca[:3, 3]
    return {"target": fs[tuple(idx.T)].astype(float), "world": np.c_[world, np.ones(len(world))],
            "moving": np.ascontiguousarray(ts[None]),
            "grads": np.ascontiguousarray(np.stack(np.gradient(ts)).astype(np.float32)),
            "moving_inv": np.linalg.inv(taff)}


def _shape_fit(level, m0, kind, centre, iterations=20):
    """Levenberg-Marquardt fit (analytic Jacobian) of the smoothed template brain sampled through
    the transform to the smoothed scan brain at the level's points. Returns the matrix.

    The samples and normal equations come from numba kernels with the values of the numpy / scipy
    calls they replace (``map_coordinates(order=1, mode="constant")``, the einsum Jacobian and its
    products), bit for bit."""
    wh, target, mov, inv_mov = level["world"], level["target"], level["moving"], level["moving_inv"]
    step = 1e-4

    def matrix(p):
        return inv_mov @ _params_to_matrix(p, kind, centre)

    def sample(volumes, v):
        out = np.empty((len(v), volumes.shape[0]), np.float32)
        _sample_linear(volumes, np.ascontiguousarray(v), out)
        return out

    # products by einsum (no BLAS call: tall-skinny BLAS products crawl when its threads compete
    # with other processes for the cores)
    def apply(m):
        return np.einsum("nj,ij->ni", wh, m[:3, :])

    def residuals(p):
        return sample(mov, apply(matrix(p)))[:, 0] - target

    def normal_equations(p, r):
        """J^T J and J^T r of the Jacobian at ``p`` (residuals ``r``)."""
        m = matrix(p)
        g = sample(level["grads"], apply(m))  # d moving / d voxel
        dms = np.stack([(matrix(p + step * np.eye(len(p))[k]) - m)[:3, :] / step for k in range(len(p))])
        h, grad = np.zeros((len(p), len(p))), np.zeros(len(p))
        _normal_equations(g, wh, np.ascontiguousarray(dms), r, h, grad)
        return h, grad

    p = _matrix_to_params(m0, kind, centre)
    r = residuals(p)
    cost, lam = float(r @ r), 1e-3
    for _ in range(iterations):
        h, grad = normal_equations(p, r)
        damp = np.diag(np.maximum(np.diag(h), 1e-12))
        for _ in range(6):  # raise the damping until a step lowers the cost; none: converged
            dp = np.linalg.solve(h + lam * damp, -grad)
            r_new = residuals(p + dp)
            c_new = float(r_new @ r_new)
            if c_new < cost:
                break
            lam *= 10.0
        else:
            break
        p, r, gain, cost = p + dp, r_new, cost - c_new, c_new
        lam = max(lam / 3.0, 1e-7)
        if gain < 1e-5 * cost:
            break
    return _params_to_matrix(p, kind, centre)


@njit(cache=True, nogil=True)
def _sample_linear(volumes, points, out):
    """``out[n, v] = map_coordinates(volumes[v], points.T, order=1, mode="constant", cval=0)[n]``
    (float32 volumes, voxel coordinates float64), scipy's arithmetic: a point outside
    ``[0, size - 1]`` on any axis is 0; weights ``1 - f`` and ``1 - (1 - f)`` (``f`` the fraction past
    the lower voxel); the 8 corners (the upper one mirrored at the last voxel) in C order, each
    ``value * w0 * w1 * w2`` added to 0 in float64, stored as float32."""
    nv, n0, n1, n2 = volumes.shape
    dims = (n0, n1, n2)
    w = np.empty((3, 2))
    corner = np.empty((3, 2), np.int64)
    for p in range(points.shape[0]):
        outside = False
        for a in range(3):
            cc = points[p, a]
            if not (cc >= 0.0 and cc <= dims[a] - 1):
                outside = True
                break
            lo = np.floor(cc)
            w[a, 0] = 1.0 - (cc - lo)
            w[a, 1] = 1.0 - w[a, 0]
            corner[a, 0] = np.int64(lo)
            hi = corner[a, 0] + 1
            corner[a, 1] = hi if hi < dims[a] else (2 * dims[a] - 2 - hi if dims[a] > 1 else 0)
        for v in range(nv):
            if outside:
                out[p, v] = 0.0
                continue
            t = 0.0
            for c0 in range(2):
                for c1 in range(2):
                    for c2 in range(2):
                        coeff = np.float64(volumes[v, corner[0, c0], corner[1, c1], corner[2, c2]])
                        coeff *= w[0, c0]
                        coeff *= w[1, c1]
                        coeff *= w[2, c2]
                        t += coeff
            out[p, v] = np.float32(t)


@njit(cache=True, nogil=True)
def _normal_equations(g, wh, dms, r, h, grad):
    """``jac = einsum("ni,nj,kij->nk", g, wh, dms)`` (float32 ``g`` taken as float64), then
    ``h += einsum("nk,nl->kl", jac, jac)`` and ``grad += einsum("nk,n->k", jac, r)``, with einsum's
    order of operations: each product ``(g * wh) * dms`` added to 0 over ``i`` then ``j``, the
    point sums in point order."""
    n = g.shape[0]
    nk = dms.shape[0]
    row = np.empty(nk)
    for a in range(n):
        for k in range(nk):
            acc = 0.0
            for i in range(3):
                gi = np.float64(g[a, i])
                for j in range(4):
                    acc = (gi * wh[a, j]) * dms[k, i, j] + acc
            row[k] = acc
        for k in range(nk):
            for m in range(nk):
                h[k, m] = row[k] * row[m] + h[k, m]
            grad[k] = row[k] * r[a] + grad[k]


def mutual_information(a, b, bins=32):
    """Mutual information (nats) of two equally long samples (joint histogram of ``bins`` bins)."""
    h, _, _ = np.histogram2d(a, b, bins=bins)
    p = h / max(h.sum(), 1.0)
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def register_template(image, affine, mask, template, template_affine, template_mask, initial=None):
    """Register a brain template to a scan (the scan is fixed), fast and with its quality.

    The brain's shape carries the registration: the scan's brain mask and the template's brain,
    both smoothed, are fitted by least squares (scipy) on coarse grids (:data:`SHAPE_LEVELS`: 8 mm
    then 4 mm), rigid first, then affine (similarity for a scan that sees less than 70 % of the
    template brain, e.g. a slab: its missing extent cannot fix a scale along it). Starts: the
    template brain centred on the scan's, without rotation and with the rotation that matches the
    masks' principal axes (when well defined and within 40 deg of the scanner's axes); a centre of
    mass within the scan's field of view (:func:`fov_centred`), so a slab is matched to the part
    of the brain it shows, at its own height and at +-25 mm along its thin axis. The start whose
    rigid fit overlaps the scan's brain best goes on (the first with a Dice of
    :data:`GOOD_START_DICE` ends the search). All sampling is on fixed grids: the result is
    deterministic.

    Parameters
    ----------
    image, mask : numpy.ndarray
        Scan magnitude and brain mask on the scan grid (the magnitude only enters the reported
        mutual information).
    affine : numpy.ndarray
        4x4 voxel-to-world affine of the scan (RAS+ mm; flips and obliquity are carried through).
    template, template_mask : numpy.ndarray
        Template T1 (0 outside the brain) and its brain mask, on the template grid.
    template_affine : numpy.ndarray
        4x4 affine of the template grid (MNI mm).
    initial : numpy.ndarray or None
        A rigid 4x4 start (scan world -> template world) instead of the mask-based ones (tests).

    Returns
    -------
    dict
        ``matrix`` (4x4, scan world -> template world), ``dice`` (registered template brain vs the
        scan's brain mask on a 3 mm grid of the scan's field of view), ``mutual_information``
        (nats, masked magnitude vs template T1 through the result), ``scale`` (cube root of the
        determinant), ``rotation_deg``, ``kind`` (affine / similarity), ``coverage`` (fraction of
        the template brain inside the scan's field of view), ``quality`` (``high`` >=
        :data:`DICE_HIGH`, ``moderate``, ``failed`` below :data:`DICE_MIN`, with a scale outside
        :data:`SCALE_RANGE`, a rotation above :data:`MAX_ROTATION_DEG` or a coverage below
        :data:`MIN_COVERAGE`), ``reason`` (why it
        failed, '' otherwise), ``start`` and ``starts`` (rigid Dice of each start).
    """

    mask = np.asarray(mask)
    mask = mask if mask.dtype == bool else mask > 0
    tmask = np.asarray(template_mask) > 0
    # one pass over the full grid: about 1 mm blocks (brain fraction, masked magnitude); the
    # coarse grids are built from these
    bf = coarse_factors(affine, 1.0)
    bmask, baff = block_mean(mask, affine, bf)
    bimg, _ = block_mean(np.where(mask, np.asarray(image, np.float32), np.float32(0)), affine, bf)
    levels = [_shape_level(bmask, baff, tmask, template_affine, g, s) for g, s in SHAPE_LEVELS]
    qf = coarse_factors(baff, COARSE_MM)
    qm, qa = block_mean(bmask, baff, qf)
    qmask = qm >= 0.5
    if qmask.sum() < 50:
        raise ValueError("brain mask too small for template registration")
    centre = mask_moments(qmask, qa)[0]

    def fit(m, kind, lv=levels):
        for level in lv:
            m = _shape_fit(level, m, kind, centre)
        return m

    def overlap(m):
        return dice(qmask, warp_mask(tmask, template_affine, m, qmask.shape, qa))

    if initial is not None:
        starts = [("given", np.asarray(initial, float))]
    else:
        starts = [("centred", fov_centred(np.eye(3), qmask, qa, tmask, template_affine))]
        r = axis_rotation(mask_moments(qmask, qa)[1], mask_moments(tmask, template_affine)[1])
        if r is not None and rotation_angle_deg(r) > 3.0:
            starts.append(("principal_axes", fov_centred(r, qmask, qa, tmask, template_affine)))
    tpts = np.argwhere(tmask).astype(float)[::11] @ template_affine[:3, :3].T + template_affine[:3, 3]

    def coverage(m):
        inv = np.linalg.inv(m)
        return float(_inside_fov(tpts @ inv[:3, :3].T + inv[:3, 3], qmask.shape, qa).mean())

    if initial is None and coverage(starts[0][1]) < 0.7:  # a slab: also try it higher and lower
        thin = np.argmin(np.sqrt((qa[:3, :3] ** 2).sum(0)) * np.array(qmask.shape))
        axis = qa[:3, thin] / np.linalg.norm(qa[:3, thin])
        for name, m0 in list(starts):
            for dz in (-25.0, 25.0):
                shift = np.eye(4)
                shift[:3, 3] = -dz * axis
                starts.append((f"{name}{dz:+.0f}mm", m0 @ shift))
    tried = []
    for name, m0 in starts:
        m = fit(m0, "rigid", levels[:1])
        tried.append((overlap(m), name, m))
        if tried[-1][0] >= GOOD_START_DICE:  # a start this good needs no other
            break
    tried.sort(key=lambda t: t[0], reverse=True)
    _, best_name, m = tried[0]
    cov = coverage(m)
    kind = "affine" if cov >= 0.7 else "similarity"
    m = fit(m, kind)
    cov = coverage(m)
    d = overlap(m)
    vals = warp_image(template, template_affine, m, qmask.shape, qa)
    img, _ = block_mean(bimg, baff, qf)
    mi = mutual_information(img[qmask] / np.maximum(qm[qmask], 1e-3), vals[qmask])
    scale = float(np.cbrt(abs(np.linalg.det(m[:3, :3]))))
    u, _, vt = np.linalg.svd(m[:3, :3])
    rot = rotation_angle_deg(u @ vt)
    reasons = [f"Dice {d:.2f} < {DICE_MIN}"] if d < DICE_MIN else []
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        reasons.append(f"scale {scale:.2f} outside {SCALE_RANGE[0]}-{SCALE_RANGE[1]}")
    if cov < MIN_COVERAGE:
        reasons.append(f"the scan shows {100 * cov:.0f}% of the template brain (< {100 * MIN_COVERAGE:.0f}%)")
    if rot > MAX_ROTATION_DEG:
        reasons.append(f"rotation {rot:.0f} deg > {MAX_ROTATION_DEG:.0f}")
    quality = "failed" if reasons else "high" if d >= DICE_HIGH else "moderate"
    return {"matrix": m, "reason": "; ".join(reasons), "dice": round(d, 4), "mutual_information": round(mi, 4), "scale": round(scale, 4),
            "rotation_deg": round(rot, 2), "kind": kind, "coverage": round(cov, 3),
            "quality": quality, "start": best_name,
            "starts": {name: round(float(dd), 4) for dd, name, _ in tried}}


def warp_image(data, data_affine, matrix, shape, affine):
    """An image (moving grid) sampled on a fixed grid through ``matrix`` (linear, 0 outside)."""
    m = np.linalg.inv(data_affine) @ matrix @ affine
    return affine_linear(data, m, shape)


def affine_linear(data, m, shape):
    """``scipy.ndimage.affine_transform(data as float32, m[:3, :3], m[:3, 3], output_shape=shape,
    order=1, cval=0)``, its float32 values bit for bit (voxel ``c`` samples ``data`` at
    ``((m[:, 3] + c0 m[:, 0]) + c1 m[:, 1]) + c2 m[:, 2]``, scipy's order of operations)."""
    volume = np.ascontiguousarray(np.asarray(data, np.float32)[None])
    out = np.empty(tuple(int(n) for n in shape[:3]), np.float32)
    _affine_linear(volume, np.ascontiguousarray(np.asarray(m, np.float64)[:3, :4]), out)
    return out


@njit(cache=True, nogil=True)
def _affine_linear(volume, m, out):
    """The output grid's points through ``m`` (3 x 4, voxel to voxel), sampled by :func:`_sample_linear`."""
    n0, n1, n2 = out.shape
    points = np.empty((n0 * n1 * n2, 3))
    q = 0
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                for a in range(3):
                    points[q, a] = ((m[a, 3] + i * m[a, 0]) + j * m[a, 1]) + k * m[a, 2]
                q += 1
    values = np.empty((n0 * n1 * n2, 1), np.float32)
    _sample_linear(volume, points, values)
    q = 0
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                out[i, j, k] = values[q, 0]
                q += 1
