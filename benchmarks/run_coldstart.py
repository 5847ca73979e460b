"""Cold start: the first scan on a fresh machine (empty numba cache), before and after ``warmup``.

    python benchmarks/run_coldstart.py              # 2 rounds
    python benchmarks/run_coldstart.py --rounds 1 --size full

Scan: ``run_throughput``'s first scan (``--size half``: 256 x 256 x 128 at 0.9 x 0.9 x 1.2 mm, with
its synthetic phase; ``full``: 512 x 512 x 128 at 0.45 x 0.45 x 1.2 mm), not the bundled sample
that :func:`microbleeds.warmup.warm` detects on. Each round runs, each in a fresh process with
``NUMBA_CACHE_DIR`` set:

* ``fresh``: a new empty cache folder (a fresh machine): import microbleeds, detect with phase
  twice (in-process), reporting the import, the first and the second detection;
* ``warmup``: ``microbleeds.warmup.warm()`` into another new empty cache folder;
* ``after warmup``: the same detections with that folder (the first scan on a warmed node);
* ``warm``: the same again (everything cached, the files in the OS cache).

First-scan cost = import + first detection; the extra cost of a cold start = that of ``fresh``
(before) or ``after warmup`` (after) minus that of ``warm``. Target: after <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import microbleeds, microbleeds.api
t1 = time.perf_counter()
microbleeds.detect(sys.argv[1], phase=sys.argv[2])
t2 = time.perf_counter()
microbleeds.detect(sys.argv[1], phase=sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "second_s": t3 - t2}))
"""
WARM = "from microbleeds.warmup import warm; r = warm(); print(r.line())"


def _run(code, args, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return wall, proc.stdout.strip().splitlines()[-1]


def one_round(scan, phase):
    root = Path(tempfile.mkdtemp(prefix="mb_coldstart_"))
    try:
        row = {}
        wall, line = _run(CHILD, (scan, phase), root / "fresh")
        row["fresh"] = dict(json.loads(line), process_s=wall)
        wall, line = _run(WARM, (), root / "warmed")
        row["warmup"] = {"process_s": wall, "line": line}
        for name in ("after warmup", "warm"):
            wall, line = _run(CHILD, (scan, phase), root / "warmed")
            row[name] = dict(json.loads(line), process_s=wall)
        return row
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(rows):
    def med(name, key):
        return float(np.median([row[name][key] for row in rows]))

    def first(name):
        return med(name, "import_s") + med(name, "first_s")

    lines = ["| process (fresh `NUMBA_CACHE_DIR` unless warmed) | import s | first scan s | second scan s | "
             "import + first s | extra over warm s |", "|---|---:|---:|---:|---:|---:|"]
    for name in ("fresh", "after warmup", "warm"):
        lines.append(f"| {name} | {med(name, 'import_s'):.1f} | {med(name, 'first_s'):.1f} | "
                     f"{med(name, 'second_s'):.1f} | {first(name):.1f} | **{first(name) - first('warm'):+.1f}** |")
    lines += ["", f"`microbleeds warmup` into the empty folder: {med('warmup', 'process_s'):.1f} s per process "
              f"({rows[-1]['warmup']['line']}). {len(rows)} round(s), 1-minute load average "
              f"{os.getloadavg()[0]:.1f} at the end."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", choices=("full", "half"), default="half")
    args = parser.parse_args(argv)
    import run_throughput

    folder = run_throughput.scan_folder(args.size, 8)
    scan, phase = folder / "sub-00_mag.nii", folder / "sub-00_phase.nii"
    rows = []
    for r in range(args.rounds):
        rows.append(one_round(scan, phase))
        print(f"[{r}] " + json.dumps(rows[-1]), flush=True)
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
