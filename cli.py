"""The ``tuban`` command line: thin adapters from options to pipeline functions.

Each command parses options, builds settings, calls one pipeline function, writes output and
sets the exit code. Library errors (:class:`tuban.TubanError`) become one ``Error: ...`` line on
stderr and exit code 1; usage errors exit 2; ``--verbose`` shows tracebacks; ``--quiet`` silences
progress. Only this module imports typer and rich.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from tuban import TubanError, __version__

app = typer.Typer(
    name="tuban",
    help="Triage drone and satellite imagery for environmental enforcement (图斑 from sky to closure).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class _State:
    verbose: bool = False
    quiet: bool = False


state = _State()


# ---------------------------------------------------------------------------------------------
# Shared plumbing: error mapping, progress, common options
# ---------------------------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> None:
    """Print ``Error: message`` on stderr and exit with ``code``."""
    err.print(f"Error: {message}", markup=False, highlight=False)
    raise typer.Exit(code)


def usage_error(message: str, param: str | None = None) -> None:
    """Bad usage (exit code 2), naming the flag."""
    raise typer.BadParameter(message, param_hint=param)


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TubanError (and unexpected crashes) into one-line errors with exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter, SystemExit):
            raise
        except TubanError as exc:
            if state.verbose:
                traceback.print_exc()
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; outputs already written are complete, partial ones were discarded", 130)
        except Exception as exc:  # a bug or an unforeseen input problem: still one line
            if state.verbose:
                traceback.print_exc()
            fail(f"{type(exc).__name__}: {exc} (run with --verbose for the traceback)")

    return wrapper


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A ``callback(done, total)`` drawing a rich progress bar on stderr (silent with --quiet)."""
    if state.quiet or not err.is_terminal and not _force_progress():
        yield lambda done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as prog:
        task = prog.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update


def _force_progress() -> bool:
    import os

    return os.environ.get("TUBAN_PROGRESS") == "1"


def info(message: str) -> None:
    """A status line on stderr, unless --quiet."""
    if not state.quiet:
        err.print(message, markup=False, highlight=False)


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[str(x) for x in r])
    out.print(table)


OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"tuban {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or status lines.")] = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """tuban: suspect patches (图斑) from satellite change, drone evidence, field verdicts."""
    state.verbose = verbose
    state.quiet = quiet
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Sub-command groups (one section per area; keep each command a short adapter)
# ---------------------------------------------------------------------------------------------

