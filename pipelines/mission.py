"""Inspection missions over suspect patches: one waypoint model, a short route, battery splits.

A mission visits the centroid of each suspect patch (图斑) at a fixed height above the take-off
point, points the gimbal straight down (-90 deg), hovers and takes a photo, and returns to the
take-off point. The route is ordered by nearest neighbour then improved by 2-opt (in the local
UTM zone, metres). When one battery is not enough, the closed tour is cut into consecutive
legs, each a mission of its own that starts and ends at take-off.

Flight-time estimate of one mission (seconds)::

    horizontal_distance_m / speed_m_s            take-off -> waypoints -> take-off
  + n_waypoints * hover_s                        hover + photo at each patch
  + altitude_m / climb_m_s + altitude_m / descent_m_s
  + reserve_frac * max_flight_s                  battery kept for landing / wind

A mission is feasible when that estimate is at most ``max_flight_s``. The file writers are in
:mod:`tuban.pipelines.mission_formats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np

from tuban import VectorError
from tuban.imagery.crs import WGS84, transformer, utm_crs_for

__all__ = [
    "MissionSettings",
    "Waypoint",
    "Mission",
    "MissionPlan",
    "patch_targets",
    "plan_missions",
    "route_order",
    "tour_length_m",
]

_NAME_COLUMNS = ("case_id", "patch_id", "tuban_id", "pond_id", "id", "name")


@dataclass(frozen=True)
class MissionSettings:
    """How to fly an inspection mission.

    Args:
        altitude_m: flight height above the take-off point (2..500 m).
        speed_m_s: cruise speed between waypoints.
        max_flight_min: usable flight time of one battery, minutes.
        hover_s: hover time at each patch (the photo is taken during it).
        gimbal_pitch_deg: gimbal pitch over each patch (-90 = nadir).
        climb_m_s: vertical speed climbing to ``altitude_m`` after take-off.
        descent_m_s: vertical speed descending to land.
        reserve_frac: fraction of ``max_flight_min`` kept as battery reserve (0..0.9).
        takeoff: take-off ``(lon, lat)``; None = the first patch's centroid.
    """

    altitude_m: float = 80.0
    speed_m_s: float = 8.0
    max_flight_min: float = 25.0
    hover_s: float = 5.0
    gimbal_pitch_deg: float = -90.0
    climb_m_s: float = 4.0
    descent_m_s: float = 3.0
    reserve_frac: float = 0.2
    takeoff: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not 2.0 <= self.altitude_m <= 500.0:
            raise ValueError(f"altitude_m {self.altitude_m} outside 2..500")
        if not 0.5 <= self.speed_m_s <= 25.0:
            raise ValueError(f"speed_m_s {self.speed_m_s} outside 0.5..25")
        if not self.max_flight_min > 0:
            raise ValueError(f"max_flight_min {self.max_flight_min} must be positive")
        if self.hover_s < 0:
            raise ValueError(f"hover_s {self.hover_s} must not be negative")
        if not -90.0 <= self.gimbal_pitch_deg <= 30.0:
            raise ValueError(f"gimbal_pitch_deg {self.gimbal_pitch_deg} outside -90..30")
        if self.climb_m_s <= 0 or self.descent_m_s <= 0:
            raise ValueError("climb_m_s and descent_m_s must be positive")
        if not 0.0 <= self.reserve_frac <= 0.9:
            raise ValueError(f"reserve_frac {self.reserve_frac} outside 0..0.9")
        if self.takeoff is not None:
            lon, lat = self.takeoff
            if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
                raise ValueError(f"takeoff ({lon}, {lat}) is not a lon,lat position")

    @property
    def max_flight_s(self) -> float:
        return self.max_flight_min * 60.0


@dataclass(frozen=True)
class Waypoint:
    """One point of a mission: fly there, point the gimbal, hover, photograph.

    Args:
        lon, lat: WGS84 degrees.
        altitude_m: height above the take-off point.
        name: the patch it inspects (used as photo file suffix).
        gimbal_pitch_deg: gimbal pitch on arrival (-90 = nadir).
        hover_s: hover time on arrival, seconds.
        take_photo: take one photo on arrival.
    """

    lon: float
    lat: float
    altitude_m: float
    name: str
    gimbal_pitch_deg: float = -90.0
    hover_s: float = 5.0
    take_photo: bool = True

    def __post_init__(self) -> None:
        if not (-180.0 <= self.lon <= 180.0 and -90.0 <= self.lat <= 90.0):
            raise ValueError(f"waypoint ({self.lon}, {self.lat}) is not a lon,lat position")


@dataclass(frozen=True)
class Mission:
    """One battery's flight: take-off, the waypoints in order, back to take-off.

    Args:
        name: mission name (``<plan>_1`` ...).
        takeoff: ``(lon, lat)`` of the take-off / landing point.
        waypoints: the inspection waypoints in flying order.
        speed_m_s: cruise speed.
        altitude_m: flight height above take-off.
        distance_m: horizontal length of the closed route.
        flight_s: estimated flight time including hover, climb, descent and reserve.
    """

    name: str
    takeoff: tuple[float, float]
    waypoints: tuple[Waypoint, ...]
    speed_m_s: float
    altitude_m: float
    distance_m: float
    flight_s: float


@dataclass(frozen=True)
class MissionPlan:
    """All missions needed to visit every patch, plus notes for the pilot."""

    missions: tuple[Mission, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def n_waypoints(self) -> int:
        return sum(len(m.waypoints) for m in self.missions)


def patch_targets(patches: gpd.GeoDataFrame, source: str | None = None) -> list[tuple[str, float, float]]:
    """``(name, lon, lat)`` of each patch centroid (computed in the local UTM zone).

    Names come from the first of ``case_id``, ``patch_id``, ``tuban_id``, ``pond_id``, ``id``,
    ``name`` present, else ``patch_<n>`` (1-based). Empty geometries are skipped.

    Raises:
        VectorError: no CRS, or no usable geometry at all.
    """
    if patches.crs is None:
        raise VectorError(source, "patches have no CRS")
    g = patches[patches.geometry.notna() & ~patches.geometry.is_empty]
    if len(g) == 0:
        raise VectorError(source, "no patches with a geometry")
    g = g.to_crs(WGS84)
    lon0, lat0 = g.geometry.iloc[0].representative_point().coords[0]
    if not (-180.0 <= lon0 <= 180.0 and -90.0 <= lat0 <= 90.0):
        raise VectorError(source, f"coordinates ({lon0}, {lat0}) are not lon/lat degrees")
    utm = utm_crs_for(lon0, lat0)
    cent = g.to_crs(utm).geometry.centroid.to_crs(WGS84)
    name_col = next((c for c in _NAME_COLUMNS if c in g.columns), None)
    out = []
    for i, (idx, pt) in enumerate(zip(g.index, cent, strict=True)):
        raw = g.at[idx, name_col] if name_col else None
        name = str(raw) if raw is not None and raw == raw else f"patch_{i + 1}"
        out.append((name, float(pt.x), float(pt.y)))
    return out


def tour_length_m(xy_m: np.ndarray, order: Sequence[int]) -> float:
    """Length of the closed tour visiting ``xy_m[order]`` and returning to the start."""
    p = xy_m[np.asarray(order, dtype=int)]
    return float(np.hypot(*(np.roll(p, -1, axis=0) - p).T).sum())


def _nearest_neighbour(xy_m: np.ndarray) -> list[int]:
    n = len(xy_m)
    todo = np.ones(n, dtype=bool)
    todo[0] = False
    order = [0]
    for _ in range(n - 1):
        d = np.hypot(*(xy_m - xy_m[order[-1]]).T)
        d[~todo] = np.inf
        nxt = int(np.argmin(d))
        order.append(nxt)
        todo[nxt] = False
    return order


def _two_opt(xy_m: np.ndarray, order: list[int], max_passes: int = 50) -> list[int]:
    """Improve a closed tour (node 0 fixed first) by reversing segments while it shortens."""
    tour = np.asarray(order, dtype=int)
    n = len(tour)
    if n < 4:
        return tour.tolist()
    for _ in range(max_passes):
        improved = False
        for i in range(0, n - 2):
            p = xy_m[tour]
            a, b = p[i], p[i + 1]
            c = p[i + 2 :]
            d = np.roll(p, -1, axis=0)[i + 2 :]
            gain = (np.hypot(*(a - b)) + np.hypot(*(c - d).T)
                    - np.hypot(*(a - c).T) - np.hypot(*(b - d).T))
            if i == 0:
                gain = gain[:-1]  # edge (n-1, 0) shares node 0 with edge (0, 1)
            if len(gain) == 0:
                continue
            j_rel = int(np.argmax(gain))
            if gain[j_rel] > 1e-9:
                j = i + 2 + j_rel
                tour[i + 1 : j + 1] = tour[i + 1 : j + 1][::-1].copy()
                improved = True
        if not improved:
            break
    return tour.tolist()


def route_order(xy_m: np.ndarray) -> list[int]:
    """A short closed tour over points in metres, starting and ending at point 0.

    Nearest neighbour then 2-opt; the input order improved by 2-opt is also tried and the
    shorter tour kept, so the result is never longer than the input order.

    Example:
        >>> route_order(np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float))
        [0, 1, 3, 2]
    """
    xy_m = np.asarray(xy_m, dtype=float)
    n = len(xy_m)
    if n <= 3:
        return list(range(n))
    candidates = [_two_opt(xy_m, _nearest_neighbour(xy_m)), _two_opt(xy_m, list(range(n)))]
    return min(candidates, key=lambda o: tour_length_m(xy_m, o))


def _flight_s(distance_m: float, n_wp: int, s: MissionSettings) -> float:
    return (distance_m / s.speed_m_s + n_wp * s.hover_s + s.altitude_m / s.climb_m_s
            + s.altitude_m / s.descent_m_s + s.reserve_frac * s.max_flight_s)


def _leg_distance_m(xy_m: np.ndarray, leg: list[int]) -> float:
    return tour_length_m(xy_m, [0, *leg])


def plan_missions(
    targets: Sequence[tuple[str, float, float]], settings: MissionSettings, *, name: str = "mission"
) -> MissionPlan:
    """Order the patch targets into one or more battery-sized missions.

    Args:
        targets: ``(name, lon, lat)`` per patch (see :func:`patch_targets`).
        settings: altitude, speed, battery and take-off.
        name: base name of the missions (``name`` or ``name_1``, ``name_2``, ...).

    Returns:
        The plan; every target appears in exactly one mission. A target that cannot be reached
        and brought back within one battery still gets its own mission, with a warning.
    """
    if not targets:
        raise ValueError("no targets to visit")
    takeoff = settings.takeoff or (targets[0][1], targets[0][2])
    utm = utm_crs_for(*takeoff)
    to_m = transformer(WGS84, utm)
    lons = np.array([takeoff[0], *[t[1] for t in targets]])
    lats = np.array([takeoff[1], *[t[2] for t in targets]])
    x, y = to_m.transform(lons, lats)
    xy = np.column_stack([x, y])
    order = route_order(xy)[1:]  # drop the take-off node
    budget = settings.max_flight_s
    legs: list[list[int]] = []
    warnings: list[str] = []
    for k in order:
        if legs and _flight_s(_leg_distance_m(xy, [*legs[-1], k]), len(legs[-1]) + 1, settings) <= budget:
            legs[-1].append(k)
            continue
        legs.append([k])
        solo = _flight_s(_leg_distance_m(xy, [k]), 1, settings)
        if solo > budget:
            warnings.append(f"{targets[k - 1][0]}: estimated {solo / 60:.1f} min even alone, more "
                            f"than --max-flight-min {settings.max_flight_min:g}; fly it from nearer")
    missions = []
    for i, leg in enumerate(legs):
        if len(leg) >= 3:  # re-optimise each leg as a closed tour of its own
            sub = xy[[0, *leg]]
            leg = [leg[j - 1] for j in route_order(sub)[1:]]
        dist = _leg_distance_m(xy, leg)
        wps = tuple(Waypoint(lon=targets[k - 1][1], lat=targets[k - 1][2], altitude_m=settings.altitude_m,
                             name=targets[k - 1][0], gimbal_pitch_deg=settings.gimbal_pitch_deg,
                             hover_s=settings.hover_s) for k in leg)
        missions.append(Mission(name=name if len(legs) == 1 else f"{name}_{i + 1}",
                                takeoff=(float(takeoff[0]), float(takeoff[1])), waypoints=wps,
                                speed_m_s=settings.speed_m_s, altitude_m=settings.altitude_m,
                                distance_m=dist, flight_s=_flight_s(dist, len(leg), settings)))
    if math.isclose(settings.reserve_frac, 0.0):
        warnings.append("no battery reserve (reserve_frac 0)")
    return MissionPlan(missions=tuple(missions), warnings=tuple(warnings))
