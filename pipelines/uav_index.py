"""``tuban uav index``: georeference sampled video frames or geotagged photos.

One feature per sampled frame (or photo): the ground footprint polygon in EPSG:4326 and the
properties ``frame`` (0-based video index; photo order for stills), ``time_s`` (video clock, or
seconds since the first photo), ``lon``, ``lat``, ``alt_m`` (height above take-off used for
the footprint), ``gimbal_pitch_deg``, ``gimbal_yaw_deg``, ``gimbal_roll_deg``, ``gsd_m``
(ground sample distance at the image centre), ``image`` (saved JPEG or photo path, relative to
the output file), ``footprint_status`` and ``height_source``.

Telemetry is synchronised to frames by time: frame ``i`` is at ``i / fps`` on the video clock,
the clock of the SRT cue times (``video_time_s``); numeric fields are interpolated linearly
(angles unwrapped). Frames farther than ``max_gap_s`` from any telemetry record get no
footprint. Frames whose optical axis is at or above the horizon are **kept with a null
geometry** and ``footprint_status = "above_horizon"`` (so frame numbering stays complete and
evidence consumers can still show the picture), and counted in a warning.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from tuban import InputError, OutputExistsError
from tuban.imagery.camera import Camera, camera_preset, footprint, gsd_m, view_above_horizon
from tuban.imagery.crs import WGS84
from tuban.imagery.georaster import GeoRaster
from tuban.imagery.track import Track
from tuban.imagery.video import VideoInfo, iter_frames, probe_video, sample_frame_indices, save_jpeg

__all__ = ["IndexSettings", "IndexResult", "FRAME_PROPERTIES", "video_clock", "telemetry_at", "index_video", "index_photos",
           "frame_features"]

FRAME_PROPERTIES = ("frame", "time_s", "lon", "lat", "alt_m", "gimbal_pitch_deg", "gimbal_yaw_deg",
                    "gimbal_roll_deg", "gsd_m", "image", "footprint_status", "height_source")
_ANGLES = ("yaw_deg", "gimbal_yaw_deg")
_NUMERIC = ("lat", "lon", "rel_alt_m", "abs_alt_m", "yaw_deg", "pitch_deg", "roll_deg", "gimbal_yaw_deg",
            "gimbal_pitch_deg", "gimbal_roll_deg", "focal_len_35mm", "dzoom_ratio")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IndexSettings:
    """Options of ``uav index``.

    Args:
        camera: a preset name from :data:`~tuban.imagery.camera.CAMERA_PRESETS`.
        hfov_deg: horizontal field of view instead of a preset.
        every_s: sample one video frame every this many seconds.
        height_m: constant height above ground overriding the telemetry (e.g. a terrain-
            following survey whose logs only carry absolute altitude).
        max_gap_s: largest distance in time between a frame and telemetry to trust it.
        edge_points: points per image side in the footprint polygon.
        max_range_m: clip range for border rays above the horizon (default 20 × height).
    """

    camera: str | None = None
    hfov_deg: float | None = None
    every_s: float = 1.0
    height_m: float | None = None
    max_gap_s: float = 2.0
    edge_points: int = 8
    max_range_m: float | None = None

    def __post_init__(self) -> None:
        if self.camera is not None and self.hfov_deg is not None:
            raise ValueError("give either a camera preset or a horizontal FOV, not both")
        if self.camera is not None:
            camera_preset(self.camera)
        if self.hfov_deg is not None and not 0 < self.hfov_deg < 180:
            raise ValueError(f"horizontal FOV must be in (0, 180) degrees, got {self.hfov_deg}")
        if not self.every_s > 0:
            raise ValueError(f"sampling interval must be positive, got {self.every_s}")
        if self.height_m is not None and not self.height_m > 0:
            raise ValueError(f"height must be positive, got {self.height_m}")


@dataclass(frozen=True)
class IndexResult:
    """Frames (GeoDataFrame, EPSG:4326, null geometry where no footprint) and warnings."""

    frames: gpd.GeoDataFrame
    warnings: tuple[str, ...]

    @property
    def n_footprints(self) -> int:
        return int(self.frames.geometry.notna().sum())


def video_clock(track: Track) -> tuple[np.ndarray, str]:
    """Each record's time on the video clock, and how it was found.

    SRT tracks carry it (``video_time_s``, the cue time). Flight logs are shifted so that the
    first record with ``is_video`` set (Airdata ``isVideo``, DJI ``CUSTOM.isVideo``) is 0;
    otherwise the log is assumed to start with the video.
    """
    t = track.table
    if "video_time_s" in t and t["video_time_s"].notna().all():
        return t["video_time_s"].to_numpy(dtype=float), "SRT cue time"
    time_s = t["time_s"].to_numpy(dtype=float)
    if "is_video" in t:
        rec = np.nan_to_num(t["is_video"].to_numpy(dtype=float)) > 0
        if rec.any():
            start = float(time_s[int(np.argmax(rec))])
            return time_s - start, f"flight log shifted so recording starts at log time {start:.1f} s (isVideo)"
    return time_s, "telemetry assumed to start with the video (no SRT cue times, no isVideo flag)"


def telemetry_at(track: Track, times_s: np.ndarray, *, max_gap_s: float = 2.0) -> pd.DataFrame:
    """Telemetry interpolated to the given times on the track's video clock.

    Uses ``video_time_s`` (SRT cue time) when the track has it, else ``time_s``. Times farther
    than ``max_gap_s`` from the nearest record get NaN position.
    """
    t = track.table
    clock, first = np.unique(video_clock(track)[0], return_index=True)
    times = np.asarray(times_s, dtype=float)
    out = pd.DataFrame({"time_s": times})
    for name in _NUMERIC:
        if name not in t:
            out[name] = np.nan
            continue
        v = t[name].to_numpy(dtype=float)[first]
        ok = np.isfinite(v)
        if ok.sum() == 0:
            out[name] = np.nan
        elif ok.sum() == 1:
            out[name] = v[ok][0]
        elif name in _ANGLES:
            u = np.degrees(np.unwrap(np.radians(v[ok])))
            out[name] = (np.interp(times, clock[ok], u) + 180.0) % 360.0 - 180.0
        else:
            out[name] = np.interp(times, clock[ok], v[ok])
    pos = np.clip(np.searchsorted(clock, times), 0, len(clock) - 1)
    prev = np.clip(pos - 1, 0, len(clock) - 1)
    gap = np.minimum(np.abs(clock[pos] - times), np.abs(clock[prev] - times))
    far = gap > max_gap_s
    out.loc[far, ["lat", "lon"]] = np.nan
    out["course_deg"] = _course_deg(out["lon"].to_numpy(), out["lat"].to_numpy())
    return out


def _course_deg(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Bearing of travel between consecutive samples (NaN when not moving > 0.5 m)."""
    if len(lon) < 2:
        return np.full(len(lon), np.nan)
    dn = np.diff(lat) * 111_320.0
    de = np.diff(lon) * 111_320.0 * np.cos(np.radians(lat[:-1]))
    bearing = np.degrees(np.arctan2(de, dn))
    bearing[np.hypot(dn, de) < 0.5] = np.nan
    return np.append(bearing, bearing[-1])


