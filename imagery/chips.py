"""Image chips: a small PNG of a raster around one polygon, with the polygon outlined.

Used for the before/after evidence of a case in a task pack. Reads only the window around the
polygon (decimated to the chip size), stretches each band between its 2nd and 98th percentile,
and draws the polygon outline so an officer sees exactly which patch is meant.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from PIL import Image, ImageDraw
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window, from_bounds

from tuban import RasterError
from tuban.imagery.crs import WGS84, transformer

__all__ = ["rgb_band_indexes", "stretch_to_uint8", "render_chip", "render_chip_from"]

_NAMES = {"red": ("red", "b4", "b04"), "green": ("green", "b3", "b03"), "blue": ("blue", "b2", "b02")}


def rgb_band_indexes(colorinterp: tuple, descriptions: tuple) -> tuple[int, ...]:
    """1-based band indexes to show as RGB (or one band as grey).

    Uses the colour interpretation, then band descriptions (``red``/``B4``...), else the first
    three bands (or the first band when there are fewer than three).

    Example:
        >>> rgb_band_indexes((ColorInterp.gray,) * 4, ("B2", "B3", "B4", "B8"))
        (3, 2, 1)
    """
    ci = {c: i + 1 for i, c in reversed(list(enumerate(colorinterp)))}
    if all(c in ci for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return ci[ColorInterp.red], ci[ColorInterp.green], ci[ColorInterp.blue]
    desc = [(d or "").strip().lower() for d in descriptions]
    found = [next((i + 1 for i, d in enumerate(desc) if d in _NAMES[role]), 0) for role in ("red", "green", "blue")]
    if all(found):
        return tuple(found)
    n = len(colorinterp)
    return (1, 2, 3) if n >= 3 else (1,)


def stretch_to_uint8(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-band 2-98 percentile stretch of ``(bands, rows, cols)`` to uint8; invalid -> 0."""
    out = np.zeros(data.shape, dtype=np.uint8)
    for b in range(data.shape[0]):
        vals = data[b][valid]
        if vals.size == 0:
            continue
        lo, hi = np.percentile(vals, [2, 98])
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out[b] = np.clip((data[b].astype(float) - lo) * scale, 0, 255).astype(np.uint8)
        out[b][~valid] = 0
    return out


def render_chip(raster_path: str | Path, geom_wgs84: Any, *, size_px: int = 256,
                margin: float = 0.5) -> bytes | None:
    """A PNG of ``raster_path`` around a polygon given in EPSG:4326, or None if it lies outside.

    Args:
        raster_path: any georeferenced raster rasterio reads.
        geom_wgs84: the case polygon, lon/lat.
        size_px: longest side of the chip.
        margin: context around the polygon, as a fraction of its larger side.
    """
    try:
        src = rasterio.open(raster_path)
    except Exception as exc:
        raise RasterError(raster_path, f"cannot open raster ({exc})") from None
    with src:
        return render_chip_from(src, geom_wgs84, size_px=size_px, margin=margin)


def render_chip_from(src: Any, geom_wgs84: Any, *, size_px: int = 256, margin: float = 0.5) -> bytes | None:
    """:func:`render_chip` on an open rasterio dataset (keep it open for many chips: block cache)."""
    raster_path = src.name
    if src.crs is None:
        raise RasterError(raster_path, "raster has no CRS")
    geom = shapely.transform(geom_wgs84, lambda xy: np.column_stack(
        transformer(WGS84, src.crs).transform(xy[:, 0], xy[:, 1])))
    minx, miny, maxx, maxy = geom.bounds
    # context: a share of the polygon, but never less than 16 pixels each side
    pad = max(max(maxx - minx, maxy - miny) * margin, max(abs(src.res[0]), abs(src.res[1])) * 16)
    win = from_bounds(minx - pad, miny - pad, maxx + pad, maxy + pad, src.transform)
    full = Window(0, 0, src.width, src.height)
    try:
        win = win.intersection(full).round_offsets().round_lengths()
    except Exception:
        return None
    if win.width < 1 or win.height < 1:
        return None
    scale = min(1.0, size_px / max(win.width, win.height))
    shape = (max(1, round(win.height * scale)), max(1, round(win.width * scale)))
    bands = rgb_band_indexes(tuple(src.colorinterp), tuple(src.descriptions))
    data = src.read(list(bands), window=win, out_shape=(len(bands), *shape), resampling=Resampling.average,
                    masked=True)
    valid = ~np.ma.getmaskarray(data).any(axis=0) & np.isfinite(data.filled(0)).all(axis=0)
    img = stretch_to_uint8(np.asarray(data.filled(0), dtype=float), valid)
    wt = src.window_transform(win)
    rgb = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img
    pil = Image.fromarray(np.moveaxis(rgb, 0, -1), "RGB")
    if max(pil.size) < size_px:  # small windows: enlarge with crisp pixels so a phone shows them
        up = size_px / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * up)), max(1, round(pil.height * up))), Image.Resampling.NEAREST)
        scale *= up
    draw = ImageDraw.Draw(pil)
    inv = ~wt
    polys = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
    for poly in polys:
        ring = [inv @ (x, y) for x, y in poly.exterior.coords]
        draw.line([(c * scale, r * scale) for c, r in ring], fill=(255, 40, 40), width=2)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
