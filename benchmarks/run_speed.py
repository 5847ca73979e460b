"""Speed and memory benchmark: ``microbleeds.detect`` (numba kernels) against the same pipeline
with plain numpy/scipy steps (``benchmarks/numpy_pipeline.py``), side by side in one run.

    python benchmarks/run_speed.py                # full run, writes benchmarks/README.md section
    python benchmarks/run_speed.py --no-readme    # print only
    python benchmarks/run_speed.py --pairs 1      # one numba and one numpy process (default 2, alternating)

Test volume: 512 x 512 x 128 float32 at 0.45 x 0.45 x 1.2 mm, seeded: head-like ellipsoid brain
(with skull gap and scalp) under a smooth bias, ~20 dark round foci (1.5-5 mm, contrast 0.5-0.8,
blurred edges), ~30 dark tubes (veins, 0.5-1.5 mm, random directions, some curved), Rician noise
at SNR ~20. Cached in ``benchmarks/.cache/``.

Each pipeline runs in a fresh subprocess (peak RSS per pipeline): import, load the volume
(baseline RSS), one warm-up call on a small crop (numba JIT / cache load), then three timed full
calls (best and median) with timers around each stage. The ratio numpy / numba
is the figure to trust; the absolute seconds depend on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
README = HERE / "README.md"
SHAPE = (512, 512, 128)
VOXEL_MM = (0.45, 0.45, 1.2)
SEED = 20240601
VOLUME_VERSION = 1
SECTION = "## Speed and memory"


# ------------------------------------------------------------------------------------------------
# test volume
# ------------------------------------------------------------------------------------------------
def volume_affine():
    affine = np.diag([*VOXEL_MM, 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(SHAPE) - 1) * np.asarray(VOXEL_MM)
    return affine


def _axes_mm():
    """Per-axis coordinates (mm, centred), float32."""
    return [((np.arange(n) - 0.5 * (n - 1)) * v).astype(np.float32) for n, v in zip(SHAPE, VOXEL_MM)]


def _smooth_step(x, width):
    """1 for x << 0, 0 for x >> 0, logistic of width ``width``."""
    return 0.5 * (1.0 - np.tanh(x / width))


def _segment_distance(points, a, b):
    """Distance (mm) from points (..., 3) to segment a-b."""
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[..., None] * ab), axis=-1)


def _patch(centre_mm, half_mm):
    """Index box (slices) and its voxel-centre coordinates (mm) around a point."""
    axes = _axes_mm()
    box, coords = [], []
    for a, (c, h, v, n) in enumerate(zip(centre_mm, half_mm, VOXEL_MM, SHAPE)):
        i0 = int(np.floor((c - h) / v + 0.5 * (n - 1)))
        i1 = int(np.ceil((c + h) / v + 0.5 * (n - 1))) + 1
        i0, i1 = max(i0, 0), min(i1, n)
        box.append(slice(i0, i1))
        coords.append(axes[a][i0:i1])
    grid = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1)
    return tuple(box), grid


def make_volume(seed=SEED):
    """The benchmark volume (float32, 512x512x128), its affine and the planted foci (truth)."""
    rng = np.random.default_rng(seed)
    x, y, z = _axes_mm()
    X, Y, Z = x[:, None, None], y[None, :, None], z[None, None, :]
    radii = np.array([68.0, 86.0, 58.0], np.float32)  # brain semi-axes, mm (LR, AP, SI)
    zc = np.float32(-8.0)  # brain centre a little below the field's centre
    r = np.sqrt((X / radii[0]) ** 2 + (Y / radii[1]) ** 2 + ((Z - zc) / radii[2]) ** 2)
    edge = np.float32(1.0 / 70.0)  # ~1 mm logistic edge
    brain = _smooth_step(r - 1.0, edge)
    scalp = _smooth_step(r - 1.2, edge) - _smooth_step(r - 1.12, edge)
    # tissue texture: a few low-frequency separable waves (grey / white matter contrast stand-in)
    texture = np.ones((1, 1, 1), np.float32)
    for _ in range(4):
        kx, ky, kz = rng.uniform(0.05, 0.25, 3)
        px, py, pz = rng.uniform(0, 2 * np.pi, 3)
        texture = texture + np.float32(0.02) * (np.cos(kx * X + px) * np.cos(ky * Y + py) * np.cos(kz * Z + pz))
    # smooth receive bias: +-20 % across the head
    bias = (1.0 + 0.15 * X / 100 - 0.1 * Y / 100 + 0.08 * Z / 80 + 0.05 * (X / 100) * (Y / 100)
            - 0.06 * (Z / 80) ** 2).astype(np.float32)
    clean = (brain * texture + np.float32(0.55) * scalp) * bias
    del r, brain, scalp, texture
    clean = clean.astype(np.float32)

    def inside(p, margin):
        return ((p[0] / radii[0]) ** 2 + (p[1] / radii[1]) ** 2 + ((p[2] - zc) / radii[2]) ** 2) < margin ** 2

    def random_point(margin):
        while True:
            p = rng.uniform(-radii, radii) + np.array([0, 0, zc])
            if inside(p, margin):
                return p

    # foci: dark balls with Gaussian-blurred edges, painted in local patches
    foci = []
    while len(foci) < 20:
        c = random_point(0.75)
        if any(np.linalg.norm(c - f["centre_mm"]) < 15 for f in foci):
            continue
        d = rng.uniform(1.5, 5.0)
        contrast = rng.uniform(0.5, 0.8)
        blur = 0.35
        half = d / 2 + 3 * blur + 1.5
        box, grid = _patch(c, (half, half, half))
        dist = np.linalg.norm(grid - c.astype(np.float32), axis=-1)
        profile = 0.5 * (1.0 - np.tanh((dist - d / 2) / (blur * 1.2)))
        clean[box] *= (1.0 - contrast * profile).astype(np.float32)
        foci.append({"centre_mm": c, "diameter_mm": float(d), "contrast": float(contrast)})
    # veins: dark tubes along straight or quadratic-Bezier curves, painted segment by segment
    veins = 0
    while veins < 30:
        start = random_point(0.85)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        length = rng.uniform(12, 45)
        end = start + length * direction
        bend = rng.normal(size=3) * (0.25 * length if rng.random() < 0.5 else 0.0)
        ctrl = 0.5 * (start + end) + bend
        t = np.linspace(0, 1, int(length) + 2)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t ** 2 * end
        if not all(inside(p, 0.9) for p in curve):
            continue
        if any(min(np.linalg.norm(curve - f["centre_mm"], axis=1)) < 8 for f in foci):
            continue
        radius = rng.uniform(0.25, 0.75)
        contrast = rng.uniform(0.4, 0.7)
        blur = 0.3
        lo = curve.min(axis=0) - radius - 3 * blur - 1
        hi = curve.max(axis=0) + radius + 3 * blur + 1
        box, grid = _patch(0.5 * (lo + hi), 0.5 * (hi - lo))
        dist = np.full(grid.shape[:3], np.inf, np.float32)
        origin = np.array([s.start for s in box])
        reach = radius + 3 * blur + 1.0
        for a, b in zip(curve[:-1], curve[1:]):
            s_lo = np.minimum(a, b) - reach
            s_hi = np.maximum(a, b) + reach
            sub = []
            for ax in range(3):
                i0 = int(np.floor(s_lo[ax] / VOXEL_MM[ax] + 0.5 * (SHAPE[ax] - 1))) - origin[ax]
                i1 = int(np.ceil(s_hi[ax] / VOXEL_MM[ax] + 0.5 * (SHAPE[ax] - 1))) + 1 - origin[ax]
                sub.append(slice(max(i0, 0), max(min(i1, dist.shape[ax]), 0)))
            sub = tuple(sub)
            np.minimum(dist[sub], _segment_distance(grid[sub], a.astype(np.float32), b.astype(np.float32)),
                       out=dist[sub])
        profile = 0.5 * (1.0 - np.tanh((dist - radius) / (blur * 1.2)))
        clean[box] *= (1.0 - contrast * profile).astype(np.float32)
        veins += 1
    # Rician noise, SNR ~20 against mean brain signal
    scale = np.float32(1000.0)
    sigma = np.float32(scale / 20.0)
    clean *= scale
    real = clean
    real += sigma * rng.standard_normal(SHAPE, dtype=np.float32)
    imag = rng.standard_normal(SHAPE, dtype=np.float32)
    imag *= sigma
    np.square(real, out=real)
    np.square(imag, out=imag)
    real += imag
    del imag
    volume = np.sqrt(real, out=real)
    truth = [{"x_mm": float(f["centre_mm"][0]), "y_mm": float(f["centre_mm"][1]), "z_mm": float(f["centre_mm"][2]),
              "diameter_mm": f["diameter_mm"], "contrast": f["contrast"]} for f in foci]
    return volume, volume_affine(), truth


def cached_volume():
    """(volume, affine, truth), generated once into benchmarks/.cache/."""
    CACHE.mkdir(exist_ok=True)
    stem = CACHE / f"speed_volume_v{VOLUME_VERSION}_{SEED}"
    npy, meta = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.exists() and meta.exists():
        return np.load(npy), np.asarray(json.loads(meta.read_text())["affine"]), json.loads(meta.read_text())["truth"]
    t0 = time.perf_counter()
    volume, affine, truth = make_volume()
    tmp = npy.with_suffix(".tmp.npy")
    np.save(tmp, volume)
    os.replace(tmp, npy)
    meta.write_text(json.dumps({"affine": affine.tolist(), "truth": truth, "shape": SHAPE, "voxel_mm": VOXEL_MM}))
    print(f"generated test volume in {time.perf_counter() - t0:.1f} s -> {npy}", flush=True)
    return volume, affine, truth


# ------------------------------------------------------------------------------------------------
# child: one pipeline in a fresh process
# ------------------------------------------------------------------------------------------------
def _rss_mb():
    """(current RSS, peak RSS) of this process, MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    current = peak
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return current, peak