def _base_camera(settings: IndexSettings) -> Camera | None:
    if settings.camera is not None:
        return camera_preset(settings.camera)
    if settings.hfov_deg is not None:
        return Camera.from_hfov(settings.hfov_deg, 4000, 3000, name=f"hfov{settings.hfov_deg:g}")
    return None


def _camera_for(base: Camera | None, row, width_px: float, height_px: float) -> Camera | None:
    """The camera of one frame/photo: the user's (sized to the image, zoomed), else metadata."""
    sized = np.isfinite(width_px) and np.isfinite(height_px) and width_px > 0 and height_px > 0
    zoom = row.get("dzoom_ratio", np.nan)
    if base is not None:
        cam = base.for_image(int(width_px), int(height_px)) if sized else base
        return cam.zoomed(float(zoom)) if np.isfinite(zoom) and zoom > 1.0 else cam
    if not sized:
        return None
    calib, cx = row.get("calibrated_focal_px", np.nan), row.get("calibrated_cx_px", np.nan)
    if np.isfinite(calib) and calib > 0 and np.isfinite(cx) and cx > 0:
        f = calib * width_px / (2.0 * cx)  # CalibratedFocalLength is for the full-size photo
        return Camera("xmp-calibrated", int(width_px), int(height_px), f, f)
    f35 = row.get("focal_len_35mm", np.nan)
    if np.isfinite(f35) and f35 > 0:
        return lens_from_35mm(float(f35), int(width_px), int(height_px))
    return None


