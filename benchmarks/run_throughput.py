"""Cohort throughput on this machine: serial, a process pool, a Dask LocalCluster, side by side.

    python benchmarks/run_throughput.py                    # 8 scans of 0.5 mm SWI size with phase
    python benchmarks/run_throughput.py --size half --scans 8 --rounds 1

Scans: the speed benchmark's seeded synthetic 512 x 512 x 128 float32 volume at 0.45 x 0.45 x 1.2
mm with run_whole's synthetic wrapped phase (``--size half``: both decimated to 256 x 256 x 128 at
0.9 x 0.9 x 1.2 mm, magnitude by 2 x 2 block means, phase by taking every other voxel), written
once into ``benchmarks/.cache/`` as ``sub-NN_mag.nii`` + ``sub-NN_phase.nii`` (uncompressed), each
scan flipped or transposed differently so that no two files are the same (the work per scan is
the same). Phase is paired automatically and the convention estimated, as by default.

Configurations, each in a fresh process, one after the other (``--rounds`` repeats the sequence,
interleaved):

* ``serial`` (today's main: ``detect_folder`` in one process, ``nproc`` numba threads);
* ``pool 2x1``: ``detect_folder(nprocs=2)``: 2 worker processes x 1 numba thread (the split);
* ``pool 2x2``: the same pool with 2 numba threads per worker (oversubscribed: 4 threads on 2
  cores), to check the split;
* ``dask 2x1``: a 2-worker, 1-thread ``LocalCluster`` (processes) with ``workers.CLUSTER_CONFIG``:
  ``detect_folder``'s jobs through ``workers.run_jobs(client=...)``. The cluster is started before
  the clock starts (an existing cluster); its start is reported.

Each configuration's wall time runs from the call to the last result written (pool start-up and
the workers' imports included). Throughput = scans / wall time. The numba cache is warmed by a
first process before any is timed. Also reported: the peak resident memory per scan from the run
log (``stats``), the CPU seconds of the configuration's process tree, and how many of the machine's
cores were busy meanwhile (``/proc/stat``), which shows how much other processes took.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CACHE = HERE / ".cache"
CONFIGS = ("serial", "pool 2x1", "pool 2x2", "dask 2x1")
VARIANTS = (  # a different flip/transposition per scan: same work, different files
    lambda a: a, lambda a: a[::-1], lambda a: a[:, ::-1], lambda a: a[::-1, ::-1],
    lambda a: np.transpose(a, (1, 0, 2)), lambda a: np.transpose(a, (1, 0, 2))[::-1],
    lambda a: np.transpose(a, (1, 0, 2))[:, ::-1], lambda a: a[:, :, ::-1])


def scan_folder(size, n):
    """Folder of ``n`` magnitude + phase scans of ``size`` ('full' or 'half'), written once."""
    import nibabel as nib
    import run_whole

    folder = CACHE / f"throughput_{size}_{n}_v1"
    names = [f"sub-{i:02d}_{kind}.nii" for i in range(n) for kind in ("mag", "phase")]
    if all((folder / name).exists() for name in names):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    scan, phase = run_whole.scan_files()
    mag_img, phase_img = nib.load(scan), nib.load(phase)
    mag, ph = np.asarray(mag_img.dataobj, np.float32), np.asarray(phase_img.dataobj, np.float32)
    affine = mag_img.affine.copy()
    if size == "half":
        mag = mag.reshape(mag.shape[0] // 2, 2, mag.shape[1] // 2, 2, mag.shape[2]).mean(axis=(1, 3))
        ph = ph[::2, ::2]
        affine[:3, :2] *= 2
    for i in range(n):
        for kind, data in (("mag", mag), ("phase", ph)):
            img = nib.Nifti1Image(np.ascontiguousarray(VARIANTS[i % len(VARIANTS)](data)), affine)
            img.header.set_xyzt_units("mm")
            tmp = folder / f".tmp_{i}_{kind}.nii"
            nib.save(img, tmp)
            os.replace(tmp, folder / f"sub-{i:02d}_{kind}.nii")
    return folder


# ------------------------------------------------------------------------------------------------
# child: one configuration in a fresh process
# ------------------------------------------------------------------------------------------------
def _busy_jiffies():
    """(busy, total) jiffies of all cores (/proc/stat)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _cpu_seconds():
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def child(config, folder, out):
    """Run one configuration; print its figures as JSON on the last line."""
    import warnings

    warnings.simplefilter("ignore")
    from microbleeds import batch, workers

    stats, extra = [], {}
    cluster = client = None
    if config == "pool 2x2":
        workers.thread_split = lambda nprocs, cores=None: 2  # oversubscribed on purpose
    if config.startswith("dask"):
        import dask
        import distributed

        t0 = time.perf_counter()
        with dask.config.set(workers.CLUSTER_CONFIG):
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=40)
        client = distributed.Client(cluster)
        extra["cluster_start_s"] = round(time.perf_counter() - t0, 2)
    original = workers.run_jobs

    def run_jobs(jobs, work, **kwargs):  # detect_folder's own jobs on this engine, its run log kept
        kwargs["stats"] = stats
        if client is not None:
            kwargs["client"] = client
        return original(jobs, work, **kwargs)

    workers.run_jobs = run_jobs
    busy0, cpu0, t0 = _busy_jiffies(), _cpu_seconds(), time.perf_counter()
    failed = batch.detect_folder(folder, out, nprocs=1 if config == "serial" else 2).failed
    wall = time.perf_counter() - t0
    if client is not None:
        client.close()
        cluster.close()
    busy1, cpu1 = _busy_jiffies(), _cpu_seconds()
    if failed:
        raise SystemExit(f"{config}: {len(failed)} scans failed: {failed[:2]}")
    extra.update(wall_s=wall, cpu_s=cpu1 - cpu0, busy_cores=(busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
                 * (os.cpu_count() or 1), stats=stats)
    print(json.dumps(extra))


def run_child(config, folder):
    out = Path(tempfile.mkdtemp(prefix="mb_throughput_"))
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", config, str(folder), str(out)],
                              capture_output=True, text=True, cwd=tempfile.gettempdir())
    finally:
        subprocess.run(["rm", "-rf", str(out)], check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _warm_up():
    """One detection in a fresh process, so every timed configuration finds the numba cache warm."""
    subprocess.run([sys.executable, "-c", "from microbleeds.warmup import warm; print(warm().line())"], check=True,
                   cwd=tempfile.gettempdir())


def report(results, n, size, rounds):
    per = {c: [r for r in results if r["config"] == c] for c in CONFIGS}
    base = np.median([n / r["wall_s"] for r in per["serial"]]) * 3600
    pool = np.median([n / r["wall_s"] for r in per["pool 2x1"]]) * 3600
    lines = ["| configuration | wall s | scans / hour | ÷ serial | s per scan (in worker) | CPU s per scan (in worker) "
             "| peak RSS per scan MB (max) | CPU s (process tree) | busy cores (whole machine) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for config in CONFIGS:
        runs = per[config]
        wall = float(np.median([r["wall_s"] for r in runs]))
        rate = float(np.median([n / r["wall_s"] for r in runs])) * 3600
        seconds = [s["seconds"] for r in runs for s in r["stats"]]
        peaks = [s["peak_rss_mb"] for r in runs for s in r["stats"]]
        cpu = [s["cpu_seconds"] for r in runs for s in r["stats"] if "cpu_seconds" in s] or [np.nan]
        lines.append(f"| {config} | {wall:.1f} | {rate:.0f} | **{rate / base:.2f}×** | {np.median(seconds):.1f} | "
                     f"{np.median(cpu):.1f} | "
                     f"{max(peaks):.0f} | {np.median([r['cpu_s'] for r in runs]):.0f} | "
                     f"{np.median([r['busy_cores'] for r in runs]):.2f} |")
    dask_rate = float(np.median([n / r["wall_s"] for r in per["dask 2x1"]])) * 3600
    lines += ["", f"Dask ÷ pool 2x1: **{dask_rate / pool:.3f}×**; LocalCluster start (not timed): "
              f"{np.median([r['cluster_start_s'] for r in per['dask 2x1']]):.1f} s. Size: {size}, {n} scans, "
              f"{rounds} round(s), `nproc` = {os.cpu_count()}."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("full", "half"), default="full")
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--merge", nargs="+", help="earlier runs' JSON (same size) to report together with this one")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    folder = scan_folder(args.size, args.scans)
    _warm_up()
    results = []
    for r in range(args.rounds):
        for config in args.configs:
            load = os.getloadavg()[0]
            result = run_child(config, folder)
            result.update(config=config, round=r, load_before=load, run=time.strftime("%H:%M"))
            results.append(result)
            print(f"[{r}] {config}: {result['wall_s']:.1f} s, {args.scans / result['wall_s'] * 3600:.0f} scans/h, "
                  f"busy cores {result['busy_cores']:.2f}, load before {load:.1f}", flush=True)
    (CACHE / f"throughput_{args.size}.json").write_text(json.dumps(results, indent=1))
    for earlier in args.merge or ():
        results = json.loads(Path(earlier).read_text()) + results
    if {r["config"] for r in results} == set(CONFIGS):
        print(report(results, args.scans, args.size, min(sum(r["config"] == c for r in results) for c in CONFIGS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
