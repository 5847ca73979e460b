"""Physical phantoms of SWI / GRE-T2* brain scans with known cerebral microbleeds.

The images are simulated from a susceptibility model, not painted:

1. an analytic head (ellipsoidal cerebrum with a sulcated cortical grey-matter ribbon, white
   matter, lateral and third ventricles, iron-rich deep grey nuclei, brainstem and cerebellum
   below a tentorium, CSF / skull / scalp layers, air outside and an optional air-filled sinus
   pocket frontal-basal) is sampled on a *fine grid* (the acquisition grid oversampled by an
   integer factor per axis, default about 0.6 mm), together with branching curved veins
   (anti-aliased tubes, 0.4-1.5 mm diameter);
2. the relative field ``dB/B0`` of this susceptibility map is computed by the k-space dipole
   convolution (:func:`microbleeds.bench.dipole.field_from_chi`, B0 direction configurable);
3. the GRE signal ``M0 exp(-R2* TE) exp(i phase)`` is computed on the fine grid and
   complex-averaged into the acquisition voxels, so intra-voxel dephasing happens as on a
   scanner;
4. microbleeds (CMBs, paramagnetic spheres) and calcifications (diamagnetic spheres) are added
   with their *analytic* sphere field evaluated on an adaptive sub-voxel grid of a local patch
   around each source: the acquisition voxel is multiplied by ``mean(w exp(i phi))`` (``w`` the
   signal left inside the sphere). Their dark "blooming" footprint therefore grows with
   ``chi * B0 * TE`` and with voxel size, and a calcification of the same ``|chi|`` and size has
   the same magnitude footprint and the opposite phase;
5. a smooth multiplicative receive-bias field, a constant receiver phase and complex Gaussian
   noise (Rician magnitude) are added; ``SNR = mean white-matter magnitude / sigma``.

What real scanners and clinics add (all off by default; each feature draws from its own random
stream, so a phantom without it is the same bit for bit): :mod:`.coils` (8-32 channel sum of
squares), :mod:`.acquisition` (zero-filled partial k-space with Hamming / Fermi apodisation: Gibbs
ringing; motion ghosts along the phase-encode axis; 2D slices with gaps, simulated on sub-slices;
the other phase convention) and :mod:`.lesions` (cavernous malformations and cortical superficial
siderosis painted into the susceptibility map, arterial flow voids, dural sinuses; clustered CMBs,
CMBs beside veins, lobulated CMBs), and :mod:`.echoes` (multi-echo acquisitions, 2-32 echoes
from the one field, each with its own TE and noise, 4D files with the echo times in their BIDS
sidecars). The sidecar states each source's noise-free contrast as imaged
(``source_contrast_noise_free``, on its own voxels: ``source_contrast_version`` 2), the hard CMBs' ``cmb_context`` and the intracranial volume in the
field of view.

Sign convention
---------------
``phase = -gamma * dB * TE`` (``gamma = 2 pi * 42.577 MHz/T``). A paramagnetic source
(CMB, vein, iron; ``chi > 0``) raises the field along B0 (``dB > 0`` on its B0 axis just
outside it), so its phase there is **negative**; its field is 0 at its centre (inside a sphere,
Lorentz-corrected) and positive phase appears in its equatorial plane. A diamagnetic
calcification gives the opposite signs. This is the "right-handed" convention in which SWI
uses a *negative*-phase mask (Haacke et al. 2004). Phases are wrapped to [-pi, pi].

Susceptibilities are in ppm (SI) relative to water / CSF; CMB and calcification ``chi`` are
relative to the tissue around them.

Ground truth
------------
``<name>_truth.tsv`` (columns :data:`TRUTH_COLUMNS`, see docs/contract.md): one row per CMB
and calcification with the world (RAS+ mm) centre, the *true* diameter (mm, not the blooming
size) and chi (ppm). ``region`` is the MARS class (``lobar | deep | infratentorial``;
Gregoire et al. 2009) at the source centre, on the phantom's own tissue model
(``head._mni_mars_volume`` for the MNI head: deep grey grown from the nucleus ellipsoids along
the ICBM152 grey matter, the cerebellum bounded by the tentorial gap of its tissue maps, the
corpus callosum; the analytic head: its tissue classes); the images never use these classes:

* cortex -> ``lobar``; basal ganglia / thalamus / corpus callosum -> ``deep``; brainstem /
  cerebellum -> ``infratentorial``;
* cerebral white matter -> ``lobar`` if juxtacortical, i.e. the nearest point of the source
  sphere (centre distance minus radius) is within :data:`~microbleeds.contract.MARS_JUXTACORTICAL_MM`
  (3 mm) of cortical grey matter (any cortex: the outer ribbon, the cortex lining sulci and the
  interhemispheric fissure) and nearer to cortex than to the basal ganglia / thalamus, with the
  lobe of the nearest cortex; otherwise ``deep`` (deep / periventricular white matter). This is
  the rule of the detector (``microbleeds.stages.locate``, default ``juxtacortical_mm`` 3 mm),
  measured here on the phantom's own tissue model (sampled every 0.2 mm around the source), not
  on a label map, and written apart from the detector's code.

``lobe`` is the lobe for lobar sources (``frontal | parietal | temporal | occipital``, from a
geometric rule on the position in the cerebrum) and the structure otherwise (``basal_ganglia |
thalamus | corpus_callosum | deep_white_matter | brainstem | cerebellum``); ``hemisphere`` is ``left | right |
midline`` (centre |x| < 2 mm). Random sources are centred in brain tissue (never in sulcal CSF or
a ventricle), at least max(3 mm, radius + 2 mm) inside the brain surface, do not overlap (centre
distance >= sum of radii + 3 mm) and keep radius + 1.5 mm from every vein wall. Their
*placement* aims at the requested ``region_weights`` with a simpler target rule (white matter
less than 14 mm, times ``head_scale``, below the outer brain surface counts as lobar; 10 mm at
most for lobar targets), kept so that the images of a seed do not change; the recorded region
of a white-matter source is the MARS one above, so it can differ from the target.
``<name>_truth.nii.gz`` labels the acquisition voxels at least half inside each source plus
the voxel holding its centre. With ``write_phantom(..., include_labels=True)``,
``<name>_dseg.nii.gz`` is a FreeSurfer aparc+aseg-style label map of the phantom
(:func:`segmentation`) for ``detect(labels=...)``; its cortex parcels and sides follow the same
lobe / hemisphere rules as the truth.

Tissue parameters (3 T values; R2* is scaled linearly with B0)
--------------------------------------------------------------
===================  =====  ===========  =========
tissue               M0     R2* (1/s)    chi (ppm)
===================  =====  ===========  =========
CSF / ventricles     1.00   3            0
cortical GM          0.85   17           +0.03
white matter         0.70   22           -0.025
caudate              0.85   25           +0.07
putamen              0.85   30           +0.09
globus pallidus      0.80   45           +0.15
thalamus             0.80   22           +0.05
brainstem            0.75   22           -0.015
red nucleus / SN     0.80   45           +0.13
cerebellar GM / WM   0.85 / 0.70  18 / 22  +0.02 / -0.02
dentate nucleus      0.80   40           +0.10
venous blood         0.85   45           +0.45
skull                0.05   300          0 (omitted)
scalp                0.90   30           0
sinus air            0      0            +9.4
===================  =====  ===========  =========

Sources: Haacke et al., "Susceptibility-weighted imaging: technical aspects and clinical
applications", AJNR 2009 30:19-30 (SWI, vein and iron contrast, negative-phase mask);
Haacke et al., MRM 2004 52:612-618 (SWI); Yablonskiy & Haacke, MRM 1994 32:749-763 (static
dephasing, sphere and cylinder fields); Schweser et al., NeuroImage 2011 54:2789-2807 and
Deistung et al., NeuroImage 2013 65:299-314 (tissue susceptibilities, deep grey iron);
Wang & Liu, MRM 2015 73:82-101 (QSM review, dipole kernel, sign conventions, air +9.4 ppm);
Peters et al., MRI 2007 25:748-753 (T2* at 1.5/3/7 T); Greenberg et al., Lancet Neurol 2009
8:165-174 (CMB definition, 2-10 mm, blooming) and Gregoire et al., Neurology 2009
73:1759-1766 (MARS: lobar / deep / infratentorial); Salomir et al. 2003 and Marques & Bowtell
2005 (k-space field calculation).

Limitations: the default head is a smooth analytic model (``anatomy="mni"`` uses the ICBM152
2009 GM/WM maps from nilearn, with rule-based deep nuclei / brainstem / cerebellum); the
skull and the head-air boundary carry no susceptibility (their field is smooth in the brain and
would be removed by background-field filtering); no flow, chemical shift or T1 weighting; CMB/calcification factors are applied multiplicatively after averaging the
background (a separable approximation, good while the background varies slowly in a voxel).

Modules
-------
``params`` (:class:`PhantomParams`, :class:`Phantom`, tissue classes and properties), ``head``
(analytic and MNI heads), ``grid`` (acquisition, margin and fine grids), ``veins``, ``truth``
(MARS region of each source, :func:`segmentation`), ``sources`` (explicit and random CMBs /
calcifications, their blooming), ``simulate`` (:func:`simulate`, :func:`simple_swi`), ``write``
(files, :func:`make_sample`), ``echoes`` (multi-echo), ``real`` (:func:`insert_cmbs` into real images) and ``kernels``
(numba, loaded on first use).
"""

