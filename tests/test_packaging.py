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
    infos = zipfile.ZipFile(wheel).infolist()
    names = {info.filename for info in infos}
    for needed in ("microbleeds/sample_data/sample_mag.nii.gz", "microbleeds/sample_data/sample_phase.nii.gz",
                   "microbleeds/sample_data/sample_truth.tsv", "microbleeds/sample_data/sample_truth.nii.gz",
                   "microbleeds/sample_data/sample.json", "microbleeds/pipelines/swi-3t.toml",
                   "microbleeds/data/mars_freesurfer.tsv", "microbleeds/review/assets/report.js",
                   "microbleeds/stages/phase.py", "microbleeds/bench/phantoms/simulate.py",
                   "microbleeds/atlas/icbm152_2009a_sym_t1_brain_2mm.nii.gz", "microbleeds/atlas/LICENSE_ICBM152.txt",
                   "microbleeds/group/models.py"):
        assert needed in names, needed
    # the whole-brain sample scan stays small enough to ship (sample_data/make_sample.py)
    assert sum(i.file_size for i in infos if i.filename.startswith("microbleeds/sample_data/")) < 4.0e6
