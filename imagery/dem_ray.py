"""Where camera rays meet a DEM: vectorised ray marching with linear refinement.

Used by :func:`tuban.imagery.camera.pixel_to_ground` when a ground elevation raster is given.
Every ray is sampled at the same along-ray steps (about one DEM cell), the first sample below
the ground is found per ray, and the crossing is interpolated linearly between the last sample
above and the first below. Earth curvature over the ranges involved (< 1 km: 8 cm) is ignored.
"""

from __future__ import annotations

import math

import numpy as np
import pymap3d

from tuban import RasterError
from tuban.imagery.crs import WGS84, transformer
from tuban.imagery.georaster import GeoRaster, map_to_pixel

__all__ = ["read_dem", "sample_dem", "march_rays", "dem_cell_m"]

_MAX_STEPS = 4000
_M_PER_DEG = 111_320.0


def read_dem(path) -> GeoRaster:
    """Read the first band of a georeferenced elevation raster (metres) as float.

    Raises:
        RasterError: unreadable, not georeferenced, or all nodata.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise RasterError(path, "DEM has no CRS")
            z = src.read(1, masked=True).astype(float).filled(np.nan)
            transform, crs = src.transform, src.crs
    except RasterioIOError as exc:
        raise RasterError(path, f"not a readable raster: {exc}") from exc
    if not np.isfinite(z).any():
        raise RasterError(path, "DEM is all nodata")
    return GeoRaster(z, transform, crs, nodata=None)


def sample_dem(dem: GeoRaster, lon_deg, lat_deg) -> np.ndarray:
    """Bilinear ground elevation (first band) at WGS84 points; NaN outside or on nodata.

    Example:
        >>> from affine import Affine
        >>> dem = GeoRaster(np.array([[0.0, 10.0], [0.0, 10.0]]), Affine(1e-4, 0, 114.0, 0, -1e-4, 30.0), "EPSG:4326")
        >>> round(float(sample_dem(dem, 114.0001, 29.9999)[0]), 6)
        5.0
    """
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=float))
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=float))
    if dem.crs != WGS84:
        x, y = transformer(WGS84, dem.crs).transform(lon, lat)
    else:
        x, y = lon, lat
    col, row = map_to_pixel(dem.transform, np.asarray(x), np.asarray(y))
    col, row = np.atleast_1d(col) - 0.5, np.atleast_1d(row) - 0.5  # pixel centres carry the values
    z = dem.data[0].astype(float)
    if dem.nodata is not None and np.isfinite(dem.nodata):
        z = np.where(z == dem.nodata, np.nan, z)
    h, w = z.shape
    c0 = np.clip(np.floor(col), 0, max(w - 2, 0)).astype(np.int64)
    r0 = np.clip(np.floor(row), 0, max(h - 2, 0)).astype(np.int64)
    c1, r1 = np.minimum(c0 + 1, w - 1), np.minimum(r0 + 1, h - 1)
    fc = np.clip(col - c0, 0.0, 1.0)
    fr = np.clip(row - r0, 0.0, 1.0)
    top = z[r0, c0] * (1 - fc) + z[r0, c1] * fc
    bottom = z[r1, c0] * (1 - fc) + z[r1, c1] * fc
    out = top * (1 - fr) + bottom * fr
    outside = (col < -0.5) | (row < -0.5) | (col > w - 0.5) | (row > h - 0.5) | ~np.isfinite(col + row)
    out[outside] = np.nan
    return out


def dem_cell_m(dem: GeoRaster, lat_deg: float) -> float:
    """Approximate DEM cell size in metres (x direction)."""
    a = abs(dem.transform.a) or abs(dem.transform.b)
    if dem.crs.is_geographic:
        return a * _M_PER_DEG * max(math.cos(math.radians(lat_deg)), 1e-3)
    unit = dem.crs.axis_info[0].unit_conversion_factor if dem.crs.axis_info else 1.0
    return a * unit


def march_rays(
    rays_ned: np.ndarray,
    *,
    lon_deg: float,
    lat_deg: float,
    height_m: float,
    dem: GeoRaster,
    camera_alt_m: float | None,
    max_range_m: float,
):
    """Ground hits of unit NED rays from a camera over a DEM.

    Args:
        rays_ned: ``(N, 3)`` unit directions.
        lon_deg, lat_deg: camera position.
        height_m: camera height above the DEM under it (used when ``camera_alt_m`` is None).
        dem: ground elevation raster.
        camera_alt_m: camera altitude in the DEM's datum, if known.
        max_range_m: horizontal range at which rays that never cross the ground are clipped.

    Returns:
        ``(lon, lat, hit)`` arrays, as :func:`~tuban.imagery.camera.pixel_to_ground`.
    """
    ground0 = float(sample_dem(dem, lon_deg, lat_deg)[0])
    if camera_alt_m is None:
        if not np.isfinite(ground0):
            nan = np.full(len(rays_ned), np.nan)
            return nan, nan.copy(), np.zeros(len(rays_ned), dtype=bool)
        camera_alt_m = ground0 + float(height_m)
    step = max(dem_cell_m(dem, lat_deg) * 0.5, 0.25)
    horiz = np.hypot(rays_ned[:, 0], rays_ned[:, 1])
    down = rays_ned[:, 2]
    length = max_range_m / np.maximum(horiz, 1e-9)  # along-ray length to the clip range
    z_min = np.nanmin(dem.data[0]) if np.isfinite(dem.data[0]).any() else camera_alt_m - height_m
    to_floor = np.where(down > 1e-9, (camera_alt_m - z_min) / np.maximum(down, 1e-9) + step, np.inf)
    length = np.minimum(length, to_floor)
    n_steps = int(min(_MAX_STEPS, max(2, math.ceil(float(length.max()) / step) + 1)))
    s = np.linspace(0.0, 1.0, n_steps)[np.newaxis, :] * length[:, np.newaxis]  # (N, S)
    north, east = s * rays_ned[:, :1], s * rays_ned[:, 1:2]
    alt = camera_alt_m - s * down[:, np.newaxis]
    lat_s = lat_deg + north / _M_PER_DEG
    lon_s = lon_deg + east / (_M_PER_DEG * max(math.cos(math.radians(lat_deg)), 1e-6))
    ground = sample_dem(dem, lon_s.ravel(), lat_s.ravel()).reshape(s.shape)
    below = alt <= ground  # NaN ground (outside the DEM) never counts as a crossing
    crossed = below.any(axis=1)
    k = np.where(crossed, below.argmax(axis=1), s.shape[1] - 1)
    k_prev = np.maximum(k - 1, 0)
    rows = np.arange(len(k))
    gap_prev = alt[rows, k_prev] - ground[rows, k_prev]
    gap_now = alt[rows, k] - ground[rows, k]
    denom = gap_prev - gap_now
    frac = np.where(crossed & (k > 0) & (np.abs(denom) > 1e-12), gap_prev / np.where(denom == 0, 1, denom), 0.0)
    s_hit = s[rows, k_prev] + np.clip(frac, 0.0, 1.0) * (s[rows, k] - s[rows, k_prev])
    s_hit = np.where(crossed, s_hit, length)
    lat, lon, _ = pymap3d.ned2geodetic(s_hit * rays_ned[:, 0], s_hit * rays_ned[:, 1], np.zeros_like(s_hit),
                                      lat_deg, lon_deg, 0.0)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float), crossed