STAGES = (  # (module, name, label); timers wrap the names the pipeline looks up at call time
    ("api", "load_scan", "load (checks, canonical copy)"),
    ("api", "brain_mask", "mask"),
    ("api", "brain_box", "crop to brain box"),
    ("api", "relative_intensity", "normalisation"),
    ("api", "noise_level", "noise level"),
    ("api", "erode_mm", "interior (erosion)"),
    ("seeds", "frst_response", "FRST"),
    ("seeds", "_local_maxima", "local maxima"),
    ("api", "find_seeds", "seeds total"),
    ("api", "grow_regions", "region growing (+merge)"),
    ("api", "describe_regions", "describe"),
    ("api", "locate", "locate (regions)"),
    ("api", "classify", "rules"),
    ("api", "tabulate", "tabulate"),
    ("api", "build_summary", "summary"),
    ("api", "fortran_copy", "back to input grid (mask)"),
    ("api", "lesion_map", "lesion map (input grid)"),
)


def _install_timers(totals):
    import microbleeds.api as api
    import microbleeds.stages.seeds as seeds

    modules = {"api": api, "seeds": seeds}
    saved = []
    for module_name, name, label in STAGES:
        module = modules[module_name]
        original = getattr(module, name)
        saved.append((module, name, original))

        def timed(*args, _f=original, _label=label, **kwargs):
            t = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                totals[_label] = totals.get(_label, 0.0) + time.perf_counter() - t

        setattr(module, name, timed)

    def uninstall():
        for module, name, original in saved:
            setattr(module, name, original)

    return uninstall


