"""The house keeps its shape: import-linter contracts (pyproject.toml) and lazy imports."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numba", "SimpleITK", "skimage")


def test_import_contracts_hold():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def _loaded_after(statement):
    code = f"import sys; {statement}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip()


@pytest.mark.parametrize("statement", [
    "import microbleeds",
    "import microbleeds.review.decisions, microbleeds.review.page, microbleeds.review.cohort, "
    "microbleeds.review.images, microbleeds.review.screenshot",
    "import microbleeds.bench.evaluate, microbleeds.bench.phantoms",
    "from microbleeds.cli import build_parser; build_parser()",
])
def test_light_imports_load_no_detector(statement):
    assert _loaded_after(statement) == ""


def test_the_detector_loads_on_first_use():
    assert "numba" in _loaded_after("import microbleeds; microbleeds.detect")
