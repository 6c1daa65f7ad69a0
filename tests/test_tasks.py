"""Task packs out and verdicts back: the pack contract, imports, photo checks and safety."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import shapely
from cases_fixtures import (
    LAT0,
    LON0,
    grids_file,
    jpeg_with_exif,
    offset,
    patch_features,
    pond_raster,
    square,
    write_fc,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tuban import LedgerError, VectorError
from tuban.cli import app
from tuban.imagery.gcj02 import wgs84_to_gcj02
from tuban.imagery.vector_io import read_vector
from tuban.pipelines.ledger import open_ledger
from tuban.pipelines.returned import ReadLimits
from tuban.pipelines.tasks_export import TASK_PROPERTIES, ExportSettings, export_packs
from tuban.pipelines.tasks_import import ImportSettings, import_verdicts
from tuban.pipelines.triage import read_patches, triage

WEST = (LON0, LAT0)
EAST = (LON0 + 0.03, LAT0)
DISPATCH = "2026-03-01T00:00:00Z"


@pytest.fixture()
def world(tmp_path):
    """A ledger with 3 cases (2 west, 1 east) triaged from patches naming before/after rasters."""
    centres = [WEST, offset(*WEST, 0, 400), EAST]
    ponds = [square(lon, lat, 80) for lon, lat in centres[:2]]
    pond_raster(tmp_path / "before.tif", ponds, water=False, size_px=200)
    pond_raster(tmp_path / "after.tif", ponds, water=True, size_px=200)
    p = write_fc(tmp_path / "patches.geojson", patch_features(centres),
                 rasters={"before": "before.tif", "after": "after.tif"})
    patches, rasters = read_patches(p)
    ledger = tmp_path / "tuban.gpkg"
    triage(ledger, patches, read_vector(grids_file(tmp_path / "grids.geojson")), rasters=rasters)
    return ledger


def _members(zpath: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zpath) as zf:
        return {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}


def _export(world, tmp_path, **kw) -> list:
    return export_packs(world, tmp_path / "packs", ExportSettings(**kw), now=DISPATCH)


def test_one_pack_per_grid_with_the_contract_files(world, tmp_path):
    packs = _export(world, tmp_path, gcj02=True)
    assert [(p.grid_id, len(p.task_ids)) for p in packs] == [("G-E", 1), ("G-W", 2)]
    files = _members(packs[1].path)
    assert {"tasks.geojson", "tasks.kml", "tasks_gcj02.kml", "tasks_gcj02.txt", "index.html", "manifest.json"} <= set(files)
    manifest = json.loads(files["manifest.json"])
    assert manifest["pack_id"] == packs[1].pack_id and manifest["tuban_version"] and manifest["created"] == DISPATCH
    for name, sha in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == sha
    assert set(manifest["files"]) == set(files) - {"manifest.json"}

    fc = json.loads(files["tasks.geojson"])
    assert "crs" not in fc
    props = fc["features"][0]["properties"]
    assert tuple(props) == TASK_PROPERTIES
    assert props["task_id"] == props["case_id"] + "-T1" and props["verdict"] is None and props["photos"] == []
    assert props["grid_id"] == "G-W" and props["officer"] == "张三" and props["status"] == "dispatched"
    ring = fc["features"][0]["geometry"]["coordinates"][0]
    assert shapely.Polygon(ring).exterior.is_ccw  # RFC 7946 winding

    # before/after chips rendered from the source rasters, referenced by relative path
    assert props["evidence"] == [f"evidence/{props['case_id']}_before.png", f"evidence/{props['case_id']}_after.png"]
    for rel in props["evidence"]:
        assert files[rel][:8] == b"\x89PNG\r\n\x1a\n"

    html = files["index.html"].decode()
    assert f"geo:{props['lat']:.7f},{props['lon']:.7f}" in html
    assert "西村 &lt;b&gt;west&lt;/b&gt;" in html and "<b>west</b>" not in html  # escaped grid name
    assert 'src="evidence/' in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "What to check" in html and "What to fill in" in html

    kml = ET.fromstring(files["tasks.kml"])
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    point = kml.find(".//k:Placemark/k:MultiGeometry/k:Point/k:coordinates", ns).text
    assert [float(v) for v in point.split(",")] == pytest.approx([props["lon"], props["lat"]], abs=1e-7)
    gkml = ET.fromstring(files["tasks_gcj02.kml"])
    assert "GCJ-02" in gkml.find(".//k:Document/k:name", ns).text
    txt = files["tasks_gcj02.txt"].decode().splitlines()
    assert "GCJ-02" in txt[0] and "NOT WGS84" in txt[0]
    lon_g, lat_g = (float(v) for v in txt[2].split(",")[1:3])
    assert (lon_g, lat_g) == pytest.approx(wgs84_to_gcj02(props["lon"], props["lat"]), abs=1e-7)
    assert abs(lon_g - props["lon"]) > 1e-3  # really shifted (hundreds of metres)


def test_export_marks_dispatched_and_splits_by_max_per_pack(world, tmp_path):
    packs = _export(world, tmp_path, max_per_pack=1, grid_id="G-W")
    assert [len(p.task_ids) for p in packs] == [1, 1]
    assert packs[0].pack_id.endswith("-1") and packs[1].pack_id.endswith("-2")
    with open_ledger(world) as led:
        status = dict(led.conn.execute("SELECT grid_id, status FROM cases ORDER BY case_id").fetchall())
        assert led.rows("SELECT COUNT(*) AS n FROM tasks")[0]["n"] == 2
    assert status == {"G-W": "dispatched", "G-E": "open"}
    assert _export(world, tmp_path, grid_id="G-W") == []  # nothing left to dispatch there


def _returned(world, tmp_path, verdicts: dict[int, dict]) -> Path:
    packs = _export(world, tmp_path)
    fc = {"type": "FeatureCollection", "features": []}
    for p in packs:
        fc["features"] += json.loads(_members(p.path)["tasks.geojson"])["features"]
    fc["features"].sort(key=lambda f: f["properties"]["case_id"])
    for i, v in verdicts.items():
        fc["features"][i]["properties"].update(v)
    out = tmp_path / "returned.geojson"
    out.write_text(json.dumps(fc, ensure_ascii=False), encoding="utf-8")
    return out


def _statuses(ledger) -> dict[str, str]:
    with open_ledger(ledger) as led:
        return dict(led.conn.execute("SELECT case_id, status FROM cases").fetchall())


OK = {"verified_by": "张三", "verified_at": "2026-03-02T09:00:00+08:00"}


def test_import_applies_verdicts_and_is_idempotent(world, tmp_path):
    ret = _returned(world, tmp_path, {0: {"verdict": "confirmed_illegal", **OK},
                                      1: {"verdict": "false_change", **OK, "note": "<script>alert(1)</script>"}})
    res = import_verdicts(ret, world)
    assert (res.applied, res.duplicates, res.blank) == (2, 0, 1)
    assert _statuses(world) == {"350181-00001": "confirmed", "350181-00002": "dismissed", "350182-00001": "dispatched"}
    with open_ledger(world) as led:
        before = led.rows("SELECT * FROM verdicts"), led.rows("SELECT * FROM events"), led.rows("SELECT * FROM runs")
    again = import_verdicts(ret, world)
    assert (again.applied, again.duplicates) == (0, 2)
    with open_ledger(world) as led:
        assert (led.rows("SELECT * FROM verdicts"), led.rows("SELECT * FROM events"), led.rows("SELECT * FROM runs")) == before


def test_unknown_task_ids_and_bad_verdicts_are_rejected_by_name_and_nothing_applies(world, tmp_path):
    ret = _returned(world, tmp_path, {0: {"verdict": "confirmed_illegal"}})
    fc = json.loads(ret.read_text())
    fc["features"][1]["properties"].update(task_id="999999-00001-T1", verdict="legal")
    fc["features"][2]["properties"].update(task_id="999999-00002-T1", verdict="legal")
    ret.write_text(json.dumps(fc))
    with pytest.raises(LedgerError, match=r"2 unknown task ids: '999999-00001-T1', '999999-00002-T1'"):
        import_verdicts(ret, world)
    fc = json.loads(ret.read_text())
    for i, (tid, v) in enumerate([("350181-00001-T1", "illegal"), ("350181-00002-T1", "legal"),
                                  ("350182-00001-T1", None)]):
        fc["features"][i]["properties"].update(task_id=tid, verdict=v)
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps(fc))
    with pytest.raises(LedgerError, match=r"invalid verdict values: 'illegal' \(task 350181-00001-T1\)"):
        import_verdicts(bad, world)
    with open_ledger(world) as led:
        assert led.rows("SELECT COUNT(*) AS n FROM verdicts")[0]["n"] == 0


def test_conflicting_verdicts_are_both_kept_and_the_case_goes_to_review(world, tmp_path):
    ret = _returned(world, tmp_path, {0: {"verdict": "confirmed_illegal", **OK}})
    import_verdicts(ret, world)
    fc = json.loads(ret.read_text())
    fc["features"][0]["properties"].update(verdict="legal", verified_by="王五")
    second = tmp_path / "second.geojson"
    second.write_text(json.dumps(fc, ensure_ascii=False))
    res = import_verdicts(second, world)
    assert res.review_cases == ("350181-00001",)
    with open_ledger(world) as led:
        hist = led.rows("SELECT verdict, verified_by FROM verdicts WHERE task_id = '350181-00001-T1' ORDER BY fid")
        case = led.case("350181-00001")
    assert hist == [{"verdict": "confirmed_illegal", "verified_by": "张三"}, {"verdict": "legal", "verified_by": "王五"}]
    assert case["status"] == "review" and "conflicting" in case["review_reason"]


def _zip_with_photos(tmp_path, world, photos: dict[str, bytes], verdict_row: dict) -> Path:
    ret = _returned(world, tmp_path, {0: {"verdict": "confirmed_illegal", **OK, "photos": list(photos), **verdict_row}})
    zpath = tmp_path / "returned.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("pack/returned.geojson", ret.read_bytes())
        for name, data in photos.items():
            zf.writestr(f"pack/photos/{name}", data)
    return zpath


def test_photo_checks_flag_far_away_and_before_dispatch_photos(world, tmp_path):
    near = jpeg_with_exif(*offset(*WEST, 20, 10), "2026:03:02 09:05:00")
    far = jpeg_with_exif(*offset(*WEST, 2000, 0), "2026:03:02 09:10:00")
    early = jpeg_with_exif(*WEST, "2026:02:20 09:00:00")
    zpath = _zip_with_photos(tmp_path, world, {"near.jpg": near, "far.jpg": far, "early.jpg": early}, {})
    res = import_verdicts(zpath, world)
    flags = [f for _, f in res.flagged]
    assert any(f.startswith("photo far.jpg taken") and "m from the patch" in f for f in flags)
    assert any(f.startswith("photo early.jpg") and "before dispatch" in f for f in flags)
    assert not any("near.jpg" in f for f in flags)
    assert _statuses(world)["350181-00001"] == "review"
    # the photos are kept beside the ledger as evidence of the case
    with open_ledger(world) as led:
        kept = led.rows("SELECT path, properties FROM evidence WHERE kind = 'photo' ORDER BY fid")
    assert len(kept) == 3
    assert {Path(k["path"]).read_bytes() for k in kept} == {near, far, early}
    assert all(Path(k["path"]).parent == world.parent / "tuban_photos" / "350181-00001" for k in kept)


def test_good_photos_pass(world, tmp_path):
    near = jpeg_with_exif(*offset(*WEST, 20, 10), "2026:03:02 09:05:00", offset=None)
    res = import_verdicts(_zip_with_photos(tmp_path, world, {"near.jpg": near}, {}), world)
    assert res.flagged == () and _statuses(world)["350181-00001"] == "confirmed"


def test_points_edited_in_offset_apps_come_back_with_from_gcj02(world, tmp_path):
    ret = _returned(world, tmp_path, {0: {"verdict": "confirmed_illegal", **OK}})
    fc = json.loads(ret.read_text())
    lon, lat = offset(*WEST, 15, 0)
    fc["features"][0]["geometry"] = {"type": "Point", "coordinates": list(wgs84_to_gcj02(lon, lat))}
    ret.write_text(json.dumps(fc))
    res = import_verdicts(ret, world, ImportSettings(from_gcj02=True))
    assert res.flagged == ()
    with open_ledger(world) as led:
        v = led.rows("SELECT lon, lat FROM verdicts")[0]
    assert (v["lon"], v["lat"]) == pytest.approx((lon, lat), abs=1e-7)


def test_offset_point_without_from_gcj02_is_flagged(world, tmp_path):
    ret = _returned(world, tmp_path, {0: {"verdict": "confirmed_illegal", **OK}})
    fc = json.loads(ret.read_text())
    fc["features"][0]["geometry"] = {"type": "Point", "coordinates": list(wgs84_to_gcj02(*WEST))}
    ret.write_text(json.dumps(fc))
    res = import_verdicts(ret, world)
    assert "returned position" in res.flagged[0][1]


def test_csv_returns_including_gb18030_from_excel(world, tmp_path):
    _export(world, tmp_path)
    rows = [["task_id", "verdict", "verified_by", "verified_at", "note", "photos"],
            ["350181-00001-T1", "rectified", "张三", "2026-03-02T09:00:00+08:00", "已整改", ""],
            ["350182-00001-T1", "unreachable", "李四", "", "路断了", ""]]
    for enc in ("utf-8-sig", "gb18030"):
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        (tmp_path / f"{enc}.csv").write_bytes(buf.getvalue().encode(enc))
    res = import_verdicts(tmp_path / "utf-8-sig.csv", world)
    assert res.applied == 2
    assert _statuses(world)["350181-00001"] == "rectified" and _statuses(world)["350182-00001"] == "open"
    res = import_verdicts(tmp_path / "gb18030.csv", world)
    assert (res.applied, res.duplicates) == (0, 2)  # same content, other encoding: nothing new
    assert any("GB18030" in w for w in res.warnings)
    with open_ledger(world) as led:
        assert led.rows("SELECT note FROM verdicts WHERE task_id = '350182-00001-T1'")[0]["note"] == "路断了"


# --- safety -------------------------------------------------------------------------------------

def test_zip_slip_paths_are_refused(world, tmp_path):
    _export(world, tmp_path)
    for name in ("../evil.geojson", "/etc/evil.geojson", "a/../../evil.geojson", "C:/evil.geojson"):
        z = tmp_path / "slip.zip"
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr(name, b'{"type":"FeatureCollection","features":[]}')
        with pytest.raises(VectorError, match="unsafe path in zip"):
            import_verdicts(z, world)


def test_zip_bombs_are_refused(world, tmp_path):
    _export(world, tmp_path)
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("returned.geojson", b'{"type":"FeatureCollection","features":[]}')
        zf.writestr("photos/huge.jpg", b"\0" * (20 * 2**20))
    with pytest.raises(VectorError, match="zip bomb"):
        import_verdicts(z, world)
    small = ImportSettings(limits=ReadLimits(max_member_bytes=1000, max_ratio=1e9))
    with pytest.raises(VectorError, match="declares"):
        import_verdicts(z, world, small)


def test_a_zip_entry_lying_about_its_size_is_refused(world, tmp_path):
    _export(world, tmp_path)
    z = tmp_path / "liar.zip"
    payload = b'{"type":"FeatureCollection","features":[' + b" " * 5000 + b"]}"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("returned.geojson", payload)
    data = bytearray(z.read_bytes())
    # shrink the declared uncompressed size in the central directory to 10 bytes
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    z.write_bytes(bytes(data))
    with pytest.raises(VectorError, match="broken zip|larger than it declares"):
        import_verdicts(z, world)


def test_non_utf8_and_broken_files_give_clear_errors(world, tmp_path):
    _export(world, tmp_path)
    bad = tmp_path / "latin1.geojson"
    bad.write_bytes('{"type":"FeatureCollection","features":[{"properties":{"note":"café"}}]}'.encode("latin-1"))
    with pytest.raises(VectorError, match="not UTF-8"):
        import_verdicts(bad, world)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(VectorError):
        import_verdicts(broken, world)


@pytest.mark.slow
def test_millions_of_vertices_are_handled_without_building_them(world, tmp_path):
    ret = _returned(world, tmp_path, {0: {"verdict": "legal", **OK}})
    fc = json.loads(ret.read_text())
    n = 1_000_000
    ring = ",".join(f"[{LON0 + i * 1e-9:.9f},{LAT0}]" for i in range(n))
    text = json.dumps(fc).replace('"geometry": {"type": "Polygon", "coordinates": [[',
                                  f'"geometry": {{"type": "Polygon", "coordinates": [[{ring},', 1)
    ret.write_text(text)
    res = import_verdicts(ret, world)
    assert res.applied == 1 and _statuses(world)["350181-00001"] == "dismissed"


def test_cli_tasks_export_import_and_cases(world, tmp_path, runner):
    out = tmp_path / "packs"
    r = runner.invoke(app, ["tasks", "export", "--ledger", str(world), "--out", str(out), "--gcj02"])
    assert r.exit_code == 0, r.output
    zips = sorted(out.glob("*.zip"))
    assert len(zips) == 2
    fc = json.loads(_members(zips[1])["tasks.geojson"])
    fc["features"][0]["properties"].update(verdict="confirmed_illegal", **OK)
    ret = tmp_path / "ret.geojson"
    ret.write_text(json.dumps(fc))
    r = runner.invoke(app, ["tasks", "import", str(ret), "--ledger", str(world)])
    assert r.exit_code == 0 and "1 verdicts applied" in r.output
    fc["features"][1]["properties"].update(verdict="guilty")
    ret.write_text(json.dumps(fc))
    r = runner.invoke(app, ["tasks", "import", str(ret), "--ledger", str(world)])
    assert r.exit_code == 1 and "Error:" in r.output and "'guilty'" in r.output
    r = runner.invoke(app, ["cases", "close", "350181-00001", "--reason", "已拆除 demolished", "--ledger", str(world)])
    assert r.exit_code == 0 and "confirmed -> closed" in r.output
    r = runner.invoke(app, ["cases", "show", "350181-00001", "--ledger", str(world)])
    doc = json.loads(r.stdout)
    assert doc["case"]["closed_reason"] == "已拆除 demolished"
    assert [e["event"] for e in doc["events"]] == ["created", "dispatched", "verdict", "closed"]
    r = runner.invoke(app, ["cases", "list", "--ledger", str(world), "--status", "closed", "--format", "geojson"])
    assert [f["properties"]["case_id"] for f in json.loads(r.stdout)["features"]] == ["350181-00001"]
    r = runner.invoke(app, ["cases", "list", "--ledger", str(world), "--status", "bogus"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["cases", "reopen", "350181-00001", "--ledger", str(world)])
    assert r.exit_code == 0 and "closed -> open" in r.output
    r = runner.invoke(app, ["cases", "show", "999999-00001", "--ledger", str(world)])
    assert r.exit_code == 1 and "unknown case id" in r.output
    r = runner.invoke(app, ["tasks", "export", "--ledger", str(tmp_path / "missing.gpkg"), "--out", str(out)])
    assert r.exit_code == 1 and "ledger not found" in r.output


def test_best_drone_frames_travel_in_the_pack(tmp_path):
    import geopandas as gpd

    (tmp_path / "frames").mkdir()
    for name in ("oblique.jpg", "nadir.jpg"):
        (tmp_path / "frames" / name).write_bytes(jpeg_with_exif(*WEST, "2026:01:01 10:00:00"))
    frames = gpd.GeoDataFrame(
        [{"frame": 1, "gsd_m": 0.03, "gimbal_pitch_deg": -50.0, "image": str(tmp_path / "frames" / "oblique.jpg")},
         {"frame": 2, "gsd_m": 0.05, "gimbal_pitch_deg": -90.0, "image": str(tmp_path / "frames" / "nadir.jpg")},
         {"frame": 3, "gsd_m": None, "gimbal_pitch_deg": 10.0, "image": None}],
        geometry=[square(*WEST, 300), square(*WEST, 300), None], crs=4326)
    patches, _ = read_patches(write_fc(tmp_path / "p.geojson", patch_features([WEST])))
    ledger = tmp_path / "l.gpkg"
    res = triage(ledger, patches, read_vector(grids_file(tmp_path / "g.geojson")), frames=frames)
    assert res.frames_attached == 2
    packs = export_packs(ledger, tmp_path / "packs", ExportSettings(max_frames=1))
    files = _members(packs[0].path)
    props = json.loads(files["tasks.geojson"])["features"][0]["properties"]
    assert props["evidence"] == ["evidence/350181-00001_frame1.jpg"]
    assert files["evidence/350181-00001_frame1.jpg"] == (tmp_path / "frames" / "nadir.jpg").read_bytes()


def test_real_dji_photo_exif_position_and_time(real_data):
    from tuban.imagery.photo_exif import read_photo_meta

    meta = read_photo_meta((real_data / "deepforest" / "AWPE Pigeon Lake 2020 DJI_0005.JPG").read_bytes())
    # 45°02'16.77"N 94°20'55.53"W, 2020:06:04 22:10:30 (no offset tag: naive local time)
    assert meta.lat_deg == pytest.approx(45 + 2 / 60 + 16.77 / 3600, abs=1e-9)
    assert meta.lon_deg == pytest.approx(-(94 + 20 / 60 + 55.53 / 3600), abs=1e-9)
    assert meta.taken.isoformat() == "2020-06-04T22:10:30"
    assert read_photo_meta(b"not an image").lat_deg is None


def test_phone_page_saves_a_returned_geojson_that_imports(world, tmp_path):
    """Run the page's own script (node, with a tiny DOM stub) and import what it saves."""
    import re
    import shutil
    import subprocess

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node not installed")
    packs = _export(world, tmp_path)
    html = _members(packs[1].path)["index.html"].decode()
    data = re.search(r'<script type="application/json" id="tasks-data">(.*?)</script>', html, re.S).group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    stub = f"""
var store = {{'tasks-data': {{textContent: {json.dumps(data)}}}}};
var fc = JSON.parse(store['tasks-data'].textContent), id = fc.features[0].properties.task_id;
store['verdict-' + id] = {{value: 'false_change'}}; store['verified_by-' + id] = {{value: '张三'}};
store['note-' + id] = {{value: '<b>paddy</b>'}};
var document = {{getElementById: function (k) {{ return store[k] || null; }},
                createElement: function () {{ return {{click: function () {{}}}}; }}}};
var saved; function Blob(parts) {{ saved = parts[0]; }} var URL = {{createObjectURL: function () {{ return 'x'; }}}};
{script}
saveReturned(); process.stdout.write(saved);
"""
    js = tmp_path / "page.js"
    js.write_text(stub, encoding="utf-8")
    out = subprocess.run([node, str(js)], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-500:]
    ret = tmp_path / "returned.geojson"
    ret.write_bytes(out.stdout)
    res = import_verdicts(ret, world)
    assert (res.applied, res.blank) == (1, 1)
    with open_ledger(world) as led:
        v = led.rows("SELECT verdict, verified_by, note FROM verdicts")[0]
    assert v == {"verdict": "false_change", "verified_by": "张三", "note": "<b>paddy</b>"}


