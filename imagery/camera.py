"""Camera intrinsics and frame georeferencing: pixel <-> ground by ray casting (FLIGHT.md §2).

Conventions (DJI, Mavic 3M manual): gimbal yaw/pitch/roll are Euler angles of the camera in
NED, rotation order ZYX; yaw clockwise from true north, pitch 0 at the horizon and -90 straight
down; at nadir the top of the image points toward the yaw. The camera frame is OpenCV's
(x right, y down, z along the optical axis). A pixel ``(u, v)`` becomes the ray::

    d_c   = [(u - cx)/fx, (v - cy)/fy, 1]
    d_ned = Rz(yaw) · Ry(pitch) · Rx(roll) · M · d_c,   M = [[0,0,1],[1,0,0],[0,1,0]]

which meets flat ground ``height_m`` below the camera at ``t = height_m / d_down``, or a DEM by
ray marching (:mod:`tuban.imagery.dem_ray`). Offsets are converted with a local tangent plane
(``pymap3d``), so everything here is vectorised numpy.

Rays at or above the horizon never meet the ground: a footprint is clipped at ``max_range_m``
when only part of the view is above the horizon, and there is no footprint (``None``) when the
optical axis itself is at or above the horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pymap3d
from shapely.geometry import Polygon

__all__ = [
    "Camera",
    "CAMERA_PRESETS",
    "camera_preset",
    "rotation_ned",
    "pixel_rays_ned",
    "pixel_to_ground",
    "ground_to_pixel",
    "footprint",
    "gsd_m",
    "view_above_horizon",
    "FULL_FRAME_DIAGONAL_MM",
]

FULL_FRAME_DIAGONAL_MM = 43.2666  # diagonal of a 36 x 24 mm frame: the "35 mm equivalent" rule
_HORIZON_EPS = 1e-6
_M = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # camera -> gimbal body


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels (no distortion).

    Args:
        name: preset or free-text name.
        width_px, height_px: image size.
        fx_px, fy_px: focal lengths in pixels.
        cx_px, cy_px: principal point; ``None`` means the image centre.
    """

    name: str
    width_px: int
    height_px: int
    fx_px: float
    fy_px: float
    cx_px: float | None = None
    cy_px: float | None = None

    def __post_init__(self) -> None:
        if self.width_px <= 0 or self.height_px <= 0:
            raise ValueError(f"image size must be positive, got {self.width_px}x{self.height_px}")
        if not (self.fx_px > 0 and self.fy_px > 0):
            raise ValueError(f"focal lengths must be positive, got {self.fx_px}, {self.fy_px}")
        if self.cx_px is None:
            object.__setattr__(self, "cx_px", self.width_px / 2.0)
        if self.cy_px is None:
            object.__setattr__(self, "cy_px", self.height_px / 2.0)

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2 * math.atan(self.width_px / (2 * self.fx_px)))

    @property
    def vfov_deg(self) -> float:
        return math.degrees(2 * math.atan(self.height_px / (2 * self.fy_px)))

    @classmethod
    def from_hfov(cls, hfov_deg: float, width_px: int, height_px: int, name: str = "custom") -> Camera:
        """Square-pixel camera with a given horizontal field of view.

        Example:
            >>> round(Camera.from_hfov(90.0, 1000, 750).fx_px, 6)
            500.0
        """
        if not 0 < hfov_deg < 180:
            raise ValueError(f"horizontal FOV must be in (0, 180) degrees, got {hfov_deg}")
        f = width_px / (2 * math.tan(math.radians(hfov_deg) / 2))
        return cls(name, int(width_px), int(height_px), f, f)

    @classmethod
    def from_35mm(cls, focal_35mm: float, width_px: int, height_px: int, name: str = "custom") -> Camera:
        """Camera from a 35 mm-equivalent focal length, by the diagonal rule.

        The equivalent focal length scales the image diagonal to 43.27 mm, so
        ``f_px = hypot(W, H) * f_eq / 43.27`` whatever the aspect ratio (using 36 mm for the
        width overstates the horizontal FOV of 4:3 sensors).

        Example:
            >>> round(Camera.from_35mm(24.0, 4000, 3000).hfov_deg, 1)
            70.4
        """
        if focal_35mm <= 0:
            raise ValueError(f"focal length must be positive, got {focal_35mm}")
        f = math.hypot(width_px, height_px) * focal_35mm / FULL_FRAME_DIAGONAL_MM
        return cls(name, int(width_px), int(height_px), f, f)

    @classmethod
    def from_sensor(cls, focal_mm: float, sensor_w_mm: float, sensor_h_mm: float,
                    width_px: int, height_px: int, name: str = "custom") -> Camera:
        """Camera from the physical focal length and sensor size: ``fx = f / sensor_w · W``."""
        return cls(name, int(width_px), int(height_px),
                   focal_mm / sensor_w_mm * width_px, focal_mm / sensor_h_mm * height_px)

    def for_image(self, width_px: int, height_px: int) -> Camera:
        """The same lens at another output size (a video mode): horizontal FOV kept, square pixels.

        DJI video modes crop the 4:3 sensor to 16:9 top and bottom and scale it, so the
        horizontal field of view is what carries over.
        """
        if (width_px, height_px) == (self.width_px, self.height_px):
            return self
        f = self.fx_px * width_px / self.width_px
        return replace(self, width_px=int(width_px), height_px=int(height_px), fx_px=f, fy_px=f,
                       cx_px=width_px / 2.0, cy_px=height_px / 2.0)

    def zoomed(self, ratio: float) -> Camera:
        """The camera with a digital/optical zoom ratio applied (focal lengths × ratio)."""
        if not ratio > 0:
            raise ValueError(f"zoom ratio must be positive, got {ratio}")
        return replace(self, fx_px=self.fx_px * ratio, fy_px=self.fy_px * ratio)