model_app = typer.Typer(help="Train and evaluate detectors (datasets, training, evaluation).", no_args_is_help=True)
uav_app = typer.Typer(help="Drone footage: georeference frames and detect on them.", no_args_is_help=True)
mission_app = typer.Typer(help="Drone missions over suspect patches.", no_args_is_help=True)
tasks_app = typer.Typer(help="Task packs for grid officers, and verdicts back.", no_args_is_help=True)
cases_app = typer.Typer(help="The case ledger: list, show, close, reopen.", no_args_is_help=True)
flight_app = typer.Typer(help="Drone-skills competitions: score and replay flight logs.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(uav_app, name="uav")
app.add_typer(mission_app, name="mission")
app.add_typer(tasks_app, name="tasks")
app.add_typer(cases_app, name="cases")
app.add_typer(flight_app, name="flight")


# === section: sample + demo (issue 2) ========================================================

# === end section: sample + demo ==============================================================


# === section: change + eval (issue 3) ========================================================

# === end section: change + eval ==============================================================


# === section: detect + model (issue 4) =======================================================

import enum as _enum  # noqa: E402
import pathlib as _pathlib  # noqa: E402


class YoloModelOpt(str, _enum.Enum):
    yolo11n = "yolo11n"
    yolo11s = "yolo11s"
    yolov8n = "yolov8n"
    yolov8s = "yolov8s"
    yolo11n_obb = "yolo11n-obb"
    yolo11s_obb = "yolo11s-obb"
    yolov8n_obb = "yolov8n-obb"


def _check_bands(bands: str | None) -> None:
    from tuban.imagery.slice_source import parse_band_spec

    if bands is not None:
        try:
            parse_band_spec(bands)
        except ValueError as exc:
            usage_error(str(exc), "--bands")


@app.command("detect")
@handles_errors
def detect_cmd(
    raster: Annotated[list[str], typer.Argument(help="Raster(s): a GeoTIFF, several tiles / a folder / a glob (mosaicked), or a z/x/y tile folder.")],
    out_path: Annotated[_pathlib.Path, typer.Option("--out", help="Detections GeoJSON (EPSG:4326 polygons).")],
    model: Annotated[_pathlib.Path | None, typer.Option("--model", help="YOLO .pt weights (trusted file: it is unpickled). Default: the shipped pond model.")] = None,
    tile_size_px: Annotated[int, typer.Option("--tile-size-px", min=32, help="Slice size, pixels.")] = 640,
    overlap_px: Annotated[int, typer.Option("--overlap-px", min=0, help="Overlap between slices, pixels.")] = 64,
    conf: Annotated[float, typer.Option("--conf", min=0.0, max=1.0, help="Minimum confidence.")] = 0.25,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Slices per model call.")] = 8,
    bands: Annotated[str | None, typer.Option("--bands", help="R,G,B bands: 1-based indices (3,2,1) or names (r,g,b). Default: from band descriptions.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Detect objects (ponds) on a large georeferenced raster by slices; one feature per object."""
    from tuban import BandError
    from tuban.imagery.vector_io import check_output, write_geojson
    from tuban.models.yolo import YoloSettings, load_detector
    from tuban.pipelines.detect import DetectSettings, detect_raster

    _check_bands(bands)
    if overlap_px >= tile_size_px // 2:
        usage_error("must be below half of --tile-size-px", "--overlap-px")
    check_output(out_path, overwrite)
    settings = DetectSettings(tile_size_px=tile_size_px, overlap_px=overlap_px, batch=batch, bands=bands)
    detector = load_detector(model, YoloSettings(conf=conf))
    with progress_bar("detect") as cb:
        try:
            gdf, stats = detect_raster(raster if len(raster) > 1 else raster[0], detector, settings, progress=cb)
        except BandError as exc:
            usage_error(str(exc), "--bands")
    write_geojson(gdf, out_path, overwrite=overwrite)
    info(f"{stats.slices_inferred}/{stats.slices_total} slices inferred ({stats.slices_skipped_nodata} nodata-only "
         f"skipped), {stats.detections_raw} raw detections merged into {stats.detections_merged}, "
         f"{stats.wall_s:.1f} s (model {stats.model_s:.1f} s)")
    out.print(f"{len(gdf)} detections written to {out_path}", markup=False, highlight=False)


@model_app.command("dataset")
@handles_errors
def model_dataset(
    raster: Annotated[list[_pathlib.Path], typer.Argument(exists=True, help="Georeferenced rasters to cut into chips.")],
    labels: Annotated[_pathlib.Path, typer.Option("--labels", exists=True, dir_okay=False, help="Polygon labels (GeoJSON; 'label' column, 'negative' = hard negative).")],
    out_dir: Annotated[_pathlib.Path, typer.Option("--out", help="Dataset folder to create (images/, labels/, data.yaml).")],
    tile_size_px: Annotated[int, typer.Option("--tile-size-px", min=32, help="Chip size, pixels.")] = 640,
    obb: Annotated[bool, typer.Option("--obb", help="Oriented-box labels (for -obb models).")] = False,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.05, max=0.5, help="Share of each raster held out for validation (by area).")] = 0.2,
    bands: Annotated[str | None, typer.Option("--bands", help="R,G,B bands (indices or names), as for detect.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Cut rasters into chips with YOLO labels, split train/val by area without leakage."""
    from tuban.imagery.vector_io import read_vector
    from tuban.models.dataset import DatasetSettings, build_dataset

    _check_bands(bands)
    gdf = read_vector(labels)
    settings = DatasetSettings(tile_size_px=tile_size_px, obb=obb, val_fraction=val_fraction, bands=bands)
    with progress_bar("chips") as cb:
        s = build_dataset([(r, gdf) for r in raster], out_dir, settings, labels_path=labels,
                          overwrite=overwrite, progress=cb)
    out.print(f"{s.chips['train']} train / {s.chips['val']} val chips ({s.objects['train']} / "
              f"{s.objects['val']} objects, {s.negative_chips} hard-negative chips, {s.guard_chips_dropped} "
              f"guard chips dropped); classes {', '.join(s.names)} -> {s.data_yaml}", markup=False, highlight=False)


@model_app.command("train")
@handles_errors
def model_train(
    dataset: Annotated[_pathlib.Path, typer.Argument(exists=True, file_okay=False, help="Dataset folder from `tuban model dataset`.")],
    out_path: Annotated[_pathlib.Path, typer.Option("--out", help="Output weights (.pt).")],
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 30,
    model: Annotated[YoloModelOpt, typer.Option("--model", help="Architecture, built from yaml (no downloaded weights).")] = YoloModelOpt.yolo11n,
    imgsz: Annotated[int, typer.Option("--imgsz", min=32, help="Training image size, pixels.")] = 320,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per step.")] = 16,
    device: Annotated[str | None, typer.Option("--device", help="cpu, 0, 0,1 ... (default: GPU if present, else CPU).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a YOLO detector offline from a model yaml; copies the best checkpoint to --out."""
    from tuban.models.train import TrainSettings, train

    if out_path.suffix.lower() != ".pt":
        usage_error("weights file must end in .pt", "--out")
    settings = TrainSettings(model=model.value, epochs=epochs, imgsz_px=imgsz, batch=batch, device=device, seed=seed)
    with progress_bar("epochs") as cb:
        r = train(dataset, out_path, settings, overwrite=overwrite, progress=cb)
    out.print(f"{r.epochs_run} epochs in {r.seconds:.0f} s -> {r.weights} ({r.size_bytes / 1e6:.1f} MB); "
              f"val precision {r.val.precision:.3f} recall {r.val.recall:.3f} mAP50 {r.val.map50:.3f}",
              markup=False, highlight=False)


@model_app.command("eval")
@handles_errors
def model_eval(
    weights: Annotated[_pathlib.Path, typer.Argument(help="YOLO .pt weights (trusted file).")],
    dataset: Annotated[_pathlib.Path, typer.Argument(exists=True, help="Dataset folder (or its data.yaml).")],
    imgsz: Annotated[int | None, typer.Option("--imgsz", min=32, help="Image size (default: the training size).")] = None,
) -> None:
    """Print precision, recall and mAP50 of weights on a dataset's validation split."""
    from tuban.models.train import evaluate

    r = evaluate(weights, dataset, imgsz_px=imgsz)
    print_table(f"{weights.name} on {dataset}", ["images", "precision", "recall", "mAP50", "mAP50-95"],
                [[r.images, f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.map50:.3f}", f"{r.map50_95:.3f}"]])


# === end section: detect + model =============================================================


# === section: uav + mission (issue 5) ========================================================

import enum  # noqa: E402
from pathlib import Path  # noqa: E402


class MissionFormatOpt(str, enum.Enum):
    kml = "kml"
    litchi = "litchi"
    qgc = "qgc"
    wpml = "wpml"


def _parse_lon_lat(text: str | None, param: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lon, lat = (float(v) for v in text.split(","))
    except ValueError:
        usage_error(f"expected LON,LAT (e.g. 117.02,24.51), got {text!r}", param)
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        usage_error(f"({lon}, {lat}) is not a lon,lat position (longitude first)", param)
    return lon, lat


@mission_app.command("plan")
@handles_errors
def mission_plan(
    patches: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Suspect patches (GeoJSON).")],
    fmt: Annotated[MissionFormatOpt, typer.Option("--format", help="kml (Ovital/Google Earth), litchi CSV, qgc .plan, DJI wpml KMZ.")],
    out_path: Annotated[Path, typer.Option("--out", help="Mission file; several missions -> STEM_1, STEM_2 ... (kml: one Folder each).")],
    altitude_m: Annotated[float, typer.Option("--altitude-m", min=2, max=500, help="Height above take-off, m.")] = 80.0,
    takeoff: Annotated[str | None, typer.Option("--takeoff", help="Take-off LON,LAT (default: first patch).")] = None,
    max_flight_min: Annotated[float, typer.Option("--max-flight-min", min=1, help="Usable minutes per battery.")] = 25.0,
    speed_m_s: Annotated[float, typer.Option("--speed-m-s", min=0.5, max=25, help="Cruise speed, m/s.")] = 8.0,
    hover_s: Annotated[float, typer.Option("--hover-s", min=0, help="Hover (photo) time per patch, s.")] = 5.0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Plan an inspection flight over suspect patches: nadir photo and hover at each centroid."""
    from tuban.imagery.vector_io import read_vector
    from tuban.pipelines.mission import MissionSettings, patch_targets, plan_missions
    from tuban.pipelines.mission_formats import MissionFormat, write_plan

    settings = MissionSettings(altitude_m=altitude_m, speed_m_s=speed_m_s, max_flight_min=max_flight_min,
                               hover_s=hover_s, takeoff=_parse_lon_lat(takeoff, "--takeoff"))
    targets = patch_targets(read_vector(patches), source=str(patches))
    plan = plan_missions(targets, settings, name=out_path.stem)
    paths = write_plan(plan, MissionFormat(fmt.value), out_path, overwrite=overwrite)
    for m, p in zip(plan.missions, paths * len(plan.missions) if len(paths) == 1 else paths, strict=False):
        info(f"{m.name}: {len(m.waypoints)} waypoints, {m.distance_m / 1000:.2f} km, "
             f"~{m.flight_s / 60:.1f} min incl. reserve -> {p}")
    for w in plan.warnings:
        info(f"Warning: {w}")
    out.print(f"{plan.n_waypoints} patches in {len(plan.missions)} mission(s) written to "
              f"{', '.join(str(p) for p in paths)}", markup=False, highlight=False)

# === end section: uav + mission ==============================================================


# === section: triage + tasks + cases + report + watch (issue 6) ===============================

# === end section: triage + tasks + cases + report + watch ====================================


# === section: flight (issue 7) ===============================================================

# === end section: flight =====================================================================


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
