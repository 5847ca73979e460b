"""microbleeds: find cerebral microbleeds on SWI and GRE-T2* brain MRI."""

__version__ = "0.1.0"
