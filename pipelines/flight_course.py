"""Competition course files and the published scoring rubric for ``tuban flight score``.

A course file (YAML) tells the judging pipeline what the pilots were asked to fly: which items,
the square (start corner, side, heading of the first leg, turn direction, altitude), the hover
point and duration, target coordinates, time limits, the wind grade and any tolerance, weight or
penalty the organisers changed from the defaults. Without a course file the default course is
used: every item is expected, geometry is fitted to the flown track.

The rubric is a list of :class:`MetricRule`: each metric of each item has a full-marks and a
zero-marks threshold and a weight inside its item (FLIGHT.md section 4.2, docs/flight_judging.md).
Error tolerances grow by 15 % per CAAC wind grade above 1 (``1.15 ** (grade - 1)``).

Example course file::

    name: County drone skills 2026
    wind_grade: 2
    items: [takeoff, hover, rotation, square, targets]
    takeoff: {altitude_m: 10}
    hover: {duration_s: 10}
    rotation: {min_duration_s: 6, max_duration_s: 20}
    square: {origin: [120.1001, 30.2002], side_m: 20, heading_deg: 0, turn: right,
             altitude_m: 10, time_limit_s: 90}
    targets:
      time_limit_s: 300
      camera: {hfov_deg: 70.3, vfov_deg: 55.7}
      points: [{name: T1, point: [120.1003, 30.2004]}]
    required_flight_mode: P-GPS
    tolerances: {hover.r95_m: [0.5, 2.0]}
    item_weights: {square: 0.3}
    penalties: {skipped_leg: 10}
    windows: {ace: {hover: [12.0, 24.0]}}   # judge-given item windows, s since log start
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tuban import InputError

__all__ = [
    "ITEMS",
    "MetricRule",
    "SquareSpec",
    "HoverSpec",
    "TargetSpec",
    "Course",
    "DEFAULT_RULES",
    "DEFAULT_ITEM_WEIGHTS",
    "DEFAULT_PENALTIES",
    "default_course",
    "load_course",
    "parse_course",
    "wind_multiplier",
    "thresholds",
]

ITEMS: tuple[str, ...] = ("takeoff", "rotation", "square", "hover", "targets")


@dataclass(frozen=True)
class MetricRule:
    """One row of the rubric: a raw metric mapped to a 0-1 subscore.

    The subscore is ``clip((zero - x) / (zero - full), 0, 1)``; this works for metrics where
    smaller is better (full < zero) and where larger is better (full > zero).

    Args:
        item: item name (``takeoff``, ``rotation``, ``square``, ``hover``, ``targets``).
        metric: metric name as written in scores.json, unit in the name.
        full: value at or better than which the subscore is 1.
        zero: value at or worse than which the subscore is 0.
        weight: weight inside the item; an item's weights sum to 1.
        wind_scaled: whether both thresholds grow with the wind multiplier (error tolerances).
        label: short human description used in reasons.
    """

    item: str
    metric: str
    full: float
    zero: float
    weight: float
    wind_scaled: bool = True
    label: str = ""

    def __post_init__(self) -> None:
        if self.full == self.zero:
            raise ValueError(f"{self.item}.{self.metric}: full and zero thresholds are equal")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"{self.item}.{self.metric}: weight {self.weight} outside 0..1")


DEFAULT_RULES: tuple[MetricRule, ...] = (
    MetricRule("takeoff", "lateral_drift_m", 0.5, 2.0, 0.3, True, "lateral drift during climb"),
    MetricRule("takeoff", "climb_ldlj", -7.0, -14.0, 0.15, False, "climb smoothness (LDLJ)"),
    MetricRule("takeoff", "climb_peaks_count", 1.0, 4.0, 0.15, False, "climb sub-movements"),
    MetricRule("takeoff", "overshoot_m", 0.3, 2.0, 0.2, True, "altitude overshoot"),
    MetricRule("takeoff", "heading_drift_deg", 5.0, 30.0, 0.2, True, "heading drift"),
    MetricRule("rotation", "completeness_error_deg", 5.0, 45.0, 0.25, True, "turn completeness"),
    MetricRule("rotation", "rate_cv", 0.10, 0.50, 0.25, True, "yaw-rate constancy"),
    MetricRule("rotation", "duration_excess_ratio", 0.0, 1.0, 0.15, False, "turn duration"),
    MetricRule("rotation", "position_drift_m", 0.5, 2.0, 0.2, True, "drift while turning"),
    MetricRule("rotation", "altitude_change_m", 0.3, 1.5, 0.15, True, "altitude hold while turning"),
    MetricRule("hover", "r95_m", 0.5, 2.0, 0.5, True, "95 % hover radius"),
    MetricRule("hover", "altitude_std_m", 0.15, 0.75, 0.3, True, "hover altitude spread"),
    MetricRule("hover", "heading_std_deg", 2.0, 15.0, 0.2, True, "hover heading spread"),
    MetricRule("square", "xte_rms_m", 0.5, 3.0, 0.30, True, "cross-track error RMS"),
    MetricRule("square", "corner_miss_m", 1.0, 5.0, 0.15, True, "mean corner miss"),
    MetricRule("square", "corner_overshoot_m", 0.5, 3.0, 0.10, True, "worst corner overshoot"),
    MetricRule("square", "altitude_std_m", 0.3, 1.5, 0.10, True, "altitude spread on the square"),
    MetricRule("square", "altitude_max_dev_m", 0.5, 2.0, 0.10, True, "worst altitude deviation"),
    MetricRule("square", "speed_cv", 0.10, 0.50, 0.10, True, "leg speed constancy"),
    MetricRule("square", "closure_m", 1.0, 5.0, 0.05, True, "closure end to start"),
    MetricRule("square", "time_over_s", 0.0, 30.0, 0.10, False, "time over the limit"),
    MetricRule("targets", "found_fraction", 1.0, 0.0, 0.5, False, "targets found"),
    MetricRule("targets", "centre_offset_ratio", 0.2, 0.8, 0.3, False, "target centring"),
    MetricRule("targets", "time_to_find_ratio", 0.5, 1.0, 0.2, False, "time to find (of limit)"),
)

DEFAULT_ITEM_WEIGHTS: dict[str, float] = {
    "takeoff": 0.15, "rotation": 0.20, "square": 0.30, "hover": 0.20, "targets": 0.15,
}

# Points deducted from the 0-100 total (per occurrence).
DEFAULT_PENALTIES: dict[str, float] = {
    "missing_item": 10.0,        # an expected maneuver was not found in the log
    "skipped_leg": 10.0,         # a square leg was not flown
    "no_full_turn": 10.0,        # the yaw turn fell short of 360 deg by more than its zero threshold
    "hover_short": 5.0,          # the hover lasted less than the required duration
    "time_over_per_10s": 2.0,    # per started 10 s over the square time limit
    "wrong_flight_mode": 10.0,   # a scored item flown in another mode than required
    "target_missed": 5.0,        # each target never covered by the camera footprint
}


@dataclass(frozen=True)
class SquareSpec:
    """The judged square: start corner, side, bearing of the first leg, turn direction."""

    origin_lon: float
    origin_lat: float
    side_m: float
    heading_deg: float = 0.0
    turn: str = "right"
    altitude_m: float | None = None
    time_limit_s: float | None = None


@dataclass(frozen=True)
class HoverSpec:
    """The hover item: duration and (optionally) the point and height to hold."""

    duration_s: float = 10.0
    lon: float | None = None
    lat: float | None = None
    altitude_m: float | None = None


@dataclass(frozen=True)
class TargetSpec:
    """A surveyed ground target (WGS84)."""

    name: str
    lon: float
    lat: float


@dataclass(frozen=True)
class Course:
    """Everything the scorer needs to know about the event (see module docstring)."""

    name: str = "default (geometry fitted to each flight)"
    items: tuple[str, ...] = ("takeoff", "hover", "rotation", "square")
    takeoff_altitude_m: float | None = None
    hover: HoverSpec = field(default_factory=HoverSpec)
    rotation_min_s: float = 6.0
    rotation_max_s: float = 20.0
    square: SquareSpec | None = None
    square_side_m: float | None = None
    square_time_limit_s: float | None = None
    targets: tuple[TargetSpec, ...] = ()
    targets_time_limit_s: float = 300.0
    camera_hfov_deg: float = 70.3
    camera_vfov_deg: float = 55.7
    wind_grade: int = 1
    required_flight_mode: str | None = None
    rules: tuple[MetricRule, ...] = DEFAULT_RULES
    item_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ITEM_WEIGHTS))
    penalties: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PENALTIES))
    windows: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def rules_for(self, item: str) -> tuple[MetricRule, ...]:
        return tuple(r for r in self.rules if r.item == item)


def default_course() -> Course:
    """The course used without a file: all maneuvers expected, no targets, geometry fitted."""
    return Course()


def wind_multiplier(grade: int) -> float:
    """CAAC rule: each wind grade above 1 adds 15 % to allowed errors. ``wind_multiplier(3)`` -> 1.3225."""
    return 1.15 ** (grade - 1)


def thresholds(course: Course, rule: MetricRule) -> tuple[float, float]:
    """(full, zero) of a rule after the course's wind multiplier."""
    if not rule.wind_scaled:
        return rule.full, rule.zero
    m = wind_multiplier(course.wind_grade)
    return rule.full * m, rule.zero * m


