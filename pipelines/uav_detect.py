"""Detect ponds on drone video frames, project them to the ground, merge them across frames.

The same :class:`~tuban.models.detector.Detector` as satellite detection runs on sampled
frames. Each detection outline (box or polygon, in pixels) is densified along its edges and
cast onto flat ground with the frame's telemetry pose and the camera model
(:func:`tuban.imagery.camera.pixel_to_ground`), so oblique views give the right trapezoids.

One pond seen in 30 frames must be one feature. Projected detections are clustered greedily,
best first ("best" = not cut by the frame border, then closest to nadir, then highest score):
a detection joins the first cluster whose representative it overlaps (IoU >= ``join_iou``, or
mostly inside it, as a pond cut by the frame edge is), otherwise it starts a new cluster.
Greedy-by-representative clustering cannot chain two neighbouring ponds together through one
blurry detection spanning both; such a blob becomes its own cluster and is dropped when
clusters seen in more frames already cover most of it (likewise a partial box of one pond).

The merged outline is a per-cell vote of the cluster's complete (not border-cut) outlines on
a fine metric grid: ground kept by at least half of them. This removes the corners that an
axis-aligned box adds around a pond seen rotated, and averages telemetry noise across frames.
Each feature reports ``n_frames`` (distinct frames it was seen in), ``best_frame`` (the
representative: uncut, closest to nadir) and ``complete``: seen whole (not cut by the frame
border) in at least one frame. Objects never seen whole (a pond larger than every frame, or
at the edge of the flight) are dropped unless ``require_complete`` is off: their outline
would only be the part one frame saw.

Drone frames are resized before detection so their nadir pixel matches the pixel size the
detector was trained at (``detector_gsd_m``; the shipped drone model: 0.35 m), so the same
model serves flights at other heights and cameras with other resolutions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from tuban import TelemetryError
from tuban.imagery.camera import Camera, camera_preset, footprint, pixel_rays_ned, pixel_to_ground
from tuban.imagery.crs import WGS84, utm_crs_for
from tuban.imagery.georaster import GeoRaster
from tuban.imagery.track import Track
from tuban.imagery.video import VideoInfo, iter_frames, probe_video, sample_frame_indices
from tuban.models.detector import Detection, Detector
from tuban.pipelines.uav_stitch import (
    CutView,
    closed_lines,
    closed_segment_mask,
    stitch_cut_views,
    vote_outline,
)

if TYPE_CHECKING:
    from tuban.models.yolo import YoloDetector

__all__ = [
    "camera_for_video",
    "detect_video",
    "FramePose",
    "frame_poses",
    "UavDetectSettings",
    "GroundDetection",
    "project_detection",
    "detect_frames",
    "merge_ground_detections",
    "match_truth",
    "DETECTION_COLUMNS",
    "DRONE_WEIGHTS",
    "load_uav_detector",
    "frame_scale",
]

#: File name of the drone-scale pond model shipped inside ``tuban/models``.
DRONE_WEIGHTS = "pond_drone_yolo11n.pt"

_CELL_M = 100.0  # spatial hash cell for finding overlapping clusters

DETECTION_COLUMNS = ("label", "score", "area_m2", "lon", "lat", "n_frames", "best_frame",
                     "best_time_s", "off_nadir_deg", "complete")


@dataclass(frozen=True)
class FramePose:
    """Where the camera was and where it looked when one frame was taken.

    Args:
        frame: 0-based frame index in the video.
        time_s: video time of the frame.
        lon, lat: camera position, WGS84 degrees.
        height_m: camera height above the (flat) ground.
        yaw_deg, pitch_deg, roll_deg: gimbal attitude (DJI: NED, ZYX, pitch -90 = nadir).
        camera_alt_m: camera altitude in a DEM's vertical datum (NaN: the DEM under the
            camera + ``height_m``); only used when projecting onto a DEM.
    """

    frame: int
    time_s: float
    lon: float
    lat: float
    height_m: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float = 0.0
    camera_alt_m: float = float("nan")

    @property
    def usable(self) -> bool:
        vals = (self.lon, self.lat, self.height_m, self.yaw_deg, self.pitch_deg, self.roll_deg)
        return bool(np.all(np.isfinite(vals)) and self.height_m > 0)


def frame_poses(track: Track, frames: Sequence[int], fps: float) -> list[FramePose]:
    """The camera pose at each video frame, from the telemetry track.

    Frames are matched by the SRT cue clock (``video_time_s`` when the parser gives it, else
    ``time_s``) at ``frame / fps``, interpolating linearly between records (yaw unwrapped);
    frames before the first record or more than one record interval after the last get NaN
    (an unusable pose). Height is ``rel_alt_m`` (height
    above take-off: flat ground at take-off level); gimbal angles fall back to the aircraft
    yaw and to nadir when the log has none.

    Raises:
        TelemetryError: the track has no positions or no height at all.
    """
    tab = track.table
    ok = np.isfinite(tab["lon"].to_numpy(float)) & np.isfinite(tab["lat"].to_numpy(float))
    if not ok.any():
        raise TelemetryError(track.source, "no positions in the telemetry")
    tab = tab[ok]
    clock = tab["video_time_s"] if "video_time_s" in tab.columns else tab["time_s"]
    t = clock.to_numpy(float)
    height = tab["rel_alt_m"].to_numpy(float)
    if not np.isfinite(height).any():
        raise TelemetryError(track.source, "no height above take-off (rel_alt) in the telemetry")

    def col(name: str, fallback: str | None = None, default: float = np.nan) -> np.ndarray:
        v = tab[name].to_numpy(float)
        if not np.isfinite(v).any() and fallback is not None:
            v = tab[fallback].to_numpy(float)
        if not np.isfinite(v).any():
            v = np.full(len(tab), default)
        return v

    def interp(v: np.ndarray, q: np.ndarray) -> np.ndarray:
        good = np.isfinite(v)
        if not good.any():
            return np.full(len(q), np.nan)
        out = np.interp(q, t[good], v[good])
        out[(q < t[0] - 1e-6) | (q > t[-1] + step_s + 1e-6)] = np.nan  # one record past the end
        return out

    step_s = float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / fps
    q = np.asarray(frames, dtype=float) / fps
    yaw = np.degrees(np.unwrap(np.radians(np.nan_to_num(col("gimbal_yaw_deg", "yaw_deg", 0.0)))))
    cols = [interp(tab["lon"].to_numpy(float), q), interp(tab["lat"].to_numpy(float), q),
            interp(height, q), (interp(yaw, q) + 180.0) % 360.0 - 180.0,
            interp(col("gimbal_pitch_deg", default=-90.0), q), interp(col("gimbal_roll_deg", default=0.0), q)]
    return [FramePose(int(f), float(tq), *(float(c[i]) for c in cols)) for i, (f, tq) in enumerate(zip(frames, q, strict=True))]


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


def _densify(outline: Sequence[tuple[float, float]], per_edge: int) -> np.ndarray:
    pts = np.asarray(outline, dtype=float)
    nxt = np.roll(pts, -1, axis=0)
    t = np.linspace(0.0, 1.0, max(per_edge, 1), endpoint=False)[None, :, None]
    return (pts[:, None, :] + t * (nxt - pts)[:, None, :]).reshape(-1, 2)


def project_detection(det: Detection, pose: FramePose, camera: Camera, settings: UavDetectSettings,
                      dem: GeoRaster | None = None, *, frame_footprint: Polygon | None = None,
                      ) -> GroundDetection | None:
    """Cast one pixel-space detection onto flat ground (or ``dem``); None if a ray misses it.

    ``frame_footprint`` (the frame's ground footprint, EPSG:4326) is carried along for merging.

    Example:
        >>> cam = Camera.from_hfov(90.0, 100, 100)
        >>> pose = FramePose(0, 0.0, 114.0, 30.0, 50.0, 0.0, -90.0)
        >>> g = project_detection(Detection((40, 40, 60, 60), 0.9, "pond"), pose, cam,
        ...                       UavDetectSettings())
        >>> round(g.off_nadir_deg, 3), g.cut_by_border
        (0.0, False)
    """
    uv = _densify(det.outline_px, settings.edge_points)
    lon, lat, hit = pixel_to_ground(camera, uv[:, 0], uv[:, 1], lon_deg=pose.lon, lat_deg=pose.lat,
                                    height_m=pose.height_m, yaw_deg=pose.yaw_deg,
                                    pitch_deg=pose.pitch_deg, roll_deg=pose.roll_deg, dem=dem,
                                    camera_alt_m=pose.camera_alt_m if np.isfinite(pose.camera_alt_m) else None)
    if not np.all(hit):
        return None
    poly = Polygon(np.column_stack([lon, lat]))
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
        if poly.geom_type != "Polygon":
            return None
    x0, y0, x1, y1 = det.box_px
    ray = pixel_rays_ned(camera, (x0 + x1) / 2, (y0 + y1) / 2, pose.yaw_deg, pose.pitch_deg,
                         pose.roll_deg)[0]
    off_nadir = float(np.degrees(np.arccos(np.clip(ray[2], -1.0, 1.0))))
    b = settings.border_px
    cut = x0 <= b or y0 <= b or x1 >= camera.width_px - b or y1 >= camera.height_px - b
    closed = closed_lines(np.column_stack([lon, lat]),
                          closed_segment_mask(uv, camera.width_px, camera.height_px, b))
    return GroundDetection(pose.frame, pose.time_s, det.label, float(det.score), poly, off_nadir, bool(cut),
                           closed, frame_footprint)


def detect_frames(
    frames: Iterable[tuple[FramePose, np.ndarray]],
    detector: Detector,
    camera: Camera,
    settings: UavDetectSettings | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    total: int = 0,
    dem: GeoRaster | None = None,
) -> list[GroundDetection]:
    """Run ``detector`` on frames (RGB uint8) and project what it finds to the ground (or ``dem``).

    Frames whose pose is unusable (no position/height/angles) or whose view reaches the
    horizon at a detection are skipped for that detection.
    """
    s = settings or UavDetectSettings()
    out: list[GroundDetection] = []
    batch: list[tuple[FramePose, np.ndarray]] = []
    done = 0

    def flush() -> None:
        nonlocal done
        if not batch:
            return
        cam = camera.for_image(batch[0][1].shape[1], batch[0][1].shape[0])
        results = detector.detect_batch([img for _, img in batch])
        for (pose, _), dets in zip(batch, results, strict=True):
            dets = [d for d in dets if d.score >= s.min_score]
            foot = footprint(pose.lon, pose.lat, pose.height_m, pose.yaw_deg, pose.pitch_deg, pose.roll_deg,
                             cam, dem, camera_alt_m=pose.camera_alt_m if np.isfinite(pose.camera_alt_m) else None,
                             max_range_m=20 * pose.height_m) if dets else None
            for d in dets:
                g = project_detection(d, pose, cam, s, dem, frame_footprint=foot)
                if g is not None and g.off_nadir_deg <= s.max_off_nadir_deg:
                    out.append(g)
        done += len(batch)
        batch.clear()
        if progress:
            progress(done, total or done)

    for pose, img in frames:
        if not pose.usable:
            done += 1
            continue
        batch.append((pose, img))
        if len(batch) >= s.batch_size:
            flush()
    flush()
    return out


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
    rows, geoms = [], []
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
        f = found.to_crs(utm).geometry.to_numpy()
        t = truth.to_crs(utm).geometry.to_numpy()
        pairs = []
        for i, a in enumerate(f):
            for j, b in enumerate(t):
                if a.intersects(b):
                    inter = a.intersection(b).area
                    iou = inter / (a.area + b.area - inter)
                    if iou >= iou_min:
                        pairs.append((iou, i, j))
        used_t: set[int] = set()
        for _, i, j in sorted(pairs, reverse=True):
            if i not in used_f and j not in used_t:
                used_f.add(i)
                used_t.add(j)
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


# --- whole videos -------------------------------------------------------------------------------


def camera_for_video(info: VideoInfo, *, preset: str | None = None, hfov_deg: float | None = None,
                     track: Track | None = None) -> Camera:
    """Intrinsics for the video frames: a preset, a horizontal FOV, or the log's focal length.

    Without ``preset`` or ``hfov_deg`` the 35 mm-equivalent ``focal_len`` of a DJI SRT (column
    ``focal_len_35mm``, times ``dzoom_ratio``) is used with the diagonal rule on a 4:3 sensor,
    then cropped to the video's aspect keeping the horizontal FOV, as DJI video modes do.

    Raises:
        ValueError: unknown preset, or nothing to derive the intrinsics from.
    """
    if preset is not None:
        return camera_preset(preset).for_image(info.width_px, info.height_px)
    if hfov_deg is not None:
        return Camera.from_hfov(hfov_deg, info.width_px, info.height_px)
    if track is not None and "focal_len_35mm" in track.table.columns:
        f = track.table["focal_len_35mm"].to_numpy(float)
        if "dzoom_ratio" in track.table.columns:
            z = track.table["dzoom_ratio"].to_numpy(float)
            f = f * np.where(np.isfinite(z) & (z > 0), z, 1.0)
        f = f[np.isfinite(f) & (f > 0)]
        if len(f):
            return Camera.from_35mm(float(np.median(f)), 4000, 3000, "srt-focal").for_image(
                info.width_px, info.height_px)
    raise ValueError("no camera intrinsics: give --camera PRESET or --hfov-deg")


def detect_video(
    video: str | Path,
    track: Track,
    detector: Detector,
    *,
    every_s: float = 1.0,
    preset: str | None = None,
    hfov_deg: float | None = None,
    settings: UavDetectSettings | None = None,
    dem: GeoRaster | None = None,
    height_m: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[gpd.GeoDataFrame, dict[str, float]]:
    """Detect, project and merge objects over a drone video sampled every ``every_s`` seconds.

    Args:
        dem: ground elevation; rays are marched onto it. The camera altitude is the DEM at the
            first logged position (take-off) plus the height above take-off.
        height_m: constant height above ground overriding the telemetry height.

    Returns:
        ``(merged detections, stats)``; stats: frames sampled, frames with a usable pose,
        raw ground detections, merged features.
    """
    info = probe_video(video)
    camera = camera_for_video(info, preset=preset, hfov_deg=hfov_deg, track=track)
    wanted = sample_frame_indices(info.frame_count, info.fps, every_s).tolist()
    plist = frame_poses(track, wanted, info.fps)
    if height_m is not None:
        plist = [replace(p, height_m=float(height_m)) for p in plist]
    elif dem is not None:
        from tuban.imagery.dem_ray import sample_dem

        t = track.table[np.isfinite(track.table["lon"].to_numpy(float))]
        ground = float(sample_dem(dem, t["lon"].iloc[0], t["lat"].iloc[0])[0])
        if np.isfinite(ground):
            plist = [replace(p, camera_alt_m=ground + p.height_m) for p in plist]
    poses = {p.frame: p for p in plist}
    usable = sum(p.usable for p in poses.values())
    if usable == 0:
        raise TelemetryError(track.source, "no frame of the video falls within the telemetry "
                             "(check that the log belongs to this video)")
    s = settings or UavDetectSettings()
    heights = [p.height_m for p in plist if p.usable]
    scale = frame_scale(camera, float(np.median(heights)), s.detector_gsd_m)
    frames = ((poses[i], _resized(img, scale)) for i, img in iter_frames(video, wanted))
    dets = detect_frames(frames, detector, camera, settings, progress=progress, total=len(wanted), dem=dem)
    merged = merge_ground_detections(dets, settings)
    stats = {"frames_sampled": len(wanted), "frames_with_pose": usable, "detections_raw": len(dets),
             "features": len(merged), "hfov_deg": round(camera.hfov_deg, 2), "frame_scale": round(scale, 3)}
    return merged, stats


def frame_scale(camera: Camera, height_m: float, detector_gsd_m: float | None) -> float:
    """Resize factor bringing the frames' nadir pixel (``height_m / fx``) to ``detector_gsd_m``.

    Clamped to 0.05..4; 1.0 when the detector has no training pixel size.

    Example:
        >>> cam = Camera.from_hfov(90.0, 1000, 500)  # fx = 500 px
        >>> frame_scale(cam, 100.0, 0.4)  # 0.2 m pixels shrunk to 0.4 m
        0.5
    """
    if not detector_gsd_m or not np.isfinite(height_m) or height_m <= 0:
        return 1.0
    return float(np.clip((height_m / camera.fx_px) / detector_gsd_m, 0.05, 4.0))


def _resized(img: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if abs(scale - 1.0) < 1e-3:
        return img
    size = (max(32, round(img.shape[1] * scale)), max(32, round(img.shape[0] * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def load_uav_detector(weights: str | Path | None = None, *, conf: float | None = None,
                      threads: int | None = None) -> tuple[YoloDetector, float | None]:
    """A YOLO detector for drone frames and the nadir pixel size to resize frames to.

    Args:
        weights: a trusted ``.pt`` file; None = the shipped drone-scale pond model
            (:data:`DRONE_WEIGHTS`).
        conf: minimum confidence; None = the threshold the model's ``tuban`` record
            recommends (``conf``, chosen on training and selection clips), else 0.25.
        threads: torch CPU threads.

    Returns:
        ``(detector, gsd_m)``: ``gsd_m`` is the model's training pixel size when its ``tuban``
        record says ``scale = "drone"``, else None (frames are used as they are). The
        detector's ``settings.conf`` is the threshold in use.

    Raises:
        ModelError: weights missing or unreadable.
    """
    from tuban import ModelError
    from tuban.models.yolo import YoloSettings, load_detector, tuban_metadata

    if weights is None:
        weights = Path(__file__).resolve().parent.parent / "models" / DRONE_WEIGHTS
        if not Path(weights).is_file():
            raise ModelError(f"{weights}: the shipped drone pond model is missing; pass --model")
    det = load_detector(weights, YoloSettings(conf=0.25 if conf is None else conf, threads=threads))
    meta = tuban_metadata(det.model)
    if conf is None and isinstance(meta.get("conf"), (int, float)):
        det.settings = replace(det.settings, conf=float(meta["conf"]))
    gsd = float(meta["gsd_m"]) if meta.get("scale") == "drone" and meta.get("gsd_m") else None
    return det, gsd
