"""Accuracy benchmark: microbleeds and two baselines on a suite of simulated phantoms.

    python benchmarks/run_accuracy.py            # the whole suite (phantoms are cached)
    python benchmarks/run_accuracy.py --quick    # 4 phantoms, for a smoke run
    python benchmarks/run_accuracy.py --only hard_3t_3d_multi_echo --echo-compare  # echo combinations

Phantoms come from ``microbleeds.bench.phantoms`` (dipole-field physics, blooming, veins,
calcifications, air-tissue dropout, Rician noise, bias), across field strength, TE, voxel size,
SNR, with and without phase, multi-echo, including healthy controls. Writes
``benchmarks/results/accuracy.md`` and ``accuracy.json`` and prints the table (``--echo-compare``:
``benchmarks/results/echo_combination.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from baselines import BASELINES  # noqa: E402

import microbleeds  # noqa: E402
from microbleeds.bench import evaluate  # noqa: E402
from microbleeds.bench.phantoms import PhantomParams, simulate, write_phantom  # noqa: E402
from microbleeds.bench.phantoms.simulate import SOURCE_CONTRAST_VERSION  # noqa: E402
from microbleeds.bench.truth_table import TRUTH_SUFFIX  # noqa: E402
from microbleeds.contract import LESIONS_FILE  # noqa: E402
from microbleeds.bench.phantoms.params import _BRAIN, CSF, VENTRICLE  # noqa: E402
from microbleeds.io.atomic import atomic_save_nifti, atomic_write_text  # noqa: E402
from microbleeds.io.tables import json_text, tsv_text  # noqa: E402

CACHE = HERE / ".cache"
OUT = HERE / "results"
RUNS = HERE / ".runs"
"""The detector's result folders of this checkout (not in the phantom cache, which worktrees may
share: two runs at once would overwrite each other's folders before scoring)."""
BASE = PhantomParams(fov_mm=(150.0, 180.0, 96.0), n_cmb=10, n_calcifications=3, n_veins=40)

# name: (overrides, use phase, preset)
SUITE = {
    "swi3t_1x1x2_snr30": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 2.0), snr=30.0, seed=11), True, "swi-3t"),
    "swi3t_itp_0.5x0.5x1_snr20": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(0.5, 0.5, 1.0), snr=20.0,
                                       fov_mm=(150.0, 180.0, 60.0), seed=12), True, "itp-3t-swi"),
    "swi3t_te10_snr15": (dict(b0_t=3.0, te_ms=10.0, voxel_size_mm=(0.8, 0.8, 1.6), snr=15.0, seed=13), False, "swi-3t"),
    "swi3t_oblique_snr20": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 1.5), snr=20.0,
                                 oblique_deg=(12.0, 0.0, 8.0), seed=14), True, "swi-3t"),
    "swi3t_snr10": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 2.0), snr=10.0, seed=15), False, "swi-3t"),
    "gre1.5t_0.9x0.9x3_snr20": (dict(b0_t=1.5, te_ms=25.0, voxel_size_mm=(0.9, 0.9, 3.0), snr=20.0, seed=16), False, "gre-1.5t"),
    "gre1.5t_te40_1x1x5_snr25": (dict(b0_t=1.5, te_ms=40.0, voxel_size_mm=(1.0, 1.0, 5.0), snr=25.0, seed=17), True, "gre-1.5t"),
    "gre1.5t_snr15": (dict(b0_t=1.5, te_ms=25.0, voxel_size_mm=(0.9, 0.9, 3.0), snr=15.0, seed=18), False, "gre-1.5t"),
    "swi7t_0.6iso_snr25": (dict(b0_t=7.0, te_ms=15.0, voxel_size_mm=(0.6, 0.6, 0.6), snr=25.0,
                                fov_mm=(150.0, 180.0, 48.0), seed=19), True, "swi-3t"),
    "control_swi3t_snr20": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 2.0), snr=20.0, n_cmb=0, seed=20), True, "swi-3t"),
    "control_gre1.5t_snr20": (dict(b0_t=1.5, te_ms=25.0, voxel_size_mm=(0.9, 0.9, 3.0), snr=20.0, n_cmb=0, seed=21), False, "gre-1.5t"),
    "calc_swi3t_snr25": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 2.0), snr=25.0, n_cmb=8,
                              n_calcifications=8, seed=22), True, "swi-3t"),
    "small_cmb_swi3t_snr25": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(0.8, 0.8, 1.6), snr=25.0, n_cmb=12,
                                   cmb_diameter_range_mm=(0.8, 1.8), seed=23), True, "swi-3t"),
}
EASY = tuple(SUITE)
"""The first suite (seeds 11-23): clean single-coil phantoms; the detector was tuned on them."""

