"""Index time of pybids vs bids2table on a synthetic BIDS layout (issue 12: which library reads BIDS).

``python benchmarks/bids_index.py [--subjects 1000]`` writes a layout of empty files (the indexers read
names and JSON sidecars, never the images): per subject 2 sessions x (T2starw + sidecar, 3-echo MEGRE
part-mag/part-phase + sidecars, T1w, FLAIR, BOLD, DWI), plus a top-level inherited ``T2starw.json``.
Each library indexes it in its own fresh process; the times are wall-clock seconds, side by side.
Needs ``pip install pybids`` (bids2table is a dependency of the package; pybids is not).

Measured 2026-12-01 on the 2-core machine (1,000 subjects, 36,002 files, Python 3.11, pybids 0.22.0,
bids2table 2.3.1): pybids 69.4 s (validate=False), 65.1 s (validate=True); bids2table 4.2 s; each
found the 14,000 T2*-weighted NIfTI files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES = ["T2starw.nii.gz", "T2starw.json", "T1w.nii.gz", "FLAIR.nii.gz"]


def write_layout(root: Path, subjects: int) -> int:
    """Write the layout; returns the number of files."""
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.10.0"}))
    (root / "T2starw.json").write_text(json.dumps({"MagneticFieldStrength": 3, "EchoTime": 0.02}))
    n = 2
    for s in range(1, subjects + 1):
        for ses in ("1", "2"):
            base = f"sub-{s:04d}_ses-{ses}"
            anat = root / f"sub-{s:04d}" / f"ses-{ses}" / "anat"
            anat.mkdir(parents=True)
            names = [f"{base}_{f}" for f in FILES]
            for echo in (1, 2, 3):
                for part in ("mag", "phase"):
                    names += [f"{base}_echo-{echo}_part-{part}_MEGRE.nii.gz", f"{base}_echo-{echo}_part-{part}_MEGRE.json"]
            for name in names:
                (anat / name).write_text("{}" if name.endswith(".json") else "")
            func, dwi = anat.parent / "func", anat.parent / "dwi"
            func.mkdir()
            dwi.mkdir()
            (func / f"{base}_task-rest_bold.nii.gz").write_text("")
            (dwi / f"{base}_dwi.nii.gz").write_text("")
            n += len(names) + 2
    return n


CODE = {
    "pybids (validate=False)": "import bids; L = bids.BIDSLayout(r'{root}', validate=False); "
                               "n = len(L.get(suffix=['T2starw', 'MEGRE'], extension='.nii.gz'))",
    "pybids (default, validate=True)": "import bids; L = bids.BIDSLayout(r'{root}'); "
                                       "n = len(L.get(suffix=['T2starw', 'MEGRE'], extension='.nii.gz'))",
    "bids2table": "import bids2table as b; t = b.index_dataset(r'{root}'); "
                  "n = sum(1 for s, e in zip(t['suffix'].to_pylist(), t['ext'].to_pylist()) "
                  "if s in ('T2starw', 'MEGRE') and e == '.nii.gz')",
}


def time_one(code: str, root: Path) -> tuple[float, str]:
    """Wall-clock seconds of ``code`` (import included) in a fresh interpreter, and what it printed."""
    script = f"import time; t0 = time.perf_counter(); {code.format(root=root)}; print(time.perf_counter() - t0, n)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bids"
        root.mkdir()
        t0 = time.perf_counter()
        n = write_layout(root, args.subjects)
        print(f"{args.subjects} subjects, {n} files written in {time.perf_counter() - t0:.1f} s")
        for name, code in CODE.items():
            seconds, found = time_one(code, root)
            print(f"{name:<34} {seconds:8.2f} s   {found} T2*-weighted NIfTI found")


if __name__ == "__main__":
    main()
