"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A reader never sees a half-written file, and a crash leaves the previous version in place.
Files get the usual 0644 permissions (``tempfile`` would leave them private). The temporary
files are hidden, ``.<name>.<8 random characters>.tmp``, in the destination's own folder (never
in its parent); a kill can leave one behind, which :mod:`microbleeds.io.results` removes from a
result folder the next time that folder is written under its lock.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _temp_beside(path, suffix=".tmp") -> str:
    """A new empty hidden temporary file in ``path``'s folder; returns its name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return tmp


def _discard(tmp):
    if os.path.exists(tmp):
        os.unlink(tmp)


def _replace_from_temp(path, write, suffix=".tmp"):
    path = Path(path)
    tmp = _temp_beside(path, suffix)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
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


def atomic_write_files(folder, files: dict) -> dict[str, Path]:
    """Write several files (name -> bytes) into ``folder``, each atomically, as one step.

    Every file is written to its temporary first and only then are they renamed into place,
    one after the other: a failure while writing leaves every previous version in place, and the
    window in which a kill leaves a mix of old and new files is that of a few renames.
    Returns name -> path, in the order given.
    """
    folder = Path(folder)
    staged: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            path = folder / name
            tmp = _temp_beside(path)
            staged.append((tmp, path))
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _path in staged:
            _discard(tmp)
        raise
    return {name: folder / name for name in files}


def atomic_save_nifti(img, path) -> Path:
    """``nibabel.save`` to ``path`` atomically (``.nii`` or ``.nii.gz`` from the name)."""
    import nibabel as nib

    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"
    return _replace_from_temp(path, lambda tmp: nib.save(img, tmp), suffix=suffix)
