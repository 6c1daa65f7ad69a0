"""YOLO datasets, offline training and the shipped pond model (real ultralytics, tiny runs)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from tuban.cli import app
from tuban.models.dataset import DatasetSettings, build_dataset

GSD_M = 2.0
ORIGIN = (500000.0, 2700000.0)


def _scene(tmp: Path, n_ponds=36, size=512, seed=1, name="scene.tif"):
    """A 4-band uint16 scene with dark rectangular ponds; returns (raster, labels gdf, pond px boxes)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(1500, 2600, (4, size, size)).astype(np.uint16)
    data[3] += 800  # vegetated land: bright nir
    t = from_origin(*ORIGIN, GSD_M, GSD_M)
    polys, boxes = [], []
    occupied = np.zeros((size, size), bool)
    while len(boxes) < n_ponds:
        w, h = (int(v) for v in rng.integers(14, 44, 2))
        x, y = (int(v) for v in rng.integers(2, size - 48, 2))
        if occupied[y - 2:y + h + 2, x - 2:x + w + 2].any():
            continue
        occupied[y:y + h, x:x + w] = True
        data[:, y:y + h, x:x + w] = np.array([900, 800, 500, 300], np.uint16)[:, None, None]
        x0, y0 = t @ (x, y)
        x1, y1 = t @ (x + w, y + h)
        polys.append(box(x0, y1, x1, y0))
        boxes.append((x, y, w, h))
    path = tmp / name
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint16",
                       crs="EPSG:32650", transform=t) as ds:
        ds.write(data)
        ds.descriptions = ("blue", "green", "red", "nir")
    return path, gpd.GeoDataFrame({"label": ["pond"] * len(polys)}, geometry=polys, crs="EPSG:32650"), boxes


def _windows(ds_dir: Path, split: str):
    out = []
    for p in (ds_dir / "images" / split).glob("*.png"):
        col, row = (int(v) for v in p.stem.split("_")[-2:])
        out.append((col, row))
    return out


def test_dataset_split_has_no_leakage_and_labels_match(tmp_path):
    path, gdf, _ = _scene(tmp_path, size=640)
    neg = gpd.GeoDataFrame({"label": ["negative"]}, crs="EPSG:32650",
                           geometry=[box(ORIGIN[0] + 1200, ORIGIN[1] - 1280, ORIGIN[0] + 1280, ORIGIN[1] - 1200)])
    labels = gpd.GeoDataFrame(pd_concat([gdf, neg]), crs="EPSG:32650")
    s = build_dataset([(path, labels)], tmp_path / "ds", DatasetSettings(tile_size_px=128, val_fraction=0.2))
    assert s.names == ("pond",)
    assert s.chips["train"] > 0 and s.chips["val"] > 0 and s.guard_chips_dropped > 0
    tile = 128
    train = _windows(tmp_path / "ds", "train")
    val = _windows(tmp_path / "ds", "val")
    # no training chip touches a validation chip (a guard line lies between them)
    for cx, cy in train:
        for vx, vy in val:
            assert cx + tile < vx or vx + tile < cx or cy + tile < vy or vy + tile < cy
    # every pond lies in chips of one split only
    t = from_origin(*ORIGIN, 2, 2)
    for geom in gdf.geometry:
        (c0, r0), (c1, r1) = ~t @ (geom.bounds[0], geom.bounds[3]), ~t @ (geom.bounds[2], geom.bounds[1])
        splits = {name for name, wins in (("train", train), ("val", val))
                  for x, y in wins if x < c1 and c0 < x + tile and y < r1 and r0 < y + tile}
        assert len(splits) <= 1
    # label files are well-formed normalised boxes, one per visible pond
    n_rows = 0
    for lf in (tmp_path / "ds" / "labels").rglob("*.txt"):
        for line in lf.read_text().splitlines():
            cls, *vals = line.split()
            assert cls == "0" and len(vals) == 4 and all(0.0 <= float(v) <= 1.0 for v in vals)
            n_rows += 1
    assert n_rows == s.objects["train"] + s.objects["val"] > 20
    text = (tmp_path / "ds" / "data.yaml").read_text()
    assert f"path: \"{(tmp_path / 'ds').resolve()}\"" in text and "0: \"pond\"" in text


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_dataset_obb_labels_and_hard_negatives(tmp_path):
    path, gdf, _ = _scene(tmp_path, n_ponds=4, size=384)
    neg_poly = box(ORIGIN[0] + 2, ORIGIN[1] - 760, ORIGIN[0] + 760, ORIGIN[1] - 2)  # covers everything
    labels = gpd.GeoDataFrame({"label": ["pond"] * 4 + ["negative"]},
                              geometry=list(gdf.geometry) + [neg_poly], crs="EPSG:32650").to_crs(4326)
    s = build_dataset([(path, labels)], tmp_path / "ds", DatasetSettings(tile_size_px=128, obb=True))
    assert s.negative_chips > 0
    empties = [lf for lf in (tmp_path / "ds" / "labels").rglob("*.txt") if not lf.read_text().strip()]
    assert len(empties) >= s.negative_chips
    rows = [ln.split() for lf in (tmp_path / "ds" / "labels").rglob("*.txt") for ln in lf.read_text().splitlines()]
    assert rows and all(len(r) == 9 for r in rows)


