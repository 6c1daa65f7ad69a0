"""Foundation: package layout, CLI shell, RFC 7946 output, atomic writes, core value types."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

import tuban
from tuban import OutputExistsError, VectorError
from tuban.cli import app
from tuban.imagery.crs import M2_PER_MU, areas_m2, utm_crs_for
from tuban.imagery.georaster import GeoRaster, map_to_pixel, pixel_to_map
from tuban.imagery.track import TRACK_COLUMNS, make_track
from tuban.imagery.vector_io import atomic_path, read_vector, write_geojson

ROOT = Path(__file__).resolve().parents[1]


def test_import_from_any_directory(tmp_path):
    code = "import tuban.pipelines, tuban.imagery, tuban.models, tuban.sample_data, tuban; print(tuban.__version__)"
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == tuban.__version__


def test_cli_version_and_help(runner):
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert tuban.__version__ in res.stdout
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for group in ("model", "uav", "mission", "tasks", "cases", "flight"):
        assert group in res.stdout


def test_cli_unknown_command_is_usage_error(runner):
    res = runner.invoke(app, ["no-such-command"])
    assert res.exit_code == 2


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in readme, "the .ci/run command must be the README's test command, verbatim"


def test_geojson_is_rfc7946(tmp_path):
    cw = Polygon([(500000, 4000000), (500000, 4000100), (500100, 4000100), (500100, 4000000)])
    assert not cw.exterior.is_ccw
    gdf = gpd.GeoDataFrame({"name": ["a"], "n": [np.int64(3)]}, geometry=[cw], crs=32650)
    path = write_geojson(gdf, tmp_path / "out.geojson")
    doc = json.loads(path.read_text())
    assert "crs" not in doc
    ring = doc["features"][0]["geometry"]["coordinates"][0]
    lon, lat = ring[0]
    assert 116 < lon < 118 and 35 < lat < 37  # lon first, in degrees
    assert Polygon(ring).exterior.is_ccw
    assert all(len(str(c).split(".")[-1]) <= 7 for pt in ring for c in pt)
    assert doc["features"][0]["properties"] == {"name": "a", "n": 3}
    back = read_vector(path)
    assert back.crs.to_epsg() == 4326 and len(back) == 1


def test_existing_output_not_overwritten(tmp_path):
    target = tmp_path / "x.geojson"
    target.write_text("keep")
    gdf = gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=4326)
    with pytest.raises(OutputExistsError):
        write_geojson(gdf, target)
    assert target.read_text() == "keep"
    write_geojson(gdf, target, overwrite=True)
    assert json.loads(target.read_text())["type"] == "FeatureCollection"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "y.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_read_vector_bad_input(tmp_path):
    p = tmp_path / "bad.geojson"
    p.write_text("{not json")
    with pytest.raises(VectorError, match="bad.geojson"):
        read_vector(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(VectorError, match="UTF-8"):
        read_vector(p)


def test_area_in_metres_and_mu():
    # a 100 m x 100 m square in UTM 50N is 1 ha = 15 mu, also when given in degrees
    sq = gpd.GeoDataFrame(geometry=[box(500000, 3000000, 500100, 3000100)], crs=32650)
    assert areas_m2(sq).iloc[0] == pytest.approx(10000)
    assert areas_m2(sq.to_crs(4326)).iloc[0] == pytest.approx(10000, rel=1e-3)
    assert 10000 / M2_PER_MU == pytest.approx(15.0)
    # Web Mercator is in metres but not true scale: areas are still measured in UTM
    assert areas_m2(sq.to_crs(3857)).iloc[0] == pytest.approx(10000, rel=1e-3)
    assert utm_crs_for(117.5, 24.4).to_epsg() == 32650
    assert utm_crs_for(-70.0, -10.0).to_epsg() == 32719


@given(
    col=st.floats(-1e4, 1e4, allow_nan=False), row=st.floats(-1e4, 1e4, allow_nan=False),
    res=st.floats(0.1, 100), rot=st.floats(-0.5, 0.5),
)
def test_pixel_map_roundtrip(col, row, res, rot):
    t = Affine(res, rot, 400000.0, rot, -res, 3000000.0)
    x, y = pixel_to_map(t, col, row)
    c2, r2 = map_to_pixel(t, x, y)
    assert c2 == pytest.approx(col, abs=1e-6) and r2 == pytest.approx(row, abs=1e-6)


def test_georaster_valid_mask_and_bounds():
    data = np.ones((2, 4, 5), dtype=np.uint16)
    data[0, 1, 1] = 0
    r = GeoRaster(data, Affine(10, 0, 1000, 0, -10, 2000), "EPSG:32650", nodata=0,
                  band_names=("green", "nir"))
    assert r.bounds == (1000, 1960, 1050, 2000)
    assert r.valid_mask().sum() == 19
    assert r.band("nir").shape == (4, 5)
    with pytest.raises(KeyError):
        r.band("red")


def test_make_track_fills_and_sorts():
    t = make_track({"time_s": [1.0, 0.0], "lat": [24.0, 24.1], "lon": [117.0, 117.1]}, format="x")
    assert list(t.table.columns)[: len(TRACK_COLUMNS)] == list(TRACK_COLUMNS)
    assert t.table["lat"].tolist() == [24.1, 24.0]
    assert np.isnan(t.table["yaw_deg"]).all() and (t.table["frame"] == -1).all()
    assert t.duration_s == 1.0
