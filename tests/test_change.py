"""Change detection end to end on small synthetic scenes with known pond changes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from tuban.cli import app
from tuban.imagery.crs import transformer
from tuban.pipelines.change import ChangeSettings, run_change

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402

EXPECTED = {"removed": "removed_pond", "drained": "drained_pond", "new": "new_pond", "new_algae": "new_pond"}


def _kinds_at(patches) -> dict[str, str]:
    """Pond name -> kind of the patch whose centroid is within 30 m of the pond's centre."""
    to_utm = transformer(4326, cs.CRS)
    found = {}
    for _, row in patches.iterrows():
        x, y = to_utm.transform(row.lon, row.lat)
        for name in cs.PONDS:
            px, py = cs.pond_centre_map(name)
            if abs(px - x) < 30 and abs(py - y) < 30:
                found[name] = row.kind
    return found


@pytest.fixture(scope="module")
def scene_pair(tmp_path_factory) -> tuple[Path, Path]:
    return cs.pair(tmp_path_factory.mktemp("pair"))


def test_finds_new_removed_and_drained_ponds_and_nothing_else(scene_pair):
    result = run_change([scene_pair[0]], [scene_pair[1]])
    assert _kinds_at(result.patches) == EXPECTED
    assert len(result.patches) == 4  # the kept pond and the fields are not reported
    area = result.patches.loc[result.patches.kind == "new_pond", "area_m2"].max()
    assert area == pytest.approx(14 * 14 * 100.0, rel=0.1)
    assert result.dates == ("2024-05-01", "2025-06-02")
    assert abs(result.shift_px[0]) < 0.3 and abs(result.shift_px[1]) < 0.3


def test_misregistration_is_measured_and_corrected(tmp_path):
    # The after image's georeference is off by 1.5 px east and 0.5 px south.
    shifted = cs.TRANSFORM @ Affine.translation(1.5, 0.5)
    b, a = cs.pair(tmp_path, after_transform=shifted)
    result = run_change([b], [a])
    assert result.shift_px[0] == pytest.approx(1.5, abs=0.25)
    assert result.shift_px[1] == pytest.approx(0.5, abs=0.25)
    assert _kinds_at(result.patches) == EXPECTED
    assert len(result.patches) == 4  # no sliver false alarms along shifted edges


def test_different_crs_resolution_and_extent(tmp_path):
    b, a = cs.pair(tmp_path)
    geo = tmp_path / "after_4326.tif"
    with rasterio.open(a) as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds,
                                              resolution=(8e-5, 8e-5))
        meta = src.meta | {"crs": "EPSG:4326", "transform": t, "width": w, "height": h}
        with rasterio.open(geo, "w", **meta) as dst:
            for i in range(1, 5):
                reproject(rasterio.band(src, i), rasterio.band(dst, i), resampling=Resampling.bilinear)
                dst.set_band_description(i, src.descriptions[i - 1])
    result = run_change([b], [geo])
    kinds = _kinds_at(result.patches)
    assert kinds["new"] == "new_pond" and kinds["removed"] == "removed_pond"
    new = result.patches[result.patches.kind == "new_pond"]["area_m2"].max()
    assert new == pytest.approx(19600, rel=0.15)  # m², measured in UTM, not in degrees


def test_nothing_is_reported_under_a_cloud(tmp_path):
    r0, c0, r1, c1 = cs.PONDS["new"]
    b, a = cs.pair(tmp_path, cloud_box=(r0 - 8, c0 - 8, r1 + 8, c1 + 8))
    result = run_change([b], [a])
    kinds = _kinds_at(result.patches)
    assert "new" not in kinds
    assert kinds["removed"] == "removed_pond"
    assert result.stats["pixels"]["masked"] > (r1 - r0 + 16) * (c1 - c0 + 16) * 0.9


def test_tiles_of_one_date_are_mosaicked(tmp_path, scene_pair):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    refl = cs.scene("after", 2)
    for i, (r, c) in enumerate([(0, 0), (0, 120), (120, 0), (120, 120)]):
        t = cs.TRANSFORM @ Affine.translation(c, r)
        cs.write(tiles / f"t{i}.tif", refl[:, r:r + 120, c:c + 120], transform=t, date="2025-06-02")
    one = run_change([scene_pair[0]], [cs.write(tmp_path / "a.tif", refl, date="2025-06-02")])
    mosaic = run_change([scene_pair[0]], [tiles])
    assert mosaic.patches.drop(columns="after_date").equals(one.patches.drop(columns="after_date"))
    assert mosaic.dates[1] == "2025-06-02"


