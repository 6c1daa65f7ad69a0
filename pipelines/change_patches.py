"""From the whole-grid change codes to classified patches (one polygon per pond).

Changed pixels are polygonised on the full code raster (no block seams). Each candidate blob is
then examined in a small window re-read from both dates:

* blobs of several ponds merged through blurred dikes are split at the dikes (markers from the
  blob's high-index cores, pixels assigned to the nearest marker);
* shape measures decide pond-like vs. free water (:mod:`tuban.imagery.ponds`);
* a lost pond is *drained* when its bottom is still wetter than dry land or darker in NIR than
  its own dike ring (a wet, lower floor inside an intact frame), else *removed* (filled in);
* the score (0-1) mixes change contrast and pond-likeness.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize, shapes
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy import ndimage
from shapely.geometry import shape

from tuban.imagery.crs import M2_PER_MU, WGS84
from tuban.imagery.ponds import (
    ShapeSettings,
    cluster_counts,
    is_pond_like,
    shape_score,
    shape_stats,
)
from tuban.pipelines.change_blobs import Blob, blob_polygons, find_blobs
from tuban.pipelines.change_blocks import CODE, BlockJob, dequantise_index
from tuban.pipelines.change_pool import StackFile, portable, results

__all__ = ["patches_from_codes", "patch_id", "split_blob"]

# rasterize() in worker threads warns about its own in-memory target (it has the transform we
# pass); the warning is spurious, so it is silenced for rasterio.features only.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.features")

COLUMNS = ["patch_id", "kind", "score", "area_m2", "area_mu", "lon", "lat", "rectangularity",
           "compactness", "aspect", "solidity", "geometry"]


def patch_id(kind: str, lon: float, lat: float) -> str:
    """Deterministic id from the kind and the centroid rounded to ~1 m.

    Example:
        >>> patch_id("new_pond", 117.123456, 24.5) == patch_id("new_pond", 117.1234561, 24.5)
        True
    """
    key = f"{kind}|{lon:.5f}|{lat:.5f}"
    return "CD-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def split_blob(blob: np.ndarray, index: np.ndarray, min_px: int,
               accept: Callable[[np.ndarray], bool] | None = None) -> np.ndarray:
    """Label array splitting a blob of merged ponds at its low-index seams (dikes).

    Tries increasing index levels inside the blob; the first level whose 1-px-eroded cores give
    two or more components of at least ``min_px // 4`` pixels wins, and every blob pixel joins
    its nearest core. A split is only kept when ``accept(labels)`` agrees (e.g. every part is
    pond-shaped), so irregular water (tidal flats, floods) is never cut into fake ponds.
    Returns labels 1..n (0 outside), or the blob itself as label 1.
    """
    labels_out = blob.astype(np.int32)
    vals = index[blob & np.isfinite(index)]
    if vals.size < 2 * min_px:
        return labels_out
    for level in (-np.inf, *np.quantile(vals, (0.25, 0.5))):
        cores = ndimage.binary_erosion(blob & (index > level), iterations=1)
        lab, n = ndimage.label(cores)
        if n < 2:
            continue
        sizes = ndimage.sum(np.ones_like(lab), lab, index=np.arange(1, n + 1))
        big = np.flatnonzero(sizes >= max(2, min_px // 4)) + 1
        if len(big) < 2:
            continue
        markers = np.where(np.isin(lab, big), lab, 0)
        _, (ri, ci) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
        nearest = np.where(blob, markers[ri, ci], 0).astype(np.int32)
        if accept is None or accept(nearest):
            return nearest
    return labels_out


def _window_for(bounds_px, grid, pad: int) -> Window:
    c0, r0, c1, r1 = bounds_px
    c0, r0 = max(0, int(c0) - pad), max(0, int(r0) - pad)
    c1, r1 = min(grid.width, int(np.ceil(c1)) + pad), min(grid.height, int(np.ceil(r1)) + pad)
    return Window(c0, r0, c1 - c0, r1 - r0)


def _blob_mask(geom, value: int, win_codes: np.ndarray, wt, shape_hw) -> np.ndarray:
    """The blob's pixels: the 4-connected component of ``value`` under an interior point.

    Same pixels as rasterizing the polygon (it was polygonised from them), ~20x cheaper.
    """
    lab, _ = ndimage.label(win_codes == value)
    pt = geom.representative_point()
    col, row = ~wt * (pt.x, pt.y)
    r, c = int(np.floor(row)), int(np.floor(col))
    if 0 <= r < shape_hw[0] and 0 <= c < shape_hw[1] and lab[r, c] > 0:
        return lab == lab[r, c]
    return rasterize([(geom, 1)], out_shape=shape_hw, transform=wt, fill=0, dtype="uint8").astype(bool)


def _examine(geom, value, stack, job: BlockJob, settings: ShapeSettings, px_area_m2):
    """Yield ``(polygon, stats, contrast, drained)`` for one polygonised blob (grid CRS)."""
    grid = job.grid
    inv = ~grid.transform
    minx, miny, maxx, maxy = geom.bounds
    c0, r1 = inv * (minx, miny)
    c1, r0 = inv * (maxx, maxy)
    win = _window_for((c0, r0, c1, r1), grid, 3)
    wt = window_transform(win, grid.transform)
    rs = slice(int(win.row_off), int(win.row_off + win.height))
    cs = slice(int(win.col_off), int(win.col_off + win.width))
    shape_hw = (int(win.height), int(win.width))
    win_codes = np.asarray(stack[0, rs, cs])
    blob = _blob_mask(geom, value, win_codes, wt, shape_hw)
    ib = dequantise_index(np.asarray(stack[1, rs, cs]))
    ia = dequantise_index(np.asarray(stack[2, rs, cs]))
    nir = np.asarray(stack[3, rs, cs]).astype(np.float32)
    wet_index = ia if value == CODE["new_water"] else ib
    min_px = max(1, int(settings.min_area_m2 / px_area_m2))
    t = job.thresholds

    def pond_fraction(labels: np.ndarray) -> tuple[int, float]:
        """How many parts are pond-like, and the share of the blob they cover."""
        n_pond, area = 0, 0
        for part in range(1, int(labels.max()) + 1):
            inside = labels == part
            polys = [shape(g) for g, v in shapes(inside.astype(np.uint8), mask=inside, transform=wt) if v == 1]
            if len(polys) == 1 and is_pond_like(shape_stats(polys[0], grid.pixel_size_m), settings,
                                                grid.pixel_size_m):
                n_pond += 1
                area += int(inside.sum())
        return n_pond, area / max(1, int(blob.sum()))

    def accept(labels: np.ndarray) -> bool:
        n_pond, share = pond_fraction(labels)
        if n_pond < 2 or share < 0.6:
            return False
        # A blob is only cut along real dikes: the seams must be clearly less wet than the
        # parts (cuts through textured flooding or tide follow no such valley).
        seam = blob & (ndimage.grey_dilation(labels, size=3) != ndimage.grey_erosion(
            np.where(blob, labels, labels.max() + 1), size=3))
        core = blob & ~seam
        if seam.sum() == 0 or core.sum() == 0:
            return False
        gap = float(np.nanmean(wet_index[core]) - np.nanmean(wet_index[seam]))
        return gap > t.change

    labels = blob.astype(np.int32)
    if blob.sum() >= 2 * min_px:
        labels = split_blob(blob, wet_index, min_px, accept)
    t = job.thresholds
    span = max(1e-6, t.water_mean - t.land_mean)
    for part in range(1, int(labels.max()) + 1):
        inside = labels == part
        if not inside.any():
            continue
        if labels.max() == 1:
            poly = geom  # the blob as polygonised on the whole grid
        else:
            polys = [shape(g) for g, v in shapes(inside.astype(np.uint8), mask=inside, transform=wt) if v == 1]
            if not polys:
                continue
            poly = max(polys, key=lambda p: p.area)
        stats = shape_stats(poly, grid.pixel_size_m)
        if stats.area_m2 < settings.min_area_m2:
            continue
        # A pond is a solid block: a 3x3 opening keeps most of it, while fragments of textured
        # flooding, shadow edges or tide (speckle around a threshold) mostly vanish.
        solidity = float(ndimage.binary_opening(inside).sum()) / float(inside.sum())
        delta = np.nanmean(np.abs(ia[inside] - ib[inside]))
        contrast = float(np.clip(delta / span, 0.0, 1.0)) if np.isfinite(delta) else 0.0
        drained = False
        if value == CODE["lost_water"]:
            ring = ndimage.binary_dilation(inside, iterations=2) & ~inside & (win_codes == CODE["land"])
            # Brightness layer: 63.5 = the land median. A drained floor is wet mud, darker than
            # its dike frame (or than dry land); fill is dry soil, as bright as the dikes or more.
            inner_b = float(np.median(nir[inside]))
            if ring.sum() >= 4:
                drained = inner_b < 0.95 * float(np.median(nir[ring]))
            else:
                drained = inner_b < 63.5
            # ... and bare: a floor now under crops or grass (low index, dark) was filled in.
            drained = drained and float(np.nanmedian(ia[inside])) > t.land_mean
        yield poly, stats, contrast, drained, solidity


def _examine_blobs(blobs: list[Blob], stack, job: BlockJob, settings: ShapeSettings) -> list[dict]:
    """Records of a chunk of blobs; ``stack`` is the result stack or, in a worker, its file."""
    if isinstance(stack, StackFile):
        stack = stack.open()
    polygons = blob_polygons(blobs, stack[0], job.grid.transform)
    return _records(zip(polygons, [b.value for b in blobs], strict=True), stack, job, settings)


def _chunks(blobs: Iterator[Blob], size: int) -> Iterator[list[Blob]]:
    chunk: list[Blob] = []
    for b in blobs:
        chunk.append(b)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _records(blobs, stack, job: BlockJob, settings: ShapeSettings) -> list[dict]:
    grid = job.grid
    px_area = grid.pixel_size_m ** 2
    out = []
    with rasterio.Env():  # one GDAL environment for the many small rasterize/shapes calls
        for geom, v in blobs:
            for poly, stats, contrast, drained, solidity in _examine(geom, v, stack, job, settings, px_area):
                pond = is_pond_like(stats, settings, grid.pixel_size_m) and solidity >= 0.6
                if v == CODE["new_water"]:
                    kind = "new_pond" if pond else "new_water"
                else:
                    kind = ("drained_pond" if drained else "removed_pond") if pond else "lost_water"
                score = 0.5 * contrast + 0.5 * (shape_score(stats, settings) if pond else 0.3)
                out.append({"kind": kind, "score": score, "area_m2": stats.area_m2,
                            "rectangularity": stats.rectangularity, "compactness": stats.compactness,
                            "aspect": stats.aspect, "solidity": solidity, "geometry": poly})
    return out


def patches_from_codes(stack: np.ndarray, job: BlockJob, settings: ShapeSettings, *,
                       pool: Executor | None = None, stack_file: StackFile | None = None,
                       ) -> gpd.GeoDataFrame:
    """Classified change patches (EPSG:4326) from the grid's result stack (see ``LAYERS``).

    Args:
        stack: ``(layers, rows, cols)`` uint8 result stack of the whole grid.
        job: the job that coded it.
        settings: pond size and shape criteria.
        pool: worker processes (see :mod:`tuban.pipelines.change_pool`); None runs in-process.
        stack_file: the stack as a file, for the workers (required with ``pool``).
    """
    grid = job.grid
    px_area = grid.pixel_size_m ** 2
    min_blob_px = max(1, int(0.5 * settings.min_area_m2 / px_area))
    # Blobs are labelled strip by strip here while the workers already examine the first
    # chunks; chunks keep their order, so the result does not depend on the worker count.
    blobs = find_blobs(stack[0], (CODE["new_water"], CODE["lost_water"]), min_blob_px)
    if pool is None:
        parts = [_examine_blobs(c, stack, job, settings) for c in _chunks(blobs, 64)]
    else:
        if stack_file is None:
            raise ValueError("worker processes need the stack as a file")
        futures = [pool.submit(portable, _examine_blobs, c, stack_file, job, settings)
                   for c in _chunks(blobs, 64)]
        parts = results(futures)
    records = [r for part in parts for r in part]
    if not records:
        empty = {c: gpd.pd.Series(dtype=str if c in ("patch_id", "kind") else float) for c in COLUMNS[:-1]}
        return gpd.GeoDataFrame(empty, geometry=gpd.GeoSeries([], crs=WGS84), crs=WGS84)
    gdf = gpd.GeoDataFrame(records, geometry="geometry", crs=grid.crs)
    cents = np.column_stack([gdf.geometry.centroid.x, gdf.geometry.centroid.y])
    ponds = gdf["kind"].str.endswith("_pond").to_numpy()
    if ponds.sum() > 1:
        near = cluster_counts(cents[ponds], settings.cluster_radius_m)
        bonus = np.minimum(near, 4) * 0.025
        gdf.loc[ponds, "score"] = np.minimum(1.0, gdf.loc[ponds, "score"].to_numpy() + bonus)
    gdf = gdf.to_crs(WGS84)
    cents_wgs = gpd.GeoSeries(shapely.points(cents), crs=grid.crs).to_crs(WGS84)
    gdf["lon"] = cents_wgs.x.round(7).to_numpy()
    gdf["lat"] = cents_wgs.y.round(7).to_numpy()
    gdf["area_m2"] = gdf["area_m2"].round(1)
    gdf["area_mu"] = (gdf["area_m2"] / M2_PER_MU).round(3)
    gdf["score"] = gdf["score"].astype(float).round(3)
    for col in ("rectangularity", "compactness", "aspect", "solidity"):
        gdf[col] = gdf[col].astype(float).round(3)
    gdf["patch_id"] = [patch_id(k, x, y) for k, x, y in zip(gdf["kind"], gdf["lon"], gdf["lat"], strict=True)]
    gdf = gdf.sort_values(["lat", "lon", "kind"], ascending=[False, True, True]).reset_index(drop=True)
    return gdf[COLUMNS]
