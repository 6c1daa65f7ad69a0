"""An experimental int8 version of a YOLO detect model for ONNX Runtime (``Runtime.onnx_int8``).

NOT offered by ``tuban detect``: on the held-out sample counties its object F1 at 10 m fell
0.023 below fp32 (0.849 vs 0.871; 2 m unchanged, 0.968 vs 0.967), outside the project's rule
(within 0.02 on every resolution), and quantising takes ~9 GB of memory (ORT's entropy
calibrator keeps every activation of every calibration image). It stays for the benchmark
(``benchmarks/bench_detect.py``: ~1.8x less model compute) and for a later decision; see
docs/detection.md "Throughput".

int8 is NOT the same weights: the fp32 ONNX export of a ``.pt``
(:func:`tuban.models.onnx_detector.ensure_onnx`) is quantised once, statically, with ONNX
Runtime's own tool (``onnxruntime.quantization``: QDQ format, int8 weights per output channel,
uint8 activations, ranges by entropy calibration), on a deterministic, offline calibration set, and cached beside
the fp32 export as ``<cache>/onnx/<sha256 of the .pt>.int8-r<recipe>[-rr].onnx`` with a side record
``.json`` (written atomically, record last; checked against the ``.onnx`` bytes on every load,
rebuilt when missing or mismatched, never trusted).

Calibration set (:func:`calibration_slices`, recipe :data:`CALIBRATION_RECIPE`): sample counties
of the pond model's training seeds (:data:`CALIBRATION_SEEDS`; never the held-out evaluation
seeds 201-203), both dates and both resolutions, cut exactly as ``tuban detect`` cuts them (one
cloud-free stretch per raster, slices upsampled to the model's ``gsd_m``), a fixed, evenly spread
subset of the slices. The counties are generated in a temporary folder and deleted.

The box decoding at the end of the head (reshapes, distribution focal loss, anchors, sigmoid,
the final concat of pixel boxes with 0..1 scores) stays in fp32: quantising that concat with one
scale for values 0..640 and 0..1 destroys the scores. On CPUs without VNNI (``vpdpbusd``) weights
are quantised to 7 bits (``reduce_range``), avoiding the int16 saturation of u8 x s8 products
there; the cache name records which.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tuban import ModelError
from tuban.imagery.vector_io import file_sha256

__all__ = ["CALIBRATION_RECIPE", "CALIBRATION_SEEDS", "calibration_slices", "decode_nodes", "ensure_onnx_int8",
           "int8_cache_entry", "quantize_int8"]

log = logging.getLogger(__name__)

#: Version of the calibration set and quantisation settings; part of the cache name.
CALIBRATION_RECIPE = 1
#: Sample-county seeds of the calibration set: training seeds of ``benchmarks/train_pond_model.py``.
CALIBRATION_SEEDS = (101, 102)
_SLICES_PER_RASTER = 4
_RECORD_VERSION = 1


def cpu_has_vnni() -> bool:
    """Whether the CPU advertises an int8 dot-product instruction (AVX512-VNNI / AVX-VNNI); False if unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_vnni", "avx_vnni"))


def int8_cache_entry(weights: str | Path, *, reduce_range: bool) -> tuple[Path, Path]:
    """``(model.onnx, record.json)`` of the int8 model of ``weights`` in tuban's cache."""
    from tuban.models.yolo import cache_dir

    stem = f"{file_sha256(Path(weights))}.int8-r{CALIBRATION_RECIPE}{'-rr' if reduce_range else ''}"
    folder = cache_dir() / "onnx"
    return folder / f"{stem}.onnx", folder / f"{stem}.json"


def calibration_slices(model_gsd_m: float | None, *, tile_size_px: int = 640,
                       seeds: Sequence[int] = CALIBRATION_SEEDS,
                       per_raster: int = _SLICES_PER_RASTER) -> list[np.ndarray]:
    """The calibration images: ``(tile, tile, 3)`` uint8 RGB slices cut as ``tuban detect`` cuts them.

    Args:
        model_gsd_m: the model's training pixel size (m); coarser rasters are upsampled to it.
        tile_size_px: model input size.
        seeds: sample-county seeds (generated in a temporary folder, then deleted).
        per_raster: slices per raster, evenly spread over its slice list (deterministic).
    """
    from tuban.imagery.slice_source import open_slice_source, resolve_rgb_bands
    from tuban.imagery.slicing import (
        auto_upscale,
        compute_stretch,
        model_window_px,
        raster_gsd_m,
        read_model_slices,
        slice_windows,
    )
    from tuban.sample_data.county import generate_county

    images: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="tuban-calib-") as tmp:
        for seed in seeds:
            root = generate_county(Path(tmp) / f"county_{seed}", seed).root
            for res in ("hr", "s2"):
                for date in ("before", "after"):
                    src = open_slice_source(root / res / f"{date}.tif")
                    try:
                        bands = resolve_rgb_bands(src.band_names, src.count, None, src.path)
                        stretch = compute_stretch(*src.read_stretch_sample(bands))
                        up = auto_upscale(raster_gsd_m(src.transform, src.crs, src.width, src.height), model_gsd_m)
                        wins = slice_windows(src.width, src.height, model_window_px(tile_size_px, up),
                                             int(round(64 / up)))
                        picks = np.unique(np.linspace(0, len(wins) - 1, min(per_raster, len(wins))).round().astype(int))
                        images += read_model_slices(src, bands, stretch, [wins[int(k)] for k in picks], up)[1]
                    finally:
                        src.close()
    return images


