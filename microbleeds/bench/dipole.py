"""Magnetic dipole fields for the phantom generator.

Units: susceptibility in ppm (SI, relative to the surrounding tissue or water), fields as the
relative field shift ``dB / B0`` in ppm, lengths in mm, phases in radians.

Two ways to get the field of a susceptibility distribution are provided:

* :func:`field_from_chi` - convolution with the unit dipole in k-space on a regular grid,
  ``D(k) = 1/3 - (k . b0)^2 / |k|^2`` (Salomir et al. 2003; Marques & Bowtell 2005), with the
  Lorentz-sphere correction already included (the field inside a uniform sphere is 0) and the
  ``k = 0`` term set to 0 (mean field removed); by default the kernel is the Fourier transform
  of the sampled real-space dipole (see :func:`dipole_kernel_rfft`);
* :func:`sphere_field_ppm` - the analytic field of a uniformly magnetised sphere,
  ``dB/B0 = (dchi/3) (a/r)^3 (3 cos^2(theta) - 1)`` outside and 0 inside.

:func:`source_factor` evaluates, for one small sphere, the complex intra-voxel average
``mean(w(x) exp(i phi(x)))`` over a sub-voxel grid of every acquisition voxel of a local patch
(the sub-sampling adapts to the local phase gradient), which is what a scanner measures.

The numba kernels live in :mod:`.dipole_kernels`, imported on first use.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from ..contract import GAMMA_BAR_HZ_PER_T


def phase_per_ppm(b0_t: float, te_ms: float, sign: float = -1.0) -> float:
    """Phase in rad produced by a 1 ppm field shift: ``sign * 2 pi * gamma_bar * B0 * TE * 1e-6``.

    Parameters
    ----------
    b0_t : float
        Main field in tesla.
    te_ms : float
        Echo time in ms.
    sign : float
        -1 (default, this package's convention: ``phase = -gamma dB TE``, paramagnetic sources
        give negative phase along B0) or +1.
    """
    te_s = float(te_ms) * 1e-3
    return float(sign) * 2.0 * math.pi * GAMMA_BAR_HZ_PER_T * float(b0_t) * te_s * 1e-6


def dipole_kernel_rfft(shape, voxel_size_mm, b0_dir, method: str = "spatial") -> np.ndarray:
    """Unit dipole kernel on the half spectrum of ``scipy.fft.rfftn`` (float32).

    ``b0_dir`` is the B0 unit vector expressed in the grid's own axes (i, j, k).

    ``method="spatial"`` (default) samples the real-space dipole
    ``v (3 cos^2 theta - 1) / (4 pi r^3)`` (``v`` the voxel volume, 0 at the origin,
    minimum-image distances on the periodic grid) and Fourier-transforms it (the "discrete
    dipole kernel" idea of Milovic et al., MRM 2017), minus the lattice's local term (the sum
    of the sampled kernel over a sphere around the origin, 0 for a cubic lattice but about
    -0.3 for 0.5 x 0.5 x 0.67 mm voxels and B0 along k), so that the field inside a uniform
    sphere stays 0 on anisotropic grids too. Unlike the continuous
    ``D = 1/3 - (k.b)^2/k^2`` (``method="kspace"``) it has no jump at the Nyquist boundary for
    an oblique B0, which otherwise leaves an alternating, slowly decaying error of a few per
    cent of the field; for B0 along a grid axis both agree within about 1 %.
    """
    b = np.asarray(b0_dir, dtype=np.float64)
    b = b / np.linalg.norm(b)
    vs = np.asarray([float(v) for v in voxel_size_mm], dtype=np.float64)
    if method == "spatial":
        from .dipole_kernels import spatial_dipole

        d = spatial_dipole(np.asarray(shape, dtype=np.int64), vs, b)
        spec = sfft.rfftn(d, workers=-1)
        out = spec.real.astype(np.float32)
        # remove the lattice's local (delta) term: on an anisotropic lattice the sampled
        # dipole summed over a sphere around the origin is not 0 (it is 0 for the continuous
        # kernel), which would add c * chi to the field inside every source
        half = 0.5 * np.asarray(shape, dtype=np.float64) * vs
        out -= np.float32(_lattice_sphere_sum(vs, b, min(10.0 * vs.max(), half.min())))
        out[0, 0, 0] = 0.0
        return out
    if method != "kspace":
        raise ValueError("method must be 'spatial' or 'kspace'")
    k0 = sfft.fftfreq(shape[0], d=vs[0])[:, None, None]
    k1 = sfft.fftfreq(shape[1], d=vs[1])[None, :, None]
    k2 = sfft.rfftfreq(shape[2], d=vs[2])[None, None, :]
    k2sum = k0 * k0 + k1 * k1 + k2 * k2
    kb = k0 * b[0] + k1 * b[1] + k2 * b[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 1.0 / 3.0 - kb * kb / k2sum
    d[0, 0, 0] = 0.0
    return d.astype(np.float32)


def _lattice_sphere_sum(vs, b, radius):
    """Sum of the sampled dipole kernel over lattice points 0 < |r| <= radius."""
    n = [int(radius / v) + 1 for v in vs]
    g = [np.arange(-m, m + 1) * v for m, v in zip(n, vs)]
    x = np.stack(np.meshgrid(*g, indexing="ij"), axis=-1)
    r2 = np.sum(x * x, axis=-1)
    m = (r2 > 0) & (r2 <= radius * radius)
    pb = x[m] @ b
    d = np.prod(vs) / (4.0 * math.pi) * (3.0 * pb * pb / r2[m] - 1.0) / r2[m] ** 1.5
    return float(np.sum(d))


def field_from_chi(chi_ppm, voxel_size_mm, b0_dir, workers=None, method="spatial") -> np.ndarray:
    """Relative field ``dB/B0`` (ppm, float32) of a susceptibility map by k-space convolution.

    The map is zero-padded to a fast FFT length (no extra padding: leave an air margin around
    the object if wrap-around matters). ``b0_dir`` is given in the grid's axes (i, j, k).
    """
    chi = np.asarray(chi_ppm, dtype=np.float32)
    shape = chi.shape
    fshape = [sfft.next_fast_len(int(n), real=True) for n in shape]
    if workers is None:
        workers = -1
    spec = sfft.rfftn(chi, s=fshape, workers=workers)
    spec *= dipole_kernel_rfft(fshape, voxel_size_mm, b0_dir, method=method)
    out = sfft.irfftn(spec, s=fshape, workers=workers)
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]], dtype=np.float32)


def sphere_field_ppm(rel_mm, radius_mm, chi_ppm, b0_dir=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Analytic ``dB/B0`` in ppm of a sphere at points ``rel_mm`` (..., 3) relative to its centre.

    Outside: ``(chi/3) (a/r)^3 (3 cos^2 theta - 1)``; inside: 0 (Lorentz-corrected).
    """
    rel = np.asarray(rel_mm, dtype=np.float64)
    b = np.asarray(b0_dir, dtype=np.float64)
    b = b / np.linalg.norm(b)
    r2 = np.sum(rel * rel, axis=-1)
    r = np.sqrt(r2)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos2 = (rel @ b) ** 2 / r2
        f = (chi_ppm / 3.0) * (radius_mm / r) ** 3 * (3.0 * cos2 - 1.0)
    return np.where(r > radius_mm, f, 0.0)


