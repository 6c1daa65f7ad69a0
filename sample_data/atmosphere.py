"""What lies between the ground and the sample rasters: haze, cloud and shadow, gain, noise, swath edge.

These are the honest distractors of the sample county: none of them is a pond change, and a change
detector has to survive all of them. Each effect is a small frozen record (parameters in county
metres and reflectance units) plus a pure function applying it to a ``(4, rows, cols)`` float32
reflectance array on a north-up grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry import Polygon

__all__ = [
    "Haze",
    "Gain",
    "Cloud",
    "apply_haze",
    "apply_gain",
    "cloud_fields",
    "apply_cloud",
    "cloud_cover_at",
    "add_sensor_noise",
    "apply_psf",
    "wedge_mask",
    "to_digital_numbers",
]

#: Reflectance scale of the uint16 sample rasters.
DN_SCALE = 10000.0


@dataclass(frozen=True)
class Haze:
    """Additive path radiance: ``offset`` per band (blue, green, red, nir), modulated in space.

    ``waves`` are ``(wavelength_m, direction_rad, phase_rad)`` of the haze's patchiness.
    """

    offset: tuple[float, float, float, float]
    waves: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class Gain:
    """A linear radiometric change between dates: ``out = gain * in + offset`` per band."""

    gain: tuple[float, float, float, float]
    offset: tuple[float, float, float, float]


@dataclass(frozen=True)
class Cloud:
    """A cumulus cloud as Gaussian puffs ``(x_m, y_m, sigma_m, weight)`` with its cast shadow.

    The shadow is the same density field moved by ``shadow_shift_m`` (away from the sun) and
    multiplies the ground by ``shadow_factor`` at its core.
    """

    puffs: tuple[tuple[float, float, float, float], ...]
    shadow_shift_m: tuple[float, float]
    shadow_factor: float
    spectrum: tuple[float, float, float, float]


def _centres(transform: Affine, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    x = transform.c + transform.a * (np.arange(width) + 0.5)
    y = transform.f + transform.e * (np.arange(height) + 0.5)
    return x, y


def _smoothstep(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return v * v * (3.0 - 2.0 * v)


def apply_haze(refl: np.ndarray, haze: Haze, transform: Affine) -> np.ndarray:
    """``refl`` plus a spatially varying haze offset (strongest in blue), new array."""
    _, height, width = refl.shape
    x, y = _centres(transform, width, height)
    field = np.full((height, width), 1.0, dtype=np.float32)
    for wavelength, direction, phase in haze.waves:
        k = 2.0 * np.pi / wavelength
        along = (k * np.cos(direction) * x)[None, :] + (k * np.sin(direction) * y)[:, None] + phase
        field += np.float32(0.35 / max(len(haze.waves), 1) ** 0.5) * np.sin(along).astype(np.float32)
    field = np.clip(field, 0.2, 1.8)
    out = refl.copy()
    for b, off in enumerate(haze.offset):
        out[b] += np.float32(off) * field
    return out


def apply_gain(refl: np.ndarray, gain: Gain) -> np.ndarray:
    """``gain * refl + offset`` per band, new array."""
    g = np.asarray(gain.gain, dtype=np.float32)[:, None, None]
    o = np.asarray(gain.offset, dtype=np.float32)[:, None, None]
    return refl * g + o


def _density(puffs, x: np.ndarray, y: np.ndarray, shift=(0.0, 0.0)) -> np.ndarray:
    d = np.zeros((y.size, x.size), dtype=np.float32)
    for px, py, sigma, weight in puffs:
        gx = np.exp(-((x - px - shift[0]) ** 2) / (2 * sigma * sigma)).astype(np.float32)
        gy = np.exp(-((y - py - shift[1]) ** 2) / (2 * sigma * sigma)).astype(np.float32)
        if gx.max() < 1e-4 or gy.max() < 1e-4:
            continue
        d += np.float32(weight) * gy[:, None] * gx[None, :]
    return d


def cloud_fields(cloud: Cloud, transform: Affine, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha, shadow)`` on a grid: cloud opacity 0-1 and ground multiplier (1 = no shadow)."""
    x, y = _centres(transform, width, height)
    alpha = _smoothstep((_density(cloud.puffs, x, y) - 0.3) / 0.6)
    core = _smoothstep((_density(cloud.puffs, x, y, cloud.shadow_shift_m) - 0.3) / 0.5)
    shadow = 1.0 - (1.0 - cloud.shadow_factor) * core
    return alpha.astype(np.float32), shadow.astype(np.float32)


