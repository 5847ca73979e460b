"""How cost grows with the number of voxels, and the peak memory of a large scan with phase and regions.

    python benchmarks/run_scaling.py                 # 2 rounds at three sizes + the memory run
    python benchmarks/run_scaling.py --rounds 1 --no-memory
    python benchmarks/run_scaling.py --memory-only --no-readme   # the peak-memory run alone

Scans: the speed benchmark's synthetic head (``run_speed.make_volume``: the same ellipsoid brain,
scalp, bias, 20 foci and 30 veins, Rician noise at SNR ~20) sampled on three grids over the same
field of view (230 x 230 x 230 mm): 128^3 at 1.8 mm, 256^3 at 0.9 mm and 512 x 512 x 256 at
0.45 x 0.45 x 0.9 mm, so the head is the same and only the voxel count changes (x 8, then x 8).
Written once as uncompressed NIfTI in ``benchmarks/.cache/``; the largest also with a phase
(``run_whole.make_phase``: background field, the foci's dipoles, noise ~ 1 / magnitude).

Each size runs ``microbleeds detect scan.nii -o OUT -q`` (magnitude only, default atlas regions)
in a fresh process (same interpreter, warm numba cache), sizes interleaved within each round; the
wall time is measured from the parent, process start to files written. The exponent is the
least-squares slope of log(seconds) against log(voxels) over the three sizes (medians over
rounds), for the whole command and for the command less a fixed cost (the ``--help`` process:
interpreter start and the imports every command pays), and a straight line through the three
points (its intercept: the cost that does not grow with the voxels).

Memory: ``microbleeds detect scan.nii --phase scan_phase.nii`` (regions by default) on a
512 x 512 x 256 scan at 0.5 mm isotropic, its peak resident memory from the kernel
(``wait4``'s ``ru_maxrss`` of that process).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run_speed  # noqa: E402  (the benchmark folder is not a package)
import run_whole  # noqa: E402

CACHE = HERE / ".cache"
README = HERE / "README.md"
SECTION = "## Scaling and memory"
VERSION = 1
FOV_MM = 230.4
SIZES = {"128^3": ((128, 128, 128), (1.8, 1.8, 1.8)),
         "256^3": ((256, 256, 256), (0.9, 0.9, 0.9)),
         "512x512x256": ((512, 512, 256), (0.45, 0.45, 0.9))}
MEMORY = ("512x512x256, 0.5 mm", (512, 512, 256), (0.5, 0.5, 0.5))


def _grid(shape, voxel_mm):
    """Set ``run_speed``'s grid (its generators read SHAPE and VOXEL_MM when called)."""
    run_speed.SHAPE, run_speed.VOXEL_MM = tuple(shape), tuple(voxel_mm)


def scan_file(name, shape, voxel_mm, phase=False):
    """scan.nii (and scan_phase.nii) of one grid in the cache, written once."""
    import nibabel as nib

    tag = "x".join(map(str, shape)) + "_" + "x".join(f"{v:g}" for v in voxel_mm)
    folder = CACHE / f"scaling_v{VERSION}_{tag}"
    scan, phase_path = folder / "scan.nii", folder / "scan_phase.nii"
    if scan.exists() and (phase_path.exists() or not phase):
        return scan, phase_path if phase else None
    folder.mkdir(parents=True, exist_ok=True)
    saved = run_speed.SHAPE, run_speed.VOXEL_MM
    try:
        _grid(shape, voxel_mm)
        t0 = time.perf_counter()
        volume, affine, truth = run_speed.make_volume()
        items = [(scan, volume)]
        if phase:
            items.append((phase_path, run_whole.make_phase(volume, affine, truth)))
        for path, data in items:
            img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
            img.header.set_xyzt_units("mm")
            tmp = path.with_suffix(".tmp.nii")
            nib.save(img, tmp)
            os.replace(tmp, path)
        print(f"generated {name} in {time.perf_counter() - t0:.0f} s -> {folder}", flush=True)
    finally:
        _grid(*saved)
    return scan, phase_path if phase else None


