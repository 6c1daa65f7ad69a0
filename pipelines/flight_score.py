"""Score competition flights from telemetry with the published rubric (``tuban flight score``).

Every item (takeoff, rotation, square, hover, targets) yields raw metrics with units in their
names, a 0-1 subscore per metric from piecewise-linear full/zero thresholds
(:func:`subscore`), a human-readable reason per subscore, and an item score 0-100. The pilot's
total is the item-weighted mean of applicable items minus penalties, clipped to 0-100.
Missing maneuvers are never silently ignored: an expected item that is not found scores 0 and
adds a ``missing_item`` penalty; skipped legs and an incomplete turn add their own penalties.
The flight mode logged during hover and rotation is reported next to their scores.

A pilot whose log cannot be read (empty card, exposure-only SRT, unknown format) does not stop
the others: :func:`read_logs` collects the failure and :func:`score_tracks` lists the pilot after
the ranked ones with ``status: "no_data"``, the ``reason``, ``rank`` null and ``total`` 0 (the
contract's 0-100 range holds; the status, not the number, says the flight was never judged).

Rubric and formulas: docs/flight_judging.md. Geometry of the square: pipelines/flight_square.py.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.signal import find_peaks, savgol_filter

from tuban import InputError, TelemetryError, TubanError, __version__
from tuban.imagery.track import Track
from tuban.pipelines.flight_course import ITEMS, Course, default_course, thresholds
from tuban.pipelines.flight_segment import (
    FlightSeries,
    Segments,
    SegmentSettings,
    Window,
    prepare,
    runs,
    segment,
)
from tuban.pipelines.flight_square import (
    Square,
    assign_legs,
    fit_square,
    leg_frames,
    order_corners,
    square_from_spec,
)
from tuban.pipelines.flight_targets import target_coverage

__all__ = ["ScoreSettings", "Judged", "LogFailure", "subscore", "judge_track", "score_tracks", "scores_json",
           "leaderboard_csv", "load_tracks", "read_logs", "penalty_text", "NO_DATA", "NOT_MEASURABLE"]

#: Status of a pilot whose log could not be read or judged.
NO_DATA = "no_data"
#: Status of an item the log's channels cannot measure (rotation without yaw): not in the total.
NOT_MEASURABLE = "not_measurable"


@dataclass(frozen=True)
class ScoreSettings:
    """Scoring settings beyond the course file."""

    segment: SegmentSettings = field(default_factory=SegmentSettings)
    corner_radius_m: float = 2.0
    leg_coverage_min: float = 0.6
    min_footprint_height_m: float = 2.0


@dataclass(frozen=True)
class Judged:
    """One pilot's flight as judged: the scorecard plus what the replay needs to draw it."""

    pilot: str
    entry: dict
    series: FlightSeries
    segments: Segments
    square: Square | None
    square_window: Window | None


def subscore(x: float, full: float, zero: float) -> float:
    """Piecewise-linear 0-1 subscore: 1 at or beyond ``full``, 0 at or beyond ``zero``.

    >>> subscore(1.25, 0.5, 2.0)
    0.5
    >>> subscore(-5.0, -7.0, -14.0)   # larger is better when full > zero
    1.0
    """
    if not math.isfinite(x):
        return 0.0
    return float(min(1.0, max(0.0, (zero - x) / (zero - full))))


def _r(x: float | None, nd: int = 3) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), nd)


def _item(course: Course, item: str, metrics: dict[str, float], extra: dict | None = None) -> dict:
    subs, reasons, wsum, acc = {}, [], 0.0, 0.0
    for rule in course.rules_for(item):
        x = metrics.get(rule.metric)
        if x is None or not math.isfinite(x):
            reasons.append(f"{rule.label}: not measurable from this log (weight redistributed)")
            continue
        full, zero = thresholds(course, rule)
        s = subscore(x, full, zero)
        subs[rule.metric] = round(s, 3)
        verdict = "full marks" if s >= 1 else "no marks" if s <= 0 else f"{s:.2f}"
        reasons.append(f"{rule.label}: {rule.metric} = {x:.2f} (full {full:.2f}, zero {zero:.2f}) -> {verdict}")
        wsum += rule.weight
        acc += rule.weight * s
    score = 100.0 * acc / wsum if wsum > 0 else 0.0
    out = {"status": "scored", "score": round(score, 2),
           "metrics": {k: _r(v) for k, v in metrics.items()}, "subscores": subs, "reasons": reasons}
    out.update(extra or {})
    return out


