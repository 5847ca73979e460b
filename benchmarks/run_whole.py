"""The whole command, process start to files written, side by side with a reference process.

    python benchmarks/run_whole.py                  # 5 rounds, writes the README section
    python benchmarks/run_whole.py --rounds 3 --no-readme
    python benchmarks/run_whole.py --code /path/to/other/tree --code /path/to/this/tree
    python benchmarks/run_whole.py --magnitude-only --stages --rounds 3 --no-readme   # reference and detect only

Scan: the speed benchmark's seeded synthetic 512 x 512 x 128 float32 volume at 0.45 x 0.45 x
1.2 mm (``run_speed.cached_volume``) written as an uncompressed ``scan.nii``, and a phase for it
(``scan_phase.nii``, radians, wrapped: a smooth background field of a few radians, the dipole
field of every planted focus as paramagnetic in the +1 convention, Gaussian noise scaled by the
inverse magnitude), cached in ``benchmarks/.cache/``.

Each round runs, each in a fresh process (``python -m microbleeds`` with the same interpreter, so
no shell shim is timed), one after the other:

* ``reference``: load the scan with nibabel (float32) and run one ``scipy.ndimage.gaussian_filter``
  with sigma 1 voxel over it;
* ``detect``: ``microbleeds detect scan.nii -o OUT -q`` (magnitude only);
* ``detect --phase``: the same with ``--phase scan_phase.nii`` (convention estimated, as by
  default);
* ``--help`` and ``presets``.

The wall time of each process is measured from the parent (start to exit; the results are
written when it exits). A warm-up round (numba cache loads, file cache) is not counted. The
ratios are those of the per-round medians; every figure is from the same run, on a machine
whose load the other processes set, so the ratios are the figures to trust. ``--code DIR`` runs
the microbleeds commands with ``PYTHONPATH=DIR`` (e.g. a frozen tree of an older commit),
interleaved in the same rounds, for before / after comparisons.

``--stages`` adds, in each round and for each code, one more ``detect`` process with timers around
the stages (``PROBE``: imports, load, mask, ..., regions with its registration and composite atlas,
writing) and prints the per-stage medians of the timed rounds side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
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

CACHE = HERE / ".cache"
README = HERE / "README.md"
SECTION = "## Whole command"
PHASE_VERSION = 1

REFERENCE = ("import sys, numpy as np, nibabel as nib\n"
             "from scipy import ndimage as ndi\n"
             "data = np.asarray(nib.load(sys.argv[1]).get_fdata(dtype=np.float32))\n"
             "ndi.gaussian_filter(data, 1.0)\n")


PROBE = r'''
import json, sys, time
t_start = time.perf_counter()
times = {}
import microbleeds.cli as cli  # noqa
import microbleeds.batch as batch  # noqa
import microbleeds.api as api
import microbleeds.io.results as results
import microbleeds.stages.labels as labels
times["imports"] = time.perf_counter() - t_start

def timer(module, name, key):
    fn = getattr(module, name)
    def wrapped(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            times[key] = times.get(key, 0.0) + time.perf_counter() - t0
    setattr(module, name, wrapped)

for name, key in (("load_scan", "load"), ("brain_mask", "mask"), ("relative_intensity", "relative"),
                  ("noise_level", "noise"), ("erode_mm", "erode"), ("find_seeds", "seeds"),
                  ("grow_regions", "segment"), ("describe_regions", "describe"), ("locate", "regions"),
                  ("tabulate", "tabulate"), ("build_summary", "summary"), ("lesion_map", "lesion map"),
                  ("fortran_copy", "mask copy")):
    timer(api, name, key)
timer(labels, "register_template", "  registration")
timer(labels, "composite_atlas", "  composite atlas")
timer(results, "write_result", "write")
timer(batch, "run_fingerprint", "fingerprint")
sys.argv = ["microbleeds", *sys.argv[1:]]
code = cli.main()
times["total (in process)"] = time.perf_counter() - t_start
print("STAGES " + json.dumps(times))
'''
"""In-process per-stage timer (``--stages``): wraps the functions ``api.detect`` calls (their first
call includes loading their numba kernels from the cache), then runs the command line."""


def make_phase(volume, affine, truth, seed=run_speed.SEED):
    """Wrapped phase (radians, float32) for the speed volume: background field, the foci's dipole
    fields (paramagnetic, +1 convention), noise ~ 1 / magnitude."""
    rng = np.random.default_rng(seed + 1)
    axes = run_speed._axes_mm()
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    field = (1.5 * np.sin(x / 37.0) + 1.2 * np.cos(y / 53.0) + 0.8 * np.sin((z + 0.3 * x) / 29.0)).astype(np.float32)
    for focus in truth:
        c = np.array([focus["x_mm"], focus["y_mm"], focus["z_mm"]], np.float32)
        a = 0.5 * float(focus["diameter_mm"])
        box, grid = run_speed._patch(c, (4 * a + 2, 4 * a + 2, 4 * a + 2))
        rel = grid - c
        r = np.maximum(np.linalg.norm(rel, axis=-1), 1e-3)
        cos2 = (rel[..., 2] / r) ** 2
        dipole = np.where(r > a, (a / r) ** 3 * (3 * cos2 - 1), 0.0)
        field[box] += (1.2 * dipole).astype(np.float32)
    scale = float(np.percentile(volume, 99)) or 1.0
    noise = rng.normal(0.0, 1.0, volume.shape).astype(np.float32)
    noise *= np.float32(0.05) * np.float32(scale) / np.maximum(volume, np.float32(0.02 * scale))
    field += noise
    return (np.angle(np.exp(1j * field))).astype(np.float32)


def scan_files():
    """(scan.nii, scan_phase.nii) in the cache, written once."""
    import nibabel as nib

    folder = CACHE / f"whole_v{run_speed.VOLUME_VERSION}_{PHASE_VERSION}_{run_speed.SEED}"
    scan, phase = folder / "scan.nii", folder / "scan_phase.nii"
    if scan.exists() and phase.exists():
        return scan, phase
    folder.mkdir(parents=True, exist_ok=True)
    volume, affine, truth = run_speed.cached_volume()
    for path, data in ((scan, volume), (phase, make_phase(volume, affine, truth))):
        img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
        img.header.set_xyzt_units("mm")
        tmp = path.with_suffix(".tmp.nii")
        nib.save(img, tmp)
        os.replace(tmp, path)
    return scan, phase


def commands(scan, phase, out_root):
    """name -> argv (after the interpreter) of the microbleeds commands."""
    return {
        "detect": ["-m", "microbleeds", "detect", str(scan), "-o", str(out_root / "mag"), "-q"],
        "detect --phase": ["-m", "microbleeds", "detect", str(scan), "--phase", str(phase),
                           "-o", str(out_root / "phase"), "-q"],
        "--help": ["-m", "microbleeds", "--help"],
        "presets": ["-m", "microbleeds", "presets"],
    }


CPU_SECONDS = {}  # (label, name) -> CPU seconds (user + sys) of each timed process, beside the wall times


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv, env=None):
    """Wall seconds of one process (fails loudly); its CPU seconds (user + sys) in ``timed.cpu``."""
    c0 = _children_cpu()
    t0 = time.perf_counter()
    # cwd outside any source tree: ``python -m`` puts the cwd first on sys.path
    proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - t0
    timed.cpu = _children_cpu() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds


def _env(code):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if code:
        env["PYTHONPATH"] = str(code)
    return env


def staged(argv, env=None):
    """Per-stage seconds (dict) of one ``detect`` process run under :data:`PROBE`."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv[2:]], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    line = [x for x in proc.stdout.splitlines() if x.startswith("STAGES ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"stage probe failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(line[-1][len("STAGES "):])


