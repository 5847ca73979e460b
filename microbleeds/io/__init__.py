"""Every file format once: ``nifti`` (read with checks, reorient, reproducible write),
``phase_file`` (phase to radians), ``sidecar`` (BIDS JSON, the one echo-time rule), ``tables``
(TSV and JSON, one n/a rule), ``atomic`` (atomic writes), ``results`` (a scan's result folder).

Imports only ``contract`` and ``errors`` from the package, so every room can use it.
"""