# DJI cameras (FLIGHT.md §2.3); fx from focal length and sensor width. Entries marked
# "35mm-eq" are derived from the 35 mm-equivalent focal length by the diagonal rule.
CAMERA_PRESETS: dict[str, Camera] = {
    "p4rtk": Camera.from_sensor(8.8, 13.2, 8.8, 5472, 3648, "p4rtk"),  # Phantom 4 RTK/Pro FC6310
    "m3e": Camera.from_sensor(12.29, 17.3, 13.0, 5280, 3956, "m3e"),  # Mavic 3 Enterprise wide
    "mavic3": Camera.from_sensor(12.29, 17.3, 13.0, 5280, 3956, "mavic3"),  # Hasselblad 4/3, 24 mm eq
    "m30t-wide": Camera.from_sensor(4.5, 6.4, 4.8, 8000, 6000, "m30t-wide"),
    "m30t-thermal": Camera.from_sensor(9.1, 7.68, 6.144, 640, 512, "m30t-thermal"),
    "m3t-wide": Camera.from_35mm(24.0, 8000, 6000, "m3t-wide"),  # 35mm-eq
    "mini3": Camera.from_sensor(6.72, 9.83, 7.37, 4032, 3024, "mini3"),
    "mini4": Camera.from_sensor(6.72, 9.83, 7.37, 4032, 3024, "mini4"),
    "mini2": Camera.from_sensor(4.49, 6.17, 4.55, 4000, 3000, "mini2"),
    "mavic2pro": Camera.from_35mm(28.0, 5472, 3648, "mavic2pro"),  # 35mm-eq
    "mavicpro": Camera.from_35mm(26.0, 4000, 3000, "mavicpro"),  # 35mm-eq
    "air2s": Camera.from_35mm(22.0, 5472, 3648, "air2s"),  # 35mm-eq
}


def camera_preset(name: str) -> Camera:
    """A preset by (case-insensitive) name; ``ValueError`` listing the known names otherwise."""
    key = name.strip().lower()
    if key not in CAMERA_PRESETS:
        raise ValueError(f"unknown camera preset {name!r}; known: {', '.join(sorted(CAMERA_PRESETS))}")
    return CAMERA_PRESETS[key]


def rotation_ned(yaw_deg, pitch_deg, roll_deg) -> np.ndarray:
    """``Rz(yaw)·Ry(pitch)·Rx(roll)`` (gimbal body -> NED), broadcast to shape ``(..., 3, 3)``."""
    y, p, r = (np.radians(np.asarray(a, dtype=float)) for a in (yaw_deg, pitch_deg, roll_deg))
    y, p, r = np.broadcast_arrays(y, p, r)
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    out = np.empty(y.shape + (3, 3))
    out[..., 0, 0] = cy * cp
    out[..., 0, 1] = cy * sp * sr - sy * cr
    out[..., 0, 2] = cy * sp * cr + sy * sr
    out[..., 1, 0] = sy * cp
    out[..., 1, 1] = sy * sp * sr + cy * cr
    out[..., 1, 2] = sy * sp * cr - cy * sr
    out[..., 2, 0] = -sp
    out[..., 2, 1] = cp * sr
    out[..., 2, 2] = cp * cr
    return out


