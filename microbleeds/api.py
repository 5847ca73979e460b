"""Python API: :func:`detect` runs every stage on one scan, in the data's order; the CLI and
:func:`microbleeds.batch.detect_folder` call the same function.

>>> import microbleeds
>>> result = microbleeds.detect("sub-01_T2starw.nii.gz")          # doctest: +SKIP
>>> result.summary["counts"]["total"], result.lesions[0]["x_mm"]  # doctest: +SKIP
>>> result.write("derivatives/microbleeds")                       # doctest: +SKIP
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numba
import numpy as np

from .io.nifti import native_view, to_canonical
from .presets import DEFAULT_PRESET, load_parameters
from .stages.describe import describe_regions
from .stages.load import Scan, load_mask, load_scan
from .stages.locate import label_source, locate, region_columns
from .stages.mimics import classify
from .stages.prepare import (brain_box, brain_mask, echo_noise_level, erode_mm, fortran_copy, noise_level,
                             relative_intensity)
from .stages.seeds import find_seeds
from .stages.segment import cluster_extent, grow_regions
from .stages.subfoci import carve_subfoci
from .stages.threads import concurrent_kernels_safe
from .stages.tabulate import build_summary, lesion_map, summarise_phase, summarise_regions, tabulate


@dataclass
class DetectionResult:
    """Everything one run found on one scan.

    Attributes
    ----------
    lesions : list of dict
        Accepted candidates, columns :data:`microbleeds.contract.LESION_COLUMNS`.
    candidates : list of dict
        Every candidate with its features and rejection reason, :data:`~microbleeds.contract.CANDIDATE_COLUMNS`.
    labels : ndarray int32
        Lesion map on the input's own grid (value = lesion_id; Fortran order, as the file stores it).
    mask : ndarray bool
        Brain mask on the input's own grid (Fortran order).
    summary : dict
        Counts, burden category, parameters, software and input provenance.
    scan : Scan
    """

    lesions: list
    candidates: list
    labels: np.ndarray
    mask: np.ndarray
    summary: dict
    scan: Scan
    phase_images: dict = field(default_factory=dict)

    def write(self, out_dir, name=None, write_images=False):
        """Write the result set into ``out_dir/<name>/`` atomically; returns that folder.

        ``write_images`` adds the SWI and filtered phase (when phase was given)."""
        from .io.results import write_result

        return write_result(self, out_dir, name, write_images)


def detect(source, mask=None, pipeline=DEFAULT_PRESET, affine=None, phase=None, echo_times_ms=None,
           labels=None, labels_t1w=None, metadata=None, **overrides) -> DetectionResult:
    """Find cerebral microbleeds on one SWI or GRE-T2* magnitude scan.

    Parameters
    ----------
    source : str, Path, nibabel image, ndarray or Scan
        The scan (3D, or 4D multi-echo). An array needs ``affine``.
    mask : str, Path or ndarray of bool, optional
        Brain mask on the scan's grid; computed automatically when omitted.
    pipeline : str
        Preset name (see ``microbleeds.presets.preset_names()``) or path to a TOML preset.
    affine : ndarray (4, 4), optional
        Voxel-to-world affine (mm) for an array ``source``.
    phase : str, Path, list of paths, nibabel image or ndarray, optional
        Phase on the magnitude's grid (radians, scanner units or scaled: detected and rescaled);
        4D or one file per echo for multi-echo data. With phase, diamagnetic foci are rejected
        as calcifications and the SWI is computed.
    echo_times_ms : sequence of float, optional
        Echo times (ms) of a multi-echo acquisition; read from BIDS sidecars when omitted.
    labels : str or Path, optional
        Segmentation (FreeSurfer aparc+aseg, SynthSeg, BIDS ``*_dseg``) on the scan's grid or in
        the same scanner space; each lesion gets its MARS region, lobe and hemisphere.
    labels_t1w : str or Path, optional
        The T1w the segmentation was made from, when it must be registered to this scan.
    metadata : dict, optional
        The scan's sidecar metadata when the caller read it (BIDS inheritance, one file per echo);
        default the JSON sidecar beside ``source``.
    **overrides
        Any :class:`~microbleeds.presets.Parameters` field, e.g. ``max_diameter_mm=10``.

    Returns
    -------
    DetectionResult

    Raises
    ------
    InputError
        For unusable input files (message names the file and the problem).
    """
    params = load_parameters(pipeline, **overrides)
    scan = source if isinstance(source, Scan) else load_scan(
        source, echo=_echo(params.echo), affine=affine, echo_times_ms=echo_times_ms, sidecar=metadata)
    brain = _mask(mask, scan, params)
    box = brain_box(brain, scan.affine)
    magnitude = np.ascontiguousarray(scan.magnitude[box[0]])  # read only, by both threads
    # the label source (the atlas' registration) needs only the magnitude and the mask: it runs in a
    # thread while the candidates are found (numpy and the nogil kernels release the GIL); each
    # thread's arithmetic is its own, so the results are those of a serial run, which is what runs
    # where numba's threading layer cannot be entered from two threads (workqueue)
    labels_job = partial(label_source, magnitude.shape, box[1], magnitude=magnitude, brain_mask=brain[box[0]],
                         labels_path=labels, labels_t1w=labels_t1w, use_atlas=params.use_atlas)
    if concurrent_kernels_safe():
        with ThreadPoolExecutor(1, thread_name_prefix="microbleeds-labels") as pool:
            source = pool.submit(_with_numba_threads(labels_job, numba.get_num_threads()))
            found = find_candidates(scan, brain, params, box=box, magnitude=magnitude)
            label_volume = add_regions(found, scan, brain, params, label_volume=source.result())
    else:
        found = find_candidates(scan, brain, params, box=box, magnitude=magnitude)
        label_volume = add_regions(found, scan, brain, params, label_volume=labels_job())
    del magnitude
    swi_result = phase_how = None
    if phase is not None:  # the phase modules (and their eagerly typed kernels) load only when needed
        from .stages.dipole_sign import candidate_signs, cluster_signs, core_coherences
        from .stages.phase import phase_branch

        swi_result, phase_how = phase_branch(scan, phase, brain, params, echo_times_ms)
        candidate_signs(found.rows, swi_result, scan)
        cluster_signs(found.rows, swi_result, scan, params.max_diameter_mm)
        core_coherences(found.rows, found.regions, [b.start for b in found.box], swi_result, params.max_diameter_mm)
    for row in found.rows:
        classify(row, params)
    candidates, lesions, lesion_of_region = tabulate(found.rows, scan)
    summary = build_summary(scan, params, lesions, candidates, found.noise_sigma, brain)
    summarise_regions(summary, [row for row in found.rows if row["status"] == "accepted"], label_volume)
    result = DetectionResult(lesions, candidates, lesion_map(found, lesion_of_region, brain.shape, scan),
                             fortran_copy(native_view(brain, scan.ornt)), summary, scan)
    if swi_result is not None:
        summarise_phase(summary, swi_result, phase_how)
        result.phase_images = swi_result.native_images(scan.ornt)  # views; the SWI is made only if written
    return result


@dataclass
class Candidates:
    """Segmented and described candidates of one scan, on the brain's bounding box."""

    rows: list
    regions: object
    box: tuple
    box_affine: np.ndarray
    noise_sigma: float


