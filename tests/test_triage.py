"""Triage: evidence fused into cases with stable ids, grid officers, priorities and frames."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
import shapely
from cases_fixtures import LAT0, LON0, feature, grids_file, offset, patch_features, square, write_fc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tuban.cli import app
from tuban.imagery.vector_io import read_vector
from tuban.pipelines.cases import close_case
from tuban.pipelines.ledger import open_ledger
from tuban.pipelines.triage import TriageSettings, priority_of, read_frames, read_patches, triage

WEST = (LON0, LAT0)
EAST = (LON0 + 0.03, LAT0)


def _cases(path):
    with open_ledger(path) as led:
        return led.cases().drop(columns=["fid", "updated_at"])


def _run(tmp_path, features, *, name="patches.geojson", **kw):
    p = write_fc(tmp_path / name, features)
    patches, rasters = read_patches(p)
    grids = read_vector(grids_file(tmp_path / "grids.geojson"))
    return triage(tmp_path / "tuban.gpkg", patches, grids, rasters=rasters, **kw)


def test_cases_get_admin_code_ids_grid_officers_and_areas(tmp_path):
    res = _run(tmp_path, patch_features([WEST, EAST], side_m=80))
    assert res.new_cases == ("350181-00001", "350182-00001")
    cases = _cases(tmp_path / "tuban.gpkg").set_index("case_id")
    assert cases.loc["350181-00001", "grid_id"] == "G-W"
    assert cases.loc["350181-00001", "officer"] == "张三"
    assert cases.loc["350182-00001", "grid_name"] == "东村"
    assert cases.loc["350181-00001", "area_m2"] == pytest.approx(6400, rel=0.01)
    assert cases.loc["350181-00001", "area_mu"] == pytest.approx(6400 / 666.667, rel=0.01)
    assert cases.loc["350181-00001", "lon"] == pytest.approx(LON0, abs=1e-6)
    assert set(cases["status"]) == {"open"}


def test_same_inputs_twice_change_nothing(tmp_path):
    feats = patch_features([WEST, EAST])
    _run(tmp_path, feats)
    before = _cases(tmp_path / "tuban.gpkg")
    again = _run(tmp_path, feats)
    assert again.unchanged and not again.new_cases
    assert _cases(tmp_path / "tuban.gpkg").equals(before)


def test_a_place_found_again_later_joins_its_case_even_when_closed(tmp_path):
    _run(tmp_path, patch_features([WEST, EAST]))
    close_case(tmp_path / "tuban.gpkg", "350181-00001", "pond filled in, verified")
    moved = [offset(*WEST, 6, -4), offset(*EAST, -5, 3), offset(*WEST, 500, 0)]
    res = _run(tmp_path, patch_features(moved, after="2025-06-01", prefix="q"), name="later.geojson")
    assert set(res.joined_cases) == {"350181-00001", "350182-00001"}
    assert res.new_cases == ("350181-00002",)
    cases = _cases(tmp_path / "tuban.gpkg").set_index("case_id")
    assert cases.loc["350181-00001", "status"] == "review"  # found again after closure
    assert "found again" in cases.loc["350181-00001", "review_reason"]
    assert cases.loc["350182-00001", "status"] == "open"
    assert cases.loc["350181-00001", "n_patches"] == 2
    assert cases.loc["350181-00001", "after_date"] == "2025-06-01"


def test_overlapping_patches_of_one_run_make_one_case(tmp_path):
    feats = patch_features([WEST, offset(*WEST, 10, 0)])
    res = _run(tmp_path, feats)
    assert len(res.new_cases) == 1
    assert _cases(tmp_path / "tuban.gpkg")["n_patches"].iloc[0] == 2


def test_priority_rises_with_score_area_agreement_and_protection():
    s = TriageSettings()
    assert priority_of(0.3, 100, 0, 0, False, s) == 3
    assert priority_of(0.9, 100, 0, 0, False, s) == 2
    assert priority_of(0.9, 100, 1, 1, False, s) == 1
    assert priority_of(0.3, 100, 0, 0, True, s) == 2


def test_detections_protected_zones_and_frames_feed_priority_and_evidence(tmp_path):
    dets = gpd.GeoDataFrame([{"label": "pond", "score": 0.8}, {"label": "pond", "score": 0.7}],
                            geometry=[square(*WEST, 70), square(*offset(*WEST, 0, 900), 50)], crs=4326)
    zone = gpd.GeoDataFrame({"name": ["mangrove"]}, geometry=[square(*EAST, 300)], crs=4326)
    frames = gpd.GeoDataFrame(
        [{"frame": 10, "time_s": 1.0, "gsd_m": 0.05, "gimbal_pitch_deg": -45.0, "image": "oblique.jpg"},
         {"frame": 20, "time_s": 2.0, "gsd_m": 0.04, "gimbal_pitch_deg": -89.0, "image": "nadir_fine.jpg"},
         {"frame": 30, "time_s": 3.0, "gsd_m": 0.08, "gimbal_pitch_deg": -90.0, "image": "nadir_coarse.jpg"},
         {"frame": 40, "time_s": 4.0, "gsd_m": 0.02, "gimbal_pitch_deg": -90.0, "image": "elsewhere.jpg"}],
        geometry=[square(*WEST, 200)] * 3 + [square(*offset(*WEST, 3000, 0), 100)], crs=4326)
    res = _run(tmp_path, patch_features([WEST, EAST], score=0.9), detections=[dets], frames=frames, protected=zone)
    assert len(res.new_cases) == 3  # the lone detection far north became a case of its own
    assert res.frames_attached == 3
    cases = _cases(tmp_path / "tuban.gpkg").set_index("case_id")
    west = cases.loc["350181-00001"]
    assert (west["n_detections"], west["n_frames"], west["priority"]) == (1, 3, 1)
    east = cases.loc["350182-00001"]
    assert east["protected"] == 1 and east["priority"] == 1  # alone it would be 2
    lone = cases.loc["350181-00002"]
    # a detection with no change patch shows a pond, maybe an old legal one: below every changed case
    assert (lone["kind"], lone["n_detections"], lone["n_patches"], lone["priority"]) == ("pond", 1, 0, 3)
    with open_ledger(tmp_path / "tuban.gpkg") as led:
        frames_ranked = led.rows("SELECT source_id FROM evidence WHERE case_id = '350181-00001' AND kind = 'frame' "
                                 "ORDER BY rank_key")
    # closest to nadir first, then finest ground sampling distance
    assert [f["source_id"] for f in frames_ranked] == ["nadir_coarse.jpg", "nadir_fine.jpg", "oblique.jpg"]


def test_raster_paths_and_frame_images_resolve_relative_to_their_files(tmp_path):
    (tmp_path / "sub").mkdir()
    p = write_fc(tmp_path / "sub" / "patches.geojson", patch_features([WEST]),
                 rasters={"before": "b.tif", "after": "/abs/a.tif"})
    _, rasters = read_patches(p)
    assert rasters == {"before": str(tmp_path / "sub" / "b.tif"), "after": "/abs/a.tif"}
    f = write_fc(tmp_path / "sub" / "frames.geojson", [feature(square(*WEST, 100), frame=1, image="f/1.jpg")])
    assert read_frames(f)["image"].iloc[0] == str(tmp_path / "sub" / "f" / "1.jpg")


def test_non_polygon_patches_are_refused(tmp_path):
    from tuban import VectorError

    with pytest.raises(VectorError, match="not polygons"):
        _run(tmp_path, [feature(shapely.Point(*WEST), patch_id="x", score=1.0)])


def test_cli_triage_and_its_errors(tmp_path, runner):
    patches = write_fc(tmp_path / "patches.geojson", patch_features([WEST, EAST]))
    grids = grids_file(tmp_path / "grids.geojson")
    ledger = tmp_path / "tuban.gpkg"
    r = runner.invoke(app, ["triage", str(patches), "--ledger", str(ledger), "--grids", str(grids)])
    assert r.exit_code == 0, r.output
    assert "2 new cases" in r.output
    r = runner.invoke(app, ["cases", "list", "--ledger", str(ledger), "--format", "json"])
    assert r.exit_code == 0
    assert [c["case_id"] for c in json.loads(r.stdout)] == ["350181-00001", "350182-00001"]
    r = runner.invoke(app, ["cases", "list", "--ledger", str(ledger), "--status", "open"])
    assert r.exit_code == 0 and "2 cases" in r.output
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json", encoding="utf-8")
    r = runner.invoke(app, ["triage", str(bad), "--ledger", str(ledger), "--grids", str(grids)])
    assert r.exit_code == 1 and "Error:" in r.output and "bad.geojson" in r.output
    r = runner.invoke(app, ["triage", str(patches), "--ledger", str(ledger)])
    assert r.exit_code == 2  # --grids missing


def test_a_patch_whose_centroid_is_outside_every_grid_goes_to_the_grid_it_overlaps(tmp_path):
    # grids end at LAT0 + 0.05; this L-shaped patch has its centroid outside but overlaps G-W
    lon, lat = LON0, LAT0 + 0.05
    poly = shapely.Polygon([(lon - 0.002, lat - 0.0005), (lon + 0.002, lat - 0.0005), (lon + 0.002, lat + 0.004),
                            (lon - 0.002, lat + 0.004)])
    res = _run(tmp_path, [feature(poly, patch_id="edge", kind="new_pond", score=0.9)])
    assert res.new_cases == ("350181-00001",)
    assert _cases(tmp_path / "tuban.gpkg")["grid_id"].iloc[0] == "G-W"


def test_patches_from_a_geopackage(tmp_path):
    gdf = read_vector(write_fc(tmp_path / "p.geojson", patch_features([WEST, EAST])))
    gdf.to_file(tmp_path / "p.gpkg", driver="GPKG")
    patches, rasters = read_patches(tmp_path / "p.gpkg")
    assert len(patches) == 2 and rasters == {}


def test_neighbouring_small_ponds_of_a_cluster_stay_separate_cases(tmp_path):
    # 20 m ponds separated by a 5 m dike: centroids 25 m apart, no overlap
    res = _run(tmp_path, patch_features([WEST, offset(*WEST, 25, 0), offset(*WEST, 0, 25)], side_m=20))
    assert len(res.new_cases) == 3
    # the same ponds seen again a 10 m pixel off (IoU 0.27) join their own cases, not a neighbour
    again = _run(tmp_path, patch_features([offset(*WEST, 8, 6), offset(*WEST, 33, 6), offset(*WEST, 8, 31)],
                                          side_m=20, after="2025-06-01"), name="later.geojson")
    assert again.new_cases == () and sorted(again.joined_cases) == sorted(res.new_cases)


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.sampled_from([20, 40, 80])),
                min_size=1, max_size=8, unique_by=lambda t: (t[0], t[1])))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_patch_lands_in_exactly_one_case_and_reruns_are_stable(tmp_path_factory, layout):
    d = tmp_path_factory.mktemp("t")
    feats = [f for i, (gx, gy, side) in enumerate(layout)
             for f in patch_features([offset(*WEST, gx * 30.0, gy * 30.0)], side_m=side, prefix=f"p{i}-")]
    first = _run(d, feats)
    with open_ledger(d / "tuban.gpkg") as led:
        owners = led.rows("SELECT source_id, COUNT(DISTINCT case_id) AS n FROM evidence GROUP BY source_id")
        n_cases = len(led.cases())
    assert len(owners) == len(feats) and all(o["n"] == 1 for o in owners)
    assert n_cases == len(first.new_cases) <= len(feats)
    assert _run(d, feats).unchanged


def test_case_areas_are_rounded_and_match_the_patch_area(tmp_path):
    _run(tmp_path, patch_features([WEST], side_m=83.3))
    with open_ledger(tmp_path / "tuban.gpkg") as led:
        case = led.case("350181-00001")
    assert case["area_m2"] == round(case["area_m2"], 1) and case["area_mu"] == round(case["area_mu"], 3)
    assert case["area_m2"] == pytest.approx(83.3 * 83.3, rel=1e-3)  # the patch's own area_m2
    assert case["area_mu"] == pytest.approx(case["area_m2"] / 666.667, abs=0.001)
    r = CliRunner().invoke(app, ["cases", "list", "--ledger", str(tmp_path / "tuban.gpkg"), "--format", "json"])
    row = json.loads(r.stdout)[0]
    assert len(str(row["area_m2"]).split(".")[-1]) <= 1 and len(str(row["area_mu"]).split(".")[-1]) <= 3


def test_a_large_high_score_new_pond_is_priority_1_from_the_satellite_alone(tmp_path):
    big = patch_features([WEST], side_m=120, score=0.9)  # 14400 m2 = 21.6 mu
    small = patch_features([offset(*WEST, 0, 400)], side_m=40, score=0.9, prefix="s")
    water = [feature(square(*offset(*WEST, 400, 0), 120), patch_id="w1", kind="new_water", score=0.9, area_m2=14400.0)]
    _run(tmp_path, big + small + water)
    cases = _cases(tmp_path / "tuban.gpkg")
    prio = {(k, a > 10000): p for k, a, p in zip(cases["kind"], cases["area_m2"], cases["priority"], strict=True)}
    assert prio == {("new_pond", True): 1, ("new_pond", False): 2,
                    ("new_water", True): 2}  # ambiguous water change: not the enforcement target by itself
    assert priority_of(0.9, 14400, 0, 0, False, kind="new_pond") == 1
    assert priority_of(0.9, 14400, 0, 0, False, kind="new_water") == 2
    assert priority_of(0.6, 14400, 0, 0, False, kind="new_pond") == 2


def test_detection_only_cases_rank_below_changed_ones_unless_protected():
    assert priority_of(0.95, 20000, 1, 1, False, kind="pond", changed=False) == 3
    assert priority_of(0.95, 20000, 1, 1, True, kind="pond", changed=False) == 1
    assert priority_of(0.95, 20000, 1, 1, False, kind="pond") == 1


def test_cli_errors_about_patches_or_grids_name_the_file(tmp_path):
    runner = CliRunner()
    points = write_fc(tmp_path / "points.geojson", [feature(shapely.Point(*WEST), patch_id="x", score=1.0)])
    grids = grids_file(tmp_path / "grids.geojson")
    r = runner.invoke(app, ["triage", str(points), "--grids", str(grids), "--ledger", str(tmp_path / "l.gpkg")])
    assert r.exit_code == 1 and r.output.startswith(f"Error: {points}: patches: 1 features are not polygons (Point)")
    no_id = write_fc(tmp_path / "noid.geojson", [feature(square(*WEST, 500), name="x")])
    patches = write_fc(tmp_path / "patches.geojson", patch_features([WEST]))
    r = runner.invoke(app, ["triage", str(patches), "--grids", str(no_id), "--ledger", str(tmp_path / "l.gpkg")])
    assert r.exit_code == 1 and r.output.startswith(f"Error: {no_id}: grids have no grid_id property")