def pixel_rays_ned(camera: Camera, u_px, v_px, yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """Unit NED direction ``(N, 3)`` of the rays through pixels ``(u, v)`` (pixel-corner coordinates)."""
    u = np.atleast_1d(np.asarray(u_px, dtype=float))
    v = np.atleast_1d(np.asarray(v_px, dtype=float))
    d_c = np.stack([(u - camera.cx_px) / camera.fx_px, (v - camera.cy_px) / camera.fy_px, np.ones_like(u)], -1)
    rot = rotation_ned(yaw_deg, pitch_deg, roll_deg) @ _M
    d = d_c @ rot.T
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def view_above_horizon(camera: Camera, pitch_deg: float, roll_deg: float = 0.0) -> bool:
    """True when the optical axis points at or above the horizon (no ground footprint)."""
    centre = pixel_rays_ned(camera, camera.cx_px, camera.cy_px, 0.0, pitch_deg, roll_deg)[0]
    return bool(centre[2] <= _HORIZON_EPS)


def _ned_to_lonlat(north_m, east_m, down_m, lon_deg: float, lat_deg: float):
    lat, lon, _ = pymap3d.ned2geodetic(north_m, east_m, down_m, lat_deg, lon_deg, 0.0)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def pixel_to_ground(
    camera: Camera,
    u_px,
    v_px,
    *,
    lon_deg: float,
    lat_deg: float,
    height_m: float,
    yaw_deg: float,
    pitch_deg: float,
    roll_deg: float = 0.0,
    dem=None,
    camera_alt_m: float | None = None,
    max_range_m: float | None = None,
):
    """Ground positions seen at pixels ``(u, v)``.

    Args:
        camera: intrinsics.
        u_px, v_px: pixel coordinates (corner convention: the image spans 0..W, 0..H).
        lon_deg, lat_deg: camera position, WGS84.
        height_m: camera height above the (flat) ground, metres.
        yaw_deg, pitch_deg, roll_deg: gimbal attitude in NED, ZYX (DJI convention).
        dem: optional :class:`~tuban.imagery.georaster.GeoRaster` of ground elevation;
            rays are marched until they cross it.
        camera_alt_m: camera altitude in the DEM's vertical datum; default DEM under the
            camera + ``height_m``.
        max_range_m: rays that miss the ground (above the horizon) are clipped at this
            horizontal range; default ``max(20 × height_m, 100)``.

    Returns:
        ``(lon, lat, hit)``: arrays; ``hit`` is False for clipped rays (their lon/lat are the
        clipped points).

    Example:
        >>> cam = Camera.from_hfov(90.0, 100, 100)
        >>> lon, lat, hit = pixel_to_ground(cam, 50, 50, lon_deg=114.0, lat_deg=30.0,
        ...                                 height_m=80.0, yaw_deg=0.0, pitch_deg=-90.0)
        >>> round(float(lon[0]), 7), round(float(lat[0]), 7), bool(hit[0])
        (114.0, 30.0, True)
    """
    rays = pixel_rays_ned(camera, u_px, v_px, yaw_deg, pitch_deg, roll_deg)
    max_range = max_range_m if max_range_m is not None else max(20.0 * float(height_m), 100.0)
    if dem is not None:
        from tuban.imagery.dem_ray import march_rays

        return march_rays(rays, lon_deg=lon_deg, lat_deg=lat_deg, height_m=height_m, dem=dem,
                          camera_alt_m=camera_alt_m, max_range_m=max_range)
    down = rays[:, 2]
    hit = down > _HORIZON_EPS
    t = np.where(hit, height_m / np.where(hit, down, 1.0), 0.0)
    horiz = np.hypot(rays[:, 0], rays[:, 1])
    t_clip = max_range / np.maximum(horiz, 1e-12)
    too_far = ~hit | (t * horiz > max_range)
    t = np.where(too_far, t_clip, t)
    north, east = t * rays[:, 0], t * rays[:, 1]
    # horizontal offsets in the tangent plane at the camera's nadir point (down = 0), the same
    # plane ground_to_pixel measures in, so the two are exact inverses
    lon, lat = _ned_to_lonlat(north, east, np.zeros_like(north), lon_deg, lat_deg)
    return lon, lat, ~too_far


def ground_to_pixel(
    camera: Camera,
    target_lon_deg,
    target_lat_deg,
    *,
    lon_deg: float,
    lat_deg: float,
    height_m: float,
    yaw_deg: float,
    pitch_deg: float,
    roll_deg: float = 0.0,
    target_up_m=0.0,
):
    """Pixel positions of ground points (the inverse of :func:`pixel_to_ground`).

    Args:
        target_lon_deg, target_lat_deg: WGS84 points.
        target_up_m: height of the targets above the flat ground plane (0 = on it).
        others: as for :func:`pixel_to_ground`.

    Returns:
        ``(u_px, v_px, in_frame)``; ``in_frame`` is True when the point is in front of the
        camera and inside ``0 <= u < W``, ``0 <= v < H``.

    Example:
        >>> cam = Camera.from_hfov(90.0, 100, 100)
        >>> u, v, ok = ground_to_pixel(cam, 114.0, 30.0, lon_deg=114.0, lat_deg=30.0,
        ...                            height_m=80.0, yaw_deg=0.0, pitch_deg=-90.0)
        >>> round(float(u[0]), 6), round(float(v[0]), 6), bool(ok[0])
        (50.0, 50.0, True)
    """
    lon_t = np.atleast_1d(np.asarray(target_lon_deg, dtype=float))
    lat_t = np.atleast_1d(np.asarray(target_lat_deg, dtype=float))
    up = np.broadcast_to(np.asarray(target_up_m, dtype=float), lon_t.shape)
    # the flat ground plane is the tangent plane height_m below the camera
    n, e, d = pymap3d.geodetic2ned(lat_t, lon_t, 0.0, lat_deg, lon_deg, 0.0)
    n, e = np.asarray(n, dtype=float), np.asarray(e, dtype=float)
    # horizontal offsets from geodetic2ned; the vertical offset is the flat-ground plane's
    # (geodetic2ned's own down includes Earth curvature, which pixel_to_ground ignores)
    d = np.full_like(n, float(height_m)) - up
    vec = np.stack([n, e, d], -1)
    rot = rotation_ned(yaw_deg, pitch_deg, roll_deg) @ _M
    d_c = vec @ rot  # = (Rᵀ·vec) row-wise
    z = d_c[:, 2]
    front = z > 1e-9
    zs = np.where(front, z, np.nan)
    u = camera.cx_px + camera.fx_px * d_c[:, 0] / zs
    v = camera.cy_px + camera.fy_px * d_c[:, 1] / zs
    inside = front & (u >= 0) & (u < camera.width_px) & (v >= 0) & (v < camera.height_px)
    return u, v, inside


def footprint(
    lon_deg: float,
    lat_deg: float,
    height_m: float,
    yaw_deg: float,
    pitch_deg: float,
    roll_deg: float,
    camera: Camera,
    dem=None,
    *,
    edge_points: int = 8,
    camera_alt_m: float | None = None,
    max_range_m: float | None = None,
) -> Polygon | None:
    """Ground footprint of one frame as a WGS84 polygon (x = lon, y = lat).

    The image border is sampled with ``edge_points`` points per side so oblique and DEM
    footprints keep their shape; border rays above the horizon are clipped at
    ``max_range_m``. Returns ``None`` when the optical axis is at or above the horizon, or
    when the height or angles are not finite.

    Example:
        >>> cam = Camera.from_hfov(90.0, 400, 300)
        >>> poly = footprint(114.0, 30.0, 50.0, 0.0, -90.0, 0.0, cam)
        >>> poly is not None and poly.is_valid
        True
    """
    values = (lon_deg, lat_deg, height_m, yaw_deg, pitch_deg, roll_deg)
    if not all(np.isfinite(values)) or height_m <= 0:
        return None
    if view_above_horizon(camera, pitch_deg, roll_deg):
        return None
    u, v = _border_pixels(camera, edge_points)
    lon, lat, _ = pixel_to_ground(camera, u, v, lon_deg=lon_deg, lat_deg=lat_deg, height_m=height_m,
                                  yaw_deg=yaw_deg, pitch_deg=pitch_deg, roll_deg=roll_deg, dem=dem,
                                  camera_alt_m=camera_alt_m, max_range_m=max_range_m)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if ok.sum() < 3:
        return None
    poly = Polygon(np.column_stack([lon[ok], lat[ok]]))
    if not poly.is_valid:
        poly = poly.buffer(0)
        if poly.geom_type != "Polygon":
            return None
    return poly


def _border_pixels(camera: Camera, per_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels around the image border, clockwise from the top-left corner."""
    w, h = float(camera.width_px), float(camera.height_px)
    s = np.linspace(0.0, 1.0, max(per_side, 1) + 1)[:-1]
    u = np.concatenate([s * w, np.full_like(s, w), (1 - s) * w, np.zeros_like(s)])
    v = np.concatenate([np.zeros_like(s), s * h, np.full_like(s, h), (1 - s) * h])
    return u, v


def gsd_m(camera: Camera, height_m: float, pitch_deg: float = -90.0, roll_deg: float = 0.0) -> float:
    """Ground sample distance at the image centre, metres per pixel (across the view).

    At nadir this is ``height_m / fx``; obliquely it is the slant range to the centre over
    ``fx``. NaN when the centre ray does not meet the ground.

    Example:
        >>> round(gsd_m(CAMERA_PRESETS["p4rtk"], 100.0), 4)
        0.0274
    """
    if view_above_horizon(camera, pitch_deg, roll_deg) or not height_m > 0:
        return float("nan")
    centre = pixel_rays_ned(camera, camera.cx_px, camera.cy_px, 0.0, pitch_deg, roll_deg)[0]
    slant = height_m / centre[2]
    return float(slant / camera.fx_px)