def _not(status: str, reason: str) -> dict:
    return {"status": status, "score": 0.0, "metrics": {}, "subscores": {}, "reasons": [reason]}


def _window_extra(fs: FlightSeries, w: Window) -> dict:
    return {"window_s": [round(float(fs.t_s[w.start]), 2), round(float(fs.t_s[w.stop - 1]), 2)]}


def _mode(fs: FlightSeries, w: Window) -> str:
    modes = [m for m in fs.mode[w.slice] if m]
    return Counter(modes).most_common(1)[0][0] if modes else "unknown (not in log)"


def _takeoff(fs: FlightSeries, w: Window, target: float, course: Course) -> dict:
    sl = w.slice
    e, n = fs.e_m[sl] - fs.e_m[w.start], fs.n_m[sl] - fs.n_m[w.start]
    v = fs.vu_m_s[sl]
    dt = fs.dt_s
    duration = max(dt, (w.stop - w.start) * dt)
    vpeak = float(np.max(np.abs(v))) if len(v) else 0.0
    win = max(5, int(round(1.0 / dt)) | 1)
    u_ext = fs.u_m[max(0, w.start - win):min(len(fs), w.stop + win)]
    if len(u_ext) > win and vpeak > 0:
        jerk = savgol_filter(u_ext, win, 3, deriv=3, delta=dt)[w.start - max(0, w.start - win):][: w.stop - w.start]
        integral = float(np.sum(jerk**2) * dt)
        ldlj = -math.log(duration**3 / vpeak**2 * integral) if integral > 0 else float("nan")
    else:
        ldlj = float("nan")
    peaks, _ = find_peaks(v, height=max(0.25, 0.25 * vpeak), prominence=0.2 * vpeak) if vpeak > 0 else ([], {})
    metrics = {
        "lateral_drift_m": float(np.max(np.hypot(e, n))),
        "climb_ldlj": ldlj,
        "climb_peaks_count": float(max(1, len(peaks))),
        "overshoot_m": max(0.0, float(np.max(fs.u_m[sl])) - target),
        "heading_drift_deg": float(np.max(np.abs(fs.yaw_deg[sl] - fs.yaw_deg[w.start]))) if fs.has_yaw else float("nan"),
        "target_altitude_m": target,
        "climb_duration_s": duration,
    }
    return _item(course, "takeoff", metrics, _window_extra(fs, w))


def _rotation(fs: FlightSeries, w: Window, course: Course, penalties: list) -> dict:
    sl = w.slice
    turn = float(fs.yaw_deg[w.stop - 1] - fs.yaw_deg[w.start])
    rate = fs.yaw_rate_deg_s[sl]
    drop = int(round(0.5 / fs.dt_s))
    core = rate[drop:len(rate) - drop] if len(rate) > 2 * drop + 2 else rate
    mean_abs = float(np.mean(np.abs(core)))
    stops = runs(np.abs(core) < 5.0, min_len=int(round(0.5 / fs.dt_s)) + 1)
    duration = (w.stop - w.start) * fs.dt_s
    lo, hi = course.rotation_min_s, course.rotation_max_s
    excess = max(lo / max(duration, 1e-6), duration / hi, 1.0) - 1.0
    e, n = fs.e_m[sl] - fs.e_m[w.start], fs.n_m[sl] - fs.n_m[w.start]
    metrics = {
        "turn_deg": abs(turn),
        "completeness_error_deg": abs(abs(turn) - 360.0),
        "rate_cv": float(np.std(core) / mean_abs) if mean_abs > 0 else float("nan"),
        "mean_rate_deg_s": mean_abs,
        "stops_count": float(len(stops)),
        "duration_s": duration,
        "duration_excess_ratio": min(excess, 10.0),
        "position_drift_m": float(np.max(np.hypot(e, n))),
        "altitude_change_m": float(np.max(np.abs(fs.u_m[sl] - fs.u_m[w.start]))),
    }
    extra = _window_extra(fs, w)
    extra["direction"] = "clockwise" if turn > 0 else "counter-clockwise"
    extra["flight_mode"] = _mode(fs, w)
    rule = next(r for r in course.rules_for("rotation") if r.metric == "completeness_error_deg")
    if abs(turn) < 360.0 - thresholds(course, rule)[1]:
        penalties.append(_penalty(course, "no_full_turn", "rotation", f"turned {abs(turn):.0f} deg of 360"))
    return _item(course, "rotation", metrics, extra)


