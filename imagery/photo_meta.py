"""Geotagged drone photos -> :class:`~tuban.imagery.track.Track`, one row per photo.

Two sources:

* JPEG files: standard EXIF GPS (read with Pillow) plus DJI's XMP packet, read with the regex
  ``drone-dji:(\\w+)="([^"]*)"`` over the file's first bytes (FLIGHT.md §1.2): relative and
  absolute altitude, gimbal and flight yaw/pitch/roll (NED, ZYX), ``UTCAtExposure``,
  ``CalibratedFocalLength`` (pixels) and the principal point.
* exiftool CSV exports (``exiftool -csv``), where positions are DMS strings such as
  ``8 deg 17' 39.30" S`` (or plain decimals with ``-n``).

Extra columns: ``image`` (path as given), ``image_width_px``, ``image_height_px``,
``focal_len_35mm``, ``calibrated_focal_px``, ``calibrated_cx_px``, ``calibrated_cy_px``.
``time_s`` comes from ``UTCAtExposure`` (then ``start_utc`` is set) or ``DateTimeOriginal``
(camera local time).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tuban import TelemetryError
from tuban.imagery.track import Track, make_track

__all__ = ["read_photo_meta", "read_photo_dir", "read_exiftool_csv", "parse_dms", "is_exiftool_csv_header",
           "PHOTO_SUFFIXES"]

PHOTO_SUFFIXES = (".jpg", ".jpeg")
_XMP = re.compile(rb'drone-dji:(\w+)="([^"]*)"')
_XMP_ELEM = re.compile(rb"<drone-dji:(\w+)>([^<]*)</drone-dji:")
_DMS = re.compile(
    r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:deg|°)?\s*(?:(\d+(?:\.\d+)?)\s*['′])?\s*(?:(\d+(?:\.\d+)?)\s*(?:\"|''|″))?\s*([NSEWnsew])?\s*$"
)
_HEAD_BYTES = 256 * 1024  # XMP sits in APP1 near the start of the file


def parse_dms(text) -> float:
    """Degrees from ``8 deg 17' 39.30" S``, ``115°27'42.59"E``, ``-8.2942`` (NaN if unparseable).

    Example:
        >>> round(parse_dms('8 deg 17\\' 39.30" S'), 6)
        -8.29425
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return float("nan")
    if isinstance(text, (int, float, np.number)):
        return float(text)
    m = _DMS.match(str(text))
    if not m:
        return float("nan")
    deg, minutes, seconds, hemi = m.groups()
    value = abs(float(deg)) + float(minutes or 0) / 60 + float(seconds or 0) / 3600
    negative = float(deg) < 0 or (hemi or "").upper() in ("S", "W")
    return -value if negative else value


def is_exiftool_csv_header(head: str) -> bool:
    first = head.splitlines()[0] if head else ""
    return "GPSLatitude" in first and ("SourceFile" in first or "FileName" in first)


def _exif_time(text) -> dt.datetime | None:
    if not text:
        return None
    text = str(text).strip().split("+")[0]
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y:%m:%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _float(value) -> float:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return float("nan")


def read_photo_meta(path: str | Path) -> dict[str, object]:
    """Position, attitude, time and intrinsics of one DJI JPEG (NaN/None where absent).

    Raises:
        TelemetryError: not a readable JPEG.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
        from PIL import Image, UnidentifiedImageError

        with Image.open(path) as im:
            width, height = im.size
            exif = im.getexif()
    except (OSError, UnidentifiedImageError) as exc:
        raise TelemetryError(path, f"not a readable JPEG: {exc}") from exc
    xmp = {k.decode(): v.decode("utf-8", "replace") for k, v in _XMP.findall(head)}
    xmp.update({k.decode(): v.decode("utf-8", "replace") for k, v in _XMP_ELEM.findall(head)})
    gps = exif.get_ifd(0x8825) if exif else {}
    sub = exif.get_ifd(0x8769) if exif else {}

    def exif_deg(value_key: int, ref_key: int) -> float:
        v = gps.get(value_key)
        if not v:
            return float("nan")
        d = float(v[0]) + float(v[1]) / 60 + float(v[2]) / 3600
        return -d if str(gps.get(ref_key, "")).upper() in ("S", "W") else d

    lat, lon = exif_deg(2, 1), exif_deg(4, 3)
    if not np.isfinite(lat) and "GpsLatitude" in xmp:
        lat, lon = _float(xmp.get("GpsLatitude")), _float(xmp.get("GpsLongitude", xmp.get("GpsLongtitude")))
    alt = _float(xmp.get("AbsoluteAltitude", gps.get(6, "nan")))
    utc = _exif_time(xmp.get("UTCAtExposure"))
    return {
        "image": str(path), "lat": lat, "lon": lon,
        "rel_alt_m": _float(xmp.get("RelativeAltitude")), "abs_alt_m": alt,
        "gimbal_yaw_deg": _float(xmp.get("GimbalYawDegree")), "gimbal_pitch_deg": _float(xmp.get("GimbalPitchDegree")),
        "gimbal_roll_deg": _float(xmp.get("GimbalRollDegree")), "yaw_deg": _float(xmp.get("FlightYawDegree")),
        "pitch_deg": _float(xmp.get("FlightPitchDegree")), "roll_deg": _float(xmp.get("FlightRollDegree")),
        "speed_m_s": float(np.hypot(_float(xmp.get("FlightXSpeed")), _float(xmp.get("FlightYSpeed")))),
        "utc": utc.replace(tzinfo=dt.timezone.utc) if utc else None,
        "local_time": _exif_time(sub.get(36867) or exif.get(306) if exif else None),
        "image_width_px": width, "image_height_px": height,
        "focal_len_35mm": _float(sub.get(41989)) if sub.get(41989) else float("nan"),
        "calibrated_focal_px": _float(xmp.get("CalibratedFocalLength")),
        "calibrated_cx_px": _float(xmp.get("CalibratedOpticalCenterX")),
        "calibrated_cy_px": _float(xmp.get("CalibratedOpticalCenterY")),
    }


def _rows_to_track(rows: list[dict], source: Path, fmt: str, warnings: list[str]) -> Track:
    ok = [r for r in rows if np.isfinite(r["lat"]) and np.isfinite(r["lon"]) and abs(r["lat"]) <= 90
          and abs(r["lon"]) <= 180 and not (r["lat"] == 0 and r["lon"] == 0)]
    if len(ok) < len(rows):
        warnings.append(f"{len(rows) - len(ok)} of {len(rows)} photos without a GPS position skipped")
    if not ok:
        raise TelemetryError(source, f"none of {len(rows)} photos has a GPS position")
    use_utc = all(r.get("utc") is not None for r in ok)
    stamps = [s for s in (r["utc"] if use_utc else r.get("local_time") for r in ok) if s is not None]
    start = None
    if len(stamps) == len(ok):
        t0 = min(stamps)
        time_s = np.array([(s - t0).total_seconds() for s in stamps])
        start = t0 if use_utc else None
    else:
        time_s = np.arange(len(ok), dtype=float)
        warnings.append("photos without capture time: ordered as listed, 1 s apart")
    skip = {"utc", "local_time"}
    cols = {k: np.array([r[k] for r in ok], dtype=object if k == "image" else float)
            for k in ok[0] if k not in skip}
    cols["time_s"] = time_s
    return make_track(cols, source=source, format=fmt, start_utc=start, warnings=warnings)


def read_photo_dir(path: str | Path) -> Track:
    """One Track row per geotagged JPEG in a directory (not recursive), or for a single JPEG."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not files:
        raise TelemetryError(path, "no JPEG photos found")
    warnings: list[str] = []
    rows = []
    for f in files:
        try:
            rows.append(read_photo_meta(f))
        except TelemetryError as exc:
            warnings.append(str(exc))
    if not rows:
        raise TelemetryError(path, "no readable JPEG photos")
    return _rows_to_track(rows, path, "photo-exif", warnings)


def read_exiftool_csv(path: str | Path) -> Track:
    """Read an ``exiftool -csv`` export of drone photos (DMS or decimal positions)."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TelemetryError(path, f"not a readable exiftool CSV: {exc}") from exc
    df.columns = [c.strip().split(":")[-1] for c in df.columns]  # "XMP:GimbalPitchDegree" -> ...
    if "GPSLatitude" not in df or "GPSLongitude" not in df:
        raise TelemetryError(path, "exiftool CSV without GPSLatitude/GPSLongitude columns")

    def col(*names: str) -> list:
        for n in names:
            if n in df:
                return df[n].tolist()
        return [""] * len(df)

    def num(*names: str) -> list[float]:
        return [_float(v) for v in col(*names)]

    lat = [parse_dms(v) for v in col("GPSLatitude")]
    lon = [parse_dms(v) for v in col("GPSLongitude")]
    for i, ref in enumerate(col("GPSLatitudeRef")):
        if str(ref).strip().upper().startswith("S") and lat[i] > 0:
            lat[i] = -lat[i]
    for i, ref in enumerate(col("GPSLongitudeRef")):
        if str(ref).strip().upper().startswith("W") and lon[i] > 0:
            lon[i] = -lon[i]
    warnings: list[str] = []
    gimbal_yaw = num("GimbalYawDegree")
    flight_yaw = num("FlightYawDegree")
    if "GimbalYawDegree" not in df and "FlightYawDegree" in df:
        gimbal_yaw = flight_yaw
        warnings.append("no GimbalYawDegree column: gimbal yaw taken from FlightYawDegree")
    images = col("SourceFile", "FileName")
    utc = [_exif_time(v) for v in col("UTCAtExposure")]
    local = [_exif_time(v) for v in col("DateTimeOriginal", "CreateDate")]
    abs_alt = num("AbsoluteAltitude", "GPSAltitude")
    columns: dict[str, list] = {
        "image": images, "lat": lat, "lon": lon, "rel_alt_m": num("RelativeAltitude"), "abs_alt_m": abs_alt,
        "gimbal_yaw_deg": gimbal_yaw, "gimbal_pitch_deg": num("GimbalPitchDegree"),
        "gimbal_roll_deg": num("GimbalRollDegree"), "yaw_deg": flight_yaw, "pitch_deg": num("FlightPitchDegree"),
        "roll_deg": num("FlightRollDegree"),
        "utc": [u.replace(tzinfo=dt.timezone.utc) if u else None for u in utc], "local_time": local,
        "image_width_px": num("ImageWidth", "ExifImageWidth"), "image_height_px": num("ImageHeight", "ExifImageHeight"),
        "focal_len_35mm": num("FocalLengthIn35mmFormat"), "calibrated_focal_px": num("CalibratedFocalLength"),
        "calibrated_cx_px": num("CalibratedOpticalCenterX"), "calibrated_cy_px": num("CalibratedOpticalCenterY"),
    }
    rows = [{k: v[i] for k, v in columns.items()} for i in range(len(df))]
    if not rows:
        raise TelemetryError(path, "exiftool CSV has no rows")
    return _rows_to_track(rows, path, "exiftool-csv", warnings)