# Hard phantoms: what real scanners and clinics produce (microbleeds.bench.phantoms: lesions.py,
# acquisition.py, coils.py). Each configuration exists twice: a *tuning* seed (31-42), which the
# mimic rules may be looked at and tuned on, and a *held-out* seed (131-142) that is run and
# reported but never looked at while tuning. Names: hard_* (tuning), heldout_* (held out).
_HARD_COMMON = dict(n_veins=120, lobulated_fraction=0.3, n_coils=16, kspace_fraction=(0.85, 0.85),
                    kspace_filter="fermi", ghost_amplitude_mm=0.4)


def _pose(deg):
    """Oblique head pose: grid rotated by ``deg`` (x, y, z) in the head frame and B0 along the
    grid's slice axis (the scanner's), so the head is tilted in the scanner."""
    from microbleeds.bench.phantoms.grid import _rotation

    return dict(oblique_deg=deg, b0_direction=tuple(float(v) for v in _rotation(deg)[:, 2]))


HARD = {
    # 3 T SWI, 16-coil sum of squares, partial k-space (Gibbs), ghosts, CAA-like clusters, CMBs beside veins
    "3t_coils_gibbs_clusters": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 2.0), snr=20.0, n_cmb=6,
                                     n_clusters=2, n_cmb_near_vein=3, with_arteries=True), True, "swi-3t"),
    # cavernomas and cortical superficial siderosis with phase
    "3t_cavernoma_siderosis": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(0.8, 0.8, 1.6), snr=20.0, n_cmb=8,
                                    n_cavernomas=2, n_siderosis=1, with_dural_sinuses=True), True, "swi-3t"),
    # clinical 2D GRE at 1.5 T: 0.45 x 0.45 x 5 mm every 6 mm, acquired at half the matrix, ghosts
    "1.5t_2d_5mm_gap": (dict(b0_t=1.5, te_ms=25.0, voxel_size_mm=(0.45, 0.45, 5.0), slice_gap_mm=1.0,
                             fov_mm=(150.0, 180.0, 72.0), snr=20.0, n_cmb=10, kspace_fraction=(0.5, 0.5),
                             kspace_filter="fermi", ghost_amplitude_mm=0.6, n_coils=8), False, "gre-1.5t"),
    # head tilted in the scanner, 32 coils with prescan normalisation, the other phase convention
    "3t_pose_positive_phase": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 1.5), snr=20.0, n_cmb=8,
                                    n_coils=32, coil_normalised=True, phase_sign=1, n_cmb_near_vein=2,
                                    **_pose((14.0, 0.0, 6.0))), True, "swi-3t"),
    # hard control at 3 T: no CMB; dense veins, sinuses, flow voids, air, calcifications
    "control_3t": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 2.0), snr=20.0, n_cmb=0, n_veins=200,
                        n_calcifications=5, with_arteries=True, with_dural_sinuses=True), True, "swi-3t"),
    # hard control at 1.5 T, 3 mm GRE, magnitude only
    "control_1.5t_3mm": (dict(b0_t=1.5, te_ms=25.0, voxel_size_mm=(0.9, 0.9, 3.0), snr=20.0, n_cmb=0, n_veins=200,
                              n_calcifications=4, with_arteries=True, with_dural_sinuses=True), False, "gre-1.5t"),
    # CAA pattern: few single CMBs, 4 clusters, 4 beside veins
    "3t_caa_clusters": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 2.0), snr=25.0, n_cmb=4,
                             n_clusters=4, n_cmb_near_vein=4, region_weights={"lobar": 1.0}), True, "swi-3t"),
    # 7 T, dense veins, clusters and vein-adjacent CMBs
    "7t_dense_veins": (dict(b0_t=7.0, te_ms=15.0, voxel_size_mm=(0.6, 0.6, 0.6), fov_mm=(150.0, 180.0, 48.0),
                            snr=25.0, n_cmb=8, n_veins=180, n_clusters=1, n_cmb_near_vein=3), True, "swi-3t"),
    # 1.5 T 2D GRE, 3 mm with 0.6 mm gap, a cavernoma, clusters
    "1.5t_2d_3mm_cavernoma": (dict(b0_t=1.5, te_ms=25.0, voxel_size_mm=(0.9, 0.9, 3.0), slice_gap_mm=0.6,
                                   snr=20.0, n_cmb=8, n_cavernomas=1, n_clusters=1, n_cmb_near_vein=2, n_coils=12),
                              False, "gre-1.5t"),
    # the ITP protocol with zero-filled partial k-space and ghosts, the other phase convention
    "3t_itp_gibbs_positive_phase": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(0.5, 0.5, 1.0),
                                         fov_mm=(150.0, 180.0, 60.0), snr=20.0, n_cmb=10, kspace_fraction=(0.6, 0.6),
                                         phase_sign=1, ghost_amplitude_mm=0.5), True, "itp-3t-swi"),
    # deep CMBs in iron-rich nuclei, SNR 15
    "3t_deep_iron_snr15": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 2.0), snr=15.0, n_cmb=10,
                                region_weights={"deep": 0.8, "lobar": 0.2}), True, "swi-3t"),
    # as many calcifications as CMBs, the other phase convention
    "3t_calcifications_positive_phase": (dict(b0_t=3.0, te_ms=20.0, voxel_size_mm=(1.0, 1.0, 2.0), snr=25.0,
                                              n_cmb=8, n_calcifications=8, phase_sign=1), True, "swi-3t"),
}
# Multi-echo acquisitions (issue 10): 4D magnitude (and phase), the echo times in the BIDS sidecar
# beside them; the detector combines the echoes itself (microbleeds.bench.phantoms.echoes). The
# truth's noise-free contrast is stated at the echo nearest T2*/2 of white matter (23 ms at 3 T,
# 45 ms at 1.5 T), every echo's in the sidecar.
ECHOES_3T_3D = (5.0, 11.0, 17.0, 23.0, 29.0, 35.0)
ECHOES_2D = tuple(round(3.0 + 42.0 * n / 9, 1) for n in range(10))  # 3.0 ... 45.0 ms
HARD.update({
    # 3 T 3D multi-echo GRE: 6 echoes 5-35 ms, 16 coils, with phase, a cluster, CMBs beside veins
    "3t_3d_multi_echo": (dict(b0_t=3.0, echo_times_ms=ECHOES_3T_3D, voxel_size_mm=(1.0, 1.0, 2.0), snr=25.0,
                              n_cmb=10, n_clusters=1, n_cmb_near_vein=2), True, "swi-3t"),
    # clinical 2D multi-echo GRE at 1.5 T: 10 echoes 3-45 ms, 0.9 x 0.9 x 4 mm every 5 mm, 12 coils, 70 %
    # of k-space, magnitude only
    "1.5t_2d_multi_echo": (dict(b0_t=1.5, echo_times_ms=ECHOES_2D, voxel_size_mm=(0.9, 0.9, 4.0), slice_gap_mm=1.0,
                                fov_mm=(150.0, 180.0, 80.0), snr=25.0, n_cmb=10, n_coils=12,
                                kspace_fraction=(0.7, 0.7)), False, "gre-1.5t"),
})
HARD_TUNING_SEED0, HARD_HELDOUT_SEED0 = 31, 131
HELDOUT = ("3t_coils_gibbs_clusters", "1.5t_2d_5mm_gap", "3t_pose_positive_phase", "control_3t",
           "3t_caa_clusters", "1.5t_2d_3mm_cavernoma", "3t_cavernoma_siderosis", "control_1.5t_3mm",
           "3t_3d_multi_echo", "1.5t_2d_multi_echo")
