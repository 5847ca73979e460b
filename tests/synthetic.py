"""Small painted test volumes (not physical phantoms): a head-like ellipsoid with dark balls,
dark tubes and Rician-like noise, for fast unit tests of the pipeline's mechanics."""

from contextlib import contextmanager

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi


def head_volume(shape=(96, 96, 48), voxel_mm=(1.0, 1.0, 2.0), balls=(), tubes=(), snr=25.0, seed=0):
    """Return (volume float32, affine, truth list of ball centres in voxel coordinates).

    balls : sequence of (centre_vox (3,), diameter_mm, contrast)
    tubes : sequence of (start_vox, end_vox, diameter_mm, contrast)
    """
    rng = np.random.default_rng(seed)
    vox = np.asarray(voxel_mm, dtype=float)
    grid = np.indices(shape).astype(float)
    centre = (np.asarray(shape) - 1) / 2.0
    radii = np.asarray(shape) * vox * np.array([0.4, 0.42, 0.42])
    r2 = sum(((g - c) * v / r) ** 2 for g, c, v, r in zip(grid, centre, vox, radii))
    brain = r2 <= 1.0
    image = np.where(brain, 1.0, 0.0)
    image = ndi.gaussian_filter(image, 0.7)
    darkness = np.zeros(shape)
    for ball_centre, diameter, contrast in balls:
        d2 = sum(((g - c) * v) ** 2 for g, c, v in zip(grid, ball_centre, vox))
        darkness = np.maximum(darkness, contrast * (d2 <= (diameter / 2.0) ** 2))
    for start, end, diameter, contrast in tubes:
        start, end = np.asarray(start, float), np.asarray(end, float)
        axis = (end - start) * vox
        length = np.linalg.norm(axis)
        axis /= length
        rel = np.stack([(g - s) * v for g, s, v in zip(grid, start, vox)])
        t = np.clip(np.tensordot(axis, rel, axes=1), 0, length)
        closest = rel - axis[:, None, None, None] * t
        dist2 = (closest ** 2).sum(0)
        darkness = np.maximum(darkness, contrast * (dist2 <= (diameter / 2.0) ** 2))
    darkness = ndi.gaussian_filter(darkness, 0.5)
    image = image * (1.0 - darkness)
    sigma = 1.0 / snr
    noisy = np.sqrt((image + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
    affine = np.diag(list(vox) + [1.0])
    affine[:3, 3] = -centre * vox
    return noisy.astype(np.float32), affine, [np.asarray(b[0], float) for b in balls]


def nifti_file(path, data, affine=None, slope=None):
    """Save ``data`` as a NIfTI file (identity affine by default, optional scl_slope); returns the path."""
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    return str(path)


def dying_worker(job):
    """A batch job for the worker-death tests: a scan named ``*die*`` kills its worker process;
    ``*once*`` kills it only the first time (a marker file beside the scan remembers)."""
    import os
    from pathlib import Path

    from microbleeds.batch import detect_one

    path = Path(job[0])
    marker = path.with_suffix(".died")
    if "die" in path.name or ("once" in path.name and not marker.exists()):
        marker.touch()
        os._exit(9)
    return detect_one(job)


@contextmanager
def lock_held_elsewhere(folder, seconds=60.0):
    """While inside, another thread holds ``folder``'s result lock (as another run would)."""
    import threading

    from microbleeds.io.results import result_lock

    held, release = threading.Event(), threading.Event()

    def other_run():
        with result_lock(folder):
            held.set()
            release.wait(seconds)

    thread = threading.Thread(target=other_run)
    thread.start()
    try:
        assert held.wait(10), "the other run never took the lock"
        yield
    finally:
        release.set()
        thread.join()
