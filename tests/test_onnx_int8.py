"""The experimental int8 runtime (library ``Runtime.onnx_int8``, not in the CLI): quantisation, cache, closeness."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tuban import ModelError
from tuban.cli import app

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import SHIPPED, county_slices, needs_ort  # noqa: E402
from onnx_helpers import box_iou as _iou  # noqa: E402


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    """A small sample county (not a calibration seed) and its 2 m scene cut into detect slices."""
    return county_slices(tmp_path_factory.mktemp("county"))


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory, county):
    """A tuban cache holding the shipped model's fp32 export and its int8 model.

    The calibration set is swapped for the fixture county's slices (4 instead of the recipe's
    32, to keep the test fast); the recipe's own set is tested separately.
    """
    from tuban.models import onnx_int8
    from tuban.models.onnx_detector import OnnxDetector

    cache = tmp_path_factory.mktemp("tuban-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("TUBAN_CACHE", str(cache))
    mp.setattr(onnx_int8, "calibration_slices", lambda gsd_m, **k: county[1])
    try:
        det = OnnxDetector(SHIPPED, int8=True)
    finally:
        mp.undo()
    return cache, det


@needs_ort
def test_decode_nodes_are_the_head_tail_without_convolutions(int8_cache):
    import onnx

    from tuban.models.onnx_detector import onnx_cache_entry
    from tuban.models.onnx_int8 import decode_nodes

    cache, _ = int8_cache
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUBAN_CACHE", str(cache))
        model = onnx.load(str(onnx_cache_entry(SHIPPED)[0]))
    names = decode_nodes(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    producer = {o: n.name for n in model.graph.node for o in n.output}
    assert producer[model.graph.output[0].name] in names  # the final concat of boxes and scores
    assert "Sigmoid" in {ops[n] for n in names} and "Conv" not in {ops[n] for n in names}
    assert all(n.startswith("/model.23/") and "/cv2." not in n and "/cv3." not in n for n in names)


@needs_ort
def test_int8_is_close_to_fp32_on_real_slices_and_cached(int8_cache, county, monkeypatch):
    from tuban.models import onnx_int8
    from tuban.models.onnx_detector import OnnxDetector, onnx_cache_entry

    cache, q8 = int8_cache
    monkeypatch.setenv("TUBAN_CACHE", str(cache))
    fp = OnnxDetector(SHIPPED)
    assert q8.runtime == "onnx-int8" and fp.runtime == "onnx"
    q8_path, q8_record = onnx_int8.int8_cache_entry(SHIPPED, reduce_range=not onnx_int8.cpu_has_vnni())
    assert q8.onnx_path == q8_path and q8_record.is_file() and q8_path != onnx_cache_entry(SHIPPED)[0]
    assert q8_path.stat().st_size < 0.5 * fp.onnx_path.stat().st_size  # int8 weights
    _, images = county
    a, b = fp.detect_batch(images), q8.detect_batch(images)
    ref = [d for dets in a for d in dets]
    assert len(ref) >= 5
    found, diffs = 0, []
    for da, db in zip(a, b, strict=True):
        for d in da:
            best = max(db, key=lambda e: _iou(e.box_px, d.box_px), default=None)
            if best is not None and _iou(best.box_px, d.box_px) >= 0.7:
                found += 1
                diffs.append(abs(best.score - d.score))
    # not the same numbers, but the same ponds: >= 90 % of fp32's detections, scores close on average
    assert found >= 0.9 * len(ref) and float(np.mean(diffs)) <= 0.08
    assert abs(sum(len(x) for x in b) - len(ref)) <= max(2, 0.1 * len(ref))
    # a second detector reuses the cached int8 model: no quantisation
    monkeypatch.setattr(onnx_int8, "quantize_int8", lambda *a, **k: pytest.fail("quantised again"))
    again = OnnxDetector(SHIPPED, int8=True)
    assert [len(x) for x in again.detect_batch(images[:2])] == [len(x) for x in b[:2]]


@needs_ort
def test_corrupt_int8_cache_is_rebuilt_and_failures_leave_nothing(int8_cache, county, monkeypatch, tmp_path):
    from tuban.models import onnx_int8
    from tuban.models.onnx_detector import OnnxDetector, ensure_onnx

    cache, _ = int8_cache
    monkeypatch.setenv("TUBAN_CACHE", str(cache))
    monkeypatch.setattr(onnx_int8, "calibration_slices", lambda gsd_m, **k: county[1][:2])
    q8_path, q8_record = onnx_int8.int8_cache_entry(SHIPPED, reduce_range=not onnx_int8.cpu_has_vnni())
    q8_path.write_bytes(b"not a model")
    det = OnnxDetector(SHIPPED, int8=True)
    assert q8_path.stat().st_size > 1_000_000 and det.detect_batch([np.zeros((64, 64, 3), np.uint8)]) == [[]]
    rec = json.loads(q8_record.read_text())
    assert rec["recipe"] == onnx_int8.CALIBRATION_RECIPE and rec["calibration_slices"] == 2
    # a failing quantisation is a ModelError and leaves no partial file
    q8_record.unlink()
    fp32, _ = ensure_onnx(SHIPPED)

    def boom(src, dst, images, **k):
        Path(dst).write_bytes(b"half")
        raise RuntimeError("calibrator exploded")

    monkeypatch.setattr(onnx_int8, "quantize_int8", boom)
    with pytest.raises(ModelError, match="int8 quantisation failed"):
        onnx_int8.ensure_onnx_int8(SHIPPED, fp32, 2.0)
    assert not list((cache / "onnx").glob(".*part")) and not q8_record.exists()


@needs_ort
def test_int8_detect_raster_close_to_fp32_and_not_offered_by_the_cli(int8_cache, county, tmp_path, runner,
                                                                    monkeypatch):
    from tuban.models import onnx_int8
    from tuban.models.onnx_detector import load_detector_for_runtime
    from tuban.pipelines.detect import detect_raster
    from tuban.pipelines.uav_model import load_uav_detector

    cache, _ = int8_cache
    monkeypatch.setenv("TUBAN_CACHE", str(cache))
    monkeypatch.setattr(onnx_int8, "calibration_slices", lambda gsd_m, **k: county[1])  # if (re)built here
    files, _ = county
    a, _ = detect_raster(files.hr_before, load_detector_for_runtime(SHIPPED, runtime="onnx"))
    b, stats = detect_raster(files.hr_before, load_detector_for_runtime(SHIPPED, runtime="onnx-int8"))
    assert len(a) >= 5 and abs(len(a) - len(b)) <= max(2, 0.1 * len(a)) and b.crs.to_epsg() == 4326
    # not shipped (held-out 10 m F1 fell 0.023 below fp32, outside the 0.02 rule): the CLI refuses it
    r = runner.invoke(app, ["detect", str(files.hr_before), "--out", str(tmp_path / "x.geojson"), "--runtime", "onnx-int8"])
    assert r.exit_code == 2 and "--runtime" in r.output and not (tmp_path / "x.geojson").exists()
    with pytest.raises(ModelError, match="onnx-int8"):
        load_uav_detector(SHIPPED, runtime="onnx-int8")


@pytest.mark.slow
def test_calibration_slices_are_detect_slices_of_training_seeds():
    from tuban.models.onnx_int8 import CALIBRATION_SEEDS, calibration_slices

    assert not set(CALIBRATION_SEEDS) & {201, 202, 203}  # never the held-out evaluation seeds
    ims = calibration_slices(2.0, seeds=CALIBRATION_SEEDS[:1], per_raster=2)
    assert len(ims) == 8  # 2 dates x 2 resolutions x 2 slices
    assert all(im.shape == (640, 640, 3) and im.dtype == np.uint8 for im in ims)
    assert all(5 < float(im.mean()) < 250 for im in ims)  # stretched scenes, not blank
