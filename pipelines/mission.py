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

Take-off (launch site). With a given take-off every patch is flown from there; a patch whose
round trip alone does not fit one battery is *unreachable*: it is not planned but listed in
:attr:`MissionPlan.unreachable`. Without one (``takeoff=None``, the CLI's ``--takeoff auto``) the
patches are grouped into launch sites, as a county team drives to a cluster and launches there
(:func:`launch_sites`): clusters small enough that one point reaches every patch with one
battery, launched from their geometric median (least total distance) where it reaches them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely
from scipy.cluster.hierarchy import fcluster, linkage

from tuban import VectorError
from tuban.imagery.crs import WGS84, transformer, utm_crs_for
from tuban.pipelines.evidence import ID_COLUMNS

__all__ = [
    "MissionSettings",
    "Waypoint",
    "Mission",
    "MissionPlan",
    "Unreachable",
    "launch_sites",
    "patch_targets",
    "plan_missions",
    "route_order",
    "tour_length_m",
]


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
        takeoff: take-off ``(lon, lat)``; None = automatic launch sites (see module doc).
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

    @property
    def reach_m(self) -> float:
        """Largest take-off-to-patch distance a one-waypoint mission can fly (0 if none)."""
        fixed_s = (self.hover_s + self.altitude_m / self.climb_m_s + self.altitude_m / self.descent_m_s
                   + self.reserve_frac * self.max_flight_s)
        return max(0.0, (self.max_flight_s - fixed_s) * self.speed_m_s / 2.0)


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
class Unreachable:
    """A patch no mission visits: its round trip alone exceeds one battery.

    Args:
        name: the patch name.
        lon, lat: WGS84 degrees of its centroid.
        distance_m: distance from the take-off.
        flight_s: estimated flight time of a one-waypoint mission to it.
    """

    name: str
    lon: float
    lat: float
    distance_m: float
    flight_s: float


@dataclass(frozen=True)
class MissionPlan:
    """The missions that visit every reachable patch, the patches left out, notes for the pilot.

    Args:
        missions: in flying order, grouped by launch site.
        warnings: one line each, for the pilot.
        unreachable: patches that no mission visits.
        name: base name the mission names extend (``name``, ``name_1``, ``name_site2_1`` ...).
    """

    missions: tuple[Mission, ...]
    warnings: tuple[str, ...] = field(default=())
    unreachable: tuple[Unreachable, ...] = field(default=())
    name: str = "mission"

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
    name_col = next((c for c in ID_COLUMNS if c in g.columns), None)
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


def _geometric_median(xy_m: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Point minimising the summed distance to ``xy_m`` (Weiszfeld); inside their convex hull."""
    p = xy_m.mean(axis=0)
    for _ in range(iterations):
        d = np.hypot(*(xy_m - p).T)
        if np.any(d < 1e-6):  # sitting on a data point: that point is a fine launch site
            return xy_m[int(np.argmin(d))].copy()
        w = 1.0 / d
        nxt = (xy_m * w[:, None]).sum(axis=0) / w.sum()
        if np.hypot(*(nxt - p)) < 0.01:
            return nxt
        p = nxt
    return p


def _site_for(xy_m: np.ndarray, reach_m: float) -> np.ndarray | None:
    """The geometric median when every point is within reach of it, else the centre of the
    smallest enclosing circle when that radius is within reach, else None."""
    site = _geometric_median(xy_m)
    if np.hypot(*(xy_m - site).T).max() <= reach_m:
        return site
    circle = shapely.minimum_bounding_circle(shapely.MultiPoint(xy_m))
    centre = np.array(circle.centroid.coords[0]) if circle.geom_type == "Polygon" else xy_m.mean(axis=0)
    return centre if np.hypot(*(xy_m - centre).T).max() <= reach_m else None


def launch_sites(xy_m: np.ndarray, reach_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Group points into few launch sites whose every point is within ``reach_m`` of the site.

    Complete-linkage clusters with diameter at most ``sqrt(3) * reach_m``: by Jung's theorem
    such a cluster fits in a circle of radius ``reach_m``. The site is the cluster's geometric
    median (least total distance) when every point is within reach of it, else the centre of
    the smallest enclosing circle; a cluster where neither works (rounding) is split again at
    diameter ``reach_m``, which any point of its convex hull reaches. Sites are numbered 0.. by
    point count, largest first (ties: west first).

    Args:
        xy_m: ``(n, 2)`` positions in metres (a local metric CRS).
        reach_m: largest allowed site-to-point distance, metres (> 0).

    Returns:
        ``(labels, sites)``: site index per point and ``(k, 2)`` site positions in metres.

    Example:
        >>> labels, sites = launch_sites(np.array([[0, 0], [10, 0], [5000, 0]], float), 1000)
        >>> labels.tolist(), sites.shape
        ([0, 0, 1], (2, 2))
    """
    xy_m = np.asarray(xy_m, dtype=float)
    groups: list[np.ndarray] = []
    found: list[np.ndarray] = []
    todo = [(np.arange(len(xy_m)), math.sqrt(3.0))]
    while todo:
        members, factor = todo.pop()
        if len(members) == 1:
            groups.append(members)
            found.append(xy_m[members[0]].copy())
            continue
        raw = fcluster(linkage(xy_m[members], method="complete"), t=factor * reach_m, criterion="distance")
        for c in np.unique(raw):
            g = members[raw == c]
            site = _site_for(xy_m[g], reach_m)
            if site is not None:
                groups.append(g)
                found.append(site)
            else:
                todo.append((g, 1.0))
    order = sorted(range(len(groups)), key=lambda k: (-len(groups[k]), float(xy_m[groups[k], 0].min())))
    labels = np.empty(len(xy_m), dtype=int)
    sites = np.empty((len(groups), 2))
    for k, g in enumerate(order):
        labels[groups[g]] = k
        sites[k] = found[g]
    return labels, sites


def _site_missions(xy: np.ndarray, idx: list[int], targets: Sequence[tuple[str, float, float]],
                   takeoff: tuple[float, float], settings: MissionSettings, name: str) -> list[Mission]:
    """Missions from one take-off (``xy[0]``) over targets ``idx`` (indices into ``xy``, 1-based)."""
    sub = xy[[0, *idx]]
    order = [idx[j - 1] for j in route_order(sub)[1:]]  # drop the take-off node
    legs: list[list[int]] = []
    for k in order:
        if legs and _flight_s(_leg_distance_m(xy, [*legs[-1], k]), len(legs[-1]) + 1,
                              settings) <= settings.max_flight_s:
            legs[-1].append(k)
        else:
            legs.append([k])
    missions = []
    for i, leg in enumerate(legs):
        if len(leg) >= 3:  # re-optimise each leg as a closed tour of its own
            leg = [leg[j - 1] for j in route_order(xy[[0, *leg]])[1:]]
        dist = _leg_distance_m(xy, leg)
        wps = tuple(Waypoint(lon=targets[k - 1][1], lat=targets[k - 1][2], altitude_m=settings.altitude_m,
                             name=targets[k - 1][0], gimbal_pitch_deg=settings.gimbal_pitch_deg,
                             hover_s=settings.hover_s) for k in leg)
        missions.append(Mission(name=name if len(legs) == 1 else f"{name}_{i + 1}",
                                takeoff=(float(takeoff[0]), float(takeoff[1])), waypoints=wps,
                                speed_m_s=settings.speed_m_s, altitude_m=settings.altitude_m,
                                distance_m=dist, flight_s=_flight_s(dist, len(leg), settings)))
    return missions


def plan_missions(
    targets: Sequence[tuple[str, float, float]], settings: MissionSettings, *, name: str = "mission"
) -> MissionPlan:
    """Order the patch targets into battery-sized missions from one or more launch sites.

    Args:
        targets: ``(name, lon, lat)`` per patch (see :func:`patch_targets`).
        settings: altitude, speed, battery and take-off (None = automatic launch sites).
        name: base name of the missions: ``name`` or ``name_1``, ``name_2``, ... from one site;
            ``name_site<k>`` or ``name_site<k>_1``, ... from several.

    Returns:
        The plan; every target is in exactly one mission or in ``unreachable`` (one summary
        warning names how many and why).
    """
    if not targets:
        raise ValueError("no targets to visit")
    lons = np.array([t[1] for t in targets])
    lats = np.array([t[2] for t in targets])
    ref = settings.takeoff or (float(np.median(lons)), float(np.median(lats)))
    utm = utm_crs_for(*ref)
    to_m, to_deg = transformer(WGS84, utm), transformer(utm, WGS84)
    pts = np.column_stack(to_m.transform(lons, lats))
    reach = settings.reach_m
    if settings.takeoff is not None:
        sites_m = np.array([to_m.transform(*settings.takeoff)])
        labels = np.zeros(len(targets), dtype=int)
    elif reach > 0:
        labels, sites_m = launch_sites(pts, 0.999 * reach)
    else:  # not even a patch under the take-off fits one battery
        labels, sites_m = np.zeros(len(targets), dtype=int), pts[:1].copy()
    missions: list[Mission] = []
    unreachable: list[Unreachable] = []
    for k, site in enumerate(sites_m):
        xy = np.vstack([site, pts])  # node 0 = take-off, node i = targets[i - 1]
        takeoff = settings.takeoff or tuple(float(v) for v in to_deg.transform(*site))
        idx = []
        for i in np.flatnonzero(labels == k) + 1:
            solo = _flight_s(_leg_distance_m(xy, [int(i)]), 1, settings)
            if solo > settings.max_flight_s:
                t = targets[i - 1]
                unreachable.append(Unreachable(t[0], t[1], t[2], float(np.hypot(*(xy[i] - site))), solo))
            else:
                idx.append(int(i))
        if idx:
            site_name = name if len(sites_m) == 1 else f"{name}_site{k + 1}"
            missions.extend(_site_missions(xy, idx, targets, takeoff, settings, site_name))
    warnings: list[str] = []
    if unreachable:
        lo = math.ceil(min(u.flight_s for u in unreachable) / 6) / 10  # rounded up: never shows the limit
        hi = math.ceil(max(u.flight_s for u in unreachable) / 6) / 10
        where = "the take-off" if settings.takeoff is not None else "any launch site"
        warnings.append(f"{len(unreachable)} of {len(targets)} patches unreachable from {where} within "
                        f"--max-flight-min {settings.max_flight_min:g} (they need {lo:.1f}-{hi:.1f} min): "
                        "not planned" + ("; try --takeoff auto or a nearer take-off"
                                         if settings.takeoff is not None else ""))
    if math.isclose(settings.reserve_frac, 0.0):
        warnings.append("no battery reserve (reserve_frac 0)")
    return MissionPlan(missions=tuple(missions), warnings=tuple(warnings), unreachable=tuple(unreachable),
                       name=name)