def apply_cloud(refl: np.ndarray, cloud: Cloud, transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Shadow then cloud over ``refl``; returns the new array and the cloud-or-shadow mask."""
    _, height, width = refl.shape
    alpha, shadow = cloud_fields(cloud, transform, width, height)
    spec = np.asarray(cloud.spectrum, dtype=np.float32)[:, None, None]
    # thicker cloud is brighter; thin edges let the ground through
    cloud_refl = spec * (0.75 + 0.25 * alpha)[None]
    out = refl * shadow[None]
    out = out * (1.0 - alpha[None]) + cloud_refl * alpha[None]
    return out, (alpha > 0.05) | (shadow < 0.97)


def cloud_cover_at(cloud: Cloud, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean per point (county metres): under the cloud or in its shadow (as :func:`apply_cloud`)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)

    def density(sx: float, sy: float) -> np.ndarray:
        d = np.zeros_like(x)
        for px, py, sigma, weight in cloud.puffs:
            d += weight * np.exp(-((x - px - sx) ** 2 + (y - py - sy) ** 2) / (2 * sigma * sigma))
        return d

    alpha = _smoothstep((density(0.0, 0.0) - 0.3) / 0.6)
    shadow = 1.0 - (1.0 - cloud.shadow_factor) * _smoothstep((density(*cloud.shadow_shift_m) - 0.3) / 0.5)
    return (alpha > 0.05) | (shadow < 0.97)


def apply_psf(refl: np.ndarray, sigma_px: float) -> np.ndarray:
    """Blur by a Gaussian point-spread function of ``sigma_px`` pixels (a real sensor's optics).

    Area averaging alone is a perfect box response; Sentinel-2's 10 m bands have an MTF near 0.3 at
    Nyquist, which a Gaussian of ~0.45 px reproduces, so a bright 5 m dike smears over ~3 pixels.
    """
    if sigma_px <= 0:
        return refl
    out = np.empty_like(refl)
    for b in range(refl.shape[0]):
        out[b] = cv2.GaussianBlur(refl[b], (0, 0), sigmaX=sigma_px, borderType=cv2.BORDER_REFLECT)
    return out


def add_sensor_noise(
    refl: np.ndarray, rng: np.random.Generator, *, sigma_abs: float, sigma_rel: float
) -> np.ndarray:
    """``refl`` plus Gaussian noise of std ``sigma_abs + sigma_rel * refl`` per pixel and band."""
    noise = rng.standard_normal(refl.shape, dtype=np.float32)
    return refl + noise * (np.float32(sigma_abs) + np.float32(sigma_rel) * refl)


def wedge_mask(wedge: Polygon | None, transform: Affine, width: int, height: int) -> np.ndarray:
    """Boolean ``(rows, cols)``: True for pixels whose centre lies inside the no-data wedge."""
    if wedge is None or wedge.is_empty:
        return np.zeros((height, width), dtype=bool)
    return geometry_mask([wedge], out_shape=(height, width), transform=transform, invert=True)


def to_digital_numbers(refl: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """uint16 reflectance x10000, valid pixels clipped to >= 1 so 0 stays the nodata value."""
    dn = np.clip(np.rint(refl * np.float32(DN_SCALE)), 1, 65535).astype(np.uint16)
    dn[:, nodata] = 0
    return dn
