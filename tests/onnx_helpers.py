"""Shared by the ONNX runtime tests: the shipped weights, the skip marker, and box IoU."""

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