def _hover(fs: FlightSeries, w: Window, course: Course, origin: tuple[float, float], penalties: list) -> dict:
    need = int(round(course.hover.duration_s / fs.dt_s))
    length = w.stop - w.start
    if length >= need:
        s0 = w.start + (length - need) // 2
        w = Window(s0, s0 + need)
    else:
        penalties.append(_penalty(course, "hover_short", "hover",
                                  f"held {length * fs.dt_s:.1f} s of the required {course.hover.duration_s:.0f} s"))
    sl = w.slice
    e, n = fs.e_m[sl], fs.n_m[sl]
    d = np.hypot(e - e.mean(), n - n.mean())
    metrics = {
        "r95_m": float(np.percentile(d, 95)),
        "altitude_std_m": float(np.std(fs.u_m[sl])),
        "heading_std_deg": float(np.std(fs.yaw_deg[sl])) if fs.has_yaw else float("nan"),
        "duration_s": length * fs.dt_s,
        "mean_altitude_m": float(np.mean(fs.u_m[sl])),
    }
    if course.hover.lon is not None:
        pe, pn = _enu(fs, course.hover.lon, course.hover.lat)
        metrics["offset_from_point_m"] = float(math.hypot(e.mean() - pe, n.mean() - pn))
    extra = _window_extra(fs, w)
    extra["flight_mode"] = _mode(fs, w)
    return _item(course, "hover", metrics, extra)


def _enu(fs: FlightSeries, lon: float, lat: float) -> tuple[float, float]:
    import pymap3d

    e, n, _ = pymap3d.geodetic2enu(lat, lon, 0.0, fs.origin_lat, fs.origin_lon, 0.0)
    return float(e), float(n)


def _ideal_square(fs: FlightSeries, w: Window, course: Course) -> Square:
    x, y = fs.e_m[w.slice], fs.n_m[w.slice]
    if course.square is not None:
        spec = course.square
        return square_from_spec(np.array(_enu(fs, spec.origin_lon, spec.origin_lat)), spec.side_m,
                                spec.heading_deg, spec.turn)
    centre, theta, side = fit_square(x, y, course.square_side_m)
    corners = order_corners(centre, theta, side, np.array([x[0], y[0]]), np.column_stack([x, y]))
    return Square(corners=corners, side_m=side, fitted=True)


def _judge_windows(fs: FlightSeries, seg: Segments,
                   windows: dict[str, tuple[float, float]]) -> tuple[Segments, list[str]]:
    """Replace automatic windows by the judges' (seconds since log start) where given."""
    if not windows or not len(fs):
        return seg, []
    changes: dict = {}
    for item, (t0, t1) in windows.items():
        a = int(np.searchsorted(fs.t_s, t0))
        b = int(np.searchsorted(fs.t_s, t1, side="right"))
        if b - a < 2:
            seg.notes[item] = f"judges' window {t0:g}-{t1:g} s holds no data"
            changes[item] = None
            continue
        changes[item] = Window(a, b)
        if item == "square":
            changes["square_candidates"] = (Window(a, b),)
    return replace(seg, **changes), [k for k, v in changes.items() if v is not None and k in windows]


