"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A reader never sees a half-written file, and a crash leaves the previous version in place.
Files get the usual 0644 permissions (``tempfile`` would leave them private).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _replace_from_temp(path, write, suffix=".tmp"):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    def write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(data)

    return _replace_from_temp(path, write)


def atomic_write_text(path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (no newline translation); returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_nifti(img, path) -> Path:
    """``nibabel.save`` to ``path`` atomically (``.nii`` or ``.nii.gz`` from the name)."""
    import nibabel as nib

    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"
    return _replace_from_temp(path, lambda tmp: nib.save(img, tmp), suffix=suffix)
