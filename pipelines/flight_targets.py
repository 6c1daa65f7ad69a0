"""Target finding (目标识别): when and how well the camera footprint covered each surveyed target.

Every 10 Hz sample is projected through a pinhole camera with the gimbal's yaw and pitch (NED,
ZYX order, pitch -90 = nadir; aircraft yaw when the log has no gimbal yaw) onto flat ground at
take-off height, exactly as :func:`tuban.imagery.camera.ground_to_pixel` does for one pose, but
vectorised over the flight. A target is found when it falls inside the image.
"""

from __future__ import annotations

import math

import numpy as np

from tuban.imagery.camera import Camera, rotation_ned
from tuban.pipelines.flight_course import Course
from tuban.pipelines.flight_segment import FlightSeries

__all__ = ["target_coverage"]

# camera axes (x right, y down, z forward) -> gimbal body (x forward, y right, z down)
_CAM_TO_BODY = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _r(x: float | None, nd: int = 3) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), nd)


def _enu(fs: FlightSeries, lon: float, lat: float) -> tuple[float, float]:
    import pymap3d

    e, n, _ = pymap3d.geodetic2enu(lat, lon, 0.0, fs.origin_lat, fs.origin_lon, 0.0)
    return float(e), float(n)


def target_coverage(fs: FlightSeries, course: Course, t_start_s: float,
                    min_height_m: float = 2.0) -> tuple[dict[str, float], dict, list[str]]:
    """Camera-footprint coverage of each course target over a whole flight.

    Args:
        fs: the prepared flight (ENU metres about its take-off point, 10 Hz).
        course: supplies the targets (WGS84), the camera FOVs and the time limit.
        t_start_s: take-off time on ``fs.t_s``; times to find count from it.
        min_height_m: frames taken lower than this do not count.

    Returns:
        ``(metrics, extra, missed)``: the item's raw metrics, per-target details for the
        scorecard, and the names of targets never covered.
    """
    tan_h = math.tan(math.radians(course.camera_hfov_deg) / 2)
    tan_v = math.tan(math.radians(course.camera_vfov_deg) / 2)
    cam = Camera.from_hfov(course.camera_hfov_deg, 1000, max(2, round(1000 * tan_v / tan_h)))
    yaw = np.where(np.isfinite(fs.gimbal_yaw_deg), fs.gimbal_yaw_deg, np.nan_to_num(fs.yaw_deg, nan=0.0))
    pitch = np.where(np.isfinite(fs.gimbal_pitch_deg), fs.gimbal_pitch_deg, -90.0)
    cam_to_ned = rotation_ned(yaw, pitch, 0.0) @ _CAM_TO_BODY
    h = fs.u_m
    usable = h >= min_height_m
    # ground point of the optical axis, for the centre distance
    axis = cam_to_ned[:, :, 2]
    t_hit = np.where(axis[:, 2] > 1e-6, h / np.maximum(axis[:, 2], 1e-6), np.nan)
    ce, cn = fs.e_m + t_hit * axis[:, 1], fs.n_m + t_hit * axis[:, 0]
    half_diag = math.hypot(cam.width_px / 2, cam.height_px / 2)
    detail, found_t, ratios, missed = [], [], [], []
    for tgt in course.targets:
        te, tn = _enu(fs, tgt.lon, tgt.lat)
        vec = np.stack([tn - fs.n_m, te - fs.e_m, h], -1)
        d_c = np.einsum("nij,ni->nj", cam_to_ned, vec)
        z = np.where(d_c[:, 2] > 1e-9, d_c[:, 2], np.nan)
        u = cam.cx_px + cam.fx_px * d_c[:, 0] / z
        v = cam.cy_px + cam.fy_px * d_c[:, 1] / z
        covered = usable & (u >= 0) & (u < cam.width_px) & (v >= 0) & (v < cam.height_px)
        r = np.hypot(u - cam.cx_px, v - cam.cy_px) / half_diag
        if covered.any():
            i = int(np.flatnonzero(covered)[0])
            best = int(np.argmin(np.where(covered, r, np.inf)))
            found_t.append(float(fs.t_s[i]) - t_start_s)
            ratios.append(float(r[best]))
            detail.append({"name": tgt.name, "found": True, "time_to_find_s": _r(fs.t_s[i] - t_start_s, 2),
                           "centre_offset_ratio": _r(r[best]),
                           "centre_distance_m": _r(float(np.nanmin(np.hypot(te - ce, tn - cn)[covered])), 2),
                           "best_time_s": _r(fs.t_s[best], 2)})
        else:
            missed.append(tgt.name)
            detail.append({"name": tgt.name, "found": False, "time_to_find_s": None,
                           "centre_offset_ratio": None, "centre_distance_m": None, "best_time_s": None})
    nt = max(1, len(course.targets))
    metrics = {
        "found_fraction": len(found_t) / nt,
        "centre_offset_ratio": float(np.mean(ratios)) if ratios else float("nan"),
        "time_to_find_s": max(found_t) if found_t else float("nan"),
        "time_to_find_ratio": max(found_t) / course.targets_time_limit_s if found_t else float("nan"),
    }
    extra = {"targets": detail, "footprint": "pinhole camera, flat ground at take-off height"}
    return metrics, extra, missed
