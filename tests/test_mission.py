"""Mission planning: route order, battery splits, and the four file formats parsed back."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from xml.etree import ElementTree as ET

import geopandas as gpd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, box

from tuban import OutputExistsError, VectorError
from tuban.cli import app
from tuban.imagery.crs import WGS84, transformer, utm_crs_for
from tuban.imagery.vector_io import write_geojson
from tuban.pipelines.mission import (
    Mission,
    MissionPlan,
    MissionSettings,
    Waypoint,
    launch_sites,
    patch_targets,
    plan_missions,
    route_order,
    tour_length_m,
)
from tuban.pipelines.mission_formats import (
    KML_NS,
    LITCHI_HEADER,
    WPML_NS,
    MissionFormat,
    mission_to_litchi_csv,
    mission_to_qgc_plan,
    mission_to_wpml_kmz,
    plan_to_kml,
    write_plan,
)

LON0, LAT0 = 117.02, 24.51  # a county in Fujian; lon != lat so swaps show
K = {"k": KML_NS, "wpml": WPML_NS}


def _patches(n: int, spread_m: float, seed: int = 0) -> gpd.GeoDataFrame:
    """n 30x20 m rectangles within spread_m of (LON0, LAT0), ids P001..."""
    rng = np.random.default_rng(seed)
    utm = utm_crs_for(LON0, LAT0)
    x0, y0 = transformer(WGS84, utm).transform(LON0, LAT0)
    xy = rng.uniform(-spread_m, spread_m, size=(n, 2)) + [x0, y0]
    g = gpd.GeoDataFrame({"case_id": [f"P{i + 1:03d}" for i in range(n)]},
                         geometry=[box(x - 15, y - 10, x + 15, y + 10) for x, y in xy], crs=utm)
    return g.to_crs(WGS84)


def _targets(n: int, spread_m: float, seed: int = 0):
    return patch_targets(_patches(n, spread_m, seed))


def test_patch_targets_are_centroids_in_lon_lat_with_names():
    g = _patches(5, 500)
    t = patch_targets(g)
    assert [x[0] for x in t] == ["P001", "P002", "P003", "P004", "P005"]
    for (_, lon, lat), geom in zip(t, g.geometry, strict=True):
        assert abs(lon - LON0) < 0.01 and abs(lat - LAT0) < 0.01
        assert geom.contains(Point(lon, lat))


def test_route_order_example_square():
    xy = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    order = route_order(xy)
    assert order[0] == 0 and sorted(order) == [0, 1, 2, 3]
    assert tour_length_m(xy, order) == pytest.approx(40.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-5000, 5000), st.floats(-5000, 5000)), min_size=2, max_size=30))
def test_route_is_a_permutation_never_longer_than_input_order(points):
    xy = np.array(points, float)
    order = route_order(xy)
    assert order[0] == 0
    assert sorted(order) == list(range(len(xy)))
    assert tour_length_m(xy, order) <= tour_length_m(xy, list(range(len(xy)))) + 1e-6


def test_route_is_much_shorter_than_random_order():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 3000, size=(60, 2))
    assert tour_length_m(xy, route_order(xy)) < 0.5 * tour_length_m(xy, list(range(60)))


def test_one_mission_when_battery_suffices():
    plan = plan_missions(_targets(8, 400), MissionSettings(max_flight_min=25))
    assert len(plan.missions) == 1
    m = plan.missions[0]
    assert len(m.waypoints) == 8 and m.flight_s <= 25 * 60
    assert all(w.gimbal_pitch_deg == -90 and w.altitude_m == 80 and w.take_photo for w in m.waypoints)


def test_split_into_missions_each_within_budget_and_covering_all():
    t = _targets(40, 2000, seed=1)
    s = MissionSettings(max_flight_min=15, speed_m_s=10, takeoff=(LON0, LAT0))
    plan = plan_missions(t, s, name="run")
    assert len(plan.missions) >= 2
    names = [w.name for m in plan.missions for w in m.waypoints]
    assert sorted(names) == sorted(x[0] for x in t)  # each patch exactly once
    for i, m in enumerate(plan.missions):
        assert m.name == f"run_{i + 1}"
        assert m.takeoff == (LON0, LAT0)
        assert m.flight_s <= 15 * 60
    assert not plan.warnings


def test_split_flight_time_counts_distance_hover_climb_and_reserve():
    t = [("A", LON0 + 0.01, LAT0)]  # ~1012 m east of take-off
    s = MissionSettings(takeoff=(LON0, LAT0), speed_m_s=10, hover_s=5, altitude_m=80, climb_m_s=4,
                        descent_m_s=4, reserve_frac=0.2, max_flight_min=25)
    m = plan_missions(t, s).missions[0]
    assert m.distance_m == pytest.approx(2 * 1012.5, rel=0.01)
    assert m.flight_s == pytest.approx(m.distance_m / 10 + 5 + 40 + 0.2 * 1500)


def test_unreachable_patch_is_listed_not_planned_with_one_summary_warning():
    far = [(f"far{i}", LON0 + 0.5 + 0.001 * i, LAT0) for i in range(5)]
    t = [("near", LON0 + 0.001, LAT0), *far]
    plan = plan_missions(t, MissionSettings(takeoff=(LON0, LAT0), max_flight_min=10))
    assert [w.name for m in plan.missions for w in m.waypoints] == ["near"]
    assert [u.name for u in plan.unreachable] == [f"far{i}" for i in range(5)]
    assert all(u.flight_s > 600 and u.distance_m == pytest.approx(50650, rel=0.01) for u in plan.unreachable)
    assert len(plan.warnings) == 1 and plan.warnings[0].startswith("5 of 6 patches unreachable")


def _two_towns(n_each=12, seed=2):
    """Two clusters of patches 20 km apart (east-west), listed west cluster first."""
    rng = np.random.default_rng(seed)
    t = []
    for k, dlon in enumerate((0.0, 0.2)):  # 0.2 deg ~ 20 km at 24.5 N
        for i in range(n_each):
            t.append((f"T{k}_{i}", LON0 + dlon + rng.uniform(-0.01, 0.01), LAT0 + rng.uniform(-0.01, 0.01)))
    return t


def test_auto_takeoff_launches_from_each_cluster_and_reaches_every_patch():
    t = _two_towns()
    s = MissionSettings(max_flight_min=25)
    plan = plan_missions(t, s, name="m")
    assert not plan.unreachable and not plan.warnings
    sites = sorted({m.takeoff for m in plan.missions})
    assert len(sites) == 2
    for m in plan.missions:
        assert m.name.startswith(("m_site1", "m_site2")) and m.flight_s <= 25 * 60
        # each mission flies one town only, from a take-off inside that town
        towns = {w.name[:2] for w in m.waypoints}
        assert len(towns) == 1
        centre = LON0 + (0.2 if towns == {"T1"} else 0.0)
        assert abs(m.takeoff[0] - centre) < 0.012 and abs(m.takeoff[1] - LAT0) < 0.012
    assert sorted(w.name for m in plan.missions for w in m.waypoints) == sorted(x[0] for x in t)
    # the old default (first patch) could not reach the other town at all
    first = plan_missions(t, MissionSettings(max_flight_min=25, takeoff=t[0][1:]))
    assert len(first.unreachable) == 12


def test_auto_takeoff_one_site_for_a_compact_set_is_near_its_middle():
    t = _targets(30, 1500, seed=4)
    plan = plan_missions(t, MissionSettings(max_flight_min=25), name="m")
    assert {m.takeoff for m in plan.missions} == {plan.missions[0].takeoff}
    assert plan.missions[0].name in ("m", "m_1")
    lon, lat = plan.missions[0].takeoff
    assert abs(lon - LON0) < 0.01 and abs(lat - LAT0) < 0.01


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-20000, 20000), st.floats(-20000, 20000)), min_size=1, max_size=60),
       st.floats(300, 8000))
def test_launch_sites_reach_every_point_of_their_cluster(points, reach):
    xy = np.array(points, float)
    labels, sites = launch_sites(xy, reach)
    assert labels.shape == (len(xy),) and set(labels.tolist()) == set(range(len(sites)))
    assert np.all(np.hypot(*(xy - sites[labels]).T) <= reach + 1e-6)


def test_launch_sites_use_the_whole_reach_circle():
    # a triangle of circumradius 0.95 reach (sides 1.65 reach) with 10 patches crowded at one
    # corner: the median sits near that corner and misses the others, the circle's centre
    # reaches all three corners, so one launch site is enough
    ang = np.radians([90, 210, 330])
    corners = 0.95 * 1000 * np.column_stack([np.cos(ang), np.sin(ang)]) + [5000, 7000]
    xy = np.vstack([corners, np.repeat(corners[:1], 10, axis=0) + np.arange(10)[:, None]])
    labels, sites = launch_sites(xy, 1000)
    assert len(sites) == 1 and np.hypot(*(sites[0] - [5000, 7000])) < 20


def test_nothing_reachable_when_battery_is_too_short():
    plan = plan_missions(_targets(3, 100), MissionSettings(max_flight_min=1))
    assert not plan.missions and len(plan.unreachable) == 3


def _plan(n=6, spread=300, **kw):
    return plan_missions(_targets(n, spread), MissionSettings(takeoff=(LON0, LAT0), **kw), name="m")


def test_kml_lon_lat_order_altitude_and_route_closed():
    plan = _plan()
    root = ET.fromstring(plan_to_kml(plan))
    folders = root.findall("k:Document/k:Folder", K)
    assert len(folders) == 1
    marks = folders[0].findall("k:Placemark", K)
    wps = [p for p in marks if p.find("k:ExtendedData", K) is not None]
    assert len(wps) == 6
    for p, w in zip(wps, plan.missions[0].waypoints, strict=True):
        lon, lat, alt = map(float, p.find("k:Point/k:coordinates", K).text.split(","))
        assert (lon, lat, alt) == (pytest.approx(w.lon, abs=1e-7), pytest.approx(w.lat, abs=1e-7), 80)
        assert 116 < lon < 118 and 24 < lat < 25
    line = folders[0].find("k:Placemark/k:LineString/k:coordinates", K).text.split()
    assert line[0] == line[-1] and len(line) == 8
    assert line[0].startswith("117.02,24.51")


def test_kml_one_folder_per_mission():
    plan = plan_missions(_targets(40, 2000, seed=1), MissionSettings(max_flight_min=15, speed_m_s=10, takeoff=(LON0, LAT0)))
    root = ET.fromstring(plan_to_kml(plan))
    assert len(root.findall("k:Document/k:Folder", K)) == len(plan.missions) >= 2


def test_litchi_csv_latitude_first_actions_and_gimbal():
    m = _plan(hover_s=4)
    rows = list(csv.DictReader(io.StringIO(mission_to_litchi_csv(m.missions[0]))))
    assert list(rows[0].keys()) == LITCHI_HEADER and len(LITCHI_HEADER) == 46
    assert len(rows) == 6
    for r, w in zip(rows, m.missions[0].waypoints, strict=True):
        assert float(r["latitude"]) == pytest.approx(w.lat, abs=1e-7)
        assert float(r["longitude"]) == pytest.approx(w.lon, abs=1e-7)
        assert float(r["altitude(m)"]) == 80 and float(r["gimbalpitchangle"]) == -90
        assert r["gimbalmode"] == "2" and r["altitudemode"] == "0"
        assert (r["actiontype1"], r["actionparam1"]) == ("0", "4000")  # stay 4 s
        assert r["actiontype2"] == "1"  # photo
        assert r["actiontype3"] == "-1" and r["actiontype15"] == "-1"


def test_qgc_plan_items_takeoff_waypoints_photo_rtl():
    m = _plan().missions[0]
    doc = json.loads(mission_to_qgc_plan(m))
    assert doc["fileType"] == "Plan" and doc["mission"]["version"] == 2
    assert doc["mission"]["plannedHomePosition"][:2] == [LAT0, LON0]
    items = doc["mission"]["items"]
    cmds = [i["command"] for i in items]
    assert cmds[0] == 22 and cmds[-1] == 20
    assert cmds.count(16) == 6 and cmds.count(2000) == 6
    assert [i["doJumpId"] for i in items] == list(range(1, len(items) + 1))
    wps = [i for i in items if i["command"] == 16]
    for it, w in zip(wps, m.waypoints, strict=True):
        assert it["params"][4:7] == [pytest.approx(w.lat), pytest.approx(w.lon), 80]
        assert it["frame"] == 3 and it["params"][0] == 5
    mount = [i for i in items if i["command"] == 205]
    assert mount and mount[0]["params"][0] == -90


def test_wpml_kmz_structure_indices_and_heights():
    m = _plan().missions[0]
    with zipfile.ZipFile(io.BytesIO(mission_to_wpml_kmz(m))) as zf:
        assert sorted(zf.namelist()) == ["wpmz/template.kml", "wpmz/waylines.wpml"]
        tpl = ET.fromstring(zf.read("wpmz/template.kml"))
        way = ET.fromstring(zf.read("wpmz/waylines.wpml"))
    assert tpl.find(".//wpml:executeHeight", K) is None  # the classic silent-height bug
    assert tpl.find(".//wpml:templateType", K).text == "waypoint"
    ref = tpl.find(".//wpml:takeOffRefPoint", K).text.split(",")
    assert float(ref[0]) == pytest.approx(LAT0) and float(ref[1]) == pytest.approx(LON0)
    assert way.find(".//wpml:finishAction", K).text == "goHome"
    assert way.find(".//wpml:executeHeightMode", K).text == "relativeToStartPoint"
    marks = way.findall(".//k:Placemark", K)
    assert [int(p.find("wpml:index", K).text) for p in marks] == list(range(6))
    for p, w in zip(marks, m.waypoints, strict=True):
        lon, lat = map(float, p.find("k:Point/k:coordinates", K).text.split(","))
        assert lon == pytest.approx(w.lon, abs=1e-7) and lat == pytest.approx(w.lat, abs=1e-7)
        assert float(p.find("wpml:executeHeight", K).text) == 80
        funcs = [a.text for a in p.findall(".//wpml:actionActuatorFunc", K)]
        assert funcs == ["gimbalRotate", "hover", "takePhoto"]
        assert float(p.find(".//wpml:gimbalPitchRotateAngle", K).text) == -90
    assert len(tpl.findall(".//k:Placemark", K)) == 6


def test_write_plan_names_split_files_and_refuses_existing(tmp_path):
    plan = plan_missions(_targets(40, 2000, seed=1), MissionSettings(max_flight_min=15, speed_m_s=10, takeoff=(LON0, LAT0)))
    paths = write_plan(plan, MissionFormat.qgc, tmp_path / "route.plan")
    assert [p.name for p in paths] == [f"route_{i + 1}.plan" for i in range(len(plan.missions))]
    assert all(json.loads(p.read_text())["fileType"] == "Plan" for p in paths)
    with pytest.raises(OutputExistsError):
        write_plan(plan, MissionFormat.qgc, tmp_path / "route.plan")


def _write_patches(tmp_path, n=5, spread=300):
    p = tmp_path / "patches.geojson"
    write_geojson(_patches(n, spread), p)
    return p


@pytest.mark.parametrize("fmt,suffix", [("kml", ".kml"), ("litchi", ".csv"), ("qgc", ".plan"), ("wpml", ".kmz")])
def test_cli_mission_plan_each_format(tmp_path, runner, fmt, suffix):
    src = _write_patches(tmp_path)
    out = tmp_path / f"route{suffix}"
    r = runner.invoke(app, ["mission", "plan", str(src), "--format", fmt, "--altitude-m", "60",
                            "--takeoff", f"{LON0},{LAT0}", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.exists() and "5 patches in 1 mission" in r.stdout
    if fmt == "litchi":
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 5 and {float(r["altitude(m)"]) for r in rows} == {60.0}
    r2 = runner.invoke(app, ["mission", "plan", str(src), "--format", fmt, "--out", str(out)])
    assert r2.exit_code == 1 and "already exists" in r2.output


def test_cli_mission_plan_split(tmp_path, runner):
    src = tmp_path / "p.geojson"
    write_geojson(_patches(40, 2000, seed=1), src)
    r = runner.invoke(app, ["mission", "plan", str(src), "--format", "litchi", "--max-flight-min", "15", "--speed-m-s", "10",
                            "--takeoff", f"{LON0},{LAT0}", "--out", str(tmp_path / "r.csv")])
    assert r.exit_code == 0, r.output
    files = sorted(tmp_path.glob("r_*.csv"))
    assert len(files) >= 2 and not (tmp_path / "r.csv").exists()
    assert sum(len(list(csv.DictReader(f.open()))) for f in files) == 40


def test_cli_mission_plan_auto_takeoff_lists_unreachable(tmp_path, runner):
    src = tmp_path / "towns.geojson"
    utm = utm_crs_for(LON0, LAT0)
    pts = gpd.GeoSeries.from_xy([x[1] for x in _two_towns()], [x[2] for x in _two_towns()], crs=WGS84)
    g = gpd.GeoDataFrame({"case_id": [x[0] for x in _two_towns()]},
                         geometry=pts.to_crs(utm).buffer(10).to_crs(WGS84), crs=WGS84)
    write_geojson(g, src)
    r = runner.invoke(app, ["mission", "plan", str(src), "--format", "litchi", "--out", str(tmp_path / "a.csv")])
    assert r.exit_code == 0, r.output
    assert "24 patches in" in r.stdout and "from 2 take-off point(s)" in r.stdout
    assert "Warning" not in r.output and not (tmp_path / "a_unreachable.geojson").exists()
    files = sorted(p.name for p in tmp_path.glob("a_site*.csv"))
    assert files and all(f.startswith(("a_site1", "a_site2")) for f in files)
    first = f"{g.geometry.iloc[0].centroid.x},{g.geometry.iloc[0].centroid.y}"
    r = runner.invoke(app, ["mission", "plan", str(src), "--format", "litchi", "--takeoff", first,
                            "--out", str(tmp_path / "b.csv")])
    assert r.exit_code == 0, r.output
    assert r.output.count("Warning") == 1 and "12 of 24 patches unreachable" in r.output
    lost = json.loads((tmp_path / "b_unreachable.geojson").read_text())
    assert sorted(f["properties"]["name"] for f in lost["features"]) == sorted(f"T1_{i}" for i in range(12))
    assert sum(len(list(csv.DictReader(p.open()))) for p in tmp_path.glob("b*.csv")) == 12
    r = runner.invoke(app, ["mission", "plan", str(src), "--format", "kml", "--max-flight-min", "1",
                            "--out", str(tmp_path / "c.kml")])
    assert r.exit_code == 1 and "no patch reachable" in r.output and not (tmp_path / "c.kml").exists()


def test_cli_mission_plan_bad_inputs(tmp_path, runner):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    r = runner.invoke(app, ["mission", "plan", str(bad), "--format", "kml", "--out", str(tmp_path / "o.kml")])
    assert r.exit_code == 1 and "bad.geojson" in r.output and "Traceback" not in r.output
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type":"FeatureCollection","features":[]}')
    r = runner.invoke(app, ["mission", "plan", str(empty), "--format", "kml", "--out", str(tmp_path / "o.kml")])
    assert r.exit_code == 1 and "no patches" in r.output
    src = _write_patches(tmp_path)
    r = runner.invoke(app, ["mission", "plan", str(src), "--format", "kml", "--takeoff", "24.51",
                            "--out", str(tmp_path / "o.kml")])
    assert r.exit_code == 2
    r = runner.invoke(app, ["mission", "plan", str(src), "--format", "dji", "--out", str(tmp_path / "o.kml")])
    assert r.exit_code == 2
    assert not (tmp_path / "o.kml").exists()


_LON = st.floats(-179.9, 179.9, allow_nan=False)
_LAT = st.floats(-80.0, 80.0, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(_LON, _LAT), min_size=1, max_size=6), st.floats(10, 400))
def test_every_format_round_trips_lon_lat_and_altitude(points, alt):
    wps = tuple(Waypoint(lon=lo, lat=la, altitude_m=alt, name=f"w{i}") for i, (lo, la) in enumerate(points))
    m = Mission(name="m", takeoff=points[0], waypoints=wps, speed_m_s=8, altitude_m=alt, distance_m=0, flight_s=0)
    kml = ET.fromstring(plan_to_kml(MissionPlan((m,))))
    got_kml = [tuple(map(float, p.find("k:Point/k:coordinates", K).text.split(",")))
               for p in kml.iter(f"{{{KML_NS}}}Placemark") if p.find("k:ExtendedData", K) is not None]
    rows = list(csv.DictReader(io.StringIO(mission_to_litchi_csv(m))))
    got_litchi = [(float(r["longitude"]), float(r["latitude"]), float(r["altitude(m)"])) for r in rows]
    items = json.loads(mission_to_qgc_plan(m))["mission"]["items"]
    got_qgc = [(i["params"][5], i["params"][4], i["params"][6]) for i in items if i["command"] == 16]
    with zipfile.ZipFile(io.BytesIO(mission_to_wpml_kmz(m))) as zf:
        way = ET.fromstring(zf.read("wpmz/waylines.wpml"))
    got_wpml = [(*map(float, p.find("k:Point/k:coordinates", K).text.split(",")),
                 float(p.find("wpml:executeHeight", K).text)) for p in way.iter(f"{{{KML_NS}}}Placemark")]
    for got in (got_kml, got_litchi, got_qgc, got_wpml):
        assert len(got) == len(points)
        for (lo, la, a), (elo, ela) in zip(got, points, strict=True):
            assert abs(lo - elo) < 1e-6 and abs(la - ela) < 1e-6 and abs(a - alt) < 0.01


def test_point_patches_and_projected_coordinates(tmp_path):
    pts = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[Point(LON0, LAT0), Point(LON0 + 0.001, LAT0)], crs=WGS84)
    t = patch_targets(pts)
    assert [x[0] for x in t] == ["a", "b"] and t[1][1] == pytest.approx(LON0 + 0.001)
    utm = gpd.GeoDataFrame(geometry=[Point(500000, 2710000)], crs=WGS84)  # UTM numbers labelled lon/lat
    with pytest.raises(VectorError, match="not lon/lat"):
        patch_targets(utm)