def lens_from_35mm(focal_35mm: float, width_px: int, height_px: int) -> Camera:
    """A camera from a 35 mm-equivalent focal length, right for photos and video modes.

    DJI quote the equivalent focal length of the 4:3 stills sensor; video modes (16:9 and wider)
    crop that sensor top and bottom and keep its horizontal field of view. Applying the diagonal
    rule to the 16:9 frame itself would overstate the HFOV (76 deg instead of 70 deg at 24 mm).
    """
    name = f"{focal_35mm:g}mm-eq"
    if width_px / float(height_px) > 1.5:  # a video mode cropped from the 4:3 sensor
        return Camera.from_35mm(focal_35mm, 4000, 3000, name=name).for_image(width_px, height_px)
    return Camera.from_35mm(focal_35mm, width_px, height_px, name=name)


def frame_features(
    tel: pd.DataFrame,
    cameras: list[Camera | None],
    *,
    settings: IndexSettings,
    dem: GeoRaster | None = None,
    takeoff_ground_m: float | None = None,
) -> tuple[list[dict], list[str]]:
    """Footprint and properties per telemetry row (pure: values in, records out)."""
    from tuban.imagery.dem_ray import sample_dem

    notes: dict[str, int] = {}
    records = []
    for i, row in enumerate(tel.to_dict("records")):
        cam = cameras[i]
        lon, lat = row["lon"], row["lat"]
        pitch, yaw, roll = row["gimbal_pitch_deg"], row["gimbal_yaw_deg"], row["gimbal_roll_deg"]
        if not np.isfinite(pitch):
            pitch = -90.0
            notes["no gimbal pitch in telemetry: nadir (-90) assumed"] = 1
        if not np.isfinite(yaw):
            yaw = row["yaw_deg"] if np.isfinite(row["yaw_deg"]) else row.get("course_deg", np.nan)
            if not np.isfinite(yaw):
                yaw = 0.0
                notes["no gimbal or aircraft yaw: image top assumed north"] = 1
            else:
                notes["no gimbal yaw: aircraft yaw or course over ground used"] = 1
        roll = roll if np.isfinite(roll) else 0.0
        camera_alt = None
        if settings.height_m is not None:
            height, source = settings.height_m, "override"
        elif np.isfinite(row["rel_alt_m"]):
            height, source = row["rel_alt_m"], "rel_alt"
            if dem is not None and takeoff_ground_m is not None and np.isfinite(takeoff_ground_m):
                camera_alt, source = takeoff_ground_m + height, "rel_alt+dem_takeoff"
        elif dem is not None and np.isfinite(row["abs_alt_m"]):
            camera_alt, source = row["abs_alt_m"], "abs_alt-dem"
            ground = float(sample_dem(dem, lon, lat)[0]) if np.isfinite(lon) else np.nan
            height = camera_alt - ground
            notes["height from absolute altitude minus DEM: datums must match (DJI non-RTK altitude is barometric)"] = 1
        else:
            height, source = np.nan, "none"
        status = "ok"
        geom = None
        if not (np.isfinite(lon) and np.isfinite(lat)):
            status = "no_telemetry"
        elif not np.isfinite(height):
            status = "no_height"
        elif height <= 0:
            status = "on_ground"
        elif cam is None:
            status = "no_camera"
        elif view_above_horizon(cam, pitch, roll):
            status = "above_horizon"
        else:
            geom = footprint(lon, lat, height, yaw, pitch, roll, cam, dem, edge_points=settings.edge_points,
                             camera_alt_m=camera_alt, max_range_m=settings.max_range_m)
            status = "ok" if geom is not None else "no_ground"
        if status != "ok":
            notes[status] = notes.get(status, 0) + 1
        gsd = gsd_m(cam, height, pitch, roll) if cam is not None and np.isfinite(height) else math.nan
        records.append({  # rounded to what the inputs resolve: 1 cm, 0.01 deg, 1 µm/px
            "frame": int(row.get("frame", i)), "time_s": round(float(row["time_s"]), 6),
            "lon": _round(lon, 8), "lat": _round(lat, 8), "alt_m": _round(height, 3),
            "gimbal_pitch_deg": _round(pitch, 2), "gimbal_yaw_deg": _round(yaw, 2), "gimbal_roll_deg": _round(roll, 2),
            "gsd_m": _round(gsd, 6), "image": None, "footprint_status": status, "height_source": source,
            "geometry": geom,
        })
    messages = {
        "no_telemetry": "frames without telemetry within the time tolerance: no footprint",
        "no_height": "frames without a height above ground (no rel_alt; give --height-m or --dem): no footprint",
        "on_ground": "frames at or below take-off height: no footprint",
        "no_camera": "frames without camera intrinsics (give --camera or --hfov-deg): no footprint",
        "above_horizon": "frames looking at or above the horizon: null geometry",
        "no_ground": "frames whose rays miss the DEM/ground: no footprint",
    }
    warnings = [f"{notes[k]} {messages[k]}" if k in messages else k for k in notes]
    return records, warnings


