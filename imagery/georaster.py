"""Pixels that never travel without their georeference.

``GeoRaster`` is the small frozen value passed between algorithms: a ``(bands, rows, cols)``
array plus its affine transform, CRS and nodata value. Conversions between pixel and map
coordinates are named functions; x comes before y (col before row) everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from pyproj import CRS

__all__ = ["GeoRaster", "pixel_to_map", "map_to_pixel", "pixel_area_m2", "bounds_of"]


@dataclass(frozen=True)
class GeoRaster:
    """A georeferenced raster held in memory.

    Args:
        data: array shaped ``(bands, rows, cols)``; a 2-D array is promoted to one band.
        transform: affine pixel -> map transform of the pixel corners (rasterio convention).
        crs: coordinate reference system of the map coordinates.
        nodata: value marking missing pixels, or None.
        band_names: optional role name per band (``"green"``, ``"nir"``, ...).
    """

    data: np.ndarray
    transform: Affine
    crs: CRS
    nodata: float | None = None
    band_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.data.ndim == 2:
            object.__setattr__(self, "data", self.data[np.newaxis])
        if self.data.ndim != 3:
            raise ValueError(f"GeoRaster data must be 2-D or 3-D, got shape {self.data.shape}")
        object.__setattr__(self, "crs", CRS.from_user_input(self.crs))
        if self.band_names and len(self.band_names) != self.data.shape[0]:
            raise ValueError("band_names must name every band")

    @property
    def count(self) -> int:
        return int(self.data.shape[0])

    @property
    def height(self) -> int:
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        return int(self.data.shape[2])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in the raster's CRS."""
        return bounds_of(self.transform, self.width, self.height)

    def band(self, name: str) -> np.ndarray:
        """The 2-D array of the band with role ``name``."""
        try:
            return self.data[self.band_names.index(name)]
        except ValueError:
            raise KeyError(f"no band named {name!r}; have {self.band_names}") from None

    def valid_mask(self) -> np.ndarray:
        """Boolean ``(rows, cols)``: True where no band holds nodata (or NaN)."""
        valid = np.ones(self.data.shape[1:], dtype=bool)
        if np.issubdtype(self.data.dtype, np.floating):
            valid &= ~np.isnan(self.data).any(axis=0)
        if self.nodata is not None and not np.isnan(self.nodata):
            valid &= ~(self.data == self.nodata).any(axis=0)
        return valid


def bounds_of(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    """Map bounds ``(minx, miny, maxx, maxy)`` of a ``width`` x ``height`` grid."""
    xs, ys = pixel_to_map(transform, np.array([0, width, 0, width]), np.array([0, 0, height, height]))
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def pixel_to_map(transform: Affine, col: np.ndarray | float, row: np.ndarray | float):
    """Map coordinates ``(x, y)`` of pixel positions (col, row); ``+0.5`` gives pixel centres.

    Example:
        >>> pixel_to_map(Affine(10, 0, 500000, 0, -10, 4000000), 1, 2)
        (500010.0, 3999980.0)
    """
    a, b, c, d, e, f = transform[:6]
    x = a * np.asarray(col, dtype=float) + b * np.asarray(row, dtype=float) + c
    y = d * np.asarray(col, dtype=float) + e * np.asarray(row, dtype=float) + f
    if np.ndim(x) == 0:
        return float(x), float(y)
    return x, y


def map_to_pixel(transform: Affine, x: np.ndarray | float, y: np.ndarray | float):
    """Fractional pixel positions ``(col, row)`` of map coordinates (inverse of pixel_to_map)."""
    return pixel_to_map(~transform, x, y)


def pixel_area_m2(transform: Affine, crs: CRS) -> float:
    """Area of one pixel in m²; only valid for projected CRSs in metres."""
    crs = CRS.from_user_input(crs)
    if not crs.is_projected:
        raise ValueError("pixel_area_m2 needs a projected CRS; reproject geographic rasters first")
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return abs(transform.a * transform.e - transform.b * transform.d) * unit * unit
