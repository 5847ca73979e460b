"""microbleeds: find cerebral microbleeds on SWI and GRE-T2* brain MRI.

>>> import microbleeds
>>> result = microbleeds.detect("sub-01_swi.nii.gz")   # doctest: +SKIP
>>> result.write("derivatives/microbleeds")             # doctest: +SKIP
"""

__version__ = "0.1.0"

from .api import DetectionResult, detect  # noqa: E402
from .errors import InputError  # noqa: E402

__all__ = ["detect", "DetectionResult", "InputError", "__version__"]