def child(mode, out_path, repeats):
    import numba

    import microbleeds

    if mode == "numpy":
        sys.path.insert(0, str(HERE))
        import numpy_pipeline

        numpy_pipeline.install()
    volume, affine, truth = cached_volume()
    base_current, base_peak = _rss_mb()
    # warm-up on a small crop: numba compiles (or loads its cache), imports settle
    t = time.perf_counter()
    crop = np.ascontiguousarray(volume[192:320, 192:320, 40:88])
    microbleeds.detect(crop, affine=affine)
    warmup = time.perf_counter() - t
    del crop
    times, cpu, per_call = [], [], []
    result = None
    for _ in range(repeats):
        result = None
        stages = {}
        uninstall = _install_timers(stages)  # a few wrapper calls per run: negligible overhead
        t, c = time.perf_counter(), time.process_time()
        result = microbleeds.detect(volume, affine=affine)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        uninstall()
        stages["total"] = times[-1]
        per_call.append(stages)
    lesions = [{k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in row.items()}
               for row in result.lesions]
    n_candidates = len(result.candidates)
    rejected = result.summary["rejected_by_rule"]
    result = None
    _, peak = _rss_mb()
    totals = {k: float(np.median([s.get(k, 0.0) for s in per_call])) for k in per_call[0]}
    out = {
        "mode": mode, "times": times, "cpu": cpu, "warmup": warmup, "stages": totals,
        "baseline_rss_mb": base_current, "baseline_peak_mb": base_peak, "peak_rss_mb": peak,
        "lesions": lesions, "n_candidates": n_candidates,
        "rejected_by_rule": rejected, "numba": numba.__version__, "threads": numba.get_num_threads(),
    }
    Path(out_path).write_text(json.dumps(out, default=str))


def run_child(mode, repeats):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    try:
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", mode, "--out", out,
                        "--repeats", str(repeats)], check=True)
        return json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------
