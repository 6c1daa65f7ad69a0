"""Surface reflectance of the sample county's materials, and sensor-like rendering.

The world is a painter's list of ``(polygon, spectrum, texture)`` layers in county metres.
:func:`render_surface` burns them into a grid ``supersample`` times finer than the output
(later layers cover earlier ones), looks up each fine pixel's reflectance and area-averages
blocks to the output pixel, so a 5 m dike inside a 10 m pixel becomes a mixed pixel exactly as
in a real sensor. Spectra follow the reflectance table in ``docs/sample_data.md`` (taken from
the project's DOMAIN notes: blue, green, red, nir surface reflectance 0-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

__all__ = [
    "BANDS",
    "MATERIALS",
    "WATER_COLOURS",
    "Layer",
    "feature_spectrum",
    "material_texture",
    "water_spectrum",
    "render_surface",
    "world_texture",
]

#: Band order of every sample raster.
BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")

#: Mean surface reflectance (blue, green, red, nir) per material. Sources: DOMAIN table
#: (clear / turbid / algae water, wet mud, flooded paddy, bare soil, crop, mangrove, built-up);
#: the roof, dike, stubble, grass and sea rows are interpolations between those rows.
MATERIALS: dict[str, tuple[float, float, float, float]] = {
    "sea": (0.07, 0.08, 0.05, 0.03),
    "river": (0.08, 0.10, 0.08, 0.04),
    "clear": (0.06, 0.06, 0.03, 0.02),
    "turbid": (0.08, 0.11, 0.10, 0.05),
    "algae": (0.05, 0.09, 0.05, 0.09),
    "mud": (0.09, 0.11, 0.12, 0.15),
    "mudflat": (0.09, 0.11, 0.12, 0.15),
    "flooded_paddy": (0.07, 0.08, 0.06, 0.08),
    "bare_soil": (0.12, 0.15, 0.19, 0.26),
    "fill": (0.13, 0.16, 0.20, 0.27),
    "stubble": (0.10, 0.12, 0.14, 0.22),
    "crop": (0.04, 0.08, 0.05, 0.38),
    "young_crop": (0.06, 0.09, 0.08, 0.26),
    "grass": (0.05, 0.08, 0.07, 0.28),
    "mangrove": (0.03, 0.05, 0.03, 0.29),
    "forest": (0.03, 0.05, 0.03, 0.31),
    "built": (0.14, 0.15, 0.16, 0.21),
    "roof_grey": (0.20, 0.21, 0.22, 0.25),
    "roof_red": (0.12, 0.12, 0.18, 0.24),
    "roof_blue": (0.16, 0.18, 0.14, 0.18),
    "road": (0.17, 0.18, 0.19, 0.22),
    "dike": (0.15, 0.17, 0.20, 0.25),
}

#: Pond water colours and the material each one renders as.
WATER_COLOURS: tuple[str, ...] = ("clear", "turbid", "algae")

#: Within-feature texture amplitude (relative) per material: fields vary, water is smooth.
_TEXTURE = {
    "sea": 0.03, "river": 0.03, "clear": 0.03, "turbid": 0.04, "algae": 0.06, "mud": 0.08,
    "mudflat": 0.10, "flooded_paddy": 0.10, "bare_soil": 0.08, "fill": 0.10, "stubble": 0.10,
    "crop": 0.08, "young_crop": 0.10, "grass": 0.08, "mangrove": 0.08, "forest": 0.10,
    "built": 0.10, "roof_grey": 0.05, "roof_red": 0.05, "roof_blue": 0.05, "road": 0.04,
    "dike": 0.06,
}


@dataclass(frozen=True)
class Layer:
    """One painted polygon: geometry in county metres, reflectance per band, texture amplitude."""

    geometry: BaseGeometry
    spectrum: tuple[float, float, float, float]
    texture: float = 0.05

    def __post_init__(self) -> None:
        if len(self.spectrum) != len(BANDS):
            raise ValueError(f"spectrum needs {len(BANDS)} values, got {len(self.spectrum)}")


def feature_spectrum(material: str, rng: np.random.Generator, jitter: float = 0.08) -> tuple[float, ...]:
    """A per-feature spectrum: the material mean scaled by a brightness and a small per-band jitter.

    Example:
        >>> s = feature_spectrum("crop", np.random.default_rng(0))
        >>> 0.3 < s[3] < 0.5
        True
    """
    base = np.asarray(MATERIALS[material], dtype=float)
    bright = 1.0 + rng.normal(0.0, jitter)
    per_band = 1.0 + rng.normal(0.0, jitter / 2.0, size=base.size)
    return tuple(float(v) for v in np.clip(base * bright * per_band, 0.005, 0.95))


def material_texture(material: str) -> float:
    """Relative within-feature texture amplitude of a material."""
    return _TEXTURE.get(material, 0.06)


def water_spectrum(colour: str, rng: np.random.Generator) -> tuple[float, ...]:
    """A pond's water spectrum: its colour's mean mixed 0-35 % towards a neighbouring colour.

    Real ponds form a continuum (clear -> turbid -> algae-green) rather than three classes, so the
    NDWI of algae ponds spans roughly -0.1 to 0.3 and that of clear ponds 0.4 to 0.6.
    """
    if colour == "mud":
        return feature_spectrum("mud", rng, 0.10)
    other = {"clear": "turbid", "turbid": rng.choice(["clear", "algae"]), "algae": "turbid"}[colour]
    w = rng.uniform(0.0, 0.35)
    base = (1 - w) * np.asarray(MATERIALS[colour]) + w * np.asarray(MATERIALS[str(other)])
    if colour == "algae":  # bloom density drives nir
        base[3] *= rng.uniform(0.8, 1.35)
    bright = 1.0 + rng.normal(0.0, 0.06)
    return tuple(float(v) for v in np.clip(base * bright, 0.005, 0.95))


def world_texture(
    transform: Affine, width: int, height: int, waves: np.ndarray, *, min_wavelength_m: float
) -> np.ndarray:
    """A smooth zero-mean texture field (~unit std) sampled at pixel centres of a grid.

    ``waves`` rows are ``(wavelength_m, direction_rad, phase_rad)`` fixed in county metres, so the
    same ground shows the same texture in every scene and on both dates; waves shorter than
    ``min_wavelength_m`` (about 2.5 output pixels) are left out to avoid aliasing.
    """
    cols = np.arange(width, dtype=np.float64) + 0.5
    rows = np.arange(height, dtype=np.float64) + 0.5
    x = transform.c + transform.a * cols  # north-up grids only
    y = transform.f + transform.e * rows
    field = np.zeros((height, width), dtype=np.float32)
    used = waves[waves[:, 0] >= min_wavelength_m]
    for wavelength, direction, phase in used:
        k = 2.0 * np.pi / wavelength
        kx, ky = k * np.cos(direction), k * np.sin(direction)
        # separable: sin(a + b) = sin a cos b + cos a sin b
        ax, ay = kx * x + phase, ky * y
        field += (np.cos(ay)[:, None] * np.sin(ax)[None, :] + np.sin(ay)[:, None] * np.cos(ax)[None, :]).astype(
            np.float32
        )
    if len(used):
        field *= np.float32(np.sqrt(2.0 / len(used)))
    return field


def render_surface(
    layers: list[Layer],
    transform: Affine,
    width: int,
    height: int,
    *,
    supersample: int,
    background: Layer,
    shape_cache: dict[int, dict] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Area-averaged surface reflectance of painted layers on an output grid.

    Args:
        layers: polygons in paint order (later ones cover earlier ones), county metres.
        transform: north-up affine transform of the output grid (county metres).
        width, height: output size in pixels.
        supersample: fine pixels per output pixel along each axis (e.g. 5 for 2 m inside 10 m).
        background: spectrum for pixels no layer covers (its geometry is ignored).
        shape_cache: optional dict reused across calls to keep GeoJSON forms of the geometries
            (converting tens of thousands of polygons costs more than burning them).

    Returns:
        ``(reflectance, texture_amplitude)``: float32 arrays ``(4, height, width)`` and
        ``(height, width)``, both area means over each pixel's fine sub-pixels.
    """
    if supersample < 1:
        raise ValueError("supersample must be >= 1")
    cache = shape_cache if shape_cache is not None else {}
    fine = transform @ Affine.scale(1.0 / supersample)
    shape = (height * supersample, width * supersample)
    table = np.empty((len(layers) + 1, len(BANDS) + 1), dtype=np.float32)
    table[0, :4] = background.spectrum
    table[0, 4] = background.texture
    shapes = []
    for i, layer in enumerate(layers, start=1):
        table[i, :4] = layer.spectrum
        table[i, 4] = layer.texture
        g = layer.geometry
        if g.is_empty:
            continue
        key = id(g)
        if key not in cache:
            cache[key] = mapping(g)
        shapes.append((cache[key], i))
    dtype = "uint16" if len(layers) < 65535 else "uint32"
    ids = rasterize(shapes, out_shape=shape, transform=fine, fill=0, dtype=dtype)
    out = np.empty((len(BANDS) + 1, height, width), dtype=np.float32)
    for b in range(len(BANDS) + 1):
        values = table[:, b][ids]
        # INTER_AREA with an integer factor is the exact block mean, and much faster than numpy's
        out[b] = cv2.resize(values, (width, height), interpolation=cv2.INTER_AREA)
    return out[:4], out[4]
