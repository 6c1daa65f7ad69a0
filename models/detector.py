"""The detector interface every pipeline uses: an image in, pixel-space detections out.

Detectors know nothing about maps. Pipelines slice rasters / frames, call ``detect`` on each
image (``(rows, cols, 3)`` uint8 RGB), then georeference the pixel boxes themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Detection", "Detector", "FakeDetector"]


@dataclass(frozen=True)
class Detection:
    """One object found in one image, in pixel coordinates of that image.

    Args:
        box_px: ``(x0, y0, x1, y1)`` axis-aligned box, x = column, y = row, x0 < x1, y0 < y1.
        score: confidence 0..1.
        label: class name, e.g. ``"pond"``.
        polygon_px: optional oriented box / outline as ``((x, y), ...)``; defaults to the box.
    """

    box_px: tuple[float, float, float, float]
    score: float
    label: str
    polygon_px: tuple[tuple[float, float], ...] = field(default=())

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box_px
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"degenerate box {self.box_px}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score {self.score} outside 0..1")

    @property
    def outline_px(self) -> tuple[tuple[float, float], ...]:
        if self.polygon_px:
            return self.polygon_px
        x0, y0, x1, y1 = self.box_px
        return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


@runtime_checkable
class Detector(Protocol):
    """Anything with ``detect_batch(images) -> list[list[Detection]]`` and class names."""

    names: tuple[str, ...]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect objects in each ``(rows, cols, 3)`` uint8 RGB image."""
        ...


class FakeDetector:
    """A deterministic detector for tests: dark, blue-ish water-like blobs become 'pond'.

    It thresholds a simple water score (blue+green vs red) and boxes connected components,
    so tests can check slicing, seam merging and georeferencing without a neural network.

    Args:
        min_area_px: smallest blob reported.
        threshold: water score threshold (0..1).
    """

    names: tuple[str, ...] = ("pond",)

    def __init__(self, min_area_px: int = 30, threshold: float = 0.55) -> None:
        self.min_area_px = min_area_px
        self.threshold = threshold

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        import cv2  # local: keep import of this module cheap

        out: list[list[Detection]] = []
        for img in images:
            rgb = img.astype(np.float32)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            score = ((g + b) / 2.0 - r + 255.0) / 510.0
            dark = rgb.mean(axis=2) < 140
            mask = ((score > self.threshold) & dark).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
            dets = []
            for i in range(1, n):
                x, y, w, h, area = stats[i]
                if area < self.min_area_px:
                    continue
                fill = area / float(w * h)
                dets.append(Detection((float(x), float(y), float(x + w), float(y + h)),
                                      float(min(1.0, 0.5 + 0.5 * fill)), "pond"))
            out.append(dets)
        return out