def _round(value: float, digits: int) -> float:
    return round(float(value), digits) if np.isfinite(value) else math.nan


def _to_gdf(records: list[dict]) -> gpd.GeoDataFrame:
    if not records:
        return gpd.GeoDataFrame({k: [] for k in FRAME_PROPERTIES}, geometry=[], crs=WGS84)
    return gpd.GeoDataFrame(records, geometry="geometry", crs=WGS84)


def _takeoff_ground(track: Track, dem: GeoRaster | None) -> float | None:
    if dem is None:
        return None
    from tuban.imagery.dem_ray import sample_dem

    t = track.table
    return float(sample_dem(dem, t["lon"].iloc[0], t["lat"].iloc[0])[0])


def _relative(path: Path, out_path: Path | None) -> str:
    if out_path is None:
        return str(path)
    try:
        return os.path.relpath(Path(path).resolve(), Path(out_path).resolve().parent)
    except ValueError:  # another drive on Windows
        return str(Path(path).resolve())


def index_video(
    video: str | Path,
    track: Track,
    settings: IndexSettings,
    *,
    dem: GeoRaster | None = None,
    frames_dir: str | Path | None = None,
    out_path: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> IndexResult:
    """Georeference frames of a video sampled every ``settings.every_s`` seconds.

    Args:
        video: the video file.
        track: its telemetry (an SRT track carries the video clock in ``video_time_s``).
        settings: camera, sampling and height options.
        dem: optional ground elevation for ray marching.
        frames_dir: if given, sampled frames are saved there as JPEG (all or nothing).
        out_path: the GeoJSON the result will be written to (``image`` paths are relative to it).
        overwrite: replace existing JPEGs of the same names.
        progress: ``callback(done, total)``.
    """
    info: VideoInfo = probe_video(video)
    indices = sample_frame_indices(info.frame_count, info.fps, settings.every_s)
    tel = telemetry_at(track, indices / info.fps, max_gap_s=settings.max_gap_s)
    tel["frame"] = indices
    base = _base_camera(settings)
    cams = [_camera_for(base, row, info.width_px, info.height_px) for row in tel.to_dict("records")]
    if all(c is None for c in cams):  # no preset, no FOV, no focal length in the SRT
        cams = [lens_from_35mm(24.0, info.width_px, info.height_px)] * len(tel)
    records, warnings = frame_features(tel, cams, settings=settings, dem=dem,
                                       takeoff_ground_m=_takeoff_ground(track, dem))
    how = video_clock(track)[1]
    if how != "SRT cue time":
        warnings.insert(0, f"sync: {how}")
    if base is None:
        warnings.insert(0, "no --camera/--hfov-deg: intrinsics from the SRT focal length, else a 24 mm-equivalent lens")
    if tel["lat"].notna().sum() == 0:
        warnings.append(f"telemetry does not overlap the video ({info.duration_s:.1f} s): check the files match")
    if frames_dir is not None:
        saved = _save_frames(info, indices, Path(frames_dir), overwrite=overwrite, progress=progress)
        for rec in records:
            p = saved.get(rec["frame"])
            rec["image"] = _relative(p, Path(out_path) if out_path else None) if p else None
        if len(saved) < len(indices):
            warnings.append(f"{len(indices) - len(saved)} sampled frames could not be decoded")
    elif progress is not None:
        progress(len(indices), len(indices))
    return IndexResult(_to_gdf(records), tuple(warnings))


def _save_frames(info: VideoInfo, indices: np.ndarray, frames_dir: Path, *, overwrite: bool,
                 progress: Progress | None) -> dict[int, Path]:
    """Write sampled frames to a staging folder, then move them in (nothing partial on failure)."""
    names = {int(i): frames_dir / f"{info.path.stem}_f{int(i):06d}.jpg" for i in indices}
    if not overwrite:
        for p in names.values():
            if p.exists():
                raise OutputExistsError(p)
    frames_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tuban-frames-", dir=frames_dir))
    saved: dict[int, Path] = {}
    try:
        for done, (idx, rgb) in enumerate(iter_frames(info.path, indices), start=1):
            save_jpeg(staging / names[idx].name, rgb)
            saved[idx] = names[idx]
            if progress is not None:
                progress(done, len(indices))
        for final in saved.values():
            os.replace(staging / final.name, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return saved


def index_photos(
    track: Track,
    settings: IndexSettings,
    *,
    dem: GeoRaster | None = None,
    out_path: str | Path | None = None,
    progress: Progress | None = None,
) -> IndexResult:
    """Georeference geotagged stills (a photo track from EXIF/XMP or an exiftool CSV)."""
    t = track.table.reset_index(drop=True)
    if "image" not in t:
        raise InputError(track.source, "this telemetry has no photos (index a video with --telemetry instead)")
    base = _base_camera(settings)
    width = t["image_width_px"].to_numpy(dtype=float) if "image_width_px" in t else np.full(len(t), np.nan)
    height = t["image_height_px"].to_numpy(dtype=float) if "image_height_px" in t else np.full(len(t), np.nan)
    rows = t.to_dict("records")
    cams = [_camera_for(base, r, width[i], height[i]) for i, r in enumerate(rows)]
    tel = t.copy()
    tel["course_deg"] = _course_deg(t["lon"].to_numpy(), t["lat"].to_numpy())
    tel["frame"] = np.arange(len(t))
    for c in _NUMERIC:
        if c not in tel:
            tel[c] = np.nan
    records, warnings = frame_features(tel, cams, settings=settings, dem=dem,
                                       takeoff_ground_m=_takeoff_ground(track, dem))
    base_dir = track.source.parent if track.source is not None and track.source.is_file() else None
    for rec, img in zip(records, t["image"], strict=True):
        p = Path(str(img))
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        rec["image"] = _relative(p, Path(out_path) if out_path else None)
    if progress is not None:
        progress(len(records), len(records))
    return IndexResult(_to_gdf(records), tuple(list(track.warnings) + warnings))
