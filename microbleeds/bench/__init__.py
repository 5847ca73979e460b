"""The measuring instrument: simulated scans with known truth, and scores against that truth.

``phantoms/`` simulates SWI / GRE phantoms from a susceptibility model and writes them with their
ground truth (:mod:`.truth_table`); :mod:`.dipole` holds the field physics it uses; :mod:`.evaluate`
matches a detector's ``lesions.tsv`` to the truth and scores it. The bench imports only
``microbleeds.contract``, ``microbleeds.io``, ``microbleeds.errors`` and third-party libraries,
never the detector it measures; numba loads on first simulation, not on import.
"""
