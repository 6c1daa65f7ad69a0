"""The case ledger: a real GeoPackage, versioned, transactional, and safe against kill -9."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely
from cases_fixtures import LAT0, LON0, square
from hypothesis import given, settings
from hypothesis import strategies as st

from tuban import LedgerError
from tuban.pipelines.ledger import SCHEMA_VERSION, gpkg_blob, open_ledger, parse_gpkg_blob


def _fill(path: Path, n: int, *, dispatched: bool = True) -> list[str]:
    """n cases with one dispatched task each, inserted straight through the ledger API."""
    ids = []
    with open_ledger(path, create=True) as led, led.transaction():
        for i in range(n):
            lon, lat = LON0 + (i % 100) * 0.002, LAT0 + (i // 100) * 0.002
            cid = led.next_case_id("350181")
            led.insert_case({"case_id": cid, "kind": "new_pond", "status": "dispatched" if dispatched else "open",
                             "score": 0.8, "lon": lon, "lat": lat, "area_m2": 3600.0, "area_mu": 5.4},
                            square(lon, lat, 60))
            led.conn.execute("INSERT INTO tasks (task_id, case_id, status, dispatched_at) VALUES (?, ?, 'dispatched', ?)",
                             (f"{cid}-T1", cid, "2026-01-01T00:00:00Z"))
            ids.append(cid)
    return ids


def test_ledger_is_a_geopackage_qgis_and_gdal_can_read(tmp_path):
    path = tmp_path / "tuban.gpkg"
    _fill(path, 3, dispatched=False)
    layers = dict(pyogrio.list_layers(path))
    assert layers["cases"] == "MultiPolygon"
    assert {"evidence", "tasks", "verdicts", "events", "runs", "meta"} <= set(layers)
    cases = gpd.read_file(path, layer="cases")
    assert cases.crs.to_epsg() == 4326 and len(cases) == 3
    assert list(cases["case_id"]) == ["350181-00001", "350181-00002", "350181-00003"]
    c = cases.geometry.iloc[0].centroid
    assert abs(c.x - LON0) < 1e-6 and abs(c.y - LAT0) < 1e-6
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


@given(st.lists(st.tuples(st.floats(-179, 179), st.floats(-89, 89)), min_size=3, max_size=12))
@settings(max_examples=40, deadline=None)
def test_gpkg_blob_round_trips_any_polygon(points):
    geom = shapely.MultiPoint(points).convex_hull
    back = parse_gpkg_blob(gpkg_blob(geom))
    assert back.equals_exact(geom, 0.0)
    assert gpkg_blob(geom)[:2] == b"GP"


def test_empty_geometry_and_null_round_trip():
    assert parse_gpkg_blob(gpkg_blob(None)) is None
    assert parse_gpkg_blob(gpkg_blob(shapely.Polygon())).is_empty


def test_refuses_missing_foreign_and_newer_files(tmp_path):
    with pytest.raises(LedgerError, match="not found"):
        open_ledger(tmp_path / "nope.gpkg")
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="not a tuban ledger"):
        open_ledger(junk, create=True)
    other = tmp_path / "other.gpkg"
    sqlite3.connect(other).execute("CREATE TABLE x (a)").connection.commit()
    with pytest.raises(LedgerError, match="no meta table"):
        open_ledger(other, create=True)
    newer = tmp_path / "newer.gpkg"
    open_ledger(newer, create=True).close()
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="schema version 99"):
        open_ledger(newer)


def test_a_failing_transaction_changes_nothing(tmp_path):
    path = tmp_path / "l.gpkg"
    _fill(path, 2)
    with open_ledger(path) as led:
        with pytest.raises(RuntimeError), led.transaction():
            led.set_status("350181-00001", "closed", "closed", detail="x")
            raise RuntimeError("boom")
        assert led.case("350181-00001")["status"] == "dispatched"
        assert led.rows("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0
        with pytest.raises(LedgerError, match="unknown case"):
            led.case("350181-99999")


_IMPORT = "from tuban.pipelines.tasks_import import import_verdicts; import_verdicts({src!r}, {led!r})"


def _csv(path: Path, ids: list[str], verdict: str) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["task_id", "verdict", "verified_by", "verified_at", "note"])
        for cid in ids:
            w.writerow([f"{cid}-T1", verdict, "张三", "2026-01-02T10:00:00+08:00", "ok"])
    return path


@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_big_import_loses_nothing(tmp_path):
    path = tmp_path / "l.gpkg"
    ids = _fill(path, 1500)
    # 10 verdicts accepted first: they must survive whatever happens next.
    done = subprocess.run([sys.executable, "-c", _IMPORT.format(src=str(_csv(tmp_path / "a.csv", ids[:10], "legal")),
                                                                 led=str(path))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    big = _csv(tmp_path / "b.csv", ids[10:], "confirmed_illegal")
    journal = Path(str(path) + "-journal")
    proc = subprocess.Popen([sys.executable, "-c", _IMPORT.format(src=str(big), led=str(path))])
    deadline = time.monotonic() + 120
    while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.05)  # well inside the transaction: some rows written to the pages
    assert proc.poll() is None, "import finished before it could be killed; make it bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert journal.exists()  # a hot journal: the interrupted transaction is rolled back on open
    with open_ledger(path) as led:
        assert led.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n = led.rows("SELECT COUNT(*) AS n FROM verdicts")[0]["n"]
        assert n == 10
        statuses = dict(led.conn.execute("SELECT status, COUNT(*) FROM cases GROUP BY status").fetchall())
        assert statuses == {"dismissed": 10, "dispatched": 1490}
    # Re-running the interrupted command completes it.
    again = subprocess.run([sys.executable, "-c", _IMPORT.format(src=str(big), led=str(path))],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    with open_ledger(path) as led:
        assert led.rows("SELECT COUNT(*) AS n FROM verdicts")[0]["n"] == 1500
        assert led.rows("SELECT COUNT(*) AS n FROM cases WHERE status = 'confirmed'")[0]["n"] == 1490


def test_writes_still_work_after_qgis_adds_a_spatial_index(tmp_path):
    """QGIS/GDAL "create spatial index" adds R-tree triggers calling ST_MinX & co."""
    path = tmp_path / "l.gpkg"
    _fill(path, 2)
    conn = sqlite3.connect(path)
    conn.executescript("""
    CREATE VIRTUAL TABLE rtree_cases_geom USING rtree(id, minx, maxx, miny, maxy);
    CREATE TRIGGER rtree_cases_geom_update2 AFTER UPDATE OF geom ON cases
      WHEN OLD.fid = NEW.fid AND (NEW.geom NOTNULL AND NOT ST_IsEmpty(NEW.geom))
    BEGIN INSERT OR REPLACE INTO rtree_cases_geom VALUES (NEW.fid, ST_MinX(NEW.geom), ST_MaxX(NEW.geom),
          ST_MinY(NEW.geom), ST_MaxY(NEW.geom)); END;
    """)
    conn.close()
    with open_ledger(path) as led, led.transaction():
        led.update_case("350181-00001", geometry=square(LON0, LAT0, 100), kind="moved")
    conn = sqlite3.connect(path)
    minx, maxx = conn.execute("SELECT minx, maxx FROM rtree_cases_geom").fetchone()
    assert minx < LON0 < maxx


def test_reopen_refuses_a_dispatched_case_unless_its_pack_was_lost(tmp_path, runner):
    from tuban.cli import app
    from tuban.pipelines.cases import close_case, list_cases

    path = tmp_path / "tuban.gpkg"
    a, b = _fill(path, 2)
    r = runner.invoke(app, ["cases", "reopen", a, "--ledger", str(path)])
    assert r.exit_code == 1 and r.output.startswith("Error:") and "dispatched" in r.output and "--pack-lost" in r.output
    assert list_cases(path).set_index("case_id").at[a, "status"] == "dispatched"  # unchanged
    r = runner.invoke(app, ["cases", "reopen", a, "--ledger", str(path), "--pack-lost"])
    assert r.exit_code == 0 and "dispatched -> open" in r.output
    r = runner.invoke(app, ["cases", "reopen", a, "--ledger", str(path)])
    assert r.exit_code == 1 and "already open" in r.output
    close_case(path, b, "pond filled in")
    r = runner.invoke(app, ["cases", "reopen", b, "--ledger", str(path)])
    assert r.exit_code == 0 and "closed -> open" in r.output


def test_cases_list_never_truncates_the_case_id_at_80_columns(tmp_path, runner):
    from tuban.cli import app, out

    path = tmp_path / "tuban.gpkg"
    ids = _fill(path, 3)
    assert out.width == 80  # CliRunner is not a terminal: rich's default width
    r = runner.invoke(app, ["cases", "list", "--ledger", str(path)])
    assert r.exit_code == 0, r.output
    assert all(cid in r.stdout for cid in ids) and "…" not in r.stdout
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
    assert "dispatched" in r.stdout and "new_pond" in r.stdout
