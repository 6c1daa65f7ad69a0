"""One entry point for every telemetry file: ``read_track(path) -> Track``.

The format is sniffed from the content (magic bytes and header text), not trusted from the
suffix: DJI SRT, Airdata CSV, DJI OSD-style CSV, GPX, PX4 ULog, exiftool CSV of photos, a
geotagged JPEG or a directory of them. ``format=`` forces a parser.
"""

from __future__ import annotations

from pathlib import Path

from tuban import TelemetryError
from tuban.imagery.flightlog import (
    is_airdata_header,
    is_osd_header,
    read_airdata_csv,
    read_gpx,
    read_log_text,
    read_osd_csv,
)
from tuban.imagery.photo_meta import is_exiftool_csv_header, read_exiftool_csv, read_photo_dir
from tuban.imagery.srt import looks_like_srt, read_srt
from tuban.imagery.track import Track
from tuban.imagery.ulog import ULOG_MAGIC, read_ulog

__all__ = ["read_track", "sniff_format", "TELEMETRY_FORMATS"]

TELEMETRY_FORMATS = ("srt", "airdata", "osd", "gpx", "ulog", "exiftool-csv", "photo")
_SNIFF_BYTES = 64 * 1024


def sniff_format(path: str | Path) -> str:
    """The telemetry format of ``path`` (one of ``TELEMETRY_FORMATS``).

    Raises:
        TelemetryError: missing, empty, or not a format tuban reads.
    """
    path = Path(path)
    if path.is_dir():
        return "photo"
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise TelemetryError(path, f"cannot read: {exc.strerror or exc}") from exc
    if not head.strip():
        raise TelemetryError(path, "empty telemetry file")
    if head.startswith(ULOG_MAGIC[:4]):
        return "ulog"
    if head.startswith(b"\xff\xd8\xff"):
        return "photo"
    text = head.replace(b"\x00", b"").decode("utf-8", errors="replace").lstrip("\ufeff")
    low = text.lower()
    if "<gpx" in low:
        return "gpx"
    if is_osd_header(text):
        return "osd"
    if is_airdata_header(text):
        return "airdata"
    if is_exiftool_csv_header(text):
        return "exiftool-csv"
    if looks_like_srt(text):
        return "srt"
    if path.suffix.lower() == ".srt":
        return "srt"  # let the SRT parser say precisely what is wrong with it
    raise TelemetryError(path, "unknown telemetry format (expected DJI SRT, Airdata/DJI CSV, GPX, "
                               "PX4 ULog, exiftool CSV or geotagged JPEGs)")


def read_track(path: str | Path, *, format: str | None = None) -> Track:
    """Read any supported telemetry file into a :class:`Track`.

    Args:
        path: the file (or a directory of geotagged JPEGs).
        format: force a parser (one of ``TELEMETRY_FORMATS``) instead of sniffing.

    Raises:
        TelemetryError: unknown format or a file its parser cannot use.
    """
    path = Path(path)
    if not path.exists():
        raise TelemetryError(path, "no such file")
    kind = format or sniff_format(path)
    if kind == "srt":
        return read_srt(path)
    if kind == "ulog":
        return read_ulog(path)
    if kind == "photo":
        return read_photo_dir(path)
    if kind == "exiftool-csv":
        return read_exiftool_csv(path)
    if kind in ("gpx", "osd", "airdata"):
        text = read_log_text(path)
        reader = {"gpx": read_gpx, "osd": read_osd_csv, "airdata": read_airdata_csv}[kind]
        return reader(path, text)
    raise TelemetryError(path, f"unknown telemetry format {kind!r}; choose one of {', '.join(TELEMETRY_FORMATS)}")