def decode_nodes(model) -> list[str]:
    """Names of the head's box-decoding nodes (kept in fp32): the output's module, except its convolutions.

    The output node of an ultralytics export is named ``/model.<i>/<op>``; nodes under that
    prefix outside the ``cv2``/``cv3`` convolution branches (and not convolutions) are the
    decoding: reshapes, DFL, anchors, sigmoid, concat.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    out = producer.get(model.graph.output[0].name)
    if out is None or "/" not in out.name.strip("/"):
        return [out.name] if out is not None else []
    prefix = out.name[:out.name.rstrip("/").rindex("/") + 1]
    branches = (prefix + "cv2", prefix + "cv3", prefix + "cv4")
    return [n.name for n in model.graph.node
            if n.name.startswith(prefix) and not n.name.startswith(branches) and n.op_type != "Conv"]


def quantize_int8(fp32_onnx: str | Path, dst: str | Path, images: Sequence[np.ndarray], *,
                  reduce_range: bool = False) -> None:
    """Quantise a YOLO ONNX model statically to int8 (QDQ), calibrated on ``images``; write ``dst``.

    Args:
        fp32_onnx: the fp32 export (input ``images``, NCHW float 0..1).
        dst: output path (written directly; the caller makes it atomic).
        images: uint8 RGB calibration images, all the same shape.
        reduce_range: 7-bit weights (for CPUs without VNNI).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(images)

        def get_next(self):
            im = next(self._it, None)
            if im is None:
                return None
            return {"images": np.ascontiguousarray(im.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0}

    with tempfile.TemporaryDirectory(prefix="tuban-q8-", dir=Path(dst).parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        exclude = decode_nodes(onnx.load(str(pre)))
        # activations are collected a few images at a time (memory); ORT's calibrator fails when the
        # last chunk is empty, so the chunk size must not divide the image count
        chunk = next((k for k in range(4, 32) if len(images) % k), len(images) + 1)
        chatter = io.StringIO()  # the calibrator print()s its progress; stdout belongs to the CLI's results
        with contextlib.redirect_stdout(chatter):
            quantize_static(str(pre), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.Entropy,
                            extra_options={"CalibMaxIntermediateOutputs": chunk, "CalibTensorRangeSymmetric": False})
        log.debug("quantiser output: %s", chatter.getvalue())


def _read_record(onnx_path: Path, record_path: Path, fp32_sha256: str) -> dict | None:
    try:
        rec = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("version") != _RECORD_VERSION or rec.get("fp32_sha256") != fp32_sha256:
        return None
    if not onnx_path.is_file() or rec.get("onnx_sha256") != file_sha256(onnx_path):
        return None
    return rec


def ensure_onnx_int8(weights: str | Path, fp32_onnx: Path, gsd_m: float | None) -> Path:
    """The cached int8 model of ``weights``, quantising ``fp32_onnx`` first when needed (~1 min, once).

    Args:
        weights: the trusted ``.pt`` (names the cache entry).
        fp32_onnx: its fp32 export (:func:`tuban.models.onnx_detector.ensure_onnx`).
        gsd_m: the model's training pixel size, for cutting the calibration slices.

    Raises:
        ModelError: the cache cannot be written or quantisation fails.
    """
    from tuban.imagery.vector_io import atomic_path, write_text_atomic

    reduce_range = not cpu_has_vnni()
    onnx_path, record_path = int8_cache_entry(weights, reduce_range=reduce_range)
    fp32_sha = file_sha256(fp32_onnx)
    if _read_record(onnx_path, record_path, fp32_sha) is not None:
        return onnx_path
    try:
        with atomic_path(onnx_path, overwrite=True) as tmp:
            images = calibration_slices(gsd_m)
            log.info("quantising %s to int8 on %d calibration slices", fp32_onnx.name, len(images))
            quantize_int8(fp32_onnx, tmp, images, reduce_range=reduce_range)
            rec = {"version": _RECORD_VERSION, "recipe": CALIBRATION_RECIPE, "seeds": list(CALIBRATION_SEEDS),
                   "calibration_slices": len(images), "reduce_range": reduce_range, "fp32_sha256": fp32_sha,
                   "onnx_sha256": file_sha256(tmp)}
        write_text_atomic(record_path, json.dumps(rec, indent=1) + "\n", overwrite=True)  # commit mark, last
    except OSError as exc:
        raise ModelError(f"{onnx_path.parent}: cannot write the int8 cache ({exc}); set TUBAN_CACHE") from exc
    except Exception as exc:  # noqa: BLE001 - the quantiser's own errors, of any kind
        raise ModelError(f"{weights}: int8 quantisation failed ({type(exc).__name__}: {exc})") from exc
    return onnx_path
