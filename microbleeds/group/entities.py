"""Who a scan belongs to: participant, session, acquisition and run of one result folder.

The summary's ``"bids"`` block (written for BIDS inputs) is used when present; otherwise the
BIDS entities are read from the input file's name (``sub-01_ses-1_acq-hr_run-2_swi.nii.gz``) and,
failing that, from its folders (``sub-01/ses-1/anat/``). Pure Python: loads nothing heavy.
"""

from __future__ import annotations

import re
from pathlib import PurePath

_ENTITY = re.compile(r"(?:^|_)(?P<key>[a-zA-Z]+)-(?P<value>[a-zA-Z0-9]+)(?=_|$)")
_KEYS = {"sub": "subject", "ses": "session", "acq": "acquisition", "run": "run"}
_NIFTI = re.compile(r"\.nii(\.gz)?$")


def _stem(name: str) -> str:
    return _NIFTI.sub("", name)


def name_entities(path) -> dict:
    """BIDS entities ``subject, session, acquisition, run, suffix`` of a file path (None when
    absent): from the file name first, then from ``sub-*`` / ``ses-*`` folders."""
    path = PurePath(str(path or ""))
    found = dict.fromkeys((*_KEYS.values(), "suffix"))
    stem = _stem(path.name)
    for m in _ENTITY.finditer(stem):
        key = _KEYS.get(m["key"])
        if key and found[key] is None:
            found[key] = m["value"]
    last = stem.rsplit("_", 1)[-1] if stem else ""
    if last and "-" not in last and found["subject"] is not None:
        found["suffix"] = last
    for part in path.parts[:-1]:
        m = re.fullmatch(r"(sub|ses)-([a-zA-Z0-9]+)", part)
        if m and found[_KEYS[m[1]]] is None:
            found[_KEYS[m[1]]] = m[2]
    return found


def scan_identity(summary: dict) -> dict:
    """``participant_id`` (``sub-<label>``), ``session_id`` (``ses-<label>`` or None),
    ``acquisition``, ``run``, ``suffix`` and where they came from (``bids`` block or ``file name``)
    for one scan's summary."""
    bids = summary.get("bids") if isinstance(summary.get("bids"), dict) else {}
    ent = bids.get("entities") or {}
    name = name_entities((summary.get("input") or {}).get("path", "") or bids.get("source", ""))
    pid = bids.get("participant_id") or _prefixed("sub", ent.get("subject"))
    out = {
        "participant_id": pid or _prefixed("sub", name["subject"]),
        "session_id": (bids.get("session_id") or _prefixed("ses", ent.get("session"))) if pid
        else _prefixed("ses", name["session"]),
        "acquisition": (ent.get("acquisition") if pid else None) or name["acquisition"],
        "run": ent.get("run") if pid and ent.get("run") not in (None, "") else name["run"],
        "suffix": (ent.get("suffix") if pid else None) or name["suffix"],
        "identity_source": "bids" if pid else "file name" if name["subject"] else "none",
    }
    out["run"] = None if out["run"] in (None, "") else str(out["run"])
    return out


def _prefixed(prefix: str, label) -> str | None:
    if label in (None, ""):
        return None
    label = str(label)
    return label if label.startswith(prefix + "-") else f"{prefix}-{label}"


def participant_label(text: str) -> str:
    """``sub-<label>`` for a participant given as ``sub-07`` or ``07``."""
    return _prefixed("sub", str(text).strip())
