"""Small synthetic inputs for the case-ledger tests: patches, grids, frames, rasters, photos.

Everything is made in ``tmp_path`` with explicit CRSs; the place is a coastal county in Fujian
(UTM 50N) so GCJ-02 applies.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import rasterio
import shapely
from PIL import Image
from pyproj import Transformer
from rasterio.transform import from_origin

LON0, LAT0 = 119.30, 26.00
_TO_UTM = Transformer.from_crs(4326, 32650, always_xy=True)
_TO_LL = Transformer.from_crs(32650, 4326, always_xy=True)


def square(lon: float, lat: float, side_m: float) -> shapely.Polygon:
    """A square of ``side_m`` metres centred on lon/lat (built in UTM, returned in lon/lat)."""
    x, y = _TO_UTM.transform(lon, lat)
    h = side_m / 2
    ring = [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h), (x - h, y - h)]
    return shapely.Polygon([_TO_LL.transform(px, py) for px, py in ring])


def offset(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    x, y = _TO_UTM.transform(lon, lat)
    return _TO_LL.transform(x + east_m, y + north_m)


def feature(geom: shapely.Geometry, **props) -> dict:
    return {"type": "Feature", "properties": props, "geometry": shapely.geometry.mapping(geom)}


def write_fc(path: Path, features: list[dict], **top) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", **top, "features": features}, default=list),
                    encoding="utf-8")
    return path


def patch_features(centres: list[tuple[float, float]], *, side_m: float = 80.0, score: float = 0.9,
                   after: str = "2024-06-01", prefix: str = "p") -> list[dict]:
    return [feature(square(lon, lat, side_m), patch_id=f"{prefix}{i:04d}", kind="new_pond", score=score,
                    area_m2=side_m * side_m, area_mu=side_m * side_m / 666.667, lon=lon, lat=lat,
                    before_date="2023-06-01", after_date=after)
            for i, (lon, lat) in enumerate(centres)]


def grids_file(path: Path) -> Path:
    """Two grid cells split at LON0 + 0.01: G-W (admin 350181) and G-E (350182)."""
    west = shapely.box(LON0 - 0.05, LAT0 - 0.05, LON0 + 0.01, LAT0 + 0.05)
    east = shapely.box(LON0 + 0.01, LAT0 - 0.05, LON0 + 0.06, LAT0 + 0.05)
    return write_fc(path, [
        feature(west, grid_id="G-W", name="西村 <b>west</b>", admin_code="350181", officer="张三", phone="13800000001"),
        feature(east, grid_id="G-E", name="东村", admin_code="350182", officer="李四", phone="13800000002"),
    ])


def pond_raster(path: Path, ponds: list[shapely.Polygon], *, water: bool = True, size_px: int = 120,
                res_m: float = 5.0, centre: tuple[float, float] = (LON0, LAT0)) -> Path:
    """A 4-band R,G,B,NIR float32 GeoTIFF (EPSG:32650); ``ponds`` are water (or dry mud) with dikes."""
    cx, cy = _TO_UTM.transform(*centre)
    x0, y0 = cx - size_px * res_m / 2, cy + size_px * res_m / 2
    transform = from_origin(x0, y0, res_m, res_m)
    rng = np.random.default_rng(7)
    crop = np.array([0.05, 0.08, 0.04, 0.38])  # healthy crop: R, G, B, NIR
    data = np.empty((4, size_px, size_px), dtype=np.float32)
    data[:] = crop[:, None, None] * rng.uniform(0.85, 1.15, (4, size_px, size_px))
    inner = np.array([0.03, 0.06, 0.06, 0.02]) if water else np.array([0.12, 0.11, 0.09, 0.15])
    from rasterio.features import geometry_mask

    for poly in ponds:
        utm = shapely.transform(poly, lambda xy: np.column_stack(_TO_UTM.transform(xy[:, 0], xy[:, 1])))
        inside = ~geometry_mask([utm.buffer(-res_m)], (size_px, size_px), transform)
        data[:, inside] = inner[:, None] * rng.uniform(0.9, 1.1, (4, int(inside.sum())))
    with rasterio.open(path, "w", driver="GTiff", width=size_px, height=size_px, count=4, dtype="float32",
                       crs="EPSG:32650", transform=transform) as dst:
        dst.write(data)
        dst.descriptions = ("red", "green", "blue", "nir")
    return path


def _rational(v: float) -> tuple:
    d = int(v)
    m = int((v - d) * 60)
    s = round(((v - d) * 60 - m) * 60 * 100)
    return ((d, 1), (m, 1), (s, 100))


def jpeg_with_exif(lon: float, lat: float, taken: str, offset: str | None = "+08:00") -> bytes:
    """A tiny JPEG with GPS position and DateTimeOriginal ("YYYY:MM:DD HH:MM:SS")."""
    from PIL import TiffImagePlugin

    img = Image.new("RGB", (16, 16), (90, 120, 60))
    exif = img.getexif()
    gps = {1: "N" if lat >= 0 else "S", 2: tuple(TiffImagePlugin.IFDRational(a, b) for a, b in _rational(abs(lat))),
           3: "E" if lon >= 0 else "W", 4: tuple(TiffImagePlugin.IFDRational(a, b) for a, b in _rational(abs(lon)))}
    exif[0x8825] = gps
    sub = {0x9003: taken}
    if offset:
        sub[0x9011] = offset
    exif[0x8769] = sub
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()
