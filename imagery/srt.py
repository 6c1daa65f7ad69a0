"""DJI SRT subtitle telemetry -> :class:`~tuban.imagery.track.Track`.

One tolerant parser for every SRT family DJI has written (FLIGHT.md §1.1):

* modern bracket (Mavic 3, Mini 3/4, Air 3): ``FrameCnt: 1, DiffTime: 33ms`` ... ``[latitude: ..]
  [longitude: ..] [rel_alt: .. abs_alt: ..]``, also on one line or as ``FrameCnt: 0 <date>``;
* enterprise bracket (M30T, M3T, H20N): adds ``gb_yaw/gb_pitch/gb_roll``, ``drone_yaw/..``,
  ``drone_speedx/y/z`` and ``dzoom_ratio``;
* Mavic 2 / Air 2 era: ``key : value``, ``SrtCnt``, ``longtitude``, ``[altitude: ..]``, ×10
  focal length and ×100 f-number, ``date,ms,µs`` times; early firmware without ``-->`` cues;
* legacy tuples: ``HOME(lon,lat) GPS(lon,lat,sats) BAROMETER:h`` / ``Hb:``; Mavic Mini
  ``GPS (lon, lat, n), D ..m, H ..m, H.S ..m/s``; Phantom 4 RTK ``F.PRY (..)``/``G.PRY (..)``;
  Matrice 300 ``GPS(lat,lon,0.0M)`` (the ``M`` suffix flips the order);
* Mavic Air (2018): exposure only, no position -> :class:`~tuban.TelemetryError`.

The whole text is scanned once per field with a compiled regex (C speed); each match is assigned
to its record by the position of the record's cue line (``np.searchsorted``), so there is no
per-line Python state machine. The 12,318-record MAVIC3 sample parses in ~0.05 s.

Extra track columns: ``video_time_s`` (cue start, the clock the video frames share),
``focal_len_35mm``, ``dzoom_ratio``, ``satellites`` when the file has them.
"""

from __future__ import annotations

import re
from itertools import chain
from pathlib import Path

import numpy as np

from tuban import TelemetryError
from tuban.imagery.track import Track, make_track

__all__ = ["read_srt", "parse_srt_text", "looks_like_srt"]

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+|nan|NaN))"
_SEP = r"\s*:\s*"

_CUE_TAIL = r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})[ \t]*-->[ \t]*(\d+):(\d\d):(\d\d)[,.](\d{1,3})"
_CUE = re.compile(_CUE_TAIL)
_CUE_FAST = re.compile("\n" + _CUE_TAIL)  # literal prefix: the regex engine skips to line starts
_DT_TAIL = (
    r"(\d{4})[-./](\d{1,2})[-./](\d{1,2})[ T]+(\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d{1,6}))?(?:,(\d{1,3}))?"
)
_DATETIME = re.compile(_DT_TAIL)
# fast paths for the modern layout: cue + FrameCnt + DiffTime, and the position quartet, each in
# one regex pass (literal-led); used only when they match every record
_CNT_DIFF = re.compile(r"Cnt ?: ?(\d+),? ?DiffTime ?: ?(\d+)")
# the exact spacing DJI writes on Mavic 3 / Mini / Air 3 (5 ms over MAVIC3.srt); the tolerant
# variant (optional spaces) is twice as slow and is only tried when the exact one misses records
_POS4_EXACT = re.compile(r"\[latitude: ([^\]]+)\] \[longitude: ([^\]]+)\] \[rel_alt: ([^ \]]+) abs_alt: ([^\]]+)\]")
_POS4 = re.compile(
    r"\[latitude\s*:\s*" + _NUM + r"\]\s*\[longt?itude\s*:\s*" + _NUM + r"\]\s*\[rel_alt\s*:\s*" + _NUM
    + r"\s+abs_alt\s*:\s*" + _NUM + r"\]"
)
_CUE_FIXED = re.compile(r"\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)")
_FRAMECNT = re.compile(r"FrameCnt" + _SEP + r"(\d+)")
_SRTCNT = re.compile(r"SrtCnt" + _SEP + r"(\d+)")
_DIFFTIME = re.compile(r"DiffTime" + _SEP + r"(\d+(?:\.\d+)?)\s*ms")

