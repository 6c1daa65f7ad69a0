"""Flight-log tables -> :class:`~tuban.imagery.track.Track`: Airdata CSV, DJI OSD-style CSV, GPX.

* **Airdata CSV** (``time(millisecond), datetime(utc), latitude, longitude,
  height_above_takeoff(feet), ... speed(mph), compass_heading(degrees), gimbal_pitch(degrees),
  flycState``): units are read from each header (feet/mph by default, metres and km/h when the
  user chose metric), header names are stripped (real files carry leading spaces), and rows
  before the first GPS lock (0/0 or no satellites) are dropped.
* **DJI OSD-style CSV** (PhantomHelp TxtLogToCsv, FlightReader, dji-log-parser):
  ``CUSTOM.updateTime [local]``, ``OSD.flyTime [s]``, ``OSD.latitude``, ``OSD.height [ft]``,
  ``OSD.yaw``, ``GIMBAL.pitch``, ``OSD.flycState``; files may hold NUL bytes and latin-1 text.
* **GPX** track, route or waypoint points (stdlib XML; no attitude).
"""

from __future__ import annotations

import datetime as dt
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from tuban import TelemetryError
from tuban.imagery.track import Track, make_track

__all__ = ["read_airdata_csv", "read_osd_csv", "read_gpx", "read_log_text", "is_airdata_header", "is_osd_header"]

_TO_M = {"feet": 0.3048, "ft": 0.3048, "foot": 0.3048, "meters": 1.0, "meter": 1.0, "metres": 1.0, "m": 1.0}
_TO_M_S = {"mph": 0.44704, "m/s": 1.0, "mps": 1.0, "kph": 1 / 3.6, "km/h": 1 / 3.6, "kmh": 1 / 3.6, "knots": 0.514444}
_UNIT = re.compile(r"^(.*?)\s*[\(\[]\s*([^\)\]]*)\s*[\)\]]\s*$")


