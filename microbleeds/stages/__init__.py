"""The detector, one module per stage in the data's order: load, prepare, seeds, segment,
describe, phase, dipole_sign, mimics, locate (with labels and register), tabulate.

``microbleeds.api.detect`` calls them in that order. Stages import ``contract``, ``io``,
``presets``, ``errors`` and each other (no cycles); never ``api``, ``batch``, ``cli``, ``review``
or ``bench`` (import-linter contracts in pyproject.toml).
"""
