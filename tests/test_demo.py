"""The sky-to-task demo on a small sample county: packs written, RFC 7946 tasks, resumable."""

from __future__ import annotations

import json
import re
import zipfile

from shapely.geometry import shape

from tuban.cli import app


def _ring_is_ccw(ring):
    area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False))
    return area2 > 0


def test_demo_writes_valid_task_packs_and_resumes(runner, tmp_path):
    out = tmp_path / "demo"
    res = runner.invoke(app, ["--quiet", "demo", "--out", str(out), "--size-km", "4", "--workers", "1"])
    assert res.exit_code == 0, res.output
    m = re.search(r"Task packs: (\S+)", res.stdout)
    assert m and m.group(1).endswith("packs")
    packs = sorted((out / "packs").glob("*.zip"))
    assert packs, "the demo must write at least one task pack"
    assert (out / "tuban.gpkg").is_file()
    county = json.loads((out / "county" / "county.json").read_text())
    n_tasks = 0
    for pack in packs:
        with zipfile.ZipFile(pack) as zf:
            # one folder per pack inside the zip, named like the zip
            prefix = pack.stem + "/"
            names = {n.removeprefix(prefix) for n in zf.namelist()}
            assert {"tasks.geojson", "tasks.kml", "index.html", "manifest.json"} <= names
            doc = json.loads(zf.read(prefix + "tasks.geojson"))
        assert doc["type"] == "FeatureCollection" and "crs" not in doc
        for f in doc["features"]:
            n_tasks += 1
            geom = f["geometry"]
            assert geom["type"] in ("Polygon", "MultiPolygon")
            polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
            for poly in polys:
                assert _ring_is_ccw(poly[0]), "exterior rings must be counter-clockwise (RFC 7946)"
            p = f["properties"]
            # lon/lat order, inside the sample county (Fujian coast, ~117.4E 23.9N)
            assert 116.5 < p["lon"] < 118.5 and 23.0 < p["lat"] < 25.0
            c = shape(geom).centroid
            assert abs(c.x - p["lon"]) < 0.01 and abs(c.y - p["lat"]) < 0.01
            assert p["case_id"] and p["grid_id"] and p["officer"]
    assert n_tasks > 0
    assert county["seed"] == 0

    again = runner.invoke(app, ["--quiet", "demo", "--out", str(out), "--size-km", "4"])
    assert again.exit_code == 0, again.output
    assert "0 new cases" in again.stdout  # same inputs: the ledger is unchanged
    assert sorted((out / "packs").glob("*.zip")) == packs


def test_demo_bad_output_path(runner, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    res = runner.invoke(app, ["demo", "--out", str(target)])
    assert res.exit_code in (1, 2)
    assert "Error" in res.output or "Invalid value" in res.output
