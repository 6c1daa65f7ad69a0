"""PX4 ULog flight logs -> :class:`~tuban.imagery.track.Track` (via ``pyulog``).

Position comes from the fused ``vehicle_global_position`` when the log has it, else from raw
GNSS ``vehicle_gps_position`` / ``sensor_gps`` (old field names ``lat``/``lon`` int ×1e7 and
``alt`` mm, new ``latitude_deg``/``longitude_deg``/``altitude_msl_m``), keeping only rows with
a 2-D/3-D fix. Attitude is the ``vehicle_attitude`` quaternion (body FRD -> NED, w-x-y-z)
interpolated to the position times; the flight mode is ``vehicle_status.nav_state`` (step
function); height above take-off is ``-z`` of ``vehicle_local_position`` when valid, else the
altitude minus the home (or first) altitude.

A log with no position with a fix at all (a bench test, a hardware log without GNSS) raises
:class:`~tuban.TelemetryError`: an empty track is of no use to any consumer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from dataclasses import replace
from pathlib import Path

import numpy as np

from tuban import TelemetryError
from tuban.imagery.track import Track, make_track

__all__ = ["read_ulog", "track_from_ulog", "NAV_STATES", "quaternion_to_ypr_deg"]

ULOG_MAGIC = b"ULog\x01\x12\x35"

# px4 msg/VehicleStatus.msg NAVIGATION_STATE_* (v1.14+; older names in comments)
NAV_STATES = {
    0: "MANUAL", 1: "ALTCTL", 2: "POSCTL", 3: "AUTO_MISSION", 4: "AUTO_LOITER", 5: "AUTO_RTL",
    6: "POSITION_SLOW", 7: "FREE5", 8: "FREE4", 9: "FREE3", 10: "ACRO", 11: "FREE2", 12: "DESCEND",
    13: "TERMINATION", 14: "OFFBOARD", 15: "STAB", 16: "FREE1", 17: "AUTO_TAKEOFF", 18: "AUTO_LAND",
    19: "AUTO_FOLLOW_TARGET", 20: "AUTO_PRECLAND", 21: "ORBIT", 22: "AUTO_VTOL_TAKEOFF",
}
_TOPICS = ("vehicle_global_position", "vehicle_gps_position", "sensor_gps", "vehicle_attitude",
           "vehicle_status", "vehicle_local_position", "home_position")


def read_ulog(path: str | Path) -> Track:
    """Read a PX4 ``.ulg`` file.

    Raises:
        TelemetryError: unreadable file, or no position with a GNSS fix.
    """
    path = Path(path)
    chatter = io.StringIO()  # pyulog prints its warnings to stdout; keep them off the CLI's output
    try:
        from pyulog import ULog

        with contextlib.redirect_stdout(chatter):
            ulog = ULog(str(path), message_name_filter_list=list(_TOPICS))
    except Exception as exc:  # pyulog raises bare Exceptions / struct errors on corrupt files
        raise TelemetryError(path, f"not a readable PX4 ULog: {exc}") from exc
    track = track_from_ulog(ulog, source=path)
    notes = [line.strip() for line in chatter.getvalue().splitlines() if line.strip()]
    if notes:
        track = replace(track, warnings=track.warnings + tuple(f"pyulog: {n}" for n in notes[:5]))
    return track


def _topic(ulog, name: str) -> dict[str, np.ndarray] | None:
    """The first instance of a topic, or None (``get_dataset`` raises when absent)."""
    for d in ulog.data_list:
        if d.name == name and d.multi_id == 0 and len(d.data.get("timestamp", ())):
            return d.data
    return None


def quaternion_to_ypr_deg(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Yaw, pitch, roll (deg, ZYX) from ``(N, 4)`` w-x-y-z quaternions (body -> NED).

    Example:
        >>> y, p, r = quaternion_to_ypr_deg(np.array([[np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]]))
        >>> round(float(y[0]), 6), round(float(p[0]), 6), round(float(r[0]), 6)
        (90.0, 0.0, 0.0)
    """
    w, x, y, z = (q[:, i] for i in range(4))
    yaw = np.degrees(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
    pitch = np.degrees(np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0)))
    roll = np.degrees(np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y)))
    return yaw, pitch, roll