def read_log_text(path: Path) -> str:
    """Text of a CSV/GPX log: NUL bytes removed, UTF-8 (with BOM) or else latin-1."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise TelemetryError(path, f"cannot read: {exc.strerror or exc}") from exc
    raw = raw.replace(b"\x00", b"")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def is_airdata_header(head: str) -> bool:
    h = head.lower()
    return "height_above_takeoff" in h or ("time(millisecond)" in h and "latitude" in h)


def is_osd_header(head: str) -> bool:
    return "OSD.lat" in head or "OSD.longitude" in head


def _table(text: str, path: Path) -> pd.DataFrame:
    lines = text.splitlines()
    while lines and (lines[0].lower().startswith("sep=") or not lines[0].strip()):
        lines = lines[1:]
    try:
        df = pd.read_csv(io.StringIO("\n".join(lines)), low_memory=False, on_bad_lines="skip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise TelemetryError(path, f"not a readable CSV: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _split_units(columns) -> dict[str, tuple[str, str]]:
    """``{'height_above_takeoff': ('height_above_takeoff(feet)', 'feet'), ...}`` (lower-case keys)."""
    out: dict[str, tuple[str, str]] = {}
    for col in columns:
        m = _UNIT.match(col)
        base, unit = (m.group(1), m.group(2).strip().lower()) if m else (col, "")
        out.setdefault(base.strip().lower(), (col, unit))
    return out


def _num(df: pd.DataFrame, col: str | None) -> np.ndarray:
    if col is None or col not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _length(df, units, key) -> np.ndarray:
    if key not in units:
        return np.full(len(df), np.nan)
    col, unit = units[key]
    return _num(df, col) * _TO_M.get(unit, 1.0)


def _speed(df, units, key) -> np.ndarray:
    if key not in units:
        return np.full(len(df), np.nan)
    col, unit = units[key]
    return _num(df, col) * _TO_M_S.get(unit, 1.0)


def _wrap180(deg: np.ndarray) -> np.ndarray:
    return (np.asarray(deg, dtype=float) + 180.0) % 360.0 - 180.0


def _valid_fix(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    return (np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
            & ~((lat == 0) & (lon == 0)))


def read_airdata_csv(path: str | Path, text: str | None = None) -> Track:
    """Read an Airdata UAV CSV export (units from the header).

    Raises:
        TelemetryError: missing latitude/longitude columns or no row with a GPS fix.
    """
    path = Path(path)
    df = _table(text if text is not None else read_log_text(path), path)
    units = _split_units(df.columns)
    if "latitude" not in units or "longitude" not in units:
        raise TelemetryError(path, "Airdata CSV without latitude/longitude columns")
    lat, lon = _num(df, units["latitude"][0]), _num(df, units["longitude"][0])
    fix = _valid_fix(lat, lon)
    if "satellites" in units:
        sats = _num(df, units["satellites"][0])
        fix &= ~(sats <= 0)
    if not fix.any():
        raise TelemetryError(path, f"no row with a GPS fix among {len(df)} rows")
    warnings = []
    first = int(np.argmax(fix))
    if first:
        warnings.append(f"{first} rows before the first GPS lock dropped")
    if (~fix[first:]).any():
        warnings.append(f"{int((~fix[first:]).sum())} rows without a valid position dropped")
    if "time" in units:
        col, unit = units["time"]
        t = _num(df, col) * (1e-3 if unit.startswith("milli") or unit == "ms" else 1.0)
    else:
        t = np.arange(len(df), dtype=float) * 0.1
    start_utc = None
    if "datetime" in units:
        stamp = pd.to_datetime(df[units["datetime"][0]].iloc[first], errors="coerce", utc=True)
        if not pd.isna(stamp):
            start_utc = stamp.to_pydatetime()
    mode = (df[units["flycstate"][0]].astype(str).str.strip().to_numpy(dtype=object)
            if "flycstate" in units else np.full(len(df), "", dtype=object))
    cols = {
        "time_s": t - t[first],
        "lat": lat, "lon": lon,
        "rel_alt_m": _length(df, units, "height_above_takeoff"),
        "abs_alt_m": _length(df, units, "altitude_above_sealevel"),
        "yaw_deg": _wrap180(_num(df, units.get("compass_heading", (None,))[0])),
        "pitch_deg": _num(df, units.get("pitch", (None,))[0]),
        "roll_deg": _num(df, units.get("roll", (None,))[0]),
        "gimbal_yaw_deg": _wrap180(_num(df, units.get("gimbal_heading", (None,))[0])),
        "gimbal_pitch_deg": _num(df, units.get("gimbal_pitch", (None,))[0]),
        "gimbal_roll_deg": _num(df, units.get("gimbal_roll", (None,))[0]),
        "speed_m_s": _speed(df, units, "speed"),
        "flight_mode": mode,
    }
    if "isvideo" in units:
        cols["is_video"] = _num(df, units["isvideo"][0])
    keep = fix & (np.arange(len(df)) >= first)
    cols = {k: np.asarray(v)[keep] for k, v in cols.items()}
    return make_track(cols, source=path, format="airdata-csv", start_utc=start_utc, warnings=warnings)


def _osd_col(units: dict[str, tuple[str, str]], *names: str) -> tuple[str, str] | None:
    for n in names:
        if n.lower() in units:
            return units[n.lower()]
    return None


def read_osd_csv(path: str | Path, text: str | None = None) -> Track:
    """Read a DJI OSD-style CSV (``OSD.latitude``, ``OSD.height [ft]``, ``GIMBAL.pitch`` ...)."""
    path = Path(path)
    df = _table(text if text is not None else read_log_text(path), path)
    units = _split_units(df.columns)
    lat_c, lon_c = _osd_col(units, "OSD.latitude"), _osd_col(units, "OSD.longitude")
    if lat_c is None or lon_c is None:
        raise TelemetryError(path, "DJI CSV without OSD.latitude/OSD.longitude columns")
    lat, lon = _num(df, lat_c[0]), _num(df, lon_c[0])
    fix = _valid_fix(lat, lon)
    if not fix.any():
        raise TelemetryError(path, f"no row with a GPS fix among {len(df)} rows")
    warnings = [f"{int((~fix).sum())} rows without a GPS fix dropped"] if (~fix).any() else []

    def length(*names):
        c = _osd_col(units, *names)
        return _num(df, c[0]) * _TO_M.get(c[1], 1.0) if c else np.full(len(df), np.nan)

    def plain(*names):
        c = _osd_col(units, *names)
        return _num(df, c[0]) if c else np.full(len(df), np.nan)

    start_utc = None
    fly = _osd_col(units, "OSD.flyTime")
    clock = _osd_col(units, "CUSTOM.updateTime", "CUSTOM.dateTime")
    stamps = pd.to_datetime(df[clock[0]], errors="coerce", format="mixed") if clock else None
    if fly is not None and np.isfinite(_num(df, fly[0])[fix]).sum() > 1:
        t = _num(df, fly[0]) * (1e-3 if fly[1] == "ms" else 1.0)
    elif stamps is not None and stamps.notna().any():
        t = (stamps - stamps[fix].iloc[0]).dt.total_seconds().to_numpy(dtype=float)
    else:
        t = np.arange(len(df), dtype=float) * 0.1
        warnings.append("no time column; 10 Hz assumed")
    if stamps is not None and clock is not None and "utc" in clock[1]:
        first = stamps[fix].iloc[0]
        if not pd.isna(first):
            start_utc = first.tz_localize("UTC").to_pydatetime() if first.tzinfo is None else first.to_pydatetime()
    hs = _osd_col(units, "OSD.hSpeed")
    if hs is not None:
        speed = _num(df, hs[0]) * _TO_M_S.get(hs[1], 1.0)
    else:
        xs, ys = _osd_col(units, "OSD.xSpeed"), _osd_col(units, "OSD.ySpeed")
        speed = (np.hypot(_num(df, xs[0]), _num(df, ys[0])) * _TO_M_S.get(xs[1], 1.0)
                 if xs and ys else np.full(len(df), np.nan))
    mode_c = _osd_col(units, "OSD.flycState", "OSD.flightMode")
    mode = (df[mode_c[0]].astype(str).str.strip().to_numpy(dtype=object) if mode_c
            else np.full(len(df), "", dtype=object))
    cols = {
        "time_s": t, "lat": lat, "lon": lon,
        "rel_alt_m": length("OSD.height"), "abs_alt_m": length("OSD.altitude"),
        "yaw_deg": _wrap180(plain("OSD.yaw")), "pitch_deg": plain("OSD.pitch"), "roll_deg": plain("OSD.roll"),
        "gimbal_yaw_deg": _wrap180(plain("GIMBAL.yaw")), "gimbal_pitch_deg": plain("GIMBAL.pitch"),
        "gimbal_roll_deg": plain("GIMBAL.roll"), "speed_m_s": speed, "flight_mode": mode,
    }
    video = _osd_col(units, "CUSTOM.isVideo")
    if video is not None:
        flag = df[video[0]].astype(str).str.strip().str.lower()
        cols["is_video"] = flag.isin(["1", "true", "yes"]).to_numpy(dtype=float)
    cols = {k: np.asarray(v)[fix] for k, v in cols.items()}
    if not np.isfinite(cols["time_s"]).all():
        cols["time_s"] = np.arange(len(cols["lat"]), dtype=float) * 0.1
        warnings.append("unreadable time column; 10 Hz assumed")
    cols["time_s"] = cols["time_s"] - cols["time_s"].min()
    return make_track(cols, source=path, format="dji-osd-csv", start_utc=start_utc, warnings=warnings)


def read_gpx(path: str | Path, text: str | None = None) -> Track:
    """Read GPX track points (else route points, else waypoints): lat, lon, ele, time."""
    path = Path(path)
    try:
        root = ET.fromstring(text if text is not None else read_log_text(path))
    except ET.ParseError as exc:
        raise TelemetryError(path, f"malformed GPX XML: {exc}") from exc
    pts = []
    for kind in ("trkpt", "rtept", "wpt"):
        pts = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == kind]
        if pts:
            break
    if not pts:
        raise TelemetryError(path, "GPX has no track, route or waypoints")
    lat = np.array([float(p.get("lat", "nan")) for p in pts])
    lon = np.array([float(p.get("lon", "nan")) for p in pts])
    ele = np.full(len(pts), np.nan)
    times: list[dt.datetime | None] = []
    for i, p in enumerate(pts):
        when = None
        for child in p:
            tag = child.tag.rsplit("}", 1)[-1]
            if tag == "ele" and child.text:
                ele[i] = float(child.text)
            elif tag == "time" and child.text:
                when = pd.to_datetime(child.text.strip(), errors="coerce", utc=True)
                when = None if pd.isna(when) else when.to_pydatetime()
        times.append(when)
    fix = _valid_fix(lat, lon)
    if not fix.any():
        raise TelemetryError(path, "no valid GPX point")
    warnings = [f"{int((~fix).sum())} invalid GPX points dropped"] if (~fix).any() else []
    kept_times = [t for t, f in zip(times, fix, strict=True) if f and t is not None]
    have_time = len(kept_times) == int(fix.sum())
    if have_time:
        t0 = min(kept_times)
        time_s = np.array([(t - t0).total_seconds() for t in kept_times])
        start = t0
    else:
        time_s = np.arange(int(fix.sum()), dtype=float)
        start = None
        warnings.append("GPX points without time; 1 s spacing assumed")
    return make_track({"time_s": time_s, "lat": lat[fix], "lon": lon[fix], "abs_alt_m": ele[fix]},
                      source=path, format="gpx", start_utc=start, warnings=warnings)
