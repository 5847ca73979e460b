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


def _save(path, data, affine, zooms_t=None):
    img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    if zooms_t is not None:
        img.header.set_zooms(img.header.get_zooms()[:3] + (zooms_t,))
    nib.save(img, str(path))


def _json(path, data):
    import json

    path.write_text(json.dumps(data, indent=1))


TOP_SIDECAR = {"MagneticFieldStrength": 1.5, "EchoTime": 0.025, "Manufacturer": "Siemens", "RepetitionTime": 0.05,
               "FlipAngle": 15}
"""The dataset's top-level ``T2starw.json`` (inherited by every ``*_T2starw.nii.gz``)."""
MEGRE_TES_S = {3: (0.005, 0.010, 0.015), 4: (0.006, 0.012, 0.018, 0.024)}


def bids_dataset(root, subjects=3, sessions=2, shape=(28, 28, 12), seed=0):
    """A small valid BIDS dataset (tiny volumes) of ``subjects`` x ``sessions``: per session a
    magnitude-only ``T2starw`` (inheriting the top-level ``T2starw.json``, 1.5 T, TE 25 ms), a
    T1w, a FLAIR, a 4D BOLD and a 4D DWI; in ``ses-1`` a 3-echo ``part-mag``/``part-phase``
    ``MEGRE`` at 3 T (TE 5/10/15 ms); ``sub-01_ses-2`` also a 4-echo magnitude ``MEGRE`` (7 T);
    plus ``sourcedata/`` and ``code/`` holding NIfTI files. Returns the root."""
    from pathlib import Path

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _json(root / "dataset_description.json", {"Name": "synthetic microbleeds", "BIDSVersion": "1.10.0",
                                              "DatasetType": "raw", "License": "CC0", "Authors": ["Test, A."]})
    (root / "README").write_text("A synthetic dataset for the microbleeds tests.\n")
    (root / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{s:02d}\n" for s in range(1, subjects + 1)))
    _json(root / "participants.json", {"participant_id": {"Description": "participant"}})
    _json(root / "T2starw.json", TOP_SIDECAR)
    _json(root / "task-rest_bold.json", {"TaskName": "rest", "RepetitionTime": 2.0})
    vol, affine, _ = head_volume(shape=shape, voxel_mm=(1.0, 1.0, 2.0), balls=(((14, 14, 6), 3.0, 0.7),), seed=seed)
    rng = np.random.default_rng(seed)
    for s in range(1, subjects + 1):
        for t in range(1, sessions + 1):
            base = f"sub-{s:02d}_ses-{t}"
            anat = root / f"sub-{s:02d}" / f"ses-{t}" / "anat"
            func, dwi = anat.parent / "func", anat.parent / "dwi"
            for folder in (anat, func, dwi):
                folder.mkdir(parents=True, exist_ok=True)
            _save(anat / f"{base}_T2starw.nii.gz", vol, affine)
            for suffix, te in (("T1w", 0.003), ("FLAIR", 0.1)):
                _save(anat / f"{base}_{suffix}.nii.gz", vol, affine)
                _json(anat / f"{base}_{suffix}.json", {"EchoTime": te, "RepetitionTime": 2.0})
            _save(func / f"{base}_task-rest_bold.nii.gz", np.stack([vol] * 4, axis=3), affine, zooms_t=2.0)
            _save(dwi / f"{base}_dwi.nii.gz", np.stack([vol] * 3, axis=3), affine, zooms_t=1.0)
            (dwi / f"{base}_dwi.bval").write_text("0 1000 1000\n")
            (dwi / f"{base}_dwi.bvec").write_text("0 1 0\n0 0 1\n0 0 0\n")
            _json(dwi / f"{base}_dwi.json", {"RepetitionTime": 3.0})
            echoes = {1: [3], 2: [4] if s == 1 else []}[t] if t <= 2 else []
            for n in echoes:
                acq, field_t = f"me{n}", 3.0 if n == 3 else 7.0
                for e, te in enumerate(MEGRE_TES_S[n], start=1):
                    mag = vol * np.exp(-te / 0.05)
                    parts = (("mag", mag), ("phase", rng.uniform(-np.pi, np.pi, shape))) if n == 3 else (("mag", mag),)
                    for part, data in parts:
                        name = f"{base}_acq-{acq}_echo-{e}_part-{part}_MEGRE"
                        _save(anat / f"{name}.nii.gz", data, affine)
                        meta = {"EchoTime": te, "MagneticFieldStrength": field_t, "Manufacturer": "Siemens",
                                "RepetitionTime": 0.03, "FlipAngle": 15}
                        if part == "phase":
                            meta["Units"] = "rad"
                        _json(anat / f"{name}.json", meta)
    (root / "sourcedata").mkdir(exist_ok=True)
    _save(root / "sourcedata" / "sub-01_T2starw.nii.gz", vol, affine)
    (root / "code").mkdir(exist_ok=True)
    (root / "code" / "convert.sh").write_text("#!/bin/sh\n")
    _save(root / "code" / "scratch.nii.gz", vol, affine)
    return root
