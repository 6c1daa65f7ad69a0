"""The sample county generator: determinism, truth that matches the pixels, contracts of every file."""

from __future__ import annotations

import json
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS
from rasterio.features import geometry_mask
from shapely.geometry import box
from shapely.ops import unary_union

from tuban import OutputExistsError
from tuban.cli import app
from tuban.sample_data.county import CountyFiles, CountySpec, generate_county, read_manifest
from tuban.sample_data.radiometry import Layer, render_surface

SMALL = CountySpec.small()
RASTERS = ("s2_before", "s2_after", "hr_before", "hr_after")
TRUTH = ("ponds_before", "ponds_after", "new_ponds", "removed_ponds", "drained_ponds")


@pytest.fixture(scope="module")
def county(tmp_path_factory) -> CountyFiles:
    return generate_county(tmp_path_factory.mktemp("c0") / "county", 0, spec=SMALL)


def _ponds(files: CountyFiles) -> gpd.GeoDataFrame:
    both = pd.concat([gpd.read_file(files.ponds_before), gpd.read_file(files.ponds_after)])
    return gpd.GeoDataFrame(both.drop_duplicates("pond_id"), crs=4326)


def _median_inside(files: CountyFiles, scene: str, ponds: gpd.GeoDataFrame, erode_m: float):
    """Per pond: median NDWI and NIR reflectance of pixels well inside the polygon."""
    with rasterio.open(getattr(files, scene)) as src:
        refl = src.read().astype(float) / 10000.0
        g = ponds.to_crs(src.crs)
        out = []
        for geom in g.geometry:
            inside = geometry_mask([geom.buffer(-erode_m)], refl.shape[1:], src.transform, invert=True)
            inside &= refl[0] > 0
            blue, green, red, nir = (b[inside] for b in refl)
            out.append((np.median((green - nir) / (green + nir)), np.median(nir)) if inside.sum() >= 4 else (np.nan, np.nan))
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(x0=st.floats(0, 60), y0=st.floats(0, 60), w=st.floats(3, 40), h=st.floats(3, 40),
       ss=st.sampled_from([2, 4, 5]))
def test_rendering_area_averages_mixed_pixels(x0, y0, w, h, ss):
    """A feature's signal summed over pixels equals its area (to one fine pixel along its edge)."""
    grid = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 100.0)  # 10 x 10 px of 10 m
    bg = Layer(box(0, 0, 1, 1), (0.1, 0.1, 0.1, 0.3), 0.0)
    dike = Layer(box(x0, y0, x0 + w, y0 + h), (0.2, 0.3, 0.4, 0.1), 0.05)
    refl, amp = render_surface([dike], grid, 10, 10, supersample=ss, background=bg)
    assert refl.shape == (4, 10, 10) and amp.shape == (10, 10)
    est_m2 = ((refl[2] - 0.1) / (0.4 - 0.1)).sum() * 100.0
    fine_m = 10.0 / ss
    assert abs(est_m2 - w * h) <= 2 * (w + h) * fine_m + fine_m**2
    assert refl.min() >= 0.1 - 1e-6 and refl[2].max() <= 0.4 + 1e-6  # mixtures stay between the two


def test_spec_validation():
    with pytest.raises(ValueError):
        CountySpec(s2_size_px=300, hr_size_px=1800)  # 3.6 km HR scene cannot sit in a 3 km county
    with pytest.raises(ValueError):
        CountySpec(before_date="2026-10-15", after_date="2025-11-03")
    with pytest.raises(ValueError):
        CountySpec.of_size_km(0.5)
    assert CountySpec.of_size_km(12).hr_size_px == 1800