def test_coarse_raster_chips_are_exactly_what_detect_feeds_the_model(tmp_path):
    """A 10 m raster beside a 2 m one: chips upsampled 4x, pixel for pixel as `tuban detect` slices them."""
    from tuban.imagery.slice_source import open_slice_source
    from tuban.imagery.slicing import Window, compute_stretch
    from tuban.pipelines.detect import _read_batch

    fine, fine_gdf, _ = _scene(tmp_path, n_ponds=12, size=256, name="fine.tif")
    coarse_path = tmp_path / "coarse.tif"
    t10 = from_origin(*ORIGIN, 10.0, 10.0)
    data = np.full((4, 160, 160), 2000, np.uint16)
    data[3] += 800
    data[:, 40:52, 48:68] = np.array([900, 800, 500, 300], np.uint16)[:, None, None]  # a 200 m x 120 m pond
    with rasterio.open(coarse_path, "w", driver="GTiff", width=160, height=160, count=4, dtype="uint16",
                       crs="EPSG:32650", transform=t10) as ds:
        ds.write(data)
        ds.descriptions = ("blue", "green", "red", "nir")
    x0, y0 = t10 @ (48, 40)
    x1, y1 = t10 @ (68, 52)
    coarse_gdf = gpd.GeoDataFrame({"label": ["pond"]}, geometry=[box(x0, y1, x1, y0)], crs="EPSG:32650")
    s = build_dataset([(fine, fine_gdf, "train"), (coarse_path, coarse_gdf, "val")], tmp_path / "ds",
                      DatasetSettings(tile_size_px=128))
    meta = json.loads((tmp_path / "ds" / "tuban_dataset.json").read_text())
    assert meta["upscale"] == [1.0, 4.0] and meta["gsd_m"] == pytest.approx([2.0, 2.5], abs=0.01)  # 10 m seen at 2.5 m (4x at most)
    assert s.chips["val"] == 25  # 160 px / (128 / 4) = 5 x 5 chips of 32 raster px each
    import cv2

    chip = tmp_path / "ds" / "images" / "val" / "r001_coarse_32_32.png"
    img = cv2.imread(str(chip))[..., ::-1]
    assert img.shape == (128, 128, 3)
    src = open_slice_source(coarse_path)
    try:
        sample, valid = src.read_decimated((3, 2, 1))
        _, images, _ = _read_batch(src, (3, 2, 1), compute_stretch(sample, valid), [Window(32, 32, 32, 32)], 4.0)
    finally:
        src.close()
    assert np.array_equal(img, images[0])
    # the pond (cols 48-68, rows 40-52) as seen in chip (32, 32), in raster pixels
    _, cx, cy, w, h = (float(v) for v in (chip.parent.parent.parent / "labels" / "val" / (chip.stem + ".txt"))
                       .read_text().split())
    assert (cx * 32 + 32, cy * 32 + 32, w * 32, h * 32) == pytest.approx((56, 46, 16, 12), abs=1e-3)  # cut at col 64
    # --model-gsd-m 0 keeps every raster at its native scale; the labels file is a GeoJSON in UTM with a
    # legacy "crs" member (as GDAL / QGIS write it), which must be honoured, not read as lon/lat
    from typer.testing import CliRunner

    labels = tmp_path / "labels.geojson"
    gpd.GeoDataFrame(pd_concat([fine_gdf, coarse_gdf]), crs="EPSG:32650").to_file(labels, driver="GeoJSON")
    r = CliRunner().invoke(app, ["model", "dataset", str(fine), str(coarse_path), "--labels", str(labels),
                                 "--out", str(tmp_path / "native"), "--tile-size-px", "64", "--model-gsd-m", "0"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "native" / "tuban_dataset.json").read_text())["upscale"] == [1.0, 1.0]
    # projected coordinates WITHOUT a crs member are read as lon/lat: a one-line error naming the file
    doc = json.loads(labels.read_text())
    doc.pop("crs")
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps(doc))
    r = CliRunner().invoke(app, ["model", "dataset", str(fine), "--labels", str(bad), "--out", str(tmp_path / "b"),
                                 "--tile-size-px", "64"])
    assert r.exit_code == 1 and r.output.startswith(f"Error: {bad}: labels cannot be placed") and "Traceback" not in r.output
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_cli_train_missing_init_weights_is_a_one_line_error(tmp_path, runner):
    (tmp_path / "ds").mkdir()
    r = runner.invoke(app, ["model", "train", str(tmp_path / "ds"), "--out", str(tmp_path / "w.pt"),
                            "--init-weights", str(tmp_path / "missing.pt")])
    assert r.exit_code == 1 and "missing.pt" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "w.pt").exists()


