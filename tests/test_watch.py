"""Re-watch against re-stocking: water back in a closed pond reopens it for the next packs."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import rasterio
import shapely
from cases_fixtures import (
    LAT0,
    LON0,
    grids_file,
    offset,
    patch_features,
    pond_raster,
    square,
    write_fc,
)

from tuban.cli import app
from tuban.imagery.vector_io import read_vector
from tuban.pipelines.cases import close_case
from tuban.pipelines.ledger import open_ledger
from tuban.pipelines.tasks_export import ExportSettings, export_packs
from tuban.pipelines.triage import read_patches, triage
from tuban.pipelines.watch import WatchSettings, polygon_water, watch

CENTRES = [offset(LON0, LAT0, -200, 0), offset(LON0, LAT0, 0, 200), offset(LON0, LAT0, 200, -150),
           offset(LON0, LAT0, -150, -250)]


@pytest.fixture()
def ledger(tmp_path):
    """Four pond cases: closed, rectified, closed, and one still open (not watched)."""
    patches, _ = read_patches(write_fc(tmp_path / "p.geojson", patch_features(CENTRES, side_m=80)))
    path = tmp_path / "tuban.gpkg"
    triage(path, patches, read_vector(grids_file(tmp_path / "g.geojson")))
    close_case(path, "350181-00001", "filled in")
    with open_ledger(path) as led, led.transaction():
        led.set_status("350181-00002", "rectified", "verdict", verdict="rectified")
    close_case(path, "350181-00003", "filled in")
    return path


def _status(path):
    with open_ledger(path) as led:
        return dict(led.conn.execute("SELECT case_id, status FROM cases").fetchall())


def test_water_back_reopens_as_restocked_and_dry_ponds_stay_closed(ledger, tmp_path):
    wet = [square(*c, 80) for c in CENTRES[:2]] + [square(*CENTRES[3], 80)]
    img = pond_raster(tmp_path / "new.tif", wet, size_px=200)  # pond 3 (closed) stays dry crop land
    res = watch(ledger, img)
    assert 0.0 <= res.threshold_ndwi < 0.5
    assert set(res.reopened) == {"350181-00001", "350181-00002"}
    checks = {c.case_id: c for c in res.checked}
    assert set(checks) == {"350181-00001", "350181-00002", "350181-00003"}  # the open case is not watched
    assert checks["350181-00001"].water_fraction > 0.6 and checks["350181-00003"].water_fraction < 0.1
    assert checks["350181-00001"].dike_fraction > 0.5  # dry rim inside the polygon edge
    assert _status(ledger) == {"350181-00001": "restocked", "350181-00002": "restocked",
                               "350181-00003": "closed", "350181-00004": "open"}
    with open_ledger(ledger) as led:
        assert led.case("350181-00001")["priority"] == 1
    # the same image again changes nothing
    again = watch(ledger, img)
    assert again.unchanged
    # restocked cases are in the next packs, with re-stocking instructions
    packs = export_packs(ledger, tmp_path / "packs", ExportSettings())
    with zipfile.ZipFile(packs[0].path) as zf:
        fc = json.loads(zf.read(f"{packs[0].pack_id}/tasks.geojson"))
    props = {f["properties"]["case_id"]: f["properties"] for f in fc["features"]}
    assert set(props) == {"350181-00001", "350181-00002", "350181-00004"}
    assert "closed or rectified" in props["350181-00001"]["instructions"]
    assert props["350181-00001"]["task_id"] == "350181-00001-T1"


def test_scene_threshold_adapts_to_a_darker_scene(ledger, tmp_path):
    img = pond_raster(tmp_path / "new.tif", [square(*CENTRES[0], 80)], size_px=200)
    with rasterio.open(img, "r+") as ds:  # haze/gain change: every band x0.5 + 0.05 offset
        ds.write(ds.read() * 0.5 + 0.05)
    res = watch(ledger, img)
    assert res.reopened == ("350181-00001",)


def test_cases_outside_the_image_are_skipped(ledger, tmp_path):
    img = pond_raster(tmp_path / "far.tif", [], size_px=60, centre=(LON0 + 0.2, LAT0))
    res = watch(ledger, img)
    assert res.checked == () and {r for _, r in res.skipped} == {"outside the image"}


def test_polygon_water_counts_edges_as_dikes():
    nd = np.full((6, 6), 0.5)
    inside = np.zeros((6, 6), bool)
    inside[1:5, 1:5] = True
    frac, dike, n = polygon_water(nd, inside, 0.1)
    assert (frac, dike, n) == (1.0, 0.0, 16)
    nd[1, 1:5] = -0.2
    assert polygon_water(nd, inside, 0.1)[1] == pytest.approx(4 / 12)


def test_cli_watch_and_band_errors(ledger, tmp_path, runner):
    img = pond_raster(tmp_path / "new.tif", [square(*CENTRES[0], 80)], size_px=200)
    r = runner.invoke(app, ["watch", str(img), "--ledger", str(ledger), "--bands", "green=2,nir=4"])
    assert r.exit_code == 0, r.output
    assert "1 reopened as restocked: 350181-00001" in r.output
    r = runner.invoke(app, ["watch", str(img), "--ledger", str(ledger), "--bands", "green=two"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["watch", str(img), "--ledger", str(ledger), "--bands", "green=2,nir=9"])
    assert r.exit_code == 1 and "Error:" in r.output
    with rasterio.open(img, "r+") as ds:
        ds.descriptions = (None, None, None, None)
    r = runner.invoke(app, ["watch", str(img), "--ledger", str(ledger)])
    assert r.exit_code == 1 and "nir" in r.output


def test_watch_settings_reach_the_decision(ledger, tmp_path):
    img = pond_raster(tmp_path / "new.tif", [square(*CENTRES[0], 80)], size_px=200)
    res = watch(ledger, img, WatchSettings(min_water_fraction=0.99))
    assert res.reopened == ()


def test_real_naip_lake_reopens_and_farmland_does_not(real_data, tmp_path):
    """Real NAIP (R,G,B,NIR uint8, EPSG:26914): a case on a prairie-pothole lake vs one on dry land."""
    from pyproj import Transformer
    from scipy import ndimage

    from tuban.imagery.chips import render_chip
    from tuban.pipelines.ledger import open_ledger as _open

    img = real_data / "naip_potholes" / "m_4709963_se_14_1_20150926.tif"
    with rasterio.open(img) as src:
        g, n = src.read(2).astype(float), src.read(4).astype(float)
        nd = (g - n) / np.maximum(g + n, 1)
        tf, crs = src.transform, src.crs
    lakes, count = ndimage.label(ndimage.binary_opening(nd > 0.1, iterations=2))
    assert count > 0, "expected open water in the 2015 NAIP scene"
    biggest = 1 + int(np.argmax(ndimage.sum(np.ones_like(nd), lakes, range(1, count + 1))))
    core = ndimage.distance_transform_edt(lakes == biggest)
    r, c = np.unravel_index(int(np.argmax(core)), core.shape)
    dry = ndimage.uniform_filter(nd, 25)
    dry[:30, :] = dry[-30:, :] = dry[:, :30] = dry[:, -30:] = np.inf
    r2, c2 = np.unravel_index(int(np.argmin(dry)), dry.shape)
    to_ll = Transformer.from_crs(crs, 4326, always_xy=True)
    half_px = min(8, int(core[r, c]) - 1)
    polys = []
    for row, col, h in ((r, c, half_px), (r2, c2, 8)):
        x, y = tf * (col + 0.5, row + 0.5)
        d = h * tf.a
        ring = [to_ll.transform(x + dx, y + dy) for dx, dy in ((-d, -d), (d, -d), (d, d), (-d, d), (-d, -d))]
        polys.append(shapely.Polygon(ring))
    path = tmp_path / "l.gpkg"
    with _open(path, create=True) as led, led.transaction():
        for i, poly in enumerate(polys, start=1):
            led.insert_case({"case_id": f"000000-0000{i}", "status": "closed", "kind": "new_pond",
                             "lon": poly.centroid.x, "lat": poly.centroid.y}, poly)
    res = watch(path, img, WatchSettings(sensor="naip"))
    assert res.reopened == ("000000-00001",)
    checks = {c.case_id: c for c in res.checked}
    assert checks["000000-00001"].water_fraction > 0.9 and checks["000000-00002"].water_fraction < 0.1
    chip = render_chip(img, polys[0])
    assert chip[:4] == b"\x89PNG"





def test_a_clouded_pond_is_skipped_not_judged(ledger, tmp_path):
    img = pond_raster(tmp_path / "new.tif", [square(*CENTRES[1], 80)], size_px=200)
    with rasterio.open(img, "r+") as ds:
        data = ds.read()
        row, col = ds.index(*__import__("pyproj").Transformer.from_crs(4326, ds.crs, always_xy=True)
                            .transform(*CENTRES[0]))
        data[:, row - 15:row + 15, col - 15:col + 15] = 0.6  # a white cumulus over case 1
        ds.write(data)
    res = watch(ledger, img)
    assert dict(res.skipped)["350181-00001"].startswith("cloud or cloud shadow")
    assert res.reopened == ("350181-00002",)
    assert _status(ledger)["350181-00001"] == "closed"


def test_swir_switches_to_mndwi_and_finds_an_algae_pond(ledger, tmp_path):
    """Algae-rich water: NDWI below 0 (nir 0.10 > green 0.09) but MNDWI clearly positive."""
    src = pond_raster(tmp_path / "4band.tif", [square(*CENTRES[0], 80)], size_px=200)
    with rasterio.open(src) as ds:
        rgbn = ds.read()
        profile = ds.profile | {"count": 5}
    algae = rgbn[3] < 0.03  # the pond pixels of the fixture (water: nir 0.02)
    rgbn[:, algae] = np.array([0.05, 0.09, 0.05, 0.10])[:, None]
    swir = np.where(algae, 0.02, 0.20).astype(np.float32)
    five = tmp_path / "5band.tif"
    with rasterio.open(five, "w", **profile) as ds:
        ds.write(np.concatenate([rgbn, swir[None]]))
    only_nir = watch(ledger, five, WatchSettings(bands={"green": 2, "nir": 4}))
    assert only_nir.reopened == ()
    with_swir = watch(ledger, five, WatchSettings(bands={"green": 2, "nir": 4, "swir1": 5}))
    assert with_swir.reopened == ("350181-00001",)


def test_only_restockable_pond_cases_are_watched(ledger, tmp_path):
    """Water in a closed new_water case, or in a pond verified legal, is not re-stocking (QA F28)."""
    with open_ledger(ledger) as led, led.transaction():
        led.update_case("350181-00001", kind="new_water")
        led.set_status("350181-00002", "closed", "verdict", verdict="legal")
    wet = [square(*c, 80) for c in CENTRES]
    res = watch(ledger, pond_raster(tmp_path / "all_wet.tif", wet, size_px=200))
    assert {c.case_id for c in res.checked} == {"350181-00003"}
    assert set(res.reopened) == {"350181-00003"}
    assert _status(ledger)["350181-00001"] == "closed" and _status(ledger)["350181-00002"] == "closed"
