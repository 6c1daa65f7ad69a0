"""The ONNX Runtime detector: decoding, the export cache, parity with torch, runtime choice, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuban import ModelError
from tuban.cli import app
from tuban.models.onnx_detector import decode_yolo, nms_xyxy

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import SHIPPED, county_slices, needs_ort  # noqa: E402
from onnx_helpers import box_iou as _iou  # noqa: E402

# --- pure decoding ---------------------------------------------------------------------------

boxes_st = st.lists(st.tuples(st.floats(0, 200), st.floats(0, 200), st.floats(1, 80), st.floats(1, 80),
                              st.floats(0.01, 1.0)), min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(boxes_st, st.floats(0.1, 0.9))
def test_nms_keeps_no_overlapping_pair_and_every_dropped_box_has_a_better_cover(rows, thr):
    b = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in rows], float).reshape(-1, 4)
    s = np.array([r[4] for r in rows], float)
    keep = nms_xyxy(b, s, thr).tolist()
    for i in keep:
        for j in keep:
            if i < j:
                assert _iou(b[i], b[j]) <= thr + 1e-9
    for j in set(range(len(rows))) - set(keep):
        assert any(s[i] >= s[j] and _iou(b[i], b[j]) > thr - 1e-9 for i in keep)


def test_decode_filters_by_conf_clips_and_keeps_classes_apart():
    # anchors: two overlapping 'pond' boxes, one 'pen' box on top of them, one below conf, one off the edge
    p = np.zeros((6, 5), np.float32)
    p[:, 0] = [50, 50, 20, 20, 0.90, 0.0]
    p[:, 1] = [52, 50, 20, 20, 0.80, 0.0]
    p[:, 2] = [50, 50, 20, 20, 0.0, 0.70]
    p[:, 3] = [10, 10, 8, 8, 0.20, 0.10]
    p[:, 4] = [95, 5, 20, 20, 0.60, 0.0]
    dets = decode_yolo(p, ["pond", "pen"], conf=0.25, iou=0.5, width_px=100, height_px=80)
    got = sorted((d.label, d.box_px, round(d.score, 2)) for d in dets)
    assert got == [("pen", (40.0, 40.0, 60.0, 60.0), 0.7), ("pond", (40.0, 40.0, 60.0, 60.0), 0.9),
                   ("pond", (85.0, 0.0, 100.0, 15.0), 0.6)]
    assert decode_yolo(p, ["pond", "pen"], conf=0.95, iou=0.5, width_px=100, height_px=80) == []


# --- the real model: export cache, parity, runtime choice --------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tuban-cache")


@pytest.fixture(scope="module")
def scene_slices(tmp_path_factory):
    """Real 640 px slices of a sample county's 2 m scene, stretched as `tuban detect` does."""
    return county_slices(tmp_path_factory.mktemp("county"))


@needs_ort
def test_onnx_matches_torch_on_real_slices_and_cache_is_reused(cache, scene_slices, monkeypatch):
    from tuban.models import yolo
    from tuban.models.onnx_detector import OnnxDetector, onnx_cache_entry

    monkeypatch.setenv("TUBAN_CACHE", str(cache))
    _, images = scene_slices
    settings_ = yolo.YoloSettings(conf=0.25, threads=2)
    onnx_det = OnnxDetector(SHIPPED, settings_)
    onnx_path, record = onnx_cache_entry(SHIPPED)
    assert onnx_det.onnx_path == onnx_path and onnx_path.parent == cache / "onnx" and record.is_file()
    torch_det = yolo.YoloDetector(SHIPPED, settings_)
    assert onnx_det.names == torch_det.names and onnx_det.gsd_m == pytest.approx(torch_det.gsd_m)
    a, b = onnx_det.detect_batch(images), torch_det.detect_batch(images)
    assert sum(len(x) for x in b) >= 5  # the scene has ponds: the comparison is not empty
    for da, db in zip(a, b, strict=True):
        assert len(da) == len(db)
        for d in db:
            best = max(da, key=lambda e: _iou(e.box_px, d.box_px))
            assert _iou(best.box_px, d.box_px) >= 0.98
            assert abs(best.score - d.score) <= 0.02 and best.label == d.label
    # a second detector reuses the cache: no export
    monkeypatch.setattr(yolo, "export_onnx", lambda *a, **k: pytest.fail("exported again"))
    again = OnnxDetector(SHIPPED, settings_)
    assert [len(x) for x in again.detect_batch(images[:2])] == [len(x) for x in a[:2]]


