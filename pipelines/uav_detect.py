"""Detect ponds on drone video frames, project them to the ground, merge them across frames.

The same :class:`~tuban.models.detector.Detector` as satellite detection runs on sampled
frames. Each detection outline (box or polygon, in pixels) is densified along its edges and
cast onto flat ground with the frame's telemetry pose and the camera model
(:func:`tuban.imagery.camera.pixel_to_ground`), so oblique views give the right trapezoids.

One pond seen in 30 frames must be one feature: :mod:`tuban.pipelines.uav_merge` clusters
the projected detections and votes their outline; ponds larger than one frame are rebuilt
from their views cut by the frame border (:mod:`tuban.pipelines.uav_stitch`). For that,
each projected detection carries the sides of its outline that are real object edges (not on
the frame border) and its frame's ground footprint. The names of those modules are
re-exported here, as are the detector helpers of :mod:`tuban.pipelines.uav_model`.

Drone frames are resized before detection so their nadir pixel matches the pixel size the
detector was trained at (``detector_gsd_m``; the shipped drone model: 0.35 m), so the same
model serves flights at other heights and cameras with other resolutions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import Polygon

from tuban import TelemetryError
from tuban.imagery.camera import Camera, camera_preset, footprint, pixel_rays_ned, pixel_to_ground
from tuban.imagery.georaster import GeoRaster
from tuban.imagery.track import Track
from tuban.imagery.video import VideoInfo, iter_frames, probe_video, sample_frame_indices
from tuban.models.detector import Detection, Detector
from tuban.pipelines.uav_merge import (
    DETECTION_COLUMNS,
    GroundDetection,
    UavDetectSettings,
    match_truth,
    merge_ground_detections,
)
from tuban.pipelines.uav_model import DRONE_WEIGHTS, frame_scale, load_uav_detector, resized_frame
from tuban.pipelines.uav_stitch import closed_lines, closed_segment_mask

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
    frames = ((poses[i], resized_frame(img, scale)) for i, img in iter_frames(video, wanted))
    dets = detect_frames(frames, detector, camera, settings, progress=progress, total=len(wanted), dem=dem)
    merged = merge_ground_detections(dets, settings)
    stats = {"frames_sampled": len(wanted), "frames_with_pose": usable, "detections_raw": len(dets),
             "features": len(merged), "hfov_deg": round(camera.hfov_deg, 2), "frame_scale": round(scale, 3)}
    return merged, stats
