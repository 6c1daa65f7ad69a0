"""The case ledger: one GeoPackage file holding every case from detection to closure.

The ledger is a plain GeoPackage (SQLite, opens in QGIS) written with :mod:`sqlite3` directly:

- ``cases``     feature table (registered in ``gpkg_contents`` / ``gpkg_geometry_columns``,
                geometry as GeoPackage binary = GP header + WKB, EPSG:4326)
- ``evidence``  what supports a case: patches, detections, drone frames (one row each)
- ``tasks``     one row per dispatch of a case to a grid officer (task packs)
- ``verdicts``  every verdict ever imported, never deleted (the verdict history)
- ``events``    the status history of every case (who/what changed it, when)
- ``runs``      one row per command that changed the ledger, with its inputs
- ``meta``      ``schema_version`` and creation info

Every mutation runs inside :meth:`Ledger.transaction` (``BEGIN IMMEDIATE`` ... ``COMMIT``) with
a rollback journal and ``synchronous=FULL``: a crash or ``kill -9`` in the middle of a command
leaves the file as it was before the command, and a committed verdict is never lost.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import struct
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely

from tuban import LedgerError
from tuban.imagery.crs import WGS84

__all__ = [
    "SCHEMA_VERSION",
    "CASE_COLUMNS",
    "Ledger",
    "open_ledger",
    "utc_now",
    "gpkg_blob",
    "as_multipolygon",
    "parse_gpkg_blob",
]

SCHEMA_VERSION = 1
_GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"
_GPKG_USER_VERSION = 10300  # GeoPackage 1.3

#: Attribute columns of the ``cases`` feature table, in order, with their SQL types.
CASE_COLUMNS: dict[str, str] = {
    "case_id": "TEXT NOT NULL UNIQUE",
    "kind": "TEXT",
    "status": "TEXT NOT NULL",
    "priority": "INTEGER",
    "score": "REAL",
    "area_m2": "REAL",
    "area_mu": "REAL",
    "lon": "REAL",
    "lat": "REAL",
    "admin_code": "TEXT",
    "grid_id": "TEXT",
    "grid_name": "TEXT",
    "officer": "TEXT",
    "phone": "TEXT",
    "before_date": "TEXT",
    "after_date": "TEXT",
    "raster_before": "TEXT",
    "raster_after": "TEXT",
    "n_patches": "INTEGER DEFAULT 0",
    "n_detections": "INTEGER DEFAULT 0",
    "n_frames": "INTEGER DEFAULT 0",
    "protected": "INTEGER DEFAULT 0",
    "verdict": "TEXT",
    "verified_at": "TEXT",
    "review_flag": "INTEGER DEFAULT 0",
    "review_reason": "TEXT",
    "closed_reason": "TEXT",
    "watch_water_fraction": "REAL",
    "first_run": "INTEGER",
    "last_run": "INTEGER",
    "created_at": "TEXT",
    "updated_at": "TEXT",
}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
  srs_name TEXT NOT NULL, srs_id INTEGER NOT NULL PRIMARY KEY, organization TEXT NOT NULL,
  organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
CREATE TABLE IF NOT EXISTS gpkg_contents (
  table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
  description TEXT DEFAULT '', last_change DATETIME NOT NULL
    DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
  CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (
  table_name TEXT NOT NULL, column_name TEXT NOT NULL, geometry_type_name TEXT NOT NULL,
  srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
  CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
  CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cases (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB,
  {", ".join(f"{k} {v}" for k, v in CASE_COLUMNS.items())});
CREATE TABLE IF NOT EXISTS evidence (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL, kind TEXT NOT NULL,
  source_id TEXT NOT NULL, path TEXT, rank_key REAL, properties TEXT, run_id INTEGER,
  UNIQUE (case_id, kind, source_id));
CREATE TABLE IF NOT EXISTS tasks (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL UNIQUE, case_id TEXT NOT NULL,
  pack_id TEXT, status TEXT NOT NULL, dispatched_at TEXT, returned_at TEXT, run_id INTEGER);
CREATE TABLE IF NOT EXISTS verdicts (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, digest TEXT NOT NULL UNIQUE, task_id TEXT NOT NULL,
  case_id TEXT NOT NULL, verdict TEXT NOT NULL, verified_by TEXT, verified_at TEXT,
  note TEXT, photos TEXT, lon REAL, lat REAL, flags TEXT, source TEXT, imported_at TEXT,
  run_id INTEGER);
CREATE TABLE IF NOT EXISTS events (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT NOT NULL, at TEXT NOT NULL,
  event TEXT NOT NULL, from_status TEXT, to_status TEXT, detail TEXT, run_id INTEGER);
CREATE TABLE IF NOT EXISTS runs (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, digest TEXT, started_at TEXT,
  finished_at TEXT, inputs TEXT, counts TEXT, tuban_version TEXT);
CREATE INDEX IF NOT EXISTS idx_evidence_case ON evidence(case_id);
CREATE INDEX IF NOT EXISTS idx_tasks_case ON tasks(case_id);
CREATE INDEX IF NOT EXISTS idx_verdicts_case ON verdicts(case_id);
CREATE INDEX IF NOT EXISTS idx_events_case ON events(case_id);
CREATE INDEX IF NOT EXISTS idx_runs_digest ON runs(kind, digest);
"""

_WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
    'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AUTHORITY["EPSG","4326"]]'
)
_ATTRIBUTE_TABLES = ("evidence", "tasks", "verdicts", "events", "runs", "meta")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z`` suffix (second precision)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def gpkg_blob(geom: Any, srs_id: int = 4326) -> bytes | None:
    """GeoPackage binary geometry: ``GP`` header, little-endian, XY envelope, then WKB.

    Example:
        >>> gpkg_blob(shapely.Point(1, 2))[:2]
        b'GP'
    """
    if geom is None:
        return None
    if geom.is_empty:
        flags = 0b00100001  # empty, no envelope, little endian
        return b"GP" + bytes([0, flags]) + struct.pack("<i", srs_id) + shapely.to_wkb(geom, byte_order=1)
    minx, miny, maxx, maxy = geom.bounds
    flags = 0b00000011  # envelope [minx, maxx, miny, maxy], little endian
    header = b"GP" + bytes([0, flags]) + struct.pack("<i", srs_id)
    envelope = struct.pack("<4d", minx, maxx, miny, maxy)
    return header + envelope + shapely.to_wkb(geom, byte_order=1, output_dimension=2)


def as_multipolygon(geom: Any) -> Any:
    """The polygonal part of ``geom`` as a MultiPolygon (the declared type of ``cases.geom``)."""
    if geom is None or geom.geom_type == "MultiPolygon":
        return geom
    if geom.geom_type == "Polygon":
        return shapely.MultiPolygon([geom])
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    polys = [p for g in parts for p in (g.geoms if g.geom_type == "MultiPolygon" else [g])]
    if not polys:
        raise LedgerError(f"case geometry must be polygonal, got {geom.geom_type}")
    return shapely.MultiPolygon(polys)


def parse_gpkg_blob(blob: bytes | None) -> Any:
    """The shapely geometry of a GeoPackage binary geometry (None for NULL)."""
    if blob is None:
        return None
    if blob[:2] != b"GP":
        raise LedgerError("geometry blob is not GeoPackage binary")
    flags = blob[3]
    envelope_len = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}.get((flags >> 1) & 0b111)
    if envelope_len is None:
        raise LedgerError("geometry blob has an invalid envelope code")
    return shapely.from_wkb(bytes(blob[8 + envelope_len:]))


