"""A synthetic DJI-style UAV clip with exact truth: ortho -> camera -> MP4 + enterprise SRT.

The clip lets georeferencing and UAV detection be checked against truth that the code under
test never sees. Steps:

1. A high-resolution ortho (default 0.2 m/px, 500 x 400 m) of coastal farmland with an
   aquaculture pond cluster (rectangular ponds, earth dikes, clear / algae-green / turbid
   water), fields, a road, a hamlet and tree rows — or any RGB ortho the caller passes.
2. A flight: a nadir pass at 80 m (by default heading east), a turn, then an oblique pass back
   with the gimbal looking sideways (by default north) at -55 deg; DJI conventions (gimbal yaw from true
   north, pitch 0 = horizon, -90 = nadir, angles NED/ZYX as in FLIGHT.md section 2).
3. Every frame is rendered with ``cv2.warpPerspective`` through the exact ground-plane
   homography of the true pose (pinhole, principal point at the centre, square pixels,
   ``hfov_deg`` over the frame width).
4. The SRT (enterprise bracket format, one block per frame) carries what a drone would log:
   GNSS positions with correlated noise (AR(1), ``gps_sigma_m`` per axis, 6 decimals),
   barometric ``rel_alt`` with small noise, ``abs_alt = rel_alt + baro_offset_m``, gimbal and
   aircraft angles with 0.1 deg resolution.

Outputs in ``OUT/uav/``: ``clip.mp4``, ``clip.SRT``, ``ortho.tif``, ``truth_footprints.geojson``
(true footprint per frame, with the true pose), ``truth_ponds.geojson`` (every pond, with
``fully_seen`` = inside at least one true footprint), ``clip.json`` (camera and settings).
The local CRS is a transverse Mercator centred on the take-off point, so grid north is true
north and the scale is 1 where the drone flies.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
from affine import Affine
from pyproj import CRS
from shapely.geometry import Polygon, box

from tuban.imagery.crs import WGS84, transformer
from tuban.imagery.georaster import GeoRaster
from tuban.imagery.vector_io import atomic_path, write_geojson, write_text_atomic

__all__ = ["ClipSettings", "ClipOutputs", "generate_uav_clip", "render_farm_ortho", "local_crs",
           "camera_to_ned", "ground_homography", "true_footprint_m", "flight_poses"]

#: camera (x right, y down, z forward) -> gimbal body (x forward, y right, z down)
_M = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class ClipSettings:
    """What to film and how.

    Args:
        origin_lon, origin_lat: take-off point (WGS84 degrees); default inside the sample
            county (centre 117.42 E, 23.93 N).
        width_px, height_px: video frame size.
        fps: frames per second (one SRT block per frame).
        hfov_deg: horizontal field of view over the frame width.
        altitude_m: flight height above the (flat) ground = take-off height.
        speed_m_s: ground speed on both passes.
        pass_s: duration of each pass; the turn between them takes ``turn_s``.
        oblique_pitch_deg: gimbal pitch on the second pass.
        heading_deg: course of the nadir pass (degrees from true north, clockwise).
        lane_offset_m: the oblique pass flies back this far to the right of the nadir pass,
            with the gimbal turned left of its course (towards the nadir pass's ground).
        start_along_m: the nadir pass starts this far along its course from the take-off
            point (negative: behind it).
        gps_sigma_m: per-axis standard deviation of the GNSS error (AR(1), 5 s correlation);
            0.5 m per axis (~0.7 m RMS radial, 95 % within ~1.2 m) matches DJI's published
            GNSS hover accuracy of +-1.5 m horizontal.
        baro_sigma_m: noise of the barometric height.
        ortho_gsd_m: ground sample distance of the rendered ortho.
        ortho_size_m: ``(width, height)`` of the rendered ortho, centred near the ponds.
        start_utc: wall-clock time of the first frame.
    """

    origin_lon: float = 117.4183
    origin_lat: float = 23.9312
    width_px: int = 960
    height_px: int = 540
    fps: float = 10.0
    hfov_deg: float = 70.0
    altitude_m: float = 80.0
    speed_m_s: float = 8.0
    pass_s: float = 12.0
    turn_s: float = 3.0
    oblique_pitch_deg: float = -55.0
    heading_deg: float = 90.0
    lane_offset_m: float = 62.0
    start_along_m: float = -10.0
    gps_sigma_m: float = 0.5
    baro_sigma_m: float = 0.15
    ortho_gsd_m: float = 0.2
    ortho_size_m: tuple[float, float] = (500.0, 400.0)
    start_utc: str = "2026-06-18T02:30:00"

    @property
    def n_frames(self) -> int:
        return int(round((2 * self.pass_s + self.turn_s) * self.fps))

    @property
    def fx_px(self) -> float:
        return self.width_px / 2.0 / math.tan(math.radians(self.hfov_deg) / 2.0)

    @property
    def focal_len_35mm(self) -> float:
        """35 mm-equivalent focal length DJI would log for a 4:3 sensor of this HFOV."""
        return 0.8 * 43.27 / 2.0 / math.tan(math.radians(self.hfov_deg) / 2.0)


@dataclass(frozen=True)
class ClipOutputs:
    """Paths written by :func:`generate_uav_clip`."""

    video: Path
    srt: Path
    ortho: Path
    truth_footprints: Path
    truth_ponds: Path
    meta: Path


def local_crs(lon: float, lat: float) -> CRS:
    """Transverse Mercator centred on ``(lon, lat)``: metres, grid north = true north there."""
    return CRS.from_proj4(f"+proj=tmerc +lat_0={lat} +lon_0={lon} +k=1 +x_0=0 +y_0=0 "
                          "+ellps=WGS84 +units=m +no_defs")


def _rot(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    return rz @ ry @ rx


def camera_to_ned(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """3x3 rotation taking camera-frame rays (x right, y down, z forward) to NED."""
    return _rot(yaw_deg, pitch_deg, roll_deg) @ _M


def _intrinsics(s: ClipSettings) -> np.ndarray:
    f = s.fx_px
    return np.array([[f, 0, s.width_px / 2.0], [0, f, s.height_px / 2.0], [0, 0, 1.0]])


def ground_homography(pos_en_m: tuple[float, float], height_m: float, angles_deg: tuple[float, float, float],
                      ground_from_px: np.ndarray, s: ClipSettings) -> np.ndarray:
    """3x3 homography from ortho pixels ``(col, row, 1)`` to video pixels.

    Args:
        pos_en_m: camera ``(east, north)`` in the local metric frame.
        height_m: camera height above the ground plane.
        angles_deg: gimbal ``(yaw, pitch, roll)`` (DJI, NED/ZYX).
        ground_from_px: 3x3 affine taking ortho ``(col, row, 1)`` to local ``(east, north, 1)``.
    """
    ga = ground_from_px
    # NED offset from the camera to the ground point: (N - Nc, E - Ec, +h)
    a = np.array([ga[1] - np.array([0, 0, pos_en_m[1]]), ga[0] - np.array([0, 0, pos_en_m[0]]),
                  [0.0, 0.0, height_m]])
    r = camera_to_ned(*angles_deg)
    return _intrinsics(s) @ r.T @ a


def true_footprint_m(pos_en_m: tuple[float, float], height_m: float, angles_deg: tuple[float, float, float],
                     s: ClipSettings, n_edge: int = 8) -> Polygon:
    """Ground footprint (local east/north metres) of the full frame, flat ground."""
    w, h = s.width_px, s.height_px
    t = np.linspace(0.0, 1.0, n_edge, endpoint=False)
    uv = np.concatenate([np.c_[t * w, 0 * t], np.c_[w + 0 * t, t * h], np.c_[w - t * w, h + 0 * t],
                         np.c_[0 * t, h - t * h]])
    k_inv = np.linalg.inv(_intrinsics(s))
    rays = camera_to_ned(*angles_deg) @ k_inv @ np.c_[uv, np.ones(len(uv))].T  # (3, n)
    if np.any(rays[2] <= 1e-6):
        raise ValueError("frame sees the horizon; no bounded footprint")
    tt = height_m / rays[2]
    return Polygon(np.c_[pos_en_m[0] + tt * rays[1], pos_en_m[1] + tt * rays[0]])


# --- the ortho --------------------------------------------------------------------------------

_WATER = [(30, 74, 92), (38, 88, 96), (44, 102, 72), (58, 98, 100), (34, 80, 78)]
_CROPS = [(104, 136, 70), (122, 148, 84), (142, 134, 98), (92, 122, 62), (150, 150, 110)]


def render_farm_ortho(s: ClipSettings, rng: np.random.Generator) -> tuple[GeoRaster, gpd.GeoDataFrame]:
    """RGB ortho (local CRS) and its water ponds (local metres) around the flight.

    The pond cluster sits where both passes look: a 2 x 4 block of ponds north-east of the
    take-off point (one with sun glint), plus a second block outside the flown area (its ponds
    are in the truth with ``fully_seen`` false). Distractors: a drained pond (mud and puddles,
    in the truth with ``water`` false), a blue factory roof, a road, a hamlet, a tree row.
    """
    import cv2

    gsd = s.ortho_gsd_m
    wm, hm = s.ortho_size_m
    x0, y0 = -wm * 0.3, hm * 0.5  # take-off is 30 % from the west edge, mid-height
    cols, rows = int(round(wm / gsd)), int(round(hm / gsd))
    tf = Affine(gsd, 0, x0, 0, -gsd, y0)
    img = np.zeros((rows, cols, 3), np.float32)

    def px(poly_m: np.ndarray) -> np.ndarray:
        c = (poly_m[:, 0] - x0) / gsd
        r = (y0 - poly_m[:, 1]) / gsd
        return np.round(np.c_[c, r] * 4).astype(np.int32)  # 2 fractional bits

    def fill(poly_m, rgb) -> None:
        cv2.fillPoly(img, [px(np.asarray(poly_m, float))], rgb, lineType=cv2.LINE_AA, shift=2)

    # farmland parcels on a slightly rotated grid
    img[:] = (118, 128, 88)
    for gx in np.arange(x0, x0 + wm, 40.0):
        for gy in np.arange(y0 - hm, y0, 25.0):
            c = np.array(_CROPS[rng.integers(len(_CROPS))]) + rng.normal(0, 6, 3)
            fill([(gx + 1, gy + 1), (gx + 39, gy + 1), (gx + 39, gy + 24), (gx + 1, gy + 24)], c.tolist())
    ponds: list[Polygon] = []
    blocks = [(2.0, -34.0, 4, 2), (150.0, 60.0, 3, 2)]  # (west, south, n_cols, n_rows) in metres
    for bx, by, ncol, nrow in blocks:
        widths = rng.uniform(17.0, 24.0, ncol)
        heights = rng.uniform(20.0, 26.0, nrow)
        dike = rng.uniform(3.5, 5.0)
        total_w = widths.sum() + dike * (ncol + 1)
        total_h = heights.sum() + dike * (nrow + 1)
        fill([(bx, by), (bx + total_w, by), (bx + total_w, by + total_h), (bx, by + total_h)], (146, 132, 100))
        yy = by + dike
        for j in range(nrow):
            xx = bx + dike
            for i in range(ncol):
                p = box(xx, yy, xx + widths[i], yy + heights[j])
                base = np.array(_WATER[rng.integers(len(_WATER))], float)
                fill(np.asarray(p.exterior.coords), (base + rng.normal(0, 3, 3)).tolist())
                ponds.append(p)
                xx += widths[i] + dike
            yy += heights[j] + dike
    # sun glint on one pond: a bright patch inside the water
    g0 = ponds[1].centroid
    cv2.ellipse(img, (int((g0.x - x0) / gsd), int((y0 - g0.y) / gsd)), (int(3.0 / gsd), int(1.8 / gsd)),
                20.0, 0, 360, (222, 228, 226), -1, lineType=cv2.LINE_AA)
    water = [True] * len(ponds)
    # a drained pond: mud inside intact dikes, a few puddles (a pond, but no water)
    drained = box(-34.0, 30.0, -14.0, 50.0)
    fill([(-38.0, 26.0), (-10.0, 26.0), (-10.0, 54.0), (-38.0, 54.0)], (146, 132, 100))
    fill(np.asarray(drained.exterior.coords), (118, 102, 78))
    for k in range(4):
        px_, py_ = -30.0 + 4.0 * k, 36.0 + 3.0 * (k % 2)
        cv2.circle(img, (int((px_ - x0) / gsd), int((py_ - y0) / -gsd)), int(1.2 / gsd), (48, 84, 90), -1)
    ponds.append(drained)
    water.append(False)
    # a blue steel factory roof: water-coloured to a naive detector, not a pond
    fill([(-36.0, -24.0), (-18.0, -24.0), (-18.0, -10.0), (-36.0, -10.0)], (66, 108, 158))
    # a road, a hamlet and a tree row: things that are not ponds
    fill([(x0, -60), (x0 + wm, -52), (x0 + wm, -46), (x0, -54)], (168, 160, 146))
    for k in range(9):
        hx, hy = 25.0 + 14 * (k % 3) + rng.uniform(-2, 2), 30.0 + 9 * (k // 3)
        roof = (170, 90, 70) if k % 2 else (178, 178, 176)
        fill([(hx, hy), (hx + 10, hy), (hx + 10, hy + 7), (hx, hy + 7)], roof)
    for k in range(30):
        cx, cy = -60.0 + 7 * k, -42.0 + rng.uniform(-0.5, 0.5)
        cv2.circle(img, (int((cx - x0) / gsd), int((y0 - cy) / gsd)), int(2.5 / gsd), (52, 88, 46), -1)
    img += rng.normal(0, 5.0, img.shape).astype(np.float32)  # texture
    blurred = cv2.GaussianBlur(img, (0, 0), 0.8)
    data = np.clip(blurred, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    crs = local_crs(s.origin_lon, s.origin_lat)
    raster = GeoRaster(data=data, transform=tf, crs=crs, band_names=("red", "green", "blue"))
    return raster, gpd.GeoDataFrame({"pond_id": [f"U{i + 1:02d}" for i in range(len(ponds))],
                                     "water": water}, geometry=ponds, crs=crs)


# --- the flight ---------------------------------------------------------------------------------


def flight_poses(s: ClipSettings) -> dict[str, np.ndarray]:
    """Per-frame true pose: east/north/height (m), gimbal and aircraft angles (deg), speed.

    The flight is described along the nadir pass's course (``u``) and to its right (``v``):
    nadir pass at ``v = 0``, a turn that slides ``lane_offset_m`` to the right while the gimbal
    turns left and tilts up, then the oblique pass back along ``v = lane_offset_m``.
    """
    n = s.n_frames
    t = np.arange(n) / s.fps
    u, v = np.zeros(n), np.zeros(n)
    g_yaw, g_pitch = np.zeros(n), np.zeros(n)
    d_yaw, vu, vv = np.zeros(n), np.zeros(n), np.zeros(n)
    t1, t2 = s.pass_s, s.pass_s + s.turn_s
    psi, lane = s.heading_deg, s.lane_offset_m
    u_end = s.start_along_m + s.speed_m_s * t1
    for i, ti in enumerate(t):
        if ti < t1:  # nadir pass along the course
            u[i] = s.start_along_m + s.speed_m_s * ti
            g_yaw[i], g_pitch[i], d_yaw[i], vu[i] = psi, -90.0, psi, s.speed_m_s
        elif ti < t2:  # turn: slide right, rotate to face back, tilt the gimbal up
            f = (ti - t1) / s.turn_s
            sm = f * f * (3 - 2 * f)
            u[i], v[i] = u_end, lane * sm
            g_yaw[i], g_pitch[i] = psi - 90.0 * sm, -90.0 + (90.0 + s.oblique_pitch_deg) * sm
            d_yaw[i] = psi + 180.0 * sm
            vv[i] = lane * 6 * f * (1 - f) / s.turn_s
        else:  # oblique pass back, gimbal looking left of the course flown (at the first lane)
            u[i], v[i] = u_end - s.speed_m_s * (ti - t2), lane
            g_yaw[i], g_pitch[i], d_yaw[i], vu[i] = psi - 90.0, s.oblique_pitch_deg, psi + 180.0, -s.speed_m_s
    a = math.radians(psi)
    fwd, right = np.array([math.sin(a), math.cos(a)]), np.array([math.cos(a), -math.sin(a)])  # (east, north)
    e, nn = u * fwd[0] + v * right[0], u * fwd[1] + v * right[1]
    ve, vn = vu * fwd[0] + vv * right[0], vu * fwd[1] + vv * right[1]
    d_yaw = (d_yaw + 180.0) % 360.0 - 180.0
    g_yaw = (g_yaw + 180.0) % 360.0 - 180.0
    h = s.altitude_m + 1.5 * np.sin(2 * np.pi * t / 17.0)  # gentle altitude hold wander
    return {"time_s": t, "east_m": e, "north_m": nn, "height_m": h, "gimbal_yaw_deg": g_yaw,
            "gimbal_pitch_deg": g_pitch, "gimbal_roll_deg": np.zeros(n), "drone_yaw_deg": d_yaw,
            "drone_pitch_deg": -0.8 * np.hypot(ve, vn), "drone_roll_deg": 0.3 * np.sin(t),
            "speed_e_m_s": ve, "speed_n_m_s": vn}


def _ar1(n: int, sigma: float, tau_s: float, fps: float, rng: np.random.Generator) -> np.ndarray:
    phi = math.exp(-1.0 / (tau_s * fps))
    out = np.empty(n)
    out[0] = rng.normal(0, sigma)
    step = sigma * math.sqrt(1 - phi * phi)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + rng.normal(0, step)
    return out


def _srt_time(t_s: float) -> str:
    ms = int(round(t_s * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _srt_text(s: ClipSettings, pose: dict[str, np.ndarray], lon: np.ndarray, lat: np.ndarray,
              rel_alt: np.ndarray, baro_offset_m: float, rng: np.random.Generator) -> str:
    start = dt.datetime.fromisoformat(s.start_utc)
    dt_ms = int(round(1000 / s.fps))
    blocks = []
    for i, t in enumerate(pose["time_s"]):
        stamp = (start + dt.timedelta(seconds=float(t))).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        gy, gp, gr = (pose[k][i] + rng.normal(0, 0.05) for k in
                      ("gimbal_yaw_deg", "gimbal_pitch_deg", "gimbal_roll_deg"))
        gy = (gy + 180.0) % 360.0 - 180.0
        blocks.append(
            f"{i + 1}\n{_srt_time(t)} --> {_srt_time(t + 1 / s.fps)}\n"
            f'<font size="28">FrameCnt: {i + 1}, DiffTime: {dt_ms}ms\n{stamp}\n'
            "[iso: 100] [shutter: 1/1000.0] [fnum: 2.8] [ev: 0] [color_md : default] [ae_meter_md: 1]\n"
            f"[focal_len: {s.focal_len_35mm:.2f}] [dzoom_ratio: 1.00], "
            f"[latitude: {lat[i]:.6f}] [longitude: {lon[i]:.6f}]\n"
            f"[rel_alt: {rel_alt[i]:.3f} abs_alt: {rel_alt[i] + baro_offset_m:.3f}] "
            f"[gb_yaw: {gy:.1f} gb_pitch: {max(gp, -90.0):.1f} gb_roll: {gr:.1f}]\n"
            f"[drone_speedx: {pose['speed_e_m_s'][i]:.1f} drone_speedy: {pose['speed_n_m_s'][i]:.1f} "
            f"drone_speedz: 0.0] [drone_yaw: {pose['drone_yaw_deg'][i]:.1f} "
            f"drone_pitch: {pose['drone_pitch_deg'][i]:.1f} drone_roll: {pose['drone_roll_deg'][i]:.1f}] </font>\n"
        )
    return "\n".join(blocks)


def _ground_from_px(ortho: GeoRaster, lcrs: CRS) -> np.ndarray:
    """3x3 affine: ortho (col, row, 1) -> local (east, north, 1), exact for the local CRS and a
    least-squares fit over the ortho for any other metric CRS."""
    cols = np.array([0, ortho.width, 0, ortho.width, ortho.width / 2])
    rows = np.array([0, 0, ortho.height, ortho.height, ortho.height / 2])
    t = ortho.transform
    xs, ys = t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
    e, n = transformer(ortho.crs, lcrs).transform(np.asarray(xs), np.asarray(ys))
    a = np.c_[cols, rows, np.ones(5)]
    coef_e = np.linalg.lstsq(a, np.asarray(e), rcond=None)[0]
    coef_n = np.linalg.lstsq(a, np.asarray(n), rcond=None)[0]
    return np.array([coef_e, coef_n, [0, 0, 1.0]])


def generate_uav_clip(out_dir: str | Path, seed: int = 0, *, ortho: GeoRaster | None = None,
                      ponds: gpd.GeoDataFrame | None = None, settings: ClipSettings | None = None,
                      overwrite: bool = False) -> ClipOutputs:
    """Render the clip, its SRT and truth into ``out_dir/uav/`` (deterministic for a seed).

    Args:
        out_dir: root output folder; files go to ``out_dir/uav``.
        seed: random seed (ortho layout, GNSS noise, barometric offset).
        ortho: optional RGB uint8 ortho in a metric CRS covering the flight; default renders one.
        ponds: truth pond polygons for ``ortho`` (any CRS); required with ``ortho``.
        settings: camera and flight; defaults to :class:`ClipSettings`.
        overwrite: replace existing outputs.
    """
    import cv2
    import rasterio

    s = settings or ClipSettings()
    rng = np.random.default_rng(seed)
    lcrs = local_crs(s.origin_lon, s.origin_lat)
    if ortho is None:
        ortho, ponds = render_farm_ortho(s, rng)
    elif ponds is None:
        raise ValueError("a custom ortho needs its truth ponds")
    if ortho.count < 3 or ortho.data.dtype != np.uint8:
        raise ValueError("ortho must be RGB uint8")
    out = Path(out_dir) / "uav"
    out.mkdir(parents=True, exist_ok=True)
    pose = flight_poses(s)
    n = s.n_frames
    gfp = _ground_from_px(ortho, lcrs)
    src = np.ascontiguousarray(ortho.data[:3].transpose(1, 2, 0)[..., ::-1])  # BGR for OpenCV
    paths = ClipOutputs(video=out / "clip.mp4", srt=out / "clip.SRT", ortho=out / "ortho.tif",
                        truth_footprints=out / "truth_footprints.geojson",
                        truth_ponds=out / "truth_ponds.geojson", meta=out / "clip.json")

    footprints = []
    noise_rng = np.random.default_rng([seed, 7])  # own stream: the main one stays as it was
    noise = [np.round(noise_rng.normal(0.0, 2.5, (s.height_px, s.width_px, 3))).astype(np.int16)
             for _ in range(5)]  # a few sensor-noise fields, cycled (one per frame would be slow)
    with atomic_path(paths.video, overwrite=overwrite) as tmp:
        tmp_mp4 = tmp.with_suffix(".mp4")
        vw = cv2.VideoWriter(str(tmp_mp4), cv2.VideoWriter.fourcc(*"mp4v"), s.fps, (s.width_px, s.height_px))
        if not vw.isOpened():
            raise RuntimeError("OpenCV cannot write mp4v video here")
        try:
            for i in range(n):
                en = (pose["east_m"][i], pose["north_m"][i])
                ang = (pose["gimbal_yaw_deg"][i], pose["gimbal_pitch_deg"][i], pose["gimbal_roll_deg"][i])
                hmg = ground_homography(en, pose["height_m"][i], ang, gfp, s)
                frame = cv2.warpPerspective(src, hmg, (s.width_px, s.height_px), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=(100, 120, 130))
                gain = 1.0 + 0.04 * math.sin(2 * math.pi * i / (4.3 * s.fps))  # auto-exposure drift
                frame = cv2.add(cv2.convertScaleAbs(frame, alpha=gain), noise[i % len(noise)], dtype=cv2.CV_8U)
                vw.write(frame)
                footprints.append(true_footprint_m(en, pose["height_m"][i], ang, s))
        finally:
            vw.release()
        tmp_mp4.replace(tmp)

    # telemetry as logged: GNSS error (correlated), barometric height with an offset
    to_ll = transformer(lcrs, WGS84)
    lon_t, lat_t = to_ll.transform(pose["east_m"], pose["north_m"])
    ge = _ar1(n, s.gps_sigma_m, 5.0, s.fps, rng)
    gn = _ar1(n, s.gps_sigma_m, 5.0, s.fps, rng)
    lon_m, lat_m = to_ll.transform(pose["east_m"] + ge, pose["north_m"] + gn)
    rel_alt = pose["height_m"] + rng.normal(0, s.baro_sigma_m, n)
    baro_offset = float(rng.uniform(-30.0, 60.0))
    write_text_atomic(paths.srt, _srt_text(s, pose, lon_m, lat_m, rel_alt, baro_offset, rng), overwrite=overwrite)

    fp = gpd.GeoDataFrame({
        "frame": np.arange(n), "time_s": pose["time_s"], "lon": lon_t, "lat": lat_t,
        "alt_m": pose["height_m"], "gimbal_yaw_deg": pose["gimbal_yaw_deg"],
        "gimbal_pitch_deg": pose["gimbal_pitch_deg"], "gimbal_roll_deg": pose["gimbal_roll_deg"],
        "gps_error_m": np.hypot(ge, gn)}, geometry=footprints, crs=lcrs)
    write_geojson(fp, paths.truth_footprints, overwrite=overwrite)
    ponds_l = ponds.to_crs(lcrs)
    union_seen = [any(f.contains(p) for f in footprints) for p in ponds_l.geometry]
    tp = ponds_l.assign(label="pond", fully_seen=union_seen,
                        area_m2=ponds_l.geometry.area.round(1))
    write_geojson(tp, paths.truth_ponds, overwrite=overwrite)
    with atomic_path(paths.ortho, overwrite=overwrite) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=ortho.width, height=ortho.height, count=3,
                           dtype="uint8", crs=ortho.crs, transform=ortho.transform, compress="deflate",
                           photometric="RGB") as ds:
            ds.write(ortho.data[:3])
    meta = {"settings": asdict(s), "seed": seed, "n_frames": n, "fx_px": s.fx_px,
            "baro_offset_m": baro_offset, "local_crs": lcrs.to_wkt(),
            "camera_options": f"--hfov-deg {s.hfov_deg:g}"}
    write_text_atomic(paths.meta, json.dumps(meta, indent=1), overwrite=overwrite)
    return paths
