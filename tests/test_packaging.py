"""The wheel carries what a plain ``pip install`` needs: presets, lookup tables, the review page's
assets and the sample scan (so that ``microbleeds detect`` works without the repository)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_package_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("microbleeds-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("microbleeds/sample_data/sample_mag.nii.gz", "microbleeds/sample_data/sample_phase.nii.gz",
                   "microbleeds/sample_data/sample_truth.tsv", "microbleeds/pipelines/swi-3t.toml",
                   "microbleeds/data/mars_freesurfer.tsv", "microbleeds/review/assets/report.js",
                   "microbleeds/stages/phase.py", "microbleeds/bench/phantoms/simulate.py",
                   "microbleeds/atlas/icbm152_2009a_sym_t1_brain_2mm.nii.gz", "microbleeds/atlas/LICENSE_ICBM152.txt",
                   "microbleeds/group/models.py"):
        assert needed in names, needed
