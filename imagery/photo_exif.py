"""Position and time of a photo from its EXIF (GPS IFD, DateTimeOriginal, OffsetTimeOriginal).

Reads only the metadata (Pillow parses the header; pixels are never decoded), so it is cheap
and safe on untrusted files. Returns None fields when a tag is missing or malformed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from PIL import Image, UnidentifiedImageError

__all__ = ["PhotoMeta", "read_photo_meta"]

_GPS_IFD = 0x8825
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_OFFSET_TIME_ORIGINAL = 0x9011
_DATETIME = 0x0132


@dataclass(frozen=True)
class PhotoMeta:
    """What EXIF says about where and when a photo was taken.

    Args:
        lon_deg, lat_deg: WGS84 position, or None.
        taken: the shot time; timezone-aware when the photo records its UTC offset.
    """

    lon_deg: float | None = None
    lat_deg: float | None = None
    taken: datetime | None = None


def _deg(dms: Any, ref: object) -> float | None:
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60.0 + s / 3600.0
    return -value if str(ref).strip().upper() in ("S", "W") else value


def _time(text: object, offset: object) -> datetime | None:
    try:
        t = datetime.strptime(str(text).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    off = str(offset or "").strip("\x00 ")
    if len(off) == 6 and off[0] in "+-" and off[3] == ":":
        try:
            delta = timedelta(hours=int(off[1:3]), minutes=int(off[4:6]))
        except ValueError:
            return t
        return t.replace(tzinfo=timezone(delta if off[0] == "+" else -delta))
    return t


_EXIF_IMAGE_MAGIC = (b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"\x89PNG", b"RIFF")


def read_photo_meta(data: bytes) -> PhotoMeta:
    """EXIF position and shot time of an image given as bytes (never raises on bad images)."""
    if not data.startswith(_EXIF_IMAGE_MAGIC):
        # Not JPEG/TIFF/PNG/WebP: no EXIF to read. Checked first because ultralytics, when imported
        # in the same process, patches PIL.Image.open to try optional HEIF plugins on unknown data.
        return PhotoMeta()
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif()
            gps = exif.get_ifd(_GPS_IFD)
            sub = exif.get_ifd(_EXIF_IFD)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, ImportError, Image.DecompressionBombError):
        return PhotoMeta()
    lat = _deg(gps.get(2), gps.get(1)) if gps.get(2) is not None else None
    lon = _deg(gps.get(4), gps.get(3)) if gps.get(4) is not None else None
    if lat is not None and not -90 <= lat <= 90 or lon is not None and not -180 <= lon <= 180:
        lat = lon = None
    taken = _time(sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME), sub.get(_OFFSET_TIME_ORIGINAL))
    return PhotoMeta(lon_deg=lon, lat_deg=lat, taken=taken)
