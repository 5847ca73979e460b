"""BIDS JSON sidecars: the file beside a NIfTI, and the one echo-time rule.

BIDS stores ``EchoTime`` in seconds. A value above 1 cannot be a T2*-weighted echo time in
seconds and is taken as already in ms (some converters write ms); every reader of echo times goes
through :func:`echo_times_ms`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from .nifti import nifti_stem

MAX_ECHO_TIME_S = 1.0
"""Echo times above this are taken as ms, not s."""


def sidecar_path(path) -> Path:
    """The ``.json`` beside a NIfTI file (same name without ``.nii``/``.nii.gz``)."""
    return Path(path).with_name(nifti_stem(path) + ".json")


def read_sidecar(path) -> dict:
    """Read the BIDS JSON sidecar beside a NIfTI file; ``{}`` when there is none or it is unreadable
    (it only supplies field strength and echo time; a warning names the file)."""
    if path is None:
        return {}
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    try:
        with open(sidecar) as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        warnings.warn(f"{sidecar}: JSON sidecar ignored, it cannot be read ({exc})", stacklevel=2)
        return {}
    return data if isinstance(data, dict) else {}


def echo_time_to_ms(value: float) -> float:
    """One sidecar echo time in ms: seconds (BIDS) unless above :data:`MAX_ECHO_TIME_S`."""
    value = float(value)
    return value if value > MAX_ECHO_TIME_S else value * 1000.0


def echo_times_ms(sidecar: dict) -> list[float] | None:
    """Echo times (ms) of a sidecar's ``EchoTime`` (a number or, for a 4D file, a list; the
    non-standard ``EchoTimes`` too); None when missing, not numbers, or not positive."""
    te = sidecar.get("EchoTime", sidecar.get("EchoTimes"))
    if te is None:
        return None
    values = te if isinstance(te, (list, tuple)) else [te]
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        return None
    return [echo_time_to_ms(v) for v in values]


def read_echo_times(paths) -> list[float] | None:
    """Echo times (ms) from the sidecars of one file (3D or 4D) or of one file per echo, in file
    order; None if any sidecar or ``EchoTime`` is missing or unreadable."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for path in paths:
        side = sidecar_path(path)
        if not side.is_file():
            return None
        try:
            with open(side, encoding="utf-8") as handle:
                meta = json.load(handle)
        except (OSError, ValueError):
            return None
        values = echo_times_ms(meta) if isinstance(meta, dict) else None
        if values is None:
            return None
        out.extend(values)
    return out
