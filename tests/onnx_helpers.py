"""Shared by the ONNX runtime tests: the shipped weights, the skip marker, box IoU, and sample-county slices."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "pond_yolo11n.pt"
needs_ort = pytest.mark.skipif(
    not SHIPPED.is_file() or any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "onnx")),
    reason="shipped model, onnxruntime or onnx missing")


def box_iou(a, b) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def county_slices(folder: Path):
    """``(files, images)``: a small sample county (seed 7, not a calibration seed) in ``folder`` and
    its 2 m scene cut into 640 px slices, stretched as `tuban detect` does."""
    from tuban.imagery.slice_source import open_slice_source, resolve_rgb_bands
    from tuban.imagery.slicing import compute_stretch, read_model_slices, slice_windows
    from tuban.sample_data.county import CountySpec, generate_county

    files = generate_county(folder, 7, spec=CountySpec(s2_size_px=300, hr_size_px=1200))
    src = open_slice_source(files.hr_before)
    bands = resolve_rgb_bands(src.band_names, src.count)
    stretch = compute_stretch(*src.read_stretch_sample(bands))
    wins = slice_windows(src.width, src.height, 640, 64)
    kept, images = read_model_slices(src, bands, stretch, wins)
    src.close()
    assert len(kept) == len(wins)  # the sample county has no nodata: every slice is kept
    return files, images