def _positions(ulog, warnings: list[str]):
    """(timestamp_us, lat, lon, alt_m, speed_m_s, utc_us or None, topic)."""
    gp = _topic(ulog, "vehicle_global_position")
    if gp is not None and "lat" in gp:
        return gp["timestamp"], gp["lat"].astype(float), gp["lon"].astype(float), gp["alt"].astype(float), \
            None, None, "vehicle_global_position"
    for name in ("vehicle_gps_position", "sensor_gps"):
        g = _topic(ulog, name)
        if g is None:
            continue
        if "latitude_deg" in g:
            lat, lon = g["latitude_deg"].astype(float), g["longitude_deg"].astype(float)
            alt = g.get("altitude_msl_m", np.full(len(lat), np.nan)).astype(float)
        elif "lat" in g:
            lat, lon = g["lat"] * 1e-7, g["lon"] * 1e-7
            alt = g["alt"] * 1e-3 if "alt" in g else np.full(len(lat), np.nan)
        else:
            continue
        fix = g["fix_type"] >= 2 if "fix_type" in g else np.ones(len(lat), dtype=bool)
        if (~fix).any():
            warnings.append(f"{int((~fix).sum())} {name} rows without a 2-D/3-D fix dropped")
        utc = g.get("time_utc_usec")
        speed = g.get("vel_m_s")
        return (g["timestamp"][fix], lat[fix], lon[fix], alt[fix],
                None if speed is None else speed[fix].astype(float),
                None if utc is None else utc[fix], name)
    return None


def track_from_ulog(ulog, *, source: str | Path | None = None) -> Track:
    """Build a Track from a loaded ``pyulog.ULog`` (see module doc)."""
    where = source if source is not None else "<ulog>"
    warnings: list[str] = []
    pos = _positions(ulog, warnings)
    if pos is None or not len(pos[0]):
        raise TelemetryError(where, "ULog has no global or GNSS position with a fix "
                                    "(bench/hardware log without GPS?)")
    ts, lat, lon, alt, speed, utc, topic = pos
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180) & ~((lat == 0) & (lon == 0))
    if not ok.any():
        raise TelemetryError(where, f"ULog {topic} has no valid coordinates")
    if (~ok).any():
        warnings.append(f"{int((~ok).sum())} {topic} rows with invalid coordinates dropped")
    ts, lat, lon, alt = ts[ok], lat[ok], lon[ok], alt[ok]
    speed = speed[ok] if speed is not None else None
    utc = utc[ok] if utc is not None else None
    t = ts.astype(float)
    cols: dict[str, np.ndarray] = {"time_s": (t - t[0]) * 1e-6, "lat": lat, "lon": lon, "abs_alt_m": alt}

    att = _topic(ulog, "vehicle_attitude")
    if att is not None and "q[0]" in att:
        q = np.column_stack([att[f"q[{i}]"] for i in range(4)]).astype(float)
        yaw, pitch, roll = quaternion_to_ypr_deg(q)
        ta = att["timestamp"].astype(float)
        yaw_u = np.degrees(np.unwrap(np.radians(yaw)))
        cols["yaw_deg"] = (np.interp(t, ta, yaw_u) + 180.0) % 360.0 - 180.0
        cols["pitch_deg"] = np.interp(t, ta, pitch)
        cols["roll_deg"] = np.interp(t, ta, roll)

    lp = _topic(ulog, "vehicle_local_position")
    rel = None
    if lp is not None and "z" in lp:
        valid = lp["z_valid"].astype(bool) if "z_valid" in lp else np.ones(len(lp["z"]), dtype=bool)
        if valid.any():
            rel = np.interp(t, lp["timestamp"][valid].astype(float), -lp["z"][valid].astype(float))
        if speed is None and "vx" in lp:
            speed = np.interp(t, lp["timestamp"].astype(float), np.hypot(lp["vx"], lp["vy"]).astype(float))
    if rel is None:
        home = _topic(ulog, "home_position")
        base = float(home["alt"][-1]) if home is not None and "alt" in home else float(alt[0])
        rel = alt - base
        warnings.append("height above take-off from altitude minus home altitude")
    cols["rel_alt_m"] = rel
    if speed is not None:
        cols["speed_m_s"] = speed

    status = _topic(ulog, "vehicle_status")
    if status is not None and "nav_state" in status:
        idx = np.searchsorted(status["timestamp"].astype(float), t, side="right") - 1
        states = status["nav_state"][np.clip(idx, 0, None)]
        cols["flight_mode"] = np.array([NAV_STATES.get(int(s), f"NAV_{int(s)}") for s in states], dtype=object)
        cols["flight_mode"][idx < 0] = ""

    start_utc = _start_utc(ulog, ts, utc)
    return make_track(cols, source=source, format=f"px4-ulog:{topic}", start_utc=start_utc, warnings=warnings)


def _start_utc(ulog, ts: np.ndarray, utc: np.ndarray | None) -> dt.datetime | None:
    """UTC of the first position row, from GNSS ``time_utc_usec`` (any GNSS topic) when logged."""
    stamps = ts
    if utc is None:  # fused position: borrow the clock of the raw GNSS topic
        for name in ("vehicle_gps_position", "sensor_gps"):
            g = _topic(ulog, name)
            if g is not None and "time_utc_usec" in g:
                stamps, utc = g["timestamp"], g["time_utc_usec"]
                break
    if utc is None or not np.any(utc > 0):
        return None
    i = int(np.argmax(utc > 0))
    start_us = int(utc[i]) - (int(stamps[i]) - int(ts[0]))  # python ints: timestamps are uint64
    try:
        return dt.datetime.fromtimestamp(start_us * 1e-6, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