@needs_ort
def test_corrupt_or_mismatched_cache_is_rebuilt(cache, monkeypatch):
    from tuban.models.onnx_detector import OnnxDetector, onnx_cache_entry

    monkeypatch.setenv("TUBAN_CACHE", str(cache))
    onnx_path, record = onnx_cache_entry(SHIPPED)
    OnnxDetector(SHIPPED)  # make sure an entry exists
    onnx_path.write_bytes(b"not a model")  # corrupt model bytes
    det = OnnxDetector(SHIPPED)
    assert onnx_path.stat().st_size > 1_000_000 and det.detect_batch([np.zeros((64, 64, 3), np.uint8)]) == [[]]
    rec = json.loads(record.read_text())
    rec["names"] = "pond"  # a record that does not hold together
    record.write_text(json.dumps(rec))
    assert OnnxDetector(SHIPPED).names == ("pond",)
    assert json.loads(record.read_text())["names"] == ["pond"]
    # a consistent entry (hash matches) that ONNX Runtime cannot load is rebuilt too
    import hashlib

    onnx_path.write_bytes(b"garbage that hashes fine")
    rec = json.loads(record.read_text())
    rec["onnx_sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    record.write_text(json.dumps(rec))
    assert OnnxDetector(SHIPPED).detect_batch([np.zeros((64, 64, 3), np.uint8)]) == [[]]
    assert onnx_path.stat().st_size > 1_000_000


@needs_ort
def test_runtime_choice_and_obb_models_stay_on_torch(cache, tmp_path, monkeypatch):
    from tuban.models import onnx_detector as od
    from tuban.models import yolo

    monkeypatch.setenv("TUBAN_CACHE", str(cache))
    assert isinstance(od.load_detector_for_runtime(SHIPPED, runtime="auto"), od.OnnxDetector)
    assert isinstance(od.load_detector_for_runtime(SHIPPED, runtime="torch"), yolo.YoloDetector)
    obb = tmp_path / "obb.pt"
    yolo.build_model("yolo11n-obb", threads=1).save(str(obb))
    assert isinstance(od.load_detector_for_runtime(obb, runtime="auto"), yolo.YoloDetector)
    with pytest.raises(ModelError, match="obb"):
        od.load_detector_for_runtime(obb, runtime="onnx")
    # without onnxruntime, auto is torch and onnx is a clear error
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr(od, "onnx_available", lambda export=False: False)
    assert isinstance(od.load_detector_for_runtime(SHIPPED, runtime="auto"), yolo.YoloDetector)
    with pytest.raises(ModelError, match="onnxruntime is not installed"):
        od.load_detector_for_runtime(SHIPPED, runtime="onnx")


@needs_ort
def test_unwritable_cache_is_a_model_error_and_auto_falls_back_to_torch(tmp_path, monkeypatch):
    from tuban.models import onnx_detector as od
    from tuban.models import yolo

    (tmp_path / "onnx").write_text("a file where the cache folder should be")
    monkeypatch.setenv("TUBAN_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="cannot write the ONNX cache"):
        od.ensure_onnx(SHIPPED)
    assert isinstance(od.load_detector_for_runtime(SHIPPED, runtime="auto"), yolo.YoloDetector)
    assert not list(tmp_path.glob("*.part"))


@needs_ort
def test_cli_detect_runtime_onnx_equals_torch(cache, scene_slices, tmp_path, runner, monkeypatch):
    monkeypatch.setenv("TUBAN_CACHE", str(cache))
    files, _ = scene_slices
    outs = {}
    for rt in ("onnx", "torch"):
        outs[rt] = tmp_path / f"{rt}.geojson"
        r = runner.invoke(app, ["detect", str(files.hr_before), "--out", str(outs[rt]), "--runtime", rt])
        assert r.exit_code == 0, r.output
    a, b = gpd.read_file(outs["onnx"]), gpd.read_file(outs["torch"])
    assert len(a) == len(b) >= 5 and a.crs.to_epsg() == 4326
    assert np.allclose(np.sort(a["lon"]), np.sort(b["lon"]), atol=2e-6)  # ~0.2 m
    r = runner.invoke(app, ["detect", str(files.hr_before), "--out", str(tmp_path / "x.geojson"), "--runtime", "gpu"])
    assert r.exit_code == 2 and "--runtime" in r.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    r = runner.invoke(app, ["detect", str(files.hr_before), "--out", str(tmp_path / "y.geojson"), "--model", str(bad),
                            "--runtime", "onnx"])
    assert r.exit_code == 1 and "bad.pt" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "y.geojson").exists()


@needs_ort
def test_batch_split_over_one_thread_runs_equals_image_by_image(cache, scene_slices, monkeypatch):
    from tuban.models.onnx_detector import OnnxDetector
    from tuban.models.yolo import YoloSettings

    monkeypatch.setenv("TUBAN_CACHE", str(cache))
    _, images = scene_slices
    det = OnnxDetector(SHIPPED, YoloSettings(conf=0.25, threads=2))
    together = det.detect_batch(images)  # split over 2 concurrent one-thread runs
    assert det._pool is not None and det._wide is None
    one_by_one = [det.detect_batch([im])[0] for im in images]  # the all-threads session
    assert det._wide is not None
    assert sum(len(d) for d in together) >= 5
    for a, b in zip(together, one_by_one, strict=True):
        assert len(a) == len(b)
        for x, y in zip(sorted(a, key=lambda d: d.box_px), sorted(b, key=lambda d: d.box_px), strict=True):
            assert np.allclose(x.box_px, y.box_px, atol=0.05) and abs(x.score - y.score) < 1e-3