# (column, literal that must occur in the text for the regex to be worth running, regex). The
# regexes start with a literal (no \b, no IGNORECASE) so the engine can skip ahead: ~7 ms each
# over the 3.6 MB MAVIC3 sample instead of ~100 ms.
_BRACKET_FIELDS: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (name, literal, re.compile(pattern))
    for name, literal, pattern in (
        ("lat", "latitude", r"latitude" + _SEP + _NUM),
        ("lon", "itude", r"longt?itude" + _SEP + _NUM),
        ("rel_alt_m", "rel_alt", r"rel_alt" + _SEP + _NUM),
        ("abs_alt_m", "abs_alt", r"abs_alt" + _SEP + _NUM),
        ("altitude", "[altitude", r"\[altitude" + _SEP + _NUM),
        ("gimbal_yaw_deg", "gb_yaw", r"gb_yaw" + _SEP + _NUM),
        ("gimbal_pitch_deg", "gb_pitch", r"gb_pitch" + _SEP + _NUM),
        ("gimbal_roll_deg", "gb_roll", r"gb_roll" + _SEP + _NUM),
        ("yaw_deg", "drone_yaw", r"drone_yaw" + _SEP + _NUM),
        ("pitch_deg", "drone_pitch", r"drone_pitch" + _SEP + _NUM),
        ("roll_deg", "drone_roll", r"drone_roll" + _SEP + _NUM),
        ("speed_x", "drone_speedx", r"drone_speedx" + _SEP + _NUM),
        ("speed_y", "drone_speedy", r"drone_speedy" + _SEP + _NUM),
        ("focal_len", "focal_len", r"focal_len" + _SEP + r"([-+]?\d+\.?\d*)"),
        ("dzoom_ratio", "dzoom", r"dzoom(?:_ratio)?" + _SEP + _NUM),
    )
)
_LEGACY_FIELDS: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (name, literal, re.compile(pattern))
    for name, literal, pattern in (
        ("barometer", "BAROMETER", r"BAROMETER\s*:\s*" + _NUM),
        ("hb", "Hb", r"\bHb\s*:\s*" + _NUM),
        ("h", "H ", r"(?<![.\w])H\s+" + _NUM + r"\s*m\b"),
        ("hs", "H.S", r"\bH\.S\s+" + _NUM),
    )
)
_GPS = re.compile(r"\bGPS\s*\(\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*(?:,\s*" + _NUM + r"\s*(M?)\s*)?\)")
_PRY_TAIL = r"\s*\(\s*" + _NUM + r"[^,)\d-]*,\s*" + _NUM + r"[^,)\d-]*,\s*" + _NUM + r"[^)]*\)"
_F_PRY = re.compile(r"\bF\.PRY" + _PRY_TAIL)
# Mavic 2 / Air 2S / Mini 3 era: "[Drone: Yaw:90.4, Pitch:0.8, Roll:-1.6]", "[Gimbal: Yaw:.., Pitch:.., Roll:..]"
_YPR_TAIL = r"\s*:\s*Yaw\s*:\s*" + _NUM + r"\s*,\s*Pitch\s*:\s*" + _NUM + r"\s*,\s*Roll\s*:\s*" + _NUM
_DRONE_YPR = re.compile(r"\[Drone" + _YPR_TAIL)
_GIMBAL_YPR = re.compile(r"\[Gimbal" + _YPR_TAIL)
_G_PRY = re.compile(r"\bG\.PRY" + _PRY_TAIL)

_FRAME_DT_MAX_S = 0.2  # cue intervals at or below this are per-frame records (>= 5 fps)


def looks_like_srt(head: str) -> bool:
    """True if the first few KB of a text file look like DJI SRT telemetry."""
    return bool(
        _CUE.search(head)
        or (_DATETIME.search(head) and re.search(r"longt?itude|\bGPS\s*\(", head, re.IGNORECASE))
    )


