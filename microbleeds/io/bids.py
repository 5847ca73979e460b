"""BIDS datasets as BIDS means them: which files are T2*-weighted scans, how echoes and parts group.

The dataset is indexed by `bids2table <https://pypi.org/project/bids2table/>`_ (names only, no image
read; a synthetic 1,000-subject layout of 36,002 files: 4.2 s, pybids 0.22 65-69 s, measured side by
side by ``benchmarks/bids_index.py``); sidecars are read with the inheritance principle
(:func:`inherited_metadata`: a top-level ``T2starw.json`` applies to every ``*_T2starw.nii.gz`` below).

A **scan** is one acquisition of a T2*-weighted anatomical suffix (:data:`T2STAR_SUFFIXES`, or any
non-map ``anat`` suffix whose ``acq-`` label the user names for SWI): all its ``echo-N`` magnitude
files (``part-mag`` or no ``part``) in echo order, with the ``part-phase`` files of the same
echoes. Every other NIfTI, and the folders ``sourcedata/``, ``code/`` and ``derivatives/``, is
listed as skipped with the reason. Plain folders (no ``dataset_description.json``) are not read
here; :func:`name_guard` is the same modality rule for a file found there.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .sidecar import echo_times_ms, read_sidecar

T2STAR_SUFFIXES = ("T2starw", "MEGRE")
"""BIDS suffixes of T2*-weighted anatomical images (the detector's input)."""

MAP_SUFFIXES = ("T2starmap", "R2starmap", "T1map", "R1map", "T2map", "R2map", "PDmap", "PDT2map", "S0map",
                "M0map", "UNIT1", "Chimap", "TB1map", "RB1map", "MTRmap", "MTsat", "MTVmap", "PDT2", "myelinmap")
"""Quantitative maps: never scans, whatever their ``acq-`` label."""

NOT_T2STAR_SUFFIXES = ("T1w", "T2w", "PDw", "FLAIR", "T2starmap", "bold", "dwi", "asl", "sbref", "epi", "angio",
                       "inplaneT1", "inplaneT2", "PD", "T1rho", "VFA", "IRT1", "MP2RAGE", "MESE", "MPM", "MTS",
                       "TB1TFL", "TB1SRGE") + MAP_SUFFIXES
"""Suffixes that say a plain-folder file is not T2*-weighted (:func:`name_guard`)."""

SKIPPED_FOLDERS = {
    "sourcedata": "source data (before BIDS conversion) is never processed",
    "code": "code, not data",
    "derivatives": "derivatives (outputs of pipelines) are never processed",
}
"""Top-level folders of a BIDS dataset that hold no raw scans, with the reason."""

ENTITY_NAMES = {"sub": "subject", "ses": "session", "task": "task", "acq": "acquisition", "ce": "ceagent",
                "rec": "reconstruction", "dir": "direction", "run": "run", "mod": "modality", "echo": "echo",
                "flip": "flip", "inv": "inversion", "mt": "mtransfer", "part": "part", "chunk": "chunk"}
"""Short BIDS entity keys (file names) -> their long names (pybids, the summary's ``bids.entities``)."""

ENTITY_ORDER = tuple(ENTITY_NAMES)
"""Order of entities in a file name (BIDS specification, appendix on entities)."""

METADATA_KEYS = ("MagneticFieldStrength", "EchoTime", "Manufacturer", "ManufacturersModelName", "RepetitionTime",
                 "FlipAngle", "ScanningSequence", "SequenceVariant", "SequenceName", "PulseSequenceType",
                 "SeriesDescription")
"""Sidecar keys a scan's summary records (inherited sidecars merged, nearest wins)."""


def is_bids_dataset(path) -> bool:
    """True for a folder with a ``dataset_description.json`` (a BIDS dataset's root)."""
    path = Path(path)
    return path.is_dir() and (path / "dataset_description.json").is_file()


@dataclass
class BidsScan:
    """One T2*-weighted acquisition of a BIDS dataset.

    Attributes
    ----------
    root : Path
        The dataset's root folder.
    magnitude : list of Path
        One file (3D, or 4D echoes), or one file per echo in echo order.
    phase : list of Path or None
        The matching ``part-phase`` files (same echoes), if any.
    entities : dict
        Short-key entities of the scan (``sub``, ``ses``, ``acq``, ``run``, ..., ``suffix``,
        ``datatype``), without ``echo`` and ``part``.
    metadata : dict
        Sidecar metadata of the first magnitude file (inheritance applied); for one file per echo
        ``EchoTime`` is the list of the echoes' times (s).
    echo_times_ms : list of float or None
        Echo times (ms) in the magnitude's echo order; None when a sidecar lacks one.
    """

    root: Path
    magnitude: list
    phase: list | None
    entities: dict
    metadata: dict = field(default_factory=dict)
    echo_times_ms: list | None = None

    @property
    def source(self) -> str:
        """Dataset-relative path of the (first) magnitude file."""
        return relative(self.magnitude[0], self.root)

    @property
    def sources(self) -> list:
        """Dataset-relative paths of every file the scan reads (magnitudes, then phases)."""
        return [relative(p, self.root) for p in self.magnitude + (self.phase or [])]

    def prefix(self) -> str:
        """The scan's entities as a file-name prefix (``sub-01_ses-1_acq-me``), suffix left out."""
        return entity_prefix(self.entities)

    def folder(self) -> Path:
        """Folder of the scan's derivatives relative to the output root (``sub-01/ses-1/anat``)."""
        parts = [f"sub-{self.entities['sub']}"]
        if self.entities.get("ses"):
            parts.append(f"ses-{self.entities['ses']}")
        return Path(*parts, self.entities.get("datatype") or "anat")

    def bids_block(self) -> dict:
        """The summary's ``bids`` block: participant and session ids, long-name entities, source."""
        long = {ENTITY_NAMES.get(k, k): v for k, v in self.entities.items() if k in ENTITY_NAMES}
        long["suffix"] = self.entities.get("suffix")
        long["datatype"] = self.entities.get("datatype")
        ses = self.entities.get("ses")
        return {"participant_id": f"sub-{self.entities['sub']}", "session_id": f"ses-{ses}" if ses else None,
                "entities": long, "source": self.source}


@dataclass
class Discovery:
    """What a dataset holds: its scans and what was skipped, each as (dataset-relative path, reason)."""

    scans: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def relative(path, root) -> str:
    """``path`` relative to ``root`` as a POSIX string (the path itself when outside ``root``)."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def entity_prefix(entities: dict) -> str:
    """File-name prefix of short-key ``entities`` in BIDS order (``sub-01_ses-1_acq-me_run-1``)."""
    return "_".join(f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k) not in (None, ""))


def discover(root, participant_label=None, session_label=None, filters=None, swi_acq=()) -> Discovery:
    """The T2*-weighted scans of the BIDS dataset at ``root`` and every NIfTI or folder skipped.

    Parameters
    ----------
    participant_label, session_label : sequence of str, optional
        Keep only these subjects / sessions (with or without ``sub-`` / ``ses-``).
    filters : dict, optional
        Entity -> value (a list: any of; None: the entity must be absent), long or short entity
        names, applied to the scan's entities (``--bids-filter-file``).
    swi_acq : sequence of str
        ``acq-`` labels under which SWI is stored with another (non-map) anatomical suffix.
    """
    from bids2table import index_dataset

    root = Path(root)
    found = Discovery()
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name in SKIPPED_FOLDERS:
            found.skipped.append((entry.name + "/", SKIPPED_FOLDERS[entry.name]))
    subjects = _labels(participant_label, "sub")
    table = index_dataset(root, include_subjects=[f"sub-{s}" for s in subjects] if subjects else None)
    groups = {}
    for rel in sorted(table["path"].to_pylist()):
        path = root / rel
        entities = file_entities(path)
        if not rel.endswith((".nii", ".nii.gz")):
            continue
        reason = _not_a_scan(entities, swi_acq)
        if reason:
            found.skipped.append((rel, reason))
            continue
        reason = _filtered_out(entities, session_label, filters)
        if reason:
            found.skipped.append((rel, reason))
            continue
        key = tuple(sorted((k, v) for k, v in entities.items() if k not in ("echo", "part", "ext")))
        groups.setdefault(key, []).append((entities, path))
    for key, files in sorted(groups.items()):
        scan = _group(root, dict(key), files, found.skipped)
        if scan is not None:
            found.scans.append(scan)
    found.scans.sort(key=lambda scan: scan.source)
    return found


_DATATYPE = re.compile(r"sub-[a-zA-Z0-9]+(?:[/\\]ses-[a-zA-Z0-9]+)?[/\\]([a-z]+)[/\\]")


def file_entities(path) -> dict:
    """Short-key entities, ``suffix``, ``datatype`` and ``ext`` of a file name: bids2table's
    ``parse_bids_entities`` (2.3), the same dict, without importing bids2table and pyarrow (0.1-0.3 s)
    for a plain folder's file."""
    path = Path(path)
    parts = path.name.split("_")
    match = _DATATYPE.search(str(path))
    suffix, dot, ext = parts.pop().partition(".")
    ext = dot + ext if ext else None
    if "-" in suffix:  # the last part is an entity, not a suffix
        parts.append(suffix)
        suffix = None
    entities = dict(part.split("-", 1) for part in parts if "-" in part)
    entities |= {k: v for k, v in (("datatype", match.group(1) if match else None), ("suffix", suffix),
                                   ("ext", ext)) if v is not None}
    return entities


def _labels(labels, key):
    return [str(label).removeprefix(f"{key}-") for label in labels or []]


def _not_a_scan(entities, swi_acq) -> str:
    """Why a dataset's NIfTI is not a scan ('' when it may be one)."""
    suffix, datatype = entities.get("suffix"), entities.get("datatype")
    if datatype != "anat":
        return f"{datatype or 'no'} datatype ({suffix}): only anatomical T2*-weighted images are scans"
    if suffix in MAP_SUFFIXES:
        return f"suffix {suffix}: a quantitative map, not a T2*-weighted image"
    if suffix not in T2STAR_SUFFIXES and entities.get("acq") not in swi_acq:
        return f"suffix {suffix}: not T2*-weighted (scans are {', '.join(T2STAR_SUFFIXES)}" + (
            f", or acq-{'/'.join(swi_acq)})" if swi_acq else "; name SWI stored under another suffix with --swi-acq)")
    if entities.get("part") not in (None, "mag", "phase"):
        return f"part-{entities['part']}: real and imaginary parts are not used (magnitude and phase are)"
    return ""


def _filtered_out(entities, session_label, filters) -> str:
    sessions = _labels(session_label, "ses")
    if sessions and entities.get("ses") not in sessions:
        return f"session not selected (--session-label {' '.join(sessions)})"
    short = {long: short for short, long in ENTITY_NAMES.items()}
    for name, wanted in (filters or {}).items():
        key = short.get(name, name)
        value = entities.get(key)
        if wanted is None:
            if value is not None:
                return f"--bids-filter-file: {name} must be absent, is {value}"
        elif value not in ([str(w) for w in wanted] if isinstance(wanted, list) else [str(wanted)]):
            return f"--bids-filter-file: {name} {value} not in {wanted}"
    return ""


def _echo_number(entities) -> int:
    try:
        return int(entities.get("echo", 0))
    except ValueError:
        return 0


def _group(root, key, files, skipped):
    """One scan of the files sharing every entity but ``echo`` and ``part`` (None if no magnitude)."""
    mags = sorted(((e, p) for e, p in files if e.get("part") in (None, "mag")), key=lambda ep: _echo_number(ep[0]))
    phases = sorted(((e, p) for e, p in files if e.get("part") == "phase"), key=lambda ep: _echo_number(ep[0]))
    if not mags:
        for _, path in phases:
            skipped.append((relative(path, root), "part-phase without a magnitude (part-mag) of the same acquisition"))
        return None
    if len({_echo_number(e) for e, _ in mags}) < len(mags):
        for _, path in mags:
            skipped.append((relative(path, root), "two magnitude files of one echo (a part-mag and a file "
                                                  "without part?): which to use is ambiguous"))
        return None
    phase = [p for _, p in phases] or None
    if phase and [_echo_number(e) for e, _ in phases] != [_echo_number(e) for e, _ in mags]:
        for path in phase:
            skipped.append((relative(path, root), "part-phase echoes do not match the magnitude's: used without phase"))
        phase = None
    metas = [inherited_metadata(p, root) for _, p in mags]
    metadata = {k: metas[0][k] for k in METADATA_KEYS if k in metas[0]}
    times = _echo_times(metas)
    if len(mags) > 1 and times:
        metadata["EchoTime"] = [t / 1000.0 for t in times]
    return BidsScan(root=root, magnitude=[p for _, p in mags], phase=phase, entities=key, metadata=metadata,
                    echo_times_ms=times)


def inherited_metadata(path, root) -> dict:
    """The sidecar metadata of a data file by the BIDS inheritance principle: every ``.json`` with
    the same suffix in the file's folder or a folder above it (up to the dataset's ``root``) whose
    entities are a subset of the file's, merged from the top down, so the nearest wins. Read afresh
    each time (a sidecar edited between two runs of one process counts)."""
    path, root = Path(path), Path(root).resolve()
    entities = {k: v for k, v in file_entities(path).items() if k not in ("datatype", "ext")}
    suffix = entities.get("suffix")
    levels, folder = [], path.parent.resolve()
    while True:
        levels.append(folder)
        if folder == root or folder == folder.parent:
            break
        folder = folder.parent
    merged = {}
    for folder in reversed(levels):
        for side in sorted(folder.glob(f"*{suffix}.json")):
            own = {k: v for k, v in file_entities(side).items() if k not in ("datatype", "ext")}
            if all(entities.get(k) == v for k, v in own.items()):
                merged.update(_read_json(side))
    return merged


def _read_json(path) -> dict:
    """A sidecar's object; {} (and a warning naming the file) when unreadable."""
    import warnings

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        warnings.warn(f"{path}: JSON sidecar ignored, it cannot be read ({exc})", stacklevel=2)
        return {}
    return data if isinstance(data, dict) else {}


def _echo_times(metas) -> list | None:
    """Echo times (ms) of one sidecar per file; None when any is missing."""
    out = []
    for meta in metas:
        values = echo_times_ms(meta)
        if values is None:
            return None
        out.extend(values)
    return out


def name_guard(path) -> str:
    """Why a NIfTI of a plain (non-BIDS) folder is not a T2*-weighted scan ('' when it may be one):
    a BIDS suffix of another contrast in its name, or a sidecar / side file that says so (a task
    name: fMRI; ``.bval`` beside it: diffusion; an inversion time or an echo time above 100 ms)."""
    path = Path(path)
    entities = file_entities(path)
    suffix = entities.get("suffix")
    if suffix in NOT_T2STAR_SUFFIXES and "sub" in entities:
        return f"suffix {suffix}: not T2*-weighted"
    if entities.get("part") in ("real", "imag"):
        return f"part-{entities['part']}: real and imaginary parts are not used"
    stem = path.name[: -len(entities.get("ext", ""))] if entities.get("ext") else path.stem
    if (path.parent / f"{stem}.bval").is_file():
        return "a .bval file beside it: diffusion data"
    side = read_sidecar(path)
    if "TaskName" in side:
        return f"its sidecar names a task ({side['TaskName']}): functional data"
    if side.get("InversionTime") is not None:
        return "its sidecar gives an InversionTime: an inversion-recovery (T1w, FLAIR) image"
    te = echo_times_ms(side)
    if te and max(te) > 100.0:
        return f"its sidecar's EchoTime {max(te):g} ms is a spin-echo T2 / FLAIR's, not T2*-weighted"
    return ""


def plain_bids_block(path, root) -> dict:
    """The summary's ``bids`` block of a plain folder's file: what its name says (participant,
    session, entities; None / {} where it says nothing) and its path relative to ``root``."""
    entities = file_entities(path)
    long = {ENTITY_NAMES[k]: v for k, v in entities.items() if k in ENTITY_NAMES}
    if "sub" in entities:
        long["suffix"] = entities.get("suffix")
    return {"participant_id": f"sub-{entities['sub']}" if "sub" in entities else None,
            "session_id": f"ses-{entities['ses']}" if "ses" in entities else None,
            "entities": long, "source": relative(path, root)}


def read_filter_file(path) -> dict:
    """Entity filters of a ``--bids-filter-file`` (JSON): a dict of entity -> value, or fMRIPrep's
    form with queries by name (the ``t2starw``, ``megre`` or ``scan`` query is used)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the BIDS filter file ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "a BIDS filter file is a JSON object of entity: value")
    for query in ("scan", "t2starw", "megre"):
        if isinstance(data.get(query), dict):
            return {k: v for k, v in data[query].items() if k not in ("suffix", "datatype", "extension")}
    return data


def combined_sha256(paths) -> str:
    """One checksum of several files (a multi-echo scan): SHA-256 of their SHA-256s in order."""
    from .nifti import file_sha256

    if len(paths) == 1:
        return file_sha256(paths[0])
    return hashlib.sha256("".join(file_sha256(p) for p in paths).encode()).hexdigest()


def stack_echoes(paths):
    """One 4D NIfTI image (in memory) of one magnitude file per echo, each read with every check of
    :func:`microbleeds.io.nifti.read_volume`; the echoes must share shape and affine."""
    import nibabel as nib
    import numpy as np

    from .nifti import SCAN_BYTES_PER_VOXEL, read_volume

    volumes = []
    for path in paths:
        vol = read_volume(path, "magnitude echo", bytes_per_voxel=SCAN_BYTES_PER_VOXEL)
        data = np.squeeze(vol.data)
        if data.ndim != 3:
            raise InputError(path, f"one echo of a multi-echo scan must be 3D, has shape {vol.data.shape}")
        if volumes and (data.shape != volumes[0][0].shape or not np.allclose(vol.affine, volumes[0][1], atol=1e-4)):
            raise InputError(path, f"echo grid (shape {data.shape}) differs from the first echo's {paths[0]}")
        volumes.append((data, vol.affine))
    img = nib.Nifti1Image(np.stack([v for v, _ in volumes], axis=3).astype(np.float32), volumes[0][1])
    img.set_filename(str(paths[0]))  # messages name the first echo's file; nothing is read from it again
    return img
