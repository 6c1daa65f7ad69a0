"""The drone-scale detector and the frame resizing that brings frames to its pixel size.

A detector trained on frames of one nadir pixel size (the shipped drone pond model: 0.35 m)
serves flights at other heights and cameras with other resolutions when each frame is
resized so its nadir pixel (height / focal length) matches the training one. The model's
``tuban`` record says which pixel size that is (``scale = "drone"``, ``gsd_m``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tuban.imagery.camera import Camera

if TYPE_CHECKING:
    from tuban.models.detector import Detector

__all__ = ["DRONE_WEIGHTS", "load_uav_detector", "frame_scale", "resized_frame"]

#: File name of the drone-scale pond model shipped inside ``tuban/models``.
DRONE_WEIGHTS = "pond_drone_yolo11n.pt"


def frame_scale(camera: Camera, height_m: float, detector_gsd_m: float | None) -> float:
    """Resize factor bringing the frames' nadir pixel (``height_m / fx``) to ``detector_gsd_m``.

    Clamped to 0.05..4; 1.0 when the detector has no training pixel size.

    Example:
        >>> cam = Camera.from_hfov(90.0, 1000, 500)  # fx = 500 px
        >>> round(frame_scale(cam, 100.0, 0.4), 6)  # 0.2 m pixels shrunk to 0.4 m
        0.5
    """
    if not detector_gsd_m or not np.isfinite(height_m) or height_m <= 0:
        return 1.0
    return float(np.clip((height_m / camera.fx_px) / detector_gsd_m, 0.05, 4.0))


def resized_frame(img: np.ndarray, scale: float) -> np.ndarray:
    """``img`` (HxWx3) resized by ``scale`` (area interpolation when shrinking), at least 32 px."""
    import cv2

    if abs(scale - 1.0) < 1e-3:
        return img
    size = (max(32, round(img.shape[1] * scale)), max(32, round(img.shape[0] * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def load_uav_detector(weights: str | Path | None = None, *, conf: float | None = None,
                      threads: int | None = None, runtime: str = "torch") -> tuple[Detector, float | None]:
    """A YOLO detector for drone frames and the nadir pixel size to resize frames to.

    Args:
        weights: a trusted ``.pt`` file; None = the shipped drone-scale pond model
            (:data:`DRONE_WEIGHTS`).
        conf: minimum confidence; None = the threshold the model's ``tuban`` record
            recommends (``conf``, chosen on training and selection clips), else 0.25.
        threads: CPU threads of the model.
        runtime: ``"torch"``, ``"onnx"`` (ONNX Runtime on the same weights, exported once into
            tuban's cache) or ``"auto"`` (onnx when possible), as
            :func:`tuban.models.onnx_detector.load_detector_for_runtime`; ``"onnx-int8"`` is
            refused (calibrated on satellite slices, not measured on drone frames).

    Returns:
        ``(detector, gsd_m)``: ``gsd_m`` is the model's training pixel size when its ``tuban``
        record says ``scale = "drone"``, else None (frames are used as they are). The
        detector's ``settings.conf`` is the threshold in use.

    Raises:
        ModelError: weights missing or unreadable; ``onnx`` asked for but not possible; ``onnx-int8``.
    """
    from tuban import ModelError
    from tuban.models.onnx_detector import load_detector_for_runtime
    from tuban.models.yolo import YoloSettings, default_weights_path, tuban_metadata

    if str(getattr(runtime, "value", runtime)) == "onnx-int8":
        # its calibration set is satellite county slices, not drone frames: not measured here
        raise ModelError(f"{weights or DRONE_WEIGHTS}: the onnx-int8 runtime is calibrated on satellite "
                         "slices only; use onnx or torch")
    if weights is None:
        weights = default_weights_path().with_name(DRONE_WEIGHTS)  # beside the shipped satellite model
        if not Path(weights).is_file():
            raise ModelError(f"{weights}: the shipped drone pond model is missing; pass --model")
    det = load_detector_for_runtime(weights, YoloSettings(conf=0.25 if conf is None else conf, threads=threads),
                                    runtime)
    # the ONNX side record carries the checkpoint's tuban record; torch reads it from the checkpoint
    meta = det.meta if hasattr(det, "meta") else tuban_metadata(det.model)
    if conf is None and isinstance(meta.get("conf"), (int, float)):
        det.settings = replace(det.settings, conf=float(meta["conf"]))
    gsd = float(meta["gsd_m"]) if meta.get("scale") == "drone" and meta.get("gsd_m") else None
    return det, gsd