"""Configurations also run on a held-out seed."""
for _n, (_name, (_o, _ph, _pre)) in enumerate(HARD.items()):
    SUITE[f"hard_{_name}"] = (dict(_HARD_COMMON, **_o, seed=HARD_TUNING_SEED0 + _n), _ph, _pre)
    if _name in HELDOUT:
        SUITE[f"heldout_{_name}"] = (dict(_HARD_COMMON, **_o, seed=HARD_HELDOUT_SEED0 + _n), _ph, _pre)
# The two phase conventions on one phantom: the same seed, parameters and magnitude, phase stored
# as -gamma dB TE and as +gamma dB TE (4 echoes 6-30 ms at 3 T, as many calcifications as CMBs):
# the detector must give the same classes (both tuning)
PHASE_PAIR = dict(_HARD_COMMON, b0_t=3.0, echo_times_ms=(6.0, 14.0, 22.0, 30.0), voxel_size_mm=(1.0, 1.0, 2.0),
                  snr=25.0, n_cmb=8, n_calcifications=6, seed=HARD_TUNING_SEED0 + len(HARD))
SUITE["hard_3t_multi_echo_phase_minus"] = (dict(PHASE_PAIR, phase_sign=-1), True, "swi-3t")
SUITE["hard_3t_multi_echo_phase_plus"] = (dict(PHASE_PAIR, phase_sign=1), True, "swi-3t")
MULTI_ECHO = tuple(n for n in SUITE if SUITE[n][0].get("echo_times_ms"))
# Validation seeds (231-244): a third draw of every hard configuration, for checking that a change
# made on the tuning seeds carries over before the held-out seeds are run. Not in the suite's run or
# tables (``--validation`` or ``--only valid_...`` runs them); looked at freely, never tuned on alone.
HARD_VALIDATION_SEED0 = 231
VALIDATION = {f"valid_{_name}": (dict(_HARD_COMMON, **_o, seed=HARD_VALIDATION_SEED0 + _n), _ph, _pre)
              for _n, (_name, (_o, _ph, _pre)) in enumerate(HARD.items())}
