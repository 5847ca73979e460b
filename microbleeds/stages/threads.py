"""Whether two Python threads may launch numba's parallel kernels at the same time."""

from __future__ import annotations

import numba

THREADSAFE_LAYERS = ("tbb", "omp")
"""numba's threading layers that several Python threads may enter at once. Its own fallback,
``workqueue`` (where neither TBB nor OpenMP loads), aborts the process on concurrent access."""


def concurrent_kernels_safe() -> bool:
    """True when the threading layer numba chose is one of :data:`THREADSAFE_LAYERS`; False for
    ``workqueue`` and while no parallel kernel has run yet (the layer is chosen at the first
    launch). Callers that overlap work in threads run it on one thread when False: each thread's
    arithmetic is its own, so the results are the same."""
    try:
        return numba.threading_layer() in THREADSAFE_LAYERS
    except ValueError:  # no parallel kernel launched yet in this process
        return False
