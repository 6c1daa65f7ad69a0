"""Synthetic drone-skills competition flights for pilots of known, different skill.

Each pilot flies the same routine over the sample course: take-off to 10 m, hover, a 360-degree
yaw turn in place, a 20 m square (口字) starting over the pad, a visit to the ground targets, and
landing. Skill is injected as named imperfections (:class:`PilotSkill`): lateral drift and
overshoot on the climb, stop-and-go climbing, hover drift, yaw-rate wobble, an incomplete turn,
cross-track wander and corner overshoot on the square, a skipped leg, a missed target. GNSS
noise is added as a slow AR(1) wander, like a real receiver.

Every flight is written twice into ``OUT/flights/``: an Airdata-style CSV (feet and mph, 10 Hz,
header quirks of real exports) and a DJI SRT in the modern bracket format (one block per 100 ms,
enterprise fields with aircraft and gimbal attitude). ``course.yaml`` describes the course. The
function returns the ground-truth metric values computed from the injected motion, before noise,
resampling and file rounding, so tests can check that the scorer measures what was put in.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tuban.imagery.track import Track, make_track
from tuban.imagery.vector_io import write_text_atomic

__all__ = ["PilotSkill", "PILOTS", "COURSE_ORIGIN", "simulate_flight", "flight_track", "write_flights"]

COURSE_ORIGIN = (117.41250, 23.92600)  # (lon, lat) of the pad: a sports field in the sample county (scenes.CountySpec)
SIDE_M = 20.0
ALT_M = 10.0
HOVER_S = 10.0
TARGETS_EN = {"T1": (10.0, 10.0), "T2": (-12.0, 8.0)}
_M_PER_DEG_LAT = 111_320.0
FT = 0.3048
MPH = 0.44704


@dataclass(frozen=True)
class PilotSkill:
    """Imperfections injected into one pilot's flight (0 = perfect)."""

    name: str
    rank: int                        # known skill order, 1 = best
    takeoff_drift_m: float = 0.2
    climb_submovements: int = 1
    overshoot_m: float = 0.1
    heading_drift_deg: float = 1.0
    hover_drift_m: float = 0.2
    hover_alt_wobble_m: float = 0.05
    hover_heading_wobble_deg: float = 0.5
    turn_deg: float = 360.0
    turn_time_s: float = 10.0
    turn_rate_wobble: float = 0.05
    turn_drift_m: float = 0.2
    xte_m: float = 0.15
    corner_overshoot_m: float = 0.2
    square_alt_wobble_m: float = 0.05
    cruise_m_s: float = 3.0
    skip_last_leg: bool = False
    visit_targets: tuple[str, ...] = ("T1", "T2")
    flight_mode: str = "P-GPS"
    gnss_noise_m: float = 0.05


PILOTS: tuple[PilotSkill, ...] = (
    PilotSkill("ace", 1),
    PilotSkill("solid", 2, takeoff_drift_m=0.6, overshoot_m=0.5, heading_drift_deg=6.0, hover_drift_m=0.6,
               hover_alt_wobble_m=0.15, hover_heading_wobble_deg=3.0, turn_deg=350.0, turn_rate_wobble=0.15,
               turn_drift_m=0.6, xte_m=0.5, corner_overshoot_m=0.8, square_alt_wobble_m=0.2, cruise_m_s=2.5),
    PilotSkill("shaky", 4, takeoff_drift_m=1.3, climb_submovements=3, overshoot_m=1.2, heading_drift_deg=15.0,
               hover_drift_m=1.0, hover_alt_wobble_m=0.35, hover_heading_wobble_deg=6.0, turn_deg=300.0,
               turn_time_s=7.0, turn_rate_wobble=0.35, turn_drift_m=1.3, xte_m=1.2, corner_overshoot_m=1.8,
               square_alt_wobble_m=0.5, cruise_m_s=2.0, flight_mode="ATTI"),
    PilotSkill("skipper", 3, takeoff_drift_m=0.8, overshoot_m=0.6, heading_drift_deg=8.0, hover_drift_m=0.8,
               hover_alt_wobble_m=0.2, hover_heading_wobble_deg=4.0, turn_deg=355.0, turn_rate_wobble=0.2,
               turn_drift_m=0.8, xte_m=0.7, corner_overshoot_m=1.0, square_alt_wobble_m=0.25, cruise_m_s=2.5,
               skip_last_leg=True, visit_targets=("T1",)),
)


