"""Write and compare result trees: does a change of code leave every output byte-identical?

    python benchmarks/result_trees.py write OUT [--quick]     # phantoms + results with this code
    python benchmarks/result_trees.py compare BEFORE AFTER    # byte comparison of two trees

``write`` simulates every phantom of the accuracy suite (``run_accuracy.SUITE``, with its label
map), runs ``microbleeds.detect`` on each as the accuracy benchmark does (phase where the suite
uses it, convention -1), again with the label map on three of them (MARS regions), and runs the
command line on the bundled sample (``detect --report``, ``evaluate``, a ``review apply`` of
fixed decisions). ``compare`` lists every file that is missing on one side or differs, and exits 1
if any does. Run ``write`` with the code before a change (e.g. a ``git worktree`` of the old
commit installed in a scratch venv) and after it, then ``compare``.

Only the inputs' paths differ between two trees, and a tree records its own absolute paths
(``summary.json`` ``input``): ``compare`` replaces each tree's root by ``<TREE>`` and the repository
it was written from (kept in ``.repository``) by ``<REPO>``, absolute or relative to the file's
folder, before comparing text files (JSON, TSV, HTML), masks the pages' "Generated <time>" line,
leaves out the run logs (``logs/run-<time>.*``), and compares NIfTI and other files byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEXT_SUFFIXES = (".json", ".tsv", ".html", ".txt", ".md")
REPO_FILE = ".repository"
WITH_LABELS = ("swi3t_1x1x2_snr30", "gre1.5t_0.9x0.9x3_snr20", "calc_swi3t_snr25")


def _phantoms_module():
    """The phantom simulator, wherever this revision keeps it (the tree compares revisions)."""
    for name in ("microbleeds.bench.phantoms", "microbleeds.bench.phantoms"):
        if importlib.util.find_spec(name.rsplit(".", 1)[0]) and _has_module(name):
            return __import__(name, fromlist=["simulate"])
    raise SystemExit("no phantom simulator found in this revision of microbleeds")


def _has_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _suite():
    source = (HERE / "run_accuracy.py").read_text()
    start = source.index("BASE = ")
    end = source.index("QUICK = ")
    phantoms = _phantoms_module()
    namespace = {"PhantomParams": phantoms.PhantomParams}  # one dict: comprehensions see the names defined
    exec("from dataclasses import replace\n" + source[start:end], namespace)
    return phantoms, namespace["BASE"], namespace["SUITE"]


def write_tree(out: Path, quick: bool = False) -> None:
    """Write phantoms and every result of this code under ``out``."""
    import microbleeds

    out.mkdir(parents=True, exist_ok=True)
    (out / REPO_FILE).write_text(str(ROOT))  # where the sample came from, for compare
    phantoms, base, suite = _suite()
    names = list(suite)[:3] if quick else list(suite)
    folder = out / "phantoms"
    for name in names:
        overrides, use_phase, preset = suite[name]
        files = phantoms.write_phantom(phantoms.simulate(replace(base, **overrides)), folder, name,
                                       include_labels=True)
        extra = {"phase": files["phase"], "phase_sign": -1} if use_phase else {}
        microbleeds.detect(files["magnitude"], pipeline=preset, **extra).write(out / "results", name)
        if name in WITH_LABELS:
            labels = folder / f"{name}_dseg.nii.gz"
            result = microbleeds.detect(files["magnitude"], pipeline=preset, labels=labels, **extra)
            result.write(out / "results_labels", name)
        print(f"done {name}", file=sys.stderr)
    _sample_cli(out)


def _sample_cli(out: Path) -> None:
    def cli(*args):
        subprocess.run([sys.executable, "-m", "microbleeds", *map(str, args)], check=True, env=env)

    env = dict(os.environ, PYTHONHASHSEED="0")
    sample = out / "sample"
    cli("detect", ROOT / "sample_data", "-o", sample, "--report", "-q")
    cli("evaluate", ROOT / "sample_data", sample, "-o", out / "sample_evaluation", "--quiet")
    scan = next(p.parent for p in sample.rglob("lesions.tsv"))
    candidates = (scan / "candidates.tsv").read_text().splitlines()
    header = candidates[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in candidates[1:]]
    sha = json.loads((scan / "summary.json").read_text())["input"]["sha256"]
    lines = ["sha256\tcandidate_id\tdecision\tmimic_type\treviewer\ttime"]
    for n, row in enumerate(rows):
        decision, mimic = ("confirmed", "") if n % 3 else ("rejected", "vein")
        lines.append(f"{sha}\t{row['candidate_id']}\t{decision}\t{mimic}\treader1\t2026-12-01T08:00:00")
    decisions = out / "decisions.tsv"
    decisions.write_text("\n".join(lines) + "\n")
    cli("review", "apply", decisions, scan)


def _digest(path: Path, root: Path) -> str:
    data = path.read_bytes()
    repo = (root / REPO_FILE).read_text() if (root / REPO_FILE).is_file() else str(ROOT)
    if path.suffix in TEXT_SUFFIXES:
        # inputs named relative to their result folder (summary.json): the same at any tree depth
        relative = os.path.relpath(repo, path.parent.resolve())
        data = data.replace(relative.encode() + b"/", b"<REPO>/")
        data = data.replace(str(root.resolve()).encode(), b"<TREE>").replace(repo.encode(), b"<REPO>")
    if path.suffix == ".html":  # pages of older code said when they were made; now who made them
        data = re.sub(rb"Generated (\d{4}-\d\d-\d\d \d\d:\d\d UTC|by microbleeds [0-9](?:[\w.+-]*[\w+])?)",
                      b"Generated <TIME>", data)
    return hashlib.sha256(data).hexdigest()


def tree_files(root: Path) -> dict:
    """Relative path -> path of every result file of a tree (the run logs, named by their time, left out)."""
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*")
            if p.is_file() and p.name != REPO_FILE and not (p.parent.name == "logs" and p.name.startswith("run-"))}


def compare_trees(before: Path, after: Path) -> list[str]:
    """Lines naming each file that is missing on one side or whose bytes differ."""
    a, b = tree_files(before), tree_files(after)
    problems = [f"only in {before}: {k}" for k in sorted(a.keys() - b.keys())]
    problems += [f"only in {after}: {k}" for k in sorted(b.keys() - a.keys())]
    problems += [f"differs: {k}" for k in sorted(a.keys() & b.keys()) if _digest(a[k], before) != _digest(b[k], after)]
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write a result tree with the installed code")
    w.add_argument("out", type=Path)
    w.add_argument("--quick", action="store_true", help="3 phantoms only")
    c = sub.add_parser("compare", help="compare two result trees byte for byte")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "write":
        write_tree(args.out, args.quick)
        return 0
    problems = compare_trees(args.before, args.after)
    n = len(tree_files(args.before))
    print("\n".join(problems) if problems else f"identical: {n} files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
