"""Simulation domains: the narrow one (every pair with the default parameters, the shipped
model's training data), a randomized one that spans real microscopes (each pair draws its
optics, illumination, camera, material contrast, pixel size and SEM from `DomainRanges`) and a
held-out one: one fixed microscope and chip outside every randomized range, standing for a
user's instrument in fine-tuning studies.

docs/simulator.md gives the physics or source behind every range."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from edge.errors import UserError
from trainer.sim.layout import LayoutParams
from trainer.sim.optics import AIRY_FWHM_PER_RAYLEIGH, OpticsParams
from trainer.sim.params import MisalignParams, SamplingParams, SimParams
from trainer.sim.sem import SemParams

DOMAINS = ("narrow", "randomized", "holdout")
FIXED_DOMAINS = ("narrow", "holdout")  # every pair with the same parameters
CONTRAST_TABLES = ("normal", "reversed")
Range = tuple[float, float]


def _default_reflectance_ranges() -> dict[str, Range]:
    return {"oxide": (0.05, 0.35), "poly": (0.25, 0.50), "via": (0.40, 0.70), "metal": (0.55, 0.95)}


@dataclass(frozen=True)
class DomainRanges:
    """Per pair, each value is drawn uniformly in its (low, high) range (log-uniformly where
    the comment says so)."""

    # optics
    fwhm_nm: Range = (60.0, 150.0)  # PSF FWHM (Airy); resolution_nm = FWHM / 0.843
    focus_offset_nm: Range = (-300.0, 300.0)  # focal plane relative to the metal top (z-scan)
    spherical_waves: Range = (-0.3, 0.3)
    astigmatism_waves: Range = (0.0, 0.25)  # at a uniformly drawn angle
    background: Range = (0.05, 0.30)  # flare added to the virtual image
    contrast: Range = (0.40, 0.80)  # virtual-image contrast
    reflectance: dict[str, Range] = field(default_factory=_default_reflectance_ranges)
    reversed_fraction: float = 0.3  # share of pairs whose reflectance table is mirrored
    # illumination
    falloff: Range = (0.0, 0.6)
    field_offset: Range = (0.0, 0.5)  # largest field-centre offset, fraction of the half frame
    tilt: Range = (0.0, 0.3)  # at a uniformly drawn direction
    vignetting: Range = (0.0, 0.4)
    # camera
    full_well_e: Range = (100.0, 5000.0)  # photo-electrons at intensity 1, log-uniform
    read_noise_e: Range = (2.0, 10.0)
    pixel_size_nm: Range = (7.0, 15.0)  # the microscope's pixel, resampled to the output's
    # SEM
    edge_gain: Range = (0.4, 1.2)
    edge_width_nm: Range = (10.0, 30.0)
    probe_sigma_nm: Range = (5.0, 12.0)
    electrons_per_pixel: Range = (200.0, 2000.0)  # log-uniform
    line_noise_std: Range = (0.0, 0.03)  # per-line offset and gain jitter (each)
    charging_fraction: float = 0.3  # share of pairs with charging streaks
    charging_gain: Range = (0.05, 0.3)
    charging_length_nm: Range = (100.0, 600.0)


def check_domain(name: str) -> str:
    if name not in DOMAINS:
        raise UserError(f"unknown domain {name!r}; choose from {', '.join(DOMAINS)}")
    return name


def resolution_for_fwhm(fwhm_nm: float) -> float:
    """The Rayleigh resolution (OpticsParams.resolution_nm) whose Airy PSF has this FWHM."""
    return fwhm_nm / AIRY_FWHM_PER_RAYLEIGH


def reversed_table(table: dict[str, float]) -> dict[str, float]:
    """The reflectance table mirrored within its own range: the brightest material becomes the
    darkest, and every material's order against the SEM's is reversed."""
    lo, hi = min(table.values()), max(table.values())
    return {name: lo + hi - value for name, value in table.items()}


def contrast_table(optics: OpticsParams, sem: SemParams) -> str:
    """'normal' when the materials' optical reflectance rises with their SEM yield (positive
    correlation over the materials), else 'reversed'."""
    names = sorted(optics.reflectance)
    reflect = np.array([optics.reflectance[n] for n in names])
    yields = np.array([sem.material_yield[n] for n in names])
    return "normal" if float(np.corrcoef(reflect, yields)[0, 1]) > 0 else "reversed"


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _log_uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def _draw_optics(rng: np.random.Generator, ranges: DomainRanges) -> OpticsParams:
    narrow = OpticsParams()
    table = {name: _uniform(rng, bounds) for name, bounds in ranges.reflectance.items()}
    if rng.uniform() < ranges.reversed_fraction:
        table = reversed_table(table)
    return dataclasses.replace(
        narrow,
        resolution_nm=resolution_for_fwhm(_uniform(rng, ranges.fwhm_nm)),
        focus_z_nm=narrow.focus_z_nm + _uniform(rng, ranges.focus_offset_nm),
        spherical_waves=_uniform(rng, ranges.spherical_waves),
        astigmatism_waves=_uniform(rng, ranges.astigmatism_waves),
        astigmatism_angle_deg=_uniform(rng, (0.0, 180.0)),
        background=_uniform(rng, ranges.background),
        contrast=_uniform(rng, ranges.contrast),
        reflectance=table,
        falloff=_uniform(rng, ranges.falloff),
        tilt=_uniform(rng, ranges.tilt),
        tilt_angle_deg=_uniform(rng, (0.0, 360.0)),
        vignetting=_uniform(rng, ranges.vignetting),
        full_well_e=_log_uniform(rng, ranges.full_well_e),
        read_noise_e=_uniform(rng, ranges.read_noise_e),
    )


def _draw_sem(rng: np.random.Generator, ranges: DomainRanges) -> SemParams:
    charging = rng.uniform() < ranges.charging_fraction
    gain, length = _uniform(rng, ranges.charging_gain), _uniform(rng, ranges.charging_length_nm)
    return dataclasses.replace(
        SemParams(),
        edge_gain=_uniform(rng, ranges.edge_gain),
        edge_width_nm=_uniform(rng, ranges.edge_width_nm),
        probe_sigma_nm=_uniform(rng, ranges.probe_sigma_nm),
        electrons_per_pixel=_log_uniform(rng, ranges.electrons_per_pixel),
        line_offset_std=_uniform(rng, ranges.line_noise_std),
        line_gain_std=_uniform(rng, ranges.line_noise_std),
        charging_gain=gain if charging else 0.0,
        charging_length_nm=length,
    )


def draw(rng: np.random.Generator, ranges: DomainRanges | None = None) -> SimParams:
    """One pair's parameters from the randomized domain (layout and misregistration as in the
    narrow domain, except the field-centre offset)."""
    r = ranges or DomainRanges()
    optics, sem = _draw_optics(rng, r), _draw_sem(rng, r)
    misalign = dataclasses.replace(MisalignParams(), max_field_offset=_uniform(rng, r.field_offset))
    sampling = SamplingParams(native_pixel_nm=_uniform(rng, r.pixel_size_nm))
    return SimParams(sem=sem, optics=optics, misalign=misalign, sampling=sampling)


def holdout_params() -> SimParams:
    """The held-out domain, outside the randomized ranges where it departs from the narrow one:
    a blurrier (FWHM 160 nm), noisier (300 e at full scale, read noise 12 e) microscope with a
    coarser camera pixel (16 nm) and strong fall-off (0.65, off-centre up to 0.6), a material
    order that is neither the narrow table nor its mirror (poly darkest, via brightest),
    trench-tone chips with wider features and no buried layer, and a brighter-rimmed, noisier
    SEM."""
    optics = dataclasses.replace(
        OpticsParams(), resolution_nm=resolution_for_fwhm(160.0),
        reflectance={"via": 0.85, "metal": 0.60, "oxide": 0.35, "poly": 0.15},
        falloff=0.65, full_well_e=300.0, read_noise_e=12.0)
    sem = dataclasses.replace(SemParams(), edge_gain=1.4, edge_width_nm=35.0, probe_sigma_nm=14.0,
                              electrons_per_pixel=150.0)
    layout = dataclasses.replace(LayoutParams(), tone="trenches", min_feature_nm=90.0,
                                 corner_radius_nm=15.0, second_layer=False)
    misalign = dataclasses.replace(MisalignParams(), max_field_offset=0.6)
    return SimParams(layout=layout, sem=sem, optics=optics, misalign=misalign,
                     sampling=SamplingParams(native_pixel_nm=16.0))


def domain_params(domain: str, rng: np.random.Generator) -> SimParams:
    """A pair's parameters in the named domain (only the randomized one draws)."""
    name = check_domain(domain)
    if name == "randomized":
        return draw(rng)
    return holdout_params() if name == "holdout" else SimParams()
