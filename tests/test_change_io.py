"""Date loading, band roles, alignment, water statistics and scoring for change detection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from shapely.geometry import box

from tuban import BandError, RasterError
from tuban.cli import app
from tuban.imagery.align import estimate_shift
from tuban.imagery.bands import ROLES, parse_band_spec, resolve_roles
from tuban.imagery.masks import qa_mask
from tuban.imagery.raster_io import date_from_text, open_date
from tuban.imagery.water import fit_normalisation, otsu_threshold, otsu_two_thresholds
from tuban.pipelines.change import ChangeSettings, run_change
from tuban.pipelines.evaluate import match_objects


@given(st.dictionaries(st.sampled_from(ROLES), st.integers(1, 30), min_size=1))
def test_band_spec_round_trip(roles):
    text = ",".join(f"{r}={i}" for r, i in roles.items())
    assert parse_band_spec(text) == roles


@pytest.mark.parametrize("bad", ["green", "green=0", "teal=2", "green=1,green=2", "nir=x"])
def test_band_spec_rejects_bad_text(bad):
    with pytest.raises(ValueError):
        parse_band_spec(bad)


def test_role_resolution_order_explicit_then_descriptions_then_sensor():
    # NAIP preset says R,G,B,NIR; descriptions override it; --bands overrides both.
    assert resolve_roles(4, sensor="naip")["green"] == 2
    assert resolve_roles(4, descriptions=("nir", "green", None, None), sensor="naip")["green"] == 2
    assert resolve_roles(4, descriptions=("nir", "green", None, None), sensor="naip")["nir"] == 1
    assert resolve_roles(4, descriptions=("nir", "green", None, None), explicit={"green": 3})["green"] == 3
    assert resolve_roles(13, sensor="sentinel2")["swir1"] == 12
    assert resolve_roles(8, sensor="planetscope")["nir"] == 8


def test_unresolved_role_names_what_is_missing():
    with pytest.raises(BandError, match="green"):
        resolve_roles(3, descriptions=(None, None, None), source="x.tif")


@pytest.mark.parametrize("text,expected", [
    ("m_4709963_se_14_1_20090818.tif", "2009-08-18"),
    ("2020:03:05 10:11:12", "2020-03-05"),
    ("S2_2021-07-14_tile.tif", "2021-07-14"),
    ("LC80200392015216LGN00_B3.TIF", "2015-08-04"),
    ("1985.tif", "1985"),
    ("scene_v2.tif", None),
])
def test_dates_from_tags_and_file_names(text, expected):
    assert date_from_text(text) == expected


@settings(max_examples=15, deadline=None)
@given(st.floats(-3.0, 3.0), st.floats(-3.0, 3.0))
def test_phase_correlation_recovers_subpixel_shift(dx, dy):
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.random((160, 160)), 3)
    moved = ndimage.shift(img, (dy, dx), order=3, mode="reflect")
    ex, ey, resp = estimate_shift(img[16:-16, 16:-16], moved[16:-16, 16:-16])
    assert ex == pytest.approx(dx, abs=0.2)
    assert ey == pytest.approx(dy, abs=0.2)
    assert resp > 0.05


def test_otsu_one_and_two_thresholds():
    rng = np.random.default_rng(1)
    v = np.r_[rng.normal(-0.6, 0.05, 4000), rng.normal(-0.25, 0.05, 3000), rng.normal(0.5, 0.05, 300)]
    t1, t2 = otsu_two_thresholds(v)
    assert -0.6 < t1 < -0.25 < t2 < 0.5
    t, eta = otsu_threshold(np.r_[rng.normal(-0.5, 0.05, 1000), rng.normal(0.5, 0.05, 1000)])
    assert -0.2 < t < 0.2 and eta > 0.9


def test_normalisation_recovers_gain_and_haze_offset():
    rng = np.random.default_rng(2)
    before = {b: rng.uniform(0.02, 0.4, 20000).astype(np.float32) for b in ("green", "nir")}
    after = {b: (before[b] - 0.03) / 1.2 for b in before}  # after = (before - offset) / gain
    changed = rng.random(20000) < 0.1
    after["nir"][changed] = rng.uniform(0.02, 0.4, changed.sum())  # real change on 10 %
    gains = fit_normalisation(before, after, np.ones(20000, bool))
    assert gains["green"].gain == pytest.approx(1.2, rel=0.03)
    assert gains["green"].offset == pytest.approx(0.03, abs=0.005)
    assert gains["nir"].gain == pytest.approx(1.2, rel=0.05)


def test_landsat_qa_bits():
    pre = np.array([20480, 53248, 36864, 45056, 61440, 1], dtype=np.uint16)
    assert qa_mask(pre, "landsat-pre").tolist() == [False, True, True, True, True, True]
    c2 = np.array([21824, 22280, 23888, 1], dtype=np.uint16)  # clear, cloud, shadow, fill
    assert qa_mask(c2, "landsat-c2").tolist() == [False, True, True, True]


def test_match_objects_is_one_to_one():
    truth = [box(0, 0, 100, 100)]
    pred = [box(0, 0, 100, 100), box(5, 5, 100, 100)]
    assert match_objects(pred, truth, 0.25) == [(0, 0, 1.0)]
    assert match_objects([box(0, 0, 10, 10)], truth, 0.25) == []


def test_cli_eval_precision_recall_f1(runner, tmp_path):
    def fc(boxes, kind=None):
        feats = [{"type": "Feature", "properties": {"kind": kind} if kind else {},
                  "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}}
                 for x0, y0, x1, y1 in boxes]
        return json.dumps({"type": "FeatureCollection", "features": feats})
    d = 0.001
    truth = tmp_path / "truth.geojson"
    truth.write_text(fc([(117, 24, 117 + d, 24 + d), (117.01, 24, 117.01 + d, 24 + d)]))
    pred = tmp_path / "pred.geojson"
    pred.write_text(fc([(117, 24, 117 + d, 24 + d), (117, 24, 117 + d, 24 + d), (118, 24, 118 + d, 24 + d)],
                       "new_pond"))
    res = runner.invoke(app, ["eval", str(pred), str(truth), "--iou", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert (s["matched"], s["predictions"], s["truths"]) == (1, 3, 2)
    assert s["precision"] == pytest.approx(1 / 3, abs=1e-3) and s["recall"] == 0.5
    assert s["f1"] == pytest.approx(0.4, abs=1e-3)
    res = runner.invoke(app, ["eval", str(pred), str(truth), "--kind", "removed_pond", "--json"])
    assert json.loads(res.output)["predictions"] == 0
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    res = runner.invoke(app, ["eval", str(bad), str(truth)])
    assert res.exit_code == 1 and res.output.count("Error:") == 1


# --- real public data ---------------------------------------------------------------------------


def test_landsat_per_band_folder_with_mtl(real_data):
    src = open_date([real_data / "landsat8_crop"])
    assert src.date == "2015-08-04"
    assert {"blue", "green", "red", "nir", "swir1", "qa"} <= set(src.roles)
    assert src.qa_kind == "landsat-pre"
    assert src.scales["green"] == (2e-05, -0.1)


def test_landsat_same_date_twice_reports_no_ponds(real_data):
    r = run_change([real_data / "landsat8_crop"], [real_data / "landsat8_crop"])
    assert r.stats["index"] == "mndwi"
    assert r.stats["pixels"]["masked"] > 0  # its cumulus clouds are masked (QA + heuristics)
    assert not r.patches["kind"].str.endswith("_pond").any()
    assert r.shift_px == (0.0, 0.0)


@pytest.mark.slow
def test_naip_potholes_find_plausible_water_change(real_data):
    folder = real_data / "naip_potholes"
    r = run_change([folder / "m_4709963_se_14_1_20090818.tif"], [folder / "m_4709963_se_14_1_20150926.tif"],
                   ChangeSettings(sensor_before="naip", sensor_after="naip"))
    assert r.dates == ("2009-08-18", "2015-09-26")
    assert len(r.patches) > 0
    assert abs(r.shift_px[0]) < 3 and abs(r.shift_px[1]) < 3  # grids are 1-3 px apart
    assert (r.patches["area_m2"] >= 500).all()
    assert r.patches["lon"].between(-99.3, -99.0).all() and r.patches["lat"].between(46.9, 47.2).all()


def test_pucallpa_geographic_uint8_with_explicit_bands(real_data):
    roles = parse_band_spec("swir1=1,nir=2,red=3,green=4")
    folder = real_data / "landsat_pucallpa"
    r = run_change([folder / "1985.tif"], [folder / "2020.tif"], ChangeSettings(bands_before=roles, bands_after=roles))
    assert r.stats["index"] == "mndwi"
    assert r.stats["grid"]["crs"].startswith("EPSG:327")  # areas in UTM, not degrees
    assert r.dates == ("1985", "2020")
    assert {"new_water", "lost_water"} & set(r.patches["kind"])  # the river migrated


def test_s2_dollard_float64_same_date_is_quiet(real_data):
    cog = real_data / "s2_dollard" / "cog.tif"
    r = run_change([cog], [cog], ChangeSettings(sensor_before="sentinel2", sensor_after="sentinel2"))
    assert len(r.patches) == 0


def test_corrupt_tiles_list_names_the_file(tmp_path):
    bad = tmp_path / "x.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(RasterError, match="x.tif"):
        open_date([bad])