def _mj(s: np.ndarray) -> np.ndarray:
    """Minimum-jerk profile 0 -> 1 for s in [0, 1] (clipped outside)."""
    s = np.clip(s, 0.0, 1.0)
    return 10 * s**3 - 15 * s**4 + 6 * s**5


class _Path:
    """Accumulates 10 Hz samples of (e, n, u, yaw) phase by phase."""

    def __init__(self, dt_s: float) -> None:
        self.dt = dt_s
        self.cols: dict[str, list[np.ndarray]] = {k: [] for k in ("e", "n", "u", "yaw", "phase")}
        self.state = np.zeros(4)  # e, n, u, yaw

    def add(self, phase: str, e: np.ndarray, n: np.ndarray, u: np.ndarray, yaw: np.ndarray) -> slice:
        start = sum(len(x) for x in self.cols["e"])
        for k, v in zip(("e", "n", "u", "yaw"), (e, n, u, yaw), strict=True):
            self.cols[k].append(np.asarray(v, float))
        self.cols["phase"].append(np.full(len(e), phase, dtype=object))
        self.state = np.array([e[-1], n[-1], u[-1], yaw[-1]], float)
        return slice(start, start + len(e))

    def hold(self, phase: str, seconds: float) -> slice:
        k = max(1, int(round(seconds / self.dt)))
        e, n, u, y = self.state
        return self.add(phase, np.full(k, e), np.full(k, n), np.full(k, u), np.full(k, y))

    def move_to(self, phase: str, e1: float, n1: float, speed_m_s: float) -> slice:
        e0, n0, u0, y0 = self.state
        dist = math.hypot(e1 - e0, n1 - n0)
        k = max(2, int(round(1.875 * dist / max(speed_m_s, 0.1) / self.dt)))  # peak speed = cruise
        s = _mj(np.linspace(0, 1, k))
        return self.add(phase, e0 + (e1 - e0) * s, n0 + (n1 - n0) * s, np.full(k, u0), np.full(k, y0))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.cols.items()}


def _smooth_noise(rng: np.random.Generator, k: int, dt_s: float, tau_s: float) -> np.ndarray:
    """Unit-variance AR(1) noise with correlation time ``tau_s``."""
    a = math.exp(-dt_s / tau_s)
    x = np.empty(k)
    x[0] = rng.standard_normal()
    w = rng.standard_normal(k) * math.sqrt(1 - a * a)
    for i in range(1, k):
        x[i] = a * x[i - 1] + w[i]
    return x


