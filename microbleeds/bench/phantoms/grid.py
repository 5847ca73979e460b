"""The phantom's grids: the acquisition grid (voxel-to-world affine, mm), the margin around it
for the field calculation, and the fine grid that oversamples it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .params import PhantomParams


def _rotation(deg) -> np.ndarray:
    """Rotation matrix about x, then y, then z (angles in degrees)."""
    ax, ay, az = (math.radians(float(a)) for a in deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _acq_grid(params: PhantomParams):
    """Acquisition grid of resolved parameters: (shape, 4x4 voxel-to-world affine, rotation)."""
    vs = np.asarray(params.voxel_size_mm, dtype=np.float64)
    fov = np.asarray(params.fov_mm, dtype=np.float64)
    shape = np.maximum(np.round(fov / vs).astype(np.int64), 1)
    rot = _rotation(params.oblique_deg)
    mat = rot @ np.diag(vs)
    centre = np.asarray(params.centre_mm, dtype=np.float64)
    trans = centre - mat @ ((shape - 1) / 2.0)
    aff = np.eye(4)
    aff[:3, :3] = mat
    aff[:3, 3] = trans
    return tuple(int(s) for s in shape), aff, rot


def _oversampling(params: PhantomParams) -> np.ndarray:
    """Fine-grid factor per axis (3 ints >= 1), see :attr:`PhantomParams.oversampling`."""
    if params.oversampling is not None:
        os_ = np.asarray(params.oversampling, dtype=np.int64)
    else:
        vs = np.asarray(params.voxel_size_mm, dtype=np.float64)
        os_ = np.clip(np.round(vs / float(params.fine_target_mm)).astype(np.int64), 1, 4)
    if os_.shape != (3,) or np.any(os_ < 1):
        raise ValueError(f"oversampling must be 3 integers >= 1, got {params.oversampling!r}")
    return os_


def _fine_grid(mat, trans, os_):
    """Matrix and translation of the grid splitting each voxel of ``(mat, trans)`` into ``os_``
    sub-voxels (their centres)."""
    return mat / os_[None, :], trans + mat @ (0.5 / os_ - 0.5)


def _grid_points(mat, trans, shape):
    """World coordinates (shape + (3,)) of the points of a grid."""
    idx = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape),
                               indexing="ij"), axis=-1)
    return idx @ np.asarray(mat, dtype=np.float64).T + np.asarray(trans, dtype=np.float64)


@dataclass(frozen=True)
class _SimulationGrid:
    """The grids of one simulation (see :func:`_simulation_grid`)."""

    shape: tuple          # acquisition grid
    affine: np.ndarray    # its voxel-to-world affine (mm)
    rot: np.ndarray       # rotation of the acquisition axes in the world
    voxel_mm: np.ndarray
    oversampling: np.ndarray
    margin: np.ndarray    # voxels added on each side for the field calculation
    eshape: np.ndarray    # acquisition grid with the margin ("extended")
    fshape: np.ndarray    # fine grid of the extended grid
    fmat: np.ndarray
    ftrans: np.ndarray
    fov_lo: np.ndarray    # world bounding box of the field of view (mm)
    fov_hi: np.ndarray


def _simulation_grid(params: PhantomParams) -> _SimulationGrid:
    """Acquisition, extended and fine grids of resolved parameters (``fov_mm``, ``centre_mm`` set)."""
    shape, aff, rot = _acq_grid(params)
    vs = np.asarray(params.voxel_size_mm, dtype=np.float64)
    os_ = _oversampling(params)
    m = np.ceil(float(params.margin_mm) / vs).astype(np.int64)
    eshape = np.asarray(shape) + 2 * m
    mat = aff[:3, :3]
    fmat, ftrans = _fine_grid(mat, aff[:3, 3] - mat @ m, os_)
    corners = np.array([[a, b, c] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1)
                        for c in (0, shape[2] - 1)], dtype=np.float64)
    wc = corners @ mat.T + aff[:3, 3]
    return _SimulationGrid(shape=shape, affine=aff, rot=rot, voxel_mm=vs, oversampling=os_, margin=m,
                           eshape=eshape, fshape=eshape * os_, fmat=fmat, ftrans=ftrans,
                           fov_lo=wc.min(axis=0), fov_hi=wc.max(axis=0))
