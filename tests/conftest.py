import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import head_volume  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
BALLS = (((30, 40, 20), 3.0, 0.7), ((60, 50, 24), 2.5, 0.7), ((48, 30, 14), 4.0, 0.8), ((62, 66, 30), 3.0, 0.7))
TUBES = (((20, 20, 10), (70, 70, 14), 1.0, 0.6), ((50, 70, 5), (52, 72, 40), 1.2, 0.6))


@pytest.fixture(scope="session", autouse=True)
def own_cache_dir(tmp_path_factory):
    """The on-disk caches (the composite atlas) in the test session's folder, not the user's home."""
    before = os.environ.get("MICROBLEEDS_CACHE_DIR")
    os.environ["MICROBLEEDS_CACHE_DIR"] = str(tmp_path_factory.mktemp("microbleeds_cache"))
    yield
    if before is None:
        os.environ.pop("MICROBLEEDS_CACHE_DIR", None)
    else:
        os.environ["MICROBLEEDS_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def painted():
    """A painted head: 4 dark balls and 2 dark tubes, 1 x 1 x 2 mm voxels."""
    volume, affine, truth = head_volume(balls=BALLS, tubes=TUBES, snr=25, seed=1)
    return volume, affine, truth


@pytest.fixture()
def painted_file(tmp_path, painted):
    volume, affine, _ = painted
    path = tmp_path / "sub-01_swi.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path


def world(affine, ijk):
    return nib.affines.apply_affine(affine, np.asarray(ijk, float))