def simulate_flight(skill: PilotSkill, seed: int = 0, dt_s: float = 0.1) -> tuple[dict[str, np.ndarray], dict]:
    """Simulate one pilot's routine in local ENU metres about the pad.

    Returns:
        ``(series, truth)``: series has t_s, e_m, n_m, u_m, yaw_deg (unwrapped), phase and the
        noisy e/n/u actually written; truth holds the injected metric values (units in names).
    """
    rng = np.random.default_rng(seed)
    p = _Path(dt_s)
    truth: dict[str, object] = {"pilot": skill.name, "rank": skill.rank}
    p.hold("ground", 3.0)
    # Take-off: k overlapping minimum-jerk sub-movements, overshoot bump, lateral and heading drift.
    k = skill.climb_submovements
    t_climb = 6.0 if k == 1 else 9.0
    seg = t_climb / (0.8 * (k - 1) + 1)
    t_to = t_climb + 3.0
    t = np.arange(0, t_to, dt_s)
    u = sum(ALT_M / k * _mj((t - i * 0.8 * seg) / seg) for i in range(k))
    u = u + skill.overshoot_m * (_mj((t - (t_climb - 1.0)) / 1.3) - _mj((t - (t_climb + 0.5)) / 2.0))
    phi = rng.uniform(0, 2 * math.pi)
    drift = skill.takeoff_drift_m * _mj(t / t_climb)
    yaw = skill.heading_drift_deg * np.sin(np.pi * np.clip(t / t_to, 0, 1))
    p.add("takeoff", drift * math.cos(phi), drift * math.sin(phi), u, yaw)
    truth.update(takeoff_lateral_drift_m=skill.takeoff_drift_m, takeoff_climb_peaks_count=k,
                 takeoff_overshoot_m=float(u.max() - ALT_M), takeoff_heading_drift_deg=skill.heading_drift_deg)
    # Hover: slow circular drift, altitude and heading wobble, about where the climb ended.
    e0, n0, _, _ = p.state
    t = np.arange(0, HOVER_S + 2.0, dt_s)
    ang = 2 * np.pi * t / (HOVER_S + 2.0) + phi
    r = skill.hover_drift_m
    he, hn = e0 + r * (np.cos(ang) - math.cos(phi)), n0 + r * (np.sin(ang) - math.sin(phi))
    hu = ALT_M + skill.hover_alt_wobble_m * math.sqrt(2) * np.sin(2 * np.pi * t / ((HOVER_S + 2.0) / 2))
    hy = skill.hover_heading_wobble_deg * math.sqrt(2) * np.sin(2 * np.pi * t / 8.0)
    sl = p.add("hover", he, hn, hu, hy)
    mid = slice(int(1.0 / dt_s), int((1.0 + HOVER_S) / dt_s))
    d = np.hypot(he[mid] - he[mid].mean(), hn[mid] - hn[mid].mean())
    truth.update(hover_r95_m=float(np.percentile(d, 95)), hover_altitude_std_m=float(hu[mid].std()),
                 hover_heading_std_deg=float(hy[mid].std()))
    del sl
    p.hold("pause", 1.0)
    # Rotation: trapezoidal yaw rate with sinusoidal wobble, drift and a small altitude change.
    e0, n0, u0, y0 = p.state
    t = np.arange(0, skill.turn_time_s, dt_s)
    ramp = np.minimum(1.0, np.minimum(t, skill.turn_time_s - t) / 0.8)
    rate = ramp * (1 + skill.turn_rate_wobble * np.sin(2 * np.pi * t / 2.5))
    turn = np.cumsum(rate) * dt_s
    turn *= skill.turn_deg / turn[-1]
    rate_deg_s = rate * skill.turn_deg / (np.sum(rate) * dt_s)
    core = (t >= 0.5) & (t <= skill.turn_time_s - 0.5)
    drift = skill.turn_drift_m * _mj(t / skill.turn_time_s)
    p.add("rotation", e0 + drift * 0.6, n0 + drift * 0.8, u0 + 0.1 * skill.turn_drift_m * np.sin(np.pi * t / skill.turn_time_s), y0 + turn)
    truth.update(rotation_turn_deg=skill.turn_deg, rotation_duration_s=skill.turn_time_s,
                 rotation_rate_cv=float(rate_deg_s[core].std() / np.abs(rate_deg_s[core]).mean()),
                 rotation_position_drift_m=skill.turn_drift_m)
    p.hold("pause", 2.0)
    # Back over the pad, then the square: N, E, S, W legs (heading 0, turning right).
    p.move_to("transit", 0.0, 0.0, 1.0)
    p.hold("pause", 2.0)
    corners = [(0.0, 0.0), (0.0, SIDE_M), (SIDE_M, SIDE_M), (SIDE_M, 0.0), (0.0, 0.0)]
    legs = 3 if skill.skip_last_leg else 4
    xte_all, sq_start = [], sum(len(x) for x in p.cols["e"])
    for i in range(legs):
        (ae, an), (be, bn) = corners[i], corners[i + 1]
        ue, un = (be - ae) / SIDE_M, (bn - an) / SIDE_M
        kk = max(2, int(round(1.875 * (SIDE_M + skill.corner_overshoot_m) / skill.cruise_m_s / dt_s)))
        s = np.linspace(0, 1, kk)
        along = (SIDE_M + skill.corner_overshoot_m) * _mj(s)
        lat = _smooth_noise(rng, kk, dt_s, 3.0) * np.sin(np.pi * s)
        lat *= skill.xte_m / max(math.sqrt(np.mean(lat**2)), 1e-9)
        back = SIDE_M + skill.corner_overshoot_m * (1 - _mj(np.linspace(0, 1, int(1.5 / dt_s))))
        along = np.concatenate([along, back])
        lat = np.concatenate([lat, np.zeros(len(back))])
        cycles = max(1, round(len(along) * dt_s / 7.0))  # whole periods: continuous from leg to leg
        uu = ALT_M + skill.square_alt_wobble_m * math.sqrt(2) * np.sin(2 * np.pi * cycles * np.arange(len(along)) / len(along))
        p.add(f"leg{i + 1}", ae + along * ue + lat * un, an + along * un - lat * ue, uu, np.full(len(along), p.state[3]))
        xte_all.append(lat)
        p.hold("corner", 1.0)
    xte = np.concatenate(xte_all)
    sq_u = np.concatenate(p.cols["u"])[sq_start:]
    truth.update(square_side_m=SIDE_M, square_xte_rms_m=float(math.sqrt(np.mean(xte**2))),
                 square_corner_overshoot_m=skill.corner_overshoot_m, square_legs_flown=legs,
                 square_altitude_std_m=float(sq_u.std()))
    p.hold("pause", 12.0)
    for name in skill.visit_targets:
        p.move_to("targets", *TARGETS_EN[name], skill.cruise_m_s)
        p.hold("targets", 3.0)
    truth["targets_visited"] = list(skill.visit_targets)
    if not skill.skip_last_leg:
        p.move_to("transit", 0.0, 0.0, skill.cruise_m_s)
    p.hold("pause", 2.0)
    e0, n0, u0, y0 = p.state
    t = np.arange(0, 6.0, dt_s)
    p.add("landing", np.full(len(t), e0), np.full(len(t), n0), u0 * (1 - _mj(t / 5.0)), np.full(len(t), y0))
    p.hold("ground", 2.0)
    a = p.arrays()
    k = len(a["e"])
    sigma = skill.gnss_noise_m
    a["t_s"] = np.arange(k) * dt_s
    a["e_noisy"] = a["e"] + sigma * _smooth_noise(rng, k, dt_s, 3.0)
    a["n_noisy"] = a["n"] + sigma * _smooth_noise(rng, k, dt_s, 3.0)
    a["u_noisy"] = np.maximum(a["u"] + 0.5 * sigma * _smooth_noise(rng, k, dt_s, 2.0), 0.0)
    a["u_noisy"][a["u"] == 0] = 0.0
    truth["flight_mode"] = skill.flight_mode
    return a, truth


