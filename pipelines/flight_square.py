"""The 口-shaped square: fit the ideal square to a flown path and measure legs and corners.

Geometry in local ENU metres (x = east, y = north). The ideal square is either judge-supplied
(start corner, side, bearing of the first leg, turn direction) or fitted by minimising the
distance of every sample to the square's boundary over (centre, rotation, side) with
``scipy.optimize.least_squares`` (soft-L1 loss, so a stray transit sample does not drag it).

Legs are assigned monotonically (FLIGHT.md 4.2): the aircraft stays on leg k, overshoot past
the corner included, until it is past the start of leg k+1 and closer to that leg's line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

__all__ = ["Square", "fit_square", "square_from_spec", "leg_frames", "assign_legs", "order_corners"]


@dataclass(frozen=True)
class Square:
    """An ideal square as four corners in flying order (ENU metres), the first is the start."""

    corners: np.ndarray  # (4, 2)
    side_m: float
    fitted: bool

    @property
    def heading_deg(self) -> float:
        """Bearing of the first leg, degrees clockwise from north."""
        d = self.corners[1] - self.corners[0]
        return math.degrees(math.atan2(d[0], d[1])) % 360.0

    @property
    def turn(self) -> str:
        a, b, c = self.corners[0], self.corners[1], self.corners[2]
        cross = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
        return "right" if cross < 0 else "left"


def _box_distance(params: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cx, cy, theta, side = params
    c, s = math.cos(theta), math.sin(theta)
    px, py = c * (x - cx) + s * (y - cy), -s * (x - cx) + c * (y - cy)
    h = abs(side) / 2.0
    qx, qy = np.abs(px) - h, np.abs(py) - h
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def fit_square(x: np.ndarray, y: np.ndarray, side_m: float | None = None) -> tuple[np.ndarray, float, float]:
    """Least-squares square through points (ENU metres).

    Args:
        x, y: sample coordinates (east, north), metres.
        side_m: initial side (e.g. the course's); estimated from the spread when None.

    Returns:
        ``(centre_xy, rotation_rad, side_m)``; rotation is in [0, pi/2).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    cx, cy = float(np.median(x)), float(np.median(y))
    cov = np.cov(np.vstack([x - cx, y - cy]))
    _, v = np.linalg.eigh(cov)
    theta0 = math.atan2(v[1, -1], v[0, -1]) % (math.pi / 2)
    tries = []
    for theta_try in (theta0, (theta0 + math.pi / 4) % (math.pi / 2)):
        c, s = math.cos(theta_try), math.sin(theta_try)
        px, py = c * (x - cx) + s * (y - cy), -s * (x - cx) + c * (y - cy)
        side0 = side_m or float(np.mean([np.percentile(px, 95) - np.percentile(px, 5),
                                         np.percentile(py, 95) - np.percentile(py, 5)]))
        tries.append(least_squares(_box_distance, [cx, cy, theta_try, max(side0, 1.0)], args=(x, y),
                                   loss="soft_l1", f_scale=1.0, method="trf"))
    best = min(tries, key=lambda r: r.cost)
    cx, cy, theta, side = best.x
    # Second pass without the corner regions, so overshoots past corners do not inflate the side.
    h = abs(side) / 2.0
    c, s = math.cos(theta), math.sin(theta)
    px, py = c * (x - cx) + s * (y - cy), -s * (x - cx) + c * (y - cy)
    near = np.hypot(np.abs(px) - h, np.abs(py) - h) < max(2.0, 0.1 * abs(side))
    keep = ~near
    if keep.sum() >= 8:
        best = least_squares(_box_distance, best.x, args=(x[keep], y[keep]), loss="soft_l1", f_scale=1.0)
        cx, cy, theta, side = best.x
    return np.array([cx, cy]), float(theta % (math.pi / 2)), float(abs(side))


def order_corners(centre: np.ndarray, theta: float, side: float, start_xy: np.ndarray,
                  path_xy: np.ndarray) -> np.ndarray:
    """Corners of a fitted square in flying order: nearest the start first, direction as flown."""
    h = side / 2.0
    local = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])  # counter-clockwise
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    corners = centre + local @ rot.T
    k = int(np.argmin(np.hypot(*(corners - start_xy).T)))
    corners = np.roll(corners, -k, axis=0)
    area = 0.5 * np.sum(path_xy[:-1, 0] * path_xy[1:, 1] - path_xy[1:, 0] * path_xy[:-1, 1])
    if area < 0:  # flown clockwise (right turns): reverse the order after the start corner
        corners = np.vstack([corners[:1], corners[1:][::-1]])
    return corners


def square_from_spec(start_xy: np.ndarray, side_m: float, heading_deg: float, turn: str) -> Square:
    """Judge-supplied square: start corner (ENU), side, bearing of the first leg, turn direction."""
    b = math.radians(heading_deg)
    fwd = np.array([math.sin(b), math.cos(b)])
    right = np.array([fwd[1], -fwd[0]])
    side_dir = right if turn == "right" else -right
    a = np.asarray(start_xy, float)
    corners = np.array([a, a + side_m * fwd, a + side_m * (fwd + side_dir), a + side_m * side_dir])
    return Square(corners=corners, side_m=float(side_m), fitted=False)


def leg_frames(sq: Square, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Along-track ``s`` and signed cross-track ``xte`` of every sample against each leg: (N, 4)."""
    a = sq.corners
    b = np.roll(a, -1, axis=0)
    u = (b - a) / np.linalg.norm(b - a, axis=1, keepdims=True)
    dx, dy = x[:, None] - a[None, :, 0], y[:, None] - a[None, :, 1]
    s = dx * u[None, :, 0] + dy * u[None, :, 1]
    xte = dx * u[None, :, 1] - dy * u[None, :, 0]
    return s, xte


def assign_legs(s: np.ndarray, xte: np.ndarray, side_m: float, corner_radius_m: float) -> np.ndarray:
    """Leg index (0-3) of every sample, switching monotonically (see module docstring)."""
    n = len(s)
    legs = np.zeros(n, dtype=np.int64)
    k = 0
    for i in range(n):
        if k < 3:
            nxt = k + 1
            if s[i, nxt] > 0 and abs(xte[i, nxt]) < abs(xte[i, k]) and s[i, k] > 0.5 * side_m:
                k = nxt
        legs[i] = k
    return legs
