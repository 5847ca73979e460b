"""The scan's phase convention estimated from the image, on every phantom of the accuracy suite
with phase.

    python benchmarks/run_sign_estimate.py                 # every phantom with phase
    python benchmarks/run_sign_estimate.py --only hard_    # a subset by name or prefix

The accuracy suite gives each phantom its convention (``phase_sign`` forced, as a site that knows
its scanner would), so the estimate (:func:`microbleeds.stages.dipole_sign.estimate_phase_sign`,
the vendor prior included) is measured here apart: the detector's load, brain mask and phase
branch with ``phase_sign`` unset, scored against the convention in the phantom's sidecar. Writes
``benchmarks/results/sign_estimate.md`` and ``.json`` (``sign_estimate_subset.*`` with ``--only``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_accuracy import GROUPS, OUT, SUITE, phantom_files  # noqa: E402

from microbleeds.api import _echo, _mask  # noqa: E402
from microbleeds.io.atomic import atomic_write_text  # noqa: E402
from microbleeds.io.tables import json_text  # noqa: E402
from microbleeds.presets import load_parameters  # noqa: E402
from microbleeds.stages.load import load_scan  # noqa: E402
from microbleeds.stages.phase import phase_branch  # noqa: E402

EVIDENCE = ("confidence", "method", "vessel_units", "vessel_agreement", "vessel_p", "foci", "foci_agreement", "columns",
            "column_agreement", "column_p", "note")
CONFIDENT = ("high", "moderate")  # the confidences that switch the calcification rule on


def estimate(name):
    """The estimated sign and its evidence on phantom ``name``, with the truth and the time (s)."""
    overrides, _, preset = SUITE[name]
    files = phantom_files(name)
    params = replace(load_parameters(preset), phase_sign=None)
    scan = load_scan(files["magnitude"], echo=_echo(params.echo))
    brain = _mask(None, scan, params)
    start = time.perf_counter()
    result, _ = phase_branch(scan, files["phase"], brain, params)
    truth = int(overrides.get("phase_sign", -1))
    ev = result.sign_evidence
    return {"name": name, "truth": truth, "sign": int(result.phase_sign), "right": int(result.phase_sign) == truth,
            "echoes": scan.n_echoes, **{k: ev.get(k) for k in EVIDENCE},
            "seconds": round(time.perf_counter() - start, 1)}


def outcome(row):
    """The table's column of one estimate."""
    if row["confidence"] == "none":
        return "none"
    right = "right" if row["right"] else "wrong"
    return f"{right}, {'high / moderate' if row['confidence'] in CONFIDENT else 'low'}"


COLUMNS = ("right, high / moderate", "right, low", "none", "wrong, low", "wrong, high / moderate")


def markdown(rows):
    lines = ["| phantoms | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for group, names in GROUPS.items():
        sub = [r for r in rows if r["name"] in names]
        if sub:
            counts = [sum(outcome(r) == c for r in sub) for c in COLUMNS]
            lines.append(f"| {group} ({len(sub)} with phase) | " + " | ".join(map(str, counts)) + " |")
    lines += ["", "Per phantom: truth, estimate (confidence, method); veins: units, weighted agreement, p; "
              "foci: votes, agreement; columns along B0: votes, agreement, p", ""]
    for r in rows:
        lines.append(f"- {r['name']} ({r['echoes']} echo{'es' if r['echoes'] > 1 else ''}): {r['truth']:+d}, "
                     f"{r['sign']:+d} ({r['confidence']}, {r['method']}); veins {r['vessel_units']}, "
                     f"{r['vessel_agreement']}, {r['vessel_p']}; foci {r['foci']}, {r['foci_agreement']}; "
                     f"columns {r['columns']}, {r['column_agreement']}, {r['column_p']}"
                     + (f"; {r['note']}" if r["note"] else ""))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated phantom names or prefixes")
    args = parser.parse_args(argv)
    wanted = [w for w in args.only.split(",") if w]
    names = [n for n, (_, use_phase, _) in SUITE.items()
             if use_phase and (not wanted or any(n == w or n.startswith(w) for w in wanted))]
    rows = []
    for name in names:
        rows.append(estimate(name))
        print(outcome(rows[-1]), rows[-1], flush=True)
    stem = "sign_estimate_subset" if wanted else "sign_estimate"
    atomic_write_text(OUT / f"{stem}.md", markdown(rows))
    atomic_write_text(OUT / f"{stem}.json", json_text(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
