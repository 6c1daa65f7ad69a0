"""Sliced object detection over large georeferenced rasters (``tuban detect``).

The raster is never loaded whole: it is cut into overlapping slices (:func:`slice_windows`),
each read as a window, stretched to uint8 RGB with ONE per-raster stretch (robust percentiles
of a bounded, block-aligned sample), skipped when it holds only nodata, and sent to the detector in batches
while a reader thread prepares the next batch. Pixel detections are moved into the raster's
global pixel frame (an affine image of map coordinates, so merging there equals merging in map
coordinates), merged across slice seams so one pond is one feature (:func:`merge_detections`),
then georeferenced to polygons in EPSG:4326 with ``label``, ``score``, ``area_m2``, ``lon``,
``lat``.

Raster input is read through :mod:`tuban.imagery.slice_source` (file, several tiles via a VRT,
or an XYZ tile folder).
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import MultiPoint, Polygon

from tuban import RasterError
from tuban.imagery.crs import WGS84, areas_m2, transformer
from tuban.imagery.georaster import pixel_to_map
from tuban.imagery.slice_source import open_slice_source, resolve_rgb_bands
from tuban.imagery.slicing import (
    Window,
    auto_upscale,
    compute_stretch,
    iter_batches,
    model_window_px,
    raster_gsd_m,
    read_model_slices,
    slice_windows,
)
from tuban.models.detector import Detection, Detector

__all__ = ["DetectSettings", "DetectStats", "PixelDetection", "detect_raster", "merge_detections",
           "detections_to_gdf", "auto_upscale"]

Progress = Callable[[int, int], None]
_EDGE_PX = 2.0  # a box this close to an inner slice edge is cut by the seam


@dataclass(frozen=True)
class DetectSettings:
    """Slicing and merging settings.

    Args:
        tile_size_px: slice size in raster pixels (objects keep their pixel scale).
        overlap_px: overlap between neighbouring slices.
        batch: slices per detector call.
        bands: ``--bands`` spec (``"3,2,1"``, ``"r,g,b"``) or None for automatic.
        merge_iou: IoU above which two boxes are the same object.
        merge_ios: intersection over the smaller box above which the smaller is a piece of the larger.
        upscale: resample slices by this factor before the model (tile and overlap stay in model
            pixels); None = automatic from the detector's ``gsd_m`` (see :func:`auto_upscale`).
    """

    tile_size_px: int = 640
    overlap_px: int = 64
    batch: int = 8
    bands: str | None = None
    merge_iou: float = 0.5
    merge_ios: float = 0.6
    upscale: float | None = None

    def __post_init__(self) -> None:
        if self.tile_size_px < 32:
            raise ValueError("tile_size_px must be >= 32")
        if not 0 <= self.overlap_px < self.tile_size_px // 2:
            raise ValueError("overlap_px must be >= 0 and below half the tile size")
        if self.batch < 1:
            raise ValueError("batch must be >= 1")


@dataclass(frozen=True)
class DetectStats:
    """What a run did and where the time went (seconds)."""

    slices_total: int
    slices_inferred: int
    slices_skipped_nodata: int
    detections_raw: int
    detections_merged: int
    read_s: float
    model_s: float
    wall_s: float
    upscale: float = 1.0
    #: the per-raster stretch pre-pass (sample read + percentiles), part of ``wall_s``.
    stretch_s: float = 0.0


@dataclass(frozen=True)
class PixelDetection:
    """A detection in the raster's global pixel frame, with the slice edges that cut it.

    Args:
        box_px: ``(x0, y0, x1, y1)`` global pixels.
        score: confidence.
        label: class name.
        polygon_px: global outline (oriented box) or () for the box.
        cut: ``(left, top, right, bottom)``: True where the box touches an inner slice edge.
    """

    box_px: tuple[float, float, float, float]
    score: float
    label: str
    polygon_px: tuple[tuple[float, float], ...] = ()
    cut: tuple[bool, bool, bool, bool] = (False, False, False, False)


def to_global(det: Detection, win: Window, raster_w: int, raster_h: int) -> PixelDetection:
    """Shift a slice detection into global pixels and flag the inner slice edges it touches."""
    x0, y0, x1, y1 = det.box_px
    cut = (x0 <= _EDGE_PX and win.col_off > 0,
           y0 <= _EDGE_PX and win.row_off > 0,
           x1 >= win.width - _EDGE_PX and win.col_off + win.width < raster_w,
           y1 >= win.height - _EDGE_PX and win.row_off + win.height < raster_h)
    poly = tuple((x + win.col_off, y + win.row_off) for x, y in det.polygon_px)
    box = (x0 + win.col_off, y0 + win.row_off, x1 + win.col_off, y1 + win.row_off)
    return PixelDetection(box, det.score, det.label, poly, cut)


def _overlap_1d(a0, a1, b0, b1):
    return np.maximum(0.0, np.minimum(a1, b1) - np.maximum(a0, b0))


def merge_detections(dets: list[PixelDetection], *, iou: float = 0.5, ios: float = 0.6,
                     overlap_px: int = 64) -> list[PixelDetection]:
    """Greedy merge of detections from overlapping slices so one object gives one detection.

    Two boxes of the same label are merged when (a) IoU >= ``iou`` (the same object seen twice),
    (b) intersection over the smaller box >= ``ios`` (a piece inside a whole), or (c) one of them
    is cut by a slice seam, they overlap across the seam by at least half of what the overlap
    strip allows, and their extents along the seam agree (1-D IoU >= 0.5): the two halves of an
    object larger than the overlap. Highest score first; the merged box is the union, the score
    the maximum, the outline the minimum rotated rectangle of the members' outlines.

    Example:
        >>> a = PixelDetection((300, 10, 640, 90), 0.9, "pond", cut=(False, False, True, False))
        >>> b = PixelDetection((576, 12, 900, 88), 0.8, "pond", cut=(True, False, False, False))
        >>> [d.box_px for d in merge_detections([a, b])]
        [(300.0, 10.0, 900.0, 90.0)]
    """
    if not dets:
        return []
    order = sorted(range(len(dets)), key=lambda i: -dets[i].score)
    boxes = np.array([dets[i].box_px for i in order], float)
    cuts = np.array([dets[i].cut for i in order], bool)
    labels = np.array([dets[i].label for i in order])
    free = np.ones(len(order), bool)
    out: list[PixelDetection] = []
    for k in range(len(order)):
        if not free[k]:
            continue
        free[k] = False
        members = [k]
        box = boxes[k].copy()
        cut_h, cut_v = bool(cuts[k, 0] or cuts[k, 2]), bool(cuts[k, 1] or cuts[k, 3])
        changed = True
        while changed:
            changed = False
            cand = np.flatnonzero(free & (labels == labels[k]))
            if cand.size == 0:
                break
            b = boxes[cand]
            ix = _overlap_1d(box[0], box[2], b[:, 0], b[:, 2])
            iy = _overlap_1d(box[1], box[3], b[:, 1], b[:, 3])
            inter = ix * iy
            area_a = (box[2] - box[0]) * (box[3] - box[1])
            area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            iou_v = inter / (area_a + area_b - inter)
            ios_v = inter / np.minimum(area_a, area_b)
            wa, ha = box[2] - box[0], box[3] - box[1]
            wb, hb = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
            cb_h = cuts[cand, 0] | cuts[cand, 2]
            cb_v = cuts[cand, 1] | cuts[cand, 3]
            y_agree = iy / (ha + hb - iy) >= 0.5
            x_agree = ix / (wa + wb - ix) >= 0.5
            seam_h = (cut_h | cb_h) & y_agree & (ix >= 0.5 * np.minimum(np.minimum(wa, wb), max(overlap_px, 1)))
            seam_v = (cut_v | cb_v) & x_agree & (iy >= 0.5 * np.minimum(np.minimum(ha, hb), max(overlap_px, 1)))
            hit = cand[(inter > 0) & ((iou_v >= iou) | (ios_v >= ios) | seam_h | seam_v)]
            if hit.size:
                changed = True
                free[hit] = False
                members.extend(hit.tolist())
                box = np.array([min(box[0], boxes[hit, 0].min()), min(box[1], boxes[hit, 1].min()),
                                max(box[2], boxes[hit, 2].max()), max(box[3], boxes[hit, 3].max())])
                cut_h = cut_h or bool(cuts[hit][:, [0, 2]].any())
                cut_v = cut_v or bool(cuts[hit][:, [1, 3]].any())
        src = [dets[order[m]] for m in members]
        poly: tuple[tuple[float, float], ...] = ()
        if any(d.polygon_px for d in src):
            if len(src) == 1:
                poly = src[0].polygon_px
            else:
                pts = [p for d in src for p in (d.polygon_px or _box_outline(d.box_px))]
                rect = MultiPoint(pts).minimum_rotated_rectangle
                poly = tuple((float(x), float(y)) for x, y in list(rect.exterior.coords)[:-1])
        out.append(PixelDetection(tuple(float(v) for v in box), float(src[0].score), src[0].label, poly))
    return out


def _box_outline(box):
    x0, y0, x1, y1 = box
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def detections_to_gdf(dets: list[PixelDetection], transform, crs) -> gpd.GeoDataFrame:
    """Georeference global-pixel detections: EPSG:4326 polygons with label, score, area_m2, lon, lat."""
    cols = ["label", "score", "area_m2", "lon", "lat"]
    if not dets:
        return gpd.GeoDataFrame({c: [] for c in cols}, geometry=[], crs=WGS84)
    polys = []
    for d in dets:
        ring = np.array(d.polygon_px or _box_outline(d.box_px), float)
        xs, ys = pixel_to_map(transform, ring[:, 0], ring[:, 1])
        polys.append(Polygon(zip(xs, ys, strict=True)))
    gdf = gpd.GeoDataFrame({"label": [d.label for d in dets], "score": [round(d.score, 4) for d in dets]},
                           geometry=polys, crs=crs)
    cent = shapely.centroid(gdf.geometry.values)
    lon, lat = transformer(crs, WGS84).transform(shapely.get_x(cent), shapely.get_y(cent))
    gdf = gdf.to_crs(WGS84)
    # measured from lon/lat in local UTM: a "metric" source CRS such as Web Mercator is not equal-area
    gdf["area_m2"] = np.round(np.asarray(areas_m2(gdf), float), 1)
    gdf["lon"] = np.round(lon, 7)
    gdf["lat"] = np.round(lat, 7)
    return gdf[cols + ["geometry"]]


def _scaled(det: Detection, up: float) -> Detection:
    if up == 1.0:
        return det
    return Detection(tuple(v / up for v in det.box_px), det.score, det.label,
                     tuple((x / up, y / up) for x, y in det.polygon_px))


def _read_batch(src, bands, stretch, wins: list[Window], up: float = 1.0):
    t0 = time.perf_counter()
    kept, images = read_model_slices(src, bands, stretch, wins, up)
    return kept, images, time.perf_counter() - t0


def detect_raster(raster: str | Path | list, detector: Detector, settings: DetectSettings | None = None,
                  progress: Progress | None = None) -> tuple[gpd.GeoDataFrame, DetectStats]:
    """Run ``detector`` over a whole raster by slices; return EPSG:4326 detections and stats.

    Args:
        raster: a raster path, several paths / a folder / a glob (mosaicked), or an XYZ folder.
        detector: any :class:`tuban.models.detector.Detector`.
        settings: slicing settings.
        progress: optional ``callback(done_slices, total_slices)``.

    Raises:
        RasterError: unreadable, non-georeferenced or all-nodata raster, or fewer than 3 bands
            without an explicit ``bands`` spec (a grey image runs only with ``bands="1,1,1"``).
        BandError: bands cannot be resolved.
    """
    s = settings or DetectSettings()
    t_wall = time.perf_counter()
    src = open_slice_source(raster)
    try:
        if src.count < 3 and not s.bands:
            raise RasterError(src.path, f"{src.count} band{'s' if src.count > 1 else ''}; the detector needs a colour "
                              "(R,G,B) image; for a grey image pass --bands 1,1,1 (grey copied to R, G and B)")
        bands = resolve_rgb_bands(src.band_names, src.count, s.bands, src.path)
        t0 = time.perf_counter()
        sample, valid = src.read_stretch_sample(bands)
        if not valid.any():
            raise RasterError(src.path, "raster holds only nodata")
        stretch = compute_stretch(sample, valid)
        stretch_s = time.perf_counter() - t0
        up = s.upscale if s.upscale is not None else auto_upscale(
            raster_gsd_m(src.transform, src.crs, src.width, src.height), getattr(detector, "gsd_m", None))
        overlap_px = int(round(s.overlap_px / up))  # raster pixels
        wins = slice_windows(src.width, src.height, model_window_px(s.tile_size_px, up), overlap_px)
        batches = list(iter_batches(wins, s.batch))
        raw: list[PixelDetection] = []
        read_s = model_s = 0.0
        inferred = done = 0
        with cf.ThreadPoolExecutor(max_workers=1) as pool:  # read batch n+1 while the model runs batch n
            pending = pool.submit(_read_batch, src, bands, stretch, batches[0], up) if batches else None
            for i in range(len(batches)):
                kept, images, dt = pending.result()  # type: ignore[union-attr]
                read_s += dt
                pending = pool.submit(_read_batch, src, bands, stretch, batches[i + 1], up) if i + 1 < len(batches) else None
                if images:
                    t0 = time.perf_counter()
                    results = detector.detect_batch(images)
                    model_s += time.perf_counter() - t0
                    inferred += len(images)
                    for w, dets in zip(kept, results, strict=True):
                        raw.extend(to_global(_scaled(d, up), w, src.width, src.height) for d in dets)
                done += len(batches[i])
                if progress:
                    progress(done, len(wins))
        merged = merge_detections(raw, iou=s.merge_iou, ios=s.merge_ios, overlap_px=overlap_px)
        gdf = detections_to_gdf(merged, src.transform, src.crs)
    finally:
        src.close()
    stats = DetectStats(len(wins), inferred, len(wins) - inferred, len(raw), len(merged),
                        round(read_s, 3), round(model_s, 3), round(time.perf_counter() - t_wall, 3), up,
                        round(stretch_s, 3))
    return gdf, stats
