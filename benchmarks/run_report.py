"""Report benchmark: build time and size of the HTML review page for the bundled sample scan.

    python benchmarks/run_report.py

Targets (issue: the reader's step): the report for the sample scan is under 5 MB and builds in
under 10 s. Detection runs first (not timed); then ``build_report`` is timed 3 times.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import microbleeds
from microbleeds.review.page import build_report

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def main():
    with tempfile.TemporaryDirectory() as tmp:
        result = microbleeds.detect(SAMPLE / "sample_mag.nii.gz", phase=SAMPLE / "sample_phase.nii.gz")
        folder = result.write(tmp, write_images=True)
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            page = build_report(folder)
            seconds.append(time.perf_counter() - start)
        size_mb = page.stat().st_size / 1e6
    print(f"candidates: {len(result.candidates)}  lesions: {len(result.lesions)}")
    print(f"report build: median {statistics.median(seconds):.2f} s, best {min(seconds):.2f} s (target < 10 s)")
    print(f"report size: {size_mb:.2f} MB (target < 5 MB)")
    return 0 if size_mb < 5 and min(seconds) < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