def _pick_square(fs: FlightSeries, candidates: Sequence[Window], course: Course) -> Window:
    """The candidate interval whose samples lie closest to a square (the course's, else fitted).

    Criterion: fraction of samples within max(1.5 m, 10 % of the side) of the square's outline,
    times the fraction of the outline's length flown (capped at 1); the longest path breaks ties.
    """
    if len(candidates) == 1:
        return candidates[0]
    best, best_q = candidates[0], -1.0
    for w in candidates[:6]:
        sq = _ideal_square(fs, w, course)
        s, xte = leg_frames(sq, fs.e_m[w.slice], fs.n_m[w.slice])
        inside = (s >= -1.0) & (s <= sq.side_m + 1.0)
        dist = np.where(inside, np.abs(xte), np.inf).min(axis=1)
        near = float(np.mean(dist < max(1.5, 0.1 * sq.side_m)))
        path = float(np.sum(np.hypot(np.diff(fs.e_m[w.slice]), np.diff(fs.n_m[w.slice]))))
        q = near * min(1.0, path / (4 * sq.side_m))
        if q > best_q + 1e-9:
            best, best_q = w, q
    return best


def _trim(sq: Square, x: np.ndarray, y: np.ndarray, speed: np.ndarray, radius: float) -> tuple[int, int]:
    d = [np.hypot(x - c[0], y - c[1]) for c in sq.corners]
    near2 = np.flatnonzero(d[1] < radius)
    first2 = int(near2[0]) if len(near2) else len(x)
    near1 = np.flatnonzero(d[0][:first2] < radius)
    start = int(near1[-1]) if len(near1) else 0
    while start > 0 and speed[start - 1] > 0.3:  # back to where the aircraft left the start corner
        start -= 1
    end = len(x)
    near4 = np.flatnonzero(d[3][start:] < radius)
    if len(near4):
        back = np.flatnonzero(d[0][start + int(near4[0]):] < radius)
        if len(back):  # back at the start corner: the square ends where the aircraft stops
            end = start + int(near4[0]) + int(back[0]) + 1
            while end < len(x) and speed[end] > 0.3:
                end += 1
    return start, end


def _square(fs: FlightSeries, w: Window, course: Course, st: ScoreSettings,
            penalties: list) -> tuple[dict, Square, Window]:
    sq = _ideal_square(fs, w, course)
    L = sq.side_m
    x0, y0 = fs.e_m[w.slice], fs.n_m[w.slice]
    radius = max(st.corner_radius_m, 0.15 * L)
    a, b = _trim(sq, x0, y0, fs.speed_m_s[w.slice], radius)
    w = Window(w.start + a, w.start + max(b, a + 2))
    sl = w.slice
    x, y, u, speed = fs.e_m[sl], fs.n_m[sl], fs.u_m[sl], fs.speed_m_s[sl]
    s, xte = leg_frames(sq, x, y)
    legs = assign_legs(s, xte, L, st.corner_radius_m)
    band = max(3.0, 0.25 * L)
    leg_info, xte_on, overshoots, speeds, skipped = [], [], [], [], []
    for k in range(4):
        on = legs == k
        sk, xk = s[on, k], xte[on, k]
        inside = (sk >= 0) & (sk <= L)
        bins = np.unique(np.clip((sk[inside & (np.abs(xk) < band)] / L * 20).astype(int), 0, 19))
        coverage = len(bins) / 20.0
        flown = coverage >= st.leg_coverage_min
        if flown:
            xte_on.append(xk[inside])
            overshoots.append(max(0.0, float(sk.max()) - L))
            mid = on & (s[:, k] > 0.1 * L) & (s[:, k] < 0.9 * L)
            speeds.append(speed[mid])
        else:
            skipped.append(k + 1)
            penalties.append(_penalty(course, "skipped_leg", "square",
                                      f"leg {k + 1} not flown ({coverage:.0%} of its length covered)"))
        xy = np.column_stack([x[on], y[on]])
        path = float(np.sum(np.hypot(*np.diff(xy, axis=0).T))) if len(xy) > 1 else 0.0
        chord = float(np.hypot(*(xy[-1] - xy[0]))) if len(xy) > 1 else 0.0
        leg_info.append({"leg": k + 1, "flown": bool(flown), "coverage": round(coverage, 2),
                         "samples": int(on.sum()), "straightness": _r(chord / path if path > 0 else None)})
    miss = [float(np.min(np.hypot(x - c[0], y - c[1]))) for c in sq.corners[1:]]
    miss.append(float(np.hypot(x[-1] - sq.corners[0][0], y[-1] - sq.corners[0][1])) if len(x) else float("nan"))
    xte_all = np.concatenate(xte_on) if xte_on else np.array([np.nan])
    sp = np.concatenate(speeds) if speeds else np.array([np.nan])
    ref = course.square.altitude_m if course.square and course.square.altitude_m else float(np.median(u))
    time_s = (w.stop - w.start) * fs.dt_s
    limit = course.square.time_limit_s if course.square else course.square_time_limit_s
    over = max(0.0, time_s - limit) if limit else 0.0
    if over > 0:
        n10 = math.ceil(over / 10.0)
        penalties.append(_penalty(course, "time_over_per_10s", "square", f"{over:.1f} s over the {limit:.0f} s limit",
                                  times=n10))
    metrics = {
        "xte_rms_m": float(np.sqrt(np.mean(xte_all**2))),
        "xte_max_m": float(np.max(np.abs(xte_all))),
        "corner_miss_m": float(np.mean(miss)),
        "corner_miss_max_m": float(np.max(miss)),
        "corner_overshoot_m": float(max(overshoots)) if overshoots else float("nan"),
        "altitude_std_m": float(np.std(u)),
        "altitude_max_dev_m": float(np.max(np.abs(u - ref))),
        "speed_cv": float(np.std(sp) / np.mean(sp)) if np.isfinite(sp).all() and np.mean(sp) > 0 else float("nan"),
        "closure_m": float(np.hypot(x[-1] - x[0], y[-1] - y[0])),
        "time_s": time_s,
        "time_over_s": over,
        "side_m": L,
        "legs_flown_count": float(4 - len(skipped)),
    }
    extra = _window_extra(fs, w)
    extra.update({"legs": leg_info, "square_source": "fitted" if sq.fitted else "course",
                  "heading_deg": round(sq.heading_deg, 2), "turn": sq.turn})
    return _item(course, "square", metrics, extra), sq, w