def run(rounds, codes, stages=False, names=None):
    scan, phase = scan_files()
    times = {"reference": [], "stages": {}}
    labels = [str(c) if c else "installed" for c in codes]
    for label in labels:
        for name in commands(scan, phase, Path(".")):
            times[(label, name)] = [] if names is None or name in names else [float("nan")]
    for r in range(rounds + 1):
        warm = r == 0
        out = Path(tempfile.mkdtemp(prefix="mb_whole_"))
        try:
            t = timed(["-c", REFERENCE, str(scan)], _env(None))
            if not warm:
                times["reference"].append(t)
            for code, label in zip(codes, labels):
                for name, argv in commands(scan, phase, out / f"c{labels.index(label)}").items():
                    if names is not None and name not in names:
                        continue
                    t = timed(argv, _env(code))
                    if not warm:
                        times[(label, name)].append(t)
                        CPU_SECONDS.setdefault((label, name), []).append(timed.cpu)
                    print(f"[{'warm-up' if warm else r}] {label} {name}: {t:.2f} s (CPU {timed.cpu:.2f} s)", flush=True)
                if stages and not warm:
                    argv = commands(scan, phase, out / f"s{labels.index(label)}")["detect"]
                    times["stages"].setdefault(label, []).append(staged(argv, _env(code)))
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return times, labels, scan