# parent: compare, print, write README
# ------------------------------------------------------------------------------------------------
def compare_lesions(a, b, tol_mm=0.5):
    """Same lesion count and every lesion of a within tol_mm of one of b (and back)."""
    pa = np.array([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in a]).reshape(-1, 3)
    pb = np.array([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in b]).reshape(-1, 3)
    if len(pa) == 0 or len(pb) == 0:
        return len(pa) == len(pb), 0.0
    d = np.linalg.norm(pa[:, None] - pb[None], axis=2)
    worst = max(d.min(axis=1).max(), d.min(axis=0).max())
    return len(pa) == len(pb) and worst <= tol_mm, float(worst)


def recall(lesions, truth, tol_mm=2.0):
    pl = np.array([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in lesions]).reshape(-1, 3)
    found = 0
    for t in truth:
        c = np.array([t["x_mm"], t["y_mm"], t["z_mm"]])
        if len(pl) and np.linalg.norm(pl - c, axis=1).min() <= max(tol_mm, t["diameter_mm"] / 2):
            found += 1
    return found


def _merge_runs(runs):
    merged = dict(runs[0])
    merged["times"] = [t for r in runs for t in r["times"]]
    merged["cpu"] = [t for r in runs for t in r["cpu"]]
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    merged["baseline_rss_mb"] = min(r["baseline_rss_mb"] for r in runs)
    stages = {}
    for r in runs:
        for k, v in r["stages"].items():
            stages.setdefault(k, []).append(v)
    merged["stages"] = {k: float(np.median(v)) for k, v in stages.items()}
    return merged


def stage_rows(numba_run, numpy_run):
    rows = []
    for _, _, label in STAGES:
        a, b = numba_run["stages"].get(label), numpy_run["stages"].get(label)
        if a is None and b is None:
            continue
        rows.append((label, a or 0.0, b or 0.0))
    children = ("FRST", "local maxima")
    for run in (numba_run, numpy_run):
        s = run["stages"]
        s["seed ordering (rest of find_seeds)"] = s.get("seeds total", 0.0) - sum(s.get(c, 0.0) for c in children)
        timed = sum(v for k, v in s.items() if k not in ("total", "seeds total") and not k.startswith("seed ordering"))
        s["other (glue)"] = s["total"] - timed - s["seed ordering (rest of find_seeds)"]
    out = []
    for label, a, b in rows:
        if label == "seeds total":
            out.append(("seed ordering (rest of find_seeds)", numba_run["stages"]["seed ordering (rest of find_seeds)"],
                        numpy_run["stages"]["seed ordering (rest of find_seeds)"]))
            continue
        out.append((label, a, b))
    out.append(("other (glue)", numba_run["stages"]["other (glue)"], numpy_run["stages"]["other (glue)"]))
    out.append(("**total (median)**", numba_run["stages"]["total"], numpy_run["stages"]["total"]))
    return out


def _ratio(a, b):
    return f"{b / a:.1f}×" if a > 1e-9 else "–"