def _penalty(course: Course, code: str, item: str, reason: str, times: int = 1) -> dict:
    return {"code": code, "item": item, "points": round(course.penalties[code] * times, 2), "reason": reason}


def judge_track(track: Track, pilot: str, course: Course | None = None,
                settings: ScoreSettings | None = None) -> Judged:
    """Score one pilot's flight.

    Args:
        track: the pilot's telemetry.
        pilot: name shown on the scorecard.
        course: the course (default: :func:`default_course`).
        settings: scoring settings.

    Returns:
        Judged, whose ``entry`` is the pilot's scores.json record.
    """
    course = course or default_course()
    st = settings or ScoreSettings()
    fs = prepare(track, st.segment)
    point = _enu(fs, course.hover.lon, course.hover.lat) if course.hover.lon is not None and len(fs) else None
    seg = segment(fs, st.segment, target_alt_m=course.takeoff_altitude_m, hover_s=course.hover.duration_s,
                  hover_point_en=point)
    seg, judged_items = _judge_windows(fs, seg, course.windows.get(pilot, {}))
    penalties: list[dict] = []
    items: dict[str, dict] = {}
    sq, sq_w = None, None
    for item in ITEMS:
        if item not in course.items:
            items[item] = _not("not_applicable", "not part of this course")
            continue
        win = getattr(seg, item, None) if item != "targets" else seg.airborne
        if fs.coarse and item != "targets" and win is not None:
            items[item] = _not("rejected", f"{item} not judged: {fs.coarse}")
            continue
        if win is None and item == "rotation" and not fs.has_yaw and seg.airborne is not None:
            # a missing data channel is not a missing maneuver: excluded from the total, no penalty
            items[item] = _not(NOT_MEASURABLE, "rotation not measurable: the log has no yaw (e.g. GPX); "
                                               "excluded from the total, not penalised")
            continue
        if win is None:
            why = seg.notes.get(item, "not found in the log")
            items[item] = _not("not_found", f"{item} not found: {why}")
            penalties.append(_penalty(course, "missing_item", item, f"{item} not found: {why}"))
            continue
        if item == "takeoff":
            target = seg.target_alt_m if seg.target_alt_m is not None else float(np.median(fs.u_m[win.stop - 5:win.stop]))
            items[item] = _takeoff(fs, win, float(target), course)
        elif item == "rotation":
            items[item] = _rotation(fs, win, course, penalties)
        elif item == "hover":
            items[item] = _hover(fs, win, course, (fs.origin_lon, fs.origin_lat), penalties)
        elif item == "square":
            win = _pick_square(fs, seg.square_candidates, course)
            items[item], sq, sq_w = _square(fs, win, course, st, penalties)
        else:
            t0 = fs.t_s[seg.takeoff.start] if seg.takeoff else fs.t_s[win.start]
            metrics, extra, missed = target_coverage(fs, course, float(t0), st.min_footprint_height_m)
            penalties.extend(_penalty(course, "target_missed", "targets",
                                      f"target {name} never inside the camera footprint") for name in missed)
            items[item] = _item(course, "targets", metrics, extra)
    for item in judged_items:
        if items[item]["status"] == "scored":
            items[item]["window_source"] = "judges"
    if course.required_flight_mode:
        for item in ("hover", "rotation"):
            mode = items[item].get("flight_mode")
            if mode and mode != course.required_flight_mode:
                penalties.append(_penalty(course, "wrong_flight_mode", item,
                                          f"flown in {mode}, required {course.required_flight_mode}"))
    weights = {k: course.item_weights.get(k, 0.0) for k in ITEMS
               if items[k]["status"] not in ("not_applicable", NOT_MEASURABLE)}
    wsum = sum(weights.values())
    base = sum(weights[k] * items[k]["score"] for k in weights) / wsum if wsum > 0 else 0.0
    deduct = sum(p["points"] for p in penalties)
    air = seg.airborne
    entry = {
        "pilot": pilot,
        "status": "scored",
        "total": round(min(100.0, max(0.0, base - deduct)), 2),
        "items_score": round(base, 2),
        "penalty_points": round(deduct, 2),
        "flight_time_s": round((air.stop - air.start) * fs.dt_s, 2) if air else None,
        "source": {"file": track.source.name if track.source else None, "format": track.format,
                   "records": len(track), "warnings": list(fs.warnings)},
        "items": items,
        "order_flown": _order_flown(items, course),
        "penalties": penalties,
    }
    return Judged(pilot=pilot, entry=entry, series=fs, segments=seg, square=sq, square_window=sq_w)