def test_two_workers_and_small_blocks_give_identical_output(scene_pair):
    one = run_change([scene_pair[0]], [scene_pair[1]], ChangeSettings(block_px=1024, workers=1))
    calls = []
    two = run_change([scene_pair[0]], [scene_pair[1]], ChangeSettings(block_px=64, workers=2),
                     progress=lambda d, t: calls.append((d, t)))
    assert two.patches.equals(one.patches)
    assert calls[-1] == (16, 16)


@pytest.mark.slow
def test_dask_local_cluster_gives_identical_output(scene_pair):
    distributed = pytest.importorskip("distributed")
    local = run_change([scene_pair[0]], [scene_pair[1]], ChangeSettings(block_px=64))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        remote = run_change([scene_pair[0]], [scene_pair[1]],
                            ChangeSettings(block_px=64, scheduler=cluster.scheduler_address))
    assert remote.patches.equals(local.patches)


def test_cli_change_writes_rfc7946_geojson_report_and_gpkg(runner, tmp_path, scene_pair):
    out = tmp_path / "patches.geojson"
    rep = tmp_path / "report.json"
    args = ["change", str(scene_pair[0]), str(scene_pair[1]), "--out", str(out), "--report", str(rep),
            "--format", "gpkg"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert "shift_px" in doc["tuban_change"]
    props = doc["features"][0]["properties"]
    for key in ("patch_id", "kind", "score", "area_m2", "area_mu", "lon", "lat", "before_date", "after_date"):
        assert key in props
    assert 0.0 <= props["score"] <= 1.0
    assert props["area_mu"] == pytest.approx(props["area_m2"] / 666.667, rel=1e-3)
    ring = doc["features"][0]["geometry"]["coordinates"][0]
    assert 116 < ring[0][0] < 118 and 23 < ring[0][1] < 25  # lon, lat
    assert (tmp_path / "patches.gpkg").exists()
    report = json.loads(rep.read_text())
    assert report["stats"]["thresholds"]["water"] < report["stats"]["thresholds"]["water"] + 1
    # Same command again: refuses to overwrite; with --overwrite identical bytes (deterministic).
    assert runner.invoke(app, args).exit_code == 1
    first = out.read_bytes()
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0
    assert out.read_bytes() == first


def test_user_mask_removes_patches_inside(runner, tmp_path, scene_pair):
    to_wgs = transformer(cs.CRS, 4326)
    r0, c0, r1, c1 = cs.PONDS["new"]
    xs, ys = cs.TRANSFORM * (c0 - 3, r0 - 3), cs.TRANSFORM * (c1 + 3, r1 + 3)
    (x0, y0), (x1, y1) = to_wgs.transform(*xs), to_wgs.transform(*ys)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    mask = tmp_path / "mask.geojson"
    mask.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    out = tmp_path / "p.geojson"
    res = runner.invoke(app, ["change", str(scene_pair[0]), str(scene_pair[1]), "--out", str(out),
                              "--mask", str(mask)])
    assert res.exit_code == 0, res.output
    kinds = [f["properties"]["kind"] for f in json.loads(out.read_text())["features"]]
    assert len(kinds) == 3


def test_cli_change_bad_usage_exit_2(runner, tmp_path, scene_pair):
    out = tmp_path / "x.geojson"
    res = runner.invoke(app, ["change", str(scene_pair[0]), str(scene_pair[1]), "--out", str(out),
                              "--bands", "green=two"])
    assert res.exit_code == 2
    assert not out.exists()


def _bad(tmp_path: Path, kind: str, good: Path) -> list[str]:
    if kind == "corrupt":
        p = tmp_path / "corrupt.tif"
        p.write_bytes(b"II*\x00" + bytes(np.random.default_rng(0).integers(0, 255, 500, dtype=np.uint8)))
        return [str(p), str(good)]
    if kind == "not_georeferenced":
        return [str(cs.write(tmp_path / "plain.tif", cs.scene("after"), crs=None)), str(good)]
    if kind == "wrong_band_count":
        p = tmp_path / "one.tif"
        with rasterio.open(p, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint16",
                           crs=cs.CRS, transform=cs.TRANSFORM) as ds:
            ds.write(np.ones((1, 20, 20), dtype=np.uint16))
        return [str(p), str(good)]
    if kind == "all_nodata":
        return [str(cs.write(tmp_path / "empty.tif", np.zeros((4, 240, 240), np.float32) - 1, nodata=1)),
                str(good)]
    if kind == "no_overlap":
        far = cs.TRANSFORM @ Affine.translation(5000, 0)
        return [str(good), str(cs.write(tmp_path / "far.tif", cs.scene("after"), transform=far))]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,words", [
    ("corrupt", "cannot read"), ("not_georeferenced", "not georeferenced"),
    ("wrong_band_count", "band role"), ("all_nodata", "nodata"), ("no_overlap", "do not overlap"),
])
def test_cli_change_bad_inputs_one_line_exit_1_no_output(runner, tmp_path, scene_pair, kind, words):
    out = tmp_path / "out.geojson"
    res = runner.invoke(app, ["change", *_bad(tmp_path, kind, scene_pair[0]), "--out", str(out),
                              "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and words in lines[0]
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert not list(tmp_path.glob(".out.geojson*"))


def test_cli_bands_beyond_band_count_is_exit_1(runner, tmp_path, scene_pair):
    res = runner.invoke(app, ["change", str(scene_pair[0]), str(scene_pair[1]), "--out",
                              str(tmp_path / "o.geojson"), "--bands", "green=2,nir=9"])
    assert res.exit_code == 1
    assert "nir=9" in res.output


def test_cli_tiles_as_list_file_and_scheduler_usage(runner, tmp_path, scene_pair):
    refl = cs.scene("after", 2)
    names = []
    for i, c in enumerate((0, 120)):
        t = cs.TRANSFORM @ Affine.translation(c, 0)
        names.append(str(cs.write(tmp_path / f"a{i}.tif", refl[:, :, c:c + 120], transform=t, date="2025-06-02")))
    listing = tmp_path / "after.txt"
    listing.write_text("\n".join(names) + "\n")
    out = tmp_path / "p.geojson"
    res = runner.invoke(app, ["change", str(scene_pair[0]), f"@{listing}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["tuban_change"]["after_date"] == "2025-06-02"
    res = runner.invoke(app, ["change", str(scene_pair[0]), ",".join(names), "--out", str(out), "--overwrite",
                              "--scheduler", "localhost:8786"])
    assert res.exit_code == 2 and not res.output.count("Traceback")


# === speed mechanics (blobs, worker processes, lean block coding): h1 ==============================
# Everything below checks that the fast paths give exactly what the plain ones give.

import os  # noqa: E402

import shapely  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402
from rasterio.features import shapes  # noqa: E402
from scipy import ndimage  # noqa: E402
from shapely.geometry import shape  # noqa: E402

from tuban import RasterError, TubanError  # noqa: E402
from tuban.pipelines.change_blobs import blob_polygons, find_blobs  # noqa: E402
from tuban.pipelines.change_blocks import quantise_index, quantise_level  # noqa: E402
from tuban.pipelines.change_pool import local_pool, map_in, portable, results  # noqa: E402


def _whole_grid_polygons(codes, transform):
    changed = (codes == 2) | (codes == 3)
    return sorted((shapely.to_wkb(shape(g)), int(v))
                  for g, v in shapes(codes, mask=changed, transform=transform, connectivity=4))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 90), cols=st.integers(1, 90),
       strip_rows=st.integers(1, 40), atlas_px=st.sampled_from([8, 64, 1024]), smooth=st.booleans())
def test_strip_labelling_and_atlas_polygons_equal_whole_grid_polygonize(seed, rows, cols, strip_rows, atlas_px,
                                                                        smooth):
    rng = np.random.default_rng(seed)
    codes = (rng.random((rows, cols)) < 0.5) * rng.integers(2, 4, (rows, cols))
    codes = (ndimage.median_filter(codes, 3) if smooth else codes).astype(np.uint8)
    transform = Affine(29.97, 0, 400123.37, 0, -29.97, 2700001.1)
    blobs = list(find_blobs(codes, (2, 3), 1, strip_px=strip_rows * cols))
    polys = [p for i in range(0, len(blobs), 7) for p in blob_polygons(blobs[i:i + 7], codes, transform, atlas_px)]
    found = sorted((shapely.to_wkb(p), b.value) for p, b in zip(polys, blobs, strict=True))
    # every component once, byte-identical to GDAL polygonising the whole grid in one go
    assert found == _whole_grid_polygons(codes, transform)
    assert sum(b.n_px for b in blobs) == int(((codes == 2) | (codes == 3)).sum())


def test_find_blobs_skips_small_components_and_follows_tall_ones_across_strips():
    codes = np.zeros((50, 20), np.uint8)
    codes[2:48, 3] = 2  # one px wide, 46 rows tall: spans many 4-row strips
    codes[10, 10] = 3  # a single pixel
    blobs = list(find_blobs(codes, (2, 3), min_px=2, strip_px=4 * 20))
    assert [(b.value, b.rows, b.cols, b.n_px, b.seed_px) for b in blobs] == [(2, (2, 48), (3, 4), 46, (2, 3))]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 50),
              elements=st.one_of(st.floats(-1.5, 1.5, width=32), st.just(np.nan), st.just(np.inf))),
       st.one_of(st.just(0.0), st.floats(0.01, 5000.0)))