from ..truth_table import TRUTH_COLUMNS
from .params import (
    AIR,
    BRAINSTEM,
    CAUDATE,
    CB_GM,
    CB_WM,
    CSF,
    DENTATE,
    GM,
    MIDBRAIN,
    PALLIDUM,
    PUTAMEN,
    SCALP,
    SINUS,
    SKULL,
    THALAMUS,
    TISSUE_LABELS,
    VENTRICLE,
    WM,
    Phantom,
    PhantomParams,
)
from .real import insert_cmbs, load_real_gre
from .simulate import simple_swi, simulate
from .truth import DSEG_LABELS, segmentation
from .write import generate_phantom, make_sample, sample_params, truth_tsv, write_phantom

__all__ = [
    "PhantomParams",
    "Phantom",
    "simulate",
    "segmentation",
    "write_phantom",
    "generate_phantom",
    "insert_cmbs",
    "load_real_gre",
    "make_sample",
    "sample_params",
    "simple_swi",
    "truth_tsv",
    "TISSUE_LABELS",
    "TRUTH_COLUMNS",
    "DSEG_LABELS",
    "AIR", "SCALP", "SKULL", "CSF", "GM", "WM", "CAUDATE", "PUTAMEN", "PALLIDUM", "THALAMUS", "BRAINSTEM",
    "MIDBRAIN", "CB_GM", "CB_WM", "DENTATE", "SINUS", "VENTRICLE",
]