SPECS = {**SUITE, **VALIDATION}
"""Every phantom this script knows: the suite and the validation seeds."""
GROUPS = {"easy (tuning)": [n for n in SUITE if n in EASY],
          "hard (tuning)": [n for n in SUITE if n.startswith("hard_")],
          "hard (held out)": [n for n in SUITE if n.startswith("heldout_")],
          "hard (validation)": list(VALIDATION)}
QUICK = ("swi3t_1x1x2_snr30", "gre1.5t_0.9x0.9x3_snr20", "control_swi3t_snr20", "calc_swi3t_snr25")


def phantom_files(name):
    """Simulate (once; cached) and return the phantom's file paths."""
    folder = CACHE / "phantoms"
    paths = {"magnitude": folder / f"{name}_mag.nii.gz", "phase": folder / f"{name}_phase.nii.gz",
             "truth_tsv": folder / f"{name}{TRUTH_SUFFIX}"}
    if SPECS[name][0].get("echo_times_ms"):  # the echo times the detector reads, beside the 4D magnitude
        paths["magnitude_sidecar"] = folder / f"{name}_mag.json"
    fresh = _cache_matches(folder / f"{name}.json", replace(BASE, **SPECS[name][0]))
    if not fresh or not all(p.is_file() for p in paths.values()):
        folder.mkdir(parents=True, exist_ok=True)
        params = replace(BASE, **SPECS[name][0])
        phantom = simulate(params)
        written = write_phantom(phantom, folder, name)
        _save_tissue(phantom, tissue_path(name))
        paths = {k: Path(written[k]) for k in paths}
    return paths


def tissue_path(name):
    return CACHE / "phantoms" / f"{name}_tissue.nii.gz"


def _save_tissue(phantom, path):
    import nibabel as nib

    atomic_save_nifti(nib.Nifti1Image(phantom.tissue.astype(np.int16), phantom.affine), path)


def tissue_of(name):
    """The phantom's tissue classes at its voxel centres (the simulator's truth, acquisition grid),
    simulated again (seeded: the same phantom) when the cache has none or an older one."""
    import nibabel as nib

    files = phantom_files(name)
    path = tissue_path(name)
    if not path.is_file() or path.stat().st_mtime < files["magnitude"].stat().st_mtime:
        _save_tissue(simulate(replace(BASE, **SPECS[name][0])), path)
    return np.asarray(nib.load(path).dataobj)


