"""Regenerate the bundled sample scan: ``python sample_data/make_sample.py`` (needs nilearn, the
``anatomy`` extra, for the ICBM152 anatomy; nothing is downloaded).

A simulated whole-brain 3 T SWI acquisition from :mod:`microbleeds.bench.phantoms`, chosen from the
physics of a typical clinical protocol, with the voxel size set by what the package can ship:

* anatomy: the ICBM152 2009 grey / white matter (``anatomy="mni"``) scaled by 0.92, an average
  adult brain (1.35 l of grey and white matter; the template's own brain is larger), in MNI
  position (no head tilt);
* 3 T, TE 20 ms (the usual 3 T SWI echo; the ITP study's protocol is TR/TE 28/20 ms);
* axial 3D slab of 120 x 148 x 70 voxels of 1.2 x 1.2 x 2.0 mm (144 x 178 x 140 mm): the whole
  brain from the foramen magnum to the vertex; the scalp is partly outside the in-plane field of
  view. Clinical SWI uses 0.5-1 mm in-plane, 1.5-2 mm slices; 1.2 mm in-plane keeps the four
  files below 4 MB (the noise of magnitude and phase does not compress: ~1.5 bytes per voxel each);
* a 16-channel receive array combined by sum of squares with prescan normalisation (non-central
  chi noise floor, varying in space), SNR 30 in white matter, a +-20 % receive bias;
* 8 microbleeds (1.5-5 mm, 0.5-1.5 ppm; lobar, deep and infratentorial targets), 2 calcifications
  (diamagnetic: dark like a microbleed, opposite phase), 100 vein trees (a third of them running
  through the slices), iron-rich deep nuclei, a frontal air-tissue interface;
* stored as 12-bit integers with scale factors (magnitude, phase in radians), as scanners do.

Deterministic (seed 2026): the same files bit for bit. The truth (``sample_truth.tsv``, MARS
region, lobe and hemisphere of every source, and the label map ``sample_truth.nii.gz``) and all
parameters are written beside the images (``sample.json``).
"""

from pathlib import Path

from microbleeds.bench.phantoms import make_sample as _make_phantom_sample
from microbleeds.bench.phantoms import sample_params  # noqa: F401  (the parameters, one definition)

SEED = 2026


def make_sample(out_dir, name: str = "sample", seed: int = SEED) -> dict:
    """Simulate and write the sample into ``out_dir`` (magnitude, phase, truth table and label map,
    sidecar); returns the paths written."""
    return _make_phantom_sample(out_dir, name, seed, include_swi=False)


if __name__ == "__main__":
    for path in make_sample(Path(__file__).resolve().parent).values():
        print(path)
