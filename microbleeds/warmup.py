"""Compile the detector's numba kernels once, into numba's on-disk cache, before the first scan.

A fresh machine (a new cluster node, a container) otherwise spends its first scan compiling
(about 40 s on 2 cores, benchmarks/README "Scale-out"). Run ``microbleeds warmup`` once per node
image, or once per CPU model into a cache folder on a shared file system:

    NUMBA_CACHE_DIR=/shared/microbleeds-numba-cache microbleeds warmup

and give the workers the same ``NUMBA_CACHE_DIR``. numba keys each cached kernel by the source
file's path and modification time, the argument types and the CPU model, so one folder serves
every node that runs the same installation (same path); a node of another CPU model compiles its
own copy once, beside the others (``NUMBA_CPU_NAME=generic`` makes one copy serve all models, at
some cost in speed).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class WarmupReport:
    """What :func:`warm` did.

    Attributes
    ----------
    seconds : float
        Wall time of the warm-up, s (imports, compilation or cache loads, one detection).
    cache_dir : str
        Where numba keeps the compiled kernels (``NUMBA_CACHE_DIR``, else ``__pycache__`` beside
        the package's sources, or numba's per-user folder where those are read-only).
    kernels : list of str
        Every kernel compiled or loaded (``module.function``).
    compiled : int
        Kernel versions compiled now (cache misses); 0 when the cache was warm.
    loaded : int
        Kernel versions loaded from the cache.
    missing : list of str
        Kernels of the loaded modules that the detection did not reach (those of options the
        default preset leaves off; they compile on first use).
    """

    seconds: float
    cache_dir: str
    kernels: list = field(default_factory=list)
    compiled: int = 0
    loaded: int = 0
    missing: list = field(default_factory=list)

    def line(self) -> str:
        """One line for the command line."""
        text = (f"warmup: {len(self.kernels)} numba kernels ready in {self.seconds:.1f} s ({self.compiled} compiled, "
                f"{self.loaded} from the cache); cache {self.cache_dir}")
        return text + (f"; not reached: {', '.join(self.missing)}" if self.missing else "")


def warm(cache_dir=None) -> WarmupReport:
    """Compile (or load from the cache) every numba kernel the detector uses, by detecting on the
    bundled sample scan with its phase (the phase convention estimated, as by default).

    ``cache_dir`` sets ``NUMBA_CACHE_DIR`` for this process; it must come before numba is imported
    (a ``ValueError`` says so otherwise). Raises ``OSError`` naming the folder when the cache
    folder cannot be written.
    """
    start = time.perf_counter()
    _use_cache_dir(cache_dir)
    from importlib import resources

    import microbleeds

    folder = Path(str(resources.files("microbleeds.sample_data")))  # the bundled sample (as cli.sample_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample's own notes are no news here
        microbleeds.detect(folder / "sample_mag.nii.gz", phase=folder / "sample_phase.nii.gz")
    kernels = _kernels()
    report = WarmupReport(seconds=0.0, cache_dir=_cache_location(kernels))
    for name, kernel in kernels.items():
        if not kernel.signatures:
            report.missing.append(name)
            continue
        report.kernels.append(name)
        report.compiled += sum(kernel.stats.cache_misses.values())
        report.loaded += sum(kernel.stats.cache_hits.values())
    report.seconds = time.perf_counter() - start
    return report


def _use_cache_dir(cache_dir):
    """Point numba's cache at ``cache_dir`` (created, checked writable) before numba loads."""
    if cache_dir is None:
        return
    cache_dir = os.path.abspath(os.fspath(cache_dir))
    os.makedirs(cache_dir, exist_ok=True)
    if not os.access(cache_dir, os.W_OK):
        raise OSError(f"{cache_dir}: numba cache folder is not writable")
    numba = sys.modules.get("numba")
    if numba is not None and os.path.abspath(numba.config.CACHE_DIR or "") != cache_dir:
        raise ValueError(f"{cache_dir}: numba is already loaded with another cache folder; set "
                         "NUMBA_CACHE_DIR before starting Python")
    os.environ["NUMBA_CACHE_DIR"] = cache_dir


def _kernels():
    """``module.function`` -> numba dispatcher of every kernel in the detector's loaded modules
    (the bench's phantom kernels and inlined helpers, compiled into their callers, left out)."""
    from numba.core.dispatcher import Dispatcher

    found = {}
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith("microbleeds.") or module_name.startswith("microbleeds.bench"):
            continue
        short = module_name.removeprefix("microbleeds.")
        for name, value in list(vars(module).items()):
            if (isinstance(value, Dispatcher) and value.__module__ == module.__name__
                    and value.targetoptions.get("inline", "never") != "always"):
                found[f"{short}.{name}"] = value
    return found


def _cache_location(kernels):
    """The folder numba caches the kernels in (``NUMBA_CACHE_DIR`` when set)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    paths = set()
    for kernel in kernels.values():
        cache = getattr(kernel, "_cache", None)
        path = getattr(cache, "cache_path", None) or getattr(cache, "_cache_path", None)
        if path:
            paths.add(str(path))
    if not paths:
        return "(none: caching is off)"
    if len(paths) == 1:
        return paths.pop()
    return f"the __pycache__ folders beside microbleeds' modules ({os.path.commonpath(sorted(paths))})"
