"""Offline YOLO training and evaluation on a dataset made by ``tuban model dataset``.

Models are built from ultralytics' bundled yaml (random initialisation, no hub weights), trained
on the CPU unless a CUDA GPU is present, with AMP off on the CPU, plots off, and every run
directory inside a temporary folder. The best checkpoint (``best.pt``, already fp16) is copied
atomically to the requested path; nothing partial is left behind on failure.

Augmentation suits nadir imagery: vertical as well as horizontal flips, rotations (+-30 degrees
by default), mosaic, scale jitter and colour jitter (HSV).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuban import InputError, ModelError
from tuban.imagery.vector_io import atomic_path, check_output
from tuban.models import yolo

__all__ = ["TrainSettings", "TrainResult", "EvalResult", "train", "evaluate", "dataset_yaml"]

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainSettings:
    """Training recipe.

    Args:
        model: model name (``yolo11n``, ``yolov8n``, ``yolo11n-obb``...), built from yaml.
        epochs: training epochs.
        imgsz_px: training image size (chips are letterboxed / scaled to it).
        batch: images per step.
        device: ``"cpu"``, ``"0"``...; None = GPU when present, else CPU.
        seed: random seed (reproducible runs on the same machine).
        patience: stop after this many epochs without improvement.
        workers: dataloader worker processes (0 = in the main process; best on 2 cores).
        threads: torch CPU threads; None = all available cores.
        close_mosaic: last epochs without mosaic augmentation.
        degrees: random rotation range (+-), degrees; nadir imagery has no "up". Boxes of rotated
            objects become the boxes of the rotated corners (exact for rectangles like ponds).
        init_weights: start from this trusted local ``.pt`` (fine-tuning, e.g. the previous pond
            model) instead of a random initialisation from yaml; None = from yaml.
    """

    model: str = "yolo11n"
    epochs: int = 30
    imgsz_px: int = 320
    batch: int = 16
    device: str | None = None
    seed: int = 0
    patience: int = 100
    workers: int = 0
    threads: int | None = None
    close_mosaic: int = 5
    degrees: float = 30.0
    init_weights: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.imgsz_px < 32:
            raise ValueError("epochs and batch must be >= 1, imgsz_px >= 32")
        if self.model not in yolo.MODEL_YAMLS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(yolo.MODEL_YAMLS)}")


@dataclass(frozen=True)
class EvalResult:
    """Validation scores (box metrics; for -obb models the oriented-box metrics)."""

    precision: float
    recall: float
    map50: float
    map50_95: float
    images: int


@dataclass(frozen=True)
class TrainResult:
    """Where the weights went and how the training went."""

    weights: Path
    epochs_run: int
    seconds: float
    size_bytes: int
    val: EvalResult


def dataset_yaml(dataset: str | Path) -> Path:
    """The ``data.yaml`` of a dataset folder (or the yaml itself).

    Raises:
        InputError: no data.yaml there.
    """
    p = Path(dataset)
    yaml_path = p / "data.yaml" if p.is_dir() else p
    if not yaml_path.is_file() or yaml_path.suffix not in (".yaml", ".yml"):
        raise InputError(p, "not a dataset folder (no data.yaml; make one with `tuban model dataset`)")
    return yaml_path.resolve()


def _quiet():
    """Silence ultralytics' console chatter unless tuban runs with --verbose."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(io.StringIO())


def _metrics(m, images: int) -> EvalResult:
    box = getattr(m, "box", None)
    return EvalResult(float(box.mp), float(box.mr), float(box.map50), float(box.map), images)


