"""microbleeds: find cerebral microbleeds on SWI and GRE-T2* brain MRI.

>>> import microbleeds
>>> result = microbleeds.detect("sub-01_T2starw.nii.gz")   # doctest: +SKIP
>>> result.write("derivatives/microbleeds")                 # doctest: +SKIP

The detector (numba, SimpleITK, scikit-image) loads on first use of :func:`detect`,
:func:`detect_folder` or :class:`DetectionResult`: importing the reader's side
(``microbleeds.review``) or the measuring bench (``microbleeds.bench``) loads none of it.
"""

__version__ = "0.1.0"

from .errors import InputError  # noqa: E402

_LAZY = {"detect": "api", "detect_folder": "batch", "DetectionResult": "api"}

__all__ = ["detect", "detect_folder", "DetectionResult", "InputError", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'microbleeds' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