class Ledger:
    """An open case ledger. Use :func:`open_ledger`; close it (or use ``with``) when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of change: everything inside commits together or not at all."""
        if self.conn.in_transaction:
            raise LedgerError(f"{self.path}: nested ledger transaction")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- generic rows -----------------------------------------------------------------------

    def rows(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    # -- cases --------------------------------------------------------------------------------

    def case(self, case_id: str) -> dict[str, Any]:
        """One case as a dict (``geometry`` is shapely); LedgerError if unknown."""
        found = self.rows("SELECT * FROM cases WHERE case_id = ?", (case_id,))
        if not found:
            raise LedgerError(f"{self.path}: unknown case id {case_id!r}")
        row = found[0]
        row["geometry"] = parse_gpkg_blob(row.pop("geom"))
        return row

    def cases(self, where: str = "", params: tuple | list = ()) -> gpd.GeoDataFrame:
        """Cases as a GeoDataFrame (EPSG:4326), optionally filtered by an SQL ``where`` clause."""
        sql = "SELECT * FROM cases" + (f" WHERE {where}" if where else "") + " ORDER BY case_id"
        rows = self.rows(sql, params)
        geoms = [parse_gpkg_blob(r.pop("geom")) for r in rows]
        columns = ["fid", *CASE_COLUMNS]
        return gpd.GeoDataFrame(rows, columns=columns, geometry=gpd.GeoSeries(geoms, crs=WGS84), crs=WGS84)

    def insert_case(self, record: dict[str, Any], geometry: Any) -> None:
        unknown = set(record) - set(CASE_COLUMNS)
        if unknown:
            raise LedgerError(f"unknown case fields {sorted(unknown)}")
        cols = ["geom", *record]
        sql = f"INSERT INTO cases ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        self.conn.execute(sql, [gpkg_blob(as_multipolygon(geometry)), *record.values()])

    def update_case(self, case_id: str, geometry: Any = None, **fields: Any) -> None:
        unknown = set(fields) - set(CASE_COLUMNS)
        if unknown:
            raise LedgerError(f"unknown case fields {sorted(unknown)}")
        sets = [f"{k} = ?" for k in fields]
        values = list(fields.values())
        if geometry is not None:
            sets.append("geom = ?")
            values.append(gpkg_blob(as_multipolygon(geometry)))
        if not sets:
            return
        cur = self.conn.execute(f"UPDATE cases SET {', '.join(sets)} WHERE case_id = ?", [*values, case_id])
        if cur.rowcount != 1:
            raise LedgerError(f"{self.path}: unknown case id {case_id!r}")

    def set_status(self, case_id: str, status: str, event: str, *, detail: str = "",
                   run_id: int | None = None, at: str | None = None, **fields: Any) -> None:
        """Change a case's status and record the change in ``events``."""
        at = at or utc_now()
        before = self.conn.execute("SELECT status FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        if before is None:
            raise LedgerError(f"{self.path}: unknown case id {case_id!r}")
        self.update_case(case_id, status=status, updated_at=at, **fields)
        self.add_event(case_id, event, before[0], status, detail=detail, run_id=run_id, at=at)

    def add_event(self, case_id: str, event: str, from_status: str | None, to_status: str | None,
                  *, detail: str = "", run_id: int | None = None, at: str | None = None) -> None:
        self.conn.execute(
            "INSERT INTO events (case_id, at, event, from_status, to_status, detail, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (case_id, at or utc_now(), event, from_status, to_status, detail, run_id),
        )

    def next_case_id(self, prefix: str) -> str:
        """The next free id ``PREFIX-NNNNN`` (prefix: a 6-digit admin code)."""
        row = self.conn.execute(
            "SELECT MAX(CAST(substr(case_id, length(?) + 2) AS INTEGER)) FROM cases "
            "WHERE case_id LIKE ? || '-%'", (prefix, prefix)).fetchone()
        return f"{prefix}-{(row[0] or 0) + 1:05d}"

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, kind: str, *, digest: str | None = None, inputs: dict | None = None) -> int:
        from tuban import __version__

        cur = self.conn.execute(
            "INSERT INTO runs (kind, digest, started_at, inputs, tuban_version) VALUES (?, ?, ?, ?, ?)",
            (kind, digest, utc_now(), json.dumps(inputs or {}, ensure_ascii=False), __version__),
        )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, counts: dict) -> None:
        self.conn.execute("UPDATE runs SET finished_at = ?, counts = ? WHERE fid = ?",
                          (utc_now(), json.dumps(counts, ensure_ascii=False), run_id))

    def run_with_digest(self, kind: str, digest: str) -> dict[str, Any] | None:
        found = self.rows("SELECT * FROM runs WHERE kind = ? AND digest = ? AND finished_at IS NOT NULL",
                          (kind, digest))
        return found[0] if found else None

    def touch_extent(self) -> None:
        """Refresh the ``cases`` extent in ``gpkg_contents`` (QGIS zooms to it)."""
        rows = self.conn.execute("SELECT geom FROM cases WHERE geom IS NOT NULL").fetchall()
        bounds = [parse_gpkg_blob(r[0]).bounds for r in rows]
        bounds = [b for b in bounds if all(v == v for v in b)]
        if bounds:
            ext = (min(b[0] for b in bounds), min(b[1] for b in bounds),
                   max(b[2] for b in bounds), max(b[3] for b in bounds))
        else:
            ext = (None, None, None, None)
        self.conn.execute(
            "UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ?, last_change = ? "
            "WHERE table_name = 'cases'", (*ext, utc_now()))


