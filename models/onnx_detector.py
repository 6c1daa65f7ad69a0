"""An ONNX Runtime detector for YOLO detect models: the same weights, ~1.5x less CPU time than torch.

A ``.pt`` model is exported once (:func:`tuban.models.yolo.export_onnx`, which needs torch,
ultralytics and the ``onnx`` package) into tuban's cache as
``<cache>/onnx/<sha256 of the .pt>.onnx`` with a side record ``<sha256>.json`` holding the
class names, the task, the checkpoint's ``tuban`` record (``gsd_m``, ``conf``...) and the
SHA-256 of the ``.onnx``. Later runs need only ``onnxruntime``: the record is checked against
the ``.pt`` and the ``.onnx`` bytes, and a missing, corrupt or mismatched cache entry is
rebuilt, never trusted. Nothing is ever downloaded.

Pre- and post-processing are tuban's own (no ultralytics at run time): RGB uint8 images are
padded (grey 114, right and bottom) to one size that is a multiple of 32, scaled to 0..1
float32 NCHW and run as one batch; the raw output (box centre, size, class scores) is
filtered by confidence and thinned by per-class NMS (:func:`decode_yolo`), as ultralytics
does for a ``.pt`` model.

Only plain detect models have this path. Oriented-box (``-obb``) models stay on the torch
path (:class:`tuban.models.yolo.YoloDetector`); :func:`load_detector_for_runtime` picks.
"""

from __future__ import annotations

import concurrent.futures as cf
import enum
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tuban import ModelError
from tuban.imagery.vector_io import file_sha256
from tuban.models.detector import Detection, Detector

__all__ = ["Runtime", "OnnxDetector", "decode_yolo", "nms_xyxy", "onnx_cache_entry", "ensure_onnx",
           "onnx_available", "load_detector_for_runtime"]

log = logging.getLogger(__name__)

_RECORD_VERSION = 2
_PAD_VALUE = 114  # ultralytics' letterbox grey
_MAX_NMS = 30000  # candidates kept before NMS, highest scores first (as ultralytics)
_MAX_DET = 300  # detections kept per image (as ultralytics)


class Runtime(str, enum.Enum):
    """Which engine runs a YOLO model."""

    auto = "auto"
    onnx = "onnx"
    torch = "torch"
    #: experimental, library only (not in the CLI): int8 quantised from the same .pt; never chosen by ``auto``.
    onnx_int8 = "onnx-int8"


def onnx_available(*, export: bool = False) -> bool:
    """Whether ``onnxruntime`` (and with ``export=True`` also ``onnx``) can be imported."""
    import importlib.util

    mods = ("onnxruntime", "onnx") if export else ("onnxruntime",)
    return all(importlib.util.find_spec(m) is not None for m in mods)


def onnx_cache_entry(weights: str | Path) -> tuple[Path, Path]:
    """``(model.onnx, record.json)`` paths of ``weights`` in tuban's cache (named by its SHA-256)."""
    from tuban.models.yolo import cache_dir

    digest = file_sha256(Path(weights))
    folder = cache_dir() / "onnx"
    return folder / f"{digest}.onnx", folder / f"{digest}.json"


def _read_record(onnx_path: Path, record_path: Path) -> dict | None:
    """The cached record if it is sound and matches its ``.pt`` (by name) and ``.onnx`` bytes, else None."""
    try:
        rec = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("version") != _RECORD_VERSION:
        return None
    if rec.get("pt_sha256") != record_path.stem or not isinstance(rec.get("names"), list):
        return None
    if not rec.get("onnx"):
        return rec  # a model without an ONNX path: the record says so, no .onnx to check
    if not onnx_path.is_file() or rec.get("onnx_sha256") != file_sha256(onnx_path):
        return None
    return rec