def find_candidates(scan, full_brain, params, box=None, magnitude=None) -> Candidates:
    """Prepare, detect, segment and describe: the feature rows of every candidate (canonical).

    ``box`` (slices, affine) is :func:`brain_box` of the mask and ``magnitude`` the scan's
    magnitude on it (C order), when the caller has them."""
    box, box_affine = brain_box(full_brain, scan.affine) if box is None else box
    brain = full_brain[box]
    vox = scan.voxel_size_mm
    magnitude = np.ascontiguousarray(scan.magnitude[box]) if magnitude is None else magnitude
    rel = relative_intensity(magnitude, brain, vox, params.background_sigma_mm)
    if scan.echoes is not None and scan.echo_weights is not None:  # a weighted echo sum: its noise, not its anatomy
        sigma = echo_noise_level(scan.echoes[box], scan.echo_weights, magnitude, rel, brain)
    else:
        sigma = noise_level(rel, brain)
    del magnitude
    interior = erode_mm(brain, vox, params.edge_margin_mm)
    seeds, response = find_seeds(rel, interior, vox, params.radii_mm(), sigma, params.min_contrast)
    # growth may reach max_diameter_mm from the seed in every direction, so a focus too large to
    # count is measured as too large, not cut to size
    regions = grow_regions(rel, brain, seeds, vox, params.max_diameter_mm, params.depth_fraction,
                           min_depth=0.5 * params.min_contrast)
    if params.subfoci:  # microbleeds the watershed merged into a vein network or a neighbour
        regions = carve_subfoci(regions, rel, brain, seeds, vox, sigma, params.min_cnr)
    rows = describe_regions(regions, rel, brain, response, box_affine, vox, sigma, params.shell_mm)
    offset = np.array([b.start for b in box])
    members, cluster_centroid, cluster_diameter = cluster_extent(regions, rel, vox)
    for row, n, centre, diameter in zip(rows, members, cluster_centroid, cluster_diameter):
        row["centroid_canonical"] = row["centroid_vox"] + offset
        row["cluster"] = {"members": int(n), "centroid_canonical": centre + offset, "diameter_mm": float(diameter)}
        centre = tuple(np.clip(np.round(row["centroid_vox"]).astype(int), 0, np.array(brain.shape) - 1))
        row["inside_brain"] = bool(brain[centre])
        row["max_voxel_mm"] = float(np.max(vox))
    return Candidates(rows, regions, box, box_affine, sigma)


