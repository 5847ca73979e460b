"""Registration (SimpleITK): a rigid or affine transform between two images in scanner RAS+ mm.

Used to bring a segmentation made on a T1w, or an atlas template, onto the scan (Mattes mutual
information, multi-resolution). Matrices returned map scan world (RAS+ mm) to moving world.
"""

from __future__ import annotations

import numpy as np

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
             seed=0, max_samples=60000, shrink=(4, 2, 1)):
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
    max_samples : int
        About this many random metric samples (at most 25% of the fixed voxels or mask).
    shrink : tuple of int
        Shrink factor of each resolution level (smoothing sigma: half the factor, in mm; 0 at 1).

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
    init = sitk.CenteredTransformInitializer(f, m, first, sitk.CenteredTransformInitializerFilter.MOMENTS)
    stages = [type(first)(init)]
    if kind == "affine":
        stages.append(None)
    elif kind != "rigid":
        raise ValueError(f"kind must be 'rigid' or 'affine', not {kind!r}")
    nvox = int(np.count_nonzero(fixed_mask)) if fixed_mask is not None else int(np.asarray(fixed).size)
    pct = float(min(0.25, max(0.01, max_samples / max(nvox, 1))))  # ~max_samples metric samples
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
