"""Merge per-frame ground detections of a drone video into one feature per object.

Projected detections (:class:`GroundDetection`, made by
:func:`tuban.pipelines.uav_detect.project_detection`) are clustered greedily, best first
("best" = not cut by the frame border, then closest to nadir, then highest score): a
detection joins the first cluster whose representative it overlaps (IoU >= ``join_iou``, or
mostly inside it, as a pond cut by the frame edge is), otherwise it starts a new cluster.
Greedy-by-representative clustering cannot chain two neighbouring ponds together through one
blurry detection spanning both; such a blob becomes its own cluster and is dropped when
clusters seen in more frames already cover most of it (likewise a partial box of one pond).

The outline of an object seen whole at least once is a vote on a fine metric grid: a cell
is kept when at least half of the views whose frame saw that ground cover it (views cut by
the frame border vote only inside their frame). This removes the corners an axis-aligned box
adds around a pond seen rotated, and averages telemetry noise across frames.

Objects no frame saw whole (a pond larger than the frame) are rebuilt from their cut views
by :mod:`tuban.pipelines.uav_stitch`. ``complete`` then means: at least ``min_closed`` of the
rebuilt outline was seen as a real edge (a box side off the frame border) in some frame.
So ``complete`` is True for an object seen whole in one frame, or closed all round by the
edges seen across several frames; it is False for an object whose outline is in part only
the edge of what the flight saw. Incomplete objects are dropped unless
``require_complete`` is off.

Each feature reports ``n_frames`` (distinct frames it was seen in) and ``best_frame`` (its
uncut view closest to nadir; for a stitched object the member view closest to nadir).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from tuban.imagery.crs import WGS84, utm_crs_for
from tuban.pipelines.evaluate import match_objects
from tuban.pipelines.uav_stitch import CutView, stitch_cut_views, vote_outline

__all__ = ["UavDetectSettings", "GroundDetection", "merge_ground_detections", "match_truth",
           "DETECTION_COLUMNS"]

_CELL_M = 100.0  # spatial hash cell for finding overlapping clusters

DETECTION_COLUMNS = ("label", "score", "area_m2", "lon", "lat", "n_frames", "best_frame",
                     "best_time_s", "off_nadir_deg", "complete")


@dataclass(frozen=True)
class UavDetectSettings:
    """How detections are projected and merged.

    Args:
        min_score: detections below this confidence are ignored.
        batch_size: frames per ``detect_batch`` call.
        edge_points: points per outline edge when casting to the ground.
        border_px: a detection within this many pixels of the frame edge counts as cut.
        max_off_nadir_deg: detections whose centre ray is further from nadir are ignored
            (far oblique ground is coarse and sensitive to pitch errors).
        join_iou: IoU with a cluster representative that joins a detection to it.
        join_inside: fraction of a detection inside a representative that joins it.
        drop_covered: a cluster whose outline is at least this much covered by better
            clusters is dropped (a blob spanning neighbouring ponds).
        min_frames: clusters seen in fewer distinct sampled frames are dropped (one-frame
            fragments are mostly noise; lower it for sparse sampling).
        min_area_m2: merged objects smaller than this on the ground are dropped.
        require_complete: drop objects never seen whole (every view cut by the frame border):
            their outline would be a fragment cut by one frame, not the object.
        vote_cell_m: grid cell of the outline vote.
        vote_quorum: fraction of complete outlines that must cover a cell.
        stitch_cut: objects no frame saw whole are rebuilt from their cut views
            (:mod:`tuban.pipelines.uav_stitch`) instead of being judged by one cut view.
        vote_cut_views: cut views vote on an object's outline too, each only on the ground
            its frame saw (needs the frames' footprints); off: only uncut views vote.
        min_closed: a stitched object is complete when at least this fraction of its outline
            was seen as a real edge (a box side off the frame border) in some frame.
        detector_gsd_m: nadir pixel size (m) the detector was trained at; frames are resized
            so their nadir pixel (median height / focal length) matches it. None: frames
            as they are.
    """

    min_score: float = 0.25
    batch_size: int = 8
    edge_points: int = 6
    border_px: float = 3.0
    max_off_nadir_deg: float = 60.0
    join_iou: float = 0.5
    join_inside: float = 0.6
    drop_covered: float = 0.5
    min_frames: int = 2
    min_area_m2: float = 50.0
    require_complete: bool = True
    vote_cell_m: float = 0.25
    vote_quorum: float = 0.5
    stitch_cut: bool = True
    vote_cut_views: bool = True
    min_closed: float = 0.85
    detector_gsd_m: float | None = None


@dataclass(frozen=True)
class GroundDetection:
    """One detection of one frame, on the ground (polygon in EPSG:4326, x = lon).

    ``closed`` holds the outline's sides that are real object edges (off the frame border),
    ``footprint`` the frame's ground footprint, both EPSG:4326; None when unknown.
    """

    frame: int
    time_s: float
    label: str
    score: float
    polygon: Polygon
    off_nadir_deg: float
    cut_by_border: bool
    closed: BaseGeometry | None = None
    footprint: Polygon | None = None


def merge_ground_detections(dets: Sequence[GroundDetection], settings: UavDetectSettings | None = None,
                            ) -> gpd.GeoDataFrame:
    """Merge per-frame ground detections into one feature per object (see module doc).

    Returns:
        GeoDataFrame (EPSG:4326) with columns :data:`DETECTION_COLUMNS`, best score first.
    """
    s = settings or UavDetectSettings()
    if not dets:
        return gpd.GeoDataFrame({c: [] for c in DETECTION_COLUMNS}, geometry=[], crs=WGS84)
    c = dets[0].polygon.centroid
    utm = utm_crs_for(c.x, c.y)
    polys = gpd.GeoSeries([d.polygon for d in dets], crs=WGS84).to_crs(utm).to_numpy()
    order = sorted(range(len(dets)), key=lambda i: (dets[i].cut_by_border, round(dets[i].off_nadir_deg, 1),
                                                    -dets[i].score))
    reps: list[int] = []  # index of each cluster's representative detection
    members: list[list[int]] = []
    grid: dict[tuple[int, int], list[int]] = {}  # coarse cells -> clusters touching them
    bounds = np.array([polys[i].bounds for i in range(len(polys))])

    def cells(b: np.ndarray) -> list[tuple[int, int]]:
        x0, y0, x1, y1 = (int(v // _CELL_M) for v in b)
        return [(cx, cy) for cx in range(x0, x1 + 1) for cy in range(y0, y1 + 1)]

    for i in order:
        p, area = polys[i], polys[i].area
        joined = False
        candidates = sorted({k for c in cells(bounds[i]) for k in grid.get(c, ())})  # first-made first
        for k in candidates:
            r = reps[k]
            if dets[r].label != dets[i].label:
                continue
            q = polys[r]
            if not p.intersects(q):
                continue
            inter = p.intersection(q).area
            if inter / (area + q.area - inter) >= s.join_iou or inter / area >= s.join_inside:
                members[k].append(i)
                joined = True
                break
        if not joined:
            for c in cells(bounds[i]):
                grid.setdefault(c, []).append(len(reps))
            reps.append(i)
            members.append([i])
    rows: list[dict[str, Any]] = []
    geoms: list[Polygon] = []
    kept: list[Polygon] = []
    kept_grid: dict[tuple[int, int], list[int]] = {}
    uncut: list[int] = []  # members of clusters never seen whole (stitched below)

    def covered(q: Polygon) -> bool:
        near = [kept[j] for j in sorted({j for c in cells(np.array(q.bounds)) for j in kept_grid.get(c, ())})
                if kept[j].intersects(q)]
        return bool(near) and shapely.union_all(near).intersection(q).area >= s.drop_covered * q.area

    def emit(outline: Polygon, mem: Sequence[int], d: GroundDetection, complete: bool) -> None:
        rows.append({"label": d.label, "score": round(max(dets[m].score for m in mem), 4),
                     "area_m2": round(float(outline.area), 1), "lon": np.nan, "lat": np.nan,
                     "n_frames": len({dets[m].frame for m in mem}), "best_frame": d.frame,
                     "best_time_s": round(d.time_s, 3), "off_nadir_deg": round(d.off_nadir_deg, 2),
                     "complete": complete})
        geoms.append(outline)

    # better-supported clusters first: a partial box that happens to be the most nadir view of a
    # pond must not suppress the cluster of the whole pond seen in many more frames
    support = [len({dets[m].frame for m in mem}) for mem in members]
    for k in sorted(range(len(reps)), key=lambda k: (-support[k], k)):
        r, mem = reps[k], members[k]
        q = polys[r]
        if s.stitch_cut and dets[r].cut_by_border:
            uncut.extend(mem)
            continue
        if covered(q):
            continue
        if support[k] < s.min_frames or q.area < s.min_area_m2 or (s.require_complete and dets[r].cut_by_border):
            continue
        for c in cells(np.array(q.bounds)):
            kept_grid.setdefault(c, []).append(len(kept))
        kept.append(q)
        outline = _cluster_outline(dets, polys, mem, utm, s) or q
        if outline.area >= s.min_area_m2:
            emit(outline, mem, dets[r], not dets[r].cut_by_border)
    if uncut:
        _stitch(dets, polys, [i for i in uncut if not covered(polys[i])], utm, s, emit)
        keep = _drop_covered(geoms, [r["n_frames"] for r in rows], s.drop_covered)
        rows, geoms = [rows[i] for i in keep], [geoms[i] for i in keep]
    gdf = gpd.GeoDataFrame(rows, columns=list(DETECTION_COLUMNS), geometry=geoms, crs=utm).to_crs(WGS84)
    if len(gdf):
        cen = gpd.GeoSeries(geoms, crs=utm).centroid.to_crs(WGS84)
        gdf["lon"], gdf["lat"] = cen.x.round(7).to_numpy(), cen.y.round(7).to_numpy()
    return gdf.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def _cluster_outline(dets: Sequence[GroundDetection], polys: np.ndarray, mem: Sequence[int], utm,
                     s: UavDetectSettings) -> Polygon | None:
    """Outline of a cluster seen whole at least once: a vote of its views.

    With every view's frame footprint known, all views vote, each only on the ground its frame
    saw (a cut view neither shrinks nor grows the pond beyond its frame); otherwise only the
    uncut views vote.
    """
    if s.vote_cut_views and all(dets[m].footprint is not None for m in mem):
        feet = gpd.GeoSeries([dets[m].footprint for m in mem], crs=WGS84).to_crs(utm).to_numpy()
        return vote_outline([polys[m] for m in mem], s.vote_cell_m, s.vote_quorum, seen=list(feet))
    uncut = [polys[m] for m in mem if not dets[m].cut_by_border]
    return vote_outline(uncut, s.vote_cell_m, s.vote_quorum) if uncut else None


def _drop_covered(geoms: Sequence[Polygon], n_frames: Sequence[int], fraction: float) -> list[int]:
    """Indices of objects kept when each must not be ``fraction`` covered by better-seen ones.

    A fragment of a stitched pond (one partial box that happened to miss the frame border)
    is seen in fewer frames than the pond rebuilt around it, and is dropped here.
    """
    tree = shapely.STRtree(list(geoms))
    order = sorted(range(len(geoms)), key=lambda i: (-n_frames[i], i))
    accepted: set[int] = set()
    for i in order:
        near = [geoms[j] for j in tree.query(geoms[i], predicate="intersects").tolist() if j in accepted]
        if near and shapely.union_all(near).intersection(geoms[i]).area >= fraction * geoms[i].area:
            continue
        accepted.add(i)
    return sorted(accepted)


def _stitch(dets: Sequence[GroundDetection], polys: np.ndarray, idx: Sequence[int], utm, s: UavDetectSettings,
            emit: Callable[[Polygon, Sequence[int], GroundDetection, bool], None]) -> None:
    """Rebuild objects no frame saw whole from their cut views (``idx``) and emit them."""
    if not idx:
        return
    to_utm = [dets[i].closed for i in idx] + [dets[i].footprint for i in idx]
    known = [g if g is not None else Polygon() for g in to_utm]
    proj = gpd.GeoSeries(known, crs=WGS84).to_crs(utm).to_numpy()
    views = [CutView(polys[i], proj[n] if dets[i].closed is not None else Polygon(),
                     proj[len(idx) + n] if dets[i].footprint is not None else None, dets[i].frame, dets[i].label)
             for n, i in enumerate(idx)]
    for obj in stitch_cut_views(views, join_inside=s.join_inside, cell_m=s.vote_cell_m, quorum=s.vote_quorum):
        mem = [idx[m] for m in obj.members]
        complete = obj.closed_fraction >= s.min_closed
        if len({dets[m].frame for m in mem}) < s.min_frames or obj.outline.area < s.min_area_m2:
            continue
        if s.require_complete and not complete:
            continue
        best = min(mem, key=lambda m: (round(dets[m].off_nadir_deg, 1), -dets[m].score))
        emit(obj.outline, mem, dets[best], complete)


def match_truth(found: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *, iou_min: float = 0.5,
                ignore: gpd.GeoDataFrame | None = None, ignore_inside: float = 0.5) -> dict[str, float]:
    """Greedy one-to-one matching by IoU (metric CRS): counts, precision, recall, F1.

    Args:
        found: predictions.
        truth: the objects that must be found.
        iou_min: IoU for a match.
        ignore: "don't care" objects (e.g. ponds a clip never shows whole, which no outline
            can match): an unmatched prediction with at least ``ignore_inside`` of its area on
            them is neither a true nor a false positive (reported as ``ignored``).
        ignore_inside: see ``ignore``.

    Example:
        >>> from shapely.geometry import box
        >>> t = gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)], crs=32650)
        >>> match_truth(t, t)["f1"]
        1.0
    """
    used_f: set[int] = set()
    if len(found) == 0 or len(truth) == 0:
        tp = 0
    else:
        c = truth.to_crs(WGS84).union_all().centroid
        utm = utm_crs_for(c.x, c.y)
        f = list(found.to_crs(utm).geometry)
        t = list(truth.to_crs(utm).geometry)
        used_f = {i for i, _, _ in match_objects(f, t, iou_min)}
        tp = len(used_f)
    ignored = 0
    if ignore is not None and len(ignore) and len(found):
        c = ignore.to_crs(WGS84).union_all().centroid
        utm = utm_crs_for(c.x, c.y)
        region = ignore.to_crs(utm).union_all()
        f = found.to_crs(utm).geometry.to_numpy()
        ignored = sum(1 for i, a in enumerate(f) if i not in used_f and a.area > 0
                      and a.intersection(region).area >= ignore_inside * a.area)
    fp, fn = len(found) - tp - ignored, len(truth) - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}
    return out if ignore is None else {**out, "ignored": ignored}
