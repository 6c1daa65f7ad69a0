"""Reading returned task packs safely: GeoJSON, CSV, or a zip with photos.

Nothing in a returned pack is trusted: zip entries with absolute or ``..`` paths or symlinks are
refused, declared and actual sizes are both capped (zip bombs), text must be UTF-8 (CSV may also
be GB18030, as Excel in China writes it), geometries are never built from the file except single
points, and verdict values are checked by name. Errors are :class:`tuban.VectorError` naming the
file and the problem.
"""

from __future__ import annotations

import csv
import io
import json
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tuban import VectorError
from tuban.imagery.gcj02 import gcj02_to_wgs84

__all__ = ["ReadLimits", "ReturnedVerdict", "ReturnedBatch", "read_returned"]

_PHOTO_EXT = (".jpg", ".jpeg", ".png", ".heic", ".tif", ".tiff")


@dataclass(frozen=True)
class ReadLimits:
    """Caps that keep a hostile or broken pack from exhausting memory."""

    max_file_bytes: int = 256 * 2**20
    max_member_bytes: int = 64 * 2**20
    max_total_bytes: int = 512 * 2**20
    max_ratio: float = 200.0
    max_members: int = 10_000
    max_note_chars: int = 10_000


@dataclass(frozen=True)
class ReturnedVerdict:
    """One filled-in task as returned by an officer (nothing validated against the ledger yet)."""

    task_id: str
    verdict: str
    verified_by: str | None = None
    verified_at: str | None = None
    note: str | None = None
    photos: tuple[str, ...] = ()
    lon: float | None = None
    lat: float | None = None
    row: int = 0


@dataclass(frozen=True)
class ReturnedBatch:
    """All rows of a returned file plus the photos shipped with it (by base name)."""

    source: Path
    rows: tuple[ReturnedVerdict, ...]
    blank: int
    photos: dict[str, bytes] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s[:limit] if s else None


def _photos(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list) else str(value).replace(";", ",").split(",")
    return tuple(PurePosixPath(str(x).strip().replace("\\", "/")).name for x in items if str(x).strip())


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


def _row(props: dict[str, Any], point: tuple[float, float] | None, i: int, from_gcj02: bool,
         limits: ReadLimits) -> ReturnedVerdict | None:
    verdict = _text(props.get("verdict"), 100)
    task_id = _text(props.get("task_id"), 200)
    if not verdict:
        return None
    lon, lat = point if point else (None, None)
    if from_gcj02 and lon is not None and lat is not None:
        lon, lat = gcj02_to_wgs84(lon, lat)
    return ReturnedVerdict(task_id=task_id or "", verdict=verdict, verified_by=_text(props.get("verified_by"), 200),
                           verified_at=_text(props.get("verified_at"), 100), note=_text(props.get("note"), limits.max_note_chars),
                           photos=_photos(props.get("photos")), lon=lon, lat=lat, row=i)


def _from_geojson(data: bytes, path: Path, from_gcj02: bool, limits: ReadLimits) -> tuple[list, int]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise VectorError(path, "not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise VectorError(path, f"not valid JSON ({getattr(exc, 'msg', exc)})") from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list):
        raise VectorError(path, "not a GeoJSON FeatureCollection")
    rows, blank = [], 0
    for i, f in enumerate(feats):
        if not isinstance(f, dict) or not isinstance(f.get("properties") or {}, dict):
            raise VectorError(path, f"feature {i} is not a GeoJSON feature")
        geom = f.get("geometry") or {}
        point = None
        # Only a point position is used; polygons (maybe millions of vertices) are never built.
        if isinstance(geom, dict) and geom.get("type") == "Point":
            c = geom.get("coordinates")
            if isinstance(c, list) and len(c) >= 2 and _float(c[0]) is not None and _float(c[1]) is not None:
                point = (float(c[0]), float(c[1]))
        r = _row(f.get("properties") or {}, point, i, from_gcj02, limits)
        if r is None:
            blank += 1
        else:
            rows.append(r)
    return rows, blank


def _from_csv(data: bytes, path: Path, from_gcj02: bool, limits: ReadLimits) -> tuple[list, int, list[str]]:
    warnings = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")
            warnings.append(f"{path}: not UTF-8, read as GB18030")
        except UnicodeDecodeError:
            raise VectorError(path, "not UTF-8 (or GB18030) text") from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "task_id" not in [f.strip() for f in reader.fieldnames]:
            raise VectorError(path, "CSV has no task_id column")
        rows, blank = [], 0
        for i, rec in enumerate(reader):
            props = {(k or "").strip(): v for k, v in rec.items()}
            lon, lat = _float(props.get("lon")), _float(props.get("lat"))
            point = (lon, lat) if lon is not None and lat is not None else None
            r = _row(props, point, i, from_gcj02, limits)
            if r is None:
                blank += 1
            else:
                rows.append(r)
    except csv.Error as exc:
        raise VectorError(path, f"malformed CSV ({exc})") from None
    return rows, blank, warnings


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, limits: ReadLimits) -> bytes:
    cap = min(info.file_size, limits.max_member_bytes)
    with zf.open(info) as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise VectorError(path, f"zip entry {info.filename!r} is larger than it declares (zip bomb?)")
    return data


