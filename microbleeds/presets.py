"""Parameters of a detection run and the named presets (TOML) in ``pipelines/``.

A preset is a TOML file with a ``[pipeline]`` table (``name``, ``version``, ``description``)
and a ``[parameters]`` table whose keys are fields of :class:`Parameters`. Presets install with
the package as ``microbleeds.pipelines``; a path to a TOML file works too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

DEFAULT_PRESET = "swi-3t"


@dataclass
class Parameters:
    """Every tunable of a run. Sizes in mm, intensities relative to local tissue (1 = tissue).

    Diameters are apparent (as measured on the image, blooming included), as in MARS, which
    counts foci up to 10 mm; set ``max_diameter_mm`` to 5 for the narrow definition. Lower ``min_contrast``
    or ``min_cnr`` to find fainter foci (more false positives); lower ``max_elongation`` to
    reject more vessel-like candidates.
    """

    preset: str = DEFAULT_PRESET
    preset_version: str = "1"
    sequence: str = "SWI"
    field_strength_t: float | None = 3.0
    echo_time_ms: float | None = 20.0
    echo: str = "auto"  # multi-echo magnitude: T2*-weighted when the echo times are known, else rss
    # brain mask and normalisation
    bias_correction: bool = False
    mask_opening_mm: float = 4.0  # at least; thick slices get up to 6 (prepare.brain_mask)
    background_sigma_mm: float = 6.0
    # the mask's physiology check (a failed check is a warning in the summary and on stderr):
    # "whole" = the field of view holds the whole brain, "partial" = a slab or partial field of
    # view (no lower volume bound, a mask filling the field of view is accepted), "auto" =
    # partial where the mask reaches a face of the field of view
    brain_coverage: str = "auto"
    brain_volume_min_ml: float = 600.0
    brain_volume_max_ml: float = 2200.0
    # detection and segmentation
    min_diameter_mm: float = 1.0
    max_diameter_mm: float = 10.0
    radius_step_ratio: float = 1.4
    depth_fraction: float = 0.5
    # judge every seed inside a merged region on its own (stages.subfoci): on since session 9, when the
    # whole suite with the stage on gave +4 TP / +1 FP (held out +1 / 0, validation +2 / 0, tuning
    # +1 / +1; benchmarks/README, "Session 9")
    subfoci: bool = True
    shell_mm: float = 1.5
    # mimic rules
    min_contrast: float = 0.25
    min_cnr: float = 6.0
    min_core_depth: float = 0.5
    max_elongation: float = 2.0
    max_elongation_3d: float = 3.0
    max_vesselness: float = 0.7
    max_through_plane_ratio: float = 2.0
    max_halo_elongation: float = 3.0
    min_halo_depth_ratio: float = 0.5  # the halo rule: the line must be at least half as dark as the focus
    max_ring_interior_mm3: float = 15.0  # cavernoma: a dark rim enclosing more than this
    min_inplane_diameter_mm: float = 1.0  # thick slices: a focus must be this wide in-plane
    max_centroid_shift_mm: float = 1.5
    edge_margin_mm: float = 1.5
    definite_confidence: float = 0.8
    reject_calcifications: bool = True
    require_dipole: bool = True  # with phase (trusted convention): a focus must show a paramagnetic dipole
    # anatomical location (MARS)
    use_atlas: bool = True  # without a segmentation: the registered atlas (off: --no-atlas)
    juxtacortical_mm: float = 3.0
    periventricular_mm: float = 10.0
    # phase
    phase_sign: int | None = None
    highpass_window_vox: int = 48

    def radii_mm(self):
        """Radii (mm) the FRST scans: half the smallest to half the largest diameter, in
        geometric steps of ``radius_step_ratio`` (the transform's votes spread over about a
        voxel, so fine steps add little at large radii)."""
        lo, hi = self.min_diameter_mm / 2, self.max_diameter_mm / 2
        radii = [lo]
        while radii[-1] * self.radius_step_ratio < hi - 1e-9:
            radii.append(radii[-1] * self.radius_step_ratio)
        if hi > radii[-1] + 1e-9:
            radii.append(hi)
        return [round(r, 4) for r in radii]

    def validate(self):
        """Raise ValueError naming the parameter that makes no sense."""
        if not self.radius_step_ratio > 1:
            raise ValueError(f"radius_step_ratio must be > 1, got {self.radius_step_ratio}")
        positive = ("max_diameter_mm", "mask_opening_mm", "background_sigma_mm", "shell_mm")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.min_diameter_mm < self.max_diameter_mm:
            raise ValueError(f"min_diameter_mm ({self.min_diameter_mm}) must be > 0 and below max_diameter_mm ({self.max_diameter_mm})")
        if self.max_diameter_mm > 20:
            raise ValueError(f"max_diameter_mm {self.max_diameter_mm} is not a microbleed size (MARS: up to 10 mm)")
        if not 0 < self.depth_fraction < 1:
            raise ValueError(f"depth_fraction must be between 0 and 1, got {self.depth_fraction}")
        if not 0 <= self.min_contrast < 1:
            raise ValueError(f"min_contrast must be in [0, 1), got {self.min_contrast}")
        for name in ("min_cnr", "edge_margin_mm", "min_core_depth", "min_halo_depth_ratio", "max_ring_interior_mm3",
                     "min_inplane_diameter_mm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.5 <= self.definite_confidence <= 1:
            raise ValueError(f"definite_confidence must be in [0.5, 1], got {self.definite_confidence}")
        if self.brain_coverage not in ("auto", "whole", "partial"):
            raise ValueError(f"brain_coverage must be 'auto', 'whole' or 'partial', got {self.brain_coverage!r}")
        if not 0 <= self.brain_volume_min_ml < self.brain_volume_max_ml:
            raise ValueError(f"brain_volume_min_ml ({self.brain_volume_min_ml}) must be >= 0 and below "
                             f"brain_volume_max_ml ({self.brain_volume_max_ml})")
        if self.phase_sign not in (None, 1, -1):
            raise ValueError(f"phase_sign must be +1, -1 or unset, got {self.phase_sign}")
        if self.echo not in ("auto", "t2star", "rss", "first", "last") and not str(self.echo).lstrip("-").isdigit():
            raise ValueError(f"echo must be 'auto', 't2star', 'rss', 'first', 'last' or an echo index, got {self.echo!r}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


FIELD_PRESETS = ((2.0, "gre-1.5t"), (5.0, "swi-3t"), (float("inf"), "swi-7t"))
"""Preset by field strength when none is named: below 2 T the 1.5 T GRE preset, below 5 T the 3 T
SWI preset, above the 7 T one (their contrast floors and bias correction are set for these fields)."""


def preset_for(field_strength_t=None) -> tuple[str, str]:
    """The preset for a scan's field strength (T; from its sidecar) and why it was chosen:
    :data:`FIELD_PRESETS`, or :data:`DEFAULT_PRESET` when the field strength is unknown."""
    if not isinstance(field_strength_t, (int, float)) or isinstance(field_strength_t, bool) or field_strength_t <= 0:
        return DEFAULT_PRESET, "default (no MagneticFieldStrength in the scan's metadata)"
    for below, name in FIELD_PRESETS:
        if field_strength_t < below:
            return name, f"chosen for MagneticFieldStrength {field_strength_t:g} T"
    return DEFAULT_PRESET, "default"


def preset_names():
    """Names of the installed presets."""
    folder = resources.files("microbleeds.pipelines")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_preset(name_or_path):
    """Read a preset by name (installed) or path; returns the TOML as a dict."""
    path = Path(str(name_or_path))
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text()
    else:
        resource = resources.files("microbleeds.pipelines") / f"{name_or_path}.toml"
        if not resource.is_file():
            raise ValueError(f"pipeline {name_or_path!r} not found; installed presets: {', '.join(preset_names())}")
        text = resource.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"pipeline {name_or_path!r} is not valid TOML: {exc}") from None


def load_parameters(preset=DEFAULT_PRESET, **overrides) -> Parameters:
    """Parameters of a preset, with keyword overrides (``None`` values are ignored)."""
    data = read_preset(preset)
    known = {f.name for f in dataclasses.fields(Parameters)}
    values = dict(data.get("parameters", {}))
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"pipeline {preset!r}: unknown parameters {sorted(unknown)}")
    info = data.get("pipeline", {})
    values["preset"] = info.get("name", str(preset))
    values["preset_version"] = str(info.get("version", "1"))
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"unknown parameter {key!r}")
        if value is not None:
            values[key] = value
    return Parameters(**values).validate()