def test_cli_dataset_happy_and_bad_inputs(tmp_path, runner):
    path, gdf, _ = _scene(tmp_path, size=512)
    labels = tmp_path / "labels.geojson"
    labels.write_text(gdf.to_crs(4326).to_json())
    out = tmp_path / "ds"
    r = runner.invoke(app, ["model", "dataset", str(path), "--labels", str(labels), "--out", str(out),
                            "--tile-size-px", "128"])
    assert r.exit_code == 0, r.output
    assert (out / "data.yaml").is_file() and "train" in r.output
    r = runner.invoke(app, ["model", "dataset", str(path), "--labels", str(labels), "--out", str(out)])
    assert r.exit_code == 1 and "already exists" in r.output
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    r = runner.invoke(app, ["model", "dataset", str(path), "--labels", str(bad), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "bad.geojson" in r.output and not (tmp_path / "x").exists()
    r = runner.invoke(app, ["model", "train", str(tmp_path), "--out", str(tmp_path / "w.pt")])
    assert r.exit_code == 1 and "data.yaml" in r.output
    r = runner.invoke(app, ["model", "eval", str(tmp_path / "missing.pt"), str(out)])
    assert r.exit_code == 1 and "missing.pt" in r.output
    r = runner.invoke(app, ["model", "train", str(out), "--out", str(tmp_path / "w.pt"), "--model", "yolo99"])
    assert r.exit_code == 2


_NO_NET = """
import socket
def _blocked(*a, **k):
    raise OSError("network access attempted")
socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.getaddrinfo = _blocked
socket.create_connection = _blocked
"""


@pytest.mark.slow
def test_tiny_training_offline_then_reload_in_fresh_process(tmp_path, monkeypatch, runner):
    attempts = []

    def blocked(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket.socket, "connect_ex", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setenv("TUBAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)
    path, gdf, boxes = _scene(tmp_path, size=512)
    build_dataset([(path, gdf)], tmp_path / "ds", DatasetSettings(tile_size_px=128))
    weights = tmp_path / "tiny.pt"
    r = runner.invoke(app, ["model", "train", str(tmp_path / "ds"), "--out", str(weights), "--epochs", "2",
                            "--imgsz", "128", "--batch", "8"])
    assert r.exit_code == 0, r.output
    assert "mAP50" in r.output and weights.is_file() and weights.stat().st_size < 10e6
    assert (tmp_path / "cache" / "ultralytics" / "Ultralytics" / "Arial.ttf").is_file()
    r = runner.invoke(app, ["model", "eval", str(weights), str(tmp_path / "ds")])
    assert r.exit_code == 0 and "mAP50" in r.output
    assert attempts == []
    # a fresh interpreter with the network cut loads the weights and predicts through `tuban detect`
    script = _NO_NET + textwrap.dedent(f"""
        import sys
        from tuban.cli import app
        sys.argv = ["tuban", "detect", {str(path)!r}, "--out", {str(tmp_path / 'det.geojson')!r},
                    "--model", {str(weights)!r}, "--tile-size-px", "256", "--conf", "0.001"]
        app()
    """)
    env = {"TUBAN_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "det.geojson").read_text())
    assert doc["type"] == "FeatureCollection"
    for f in doc["features"]:
        assert set(f["properties"]) == {"label", "score", "area_m2", "lon", "lat"}
        assert f["properties"]["label"] == "pond"


SHIPPED = Path(__file__).resolve().parents[1] / "models" / "pond_yolo11n.pt"


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped pond model not built yet")
def test_shipped_model_finds_ponds_on_an_unseen_sample_county(tmp_path, runner):
    """The default model of `tuban detect` on a small county of a seed never used in training."""
    from tuban.pipelines.evaluate import score_objects
    from tuban.sample_data.county import CountySpec, generate_county

    assert SHIPPED.stat().st_size <= 10e6
    files = generate_county(tmp_path / "c", 7, spec=CountySpec(s2_size_px=300, hr_size_px=600))
    out = tmp_path / "ponds.geojson"
    r = runner.invoke(app, ["detect", str(files.hr_before), "--out", str(out)])
    assert r.exit_code == 0, r.output
    found = gpd.read_file(out)
    truth = gpd.read_file(files.ponds_before)
    truth = truth[truth["in_hr"].astype(bool)]
    score = score_objects(found, truth, iou_threshold=0.25)
    assert len(truth) >= 3
    assert score.f1 >= 0.7, score.as_dict()
    assert (found["label"] == "pond").all() and found.crs.to_epsg() == 4326