def test_quantisers_match_the_plain_formulas(values, reference):
    # the formulas the lean versions replaced (nan_to_num + clip + cast, 0 where not finite)
    q = np.clip(np.nan_to_num((values + 1.0) * 127.0), 0, 254).astype(np.uint8) + np.uint8(1)
    q[~np.isfinite(values)] = 0
    assert np.array_equal(quantise_index(values), q)
    ref = reference if reference > 0 else 1.0
    with np.errstate(over="ignore"):
        level = np.clip(np.nan_to_num(values * 1000 * np.float32(63.5 / ref)), 0, 254).astype(np.uint8) + np.uint8(1)
    level[~np.isfinite(values)] = 0
    with np.errstate(over="ignore"):
        assert np.array_equal(quantise_level(values * 1000, reference), level)


def test_workers_2_identical_with_clouds_shift_and_nodata(tmp_path):
    # cloud (whole-grid shadow pass), a 1.5 px shift (warped reads) and a nodata corner together
    shifted = cs.TRANSFORM @ Affine.translation(1.5, 0.5)
    b, a = cs.pair(tmp_path, after_transform=shifted, cloud_box=(150, 20, 200, 80))
    with rasterio.open(a, "r+") as ds:
        data = ds.read()
        data[:, :30, :30] = 0
        ds.nodata = 0
        ds.write(data)
    one = run_change([b], [a], ChangeSettings(workers=1, block_px=96))
    two = run_change([b], [a], ChangeSettings(workers=2, block_px=96))
    assert one.stats["pixels"] == two.stats["pixels"]
    assert one.stats["pixels"]["masked"] > 30 * 30
    assert two.patches.equals(one.patches)
    assert set(one.stats["seconds"]) == {"prepare", "blocks", "shadows", "patches"}