def _cache_matches(sidecar, params):
    """True if a cached phantom's sidecar was simulated with ``params`` (its field of view and
    centre as resolved) and has the facts the scoring reads."""
    if not sidecar.is_file():
        return False
    side = json.loads(sidecar.read_text())
    if "intracranial_volume_ml" not in side or side.get("source_contrast_version") != SOURCE_CONTRAST_VERSION:
        return False
    cached = PhantomParams.from_dict(side["parameters"])
    return replace(cached, fov_mm=params.fov_mm or cached.fov_mm, centre_mm=params.centre_mm or cached.centre_mm) == \
        replace(params, fov_mm=params.fov_mm or cached.fov_mm, centre_mm=params.centre_mm or cached.centre_mm) and \
        tuple(cached.fov_mm) == tuple(params.fov_mm or cached.fov_mm)


def run_microbleeds(name, files, use_phase, preset, overrides=None):
    # the phantoms store phase = -gamma dB TE (their JSON says so): convention -1, given as a site
    # that knows its scanner would give it (the estimate from veins is reported in the summary)
    sign = int(SPECS[name][0].get("phase_sign", -1))  # as the phantom's sidecar states it
    extra = {"phase": files["phase"], "phase_sign": sign} if use_phase else {}
    result = microbleeds.detect(files["magnitude"], pipeline=preset, **extra, **(overrides or {}))
    return result.write(RUNS / "microbleeds", name)


def run_baseline(method, name, files):
    folder = CACHE / "results" / method / name
    if (folder / LESIONS_FILE).is_file() and (folder / "seconds.txt").is_file():
        return folder  # baselines do not change between runs: cached with their run time
    start = time.perf_counter()
    rows = BASELINES[method](files["magnitude"])
    seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / LESIONS_FILE, tsv_text(rows, ("lesion_id", "x_mm", "y_mm", "z_mm", "diameter_mm")))
    atomic_write_text(folder / "seconds.txt", f"{seconds:.3f}\n")  # last: marks the cache entry complete
    return folder


def snr_of(name):
    return SPECS[name][0]["snr"]


def score(method, names, folders):
    pairs = [(n, phantom_files(n)["truth_tsv"], folders[n]) for n in names]
    return evaluate.evaluate_pairs(pairs)


def sidecar(name):
    return json.loads((CACHE / "phantoms" / f"{name}.json").read_text())


def _contrast_ok(match, threshold=0.5):
    """True if a true CMB's noise-free contrast (phantom sidecar) is >= ``threshold``."""
    c = sidecar(match["scan"]).get("source_contrast_noise_free", {}).get(str(match["truth_id"]))
    return c is None or c >= threshold


def _sens(result, lo, hi, contrast=None):
    tp = n = 0
    for match in result.matches:
        if match.get("truth_type") != "cmb" or match.get("match_type") not in ("tp", "fn"):
            continue
        if lo <= float(match["true_diameter_mm"]) < hi and (contrast is None or _contrast_ok(match, contrast)):
            n += 1
            tp += match["match_type"] == "tp"
    return tp / n if n else None


def _extended(result, kind):
    """Fraction of the ``kind`` mimics (cavernoma, siderosis) reported as a CMB at least once."""
    n = rep = 0
    for match in result.matches:
        if match.get("truth_type") != kind:
            continue
        if match["match_type"] == f"{kind}_not_reported":
            n += 1
    ids = {(m["scan"], m["truth_id"]) for m in result.matches if m["match_type"] == f"fp_{kind}"}
    rep = len(ids)
    return rep / (n + rep) if n + rep else None


def mask_check(names, folders, tolerance=0.15):
    """Per scan: the mask's volume / the truth's intracranial volume in the field of view, and, against
    the phantom's tissue classes, the brain tissue outside the mask and the mask outside the
    intracranial space (scalp, skull, air), ml."""
    out = {}
    for name in names:
        summary = json.loads((folders[name] / "summary.json").read_text())
        truth = sidecar(name)["intracranial_volume_ml"]
        vol = summary.get("brain_mask", {}).get("volume_ml") or summary.get("brain_volume_ml")
        out[name] = {"mask_ml": vol, "truth_ml": truth, "ratio": vol / truth if truth else None,
                     "warnings": len(summary.get("warnings", []))}
        out[name].update(_mask_against_tissue(name, folders[name] / "mask.nii.gz"))
    return out