def _envelope(blob: bytes | None, index: int) -> float | None:
    geom = parse_gpkg_blob(blob) if blob is not None else None
    return None if geom is None or geom.is_empty else float(geom.bounds[index])


def _register_gpkg_functions(conn: sqlite3.Connection) -> None:
    """SQL functions the GeoPackage R-tree triggers call (QGIS/GDAL add them on "create spatial
    index"); without them any later write by tuban would fail with ``no such function``."""
    for name, index in (("ST_MinX", 0), ("ST_MinY", 1), ("ST_MaxX", 2), ("ST_MaxY", 3)):
        conn.create_function(name, 1, lambda b, i=index: _envelope(b, i), deterministic=True)
    conn.create_function("ST_IsEmpty", 1,
                         lambda b: None if b is None else int(parse_gpkg_blob(b).is_empty), deterministic=True)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
    _register_gpkg_functions(conn)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"PRAGMA application_id = {_GPKG_APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {_GPKG_USER_VERSION}")
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.executemany(
            "INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)",
            [("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian"),
             ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic"),
             ("WGS 84 geodetic", 4326, "EPSG", 4326, _WGS84_WKT, "longitude/latitude WGS 84")])
        conn.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, "
                     "description, srs_id) VALUES ('cases', 'features', 'cases', "
                     "'tuban cases (图斑), one row per place', 4326)")
        conn.execute("INSERT OR IGNORE INTO gpkg_geometry_columns VALUES "
                     "('cases', 'geom', 'MULTIPOLYGON', 4326, 0, 0)")
        for table in _ATTRIBUTE_TABLES:
            conn.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
                         "VALUES (?, 'attributes', ?)", (table, table))
        conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                         [("schema_version", str(SCHEMA_VERSION)), ("created_at", utc_now()),
                          ("application", "tuban case ledger")])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def open_ledger(path: str | Path, *, create: bool = False) -> Ledger:
    """Open (or with ``create=True`` create) the ledger at ``path``.

    Raises:
        LedgerError: the file is missing (and not created), not a tuban ledger, or of a newer
            schema version than this tuban understands.
    """
    path = Path(path)
    if not path.exists():
        if not create:
            raise LedgerError(f"{path}: ledger not found (tuban triage creates it)")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = _connect(path)
        has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{path}: not a tuban ledger ({exc})") from None
    if not has_meta:
        if not create or conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
            conn.close()
            raise LedgerError(f"{path}: not a tuban ledger (no meta table)")
        _create(conn)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row and str(row[0]).isdigit() else -1
    if version != SCHEMA_VERSION:
        conn.close()
        raise LedgerError(f"{path}: ledger schema version {version}, this tuban reads {SCHEMA_VERSION}")
    return Ledger(path, conn)