def train(dataset: str | Path, out: str | Path, settings: TrainSettings | None = None, *,
          overwrite: bool = False, progress: Progress | None = None) -> TrainResult:
    """Train a YOLO model from yaml on ``dataset`` and write its best checkpoint to ``out``.

    Args:
        dataset: folder made by ``tuban model dataset`` (or its data.yaml).
        out: output ``.pt`` path.
        settings: recipe.
        overwrite: replace an existing ``out``.
        progress: optional ``callback(epoch, epochs)``.

    Raises:
        InputError: no dataset there. OutputExistsError: ``out`` exists.
        ModelError: training failed or produced no weights.
    """
    s = settings or TrainSettings()
    data = dataset_yaml(dataset)
    out = check_output(out, overwrite)
    if out.suffix.lower() != ".pt":
        raise ModelError(f"{out}: output weights must end in .pt")
    model = yolo.load_model(s.init_weights, s.threads) if s.init_weights else yolo.build_model(s.model, s.threads)
    device = yolo.select_device(s.device)
    if progress:
        # ultralytics fires this once more after the final validation: never report more than s.epochs
        model.add_callback("on_fit_epoch_end", lambda tr: progress(min(int(tr.epoch) + 1, s.epochs), s.epochs))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tuban-train-") as runs:
        try:
            with _quiet():
                model.train(data=str(data), epochs=s.epochs, imgsz=s.imgsz_px, batch=s.batch, device=device,
                            workers=s.workers, seed=s.seed, deterministic=True, patience=s.patience,
                            amp=device != "cpu", plots=False, pretrained=False, project=runs, name="run",
                            exist_ok=True, verbose=False, flipud=0.5, fliplr=0.5, degrees=s.degrees,
                            close_mosaic=min(s.close_mosaic, s.epochs), cache=False, val=True)
        except (RuntimeError, FileNotFoundError, ValueError, KeyError) as exc:
            raise ModelError(f"{data}: training failed ({type(exc).__name__}: {exc})") from exc
        best = Path(runs) / "run" / "weights" / "best.pt"
        if not best.is_file():
            best = Path(runs) / "run" / "weights" / "last.pt"
        if not best.is_file():
            raise ModelError(f"{data}: training produced no weights")
        seconds = time.perf_counter() - t0
        epochs_run = int(getattr(model.trainer, "epoch", s.epochs - 1)) + 1
        with atomic_path(out, overwrite=overwrite) as tmp:
            yolo.save_with_metadata(best, tmp, _dataset_metadata(data, s))
    val = evaluate(out, data, imgsz_px=s.imgsz_px, device=s.device, threads=s.threads)
    return TrainResult(out, epochs_run, round(seconds, 1), out.stat().st_size, val)


def _dataset_metadata(data: Path, s: TrainSettings) -> dict:
    """What detection needs to know about the training data: the finest pixel size seen."""
    import json

    meta = {"model": s.model, "imgsz_px": s.imgsz_px, "epochs": s.epochs}
    if s.init_weights:
        meta["init_weights"] = Path(s.init_weights).name
    info = data.parent / "tuban_dataset.json"
    try:
        gsds = json.loads(info.read_text()).get("gsd_m") or []
    except (OSError, ValueError):
        gsds = []
    if gsds:
        meta["gsd_m"] = min(gsds)
        meta["dataset_gsd_m"] = sorted(set(gsds))
    return meta


def evaluate(weights: str | Path, dataset: str | Path, *, imgsz_px: int | None = None,
             device: str | None = None, threads: int | None = None, batch: int = 16) -> EvalResult:
    """Precision, recall, mAP50 and mAP50-95 of ``weights`` on the dataset's validation split.

    Args:
        weights: a trusted ``.pt`` file (it is unpickled).
        dataset: dataset folder or data.yaml.
        imgsz_px: evaluation size; default the size the model was trained at.
    """
    data = dataset_yaml(dataset)
    model = yolo.load_model(weights, threads)
    size = imgsz_px or int((getattr(model, "overrides", {}) or {}).get("imgsz", 640))
    n_images = sum(1 for p in (data.parent / "images" / "val").glob("*") if p.is_file())
    with tempfile.TemporaryDirectory(prefix="tuban-val-") as runs:
        try:
            with _quiet():
                m = model.val(data=str(data), imgsz=size, batch=batch, device=yolo.select_device(device),
                              plots=False, project=runs, name="val", exist_ok=True, verbose=False,
                              split="val", workers=0)
        except (RuntimeError, FileNotFoundError, ValueError, KeyError) as exc:
            raise ModelError(f"{weights}: evaluation on {data} failed ({type(exc).__name__}: {exc})") from exc
    return _metrics(m, n_images)