def test_cloud_masks_do_not_depend_on_block_size(tmp_path):
    # Blocks near cloud candidates are coded again with a halo, as the whole grid would be.
    b, a = cs.pair(tmp_path, cloud_box=(150, 20, 200, 80))
    big = run_change([b], [a], ChangeSettings(block_px=1024))
    for block_px, workers in ((96, 1), (37, 2)):
        small = run_change([b], [a], ChangeSettings(block_px=block_px, workers=workers))
        assert small.stats["pixels"] == big.stats["pixels"]
        assert small.patches.equals(big.patches)
    assert big.stats["pixels"]["masked"] >= 50 * 60  # the cloud itself, at least


def test_worker_errors_come_back_as_one_tuban_error():
    def_path = "/data/x.tif"
    with pytest.raises(TubanError, match="x.tif: broken"):
        portable(_raise_raster_error, def_path)
    with local_pool(2) as pool:
        assert map_in(pool, abs, [-1, -2, 3]) == [1, 2, 3]
        with pytest.raises(TubanError, match="x.tif: broken"):
            map_in(pool, _raise_raster_error, [def_path])
    with local_pool(2) as pool, pytest.raises(TubanError, match="worker process died"):
        results([pool.submit(os._exit, 3)])


def _raise_raster_error(path):
    raise RasterError(path, "broken")


def test_cli_change_two_workers_same_bytes(runner, tmp_path, scene_pair):
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}.geojson"
        res = runner.invoke(app, ["change", str(scene_pair[0]), str(scene_pair[1]), "--out", str(out),
                                  "--workers", workers, "--block-size-px", "64"])
        assert res.exit_code == 0, res.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    res = runner.invoke(app, ["change", str(scene_pair[0]), str(scene_pair[1]), "--out", str(tmp_path / "x.geojson"),
                              "--workers", "0"])
    assert res.exit_code == 2