def _mask_against_tissue(name, mask_path):
    import nibabel as nib

    img = nib.load(mask_path)
    mask = np.asarray(img.dataobj) > 0
    tissue = tissue_of(name)
    if tissue.shape != mask.shape:
        return {}
    ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    brain = np.isin(tissue, _BRAIN)
    intracranial = brain | np.isin(tissue, (CSF, VENTRICLE))
    return {"brain_outside_ml": round(float((brain & ~mask).sum()) * ml, 1),
            "outside_intracranial_ml": round(float((mask & ~intracranial).sum()) * ml, 1)}


def summarise(result, names):
    pooled = result.pooled
    by_bin = pooled.get("by_diameter", {})
    return {
        "sens_>=1.5_c>=0.5": _sens(result, 1.5, np.inf, 0.5),
        "sens_1.0-1.5_c>=0.5": _sens(result, 1.0, 1.5, 0.5),
        "cavernomas_as_cmb": _extended(result, "cavernoma"),
        "siderosis_as_cmb": _extended(result, "siderosis"),
        "scans": len(names),
        "sensitivity": pooled.get("sensitivity"),
        "precision": pooled.get("precision"),
        "f1": pooled.get("f1"),
        "fp_per_scan": pooled.get("fp_per_scan"),
        "fp_per_scan_mag_calc_apart": _fp_mag_calcifications_apart(result),
        "sens_1.0-1.5": _bin(by_bin, "1.0-1.5"),
        "sens_>=1.5": _ge15(result),
        "calcifications_as_cmb": pooled.get("calcification_fraction"),
        "calcifications_as_cmb_with_phase": _calc_with_phase(result),
        "by_diameter": by_bin,
    }


def _fp_mag_calcifications_apart(result):
    """FP per scan, not counting calcifications reported on magnitude-only phantoms.

    Without phase a calcification's dephasing is a microbleed's (issue 10: keep it, flag the
    count "calcifications not excluded"); this figure sits beside ``fp_per_scan``, never instead.
    """
    if not result.scans:
        return None
    fp = sum(s["fp"] - (0 if SPECS[s["scan"]][1] else s["calcifications_reported"]) for s in result.scans)
    return fp / len(result.scans)


def _calc_with_phase(result):
    """Fraction of calcifications reported as CMBs, over the phantoms run with phase."""
    reported = n = 0
    for match in result.matches:
        if match.get("truth_type") != "calcification" or not SPECS[match["scan"]][1]:
            continue
        n += 1
        reported += match.get("match_type") == "fp_calcification"
    return reported / n if n else None


def _bin(by_bin, label):
    entry = by_bin.get(label)
    return entry.get("sensitivity") if isinstance(entry, dict) else entry


def _ge15(result):
    tp = n = 0
    for match in result.matches:
        if match.get("truth_type") != "cmb" or match.get("match_type") not in ("tp", "fn"):
            continue
        if float(match["true_diameter_mm"]) >= 1.5:
            n += 1
            tp += match["match_type"] == "tp"
    return tp / n if n else None