def source_patch_radius_mm(radius_mm, chi_ppm, ppp, tol_rad=0.01, max_mm=40.0) -> float:
    """Half-width (mm) of the patch outside which a sphere's phase stays below ``tol_rad``."""
    peak = abs(ppp * chi_ppm) * 2.0 / 3.0
    r = radius_mm * max(peak / tol_rad, 1.0) ** (1.0 / 3.0)
    return float(min(max(r, 3.0 * radius_mm), max_mm))


def source_factor(affine, shape, centre_mm, radius_mm, chi_ppm, ppp, b0_dir=(0.0, 0.0, 1.0),
                  inside_amp=0.0, max_sub=16, tol_rad=0.01, max_patch_mm=40.0):
    """Complex intra-voxel signal factor of one sphere on a local patch of an image grid.

    Parameters
    ----------
    affine : (4, 4) array
        Voxel-to-world (mm) affine of the image grid.
    shape : tuple of int
        Image shape (first 3 axes).
    centre_mm : (3,) array
        World position of the sphere's centre (mm).
    radius_mm, chi_ppm : float
        True radius (mm) and susceptibility relative to the surrounding tissue (ppm).
    ppp : float
        Phase per ppm (rad), see :func:`phase_per_ppm` (carries the sign convention).
    b0_dir : (3,) array
        B0 direction in world coordinates.
    inside_amp : float
        Relative signal left inside the sphere (0 = none).

    Returns
    -------
    slices : tuple of slice
        Where the patch sits in the image.
    factor : complex128 array
        ``mean(w exp(i phi))`` per voxel of the patch (multiply the complex image by it).
    frac : float64 array
        Fraction of each voxel inside the sphere.
    """
    affine = np.asarray(affine, dtype=np.float64)
    mat = np.ascontiguousarray(affine[:3, :3])
    trans = np.ascontiguousarray(affine[:3, 3])
    centre = np.asarray(centre_mm, dtype=np.float64)
    b = np.asarray(b0_dir, dtype=np.float64)
    b = np.ascontiguousarray(b / np.linalg.norm(b))
    half = source_patch_radius_mm(radius_mm, chi_ppm, ppp, tol_rad, max_patch_mm)
    inv = np.linalg.inv(mat)
    cidx = inv @ (centre - trans)
    ext = half * np.sqrt(np.sum(inv * inv, axis=1))
    lo = np.maximum(np.floor(cidx - ext).astype(np.int64), 0)
    hi = np.minimum(np.ceil(cidx + ext).astype(np.int64) + 1, np.asarray(shape[:3], dtype=np.int64))
    pshape = np.maximum(hi - lo, 0)
    factor = np.ones(tuple(int(p) for p in pshape), dtype=np.complex128)
    frac = np.zeros(tuple(int(p) for p in pshape), dtype=np.float64)
    if np.all(pshape > 0):
        from .dipole_kernels import source_factor_kernel

        source_factor_kernel(mat, trans, lo, pshape, centre, float(radius_mm), float(chi_ppm), b,
                             float(ppp), float(inside_amp), int(max_sub), factor, frac)
    slices = tuple(slice(int(a), int(a + p)) for a, p in zip(lo, pshape))
    return slices, factor, frac