def _check_zip(zf: zipfile.ZipFile, path: Path, limits: ReadLimits) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise VectorError(path, f"zip has {len(infos)} entries (more than {limits.max_members})")
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise VectorError(path, f"unsafe path in zip: {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise VectorError(path, f"symbolic link in zip: {name!r}")
        if info.file_size > limits.max_member_bytes:
            raise VectorError(path, f"zip entry {name!r} declares {info.file_size} bytes (limit {limits.max_member_bytes})")
        if info.file_size > 2**20 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise VectorError(path, f"zip entry {name!r} compresses {info.file_size / max(info.compress_size, 1):.0f}:1 (zip bomb?)")
        total += info.file_size
    if total > limits.max_total_bytes:
        raise VectorError(path, f"zip declares {total} bytes uncompressed (limit {limits.max_total_bytes})")
    return infos


def _pick_table(infos: list[zipfile.ZipInfo], path: Path) -> zipfile.ZipInfo:
    tables = [i for i in infos if i.filename.lower().endswith((".geojson", ".csv")) and not i.is_dir()]
    for preferred in ("returned.geojson", "returned.csv", "tasks.geojson"):
        hits = [i for i in tables if PurePosixPath(i.filename).name.lower() == preferred]
        if hits:
            return hits[0]
    if len(tables) == 1:
        return tables[0]
    raise VectorError(path, "zip holds no returned.geojson / tasks.geojson / CSV" if not tables
                      else f"zip holds several tables ({', '.join(i.filename for i in tables[:5])}); name one returned.geojson")


def read_returned(path: str | Path, *, from_gcj02: bool = False, limits: ReadLimits = ReadLimits()) -> ReturnedBatch:
    """Read a returned GeoJSON, CSV or zip pack (with photos) without trusting it."""
    path = Path(path)
    if not path.is_file():
        raise VectorError(path, "file not found")
    if path.stat().st_size > limits.max_file_bytes:
        raise VectorError(path, f"file larger than {limits.max_file_bytes // 2**20} MiB")
    photos: dict[str, bytes] = {}
    warnings: list[str] = []
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                infos = _check_zip(zf, path, limits)
                table = _pick_table(infos, path)
                data, name = _read_member(zf, table, path, limits), table.filename
                for info in infos:
                    if info.filename.lower().endswith(_PHOTO_EXT) and not info.is_dir():
                        photos[PurePosixPath(info.filename).name] = _read_member(zf, info, path, limits)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
            raise VectorError(path, f"broken zip ({exc})") from None
        except (NotImplementedError, RuntimeError) as exc:  # encrypted / unsupported compression
            raise VectorError(path, f"unsupported zip ({exc})") from None
    else:
        data, name = path.read_bytes(), path.name
        folder = path.parent
        for sub in (folder, folder / "photos"):
            if sub.is_dir():
                for p in sub.iterdir():
                    if p.suffix.lower() in _PHOTO_EXT and p.is_file() and p.stat().st_size <= limits.max_member_bytes:
                        photos.setdefault(p.name, b"")  # read lazily below, only when referenced
    if name.lower().endswith(".csv"):
        rows, blank, warnings = _from_csv(data, path, from_gcj02, limits)
    else:
        rows, blank = _from_geojson(data, path, from_gcj02, limits)
    if not zipfile.is_zipfile(path):
        wanted = {p for r in rows for p in r.photos}
        for pname in list(photos):
            if pname not in wanted:
                del photos[pname]
                continue
            for sub in (path.parent, path.parent / "photos"):
                if (sub / pname).is_file():
                    photos[pname] = (sub / pname).read_bytes()
                    break
    return ReturnedBatch(source=path, rows=tuple(rows), blank=blank, photos=photos, warnings=tuple(warnings))
