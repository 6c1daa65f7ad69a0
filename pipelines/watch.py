"""Re-watch against re-stocking (防复养): closed and rectified pond cases checked in new imagery.

For each watched case inside the new image, the water fraction of its polygon is measured with
NDWI (green, nir), or MNDWI (green, swir1) when the image has a SWIR band, against a per-scene
Otsu threshold (never below 0, where green stops exceeding nir/swir), and the dike structure is measured as the share of non-water pixels on the
polygon's inner edge. Water back (fraction at least ``min_water_fraction``) reopens the case as
``restocked`` with priority 1, so it goes into the next task packs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.windows import Window, from_bounds

from tuban import RasterError
from tuban.imagery.bands import resolve_roles
from tuban.imagery.crs import WGS84, transformer
from tuban.imagery.masks import SceneBrightness, cloud_shadow_mask, scene_brightness
from tuban.imagery.water import otsu_threshold
from tuban.pipelines.cases import NOT_RESTOCKABLE_VERDICTS, WATCHED, WATCHED_KINDS
from tuban.pipelines.ledger import open_ledger, utc_now

_SHADOW_REACH_PX = 40

__all__ = ["WatchSettings", "CaseCheck", "WatchResult", "polygon_water", "watch"]


@dataclass(frozen=True)
class WatchSettings:
    """Re-watch options.

    Args:
        bands: explicit band roles, e.g. ``{"green": 2, "nir": 4}`` (wins over descriptions/sensor).
        sensor: sensor preset for band roles (see :mod:`tuban.imagery.bands`).
        min_water_fraction: share of the polygon that must be water for "water back".
        min_ndwi: floor of the per-scene threshold (NDWI 0: green = nir).
        min_pixels: polygons covering fewer valid pixels are skipped as too small.
        scene_max_px: longest side of the decimated scene read for the Otsu threshold.
        max_cloud_fraction: polygons more covered by cloud or cloud shadow are skipped (unknown),
            never judged dry.
    """

    bands: dict[str, int] | None = None
    sensor: str | None = None
    min_water_fraction: float = 0.5
    min_ndwi: float = 0.0
    min_pixels: int = 4
    scene_max_px: int = 2048
    max_cloud_fraction: float = 0.5


@dataclass(frozen=True)
class CaseCheck:
    """What the new image shows for one case."""

    case_id: str
    water_fraction: float
    dike_fraction: float | None
    pixels: int
    water_back: bool


@dataclass(frozen=True)
class WatchResult:
    """One watch run."""

    threshold_ndwi: float
    checked: tuple[CaseCheck, ...] = ()
    reopened: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    unchanged: bool = False


def _ndwi(green: np.ndarray, nir: np.ndarray) -> np.ndarray:
    g, n = green.astype(np.float64), nir.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (g - n) / (g + n)
    out[~np.isfinite(out)] = np.nan
    return out


def polygon_water(ndwi: np.ndarray, inside: np.ndarray, threshold: float) -> tuple[float, float | None, int]:
    """Water fraction inside a polygon mask, dike fraction on its inner edge, valid pixel count.

    Args:
        ndwi: NDWI of a window (NaN where invalid).
        inside: True inside the polygon, same shape.
        threshold: NDWI above which a pixel is water.

    Example:
        >>> nd = np.full((5, 5), 0.6); nd[0, :] = nd[-1, :] = nd[:, 0] = nd[:, -1] = -0.3
        >>> wf, df, n = polygon_water(nd, np.ones((5, 5), bool), 0.1)
        >>> round(wf, 2), round(df, 2), n
        (0.36, 1.0, 25)
    """
    valid = inside & np.isfinite(ndwi)
    n = int(valid.sum())
    if n == 0:
        return 0.0, None, 0
    water = ndwi > threshold
    frac = float((water & valid).sum() / n)
    pad = np.pad(inside, 1, constant_values=False)
    interior = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:] & inside
    edge = valid & ~interior
    dike = float((~water & edge).sum() / edge.sum()) if edge.sum() else None
    return frac, dike, n


def _roles(src: rasterio.DatasetReader, settings: WatchSettings, path: Path) -> dict[str, int]:
    """Band roles: green and nir required; swir1 switches to MNDWI; blue/red help the cloud mask."""
    roles = resolve_roles(src.count, descriptions=src.descriptions, explicit=settings.bands,
                          sensor=settings.sensor, required=(("green",), ("nir",)), source=str(path))
    return {r: i for r, i in roles.items() if r in ("blue", "green", "red", "nir", "swir1")}


def _water_index(bands: dict[str, np.ndarray]) -> np.ndarray:
    """MNDWI (green, swir1) when the image has SWIR (better on turbid and algae water), else NDWI."""
    return _ndwi(bands["green"], bands["swir1"] if "swir1" in bands else bands["nir"])


def _bands(data: np.ma.MaskedArray, roles: dict[str, int]) -> dict[str, np.ndarray]:
    return {r: data[k].astype(np.float64).filled(np.nan) for k, r in enumerate(roles)}


def _scene(src, roles: dict[str, int], settings: WatchSettings) -> tuple[float, SceneBrightness]:
    """Per-scene NDWI threshold (Otsu, floored at ``min_ndwi``) and brightness levels for clouds."""
    scale = min(1.0, settings.scene_max_px / max(src.width, src.height))
    shape = (max(1, int(src.height * scale)), max(1, int(src.width * scale)))
    data = src.read(list(roles.values()), out_shape=(len(roles), *shape), resampling=Resampling.average, masked=True)
    bands = _bands(data, roles)
    valid = np.all([np.isfinite(b) for b in bands.values()], axis=0)
    ref = scene_brightness(bands, valid)
    cloud, shadow = cloud_shadow_mask(bands, ref)
    nd = _water_index(bands)
    t, _ = otsu_threshold(nd[np.isfinite(nd) & ~cloud & ~shadow])
    return max(float(t), settings.min_ndwi), ref


def _check(src, roles: dict[str, int], ref: SceneBrightness, case: dict[str, Any], threshold: float,
           settings: WatchSettings) -> CaseCheck | str:
    to_src = transformer(WGS84, src.crs)
    geom = shapely.transform(case["geometry"], lambda xy: np.column_stack(to_src.transform(xy[:, 0], xy[:, 1])))
    if not geom.intersects(shapely.box(*src.bounds)):
        return "outside the image"
    minx, miny, maxx, maxy = geom.bounds
    win = from_bounds(minx, miny, maxx, maxy, src.transform)
    pad = _SHADOW_REACH_PX  # context so a shadow's cloud is in the window
    col0, row0 = max(0, math.floor(win.col_off) - pad), max(0, math.floor(win.row_off) - pad)
    col1 = min(src.width, math.ceil(win.col_off + win.width) + pad)
    row1 = min(src.height, math.ceil(win.row_off + win.height) + pad)
    if col1 <= col0 or row1 <= row0:
        return "outside the image"
    win = Window(col0, row0, col1 - col0, row1 - row0)
    bands = _bands(src.read(list(roles.values()), window=win, masked=True), roles)
    cloud, shadow = cloud_shadow_mask(bands, ref, shadow_reach_px=_SHADOW_REACH_PX)
    nd = _water_index(bands)
    inside = ~geometry_mask([geom], out_shape=nd.shape, transform=src.window_transform(win), all_touched=False)
    covered = inside & (cloud | shadow)
    if inside.any() and covered.sum() > settings.max_cloud_fraction * inside.sum():
        return f"cloud or cloud shadow over {covered.sum() / inside.sum():.0%} of the polygon"
    nd[cloud | shadow] = np.nan
    frac, dike, count = polygon_water(nd, inside, threshold)
    if count < settings.min_pixels:
        return f"only {count} valid pixels inside the polygon"
    return CaseCheck(case["case_id"], frac, dike, count, frac >= settings.min_water_fraction)


def watch(ledger_path: str | Path, image_path: str | Path, settings: WatchSettings = WatchSettings(), *,
          now: str | None = None, progress: Callable[[int, int], None] | None = None) -> WatchResult:
    """Re-check every closed or rectified case against ``image_path``; reopen the water-filled ones."""
    image_path = Path(image_path)
    if not image_path.is_file():
        raise RasterError(image_path, "file not found")
    st = image_path.stat()
    digest = hashlib.sha256(json.dumps([str(image_path.resolve()), st.st_size, st.st_mtime_ns, asdict(settings)],
                                       sort_keys=True).encode()).hexdigest()
    now = now or utc_now()
    try:
        src = rasterio.open(image_path)
    except Exception as exc:
        raise RasterError(image_path, f"cannot open raster ({exc})") from None
    with src, open_ledger(ledger_path) as led:
        if src.crs is None:
            raise RasterError(image_path, "raster has no CRS")
        roles = _roles(src, settings, image_path)
        threshold, ref = _scene(src, roles, settings)
        if led.run_with_digest("watch", digest):
            return WatchResult(threshold, unchanged=True)
        cases = led.cases(_watched_sql(), [*WATCHED, *WATCHED_KINDS, *NOT_RESTOCKABLE_VERDICTS])
        checks, skipped = [], []
        for i, case in enumerate(cases.to_dict("records")):
            res = _check(src, roles, ref, case, threshold, settings)
            if isinstance(res, str):
                skipped.append((case["case_id"], res))
            else:
                checks.append(res)
            if progress:
                progress(i + 1, len(cases))
        with led.transaction():
            run_id = led.start_run("watch", digest=digest, inputs={"image": str(image_path), "threshold_ndwi": threshold})
            reopened = []
            for c in checks:
                detail = json.dumps({"image": image_path.name, "water_fraction": round(c.water_fraction, 3),
                                     "dike_fraction": None if c.dike_fraction is None else round(c.dike_fraction, 3),
                                     "pixels": c.pixels, "threshold_ndwi": round(threshold, 4)})
                if c.water_back:
                    led.set_status(c.case_id, "restocked", "restocked", detail=detail, run_id=run_id, at=now,
                                   priority=1, watch_water_fraction=c.water_fraction, review_flag=1,
                                   review_reason=f"water back in {image_path.name} ({c.water_fraction:.0%} of the polygon"
                                                 + (f", dry dike edge {c.dike_fraction:.0%})" if c.dike_fraction is not None
                                                    else ")"))
                    reopened.append(c.case_id)
                else:
                    led.update_case(c.case_id, watch_water_fraction=c.water_fraction, updated_at=now)
                    led.add_event(c.case_id, "watched", None, None, detail=detail, run_id=run_id, at=now)
            led.finish_run(run_id, {"checked": len(checks), "reopened": len(reopened), "skipped": len(skipped)})
    return WatchResult(threshold, tuple(checks), tuple(reopened), tuple(skipped))


def _watched_sql() -> str:
    """Closed or rectified pond cases that were not verified legal or a false change."""
    q = lambda items: ", ".join("?" * len(items))  # noqa: E731
    return (f"status IN ({q(WATCHED)}) AND kind IN ({q(WATCHED_KINDS)}) "
            f"AND COALESCE(verdict, '') NOT IN ({q(NOT_RESTOCKABLE_VERDICTS)})")
