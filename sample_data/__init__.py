"""The bundled sample scan (a simulated whole-brain 3 T SWI, magnitude and phase, with its ground
truth), installed with the package as ``microbleeds.sample_data`` so that ``microbleeds detect``
works after a plain ``pip install``. Regenerate with ``python sample_data/make_sample.py``."""