def report(numba_run, numpy_run, truth, pairs):
    same, worst = compare_lesions(numba_run["lesions"], numpy_run["lesions"])
    nb, npy = np.asarray(numba_run["times"]), np.asarray(numpy_run["times"])
    nproc = os.cpu_count()
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or nproc)
    except (OSError, ValueError):
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    date = datetime.date.today().isoformat()
    lines = [
        SECTION,
        "",
        "`python benchmarks/run_speed.py` (about 2–3 minutes; `--no-readme` prints without writing this "
        "section, `--pairs N` alternates the two pipelines N times).",
        "",
        f"Whole `microbleeds.detect(volume, affine=affine)` (default preset `swi-3t`) on a seeded synthetic "
        f"{SHAPE[0]}×{SHAPE[1]}×{SHAPE[2]} float32 volume at {VOXEL_MM[0]}×{VOXEL_MM[1]}×{VOXEL_MM[2]} mm "
        "(ellipsoid brain with skull gap and scalp, smooth bias, 20 dark round foci 1.5–5 mm of contrast "
        "0.5–0.8 with blurred edges, 30 dark veins 0.5–1.5 mm, some curved, Rician noise at SNR ~20; "
        "cached in `benchmarks/.cache/`). "
        "**numba** is the package as shipped; **numpy** is the same pipeline with every numba kernel replaced "
        "by a vectorised numpy/scipy equivalent (`benchmarks/numpy_pipeline.py`: block sums by reshape, "
        "erosion by `minimum_filter`, gradients by `np.gradient`, FRST votes by `np.bincount`, local maxima by "
        "`maximum_filter`, region growing by patch threshold + `ndimage.label`). Each pipeline runs in its own "
        "fresh process: import, load the volume (baseline RSS), one warm-up call on a 128×128×48 crop (JIT "
        "compile or numba cache load), then timed full calls. The **ratio** is the figure to trust: both "
        "were measured in the same run, one after the other. Absolute seconds are noisy (a shared 2-core "
        f"machine, other processes running; 1-minute load average {load:.1f} at the end of this run).",
        "",
        f"Measured {date}: `nproc` = {nproc}, numba {numba_run['numba']} ({numba_run['threads']} threads), "
        f"numpy {np.__version__}, Python {platform.python_version()}, "
        f"{len(nb)} timed calls per pipeline ({pairs} process pair{'s' if pairs > 1 else ''}).",
        "",
        "| pipeline | best s | median s | median CPU s (all threads) | warm-up on crop s | peak RSS MB | baseline RSS MB | peak − baseline MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run, t in (("numba (package)", numba_run, nb), ("numpy/scipy", numpy_run, npy)):
        lines.append(f"| {name} | {t.min():.2f} | {np.median(t):.2f} | {np.median(run['cpu']):.2f} | {run['warmup']:.2f} | "
                     f"{run['peak_rss_mb']:.0f} | {run['baseline_rss_mb']:.0f} | "
                     f"{run['peak_rss_mb'] - run['baseline_rss_mb']:.0f} |")
    lines.append(f"| **ratio numpy / numba** | **{npy.min() / nb.min():.1f}×** | **{np.median(npy) / np.median(nb):.1f}×** "
                 f"| **{np.median(numpy_run['cpu']) / np.median(numba_run['cpu']):.1f}×** | | {numpy_run['peak_rss_mb'] / numba_run['peak_rss_mb']:.2f}× | | |")
    target_t = np.median(nb) <= 2.0
    target_m = numba_run["peak_rss_mb"] <= 2048
    lines += [
        "",
        f"Targets (numba, after the compiling run): whole detection ≤ 2 s — "
        f"**{'met' if target_t else 'not met'}** (median {np.median(nb):.2f} s, best {nb.min():.2f} s); "
        f"peak memory < 2 GB — **{'met' if target_m else 'not met'}** ({numba_run['peak_rss_mb']:.0f} MB peak RSS "
        f"of the whole process, volume included).",
        "",
        f"Same result: numba and numpy pipelines give {len(numba_run['lesions'])} and {len(numpy_run['lesions'])} "
        f"lesions, largest world-coordinate difference {worst:.3f} mm — **{'same lesions' if same else 'DIFFERENT'}** "
        f"(check: same count, every lesion within 0.5 mm). "
        f"Candidates: {numba_run['n_candidates']} / {numpy_run['n_candidates']}. "
        f"Planted foci found (within 2 mm or their radius): {recall(numba_run['lesions'], truth)} of {len(truth)}.",
        "",
        "Per stage (median over the timed calls; timers around the functions `detect` calls, "
        "FRST and local maxima are inside `find_seeds`). Stages that run the same code in both pipelines "
        "(mask morphology, noise level, describe, locate, ...) show how noisy single timings are here:",
        "",
        "| stage | numba s | numpy s | ratio numpy / numba |",
        "|---|---:|---:|---:|",
    ]
    for label, a, b in stage_rows(numba_run, numpy_run):
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {_ratio(a, b)} |")
    lines.append("")
    return "\n".join(lines), same


def write_section(text):
    """Replace (or append) the speed section of benchmarks/README.md, leaving other sections."""
    if README.exists():
        old = README.read_text()
    else:
        old = "# Benchmarks\n\n"
    start = old.find(SECTION + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        nxt = old.find("\n## ", start + len(SECTION))
        tail = old[nxt + 1:] if nxt >= 0 else ""
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    README.write_text(new)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=("numba", "numpy"))
    parser.add_argument("--out")
    parser.add_argument("--repeats", type=int, default=3, help="timed full calls per process (default 3)")
    parser.add_argument("--pairs", type=int, default=2, help="numba/numpy process pairs, alternating (default 1)")
    parser.add_argument("--no-readme", action="store_true", help="print only; do not write benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.out, args.repeats)
        return 0
    _, _, truth = cached_volume()
    runs = {"numba": [], "numpy": []}
    for p in range(args.pairs):
        for mode in ("numba", "numpy"):
            print(f"[{p + 1}/{args.pairs}] {mode} ...", flush=True)
            runs[mode].append(run_child(mode, args.repeats))
            r = runs[mode][-1]
            print(f"    times {', '.join(f'{t:.2f}' for t in r['times'])} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"{len(r['lesions'])} lesions", flush=True)
    text, same = report(_merge_runs(runs["numba"]), _merge_runs(runs["numpy"]), truth, args.pairs)
    print()
    print(text)
    if not args.no_readme:
        write_section(text)
        print(f"wrote {README}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