def read_srt(path: str | Path) -> Track:
    """Read a DJI ``.SRT`` telemetry sidecar into a Track.

    Args:
        path: the SRT file (UTF-8, optional BOM, LF or CRLF).

    Returns:
        Track with ``format`` ``srt-modern``/``srt-enterprise``/``srt-mavic2``/``srt-legacy``/
        ``srt-m300``/``srt-p4``/``srt-mixed``; ``time_s`` from the cue (video) clock.

    Raises:
        TelemetryError: empty, unreadable, or no record with a usable position.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TelemetryError(path, f"cannot read: {exc.strerror or exc}") from exc
    text = raw.replace(b"\x00", b"").decode("utf-8", errors="replace")
    return parse_srt_text(text, source=path)


def _matches(pattern: re.Pattern[str], text: str) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    starts: list[int] = []
    groups: list[tuple[str, ...]] = []
    for m in pattern.finditer(text):
        starts.append(m.start())
        groups.append(m.groups())
    return np.asarray(starts, dtype=np.int64), groups


def _to_float(values: list[str]) -> np.ndarray:
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            out[i] = np.nan
    return out


class _Records:
    """Assign regex matches to records.

    Fast path: a field found exactly once per record (``findall`` count == record count) is
    taken in order, without positions. Otherwise each match is placed by its position against
    the record anchors (first match per record wins), which handles truncated and odd records.
    """

    def __init__(self, text: str, anchor: re.Pattern[str], n: int, fast: bool) -> None:
        self.text = text
        self.anchor = anchor
        self.n = n
        self.fast = fast
        self._anchors: np.ndarray | None = None

    @property
    def anchors(self) -> np.ndarray:
        if self._anchors is None:
            self._anchors, _ = _matches(self.anchor, self.text)
        return self._anchors

    def column(self, starts: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.full(self.n, np.nan)
        if len(starts):
            rec = np.searchsorted(self.anchors, starts, side="right") - 1
            keep = rec >= 0
            idx = np.flatnonzero(keep)
            uniq, first = np.unique(rec[keep], return_index=True)
            out[uniq] = values[idx[first]]
        return out

    def field(self, pattern: re.Pattern[str]) -> np.ndarray | None:
        """Float column for a one-group pattern, or None if it never occurs."""
        if self.fast:
            found = pattern.findall(self.text)
            if len(found) == self.n:
                try:  # fromiter(map(float)) is ~2x faster than np.array(list_of_str, dtype=float)
                    return np.fromiter(map(float, found), dtype=float, count=len(found))
                except ValueError:
                    return _to_float(found)
            if not found:
                return None
        starts, groups = _matches(pattern, self.text)
        if not len(starts):
            return None
        return self.column(starts, _to_float([g[0] for g in groups]))


def _fixed_cue_seconds(cues: np.ndarray) -> np.ndarray:
    """Seconds from an array of ``HH:MM:SS,mmm`` strings, digit arithmetic on code points."""
    d = np.ascontiguousarray(cues).view(np.uint32).reshape(-1, 12).astype(np.int64) - ord("0")
    h = d[:, 0] * 10 + d[:, 1]
    m = d[:, 3] * 10 + d[:, 4]
    sec = d[:, 6] * 10 + d[:, 7]
    ms = d[:, 9] * 100 + d[:, 10] * 10 + d[:, 11]
    return h * 3600.0 + m * 60.0 + sec + ms / 1000.0


def _cue_seconds(groups: list[tuple[str, ...]], offset: int) -> np.ndarray:
    a = np.asarray([g[offset : offset + 4] for g in groups], dtype=np.float64).reshape(-1, 4)
    ms = a[:, 3]
    digits = np.asarray([len(g[offset + 3]) for g in groups])
    ms = ms * np.where(digits == 1, 100, np.where(digits == 2, 10, 1))
    return a[:, 0] * 3600 + a[:, 1] * 60 + a[:, 2] + ms / 1000.0


def _datetime_seconds(groups: list[tuple[str, ...]]) -> np.ndarray:
    """Seconds since 1970 (naive clock, the SRT's local time) for datetime regex groups."""
    if not groups:
        return np.empty(0)
    ymd = np.asarray([f"{g[0]}-{int(g[1]):02d}-{int(g[2]):02d}" for g in groups], dtype="datetime64[D]")
    hms = np.asarray([g[3:6] for g in groups], dtype=np.float64)
    frac = np.asarray([float("0." + g[6]) if g[6] else 0.0 for g in groups])
    days = ymd.astype(np.int64).astype(np.float64)
    return days * 86400 + hms[:, 0] * 3600 + hms[:, 1] * 60 + hms[:, 2] + frac


def parse_srt_text(text: str, *, source: str | Path | None = None) -> Track:
    """Parse the text of a DJI SRT file (see module doc for the families handled).

    Example:
        >>> t = parse_srt_text("1\\n00:00:00,000 --> 00:00:00,033\\n[latitude: 30.5] "
        ...                    "[longitude: 114.3] [rel_alt: 80.0 abs_alt: 95.0]\\n")
        >>> float(t.table.lon[0]), float(t.table.rel_alt_m[0])
        (114.3, 80.0)
    """
    where = source if source is not None else "<srt>"
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\x00", "")
    if not text.strip():
        raise TelemetryError(where, "empty SRT file")
    warnings: list[str] = []

    text = "\n" + text
    n_arrows = text.count("-->")
    fast_cols: dict[str, np.ndarray] = {}
    cue_groups = _CUE_FIXED.findall(text) if n_arrows else []
    if n_arrows and len(cue_groups) == n_arrows:  # the usual "HH:MM:SS,mmm --> HH:MM:SS,mmm" line
        cues = np.array(cue_groups, dtype="U12")
        video_t, cue_end = _fixed_cue_seconds(cues[:, 0]), _fixed_cue_seconds(cues[:, 1])
        recs = _Records(text, _CUE_FAST, len(cue_groups), fast=True)
        _fast_fields(text, n_arrows, fast_cols)
    elif n_arrows:
        starts, groups = _matches(_CUE, text)
        video_t, cue_end = _cue_seconds(groups, 0), _cue_seconds(groups, 4)
        recs = _Records(text, _CUE, len(starts), fast=False)
    else:  # early Mavic 2 firmware: no cue lines, one dated block per second
        starts, groups = _matches(_DATETIME, text)
        if not len(starts):
            raise TelemetryError(where, "not a DJI SRT file: no '-->' cue times and no dated records")
        clock = _datetime_seconds(groups)
        video_t, cue_end = clock - clock[0], None
        recs = _Records(text, _DATETIME, len(starts), fast=False)
        warnings.append("SRT has no '-->' cue times; video time assumed to start at the first record")
    n = recs.n
    cues_missing = cue_end is None
    cols: dict[str, np.ndarray] = {}

    # which keys exist: probe the whole text if small, else its start, middle and end (a 2 ms
    # substring search per absent key adds up to ~30 ms on a 3.6 MB file)
    if len(text) > 1_000_000:
        mid = len(text) // 2
        probe = text[:50_000] + text[mid : mid + 50_000] + text[-50_000:]
    else:
        probe = text
    framecnt = fast_cols.pop("framecnt", None)
    if framecnt is None:
        framecnt = recs.field(_FRAMECNT if "FrameCnt" in probe else _SRTCNT)
    framecnt = framecnt if framecnt is not None else np.full(n, np.nan)
    difftime_ms = fast_cols.pop("difftime_ms", None)
    if difftime_ms is None:
        difftime_ms = recs.field(_DIFFTIME)
    difftime_s = difftime_ms / 1000.0 if difftime_ms is not None else np.full(n, np.nan)

    cols.update(fast_cols)
    for name, literal, pattern in _BRACKET_FIELDS + _LEGACY_FIELDS:
        if literal in probe and name not in cols:
            col = recs.field(pattern)
            if col is not None:
                cols[name] = col

    family = _resolve_gps_tuples(text, recs, cols, warnings) if "GPS" in probe else ""
    for prefix, pattern in (("", _F_PRY), ("gimbal_", _G_PRY)):
        if "PRY" in probe:
            starts, groups = _matches(pattern, text)
            if len(starts):
                vals = _to_float([x for row in groups for x in row]).reshape(-1, 3)
                cols[f"{prefix}pitch_deg"] = recs.column(starts, vals[:, 0])
                cols[f"{prefix}roll_deg"] = recs.column(starts, vals[:, 1])
                cols[f"{prefix}yaw_deg"] = recs.column(starts, vals[:, 2])

    for prefix, literal, pattern in (("", "[Drone", _DRONE_YPR), ("gimbal_", "[Gimbal", _GIMBAL_YPR)):
        if literal in probe and f"{prefix}yaw_deg" not in cols:
            starts, groups = _matches(pattern, text)
            if len(starts):
                vals = _to_float([x for row in groups for x in row]).reshape(-1, 3)
                cols[f"{prefix}yaw_deg"] = recs.column(starts, vals[:, 0])
                cols[f"{prefix}pitch_deg"] = recs.column(starts, vals[:, 1])
                cols[f"{prefix}roll_deg"] = recs.column(starts, vals[:, 2])
    if "dzoom_ratio" in cols:  # Mini 3 / Air 2S write "[dzoom_ratio: 10000, delta:0]" for 1.0x
        z = cols["dzoom_ratio"]
        cols["dzoom_ratio"] = np.where(z >= 100, z / 10000.0, z)

    bracket = "lat" in cols and "lon" in cols
    if family and bracket:
        family = "srt-mixed"
    elif bracket:
        if "gb_yaw" in probe or "drone_yaw" in probe:
            family = "srt-enterprise"
        elif re.search(r"SrtCnt|FrameCnt :|longtitude|\[altitude|\[iso :", text[:4000]) or cues_missing:
            family = "srt-mavic2"
        else:
            family = "srt-modern"
    if "lat" not in cols and "tuple_lat" not in cols:
        raise TelemetryError(
            where, f"no GPS position in any of {n} SRT records (exposure-only SRT, e.g. Mavic Air 2018?)"
        )

    lat = _merge(cols.pop("lat", None), cols.pop("tuple_lat", None), n)
    lon = _merge(cols.pop("lon", None), cols.pop("tuple_lon", None), n)
    rel = _merge(cols.pop("rel_alt_m", None), cols.pop("barometer", None), n)
    rel = _merge(rel, cols.pop("hb", None), n)
    rel = _merge(rel, cols.pop("h", None), n)
    abs_alt = _merge(cols.pop("abs_alt_m", None), cols.pop("altitude", None), n)
    speed = cols.pop("hs", np.full(n, np.nan))
    sx, sy = cols.pop("speed_x", None), cols.pop("speed_y", None)
    if sx is not None and sy is not None:
        speed = np.where(np.isfinite(speed), speed, np.hypot(sx, sy))
    if "focal_len" in cols:
        cols["focal_len_35mm"] = _decode_focal(cols.pop("focal_len"), text)

    # validity: a position must exist, be finite, in range and not the (0, 0) "no fix" marker
    have = np.isfinite(lat) & np.isfinite(lon)
    valid = have & (np.abs(lat) <= 90) & (np.abs(lon) <= 180) & ~((lat == 0) & (lon == 0))
    n_drop = int((~valid).sum())
    if not valid.any():
        raise TelemetryError(where, f"none of {n} SRT records has a valid GPS position (all missing, NaN or 0,0)")
    if n_drop == 1 and not have[-1]:
        warnings.append("last SRT record is truncated (no position); dropped")
    elif n_drop:
        warnings.append(
            f"{n_drop} of {n} SRT records dropped: no position (truncated, no fix, N/A), "
            "GPS (0,0), NaN or out of range"
        )

    frame = _frame_index(framecnt, video_t, cue_end, difftime_s, warnings)
    out: dict[str, np.ndarray] = {
        "lat": lat, "lon": lon, "rel_alt_m": rel, "abs_alt_m": abs_alt,
        "speed_m_s": speed, "frame": frame, "video_time_s": video_t,
    }
    for name, arr in cols.items():
        if name in ("satellites", "focal_len_35mm", "dzoom_ratio") or name.endswith("_deg"):
            out[name] = arr
    out = {k: np.asarray(v)[valid] for k, v in out.items()}
    order = np.argsort(out["video_time_s"], kind="stable")
    if not np.all(order == np.arange(len(order))):
        warnings.append("SRT records are out of time order; sorted by cue time")
    out = {k: v[order] for k, v in out.items()}
    out["time_s"] = out["video_time_s"] - out["video_time_s"][0]
    return make_track(out, source=source, format=family, warnings=warnings)


def _fast_fields(text: str, n: int, out: dict[str, np.ndarray]) -> None:
    """Frame counter and position quartet in two regex passes, when every record has them."""
    head = text[:20_000]
    if "DiffTime" in head:
        pairs = _CNT_DIFF.findall(text)
        if len(pairs) == n:
            arr = np.fromiter(map(float, chain.from_iterable(pairs)), dtype=float, count=2 * n).reshape(n, 2)
            out["framecnt"], out["difftime_ms"] = arr[:, 0], arr[:, 1]
    if "rel_alt" in head:
        for pattern in (_POS4_EXACT, _POS4):
            quartets = pattern.findall(text)
            if len(quartets) == n:
                try:
                    pos = np.fromiter(map(float, chain.from_iterable(quartets)), dtype=float,
                                      count=4 * n).reshape(n, 4)
                except ValueError:
                    continue
                for k, name in enumerate(("lat", "lon", "rel_alt_m", "abs_alt_m")):
                    out[name] = pos[:, k]
                return


def _merge(primary: np.ndarray | None, fallback: np.ndarray | None, n: int) -> np.ndarray:
    if primary is None and fallback is None:
        return np.full(n, np.nan)
    if primary is None:
        return fallback  # type: ignore[return-value]
    if fallback is None:
        return primary
    return np.where(np.isfinite(primary), primary, fallback)


def _resolve_gps_tuples(text: str, recs: _Records, cols: dict[str, np.ndarray], warnings: list[str]) -> str:
    """Read ``GPS(a, b, c)`` tuples, deciding per file whether ``a`` is lon (DJI legacy) or lat (M300)."""
    s, g = _matches(_GPS, text)
    if not len(s):
        return ""
    a = _to_float([x[0] for x in g])
    b = _to_float([x[1] for x in g])
    third = [x[2] for x in g]
    m_suffix = sum(1 for x in g if x[3]) > len(g) / 2
    if np.any(np.abs(a) > 90):
        lat_first = False
    elif np.any(np.abs(b) > 90):
        lat_first = True
    else:
        lat_first = m_suffix
    if lat_first:
        cols["tuple_lat"], cols["tuple_lon"] = recs.column(s, a), recs.column(s, b)
        warnings.append("GPS(...) tuples read as (lat, lon): 'M'-suffixed Matrice 300 form")
    else:
        cols["tuple_lat"], cols["tuple_lon"] = recs.column(s, b), recs.column(s, a)
    if not m_suffix and any(third):
        cols["satellites"] = recs.column(s, _to_float(third))
    if m_suffix:
        return "srt-m300"
    if "F.PRY" in text or "G.PRY" in text:
        return "srt-p4"
    return "srt-legacy"


def _decode_focal(focal: np.ndarray, text: str) -> np.ndarray:
    """35 mm-equivalent focal length; Mavic 2 era integers are ×10 (``240`` = 24 mm)."""
    integer_style = re.search(r"focal_len\s*:\s*\d+\s*\]", text) is not None
    if integer_style and np.isfinite(focal).any() and np.nanmedian(focal) >= 100:
        return focal / 10.0
    return focal


_STANDARD_FPS = np.array([23.976, 24, 25, 29.97, 30, 47.952, 48, 50, 59.94, 60, 100, 119.88, 120])


def frame_interval_s(durations_s: np.ndarray) -> float:
    """Video frame interval from per-record cue durations or DiffTimes, snapped to a standard rate.

    DJI writes whole milliseconds (16/17 ms at 59.94 fps), so the mean of the typical durations is
    used and snapped to the nearest standard frame rate within 3 %.

    Example:
        >>> round(1 / frame_interval_s(np.array([0.016, 0.017, 0.017, 0.016, 0.017])), 2)
        59.94
    """
    d = durations_s[np.isfinite(durations_s) & (durations_s > 0)]
    if not len(d):
        return float("nan")
    med = float(np.median(d))
    typical = d[(d > 0.5 * med) & (d < 1.5 * med)]
    dt = float(typical.mean())
    fps = 1.0 / dt
    near = _STANDARD_FPS[np.argmin(np.abs(_STANDARD_FPS - fps))]
    return 1.0 / near if abs(near - fps) / fps < 0.03 else dt


def _frame_index(
    framecnt: np.ndarray,
    video_t: np.ndarray,
    cue_end: np.ndarray | None,
    difftime_s: np.ndarray,
    warnings: list[str],
) -> np.ndarray:
    """0-based video frame per record: FrameCnt-1 when it agrees with the cue clock, else cue time / dt."""
    n = len(video_t)
    if cue_end is None:
        return np.full(n, -1, dtype=np.int64)
    dt = frame_interval_s(difftime_s if np.isfinite(difftime_s).any() else cue_end - video_t)
    if not np.isfinite(dt) or dt > _FRAME_DT_MAX_S:
        return np.full(n, -1, dtype=np.int64)  # 1 Hz legacy records: frame rate unknown, use time
    by_time = np.rint(video_t / dt).astype(np.int64)
    if np.isfinite(framecnt).all() and n:
        raw = framecnt.astype(np.int64)
        base = int(np.median(raw - by_time))  # FrameCnt counts from 1 (most) or 0 (some firmware)
        fc = raw - base
        if base in (0, 1) and np.all(np.diff(fc) > 0) and np.max(np.abs(fc - by_time)) <= 2:
            return fc
        warnings.append("FrameCnt does not follow the cue clock (restarts or offset); frame index from cue time")
    return by_time
