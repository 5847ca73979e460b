"""numba's fallback threading layer (workqueue, where neither TBB nor OpenMP loads) aborts the
process when two Python threads launch parallel kernels at once: the detector's overlapped work
(the atlas registration beside the candidates, the dipole fits) must then run on one thread, with
the same results."""

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def _run(args, env_extra, cwd):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_workqueue_layer_runs_serially_with_the_same_results(tmp_path):
    outs = {}
    for layer in ("workqueue", "default"):
        out = tmp_path / layer
        env = {"MICROBLEEDS_CACHE_DIR": str(tmp_path / f"cache_{layer}")}  # empty: the atlas is built in the run
        if layer != "default":
            env["NUMBA_THREADING_LAYER"] = layer
        done = _run(["-m", "microbleeds", "detect", str(SAMPLE / "sample_mag.nii.gz"),
                     "--phase", str(SAMPLE / "sample_phase.nii.gz"), "-o", str(out), "-q"], env, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        tables = [p for p in sorted(out.rglob("*.tsv")) if "logs" not in p.relative_to(out).parts]
        assert any(p.name.endswith("lesions.tsv") for p in tables), f"no lesion table under {out}"
        outs[layer] = {p.relative_to(out).as_posix(): p.read_bytes() for p in tables}
    assert outs["workqueue"] == outs["default"]


def test_concurrent_kernels_safe_reads_the_layer(tmp_path):
    code = ("import numpy as np, numba\n"
            "from microbleeds.stages.threads import concurrent_kernels_safe\n"
            "before = concurrent_kernels_safe()\n"
            "f = numba.njit(parallel=True)(lambda a: a.sum())\n"
            "f(np.ones(8))\n"
            "print(before, concurrent_kernels_safe(), numba.threading_layer())\n")
    done = _run(["-c", code], {"NUMBA_THREADING_LAYER": "workqueue"}, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False", "workqueue"]
    done = _run(["-c", code], {}, tmp_path)
    before, after, layer = done.stdout.split()
    assert before == "False" and after == str(layer in ("tbb", "omp"))


def test_no_overlapping_threads_where_the_layer_is_not_threadsafe(monkeypatch):
    """Under a layer that two threads may not enter, detect starts neither the registration's
    thread nor the dipole fits' threads (on a large scan with an empty atlas cache they would
    launch parallel kernels beside the main thread's: an abort, measured on 512 x 512 x 128)."""
    import threading

    import microbleeds
    import microbleeds.api
    import microbleeds.stages.dipole_sign

    started = []
    real_start = threading.Thread.start

    def start(thread):
        started.append(thread.name)
        return real_start(thread)

    for module in (microbleeds.api, microbleeds.stages.dipole_sign):
        monkeypatch.setattr(module, "concurrent_kernels_safe", lambda: False)
    monkeypatch.setattr(threading.Thread, "start", start)
    result = microbleeds.detect(SAMPLE / "sample_mag.nii.gz", phase=SAMPLE / "sample_phase.nii.gz")
    assert result.lesions
    assert not [name for name in started if name.startswith(("microbleeds-labels", "microbleeds-fits"))]