def _value(text):
    """A ``--set`` value: true / false, a number, else the text (``echo=rss``)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text)
    except ValueError:
        return text


def fmt(v):
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.2f}" if isinstance(v, float) else str(v)


def echo_choices(name, files):
    """The echo combinations compared on a multi-echo phantom: (label, ``echo`` value) pairs: the
    T2*-weighted default (``auto``), the rss, the single echo nearest T2*/2 (T2* as the detector
    fits it) and the last echo (the ``gre-1.5t`` preset's choice)."""
    import nibabel as nib

    from microbleeds.stages.load import default_t2star, estimate_t2star

    tes = list(SPECS[name][0]["echo_times_ms"])
    data = np.asarray(nib.load(files["magnitude"]).dataobj, dtype=np.float32)
    t2s = estimate_t2star(data, tes) or default_t2star(SPECS[name][0].get("b0_t"))
    nearest = int(np.argmin(np.abs(np.asarray(tes) - t2s / 2.0)))
    return t2s, [("auto", "auto"), ("rss", "rss"), (f"echo {nearest + 1} ({tes[nearest]:g} ms ~ T2*/2)", nearest),
                 (f"last ({tes[-1]:g} ms)", "last")]


def _counts(result):
    """(TP, FP, FN) over the CMBs of an evaluation, and the sensitivity >= 1.5 mm at c >= 0.5."""
    tp = sum(s["tp"] for s in result.scans)
    return tp, sum(s["fp"] for s in result.scans), sum(s["fn"] for s in result.scans), _sens(result, 1.5, np.inf, 0.5)


def compare_echoes(names):
    """Detect each multi-echo phantom with every :func:`echo_choices` combination (and, on the
    phase-convention pair, with the sign estimated); markdown lines of the side-by-side table."""
    lines = ["| phantom | fitted T2* ms | combination | TP | FP | FN | sens >= 1.5, c >= 0.5 | echoes (summary) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in [n for n in names if n in MULTI_ECHO]:
        files = phantom_files(name)
        t2s, choices = echo_choices(name, files)
        if SPECS[name][1]:  # with phase: also the convention estimated from the image, not given
            choices.append(("auto, phase sign estimated", "auto"))
        for label, echo in choices:
            estimated = label.endswith("estimated")
            folder = RUNS / "microbleeds_echo" / (str(echo) + ("_sign_estimated" if estimated else ""))
            overrides = {"echo": echo}
            sign = None if estimated else int(SPECS[name][0].get("phase_sign", -1))
            extra = {"phase": files["phase"], "phase_sign": sign} if SPECS[name][1] else {}
            out = microbleeds.detect(files["magnitude"], pipeline=SPECS[name][2], **extra, **overrides).write(folder, name)
            result = evaluate.evaluate_pairs([(name, files["truth_tsv"], out)])
            summary = json.loads((out / "summary.json").read_text())
            how = summary["input"]["echoes"]
            if estimated:
                how += f"; sign {summary.get('phase', {}).get('phase_sign')}"
            tp, fp, fn, sens = _counts(result)
            lines.append(f"| {name} | {t2s:.0f} | {label} | {tp} | {fp} | {fn} | {fmt(sens)} | {how} |")
        print(f"compared {name}", file=sys.stderr)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 phantoms only")
    parser.add_argument("--only", default="", help="comma-separated phantom names or prefixes (e.g. hard_)")
    parser.add_argument("--validation", action="store_true",
                        help="also the validation seeds (valid_*: a third draw of every hard configuration)")
    parser.add_argument("--methods", default="microbleeds,blob_log_frangi,threshold")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a detection parameter for every phantom (e.g. min_contrast=0.3)")
    parser.add_argument("--echo-compare", action="store_true",
                        help="on the multi-echo phantoms: auto vs rss vs the echo nearest T2*/2 vs the last echo")
    args = parser.parse_args(argv)
    names = list(QUICK if args.quick else SUITE) + (list(VALIDATION) if args.validation else [])
    if args.only:
        keys = args.only.split(",")
        names = [n for n in SPECS if any(n == k or n.startswith(k) for k in keys)]
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.echo_compare:
        lines = compare_echoes(names)
        OUT.mkdir(exist_ok=True)
        atomic_write_text(OUT / "echo_combination.md", "\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    methods = args.methods.split(",")
    folders = {m: {} for m in methods}
    seconds = {m: 0.0 for m in methods}
    for name in names:
        files = phantom_files(name)
        for method in methods:
            start = time.perf_counter()
            if method == "microbleeds":
                folders[method][name] = run_microbleeds(name, files, SPECS[name][1], SPECS[name][2], overrides)
                seconds[method] += time.perf_counter() - start
            else:
                folders[method][name] = run_baseline(method, name, files)
                seconds[method] += float((folders[method][name] / "seconds.txt").read_text())
        print(f"done {name}", file=sys.stderr)
    hi_snr = [n for n in names if snr_of(n) >= 15]
    subsets = {"snr>=15": hi_snr, "all": names}
    for group, members in GROUPS.items():
        chosen = [n for n in names if n in members]
        if chosen:
            subsets[group] = chosen
    table = {}
    for method in methods:
        result = score(method, names, folders[method])
        table[method] = {key: summarise(result if key == "all" else score(method, sub, folders[method]), sub)
                         for key, sub in subsets.items()}
        table[method].update({"seconds_per_scan": seconds[method] / len(names),
                              "per_scan": {s["scan"]: {k: s.get(k) for k in ("tp", "fp", "fn", "sensitivity")}
                                           for s in result.scans}})
        for s in result.scans:
            table[method]["per_scan"][s["scan"]]["calcifications_reported"] = s["calcifications_reported"]
        if method == "microbleeds":
            table[method]["mask"] = mask_check(names, folders[method])
    lines = _markdown(table, names, hi_snr, subsets)
    OUT.mkdir(exist_ok=True)
    stem = "accuracy" if not (args.only or args.quick or args.validation) else "accuracy_subset"  # a subset never overwrites the suite's
    atomic_write_text(OUT / f"{stem}.md", "\n".join(lines) + "\n")
    atomic_write_text(OUT / f"{stem}.json", json_text(table))  # NaN as null: strict JSON
    print("\n".join(lines))


def _markdown(table, names, hi_snr, subsets):
    cols = ("sensitivity", "sens_>=1.5", "sens_1.0-1.5", "sens_>=1.5_c>=0.5", "sens_1.0-1.5_c>=0.5", "precision",
            "fp_per_scan", "fp_per_scan_mag_calc_apart", "calcifications_as_cmb", "calcifications_as_cmb_with_phase", "cavernomas_as_cmb",
            "siderosis_as_cmb")
    lines = [f"Suite: {len(names)} phantoms ({len(hi_snr)} at SNR >= 15). Pooled over scans. "
             "`c>=0.5`: CMBs whose noise-free contrast (phantom sidecar) is at least 0.5.", "",
             "| method | scans | " + " | ".join(cols) + " | s/scan |",
             "|---|---|" + "---|" * len(cols) + "---|"]
    notes = ["", "`fp_per_scan_mag_calc_apart`: FP per scan without the calcifications reported on the "
             "magnitude-only phantoms (flagged \"calcifications not excluded\" in their summaries); "
             "`fp_per_scan` counts them."]
    for method, entry in table.items():
        for subset in subsets:
            row = entry[subset]
            lines.append(f"| {method} ({subset}) | {row['scans']} | " + " | ".join(fmt(row[c]) for c in cols)
                         + f" | {entry['seconds_per_scan']:.1f} |")
    lines += notes
    mb = table.get("microbleeds", {})
    lines += ["", "Per scan (microbleeds): TP / FP / FN; mask volume / truth intracranial volume in the field of view; "
              "against the phantom's tissue classes, brain outside the mask and mask outside the intracranial "
              "space (scalp, skull, air)", ""]
    for scan, v in mb.get("per_scan", {}).items():
        m = mb.get("mask", {}).get(scan, {})
        ratio = f"{m['ratio']:.2f}" if m.get("ratio") else "n/a"
        calc = f" ({v['calcifications_reported']} of the FP calcifications)" if v.get("calcifications_reported") else ""
        tissue = (f", brain outside {m['brain_outside_ml']:.0f} ml, outside intracranial {m['outside_intracranial_ml']:.0f} ml"
                  if "brain_outside_ml" in m else "")
        lines.append(f"- {scan}: {v['tp']} / {v['fp']} / {v['fn']}{calc}; mask {ratio}{tissue}"
                     + (f" ({m['warnings']} warning(s))" if m.get("warnings") else ""))
    if mb.get("mask"):
        within = sum(abs(m["ratio"] - 1) <= 0.15 for m in mb["mask"].values() if m.get("ratio"))
        lines += ["", f"Masks within 15 % of the truth's intracranial volume: {within} of {len(mb['mask'])}."]
        measured = [m for m in mb["mask"].values() if "brain_outside_ml" in m]
        if measured:
            lines += [f"Against the tissue classes ({len(measured)} scans): brain outside the masks "
                      f"{sum(m['brain_outside_ml'] for m in measured):.0f} ml, masks outside the intracranial space "
                      f"{sum(m['outside_intracranial_ml'] for m in measured):.0f} ml."]
    return lines


if __name__ == "__main__":
    main()