def test_a_verdict_without_task_id_is_rejected(world, tmp_path):
    _export(world, tmp_path)
    ret = tmp_path / "r.csv"
    ret.write_text("task_id,verdict\n,legal\n", encoding="utf-8")
    with pytest.raises(LedgerError, match="no task_id: 1"):
        import_verdicts(ret, world)


_JSONISH = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=20),
                        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
                        max_leaves=20)


@given(st.binary(max_size=400) | _JSONISH.map(lambda v: json.dumps(v).encode())
       | st.dictionaries(st.sampled_from(["task_id", "verdict", "photos", "lon", "lat", "note"]), _JSONISH, max_size=6)
       .map(lambda p: json.dumps({"type": "FeatureCollection", "features": [{"properties": p, "geometry":
                                                                             {"type": "Point", "coordinates": p.get("lon")}}]}).encode()))
@settings(max_examples=60, deadline=None)
def test_returned_parser_never_crashes_on_garbage(tmp_path_factory, data):
    from tuban.pipelines.returned import read_returned

    for suffix in (".geojson", ".csv"):
        path = tmp_path_factory.mktemp("g") / f"r{suffix}"
        path.write_bytes(data)
        try:
            batch = read_returned(path)
        except VectorError:
            continue
        assert all(isinstance(r.verdict, str) and r.verdict for r in batch.rows)


def test_big_drone_frames_are_shrunk_for_phones(tmp_path):
    from PIL import Image

    from tuban.pipelines.tasks_export import _phone_jpeg

    big = tmp_path / "f.png"
    Image.new("RGB", (4000, 3000), (10, 80, 30)).save(big)
    out = Image.open(io.BytesIO(_phone_jpeg(big, 1600)))
    assert out.format == "JPEG" and out.size == (1600, 1200)


def test_pack_file_names_keep_village_names_and_never_collide():
    from tuban.pipelines.tasks_export import _grid_file_parts

    parts = _grid_file_parts(["西村1", "东村1", "a/b", "a?b", "../etc", "G01"])
    assert parts["西村1"] == "西村1" and parts["东村1"] == "东村1" and parts["G01"] == "G01"
    assert len(set(parts.values())) == 6  # 'a/b' and 'a?b' both sanitise to 'a_b': hashed apart
    assert all("/" not in v and not v.startswith(".") for v in parts.values())