def _to_lonlat(e: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon0, lat0 = COURSE_ORIGIN
    lat = lat0 + n / _M_PER_DEG_LAT
    lon = lon0 + e / (_M_PER_DEG_LAT * math.cos(math.radians(lat0)))
    return lon, lat


def flight_track(skill: PilotSkill, seed: int = 0) -> tuple[Track, dict]:
    """The simulated flight as a Track (no file round trip) and its ground truth."""
    a, truth = simulate_flight(skill, seed)
    lon, lat = _to_lonlat(a["e_noisy"], a["n_noisy"])
    yaw = (a["yaw"] + 180.0) % 360.0 - 180.0
    speed = np.hypot(np.gradient(a["e"], a["t_s"]), np.gradient(a["n"], a["t_s"]))
    cols = {"time_s": a["t_s"], "lat": lat, "lon": lon, "rel_alt_m": a["u_noisy"], "yaw_deg": yaw,
            "gimbal_yaw_deg": yaw, "gimbal_pitch_deg": np.full(len(yaw), -90.0), "speed_m_s": speed,
            "flight_mode": np.full(len(yaw), skill.flight_mode, dtype=object)}
    return make_track(cols, source=f"{skill.name}.csv", format="synthetic"), truth


def _airdata_csv(track: Track, start: dt.datetime) -> str:
    tab = track.table
    head = ["time(millisecond)", "datetime(utc)", "latitude", "longitude", "height_above_takeoff(feet)",
            "altitude_above_seaLevel(feet)", "speed(mph)", "satellites", "gpslevel", " xSpeed(mph)",
            " ySpeed(mph)", " zSpeed(mph)", " compass_heading(degrees)", " pitch(degrees)", " roll(degrees)",
            "isPhoto", "isVideo", "gimbal_heading(degrees)", "gimbal_pitch(degrees)", "gimbal_roll(degrees)",
            "battery_percent", "flycStateRaw", "flycState", "message"]
    lines = [",".join(head)]
    for i, r in enumerate(tab.itertuples(index=False)):
        ms = int(round(r.time_s * 1000))
        stamp = (start + dt.timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S")
        heading = r.yaw_deg % 360.0
        lines.append(",".join([
            str(ms), stamp, f"{r.lat:.8f}", f"{r.lon:.8f}", f"{r.rel_alt_m / FT:.2f}",
            f"{(r.rel_alt_m + 12.0) / FT:.2f}", f"{r.speed_m_s / MPH:.2f}", "18", "5", "0.00", "0.00", "0.00",
            f"{heading:.1f}", "0.0", "0.0", "0", "1", f"{heading:.1f}", f"{r.gimbal_pitch_deg:.1f}", "0.0",
            str(max(20, 95 - i // 200)), "6", r.flight_mode, ""]))
    return "\n".join(lines) + "\n"


def _srt(track: Track, start: dt.datetime) -> str:
    tab = track.table
    out = []
    for i, r in enumerate(tab.itertuples(index=False)):
        t0, t1 = r.time_s, r.time_s + 0.1
        cue = f"{_srt_time(t0)} --> {_srt_time(t1)}"
        stamp = (start + dt.timedelta(seconds=float(r.time_s))).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        out.append(
            f"{i + 1}\n{cue}\n<font size=\"28\">FrameCnt: {i + 1}, DiffTime: 100ms\n{stamp}\n"
            f"[iso: 100] [shutter: 1/1000.0] [fnum: 2.8] [ev: 0] [color_md : default] [focal_len: 24.00] "
            f"[dzoom_ratio: 1.00], [latitude: {r.lat:.6f}] [longitude: {r.lon:.6f}] "
            f"[rel_alt: {r.rel_alt_m:.3f} abs_alt: {r.rel_alt_m + 12.0:.3f}] "
            f"[gb_yaw: {r.gimbal_yaw_deg:.1f} gb_pitch: {r.gimbal_pitch_deg:.1f} gb_roll: 0.0] "
            f"[drone_yaw: {r.yaw_deg:.1f} drone_pitch: 0.0 drone_roll: 0.0] </font>\n")
    return "\n".join(out)


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def course_yaml() -> str:
    """The sample course file (square over the pad, two targets)."""
    lon0, lat0 = COURSE_ORIGIN
    pts = []
    for name, (e, n) in TARGETS_EN.items():
        lon, lat = _to_lonlat(np.array([e]), np.array([n]))
        pts.append(f"    - {{name: {name}, point: [{lon[0]:.7f}, {lat[0]:.7f}]}}")
    return "\n".join([
        "# Sample drone-skills course (tuban sample_data/flights.py)",
        "name: Sample county drone skills",
        "wind_grade: 1",
        "items: [takeoff, hover, rotation, square, targets]",
        f"takeoff: {{altitude_m: {ALT_M}}}",
        f"hover: {{duration_s: {HOVER_S}}}",
        "rotation: {min_duration_s: 6, max_duration_s: 20}",
        f"square: {{origin: [{lon0}, {lat0}], side_m: {SIDE_M}, heading_deg: 0, turn: right, "
        f"altitude_m: {ALT_M}, time_limit_s: 90}}",
        "targets:",
        "  time_limit_s: 300",
        "  camera: {hfov_deg: 70.3, vfov_deg: 55.7}",
        "  points:",
        *pts,
        "",
    ])


def write_flights(out_dir: str | Path, pilots: tuple[PilotSkill, ...] = PILOTS, seed: int = 7,
                  overwrite: bool = False) -> dict:
    """Write ``OUT/flights/<pilot>.csv`` (Airdata), ``<pilot>.SRT`` and ``course.yaml``.

    Returns:
        ``{"course": path, "pilots": {name: {"csv": path, "srt": path, "truth": {...}, "skill": {...}}}}``.
    """
    root = Path(out_dir) / "flights"
    root.mkdir(parents=True, exist_ok=True)
    start = dt.datetime(2026, 5, 16, 1, 30, 0)
    result: dict = {"course": root / "course.yaml", "pilots": {}}
    write_text_atomic(root / "course.yaml", course_yaml(), overwrite=overwrite)
    for i, skill in enumerate(pilots):
        track, truth = flight_track(skill, seed + i)
        t0 = start + dt.timedelta(minutes=10 * i)
        csv_path, srt_path = root / f"{skill.name}.csv", root / f"{skill.name}.SRT"
        write_text_atomic(csv_path, _airdata_csv(track, t0), overwrite=overwrite)
        write_text_atomic(srt_path, _srt(track, t0), overwrite=overwrite)
        result["pilots"][skill.name] = {"csv": csv_path, "srt": srt_path, "truth": truth, "skill": asdict(skill)}
    return result