def test_same_seed_gives_identical_files(county, tmp_path):
    calls = []
    again = generate_county(tmp_path / "again", 0, spec=SMALL, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == sorted(d for d, _ in calls)
    first, second = read_manifest(county.root)["files"], read_manifest(again.root)["files"]
    assert first == second
    assert county.manifest.read_bytes() == again.manifest.read_bytes()
    assert county.s2_after.read_bytes() == again.s2_after.read_bytes()


def test_different_seed_gives_different_layout(county, tmp_path):
    other = generate_county(tmp_path / "other", 1, spec=SMALL)
    a, b = _ponds(county), _ponds(other)
    hashes_a = {k: v["sha256"] for k, v in read_manifest(county.root)["files"].items()}
    hashes_b = {k: v["sha256"] for k, v in read_manifest(other.root)["files"].items()}
    assert all(hashes_a[k] != hashes_b[k] for k in hashes_a)
    assert len(a) != len(b) or not np.allclose(a.geometry.centroid.x.values, b.geometry.centroid.x.values)


def test_rasters_follow_the_contract(county):
    shapes = {}
    for name in RASTERS:
        with rasterio.open(getattr(county, name)) as src:
            assert CRS.from_user_input(src.crs).to_epsg() == 32650
            assert src.count == 4 and src.dtypes == ("uint16",) * 4
            assert src.descriptions == ("blue", "green", "red", "nir")
            assert src.nodata == 0
            assert src.profile["tiled"] and src.block_shapes[0] == (512, 512)
            assert src.compression.name.lower() == "deflate"
            date = src.tags()["ACQUISITION_DATE"]
            assert src.tags()["TIFFTAG_DATETIME"].startswith(date.replace("-", ":"))
            expected = SMALL.before_date if name.endswith("before") else SMALL.after_date
            assert date == expected
            shapes[name] = (src.transform, src.res)
            data = src.read()
            valid = data[0] > 0
            assert valid.mean() > 0.6  # a wedge of no data, but mostly valid
            assert ((data > 0) == valid).all()  # nodata is all bands at once
            refl = data[:, valid] / 10000.0
            assert 0.01 < np.median(refl[0]) < 0.3 and 0.05 < np.median(refl[3]) < 0.6
    assert shapes["s2_before"][1] == (10.0, 10.0) and shapes["hr_before"][1] == (2.0, 2.0)
    for sensor in ("s2", "hr"):
        tb, res = shapes[f"{sensor}_before"]
        ta, _ = shapes[f"{sensor}_after"]
        # the after grid is shifted by a fraction of a pixel on both axes: never the same grid
        for offset in ((ta.c - tb.c) / res[0], (ta.f - tb.f) / res[1]):
            frac = abs(offset - round(offset))
            assert 0.25 <= frac <= 0.5 + 1e-9 or 0.5 <= frac <= 0.75


def test_truth_files_are_consistent(county):
    sets = {}
    for name in TRUTH:
        doc = json.loads(getattr(county, name).read_text(encoding="utf-8"))
        assert "crs" not in doc and doc["type"] == "FeatureCollection"
        gdf = gpd.read_file(getattr(county, name))
        for col in ("pond_id", "kind", "area_m2", "water_colour", "in_s2", "in_hr", "grid_id"):
            assert col in gdf.columns, (name, col)
        assert set(gdf["water_colour"].dropna()) <= {"clear", "turbid", "algae", "mud"}
        sets[name] = gdf
    ids = {k: set(v["pond_id"]) for k, v in sets.items()}
    assert ids["new_ponds"] and ids["removed_ponds"] and ids["drained_ponds"]
    assert ids["new_ponds"] <= ids["ponds_after"] and not ids["new_ponds"] & ids["ponds_before"]
    assert ids["removed_ponds"] <= ids["ponds_before"] and not ids["removed_ponds"] & ids["ponds_after"]
    assert ids["drained_ponds"] <= ids["ponds_before"] & ids["ponds_after"]
    assert (sets["drained_ponds"]["water_colour"] == "mud").all()
    assert set(sets["new_ponds"]["kind"]) == {"new_pond"}
    # areas are metric, 50-300 m sides, 0.05-10 ha
    metric = sets["ponds_after"].to_crs(32650)
    assert np.allclose(metric.area, sets["ponds_after"]["area_m2"], rtol=1e-3)
    assert ((metric.area > 500) & (metric.area < 100_000)).all()
    manifest = read_manifest(county.root)
    assert manifest["counts"]["ponds"]["new_pond"] == len(sets["new_ponds"])


def test_water_truth_matches_pixels(county):
    ponds = _ponds(county)
    clear = ponds[(ponds["in_hr"]) & (ponds["state_before"] == "water")
                  & ponds["water_colour_before"].isin(["clear", "turbid"])]
    stats = _median_inside(county, "hr_before", clear, 4.0)
    assert len(clear) >= 1 and (stats[:, 0] > 0.2).all()
    # water-filled ponds of every colour are darker in nir than any field around them
    wet = ponds[(ponds["in_s2"]) & (ponds["state_before"] == "water")]
    assert (_median_inside(county, "s2_before", wet, 12.0)[:, 1] < 0.16).all()


def test_new_removed_and_drained_ponds_change_in_the_pixels(county):
    ponds = _ponds(county)
    ponds = ponds[ponds["in_hr"] & ~ponds["cloud_after"]]
    for kind, erode in (("new_pond", 4.0), ("removed_pond", 4.0), ("drained_pond", 4.0)):
        sel = ponds[ponds["kind"] == kind]
        assert len(sel) >= 1, kind
        before = _median_inside(county, "hr_before", sel, erode)
        after = _median_inside(county, "hr_after", sel, erode)
        ok = ~np.isnan(before[:, 0]) & ~np.isnan(after[:, 0])
        before, after = before[ok], after[ok]
        if kind == "new_pond":  # land (bright nir) -> water (dark nir)
            assert (before[:, 1] > 0.18).all() and (after[:, 1] < 0.16).all()
        elif kind == "removed_pond":  # water -> soil or crop
            assert (before[:, 1] < 0.16).all() and (after[:, 1] > 0.18).all()
        else:  # water -> wet mud: no water index left, brighter nir
            assert (after[:, 0] < 0.0).all() and (after[:, 1] > 0.1).all()
            assert np.median(before[:, 0] - after[:, 0]) > 0.1


def test_grids_tile_the_county_and_cover_every_pond(county):
    grids = gpd.read_file(county.grids)
    assert 6 <= len(grids) <= 12
    assert grids["grid_id"].is_unique and grids["name"].is_unique
    assert all(re.fullmatch(r"\d{6}", str(c)) for c in grids["admin_code"])
    assert all(re.fullmatch(r"1[3-9]\d{9}", str(p)) for p in grids["phone"])
    assert all(n.endswith("村") for n in grids["name"])
    ponds = _ponds(county).to_crs(32650)
    cover = unary_union(grids.to_crs(32650).geometry)
    assert all(cover.buffer(0.01).contains(g) for g in ponds.geometry)
    metric = grids.to_crs(32650)
    assert metric.area.sum() == pytest.approx(cover.area, rel=1e-6)  # no overlaps
    # each pond's grid_id is the grid containing its centroid
    joined = gpd.sjoin(gpd.GeoDataFrame(ponds[["grid_id"]], geometry=ponds.centroid, crs=32650),
                       metric[["grid_id", "geometry"]], predicate="within")
    assert (joined["grid_id_left"] == joined["grid_id_right"]).all()


def test_existing_output_is_kept_and_failure_leaves_nothing(county, tmp_path, monkeypatch):
    with pytest.raises(OutputExistsError):
        generate_county(county.root, 0, spec=SMALL)
    target = tmp_path / "broken"

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("tuban.sample_data.county.write_geojson", boom)
    with pytest.raises(RuntimeError):
        generate_county(target, 0, spec=SMALL)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        generate_county(tmp_path / "neg", -1, spec=SMALL)


def test_cli_sample_happy_path_and_bad_input(runner, tmp_path):
    out = tmp_path / "county"
    res = runner.invoke(app, ["sample", "--out", str(out), "--seed", "2", "--size-km", "3"])
    assert res.exit_code == 0, res.output
    assert "new_pond" in res.stdout and str(out / "truth" / "new_ponds.geojson") in res.stdout
    assert (out / "s2" / "after.tif").is_file() and read_manifest(out)["seed"] == 2
    res = runner.invoke(app, ["sample", "--out", str(out), "--size-km", "3"])
    assert res.exit_code == 1 and "Error:" in res.output and "--overwrite" in res.output
    res = runner.invoke(app, ["sample", "--out", str(out), "--size-km", "3", "--seed", "5", "--overwrite"])
    assert res.exit_code == 0 and read_manifest(out)["seed"] == 5
    assert runner.invoke(app, ["sample", "--out", str(out), "--seed", "-1"]).exit_code == 2
    assert runner.invoke(app, ["sample", "--out", str(out), "--size-km", "0.1"]).exit_code == 2
    assert runner.invoke(app, ["sample"]).exit_code == 2


@pytest.mark.slow
def test_default_county_size_counts(tmp_path):
    # generation speed is measured in docs/sample_data.md, not asserted here (no timed unit tests)
    files = generate_county(tmp_path / "full", 0)
    m = read_manifest(files.root)
    s2 = m["counts"]["ponds_in_s2"]
    assert 40 <= sum(s2.values()) <= 130
    assert 8 <= s2["new_pond"] <= 32 and 4 <= s2["removed_pond"] <= 16 and 4 <= s2["drained_pond"] <= 11
    assert sum(m["counts"]["ponds_in_hr"].values()) < sum(s2.values())
    with rasterio.open(files.s2_before) as src:
        assert 1000 <= src.width <= 1400
    with rasterio.open(files.hr_before) as src:
        assert 1500 <= src.width <= 2000


def test_s2_values_look_like_real_sentinel2(county, real_data):
    """Same reflectance scale as a real Sentinel-2 scene (x10000): band medians within a factor 2.5,
    nir the brightest band over land, and water darker in nir than land in both."""
    cog = real_data / "s2_dollard" / "cog.tif"
    if not cog.is_file():
        pytest.skip(f"{cog} not found")
    with rasterio.open(cog) as src:
        real = src.read().astype(float)
    with rasterio.open(county.s2_before) as src:
        ours = src.read().astype(float)
    ours = ours[:, ours[0] > 0]
    real = real.reshape(4, -1)
    real = real[:, real[0] > 0]
    for b in range(4):
        ratio = np.median(ours[b]) / np.median(real[b])
        assert 0.4 < ratio < 2.5, (b, ratio)
    for a in (ours, real):
        land = a[3] > 1500
        assert land.mean() > 0.3 and np.median(a[3][land]) > np.median(a[2][land])
        assert np.percentile(a[3], 2) < 600  # some open water


def test_distractors_are_in_the_pixels(county):
    """Cloud on the after date only, a no-data wedge, and haze lifting blue more than nir before."""
    with rasterio.open(county.s2_before) as src:
        before = src.read().astype(float) / 10000.0
    with rasterio.open(county.s2_after) as src:
        after = src.read().astype(float) / 10000.0
    cloudy = (after > 0.35).all(axis=0)
    assert cloudy.sum() > 20 and not (before > 0.35).all(axis=0).any()
    assert (after[0] == 0).mean() > 0.01 and (before[0] == 0).sum() == 0
    manifest = read_manifest(county.root)
    assert manifest["scenes"]["s2/before"]["haze"] and not manifest["scenes"]["s2/after"]["haze"]
    gain = manifest["scenes"]["s2/after"]["gain"]
    assert all(0.85 < g < 0.97 for g in gain)
    # over open water (darkest nir), the hazy before date is brighter in blue than the after date
    water_b = before[3] < np.percentile(before[3][before[3] > 0], 3)
    water_a = (after[3] < np.percentile(after[3][after[3] > 0], 3)) & (after[0] > 0)
    assert np.median(before[0][water_b]) > np.median(after[0][water_a]) + 0.01