def load_course(path: str | Path) -> Course:
    """Read and validate a course YAML file.

    Raises:
        InputError: unreadable file or any invalid field (the message names the field).
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read course YAML: {str(exc).splitlines()[0]}") from exc
    try:
        return parse_course(doc)
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(path, f"invalid course: {exc}") from exc


def parse_course(doc: Any) -> Course:
    """Build a :class:`Course` from a parsed YAML mapping; raises ValueError naming the field."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValueError("top level must be a mapping")
    known = {"name", "wind_grade", "wind_speed_m_s", "items", "takeoff", "hover", "rotation", "square",
             "targets", "required_flight_mode", "tolerances", "item_weights", "penalties", "windows"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; known: {sorted(known)}")
    course = default_course()
    kw: dict[str, Any] = {"name": str(doc.get("name", "course"))}
    if "wind_grade" in doc and "wind_speed_m_s" in doc:
        raise ValueError("give wind_grade or wind_speed_m_s, not both")
    if "wind_grade" in doc:
        grade = doc["wind_grade"]
        if not isinstance(grade, int) or isinstance(grade, bool) or not 1 <= grade <= 3:
            raise ValueError(f"wind_grade must be 1, 2 or 3 (CAAC), got {grade!r}")
        kw["wind_grade"] = grade
    if "wind_speed_m_s" in doc:
        speed = _number(doc["wind_speed_m_s"], "wind_speed_m_s", lo=0.0)
        kw["wind_grade"] = 1 if speed <= 4.0 else 2 if speed <= 8.0 else 3
    if "items" in doc:
        items = doc["items"]
        if not isinstance(items, list) or not items:
            raise ValueError("items must be a non-empty list")
        bad = [i for i in items if i not in ITEMS]
        if bad:
            raise ValueError(f"items: unknown item(s) {bad}; known: {list(ITEMS)}")
        kw["items"] = tuple(items)
    takeoff = _mapping(doc, "takeoff", {"altitude_m"})
    if "altitude_m" in takeoff:
        kw["takeoff_altitude_m"] = _number(takeoff["altitude_m"], "takeoff.altitude_m", lo=0.5)
    kw["hover"] = _hover(_mapping(doc, "hover", {"duration_s", "point", "altitude_m"}))
    rot = _mapping(doc, "rotation", {"min_duration_s", "max_duration_s"})
    kw["rotation_min_s"] = _number(rot.get("min_duration_s", course.rotation_min_s), "rotation.min_duration_s", lo=0.5)
    kw["rotation_max_s"] = _number(rot.get("max_duration_s", course.rotation_max_s), "rotation.max_duration_s", lo=0.5)
    if kw["rotation_max_s"] <= kw["rotation_min_s"]:
        raise ValueError("rotation.max_duration_s must exceed rotation.min_duration_s")
    sq = _mapping(doc, "square", {"origin", "side_m", "heading_deg", "turn", "altitude_m", "time_limit_s"})
    if sq:
        kw.update(_square(sq))
    tg = _mapping(doc, "targets", {"time_limit_s", "camera", "points"})
    if tg:
        kw.update(_targets(tg))
    if "items" not in doc:
        kw["items"] = course.items + (("targets",) if kw.get("targets") else ())
    elif "targets" in kw["items"] and not kw.get("targets"):
        raise ValueError("items lists targets but targets.points is empty")
    if doc.get("required_flight_mode") is not None:
        kw["required_flight_mode"] = str(doc["required_flight_mode"])
    kw["rules"] = _tolerances(doc.get("tolerances") or {}, course.rules)
    kw["item_weights"] = _weights(doc.get("item_weights") or {}, course.item_weights)
    kw["penalties"] = _penalties(doc.get("penalties") or {}, course.penalties)
    kw["windows"] = _windows(doc.get("windows") or {})
    return replace(course, **kw)


def _number(value: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value}")
    return float(value)


def _point(value: Any, name: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{name} must be [lon, lat], got {value!r}")
    lon = _number(value[0], f"{name} lon", -180.0, 180.0)
    lat = _number(value[1], f"{name} lat", -90.0, 90.0)
    return lon, lat


def _mapping(doc: dict, key: str, allowed: set[str]) -> dict:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"{key}: unknown field(s) {unknown}; known: {sorted(allowed)}")
    return value


def _hover(h: dict) -> HoverSpec:
    lon = lat = None
    if "point" in h:
        lon, lat = _point(h["point"], "hover.point")
    alt = _number(h["altitude_m"], "hover.altitude_m", lo=0.5) if "altitude_m" in h else None
    return HoverSpec(duration_s=_number(h.get("duration_s", 10.0), "hover.duration_s", lo=1.0),
                     lon=lon, lat=lat, altitude_m=alt)


def _square(sq: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    side = _number(sq["side_m"], "square.side_m", lo=2.0) if "side_m" in sq else None
    out["square_side_m"] = side
    if "time_limit_s" in sq:
        out["square_time_limit_s"] = _number(sq["time_limit_s"], "square.time_limit_s", lo=1.0)
    if "origin" in sq:
        if side is None:
            raise ValueError("square.origin needs square.side_m")
        lon, lat = _point(sq["origin"], "square.origin")
        turn = str(sq.get("turn", "right"))
        if turn not in ("right", "left"):
            raise ValueError(f"square.turn must be 'right' or 'left', got {turn!r}")
        alt = _number(sq["altitude_m"], "square.altitude_m", lo=0.5) if "altitude_m" in sq else None
        out["square"] = SquareSpec(origin_lon=lon, origin_lat=lat, side_m=side,
                                   heading_deg=_number(sq.get("heading_deg", 0.0), "square.heading_deg", -360, 360),
                                   turn=turn, altitude_m=alt, time_limit_s=out.get("square_time_limit_s"))
    elif any(k in sq for k in ("heading_deg", "turn")):
        raise ValueError("square.heading_deg/turn need square.origin")
    return out


def _targets(tg: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "time_limit_s" in tg:
        out["targets_time_limit_s"] = _number(tg["time_limit_s"], "targets.time_limit_s", lo=1.0)
    cam = tg.get("camera") or {}
    if not isinstance(cam, dict) or set(cam) - {"hfov_deg", "vfov_deg"}:
        raise ValueError("targets.camera must be a mapping with hfov_deg and/or vfov_deg")
    if "hfov_deg" in cam:
        out["camera_hfov_deg"] = _number(cam["hfov_deg"], "targets.camera.hfov_deg", 1.0, 170.0)
    if "vfov_deg" in cam:
        out["camera_vfov_deg"] = _number(cam["vfov_deg"], "targets.camera.vfov_deg", 1.0, 170.0)
    points = tg.get("points") or []
    if not isinstance(points, list):
        raise ValueError("targets.points must be a list")
    specs = []
    for i, p in enumerate(points):
        if not isinstance(p, dict) or "point" not in p:
            raise ValueError(f"targets.points[{i}] must be a mapping with point: [lon, lat]")
        lon, lat = _point(p["point"], f"targets.points[{i}].point")
        specs.append(TargetSpec(name=str(p.get("name", f"T{i + 1}")), lon=lon, lat=lat))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"targets.points: duplicate names {names}")
    out["targets"] = tuple(specs)
    return out


def _tolerances(tol: Any, rules: tuple[MetricRule, ...]) -> tuple[MetricRule, ...]:
    if not isinstance(tol, dict):
        raise ValueError("tolerances must be a mapping item.metric: [full, zero]")
    by_key = {f"{r.item}.{r.metric}": r for r in rules}
    unknown = sorted(set(tol) - set(by_key))
    if unknown:
        raise ValueError(f"tolerances: unknown metric(s) {unknown}; known: {sorted(by_key)}")
    out = []
    for key, rule in by_key.items():
        if key in tol:
            pair = tol[key]
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"tolerances.{key} must be [full, zero]")
            full, zero = _number(pair[0], f"tolerances.{key} full"), _number(pair[1], f"tolerances.{key} zero")
            if (full - zero) * (rule.full - rule.zero) <= 0:
                raise ValueError(f"tolerances.{key}: [full, zero] = {pair} reverses or collapses the scale "
                                 f"(default {[rule.full, rule.zero]})")
            rule = replace(rule, full=full, zero=zero)
        out.append(rule)
    return tuple(out)


def _weights(w: Any, default: dict[str, float]) -> dict[str, float]:
    if not isinstance(w, dict) or set(w) - set(ITEMS):
        raise ValueError(f"item_weights must map items {list(ITEMS)} to numbers")
    out = dict(default)
    for k, v in w.items():
        out[k] = _number(v, f"item_weights.{k}", lo=0.0)
    if sum(out.values()) <= 0:
        raise ValueError("item_weights sum to zero")
    return out


def _penalties(p: Any, default: dict[str, float]) -> dict[str, float]:
    if not isinstance(p, dict) or set(p) - set(default):
        raise ValueError(f"penalties must map {sorted(default)} to points")
    out = dict(default)
    for k, v in p.items():
        out[k] = _number(v, f"penalties.{k}", lo=0.0)
    return out


def _windows(w: Any) -> dict[str, dict[str, tuple[float, float]]]:
    """Judge-given time windows: ``{pilot: {item: [start_s, end_s]}}``, seconds since log start."""
    if not isinstance(w, dict):
        raise ValueError("windows must map pilot names to {item: [start_s, end_s]}")
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for pilot, items in w.items():
        if not isinstance(items, dict):
            raise ValueError(f"windows.{pilot} must map items to [start_s, end_s]")
        out[str(pilot)] = {}
        for item, pair in items.items():
            if item not in ("takeoff", "hover", "rotation", "square"):
                raise ValueError(f"windows.{pilot}.{item}: only takeoff, hover, rotation, square take windows")
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"windows.{pilot}.{item} must be [start_s, end_s]")
            t0 = _number(pair[0], f"windows.{pilot}.{item} start", lo=0.0)
            t1 = _number(pair[1], f"windows.{pilot}.{item} end", lo=0.0)
            if t1 <= t0:
                raise ValueError(f"windows.{pilot}.{item}: end {t1} must be after start {t0}")
            out[str(pilot)][item] = (t0, t1)
    return out