def _order_flown(items: dict[str, dict], course: Course) -> dict:
    """The order the scored maneuvers were flown in, against the course's list (reported, not scored)."""
    flown = sorted((v["window_s"][0], k) for k, v in items.items() if v["status"] == "scored" and "window_s" in v)
    order = [k for _, k in flown]
    expected = [k for k in course.items if k in order]
    return {"items": order, "as_listed": order == expected}


@dataclass(frozen=True)
class LogFailure:
    """A pilot whose log could not be used.

    Args:
        pilot: the pilot's name.
        file: the log file name.
        reason: why (the reader's or judge's message).
        path: the log's full path when known.
    """

    pilot: str
    file: str
    reason: str
    path: Path | None = None


def _no_data_entry(f: LogFailure) -> dict:
    return {"pilot": f.pilot, "status": NO_DATA, "reason": f.reason, "rank": None, "total": 0.0,
            "items_score": 0.0, "penalty_points": 0.0, "flight_time_s": None,
            "source": {"file": f.file, "format": None, "records": 0, "warnings": []},
            "items": {k: _not(NO_DATA, f"no data: {f.reason}") for k in ITEMS},
            "order_flown": {"items": [], "as_listed": False}, "penalties": []}


def score_tracks(named: Sequence[tuple[str, Track]], course: Course | None = None,
                 settings: ScoreSettings | None = None,
                 progress: Callable[[int, int], None] | None = None, *,
                 failed: Sequence[LogFailure] = ()) -> tuple[dict, list[Judged]]:
    """Score every pilot and rank them (best first; ties broken by shorter flight time, then name).

    Args:
        named: ``(pilot, track)`` per readable log.
        course: the course (default: :func:`default_course`).
        settings: scoring settings.
        progress: ``callback(done, total)``.
        failed: pilots whose logs could not be read (:func:`read_logs`); a track that cannot be
            judged (a :class:`~tuban.TubanError`) joins them. They are listed after the ranked
            pilots with status ``no_data``, sorted by name.

    Returns:
        ``(result, judged)``: result is the scores.json document; judged (ranked pilots only)
        feeds the replay.
    """
    course = course or default_course()
    judged = []
    failures = list(failed)
    for i, (pilot, track) in enumerate(named):
        try:
            judged.append(judge_track(track, pilot, course, settings))
        except TubanError as exc:
            src = Path(track.source) if track.source else None
            failures.append(LogFailure(pilot, src.name if src else "", _reason(exc), src))
        if progress:
            progress(i + 1, len(named))
    judged.sort(key=lambda j: (-j.entry["total"], j.entry["flight_time_s"] or float("inf"), j.pilot))
    for rank, j in enumerate(judged, 1):
        j.entry["rank"] = rank
    result = {"tuban_version": __version__, "course": course.name, "wind_grade": course.wind_grade,
              "items_expected": list(course.items),
              "pilots": [j.entry for j in judged] + [_no_data_entry(f) for f in sorted(failures, key=lambda f: f.pilot)]}
    return result, judged