def ensure_onnx(weights: str | Path, threads: int | None = None) -> tuple[Path | None, dict]:
    """The cached ``.onnx`` of ``weights`` and its record, exporting it first when needed.

    Args:
        weights: a trusted ``.pt`` file.
        threads: torch threads for a (first-time) export.

    Returns:
        ``(onnx_path, record)``; ``onnx_path`` is None when the model has no ONNX path (its
        ``record["onnx"]`` is False, with ``record["reason"]``), so callers fall back to torch.

    Raises:
        ModelError: weights missing or unreadable, ``onnx`` not installed for a first export,
            the cache folder cannot be written, or the export fails.
    """
    from tuban.imagery.vector_io import write_text_atomic
    from tuban.models.yolo import export_onnx

    weights = Path(weights)
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file not found")
    onnx_path, record_path = onnx_cache_entry(weights)
    rec = _read_record(onnx_path, record_path)
    if rec is not None:
        return (onnx_path if rec["onnx"] else None), rec
    if not onnx_available(export=True):
        raise ModelError(f"{weights}: exporting to ONNX needs the 'onnx' package (pip install onnx), "
                         "or use --runtime torch")
    tmp = onnx_path.with_name(f".{onnx_path.name}.{os.getpid()}.part")
    try:
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        meta = export_onnx(weights, tmp, threads)
        rec = {"version": _RECORD_VERSION, "pt_sha256": record_path.stem, "source": str(weights.resolve()), **meta}
        if meta["onnx"]:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            rec["onnx_sha256"] = file_sha256(tmp)
            os.replace(tmp, onnx_path)
        # the record goes last: it is the commit mark of a complete cache entry
        write_text_atomic(record_path, json.dumps(rec, indent=1) + "\n", overwrite=True)
    except OSError as exc:
        raise ModelError(f"{onnx_path.parent}: cannot write the ONNX cache ({exc}); set TUBAN_CACHE "
                         "or use --runtime torch") from exc
    finally:
        if tmp.is_file():
            tmp.unlink()
    return (onnx_path if rec["onnx"] else None), rec


def nms_xyxy(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first.

    Args:
        boxes: ``(n, 4)`` ``x0, y0, x1, y1``.
        scores: ``(n,)``.
        iou: a box is dropped when its IoU with a kept, higher-scoring box exceeds this.

    Example:
        >>> b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], float)
        >>> nms_xyxy(b, np.array([0.9, 0.8, 0.7]), 0.5).tolist()
        [0, 2]
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        union = areas[i] + areas[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-9)]
    return np.asarray(keep, int)


def decode_yolo(pred: np.ndarray, names: Sequence[str], *, conf: float, iou: float,
                width_px: int, height_px: int) -> list[Detection]:
    """Detections of one image from a YOLO head's raw output.

    Args:
        pred: ``(4 + classes, anchors)``: box centre x, y, width, height (input pixels), then
            one score per class.
        names: class names, index = class id.
        conf: minimum class score.
        iou: per-class NMS threshold.
        width_px: image width; boxes are clipped to the image.
        height_px: image height.

    Example:
        >>> p = np.zeros((5, 3), np.float32)
        >>> p[:, 0] = [50, 50, 20, 20, 0.9]; p[:, 1] = [51, 50, 20, 20, 0.8]; p[:, 2] = [10, 10, 4, 4, 0.1]
        >>> [(d.box_px, round(d.score, 2)) for d in decode_yolo(p, ["pond"], conf=0.25, iou=0.5,
        ...                                                      width_px=64, height_px=64)]
        [((40.0, 40.0, 60.0, 60.0), 0.9)]
    """
    scores_all = pred[4:]
    cls = scores_all.argmax(axis=0)
    score = scores_all[cls, np.arange(pred.shape[1])]
    sel = np.flatnonzero(score > conf)
    if sel.size == 0:
        return []
    if sel.size > _MAX_NMS:
        sel = sel[np.argsort(-score[sel], kind="stable")[:_MAX_NMS]]
    cx, cy, w, h = (pred[k, sel].astype(np.float64) for k in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width_px)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height_px)
    s, c = score[sel].astype(np.float64), cls[sel]
    offset = c[:, None] * (2.0 * max(width_px, height_px) + 1.0)  # per-class NMS: classes never overlap
    keep = nms_xyxy(boxes + offset, s, iou)[:_MAX_DET]
    out = []
    for k in keep:
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        if x1 > x0 and y1 > y0:
            out.append(Detection((x0, y0, x1, y1), float(min(1.0, s[k])), str(names[int(c[k])])))
    return out


