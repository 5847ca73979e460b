"""Regenerate the bundled sample scan: ``python sample_data/make_sample.py``.

A simulated 3 T SWI-like acquisition (0.75 x 0.75 x 1.5 mm slab, TE 20 ms, SNR 25) from
microbleeds.bench.phantoms: dipole-field blooming of 8 microbleeds (true diameter and susceptibility in
sample_truth.tsv), 2 calcifications (diamagnetic: same magnitude, opposite phase), branching veins,
iron-rich nuclei, an air-tissue dropout, bias field and Rician noise. Deterministic (seed 2026).
"""

from pathlib import Path

from microbleeds.bench.phantoms import make_sample

if __name__ == "__main__":
    for path in make_sample(Path(__file__).resolve().parent, name="sample", include_swi=False).values():
        print(path)