def _reason(exc: TubanError) -> str:
    return exc.problem if isinstance(exc, InputError) else str(exc)


def penalty_text(points: float | None) -> str:
    """Penalty points as shown to people: ``0`` when none (never ``-0``), else ``-12`` or ``-2.5``.

    Example:
        >>> penalty_text(0.0), penalty_text(12), penalty_text(2.5)
        ('0', '-12', '-2.5')
    """
    if points is None:
        return ""
    p = round(abs(float(points)), 1)
    return "0" if p == 0 else f"-{p:g}"


def scores_json(result: dict) -> str:
    """Deterministic JSON text (no timestamps, NaN written as null)."""
    return json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def leaderboard_csv(result: dict) -> str:
    """CSV leaderboard, best first: rank, pilot, total, item scores, penalties, flight time.

    Pilots without data come last with empty rank and total and ``no_data`` items.
    """
    cols = ["rank", "pilot", "total", *ITEMS, "penalty_points", "flight_time_s"]
    lines = [",".join(cols)]
    for p in result["pilots"]:
        row = [_blank(p["rank"]), _csv(p["pilot"]), _blank(p["total"]),
               *(p["items"][k]["score"] if p["items"][k]["status"] == "scored" else p["items"][k]["status"]
                 for k in ITEMS),
               _blank(p["penalty_points"]), _blank(p["flight_time_s"])]
        lines.append(",".join(str(v) for v in row))
    return "\n".join(lines) + "\n"


def _blank(v: object) -> object:
    return "" if v is None else v


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _read_one(path: Path) -> Track:
    try:
        from tuban.imagery.telemetry import read_track
    except ImportError:  # the multi-format reader has not landed: SRT is all we can read
        read_track = None
    if read_track is not None:
        return read_track(path)
    if path.suffix.lower() == ".srt":
        from tuban.imagery.srt import read_srt

        return read_srt(path)
    raise TelemetryError(path, "no telemetry reader for this format is installed")


def load_tracks(paths: Sequence[Path], pilots: dict[str, str] | None = None) -> list[tuple[str, Track]]:
    """Read one log per pilot; the pilot is the file stem unless ``pilots`` maps the stem to a name.

    Raises:
        TelemetryError: a log cannot be parsed (the message names the file).
    """
    pilots = pilots or {}
    return [(pilots.get(Path(p).stem, Path(p).stem), _read_one(Path(p))) for p in paths]


def read_logs(paths: Sequence[Path],
              pilots: dict[str, str] | None = None) -> tuple[list[tuple[str, Track]], list[LogFailure]]:
    """Read one log per pilot, collecting unreadable logs instead of stopping at the first.

    Args:
        paths: one log per pilot.
        pilots: file stem -> pilot name (default: the stem).

    Returns:
        ``(named, failed)``: ``(pilot, track)`` per readable log, in input order, and one
        :class:`LogFailure` per log that raised an :class:`~tuban.InputError`.
    """
    pilots = pilots or {}
    named: list[tuple[str, Track]] = []
    failed: list[LogFailure] = []
    for path in map(Path, paths):
        pilot = pilots.get(path.stem, path.stem)
        try:
            named.append((pilot, _read_one(path)))
        except InputError as exc:
            failed.append(LogFailure(pilot, path.name, exc.problem, path))
    return named, failed