def run_process(argv):
    """(wall seconds, peak RSS MB) of one ``python -m microbleeds ...`` process."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "microbleeds", *map(str, argv)], env=env, cwd=tempfile.gettempdir(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024.0


def exponent(voxels, seconds):
    """Least-squares slope of log(seconds) on log(voxels)."""
    return float(np.polyfit(np.log(np.asarray(voxels, float)), np.log(np.asarray(seconds, float)), 1)[0])


def run(rounds, memory, sizes=True):
    scans = {name: scan_file(name, *grid)[0] for name, grid in SIZES.items()} if sizes else {}
    times = {name: [] for name in SIZES}
    rss = {name: [] for name in SIZES}
    fixed = []
    for r in range(rounds + 1 if sizes else 0):
        out = Path(tempfile.mkdtemp(prefix="mb_scaling_"))
        try:
            fixed_s, _ = run_process(["--help"])
            for name, scan in scans.items():
                seconds, peak = run_process(["detect", scan, "-o", out / name, "-q"])
                if r:
                    times[name].append(seconds)
                    rss[name].append(peak)
                print(f"[{'warm-up' if not r else r}] {name}: {seconds:.1f} s, peak {peak:.0f} MB", flush=True)
            if r:
                fixed.append(fixed_s)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    mem = None
    if memory:
        name, shape, voxel = MEMORY
        scan, phase = scan_file(name, shape, voxel, phase=True)
        out = Path(tempfile.mkdtemp(prefix="mb_memory_"))
        try:
            seconds, peak = run_process(["detect", scan, "--phase", phase, "-o", out, "-q"])
        finally:
            shutil.rmtree(out, ignore_errors=True)
        mem = {"name": name, "seconds": seconds, "peak_mb": peak}
        print(f"memory: {name} with phase and regions: {seconds:.1f} s, peak {peak:.0f} MB", flush=True)
    return times, rss, fixed, mem


def report(times, rss, fixed, mem, rounds):
    voxels = [int(np.prod(SIZES[n][0])) for n in SIZES]
    med = [float(np.median(times[n])) for n in SIZES]
    base = float(np.median(fixed)) if fixed else 0.0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [SECTION, "",
             "`python benchmarks/run_scaling.py` (about 10 minutes; `--rounds N`, `--no-memory`, `--no-readme`). "
             "See the script's docstring: the same synthetic head on three grids over a 230 mm field of view, "
             "`microbleeds detect scan.nii -q` (magnitude, default atlas regions) in a fresh process per size, "
             "wall time from the parent; the exponent is the slope of log(time) on log(voxels).", "",
             f"Measured {datetime.date.today().isoformat()}: `nproc` = {os.cpu_count()}, Python "
             f"{platform.python_version()}, {rounds} timed round(s) after a warm-up round, 1-minute load average "
             f"{load:.1f} at the end (a shared machine: the sizes were interleaved in each round).", "",
             "| grid | voxels | detect s (median) | runs s | peak RSS MB |", "|---|---:|---:|---|---:|"]
    for n, v, m in zip(SIZES, voxels, med):
        grid = "×".join(map(str, SIZES[n][0])) + " at " + "×".join(f"{x:g}" for x in SIZES[n][1]) + " mm"
        lines.append(f"| {grid} | {v:,} | {m:.2f} | {', '.join(f'{t:.2f}' for t in times[n])} | "
                     f"{max(rss[n]):.0f} |")
    whole = exponent(voxels, med)
    per_voxel, fixed_s = np.polyfit(np.asarray(voxels, float), np.asarray(med, float), 1)
    lines += ["", f"Fitted exponent (whole command): **{whole:.2f}**; between the two larger grids: "
              f"**{exponent(voxels[1:], med[1:]):.2f}** (target, issue 14: ≤ 1.1). A straight line "
              f"`seconds = fixed + per_voxel × voxels` through the three points: fixed {fixed_s:.1f} s, "
              f"{1e6 * per_voxel:.3f} s per million voxels (the `--help` process alone: {base:.2f} s)."]
    if mem:
        verdict = "met" if mem["peak_mb"] <= 2048 else "not met"
        lines += ["", f"Peak memory, {mem['name']} SWI with phase and default regions (`detect --phase`, "
                  f"{mem['seconds']:.0f} s): **{mem['peak_mb']:.0f} MB** (target ≤ 2 GB: {verdict})."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after one warm-up (default 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the 0.5 mm run with phase and regions")
    parser.add_argument("--no-readme", action="store_true", help="print only; do not write benchmarks/README.md")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory run (implies --no-readme)")
    args = parser.parse_args(argv)
    if args.memory_only:
        print(run(0, True, sizes=False)[3])
        return 0
    times, rss, fixed, mem = run(args.rounds, not args.no_memory)
    text = report(times, rss, fixed, mem, args.rounds)
    print()
    print(text)
    if not args.no_readme:
        run_whole.README = README
        run_whole.SECTION = SECTION
        run_whole._write_section(text)
        print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
