"""The synthetic UAV clip: video, SRT and truth agree with each other and with the camera model."""

from __future__ import annotations

import json
import re
import time

import cv2
import geopandas as gpd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from tuban.imagery.crs import WGS84, transformer
from tuban.sample_data.uav_clip import (
    ClipSettings,
    camera_to_ned,
    generate_uav_clip,
    local_crs,
    true_footprint_m,
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # test_uav_detect.py reuses this clip (same folder, same seed) instead of rendering another
    out = tmp_path_factory.getbasetemp() / "uav_clip_seed3"
    t0 = time.perf_counter()
    paths = generate_uav_clip(out, seed=3, overwrite=True)
    return paths, time.perf_counter() - t0


def _frames(path, wanted):
    cap = cv2.VideoCapture(str(path))
    got, i = {}, 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if i in wanted:
            got[i] = f[..., ::-1]  # RGB
        i += 1
    cap.release()
    return got, i


def test_clip_is_complete(clip):
    paths, _ = clip  # render time is reported in docs/missions_and_uav.md, not asserted
    s = ClipSettings()
    _, n = _frames(paths.video, set())
    assert n == s.n_frames == 270
    cap = cv2.VideoCapture(str(paths.video))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (960, 540)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    meta = json.loads(paths.meta.read_text())
    assert meta["n_frames"] == 270 and meta["camera_options"] == "--hfov-deg 70"


def test_srt_is_enterprise_format_one_block_per_frame(clip):
    paths, _ = clip
    text = paths.srt.read_text()
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 270
    first = blocks[0]
    for key in ("gb_yaw", "gb_pitch", "gb_roll", "drone_yaw", "drone_pitch", "drone_roll",
                "rel_alt", "abs_alt", "focal_len", "FrameCnt: 1,"):
        assert key in first
    assert re.search(r"\[latitude: \d+\.\d{6}\] \[longitude: \d+\.\d{6}\]", first)
    assert blocks[1].splitlines()[1] == "00:00:00,100 --> 00:00:00,200"


def _srt_values(text, key):
    return np.array([float(v) for v in re.findall(rf"{key}: (-?[\d.]+)", text)])


def test_srt_noise_is_realistic_and_baro_offset_constant(clip):
    paths, _ = clip
    text = paths.srt.read_text()
    lat, lon = _srt_values(text, r"\[latitude"), _srt_values(text, r"\[longitude")
    rel, absalt = _srt_values(text, "rel_alt"), _srt_values(text, "abs_alt")
    truth = gpd.read_file(paths.truth_footprints)
    s = ClipSettings()
    tr = transformer(WGS84, local_crs(s.origin_lon, s.origin_lat))
    e_m, n_m = tr.transform(lon, lat)
    e_t, n_t = tr.transform(truth["lon"].to_numpy(), truth["lat"].to_numpy())
    err = np.hypot(e_m - e_t, n_m - n_t)
    assert 0.3 < np.sqrt(np.mean(err**2)) < 2.5  # GNSS-like, not exact and not wild
    assert np.std(absalt - rel) < 0.002  # barometric offset is one constant
    assert abs(np.mean(absalt - rel)) > 1.0
    assert np.abs(rel - truth["alt_m"].to_numpy()).max() < 1.0


def test_truth_ponds_and_footprints(clip):
    paths, _ = clip
    ponds = gpd.read_file(paths.truth_ponds)
    fps = gpd.read_file(paths.truth_footprints)
    assert len(fps) == 270 and list(fps["frame"]) == list(range(270))
    assert (ponds["fully_seen"] & ponds["water"]).sum() >= 8 and (~ponds["fully_seen"]).sum() >= 1
    assert (ponds["fully_seen"] & ~ponds["water"]).sum() == 1  # the drained pond
    utm = fps.estimate_utm_crs()
    nadir = fps[fps["gimbal_pitch_deg"] == -90].to_crs(utm)
    # nadir footprint from 80 m with HFOV 70 deg: 112 m x 63 m (altitude wanders +-1.5 m)
    assert nadir.area.median() == pytest.approx(2 * 80 * np.tan(np.radians(35)) * 2 * 80 * np.tan(np.radians(35)) * 540 / 960, rel=0.05)
    oblique = fps[fps["gimbal_pitch_deg"] == -55].to_crs(utm)
    assert len(oblique) > 100 and oblique.area.median() > 1.8 * nadir.area.median()


def test_rendered_frames_show_water_where_truth_ponds_project(clip):
    """Project a point inside each seen pond with the true pose: the video pixel there is water."""
    paths, _ = clip
    s = ClipSettings()
    lcrs = local_crs(s.origin_lon, s.origin_lat)
    ponds = gpd.read_file(paths.truth_ponds).to_crs(lcrs)
    fps = gpd.read_file(paths.truth_footprints).to_crs(lcrs)
    wanted = {40, 60, 200, 240}
    frames, _ = _frames(paths.video, wanted)
    k = np.array([[s.fx_px, 0, s.width_px / 2], [0, s.fx_px, s.height_px / 2], [0, 0, 1]])
    e0, n0 = transformer(WGS84, lcrs).transform(fps["lon"].to_numpy(), fps["lat"].to_numpy())
    checked = 0
    for i in wanted:
        row = fps.iloc[i]
        r = camera_to_ned(row["gimbal_yaw_deg"], row["gimbal_pitch_deg"], row["gimbal_roll_deg"])
        for pond in ponds[ponds["water"]].geometry:
            x0, y0, x1, y1 = pond.bounds  # off-centre: one pond has sun glint in the middle
            c = Point(x0 + 0.25 * (x1 - x0), y0 + 0.25 * (y1 - y0))
            if not row.geometry.contains(pond.buffer(-3)):
                continue
            ned = np.array([c.y - n0[i], c.x - e0[i], row["alt_m"]])
            u, v, w = k @ r.T @ ned
            rgb = frames[i][int(v / w), int(u / w)].astype(float)
            assert (rgb[1] + rgb[2]) / 2 - rgb[0] > 20, (i, rgb)  # water: blue/green over red
            checked += 1
    assert checked >= 10


def test_true_footprint_nadir_geometry():
    s = ClipSettings()
    fp = true_footprint_m((0.0, 0.0), 80.0, (90.0, -90.0, 0.0), s)
    minx, miny, maxx, maxy = fp.bounds
    half_w = 80 * np.tan(np.radians(35))  # across track (north-south) when heading east
    assert (maxy - miny) == pytest.approx(2 * half_w, rel=1e-6)
    assert (maxx - minx) == pytest.approx(2 * half_w * 540 / 960, rel=1e-6)
    assert fp.contains(Point(0, 0))
    with pytest.raises(ValueError):
        true_footprint_m((0.0, 0.0), 80.0, (0.0, -10.0, 0.0), s)  # sees the horizon


def test_same_seed_gives_identical_files(tmp_path):
    small = ClipSettings(width_px=320, height_px=180, pass_s=1.0, turn_s=1.0, ortho_gsd_m=0.5)
    a = generate_uav_clip(tmp_path / "a", seed=5, settings=small)
    b = generate_uav_clip(tmp_path / "b", seed=5, settings=small)
    c = generate_uav_clip(tmp_path / "c", seed=6, settings=small)
    for name in ("video", "srt", "truth_ponds", "truth_footprints"):
        assert getattr(a, name).read_bytes() == getattr(b, name).read_bytes(), name
    assert a.srt.read_bytes() != c.srt.read_bytes()
    with pytest.raises(Exception, match="already exists"):
        generate_uav_clip(tmp_path / "a", seed=5, settings=small)


# --- the sample county's clip: the drone flies over the county's own new ponds ------------------


@pytest.fixture(scope="module")
def county_clip(tmp_path_factory):
    from tuban.sample_data.county import CountySpec, generate_county
    from tuban.sample_data.county_clip import generate_county_clip

    root = tmp_path_factory.getbasetemp() / "county_clip_c4"  # shared with test_uav_detect.py
    generate_county(root, seed=0, spec=CountySpec.of_size_km(4), overwrite=True)
    t0 = time.process_time()
    paths = generate_county_clip(root, seed=0, overwrite=True)
    return root, paths, time.process_time() - t0


@pytest.mark.slow  # shares one ~20 s county + clip render
def test_county_clip_films_county_new_ponds(county_clip):
    root, paths, _ = county_clip
    truth = gpd.read_file(paths.truth_ponds)
    county = gpd.read_file(root / "truth" / "ponds_after.geojson").set_index("pond_id")
    new = set(gpd.read_file(root / "truth" / "new_ponds.geojson")["pond_id"])
    assert set(truth["pond_id"]) <= set(county.index)  # county ids kept
    seen_new = truth[truth["fully_seen"] & truth["pond_id"].isin(new)]
    assert len(seen_new) >= 1
    for _, p in truth.iterrows():  # same polygons as the county truth
        assert p.geometry.symmetric_difference(county.loc[p["pond_id"]].geometry).area < 1e-3 * p.geometry.area
    fp = gpd.read_file(paths.truth_footprints)
    assert fp.union_all().contains(gpd.read_file(root / "truth" / "new_ponds.geojson")
                                   .set_index("pond_id").loc[list(seen_new["pond_id"])].union_all())
    meta = json.loads(paths.meta.read_text())
    assert meta["settings"]["altitude_m"] == 80.0


@pytest.mark.slow  # shares one ~20 s county + clip render
def test_county_clip_frames_show_water_on_county_ponds(county_clip):
    """Project ground points with the true pose: county water is darker in the video than land."""
    _, paths, _ = county_clip
    s = ClipSettings()
    meta = json.loads(paths.meta.read_text())
    lcrs = local_crs(meta["settings"]["origin_lon"], meta["settings"]["origin_lat"])
    truth = gpd.read_file(paths.truth_ponds).to_crs(lcrs)
    fps = gpd.read_file(paths.truth_footprints).to_crs(lcrs)
    wanted = set(fps.loc[fps["gimbal_pitch_deg"] == -90.0, "frame"].iloc[::25])
    frames, _ = _frames(paths.video, wanted)
    k = np.array([[s.fx_px, 0, s.width_px / 2], [0, s.fx_px, s.height_px / 2], [0, 0, 1]])
    e0, n0 = transformer(WGS84, lcrs).transform(fps["lon"].to_numpy(), fps["lat"].to_numpy())
    water = truth[truth["water"]].geometry.buffer(-2.0).union_all()
    land = truth.geometry.buffer(8.0).union_all()
    inside, outside = [], []
    for i in wanted:
        row = fps.iloc[i]
        r = camera_to_ned(row["gimbal_yaw_deg"], row["gimbal_pitch_deg"], row["gimbal_roll_deg"])
        x0, y0, x1, y1 = row.geometry.buffer(-3.0).bounds
        for x in np.arange(x0, x1, 4.0):
            for y in np.arange(y0, y1, 4.0):
                pt = Point(x, y)
                if not row.geometry.buffer(-3.0).contains(pt):
                    continue
                u, v, w = k @ r.T @ np.array([y - n0[i], x - e0[i], row["alt_m"]])
                lum = frames[i][int(v / w), int(u / w)].astype(float).mean()
                if water.contains(pt):
                    inside.append(lum)
                elif not land.contains(pt):
                    outside.append(lum)
    assert len(inside) > 100 and len(outside) > 100
    assert np.median(inside) < np.median(outside) - 10, (np.median(inside), np.median(outside))


def test_county_clip_needs_a_county(tmp_path):
    from tuban import InputError
    from tuban.sample_data.county_clip import generate_county_clip

    with pytest.raises(InputError, match="not a sample county"):
        generate_county_clip(tmp_path)


@settings(max_examples=15, deadline=None)
@given(angle_deg=st.floats(-40.0, 40.0), side_m=st.floats(50.0, 90.0), rows=st.integers(1, 4),
       cols=st.integers(1, 6))
def test_planned_nadir_pass_covers_every_new_pond(angle_deg, side_m, rows, cols):
    """Whatever the cluster's orientation and size, nadir frames cover each new pond's centroid
    (what triage needs to attach a frame to its case) and the ortho box holds every footprint."""
    from shapely import affinity
    from shapely.geometry import box

    from tuban.sample_data.county_clip import plan_county_flight
    from tuban.sample_data.uav_clip import flight_poses

    crs = "EPSG:32650"
    x0, y0, dike = 560_000.0, 2_650_000.0, 5.0
    geoms, kinds = [], []
    for r in range(rows + 1):  # the last row is new (an extension row)
        for c in range(cols):
            g = box(x0 + c * (side_m + dike), y0 + r * (side_m + dike), x0 + c * (side_m + dike) + side_m,
                    y0 + r * (side_m + dike) + side_m)
            geoms.append(affinity.rotate(g, angle_deg, origin=(x0, y0)))
            kinds.append("new_pond" if r == rows else "pond")
    ponds = gpd.GeoDataFrame({"pond_id": [f"P{i}" for i in range(len(geoms))], "cluster_id": "C01",
                              "kind": kinds}, geometry=geoms, crs=crs)
    plan = plan_county_flight(ponds)
    s = plan.settings
    pose = flight_poses(s)
    e0, n0 = transformer(WGS84, crs).transform(s.origin_lon, s.origin_lat)
    nadir_fp, all_fp = [], []
    for i in range(0, s.n_frames, 5):
        fp = true_footprint_m((pose["east_m"][i], pose["north_m"][i]), pose["height_m"][i],
                              (pose["gimbal_yaw_deg"][i], pose["gimbal_pitch_deg"][i], 0.0), s)
        fp = affinity.translate(fp, e0, n0)
        all_fp.append(fp)
        if pose["gimbal_pitch_deg"][i] == -90.0:
            nadir_fp.append(fp)
    for g in ponds[ponds["kind"] == "new_pond"].geometry:
        assert any(f.contains(g.centroid) for f in nadir_fp)
    assert box(*plan.ortho_bounds_m).buffer(1.0).contains(gpd.GeoSeries(all_fp).union_all())
    assert 6.0 <= s.speed_m_s <= 12.0 and 12.0 <= s.pass_s <= 40.0


def test_county_clip_without_ponds_is_an_input_error(tmp_path):
    from tuban import InputError
    from tuban.sample_data.county_clip import generate_county_clip

    (tmp_path / "truth").mkdir()
    (tmp_path / "county.json").write_text('{"crs": "EPSG:32650"}')
    (tmp_path / "truth" / "ponds_after.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(InputError, match="ponds_after.geojson"):
        generate_county_clip(tmp_path)
    assert not (tmp_path / "uav").exists()  # nothing written