class OnnxDetector:
    """A :class:`tuban.models.detector.Detector` running a YOLO detect model with ONNX Runtime.

    Args:
        weights: a trusted ``.pt`` file; its ONNX export is cached (see the module doc).
        settings: :class:`tuban.models.yolo.YoloSettings` (``conf``, ``iou``, ``threads``,
            ``imgsz_px`` as the torch path; ``device`` is not used: it runs on the CPU).
        int8: run the int8 model quantised once from the fp32 export
            (:func:`tuban.models.onnx_int8.ensure_onnx_int8`; opt-in, not the same numbers).

    Raises:
        ModelError: onnxruntime missing, weights unreadable, or a model without an ONNX path.
    """

    runtime = "onnx"

    def __init__(self, weights: str | Path, settings=None, *, int8: bool = False) -> None:
        from tuban.models.yolo import YoloSettings, _default_threads

        self.settings = settings or YoloSettings()
        self.weights = Path(weights)
        if not onnx_available():
            raise ModelError(f"{self.weights}: onnxruntime is not installed (pip install onnxruntime), "
                             "or use --runtime torch")
        threads = int(self.settings.threads or _default_threads())
        path, rec = ensure_onnx(self.weights, threads)
        if path is None:
            raise ModelError(f"{self.weights}: {rec.get('reason') or 'no ONNX Runtime path for this model'}")
        self.onnx_path = path
        self.names: tuple[str, ...] = tuple(rec["names"])
        self.task: str = rec["task"]
        #: the checkpoint's ``tuban`` record (``gsd_m``, ``conf``, ``scale``...).
        self.meta: dict = dict(rec.get("tuban") or {})
        #: pixel size (m) the model was trained at; sliced detection upsamples coarser rasters.
        self.gsd_m: float | None = float(self.meta["gsd_m"]) if self.meta.get("gsd_m") else None
        self.threads = threads
        if int8:
            from tuban.models.onnx_int8 import ensure_onnx_int8

            self.runtime = Runtime.onnx_int8.value
            path = self.onnx_path = ensure_onnx_int8(self.weights, path, self.gsd_m)
        self._pool: cf.ThreadPoolExecutor | None = None
        self._wide = None  # a session using all threads, for single-image calls (made when first needed)
        try:
            self.session = self._session(path, 1)
        except ModelError:  # sound bytes ORT cannot load (e.g. written by another exporter): rebuild once
            for stale in (path, path.with_suffix(".json")):  # the entry that failed (fp32 or int8)
                stale.unlink(missing_ok=True)
            path, rec = ensure_onnx(self.weights, threads)
            if int8 and path is not None:
                path = ensure_onnx_int8(self.weights, path, self.gsd_m)
            self.onnx_path = path or self.onnx_path
            self.session = self._session(self.onnx_path, 1)

    @staticmethod
    def _session(path: Path, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        # idle threads sleep instead of spinning: a spinning pool fights the slice reader thread
        # (and any other process) for the cores; measured 3.9 s vs 5.7 s median on a loaded 2-core machine
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a cached file ORT cannot read
            raise ModelError(f"{path}: ONNX Runtime cannot load the model ({exc})") from exc

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect in each ``(rows, cols, 3)`` uint8 RGB image; one list of detections per image.

        Images are letterboxed exactly as the torch path (ultralytics ``predict``) does: inference
        size = ``imgsz_px`` or the largest side rounded up to 32; each image scaled to fit it and
        padded, centred, to a multiple of 32 (same-shape batches) or to the square size.
        """
        if not images:
            return []
        size = self.settings.imgsz_px or max(max(im.shape[:2]) for im in images)
        size = int(-(-size // 32) * 32)
        same = len({im.shape for im in images}) == 1
        boxed = [letterbox(im, size, auto=same) for im in images]
        rows = max(b[0].shape[0] for b in boxed)
        cols = max(b[0].shape[1] for b in boxed)
        batch = np.full((len(images), rows, cols, 3), _PAD_VALUE, np.uint8)
        for k, (im, *_rest) in enumerate(boxed):
            batch[k, :im.shape[0], :im.shape[1]] = im
        x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        x *= 1.0 / 255.0
        pred = self._infer(x)
        out = []
        for k, (im, r, left, top) in enumerate(boxed):
            dets = decode_yolo(pred[k], self.names, conf=self.settings.conf, iou=self.settings.iou,
                               width_px=im.shape[1], height_px=im.shape[0])
            h, w = images[k].shape[:2]
            out.append(dets if (r == 1.0 and left == 0 and top == 0) else [_unbox(d, r, left, top, w, h) for d in dets])
        return out


    def _infer(self, x: np.ndarray) -> np.ndarray:
        """The raw output for the NCHW batch ``x``: one single-threaded run per image, ``threads`` at a time.

        One session with one intra-op thread, run concurrently on the batch's images
        (``InferenceSession.run`` is thread-safe), instead of one run with ``threads`` intra-op
        threads: a multi-threaded run waits at every layer for its slowest thread, and on a busy
        machine (the slice reader thread decoding the next batch, other processes) one of them is
        usually descheduled. Image-sized tasks also leave a core idle only for the last image of a
        batch. Measured on 2 cores, 32 slices of 640 px (fp32): 2-thread runs 1.05 s, two 4-image
        one-thread runs 0.74 s; per-image tasks 2.21-2.25 s vs two 4-image runs 2.39-2.61 s, and
        3.06-3.36 vs 3.59-3.85 s beside a CPU-bound thread (a loaded machine); same per-image results.
        """
        if len(x) == 1 or self.threads == 1:
            if self.threads > 1 and self._wide is None:
                self._wide = self._session(self.onnx_path, self.threads)
            return (self._wide or self.session).run(None, {"images": x})[0]
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="tuban-onnx")
        outs = self._pool.map(lambda k: self.session.run(None, {"images": x[k:k + 1]})[0], range(len(x)))
        return np.concatenate(list(outs))


def letterbox(img: np.ndarray, size_px: int, *, auto: bool, stride_px: int = 32) -> tuple[np.ndarray, float, int, int]:
    """``(image, scale, left_px, top_px)``: ``img`` fitted into ``size_px`` and padded, centred, as ultralytics does.

    ``auto``: pad only to a multiple of ``stride_px`` (ultralytics' minimum rectangle, used for
    same-shape batches); else pad to ``size_px`` square.

    Example:
        >>> im, r, left, top = letterbox(np.zeros((540, 960, 3), np.uint8), 960, auto=True)
        >>> im.shape, r, left, top
        ((544, 960, 3), 1.0, 0, 2)
    """
    import cv2

    h, w = img.shape[:2]
    r = min(size_px / h, size_px / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = size_px - new_w, size_px - new_h
    if auto:
        dw, dh = dw % stride_px, dh % stride_px
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    if (new_w, new_h) != (w, h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if top or bottom or left or right:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(_PAD_VALUE,) * 3)
    return img, r, left, top


def _unbox(d: Detection, r: float, left: int, top: int, w: int, h: int) -> Detection:
    x0, y0, x1, y1 = d.box_px
    box = (min(max((x0 - left) / r, 0.0), w), min(max((y0 - top) / r, 0.0), h),
           min(max((x1 - left) / r, 0.0), w), min(max((y1 - top) / r, 0.0), h))
    return Detection(box, d.score, d.label)


def load_detector_for_runtime(weights: str | Path | None = None, settings=None,
                              runtime: Runtime | str = Runtime.auto) -> Detector:
    """A detector for ``weights`` (None = the shipped pond model) on the chosen runtime.

    ``auto`` is ONNX Runtime when ``onnxruntime`` is importable, the model is a plain detect
    model, and its export is cached or ``onnx`` is installed to make it; torch otherwise.
    ``onnx-int8`` (experimental, never chosen by ``auto``, not in the CLI) runs an int8 model
    quantised from the same ``.pt`` (:mod:`tuban.models.onnx_int8`).

    Raises:
        ModelError: weights missing or unreadable; ``onnx`` asked for but not possible.
    """
    from tuban.models.yolo import load_detector, weights_path

    runtime = Runtime(runtime)
    if runtime is Runtime.torch:
        return load_detector(weights, settings)
    path = weights_path(weights)
    if runtime in (Runtime.onnx, Runtime.onnx_int8):
        return OnnxDetector(path, settings, int8=runtime is Runtime.onnx_int8)
    if not onnx_available():
        return load_detector(path, settings)
    try:
        return OnnxDetector(path, settings)
    except ModelError as exc:
        if not path.is_file():
            raise
        log.info("ONNX Runtime path not used, falling back to torch: %s", exc)
        return load_detector(path, settings)