def add_regions(found, scan, full_brain, params, labels=None, labels_t1w=None, label_volume=None):
    """MARS region, lobe, hemisphere and region source of every candidate; returns the label source
    (``label_volume`` when given: :func:`~microbleeds.stages.locate.label_source` already run)."""
    rows = found.rows
    magnitude = None if label_volume is not None else np.ascontiguousarray(scan.magnitude[found.box])
    region_rows, label_volume = locate(
        np.array([row["world_mm"] for row in rows]).reshape(-1, 3), found.regions.labels.shape,
        found.box_affine, magnitude=magnitude,
        brain_mask=full_brain[found.box], lesion_map=found.regions.labels, lesion_ids=list(range(1, len(rows) + 1)),
        labels_path=labels, labels_t1w=labels_t1w, use_atlas=params.use_atlas,
        juxtacortical_mm=params.juxtacortical_mm, periventricular_mm=params.periventricular_mm,
        label_volume=label_volume)
    for row, region in zip(rows, region_rows):
        row.update(region_columns(region), region_confidence=region.get("region_confidence", ""))
    return label_volume


def _with_numba_threads(fn, threads):
    """``fn`` for another thread, its parallel kernels on ``threads`` numba threads (the number is
    per thread: a worker's share of the cores holds in the threads it starts)."""
    def run(*args, **kwargs):
        numba.set_num_threads(threads)
        return fn(*args, **kwargs)

    return run


def _echo(echo):
    return int(echo) if str(echo).lstrip("-").isdigit() else echo


def _mask(mask, scan, params):
    if mask is None:  # of multi-echo data, the first echo: one acquisition's noise floor (echoes averaged
        # keep its level but not its spread, and it no longer reads as noise), the least blooming and dropout
        first = scan.magnitude if scan.echoes is None else np.ascontiguousarray(scan.echoes[..., 0])
        return brain_mask(first, scan.voxel_size_mm, params.bias_correction, params.mask_opening_mm)
    if isinstance(mask, np.ndarray):
        if mask.shape != scan.native_shape:
            raise ValueError(f"mask: shape {mask.shape} differs from the scan's {scan.native_shape}")
        values = np.unique(np.asarray(mask))
        if not np.isfinite(values).all() or values.size > 2 or values.min() < 0 or not (values > 0).any():
            raise ValueError(f"mask: a binary mask is needed (0 and one positive value), got values {values[:6]}")
        return to_canonical(np.asarray(mask) > 0, scan.native_affine)[0]
    return load_mask(mask, scan)