def stage_table(per_code, labels):
    """Markdown table: median seconds of each stage (rows) for each code (columns)."""
    names = []
    for runs in per_code.values():
        for one in runs:
            names += [n for n in one if n not in names]
    lines = ["| stage | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for n in names:
        cells = [f"{np.median([one.get(n, 0.0) for one in per_code[lb]]):.2f}" if lb in per_code else "" for lb in labels]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(times, labels, rounds):
    med = {k: float(np.median(v)) for k, v in times.items() if k != "stages"}
    ref = med["reference"]
    try:
        import numba
        numba_version = numba.__version__
    except ImportError:  # pragma: no cover
        numba_version = "?"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [SECTION, "",
             "`python benchmarks/run_whole.py` (about 5 minutes; `--rounds N`, `--no-readme`, `--code DIR` to "
             "interleave another source tree). See the script's docstring for the scan (512×512×128 float32, "
             "0.45×0.45×1.2 mm, uncompressed NIfTI, with a synthetic phase) and the processes. Wall time of "
             "each process from the parent, process start to files written; median of the timed rounds after "
             "one warm-up round; the reference process loads the file with nibabel and runs one "
             "`scipy.ndimage.gaussian_filter` (σ = 1 voxel).", "",
             f"Measured {datetime.date.today().isoformat()}: `nproc` = {os.cpu_count()}, Python "
             f"{platform.python_version()}, numba {numba_version}, {rounds} timed rounds, 1-minute load "
             f"average {load:.1f} at the end (a shared 2-core machine: absolute seconds are noisy, the ratios "
             "were measured side by side).", "",
             f"Reference process: median {ref:.2f} s (runs {', '.join(f'{t:.2f}' for t in times['reference'])}).", ""]
    lines += ["| code | detect s | detect ÷ reference | detect --phase s | --phase ÷ detect | --help s | presets s |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label in labels:
        d, p = med[(label, "detect")], med[(label, "detect --phase")]
        lines.append(f"| {label} | {d:.2f} | **{d / ref:.2f}×** | {p:.2f} | **{p / d:.2f}×** | "
                     f"{med[(label, '--help')]:.2f} | {med[(label, 'presets')]:.2f} |")
    lines += ["", "Targets (issue 14): detect ≤ 1.5× the reference, with phase ≤ 1.6× without, `--help` and "
              "`presets` ≤ 0.3 s."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up (default 5)")
    parser.add_argument("--code", action="append", default=None,
                        help="source tree to run microbleeds from (PYTHONPATH); repeat to interleave several")
    parser.add_argument("--stages", action="store_true",
                        help="also time the stages in one more detect process per round and code")
    parser.add_argument("--no-readme", action="store_true", help="print only; do not write benchmarks/README.md")
    parser.add_argument("--magnitude-only", action="store_true",
                        help="only the reference and `detect` (no phase, --help, presets; implies --no-readme)")
    args = parser.parse_args(argv)
    args.no_readme = args.no_readme or args.magnitude_only
    codes = [Path(c).resolve() for c in args.code] if args.code else [None]
    times, labels, _ = run(args.rounds, codes, args.stages, names=("detect",) if args.magnitude_only else None)
    text = report(times, labels, args.rounds)
    print()
    print(text)
    for (label, name), cpu in CPU_SECONDS.items():
        print(f"CPU s (user + sys), {label} {name}: median {np.median(cpu):.2f} (rounds {', '.join(f'{c:.2f}' for c in cpu)})")
    if times["stages"]:
        print(stage_table(times["stages"], labels))
    if not args.no_readme:
        run_speed.README = README
        _write_section(text)
        print(f"wrote {README}")
    return 0


def _write_section(text):
    """Replace (or append) this section of benchmarks/README.md, leaving the others."""
    old = README.read_text() if README.exists() else "# Benchmarks\n"
    start = old.find(SECTION + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(SECTION))
        tail = old[nxt + 1:] if nxt >= 0 else ""
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    README.write_text(new)


if __name__ == "__main__":
    sys.exit(main())
