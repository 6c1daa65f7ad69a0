"""Tell aquaculture ponds from rivers, lakes and flooded fields by shape and neighbourhood.

Ponds are dug rectangles of 0.05-10 ha, 50-300 m on a side, in regular clusters separated by
dikes. A changed-water blob is called pond-like when, in a metric CRS,

* its area lies in ``[min_area_m2, max_area_m2]`` (0.05-10 ha by default);
* its rectangularity (area / minimum rotated rectangle area) is high (pixelated rectangles of a
  few pixels still reach ~0.7, rivers and irregular flooding stay far lower);
* its rectangle is not a ribbon (aspect ratio <= ``max_aspect``);
* its Polsby-Popper compactness of the *simplified* outline is not tiny (rules out dendritic
  shapes that happen to fill their rectangle).

A pond lying near other pond-like blobs (a cluster) gets a small score bonus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

__all__ = ["ShapeSettings", "ShapeStats", "shape_stats", "shape_stats_many", "is_pond_like", "shape_score", "cluster_counts"]


@dataclass(frozen=True)
class ShapeSettings:
    """Pond shape criteria (areas in m², lengths in m)."""

    min_area_m2: float = 500.0
    max_area_m2: float = 100_000.0
    min_rectangularity: float = 0.65
    max_aspect: float = 6.0
    min_compactness: float = 0.3
    cluster_radius_m: float = 300.0


@dataclass(frozen=True)
class ShapeStats:
    """Shape measures of one polygon in a metric CRS."""

    area_m2: float
    rectangularity: float
    aspect: float
    compactness: float
    side_min_m: float
    side_max_m: float


def shape_stats(geom: BaseGeometry, pixel_size_m: float) -> ShapeStats:
    """Area, rectangularity, aspect ratio and compactness of ``geom`` (metric CRS).

    Example:
        >>> from shapely.geometry import box
        >>> s = shape_stats(box(0, 0, 100, 50), 10.0)
        >>> round(s.rectangularity, 3), round(s.aspect, 1)
        (1.0, 2.0)
    """
    area = float(geom.area)
    if area <= 0:
        return ShapeStats(0.0, 0.0, math.inf, 0.0, 0.0, 0.0)
    # Simplify by 3/4 pixel so staircase edges of rotated ponds do not inflate the perimeter or
    # the bounding rectangle (rectangularity and compactness are measured on this outline).
    # Holes (a few unchanged pixels inside, aerators) are filled first: they say nothing about
    # the outline, and their rims would swamp the perimeter (texture is judged by solidity).
    if geom.geom_type == "Polygon" and len(geom.interiors):
        geom_outline = shapely.Polygon(geom.exterior)
    else:
        geom_outline = geom
    smooth = geom_outline.simplify(pixel_size_m * 0.75, preserve_topology=True)
    if smooth.is_empty or smooth.area <= 0:
        smooth = geom
    rect = shapely.minimum_rotated_rectangle(smooth)
    coords = np.asarray(rect.exterior.coords) if rect.geom_type == "Polygon" else np.zeros((5, 2))
    sides = np.hypot(*np.diff(coords[:3], axis=0).T) if len(coords) >= 3 else np.array([0.0, 0.0])
    side_min, side_max = float(sides.min()), float(sides.max())
    rect_area = float(rect.area) if rect.area > 0 else area
    aspect = side_max / side_min if side_min > 0 else math.inf
    perim = float(smooth.length) or float(geom.length)
    compact = 4.0 * math.pi * float(smooth.area) / (perim * perim) if perim > 0 else 0.0
    area_s = float(smooth.area)
    return ShapeStats(area, min(1.0, area_s / rect_area), aspect, min(1.0, compact), side_min, side_max)


def shape_stats_many(geoms, pixel_size_m: float) -> list[ShapeStats]:
    """:func:`shape_stats` of each geometry, the GEOS steps vectorised over all of them.

    The same GEOS operations (simplify, minimum rotated rectangle, areas, lengths) on the same
    geometries and the same float arithmetic per geometry, so the same numbers, bit for bit;
    without the per-geometry cost of shapely's Python wrappers (a chunk of blobs at once).
    """
    geoms = np.asarray(list(geoms), dtype=object)
    if geoms.size == 0:
        return []
    area = shapely.area(geoms)
    outline = geoms.copy()
    holed = (shapely.get_type_id(geoms) == 3) & (shapely.get_num_interior_rings(geoms) > 0)
    if holed.any():  # holes filled first (see shape_stats)
        outline[holed] = shapely.polygons(shapely.get_exterior_ring(geoms[holed]))
    smooth = shapely.simplify(outline, pixel_size_m * 0.75, preserve_topology=True)
    smooth_area = shapely.area(smooth)
    fallback = shapely.is_empty(smooth) | (smooth_area <= 0)
    if fallback.any():
        smooth[fallback] = geoms[fallback]
        smooth_area = shapely.area(smooth)
    rect = shapely.minimum_rotated_rectangle(smooth)
    rect_area = shapely.area(rect)
    is_poly = shapely.get_type_id(rect) == 3
    corners = np.zeros((geoms.size, 3, 2))  # first three corners of each rectangle (0 when none)
    if is_poly.any():
        xy, which = shapely.get_coordinates(shapely.get_exterior_ring(rect[is_poly]), return_index=True)
        first = np.searchsorted(which, np.arange(int(is_poly.sum())))
        corners[is_poly] = xy[first[:, None] + np.arange(3)]
    steps = np.diff(corners, axis=1)
    sides = np.hypot(steps[..., 0], steps[..., 1])
    length, geom_length = shapely.length(smooth), shapely.length(geoms)
    out = []
    for i in range(geoms.size):
        a = float(area[i])
        if a <= 0:
            out.append(ShapeStats(0.0, 0.0, math.inf, 0.0, 0.0, 0.0))
            continue
        s0, s1 = float(sides[i, 0]), float(sides[i, 1])
        side_min, side_max = min(s0, s1), max(s0, s1)
        r_area = float(rect_area[i]) if rect_area[i] > 0 else a
        aspect = side_max / side_min if side_min > 0 else math.inf
        perim = float(length[i]) or float(geom_length[i])
        area_s = float(smooth_area[i])
        compact = 4.0 * math.pi * area_s / (perim * perim) if perim > 0 else 0.0
        out.append(ShapeStats(a, min(1.0, area_s / r_area), aspect, min(1.0, compact), side_min, side_max))
    return out


def is_pond_like(stats: ShapeStats, settings: ShapeSettings, pixel_size_m: float = 0.0) -> bool:
    """Whether a blob with ``stats`` passes the pond size and shape criteria.

    A blob narrower than two pixels is never a pond: at that width edges, dikes and residual
    misregistration make slivers, and a real pond is not resolved.
    """
    return (
        settings.min_area_m2 <= stats.area_m2 <= settings.max_area_m2
        and stats.side_min_m >= 2.0 * pixel_size_m
        and stats.rectangularity >= settings.min_rectangularity
        and stats.aspect <= settings.max_aspect
        and stats.compactness >= settings.min_compactness
    )


def shape_score(stats: ShapeStats, settings: ShapeSettings) -> float:
    """0-1 pond-likeness: rectangularity and compactness scaled between criterion and ideal."""
    r = (stats.rectangularity - settings.min_rectangularity) / max(1e-6, 1.0 - settings.min_rectangularity)
    c = (stats.compactness - settings.min_compactness) / max(1e-6, 0.785 - settings.min_compactness)
    # min/max on Python floats: np.clip's result (NaN kept), without its per-call overhead
    return float(min(max(0.5 + 0.25 * min(max(r, 0.0), 1.0) + 0.25 * min(max(c, 0.0), 1.0), 0.0), 1.0))


def cluster_counts(centroids_xy: np.ndarray, radius_m: float) -> np.ndarray:
    """For each point, how many other points lie within ``radius_m`` (metric coordinates).

    A point counts when ``dx * dx + dy * dy <= radius_m * radius_m`` in float64, the test
    ``scipy.spatial.cKDTree.query_ball_point`` makes; candidates come from a grid of cells a
    little wider than the radius (so the neighbours of a point lie in the 3 x 3 cells around
    its own), which spares the ~0.1 s import of ``scipy.spatial``.

    Example:
        >>> cluster_counts(np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]]), 5.0).tolist()
        [1, 1, 0]
    """
    pts = np.asarray(centroids_xy, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    if n == 0:
        return np.zeros(0, dtype=int)
    r2 = float(radius_m) * float(radius_m)
    cell = 1.001 * float(radius_m)
    if not (math.isfinite(cell) and cell > 0 and np.isfinite(pts).all()):
        d = pts[:, None, :] - pts[None, :, :]  # a degenerate radius or input: all pairs
        with np.errstate(invalid="ignore"):
            return np.count_nonzero(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] <= r2, axis=1) - 1
    cx = np.floor((pts[:, 0] - pts[:, 0].min()) / cell).astype(np.int64)
    cy = np.floor((pts[:, 1] - pts[:, 1].min()) / cell).astype(np.int64)
    stride = int(cy.max()) + 3  # cells (cx, cy) as one sortable key, a column of cells after another
    key = cx * stride + cy + 1
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    first, count = [], []
    for dx in (-1, 0, 1):  # the 3 cells of each neighbouring column form one run of the sorted keys
        centre = key + dx * stride
        lo = np.searchsorted(sorted_key, centre - 1, side="left")
        first.append(lo)
        count.append(np.searchsorted(sorted_key, centre + 1, side="right") - lo)
    first, count = np.concatenate(first), np.concatenate(count)
    owner = np.repeat(np.tile(np.arange(n), 3), count)
    within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    other = order[np.repeat(first, count) + within]
    dx, dy = pts[other, 0] - pts[owner, 0], pts[other, 1] - pts[owner, 1]
    near = dx * dx + dy * dy <= r2
    return np.bincount(owner[near], minlength=n) - 1
