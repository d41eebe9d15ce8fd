"""SSUM optical rendering: the microsphere's virtual image seen by the camera.

Incoherent imaging with a circular pupil whose effective NA (objective plus microsphere
magnification) gives the stated Rayleigh resolution, optionally with spherical aberration and
astigmatism in the pupil phase, optical reflectance contrast, reduced virtual-image contrast,
defocus growing with depth, field falloff (radial, off-centre, tilted, vignetted) and
Poisson-Gaussian camera noise."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from trainer.sim.layout import MATERIALS, Layout

# Airy disk: FWHM 0.5145 lambda / NA, Rayleigh radius 0.61 lambda / NA
AIRY_FWHM_PER_RAYLEIGH = 0.5145 / 0.61


@dataclass(frozen=True)
class OpticsParams:
    wavelength_nm: float = 550.0  # centre of the white-light band
    resolution_nm: float = 80.0  # Rayleigh resolution 0.61 lambda / NA_eff
    sphere_index: float = 1.9  # barium titanate glass (recorded; folded into NA_eff)
    sphere_diameter_um: float = 57.0
    reflectance: dict[str, float] = field(
        default_factory=lambda: {"oxide": 0.30, "metal": 0.85, "via": 0.55, "poly": 0.45}
    )
    background: float = 0.15  # stray light and flare added to the virtual image
    contrast: float = 0.60  # virtual-image contrast relative to a direct view
    focus_z_nm: float = 120.0  # focal plane (top of the metal by default)
    defocus_sigma_per_um: float = 80.0  # extra Gaussian blur sigma (nm) per um of defocus
    falloff: float = 0.30  # relative intensity lost at the field edge (quadratic in radius)
    full_well_e: float = 1000.0  # photo-electrons at intensity 1
    read_noise_e: float = 4.0
    # pupil-phase aberrations, in waves (Zernike terms on the unit pupil radius rho)
    spherical_waves: float = 0.0  # coefficient of 6 rho^4 - 6 rho^2 + 1
    astigmatism_waves: float = 0.0  # coefficient of rho^2 cos 2(theta - astigmatism_angle)
    astigmatism_angle_deg: float = 0.0
    tilt: float = 0.0  # relative intensity difference from one side of the frame to the other
    tilt_angle_deg: float = 0.0  # direction of increasing intensity (0: along +x)
    vignetting: float = 0.0  # relative intensity lost at the field edge (quartic in radius)

    @property
    def effective_na(self) -> float:
        return 0.61 * self.wavelength_nm / self.resolution_nm

    @property
    def fwhm_nm(self) -> float:
        """Full width at half maximum of the aberration-free PSF (the Airy disk's FWHM)."""
        return AIRY_FWHM_PER_RAYLEIGH * self.resolution_nm

    @property
    def aberrated(self) -> bool:
        return bool(self.spherical_waves or self.astigmatism_waves)

    @property
    def cutoff_per_nm(self) -> float:
        """Incoherent OTF cut-off frequency 2 NA / lambda (cycles per nm)."""
        return 2.0 * self.effective_na / self.wavelength_nm


def _frequencies(shape: tuple[int, int], pixel_size_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """(fy, fx) in cycles per nm, FFT layout, broadcastable to `shape`."""
    return (np.fft.fftfreq(shape[0], d=pixel_size_nm)[:, None],
            np.fft.fftfreq(shape[1], d=pixel_size_nm)[None, :])


def pupil_phase_waves(rho: np.ndarray, theta: np.ndarray, params: OpticsParams) -> np.ndarray:
    """Wavefront error over the pupil in waves: Zernike spherical aberration and astigmatism."""
    spherical = params.spherical_waves * (6.0 * rho**4 - 6.0 * rho**2 + 1.0)
    angle = np.deg2rad(params.astigmatism_angle_deg)
    return spherical + params.astigmatism_waves * rho**2 * np.cos(2.0 * (theta - angle))


def _aberrated_otf(shape: tuple[int, int], pixel_size_nm: float, params: OpticsParams) -> np.ndarray:
    """OTF of the aberrated pupil: the incoherent PSF |FT(pupil)|^2 transformed back, normalised.

    The coherent pupil reaches NA / lambda, half the incoherent cut-off; its autocorrelation
    fits the grid as long as the cut-off is below Nyquist."""
    fy, fx = _frequencies(shape, pixel_size_nm)
    rho = np.hypot(fy, fx) / (params.cutoff_per_nm / 2.0)
    pupil = np.where(rho <= 1.0, np.exp(2j * np.pi * pupil_phase_waves(rho, np.arctan2(fy, fx), params)), 0.0)
    otf = np.fft.fft2(np.abs(np.fft.ifft2(pupil)) ** 2)
    return np.real(otf / otf[0, 0])


def _otf(shape: tuple[int, int], pixel_size_nm: float, params: OpticsParams, defocus_nm: float) -> np.ndarray:
    """Incoherent circular-pupil OTF (aberrated when the params say so) times the Gaussian
    transfer of the defocus blur (FFT layout)."""
    fy, fx = _frequencies(shape, pixel_size_nm)
    f = np.hypot(fy, fx)
    if params.aberrated:
        otf = _aberrated_otf(shape, pixel_size_nm, params)
    else:
        rho = np.clip(f / params.cutoff_per_nm, 0.0, 1.0)
        otf = (2.0 / np.pi) * (np.arccos(rho) - rho * np.sqrt(1.0 - rho**2))
    sigma = params.defocus_sigma_per_um * abs(defocus_nm) / 1000.0
    return otf * np.exp(-2.0 * (np.pi * sigma * f) ** 2)


def _psf_radius_nm(params: OpticsParams, sigma_nm: float) -> float:
    """How far the PSF reaches: 4 Rayleigh radii, 3 defocus sigmas, more with aberrations."""
    aberration = abs(params.spherical_waves) + abs(params.astigmatism_waves)
    radius = 4.0 * params.resolution_nm + 3.0 * sigma_nm
    return radius + 8.0 * params.resolution_nm * aberration if aberration else radius


def optical_psf(pixel_size_nm: float, params: OpticsParams | None = None, defocus_nm: float = 0.0) -> np.ndarray:
    """Normalised 2-D PSF (odd size, sums to 1), at focus unless `defocus_nm` is given."""
    p = params or OpticsParams()
    sigma = p.defocus_sigma_per_um * abs(defocus_nm) / 1000.0
    radius = int(np.ceil(_psf_radius_nm(p, sigma) / pixel_size_nm)) + 2
    n = 4 * radius + 1
    psf = np.fft.fftshift(np.real(np.fft.ifft2(_otf((n, n), pixel_size_nm, p, defocus_nm))))
    c = n // 2
    psf = np.clip(psf[c - radius : c + radius + 1, c - radius : c + radius + 1], 0.0, None)
    return (psf / psf.sum()).astype(np.float32)


def blur(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    return cv2.filter2D(image.astype(np.float32), -1, psf, borderType=cv2.BORDER_REFLECT)


def reflectance_map(layout: Layout, params: OpticsParams) -> np.ndarray:
    lut = np.array([params.reflectance[name] for name in MATERIALS], np.float32)
    return lut[layout.material]


def render_osr_clean(layout: Layout, params: OpticsParams | None = None) -> np.ndarray:
    """Noise-free virtual image on the layout's grid: each depth is blurred by its own PSF."""
    p = params or OpticsParams()
    reflect = reflectance_map(layout, p)
    image = np.zeros(layout.shape, np.float32)
    for z in np.unique(layout.height_nm):
        part = np.where(layout.height_nm == z, reflect, 0.0).astype(np.float32)
        image += blur(part, optical_psf(layout.pixel_size_nm, p, float(z) - p.focus_z_nm))
    return p.background + p.contrast * image


def field_falloff(shape: tuple[int, int], strength: float, centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """1 - strength * (r / r_edge)^2, r from the field centre (offset in fractions of the half
    size), r_edge the half diagonal of the frame."""
    return (1.0 - strength * _radius2(shape, centre)).astype(np.float32)


def _radius2(shape: tuple[int, int], centre: tuple[float, float]) -> np.ndarray:
    """(r / r_edge)^2 from the field centre (offset in fractions of the half size), r_edge the
    half diagonal of the frame."""
    h, w = shape
    y = (np.arange(h) - (h - 1) / 2.0) / (h / 2.0) - centre[0]
    x = (np.arange(w) - (w - 1) / 2.0) / (w / 2.0) - centre[1]
    return (y[:, None] ** 2 + x[None, :] ** 2) / 2.0


def tilt_ramp(shape: tuple[int, int], strength: float, angle_deg: float) -> np.ndarray:
    """1 + strength / 2 * u, u the position along the tilt direction from -1 to 1 across the
    frame (its half-diagonal projection): one side `strength` brighter than the other."""
    h, w = shape
    y = (np.arange(h) - (h - 1) / 2.0) / (h / 2.0)
    x = (np.arange(w) - (w - 1) / 2.0) / (w / 2.0)
    angle = np.deg2rad(angle_deg)
    u = (np.cos(angle) * x[None, :] + np.sin(angle) * y[:, None]) / (abs(np.cos(angle)) + abs(np.sin(angle)))
    return (1.0 + 0.5 * strength * u).astype(np.float32)


def illumination(shape: tuple[int, int], params: OpticsParams, centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The relative intensity over the frame: radial falloff around the (off-centre) field
    centre, the vignetting of the sphere's field (1 - v (r / r_edge)^4), and a tilt ramp."""
    light = field_falloff(shape, params.falloff, centre)
    if params.vignetting:
        light = light * (1.0 - params.vignetting * _radius2(shape, centre) ** 2)
    if params.tilt:
        light = light * tilt_ramp(shape, params.tilt, params.tilt_angle_deg)
    return np.clip(light, 0.0, None).astype(np.float32)


def camera_noise(image: np.ndarray, rng: np.random.Generator, params: OpticsParams) -> np.ndarray:
    """Poisson photon noise at the full-well scale plus Gaussian read noise."""
    electrons = rng.poisson(np.clip(image, 0.0, None) * params.full_well_e).astype(np.float32)
    electrons += rng.normal(0.0, params.read_noise_e, image.shape).astype(np.float32)
    return electrons / params.full_well_e


def capture(clean: np.ndarray, rng: np.random.Generator, params: OpticsParams, centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """What the camera records of a clean virtual image: illumination and noise, clipped."""
    light = illumination(clean.shape, params, centre)
    return np.clip(camera_noise(clean * light, rng, params), 0.0, 1.0).astype(np.float32)


def degrade_sem_to_osr(
    sem: np.ndarray, pixel_size_nm: float, rng: np.random.Generator, params: OpticsParams | None = None
) -> np.ndarray:
    """Apply the optical forward model to an SEM image (real or simulated) that has no layout.

    The SEM edge rim is removed with a median filter, grey levels are mapped linearly onto the
    oxide-to-metal reflectance range (2nd and 98th percentiles), then blurred at focus, contrast
    reduced, and captured with falloff and camera noise."""
    p = params or OpticsParams()
    rim_px = max(3, int(2 * np.ceil(25.0 / pixel_size_nm)) + 1)
    smooth = cv2.medianBlur(np.round(np.clip(sem, 0, 1) * 255).astype(np.uint8), min(rim_px, 255))
    lo, hi = np.percentile(smooth, [2, 98])
    unit = np.clip((smooth.astype(np.float32) - lo) / max(hi - lo, 1.0), 0.0, 1.0)
    r_lo, r_hi = p.reflectance["oxide"], p.reflectance["metal"]
    reflect = r_lo + (r_hi - r_lo) * unit
    clean = p.background + p.contrast * blur(reflect, optical_psf(pixel_size_nm, p))
    return capture(clean, rng, p)
