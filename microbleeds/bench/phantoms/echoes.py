"""Multi-echo acquisitions of the phantom (``PhantomParams.echo_times_ms``): what is shared between
the echoes, what each has of its own, and which echo the truth's contrast is stated at.

A multi-echo GRE samples the same magnetisation at several echo times within one TR, so:

* the susceptibility map and its field ``dB/B0`` are the same for every echo (the dipole
  convolution is computed once, :func:`.simulate._fine_maps`);
* each echo has its own phase ``gamma dB TE``, T2* decay ``exp(-R2* TE)`` per tissue, intra-voxel
  dephasing (the fine grid is complex-averaged per echo) and hence its own blooming, which grows
  with TE (:func:`.simulate._echo`);
* the receive bias, the receiver phase, the coil array and the motion of a k-space line are the
  same for every echo (all echoes of a line are acquired in the same TR);
* thermal noise is independent between echoes, of one sigma for all (it does not change with
  TE): ``snr`` is the first echo's mean white-matter magnitude / sigma, so the late echoes are
  noisier, as on a scanner.

The truth's noise-free contrast (``source_contrast_noise_free``, the c >= 0.5 criterion of the
accuracy suite) is stated at the *reference echo* (:func:`reference_echo`): the echo nearest half
the white matter's T2* at the phantom's field. A focus's contrast in a T2*-weighted combination
of the echoes is about that of one echo near T2*/2 (weights ``TE exp(-TE/T2*)``, Posse et al.,
MRM 1999 42:87-97), and at 3 T this is the TE of a single-echo SWI (20-23 ms), so the criterion
means what it means on the single-echo phantoms. Every echo's contrast is in the sidecar too
(``source_contrast_noise_free_per_echo``), as is the reference echo and the rule; the sidecar's
``phase_per_ppm_rad`` and the simple SWI are the reference echo's too.
"""

from __future__ import annotations

import numpy as np

from .params import _TISSUE_PROPS, WM

MAX_ECHOES = 32
"""More echoes than this is not a GRE protocol (a parameter error)."""


def echo_times(params) -> list:
    """Echo times (ms) of the acquisition: ``echo_times_ms``, or the single ``te_ms``."""
    tes = [float(t) for t in params.echo_times_ms] if params.echo_times_ms else [float(params.te_ms)]
    return tes


def check(params):
    """ValueError for echo times that are not a multi-echo GRE's (positive, increasing)."""
    tes = [float(t) for t in params.echo_times_ms]
    if not tes:
        return
    if len(tes) < 2 or len(tes) > MAX_ECHOES:
        raise ValueError(f"echo_times_ms must hold 2-{MAX_ECHOES} echo times (ms), got {len(tes)}")
    if min(tes) <= 0 or any(b <= a for a, b in zip(tes, tes[1:])):
        raise ValueError(f"echo_times_ms must be positive and increasing (ms), got {tes}")


def white_matter_t2star_ms(b0_t) -> float:
    """T2* (ms) of the phantom's white matter at ``b0_t`` (R2* scaled linearly with B0 from 3 T)."""
    return 1000.0 / (_TISSUE_PROPS[WM][1] * float(b0_t) / 3.0)


def reference_echo(params) -> int:
    """Index of the echo the truth's contrast is stated at: nearest T2*/2 of white matter (the
    first of two equally near); 0 for a single echo."""
    tes = np.asarray(echo_times(params))
    return int(np.argmin(np.abs(tes - 0.5 * white_matter_t2star_ms(params.b0_t))))


def bias_phase_noise(params, rng, signals, tissue, grid, anat, b0w, bias_field) -> dict:
    """Apply (in place) to every echo the one receive bias, receiver phase and coil array, and
    each echo its own complex Gaussian noise of one sigma (first echo's WM mean / ``snr``)."""
    bias = bias_field(grid.shape, grid.affine, rng, float(params.bias_strength))
    phi0 = rng.uniform(-np.pi, np.pi)
    for signal in signals:
        if bias is not None:
            signal *= bias
        signal *= np.complex64(np.exp(1j * phi0))
    wm = tissue == WM
    means = [float(np.mean(np.abs(s[wm]))) if np.any(wm) else float(np.mean(np.abs(s))) for s in signals]
    sigma = means[0] / float(params.snr) if params.snr is not None and params.snr > 0 else 0.0
    out = {"receiver_phase_rad": float(phi0), "wm_mean_magnitude": means[0],
           "wm_mean_magnitude_per_echo": [round(m, 6) for m in means],
           "snr_definition": "first echo's mean white-matter magnitude / noise sigma (the same sigma every echo)"}
    if int(params.n_coils) > 0:
        from .coils import coil_array, coil_info, receive

        cerebrum = anat.ell[0]
        sens, profile, loop = coil_array(params, grid, cerebrum[:3], cerebrum[3:], b0w, wm)
        for signal in signals:
            receive(signal, sens, profile, sigma, rng, params.coil_normalised)
        return {**out, **coil_info(params, sigma, loop, profile, wm)}
    for signal in signals:
        if sigma > 0:
            noise = rng.standard_normal(size=(2,) + tuple(grid.shape), dtype=np.float32)
            signal += (sigma * noise[0] + 1j * sigma * noise[1]).astype(np.complex64)
    return {**out, "noise_sigma": sigma}


def echo_info(params, contrasts) -> dict:
    """Sidecar facts of a multi-echo phantom: the echo times, the reference echo and its rule,
    each source's noise-free contrast at every echo (``contrasts``: one dict per echo)."""
    ref = reference_echo(params)
    tes = echo_times(params)
    ids = sorted(set().union(*contrasts))
    return {
        "echo_times_ms": tes,
        "contrast_reference_echo": {
            "index": ref, "te_ms": tes[ref],
            "rule": (f"echo nearest T2*/2 of white matter ({white_matter_t2star_ms(params.b0_t):.1f} ms "
                     f"at {float(params.b0_t):g} T); source_contrast_noise_free is this echo's")},
        "source_contrast_noise_free_per_echo": {
            str(n + 1): [round(float(c.get(n, float("nan"))), 4) for c in contrasts] for n in ids},
    }


def bids_sidecar(params) -> dict:
    """The BIDS JSON sidecar of a multi-echo magnitude / phase (``EchoTime`` in s, one per echo)."""
    return {"EchoTime": [round(t / 1000.0, 6) for t in echo_times(params)],
            "MagneticFieldStrength": float(params.b0_t),
            "SeriesDescription": "microbleeds phantom multi-echo GRE (simulated)"}
