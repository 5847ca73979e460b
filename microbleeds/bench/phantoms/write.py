"""Writing a phantom: NIfTI images, the truth table and label map, the JSON sidecar, each file
atomically; and the bundled sample scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...io.atomic import atomic_save_nifti, atomic_write_text
from ...io.tables import json_text, tsv_text
from ..truth_table import TRUTH_COLUMNS, TRUTH_SUFFIX
from . import echoes
from .params import Phantom, PhantomParams
from .simulate import simulate
from .truth import DSEG_LABELS, segmentation


def _nifti(data, affine, dtype, descrip, kind=None):
    """NIfTI-1 image (units mm, s; q/s-form code 1). ``dtype="int16"`` with a ``kind`` stores 12-bit
    scanner-like integers with scl_slope: ``"magnitude"`` 0..4095 (slope max/4095), ``"phase"``
    -2048..2047 (slope pi/2048, so it reads back in radians)."""
    import nibabel as nib

    data = np.asarray(data)
    if dtype == "int16" and kind is not None:
        if kind == "phase":
            slope = np.pi / 2048.0
            raw = np.rint(data / slope)
            raw[raw >= 2048] -= 4096
            raw = np.clip(raw, -2048, 2047)
        else:
            top = float(np.max(data)) if data.size else 0.0
            slope = top / 4095.0 if top > 0 else 1.0
            raw = np.clip(np.rint(data / slope), 0, 4095)
        img = nib.Nifti1Image(raw.astype(np.int16), affine)
        img.header.set_slope_inter(slope, 0.0)
    else:
        img = nib.Nifti1Image(data.astype(dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = descrip[:79].encode()
    return img


def truth_tsv(rows) -> str:
    """The ground-truth table as TSV text (columns :data:`TRUTH_COLUMNS`, floats with 4 decimals)."""
    return tsv_text(rows, TRUTH_COLUMNS)


def write_phantom(phantom: Phantom, out_dir, name: str = "phantom", dtype: str = "float32",
                  include_swi: bool = True, include_labels: bool = False,
                  labels_method: str = "centre") -> dict:
    """Write a phantom and its ground truth, each file atomically.

    Parameters
    ----------
    phantom : Phantom
    out_dir : path
        Created if missing.
    name : str
        File stem.
    dtype : ``"float32"`` or ``"int16"``
        Storage of magnitude / phase / SWI. ``"int16"`` stores 12-bit integers as many
        scanners do (magnitude 0..4095, phase -2048..2047) with ``scl_slope`` set so that
        nibabel reads magnitude in the original units and phase in radians; files are about
        3x smaller. Quantisation step: max/4095 (magnitude), pi/2048 rad (phase).
    include_swi : bool
        Also write ``<name>_swi.nii.gz``.
    include_labels : bool
        Also write ``<name>_dseg.nii.gz``, a FreeSurfer aparc+aseg-style label map on the
        acquisition grid (:func:`segmentation`), and ``<name>_dseg.tsv`` (BIDS lookup table:
        ``index``, ``name``); give the map to ``microbleeds.detect(..., labels=...)``.
    labels_method : ``"centre"`` or ``"majority"``
        See :func:`segmentation`.

    Returns
    -------
    dict
        Paths keyed ``magnitude, phase, swi, truth_tsv, truth_labels, sidecar`` (and
        ``dseg``, ``dseg_tsv`` with ``include_labels``). A multi-echo phantom's magnitude and
        phase are 4D, each with its BIDS sidecar (``<name>_mag.json``, ``<name>_phase.json``:
        ``EchoTime`` in s, one per echo, and ``MagneticFieldStrength``; keys
        ``magnitude_sidecar``, ``phase_sidecar``), as the detector reads them.
    """
    if dtype not in ("float32", "int16"):
        raise ValueError("dtype must be 'float32' or 'int16'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    aff = phantom.affine
    paths = {
        "magnitude": out / f"{name}_mag.nii.gz",
        "phase": out / f"{name}_phase.nii.gz",
        "truth_tsv": out / f"{name}{TRUTH_SUFFIX}",
        "truth_labels": out / f"{name}_truth.nii.gz",
        "sidecar": out / f"{name}.json",
    }
    if include_swi:
        paths["swi"] = out / f"{name}_swi.nii.gz"
    if include_labels:
        paths["dseg"] = out / f"{name}_dseg.nii.gz"
        paths["dseg_tsv"] = out / f"{name}_dseg.tsv"
    images = [("magnitude", phantom.magnitude, "GRE magnitude", "magnitude"),
              ("phase", phantom.phase, "GRE phase (rad)", "phase")]
    if include_swi:
        images.append(("swi", phantom.swi, "simple SWI", "magnitude"))
    for key, data, what, kind in images:
        atomic_save_nifti(_nifti(data, aff, dtype, f"microbleeds phantom {what}", kind), paths[key])
    atomic_save_nifti(_nifti(phantom.truth_labels, aff, "int16", "microbleeds phantom truth labels"),
                      paths["truth_labels"])
    atomic_write_text(paths["truth_tsv"], truth_tsv(phantom.truth))
    if include_labels:
        dseg = segmentation(phantom, method=labels_method)
        atomic_save_nifti(_nifti(dseg, aff, "int32", "microbleeds phantom aparc+aseg-style labels"),
                          paths["dseg"])
        lut = [{"index": k, "name": v} for k, v in sorted(DSEG_LABELS.items())]
        atomic_write_text(paths["dseg_tsv"], tsv_text(lut, ("index", "name")))
    p = phantom.params
    side = {
        "name": name,
        "seed": int(p.seed),
        "parameters": p.to_dict(),
        "acquisition": {"sequence": "GRE (simulated)", "field_strength_t": float(p.b0_t),
                        "echo_time_ms": float(p.te_ms)},
        "files": {k: v.name for k, v in paths.items()},
        "storage_dtype": dtype,
        "truth_columns": TRUTH_COLUMNS,
        "n_truth": len(phantom.truth),
        **{k: v for k, v in phantom.info.items() if k != "timings_s"},
    }
    if p.echo_times_ms:  # the BIDS sidecars the detector reads the echo times from
        side["acquisition"]["echo_times_ms"] = [float(t) for t in p.echo_times_ms]
        side["acquisition"]["echo_time_ms"] = float(p.echo_times_ms[echoes.reference_echo(p)])
        for key in ("magnitude", "phase"):
            paths[f"{key}_sidecar"] = out / f"{name}_{'mag' if key == 'magnitude' else key}.json"
            atomic_write_text(paths[f"{key}_sidecar"], json_text(echoes.bids_sidecar(p)))
        side["files"] = {k: v.name for k, v in paths.items()}
    atomic_write_text(paths["sidecar"], json_text(side))
    return {k: str(v) for k, v in paths.items()}


def generate_phantom(out_dir, name: str = "phantom", dtype: str = "float32",
                     include_swi: bool = True, params: PhantomParams | None = None,
                     include_labels: bool = False, **overrides) -> dict:
    """Simulate and write one phantom (:func:`simulate` + :func:`write_phantom`).

    Parameters
    ----------
    out_dir : path
        Output folder (created if missing).
    name : str
        File stem: ``<name>_mag.nii.gz``, ``<name>_phase.nii.gz``, ``<name>_swi.nii.gz``,
        ``<name>_truth.tsv``, ``<name>_truth.nii.gz``, ``<name>.json``.
    dtype, include_swi, include_labels
        See :func:`write_phantom` (``include_labels`` adds ``<name>_dseg.nii.gz``).
    params : PhantomParams, optional
        Base parameters (default: ``PhantomParams()``).
    **overrides
        Any :class:`PhantomParams` field, e.g. ``seed=3, b0_t=1.5, te_ms=40,
        voxel_size_mm=(0.9, 0.9, 3), oblique_deg=(0, 15, 0), snr=20, n_cmb=12``.

    Returns
    -------
    dict
        Paths of the written files (see :func:`write_phantom`).
    """
    ph = simulate(params, **overrides)
    return write_phantom(ph, out_dir, name, dtype=dtype, include_swi=include_swi,
                         include_labels=include_labels)


def sample_params(seed: int = 2026) -> PhantomParams:
    """Parameters of the shipped sample (``sample_data/make_sample.py`` says why each): a
    whole-brain 3 T SWI of the ICBM152 anatomy (``anatomy="mni"``, needs nilearn) scaled by 0.92,
    TE 20 ms, 1.2 x 1.2 x 2 mm over 144 x 178 x 140 mm, a 16-channel sum-of-squares array with
    prescan normalisation, SNR 30, 8 CMBs of 1.5-5 mm (lobar, deep, infratentorial),
    2 calcifications, 100 vein trees."""
    return PhantomParams(
        anatomy="mni", head_scale=0.92,
        fov_mm=(144.0, 177.6, 140.0), voxel_size_mm=(1.2, 1.2, 2.0), centre_mm=(0.0, -15.5, 5.2),
        b0_t=3.0, te_ms=20.0, snr=30.0, n_coils=16, coil_normalised=True, bias_strength=0.2,
        n_cmb=8, n_calcifications=2, n_veins=100, cmb_diameter_range_mm=(1.5, 5.0),
        region_weights={"lobar": 0.5, "deep": 0.3, "infratentorial": 0.2}, seed=seed)


def make_sample(out_dir, name: str = "sample", seed: int = 2026, include_swi: bool = True) -> dict:
    """Write the small sample phantom (see :func:`sample_params`) into ``out_dir``.

    Images are stored as 12-bit integers with scaling (``dtype="int16"`` of
    :func:`write_phantom`): magnitude + phase + truth about 3.9 MB (the SWI adds about 2 MB).
    Returns the dict of paths from :func:`write_phantom`.
    """
    ph = simulate(sample_params(seed))
    return write_phantom(ph, out_dir, name, dtype="int16", include_swi=include_swi)
