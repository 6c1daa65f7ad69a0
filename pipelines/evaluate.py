"""Object-level scoring of predicted patches against truth polygons.

Polygons are compared in a metric CRS. Pairs are matched greedily by decreasing IoU, each
prediction matching at most one truth polygon and vice versa; a match counts when its IoU is at
least the threshold. Precision = matched / predictions, recall = matched / truths.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely

from tuban.imagery.crs import metric_crs_for_gdf

__all__ = ["Score", "match_objects", "score_objects"]


@dataclass(frozen=True)
class Score:
    """Object-level counts and rates."""

    predictions: int
    truths: int
    matched: int
    iou_threshold: float
    mean_iou: float

    @property
    def precision(self) -> float:
        return self.matched / self.predictions if self.predictions else (1.0 if not self.truths else 0.0)

    @property
    def recall(self) -> float:
        return self.matched / self.truths if self.truths else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def as_dict(self) -> dict:
        return {"predictions": self.predictions, "truths": self.truths, "matched": self.matched,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "f1": round(self.f1, 4), "iou_threshold": self.iou_threshold,
                "mean_iou": round(self.mean_iou, 4)}


def match_objects(pred: list, truth: list, iou_threshold: float) -> list[tuple[int, int, float]]:
    """One-to-one ``(pred_index, truth_index, iou)`` matches with IoU >= threshold (metric geoms).

    Example:
        >>> from shapely.geometry import box
        >>> match_objects([box(0, 0, 10, 10), box(0, 0, 9, 10)], [box(0, 0, 10, 10)], 0.5)
        [(0, 0, 1.0)]
    """
    if not pred or not truth:
        return []
    tree = shapely.STRtree(truth)
    pi, ti = tree.query(pred, predicate="intersects")
    pairs = []
    for p, t in zip(pi.tolist(), ti.tolist(), strict=True):
        inter = pred[p].intersection(truth[t]).area
        union = pred[p].union(truth[t]).area
        iou = inter / union if union > 0 else 0.0
        if iou >= iou_threshold:
            pairs.append((iou, p, t))
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    used_p: set[int] = set()
    used_t: set[int] = set()
    out = []
    for iou, p, t in pairs:
        if p in used_p or t in used_t:
            continue
        used_p.add(p)
        used_t.add(t)
        out.append((p, t, float(iou)))
    return out


def score_objects(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *, iou_threshold: float = 0.25,
                  ) -> Score:
    """Object-level precision/recall/F1 of ``pred`` against ``truth`` (any CRSs)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError("iou_threshold must be in (0, 1]")
    pred, truth = _with_geometry(pred), _with_geometry(truth)  # null geometries match nothing
    base = truth if len(truth) else pred
    if len(base) == 0:
        return Score(0, 0, 0, iou_threshold, 0.0)
    crs = metric_crs_for_gdf(base)
    p = _valid_polygons(pred.to_crs(crs).geometry) if len(pred) else []
    t = _valid_polygons(truth.to_crs(crs).geometry) if len(truth) else []
    matches = match_objects(p, t, iou_threshold)
    mean_iou = float(np.mean([m[2] for m in matches])) if matches else 0.0
    return Score(len(p), len(t), len(matches), iou_threshold, mean_iou)


def _valid_polygons(geoms) -> list:
    """Usable geometries: null and empty ones dropped (they match nothing), invalid ones repaired."""
    return [g.buffer(0) if not g.is_valid else g for g in geoms if g is not None and not g.is_empty]


def _with_geometry(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
