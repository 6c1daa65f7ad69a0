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
from pathlib import Path
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


def must_exist(value: Any) -> Any:
    """Parameter callback: a missing input path is bad input (``Error: <path>: ...``, exit 1).

    Used instead of click's ``callback=must_exist``, which reports a missing file as a usage error
    (exit 2) in a multi-line box.
    """
    if value is None:
        return value
    for p in value if isinstance(value, (list, tuple)) else [value]:
        if not Path(str(p)).exists():
            fail(f"{p}: no such file or directory")
    return value


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
    if not verbose:  # GDAL's chatter about odd-but-readable files is for --verbose only
        for name in ("rasterio", "fiona", "pyogrio", "distributed", "ultralytics"):
            logging.getLogger(name).setLevel(logging.ERROR)


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



@app.command("sample")
@handles_errors
def sample_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the county into.", file_okay=False)],
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed (>= 0); same seed, identical files.")] = 0,
    size_km: Annotated[float, typer.Option("--size-km", min=2.0, max=20.0,
                                           help="County side in km (10 m pixels; 12 km takes ~15 s).")] = 12.0,
    uav: Annotated[bool, typer.Option("--uav/--no-uav", help="Also render the drone clip (uav/).")] = True,
    flights: Annotated[bool, typer.Option("--flights/--no-flights",
                                          help="Also write competition flight logs (flights/).")] = True,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write the synthetic sample county: satellite pairs, pond truth, village grids, drone clip, flights."""
    from tuban.sample_data.county import CountySpec, generate_county, read_manifest

    spec = CountySpec() if size_km == 12.0 else CountySpec.of_size_km(size_km)
    with progress_bar("Generating sample county") as progress:
        files = generate_county(out_dir, seed, overwrite=overwrite, progress=progress, spec=spec)
    manifest = read_manifest(files.root)
    counts = manifest["counts"]
    kinds = ["pond", "new_pond", "removed_pond", "drained_pond"]
    rows = [[k, counts["ponds"][k], counts["ponds_in_s2"][k], counts["ponds_in_hr"][k]] for k in kinds]
    rows.append(["total", counts["ponds_total"], sum(counts["ponds_in_s2"].values()),
                 sum(counts["ponds_in_hr"].values())])
    print_table(f"Sample county (seed {seed}): ponds by kind", ["kind", "county", "in s2", "in hr"], rows)
    out.print(f"{counts['grids']} village grids; dates {manifest['dates']['before']} -> {manifest['dates']['after']}",
              markup=False, highlight=False)
    for rel in ["county.json", *sorted(manifest["files"])]:
        out.print(f"  {files.root / rel}", markup=False, highlight=False)
    if uav:
        from tuban.sample_data.county_clip import generate_county_clip

        info("rendering the drone clip over the county's new ponds ...")
        clip = generate_county_clip(files.root, seed)
        out.print(f"  {clip.video}  (+ {clip.srt.name}, truth footprints and ponds)", markup=False, highlight=False)
    if flights:
        from tuban.sample_data.flights import write_flights

        written = write_flights(files.root)
        out.print(f"  {written['course']}  (+ {len(written['pilots'])} pilots as Airdata CSV and SRT)",
                  markup=False, highlight=False)
    out.print(f"Sample county written to {files.root}", markup=False, highlight=False)


@app.command("demo")
@handles_errors
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.",
                                          file_okay=False)] = Path("tuban-demo"),
    seed: Annotated[int, typer.Option("--seed", min=0, help="Sample county seed.")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes for change detection.")] = 2,
    size_km: Annotated[float | None, typer.Option("--size-km", min=2.0, max=40.0,
                                                  help="Sample county side in km (default 12).")] = None,
) -> None:
    """Run the sky-to-task loop on the sample county: change -> cases -> task packs per village."""
    import time

    from tuban.pipelines.demo import DemoSettings, run_demo

    started = time.perf_counter()
    with progress_bar("demo") as bar:
        stage = {"name": ""}

        def progress(name: str, done: int, total: int) -> None:
            if name != stage["name"]:
                stage["name"] = name
                info(f"- {name}")
            bar(done, total)

        result = run_demo(out_dir, DemoSettings(seed=seed, workers=workers, size_km=size_km),
                          progress=progress)
    if result.reused:
        info(f"reused from an earlier run: {', '.join(result.reused)}")
    kinds = sorted({k for c in result.patch_counts.values() for k in c})
    rows = [[k, *(result.patch_counts[s].get(k, 0) for s in result.patch_files)] for k in kinds]
    rows.append(["total", *(sum(result.patch_counts[s].values()) for s in result.patch_files)])
    print_table("Suspect patches found, by kind", ["kind", *result.patch_files], rows)
    out.print(f"Ledger {result.ledger}: {result.new_cases} new cases, {result.joined_cases} joined "
              f"existing cases, {result.frames_attached} drone frames attached as evidence",
              markup=False, highlight=False)
    done = "already there from an earlier run" if "packs" in result.reused else "written"
    out.print(f"{len(result.packs)} task packs {done} ({time.perf_counter() - started:.0f} s). "
              f"Task packs: {result.packs_dir.resolve()}", markup=False, highlight=False)


# === end section: sample + demo ==============================================================


# === section: change + eval (issue 3) ========================================================

import enum as _c_enum  # noqa: E402
from pathlib import Path as _CPath  # noqa: E402


class ChangeSensor(str, _c_enum.Enum):
    sentinel2 = "sentinel2"
    landsat8 = "landsat8"
    landsat9 = "landsat9"
    landsat_tm = "landsat-tm"
    naip = "naip"
    gaofen2 = "gaofen2"
    planetscope = "planetscope"


class ChangeFormat(str, _c_enum.Enum):
    geojson = "geojson"
    gpkg = "gpkg"


def _date_inputs(text: str) -> list[str]:
    """One date: a file, folder or glob; several as a comma list or ``@list.txt``."""
    if text.startswith("@"):
        lines = _CPath(text[1:]).read_text(encoding="utf-8").splitlines()
        return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    return [p.strip() for p in text.split(",") if p.strip()]


def _band_option(text: str | None, flag: str) -> dict[str, int] | None:
    from tuban.imagery.bands import parse_band_spec

    try:
        return parse_band_spec(text) or None
    except ValueError as exc:
        usage_error(str(exc), flag)
        return None


@app.command("change")
@handles_errors
def change_cmd(
    before: Annotated[str, typer.Argument(help="Before date: GeoTIFF/COG/VRT, folder or glob of tiles, Landsat band folder, comma list or @list.txt.")],
    after: Annotated[str, typer.Argument(help="After date, same forms as BEFORE (grid, CRS and resolution may differ).")],
    out: Annotated[_CPath, typer.Option("--out", help="Patches GeoJSON (EPSG:4326, one Polygon per patch).")],
    bands: Annotated[str | None, typer.Option("--bands", help="Band roles for both dates, 1-based: green=2,nir=4[,red=3,blue=1,swir1=5,qa=6].")] = None,
    bands_after: Annotated[str | None, typer.Option("--bands-after", help="Band roles of AFTER if they differ from --bands.")] = None,
    sensor: Annotated[ChangeSensor | None, typer.Option("--sensor", help="Sensor preset for band roles (both dates).")] = None,
    sensor_after: Annotated[ChangeSensor | None, typer.Option("--sensor-after", help="Sensor preset of AFTER if it differs.")] = None,
    fmt: Annotated[ChangeFormat, typer.Option("--format", help="geojson, or gpkg to also write a GeoPackage beside --out.")] = ChangeFormat.geojson,
    report: Annotated[_CPath | None, typer.Option("--report", help="JSON report: shift, thresholds, normalisation, counts.")] = None,
    mask: Annotated[_CPath | None, typer.Option("--mask", callback=must_exist, dir_okay=False, help="Exclusion polygons (GeoJSON/GPKG); nothing is reported inside.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Local worker processes (blocks and patch examination).")] = 1,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Dask distributed scheduler, e.g. tcp://10.0.0.5:8786.")] = None,
    block_size_px: Annotated[int, typer.Option("--block-size-px", min=64, help="Processing block edge, pixels.")] = 1024,
    min_area_m2: Annotated[float, typer.Option("--min-area-m2", min=0.0, help="Smallest pond, m² (default 0.05 ha).")] = 500.0,
    max_area_m2: Annotated[float, typer.Option("--max-area-m2", min=0.0, help="Largest pond, m² (default 10 ha).")] = 100_000.0,
    no_shift_correction: Annotated[bool, typer.Option("--no-shift-correction", help="Measure but do not correct misregistration.")] = False,
    dry_ponds: Annotated[bool, typer.Option("--dry-ponds", help="Also report freshly dug ponds with no water yet (new_pond, state=dry; experimental, low recall).")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Find new, removed and drained ponds (and other water change) between two dates."""
    from tuban.imagery.ponds import ShapeSettings
    from tuban.imagery.vector_io import check_output, read_vector
    from tuban.pipelines.change import ChangeSettings, run_change
    from tuban.pipelines.change_output import change_outputs, write_change

    if scheduler is not None and not scheduler.startswith(("tcp://", "tls://", "inproc://", "ws://")):
        usage_error("expected an address such as tcp://HOST:PORT", "--scheduler")
    if max_area_m2 <= min_area_m2:
        usage_error("must be larger than --min-area-m2", "--max-area-m2")
    for p in change_outputs(out, fmt.value, report):
        check_output(p, overwrite)
    b_roles = _band_option(bands, "--bands")
    a_roles = _band_option(bands_after, "--bands-after") or b_roles
    geoms = tuple(read_vector(mask).to_crs(4326).geometry) if mask else ()
    settings = ChangeSettings(
        bands_before=b_roles, bands_after=a_roles,
        sensor_before=sensor.value if sensor else None,
        sensor_after=(sensor_after or sensor).value if (sensor_after or sensor) else None,
        block_px=block_size_px, workers=workers, scheduler=scheduler,
        correct_shift=not no_shift_correction,
        shapes=ShapeSettings(min_area_m2=min_area_m2, max_area_m2=max_area_m2), mask_geoms=geoms,
        dry_ponds=dry_ponds,
    )
    with progress_bar("change") as cb:
        result = run_change(_date_inputs(before), _date_inputs(after), settings, progress=cb)
    shift = result.stats["shift_px"]
    info(f"misregistration: dx={shift['dx']:+.2f} px, dy={shift['dy']:+.2f} px "
         f"({result.stats['shift_m']} m, {'corrected' if shift['applied'] else 'not resampled'})")
    written = write_change(result, out, fmt=fmt.value, report=report, overwrite=overwrite)
    counts = result.stats["patches"]
    print_table(f"change {result.dates[0] or '?'} -> {result.dates[1] or '?'}", ["kind", "patches"],
                [[k, v] for k, v in counts.items()])
    info("wrote " + ", ".join(str(p) for p in written))


@app.command("eval")
@handles_errors
def eval_cmd(
    pred: Annotated[_CPath, typer.Argument(callback=must_exist, dir_okay=False, help="Predicted patches (GeoJSON/GPKG).")],
    truth: Annotated[_CPath, typer.Argument(callback=must_exist, dir_okay=False, help="Truth polygons (GeoJSON/GPKG).")],
    iou: Annotated[float, typer.Option("--iou", min=0.0, max=1.0, help="IoU needed for a match (0-1].")] = 0.25,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="Only predictions of this kind (repeatable), e.g. new_pond.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """Object-level precision, recall and F1 of predicted patches against truth polygons."""
    import json as _json

    from tuban.imagery.vector_io import read_vector
    from tuban.pipelines.evaluate import score_objects

    if iou <= 0:
        usage_error("must be > 0", "--iou")
    p = read_vector(pred)
    t = read_vector(truth)
    if kind:
        if "kind" not in p.columns:
            usage_error(f"{pred} has no 'kind' property", "--kind")
        p = p[p["kind"].isin(kind)]
    elif "kind" in p.columns and p["kind"].nunique() > 1:
        info(f"note: {pred.name} holds kinds {', '.join(sorted(p['kind'].dropna().unique()))}; "
             "all are scored against the truth (use --kind to score one)")
    s = score_objects(p, t, iou_threshold=iou).as_dict()
    if as_json:
        out.print_json(_json.dumps(s))
        return
    rows = [[k, f"{v:.3f}" if isinstance(v, float) else v] for k, v in s.items()]
    print_table(f"{pred.name} vs {truth.name} (IoU >= {iou})", ["metric", "value"], rows)

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


class RuntimeOpt(str, _enum.Enum):
    auto = "auto"
    onnx = "onnx"
    torch = "torch"


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
    runtime: Annotated[RuntimeOpt, typer.Option("--runtime", help="Model engine: onnx (ONNX Runtime, the .pt exported once into tuban's cache), torch, or auto (onnx when onnxruntime is installed and the model is not OBB).")] = RuntimeOpt.auto,
    overwrite: OverwriteOpt = False,
) -> None:
    """Detect objects (ponds) on a large georeferenced raster by slices; one feature per object."""
    from tuban import BandError
    from tuban.imagery.vector_io import check_output, write_geojson
    from tuban.models.onnx_detector import load_detector_for_runtime
    from tuban.models.yolo import YoloSettings
    from tuban.pipelines.detect import DetectSettings, detect_raster

    _check_bands(bands)
    if overlap_px >= tile_size_px // 2:
        usage_error("must be below half of --tile-size-px", "--overlap-px")
    check_output(out_path, overwrite)
    settings = DetectSettings(tile_size_px=tile_size_px, overlap_px=overlap_px, batch=batch, bands=bands)
    detector = load_detector_for_runtime(model, YoloSettings(conf=conf), runtime.value)
    with progress_bar("detect") as cb:
        try:
            gdf, stats = detect_raster(raster if len(raster) > 1 else raster[0], detector, settings, progress=cb)
        except BandError as exc:
            usage_error(str(exc), "--bands")
    write_geojson(gdf, out_path, overwrite=overwrite)
    info(f"{stats.slices_inferred}/{stats.slices_total} slices inferred ({stats.slices_skipped_nodata} nodata-only "
         f"skipped), {stats.detections_raw} raw detections merged into {stats.detections_merged}, "
         f"{stats.wall_s:.1f} s (model {stats.model_s:.1f} s, {getattr(detector, 'runtime', '?')} runtime)")
    out.print(f"{len(gdf)} detections written to {out_path}", markup=False, highlight=False)


@model_app.command("dataset")
@handles_errors
def model_dataset(
    raster: Annotated[list[_pathlib.Path], typer.Argument(callback=must_exist, help="Georeferenced rasters to cut into chips.")],
    labels: Annotated[_pathlib.Path, typer.Option("--labels", callback=must_exist, dir_okay=False, help="Polygon labels (GeoJSON; 'label' column, 'negative' = hard negative).")],
    out_dir: Annotated[_pathlib.Path, typer.Option("--out", help="Dataset folder to create (images/, labels/, data.yaml).")],
    tile_size_px: Annotated[int, typer.Option("--tile-size-px", min=32, help="Chip size, pixels.")] = 640,
    obb: Annotated[bool, typer.Option("--obb", help="Oriented-box labels (for -obb models).")] = False,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.05, max=0.5, help="Share of each raster held out for validation (by area).")] = 0.2,
    bands: Annotated[str | None, typer.Option("--bands", help="R,G,B bands (indices or names), as for detect.")] = None,
    model_gsd_m: Annotated[float | None, typer.Option("--model-gsd-m", min=0.0, help="Pixel size (m) chips are brought to: coarser rasters are upsampled as `tuban detect` does. Default: the finest raster's; 0 = native scale.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Cut rasters into chips with YOLO labels, split train/val by area without leakage."""
    from tuban.imagery.vector_io import read_vector
    from tuban.models.dataset import DatasetSettings, build_dataset

    _check_bands(bands)
    gdf = read_vector(labels)
    settings = DatasetSettings(tile_size_px=tile_size_px, obb=obb, val_fraction=val_fraction, bands=bands,
                               model_gsd_m=model_gsd_m)
    with progress_bar("chips") as cb:
        s = build_dataset([(r, gdf) for r in raster], out_dir, settings, labels_path=labels,
                          overwrite=overwrite, progress=cb)
    out.print(f"{s.chips['train']} train / {s.chips['val']} val chips ({s.objects['train']} / "
              f"{s.objects['val']} objects, {s.negative_chips} hard-negative chips, {s.guard_chips_dropped} "
              f"guard chips dropped); classes {', '.join(s.names)} -> {s.data_yaml}", markup=False, highlight=False)


@model_app.command("train")
@handles_errors
def model_train(
    dataset: Annotated[_pathlib.Path, typer.Argument(callback=must_exist, file_okay=False, help="Dataset folder from `tuban model dataset`.")],
    out_path: Annotated[_pathlib.Path, typer.Option("--out", help="Output weights (.pt).")],
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 30,
    model: Annotated[YoloModelOpt, typer.Option("--model", help="Architecture, built from yaml (no downloaded weights).")] = YoloModelOpt.yolo11n,
    imgsz: Annotated[int, typer.Option("--imgsz", min=32, help="Training image size, pixels.")] = 320,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per step.")] = 16,
    device: Annotated[str | None, typer.Option("--device", help="cpu, 0, 0,1 ... (default: GPU if present, else CPU).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    init_weights: Annotated[_pathlib.Path | None, typer.Option("--init-weights", callback=must_exist, dir_okay=False, help="Fine-tune from these .pt weights (trusted file: it is unpickled), e.g. the shipped pond model, instead of a random start.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a YOLO detector offline from a model yaml (or fine-tune --init-weights); copies the best checkpoint to --out."""
    from tuban.models.train import TrainSettings, train

    if out_path.suffix.lower() != ".pt":
        usage_error("weights file must end in .pt", "--out")
    settings = TrainSettings(model=model.value, epochs=epochs, imgsz_px=imgsz, batch=batch, device=device, seed=seed,
                             init_weights=str(init_weights) if init_weights else None)
    with progress_bar("epochs") as cb:
        r = train(dataset, out_path, settings, overwrite=overwrite, progress=cb)
    out.print(f"{r.epochs_run} epochs in {r.seconds:.0f} s -> {r.weights} ({r.size_bytes / 1e6:.1f} MB); "
              f"val precision {r.val.precision:.3f} recall {r.val.recall:.3f} mAP50 {r.val.map50:.3f}",
              markup=False, highlight=False)


@model_app.command("eval")
@handles_errors
def model_eval(
    weights: Annotated[_pathlib.Path, typer.Argument(help="YOLO .pt weights (trusted file).")],
    dataset: Annotated[_pathlib.Path, typer.Argument(callback=must_exist, help="Dataset folder (or its data.yaml).")],
    imgsz: Annotated[int | None, typer.Option("--imgsz", min=32, help="Image size (default: the training size).")] = None,
) -> None:
    """Print precision, recall and mAP50 of weights on a dataset's validation split."""
    from tuban.models.train import evaluate

    r = evaluate(weights, dataset, imgsz_px=imgsz)
    print_table(f"{weights.name} on {dataset}", ["images", "precision", "recall", "mAP50", "mAP50-95"],
                [[r.images, f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.map50:.3f}", f"{r.map50_95:.3f}"]])


# === end section: detect + model =============================================================


# === section: uav + mission (issue 5) ========================================================

import enum as _ix_enum  # noqa: E402
from pathlib import Path as _IxPath  # noqa: E402


class CameraPresetOpt(str, _ix_enum.Enum):
    p4rtk = "p4rtk"
    m3e = "m3e"
    mavic3 = "mavic3"
    m30t_wide = "m30t-wide"
    m30t_thermal = "m30t-thermal"
    m3t_wide = "m3t-wide"
    mini3 = "mini3"
    mini4 = "mini4"
    mini2 = "mini2"
    mavic2pro = "mavic2pro"
    mavicpro = "mavicpro"
    air2s = "air2s"


def _video_telemetry(video: _IxPath, telemetry: _IxPath | None) -> _IxPath:
    """``telemetry``, else the VIDEO.SRT (or .srt) beside the video; usage error if neither."""
    if telemetry is None:
        telemetry = next((p for p in (video.with_suffix(".SRT"), video.with_suffix(".srt")) if p.exists()), None)
        if telemetry is None:
            usage_error(f"no telemetry: give --telemetry (no {video.stem}.SRT beside the video)", "--telemetry")
    return telemetry


@uav_app.command("index")
@handles_errors
def uav_index(
    source: Annotated[_IxPath, typer.Argument(callback=must_exist, help="Video, folder of geotagged JPEGs, one JPEG, or exiftool CSV.")],
    out_path: Annotated[_IxPath, typer.Option("--out", dir_okay=False, help="Frame footprints (GeoJSON, EPSG:4326).")],
    telemetry: Annotated[_IxPath | None, typer.Option("--telemetry", callback=must_exist, help="SRT/CSV/GPX/ULog of the video (default: VIDEO.SRT beside it).")] = None,
    camera: Annotated[CameraPresetOpt | None, typer.Option("--camera", help="Camera preset.")] = None,
    hfov_deg: Annotated[float | None, typer.Option("--hfov-deg", min=1, max=179, help="Horizontal field of view instead of a preset.")] = None,
    every_s: Annotated[float, typer.Option("--every-s", min=0.01, help="Sample one video frame every N seconds.")] = 1.0,
    dem: Annotated[_IxPath | None, typer.Option("--dem", callback=must_exist, dir_okay=False, help="Ground elevation GeoTIFF (ray marching).")] = None,
    frames_dir: Annotated[_IxPath | None, typer.Option("--frames-dir", file_okay=False, help="Save sampled frames here as JPEG.")] = None,
    height_m: Annotated[float | None, typer.Option("--height-m", min=0.1, help="Constant height above ground, overriding telemetry.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Georeference video frames (with their telemetry) or geotagged photos: one footprint per frame."""
    from tuban.imagery.dem_ray import read_dem
    from tuban.imagery.telemetry import read_track
    from tuban.imagery.vector_io import check_output, write_geojson
    from tuban.imagery.video import VIDEO_SUFFIXES
    from tuban.pipelines.uav_index import IndexSettings, index_photos, index_video

    if camera is not None and hfov_deg is not None:
        usage_error("give --camera or --hfov-deg, not both", "--hfov-deg")
    settings = IndexSettings(camera=camera.value if camera else None, hfov_deg=hfov_deg, every_s=every_s,
                             height_m=height_m)
    check_output(out_path, overwrite)
    elevation = read_dem(dem) if dem else None
    with progress_bar("uav index") as cb:
        if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
            track = read_track(_video_telemetry(source, telemetry))
            result = index_video(source, track, settings, dem=elevation, frames_dir=frames_dir,
                                 out_path=out_path, overwrite=overwrite, progress=cb)
        else:
            if telemetry is not None or frames_dir is not None:
                info("Note: --telemetry/--frames-dir apply to videos; photos carry their own metadata")
            result = index_photos(read_track(source), settings, dem=elevation, out_path=out_path, progress=cb)
    for w in result.warnings:
        info(f"Warning: {w}")
    write_geojson(result.frames, out_path, overwrite=overwrite)
    out.print(f"{len(result.frames)} frames, {result.n_footprints} footprints -> {out_path}",
              markup=False, highlight=False)


import enum as _uav_enum  # noqa: E402
from pathlib import Path as _UavPath  # noqa: E402


class MissionFormatOpt(str, _uav_enum.Enum):
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
    patches: Annotated[_UavPath, typer.Argument(callback=must_exist, dir_okay=False, help="Suspect patches (GeoJSON).")],
    fmt: Annotated[MissionFormatOpt, typer.Option("--format", help="kml (Ovital/Google Earth), litchi CSV, qgc .plan, DJI wpml KMZ.")],
    out_path: Annotated[_UavPath, typer.Option("--out", help="Mission file; several missions -> STEM_1, STEM_2 ... (kml: one Folder each).")],
    altitude_m: Annotated[float, typer.Option("--altitude-m", min=2, max=500, help="Height above take-off, m.")] = 80.0,
    takeoff: Annotated[str, typer.Option("--takeoff", help="Take-off LON,LAT, or auto: one launch site per cluster of patches within one battery's reach.")] = "auto",
    max_flight_min: Annotated[float, typer.Option("--max-flight-min", min=1, help="Usable minutes per battery.")] = 25.0,
    speed_m_s: Annotated[float, typer.Option("--speed-m-s", min=0.5, max=25, help="Cruise speed, m/s.")] = 8.0,
    hover_s: Annotated[float, typer.Option("--hover-s", min=0, help="Hover (photo) time per patch, s.")] = 5.0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Plan an inspection flight over suspect patches: nadir photo and hover at each centroid."""
    import geopandas as gpd
    from shapely.geometry import Point

    from tuban.imagery.vector_io import check_output, read_vector, write_geojson
    from tuban.pipelines.mission import MissionSettings, patch_targets, plan_missions
    from tuban.pipelines.mission_formats import MissionFormat, output_paths, write_plan

    fixed = None if takeoff.strip().lower() == "auto" else _parse_lon_lat(takeoff, "--takeoff")
    settings = MissionSettings(altitude_m=altitude_m, speed_m_s=speed_m_s, max_flight_min=max_flight_min,
                               hover_s=hover_s, takeoff=fixed)
    targets = patch_targets(read_vector(patches), source=str(patches))
    plan = plan_missions(targets, settings, name=out_path.stem)
    if not plan.missions:
        fail(f"{patches}: no patch reachable within --max-flight-min {max_flight_min:g} "
             f"({plan.warnings[0] if plan.warnings else ''})")
    lost_path = out_path.with_name(f"{out_path.stem}_unreachable.geojson")
    fmt_enum = MissionFormat(fmt.value)
    for p in [*output_paths(plan, fmt_enum, out_path), *([lost_path] if plan.unreachable else [])]:
        check_output(p, overwrite)
    paths = write_plan(plan, fmt_enum, out_path, overwrite=overwrite)
    if plan.unreachable:
        lost = gpd.GeoDataFrame({"name": [u.name for u in plan.unreachable],
                                 "distance_m": [round(u.distance_m, 1) for u in plan.unreachable],
                                 "flight_min": [round(u.flight_s / 60, 1) for u in plan.unreachable]},
                                geometry=[Point(u.lon, u.lat) for u in plan.unreachable], crs="EPSG:4326")
        write_geojson(lost, lost_path, overwrite=overwrite)
    for m, p in zip(plan.missions, paths * len(plan.missions) if len(paths) == 1 else paths, strict=False):
        info(f"{m.name}: {len(m.waypoints)} waypoints from {m.takeoff[0]:.5f},{m.takeoff[1]:.5f}, "
             f"{m.distance_m / 1000:.2f} km, ~{m.flight_s / 60:.1f} min incl. reserve -> {p}")
    for w in plan.warnings:
        info(f"Warning: {w}" + (f" (listed in {lost_path})" if plan.unreachable and "unreachable" in w else ""))
    n_sites = len({m.takeoff for m in plan.missions})
    out.print(f"{plan.n_waypoints} patches in {len(plan.missions)} mission(s) from {n_sites} take-off "
              f"point(s) written to {', '.join(str(p) for p in paths)}"
              + (f"; {len(plan.unreachable)} unreachable -> {lost_path}" if plan.unreachable else ""),
              markup=False, highlight=False)


class UavDetectorOpt(str, _uav_enum.Enum):
    yolo = "yolo"
    baseline = "baseline"


@uav_app.command("detect")
@handles_errors
def uav_detect(
    video: Annotated[_UavPath, typer.Argument(callback=must_exist, dir_okay=False, help="Drone video (MP4/MOV).")],
    out_path: Annotated[_UavPath, typer.Option("--out", help="Merged detections GeoJSON (EPSG:4326).")],
    telemetry: Annotated[_UavPath | None, typer.Option("--telemetry", callback=must_exist, help="Flight log: DJI SRT, Airdata/OSD CSV, GPX, ULog (default: VIDEO.SRT beside it).")] = None,
    camera: Annotated[CameraPresetOpt | None, typer.Option("--camera", help="Camera preset.")] = None,
    hfov_deg: Annotated[float | None, typer.Option("--hfov-deg", min=1, max=179, help="Horizontal field of view of the video frame, degrees.")] = None,
    every_s: Annotated[float, typer.Option("--every-s", min=0.01, help="Sample one frame every this many seconds.")] = 1.0,
    dem: Annotated[_UavPath | None, typer.Option("--dem", callback=must_exist, dir_okay=False, help="Ground elevation GeoTIFF (ray marching).")] = None,
    height_m: Annotated[float | None, typer.Option("--height-m", min=0.1, help="Constant height above ground, overriding telemetry.")] = None,
    model: Annotated[_UavPath | None, typer.Option("--model", callback=must_exist, dir_okay=False, help="YOLO .pt weights (trusted file). Default: the shipped drone-scale pond model.")] = None,
    detector_kind: Annotated[UavDetectorOpt, typer.Option("--detector", help="yolo (a trained model) or baseline (deterministic water-colour blobs, no weights).")] = UavDetectorOpt.yolo,
    conf: Annotated[float | None, typer.Option("--conf", min=0.0, max=1.0, help="Minimum detection confidence (default: the model's recommended one, else 0.25).")] = None,
    min_frames: Annotated[int, typer.Option("--min-frames", min=1, help="Keep objects seen in at least this many sampled frames.")] = 2,
    keep_incomplete: Annotated[bool, typer.Option("--keep-incomplete", help="Also report objects whose outline the frames did not close with real edges (complete=false; e.g. cut by the end of the flight).")] = False,
    runtime: Annotated[RuntimeOpt, typer.Option("--runtime", help="Model engine for --detector yolo: onnx (ONNX Runtime, same weights, exported once into tuban's cache), torch, or auto (onnx when possible).")] = RuntimeOpt.auto,
    overwrite: OverwriteOpt = False,
) -> None:
    """Detect ponds on drone video frames, project them to the ground, merge across frames."""
    from tuban.imagery.dem_ray import read_dem
    from tuban.imagery.telemetry import read_track
    from tuban.imagery.vector_io import check_output, write_geojson
    from tuban.pipelines.uav_detect import UavDetectSettings, detect_video

    if camera is not None and hfov_deg is not None:
        usage_error("give --camera or --hfov-deg, not both", "--hfov-deg")
    telemetry = _video_telemetry(video, telemetry)
    check_output(out_path, overwrite)
    if detector_kind is UavDetectorOpt.baseline:
        from tuban.models.detector import FakeDetector

        detector, detector_gsd_m = FakeDetector(), None
    else:
        from tuban.pipelines.uav_detect import load_uav_detector

        detector, detector_gsd_m = load_uav_detector(model, conf=conf, runtime=runtime.value)
        conf = detector.settings.conf
    track = read_track(telemetry)
    elevation = read_dem(dem) if dem else None
    settings = UavDetectSettings(min_score=0.25 if conf is None else conf, min_frames=min_frames, detector_gsd_m=detector_gsd_m,
                                 require_complete=not keep_incomplete)
    try:
        with progress_bar("uav detect") as cb:
            gdf, stats = detect_video(video, track, detector, every_s=every_s,
                                      preset=camera.value if camera else None, hfov_deg=hfov_deg,
                                      settings=settings, dem=elevation, height_m=height_m, progress=cb)
    except ValueError as exc:  # no intrinsics
        usage_error(str(exc), "--camera")
    write_geojson(gdf, out_path, overwrite=overwrite)
    info(f"{stats['frames_sampled']} frames sampled ({stats['frames_with_pose']} with telemetry), "
         f"HFOV {stats['hfov_deg']} deg, {stats['detections_raw']} detections on the ground merged "
         f"into {stats['features']}")
    out.print(f"{len(gdf)} detections written to {out_path}", markup=False, highlight=False)

# === end section: uav + mission ==============================================================


# === section: triage + tasks + cases + report + watch (issue 6) ===============================

import enum as _t_enum  # noqa: E402
from pathlib import Path as _TPath  # noqa: E402

_LedgerOpt = Annotated[_TPath, typer.Option("--ledger", help="Case ledger (GeoPackage).", dir_okay=False)]


class CasesFormat(str, _t_enum.Enum):
    table = "table"
    json = "json"
    geojson = "geojson"


WatchSensor = ChangeSensor  # the same sensor presets (tuban.imagery.bands)


@app.command("triage")
@handles_errors
def triage_cmd(
    inputs: Annotated[list[_TPath], typer.Argument(help="PATCHES.geojson, then any DETECTIONS.geojson.", callback=must_exist, dir_okay=False)],
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
    grids: Annotated[_TPath, typer.Option("--grids", help="Grid cells (grid_id, name, admin_code, officer, phone).", callback=must_exist, dir_okay=False)] = ...,  # type: ignore[assignment]
    evidence: Annotated[_TPath | None, typer.Option("--evidence", help="Drone frame footprints (tuban uav index).", callback=must_exist, dir_okay=False)] = None,
    protected: Annotated[_TPath | None, typer.Option("--protected", help="Protected zones (raise priority).", callback=must_exist, dir_okay=False)] = None,
    min_iou: Annotated[float, typer.Option("--min-iou", min=0.01, max=1.0, help="IoU at which a patch joins an existing case.")] = 0.3,
    join_distance_m: Annotated[float, typer.Option("--join-distance-m", min=0.0, help="Centroid distance at which a patch joins a case.")] = 30.0,
    before_image: Annotated[_TPath | None, typer.Option("--before-image", help="Before raster for evidence chips (if PATCHES does not name it).", callback=must_exist, dir_okay=False)] = None,
    after_image: Annotated[_TPath | None, typer.Option("--after-image", help="After raster for evidence chips.", callback=must_exist, dir_okay=False)] = None,
) -> None:
    """Fuse patches, detections and drone frames into cases (stable case ids, priorities, grid officers)."""
    from tuban.imagery.vector_io import read_vector
    from tuban.pipelines.triage import TriageSettings, read_frames, read_patches, triage

    patches, rasters = read_patches(inputs[0])
    for role, given in (("before", before_image), ("after", after_image)):
        if given is not None:
            rasters[role] = str(given.resolve())
    with progress_bar("triage") as cb:
        result = triage(ledger, patches, read_vector(grids), detections=[read_vector(p) for p in inputs[1:]],
                        frames=read_frames(evidence) if evidence else None,
                        protected=read_vector(protected) if protected else None, rasters=rasters,
                        inputs={"patches": str(inputs[0]), "detections": [str(p) for p in inputs[1:]],
                                "evidence": str(evidence) if evidence else None, "grids": str(grids)},
                        settings=TriageSettings(min_iou=min_iou, join_distance_m=join_distance_m), progress=cb)
    for w in result.warnings:
        info(f"warning: {w}")
    if result.unchanged:
        info(f"{ledger}: these inputs were already triaged; nothing changed")
    out.print(f"{len(result.new_cases)} new cases, {len(result.joined_cases)} joined existing cases, "
              f"{result.frames_attached} drone frames attached -> {ledger}", markup=False, highlight=False)


@tasks_app.command("export")
@handles_errors
def tasks_export_cmd(
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
    out_dir: Annotated[_TPath, typer.Option("--out", help="Folder for the pack zips.", file_okay=False)] = ...,  # type: ignore[assignment]
    grid: Annotated[str | None, typer.Option("--grid", help="Only this grid_id.")] = None,
    max_per_pack: Annotated[int, typer.Option("--max-per-pack", min=1, help="Split a grid into packs of at most N tasks.")] = 500,
    gcj02: Annotated[bool, typer.Option("--gcj02", help="Also write GCJ-02 (offset) KML/TXT for Ovital.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write one task pack zip per grid cell for every open or restocked case; mark them dispatched."""
    from tuban.pipelines.tasks_export import ExportSettings, export_packs

    settings = ExportSettings(grid_id=grid, max_per_pack=max_per_pack, gcj02=gcj02, overwrite=overwrite)
    with progress_bar("packing tasks") as cb:
        packs = export_packs(ledger, out_dir, settings, progress=cb)
    if not packs:
        info("no open or restocked cases to dispatch")
    for p in packs:
        out.print(f"{p.path}  {len(p.task_ids)} tasks (grid {p.grid_id})", markup=False, highlight=False)


@tasks_app.command("import")
@handles_errors
def tasks_import_cmd(
    returned: Annotated[_TPath, typer.Argument(help="Returned GeoJSON, zip pack or CSV.", callback=must_exist, dir_okay=False)],
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
    from_gcj02: Annotated[bool, typer.Option("--from-gcj02", help="Returned points are GCJ-02 (edited in Ovital/Amap).")] = False,
    max_photo_distance_m: Annotated[float, typer.Option("--max-photo-distance-m", min=0.0, help="Flag photos farther than this from the patch.")] = 300.0,
) -> None:
    """Import officers' verdicts (idempotent; unknown tasks and bad verdicts are rejected by name)."""
    from tuban.pipelines.tasks_import import ImportSettings, import_verdicts

    settings = ImportSettings(from_gcj02=from_gcj02, max_photo_distance_m=max_photo_distance_m)
    with progress_bar("importing verdicts") as cb:
        res = import_verdicts(returned, ledger, settings, progress=cb)
    for w in res.warnings:
        info(f"warning: {w}")
    for task_id, flag in res.flagged:
        info(f"flagged {task_id}: {flag}")
    out.print(f"{res.applied} verdicts applied, {res.duplicates} already imported, {res.blank} blank, "
              f"{len(res.review_cases)} cases sent to review", markup=False, highlight=False)


@cases_app.command("list")
@handles_errors
def cases_list_cmd(
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
    status: Annotated[str | None, typer.Option("--status", help="Only cases with this status.")] = None,
    grid: Annotated[str | None, typer.Option("--grid", help="Only cases of this grid_id.")] = None,
    fmt: Annotated[CasesFormat, typer.Option("--format", help="Output format.")] = CasesFormat.table,
) -> None:
    """List cases of the ledger."""
    import json

    from tuban.imagery.vector_io import geojson_dict
    from tuban.pipelines.cases import STATUSES, list_cases

    if status is not None and status not in STATUSES:
        usage_error(f"unknown status {status!r}; one of: {', '.join(STATUSES)}", "--status")
    cases = list_cases(ledger, status=status, grid_id=grid)
    cols = ["case_id", "status", "priority", "kind", "area_mu", "grid_id", "verdict", "officer", "review_reason"]
    if fmt is CasesFormat.geojson:
        out.print(json.dumps(geojson_dict(cases.drop(columns="fid")), ensure_ascii=False), markup=False, highlight=False)
    elif fmt is CasesFormat.json:
        rows = json.loads(cases.drop(columns=["fid", "geometry"]).to_json(orient="records", force_ascii=False))
        out.print(json.dumps(rows, ensure_ascii=False, indent=1), markup=False, highlight=False)
    else:
        rows = [["" if v is None or v != v else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in r]
                for r in cases[cols].itertuples(index=False, name=None)]
        _print_cases_table(f"{len(cases)} cases", cols, rows)


def _print_cases_table(title: str, cols: list[str], rows: list[list[str]]) -> None:
    """Cases table that never truncates a case id: columns are kept in order of importance
    (``cols`` order) while they fit the terminal; the rest are named in a note."""
    from rich.cells import cell_len  # CJK names are two cells wide

    needed = [max([cell_len(c), *(cell_len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    keep, used = [], 1  # 1 = the table's left border
    for i, w in enumerate(needed):
        if i == 0 or used + w + 3 <= out.width:  # 3 = padding both sides + border
            keep.append(i)
            used += w + 3
    table = Table(title=title)
    for i in keep:
        table.add_column(cols[i], no_wrap=True, min_width=needed[i] if i == 0 else None)
    for r in rows:
        table.add_row(*[r[i] for i in keep])
    out.print(table)
    hidden = [c for i, c in enumerate(cols) if i not in keep]
    if hidden:
        info(f"{', '.join(hidden)} not shown at {out.width} columns: widen the terminal or use --format json")


@cases_app.command("show")
@handles_errors
def cases_show_cmd(
    case_id: Annotated[str, typer.Argument(help="Case id, e.g. 350181-00001.")],
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
) -> None:
    """Everything about one case: fields, evidence, tasks, verdict history, status history."""
    import json

    from tuban.pipelines.cases import show_case

    d = show_case(ledger, case_id)
    case = {k: v for k, v in d.case.items() if k not in ("geometry", "fid")}
    doc = {"case": case, "evidence": d.evidence, "tasks": d.tasks, "verdicts": d.verdicts, "events": d.events}
    out.print(json.dumps(doc, ensure_ascii=False, indent=1, default=str), markup=False, highlight=False)


@cases_app.command("close")
@handles_errors
def cases_close_cmd(
    case_id: Annotated[str, typer.Argument(help="Case id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the case is closed (销号).")],
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
) -> None:
    """Close a case (销号); closed cases are re-watched against re-stocking."""
    from tuban.pipelines.cases import close_case

    before = close_case(ledger, case_id, reason)
    out.print(f"{case_id}: {before} -> closed", markup=False, highlight=False)


@cases_app.command("reopen")
@handles_errors
def cases_reopen_cmd(
    case_id: Annotated[str, typer.Argument(help="Case id.")],
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
    reason: Annotated[str, typer.Option("--reason", help="Why it is reopened.")] = "reopened by user",
    pack_lost: Annotated[bool, typer.Option("--pack-lost", help="Re-send a dispatched case whose task pack was lost.")] = False,
) -> None:
    """Reopen a closed or decided case: it goes into the next task packs."""
    from tuban.pipelines.cases import reopen_case

    before = reopen_case(ledger, case_id, reason=reason, pack_lost=pack_lost)
    out.print(f"{case_id}: {before} -> open", markup=False, highlight=False)


@app.command("report")
@handles_errors
def report_cmd(
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
    out_path: Annotated[_TPath, typer.Option("--out", help="Report HTML file.", dir_okay=False)] = _TPath("report.html"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Offline HTML report: counts by status, grid and verdict, precision, time to verdict, map."""
    from tuban.pipelines.report import write_report

    data = write_report(ledger, out_path, overwrite=overwrite)
    prec = "n/a" if data.precision is None else f"{data.precision:.1%}"
    out.print(f"{out_path}: {len(data.cases)} cases, triage precision {prec}", markup=False, highlight=False)


@app.command("watch")
@handles_errors
def watch_cmd(
    new_image: Annotated[_TPath, typer.Argument(help="New image (GeoTIFF with green and nir bands).", callback=must_exist, dir_okay=False)],
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
    sensor: Annotated[WatchSensor | None, typer.Option("--sensor", help="Sensor preset for band roles.")] = None,
    bands: Annotated[str | None, typer.Option("--bands", help="Band roles, e.g. green=2,nir=4 (1-based).")] = None,
    min_water_fraction: Annotated[float, typer.Option("--min-water-fraction", min=0.0, max=1.0, help="Water share of a polygon that reopens it.")] = 0.5,
) -> None:
    """Re-watch closed/rectified cases: water back -> reopened as restocked (防复养)."""
    from tuban.imagery.bands import parse_band_spec
    from tuban.pipelines.watch import WatchSettings, watch

    try:
        band_map = parse_band_spec(bands)
    except ValueError as exc:
        usage_error(str(exc), "--bands")
    settings = WatchSettings(bands=band_map or None, sensor=sensor.value if sensor else None,
                             min_water_fraction=min_water_fraction)
    with progress_bar("watching") as cb:
        res = watch(ledger, new_image, settings, progress=cb)
    if res.unchanged:
        info(f"{new_image}: already watched with these settings; nothing changed")
    for case_id, why in res.skipped:
        info(f"skipped {case_id}: {why}")
    out.print(f"{len(res.checked)} cases checked (NDWI threshold {res.threshold_ndwi:.3f}), "
              f"{len(res.reopened)} reopened as restocked: {', '.join(res.reopened) or '-'}", markup=False, highlight=False)


@model_app.command("labels")
@handles_errors
def model_labels_cmd(
    ledger: _LedgerOpt = _TPath("tuban.gpkg"),
    out_path: Annotated[_TPath, typer.Option("--out", help="labels.geojson", dir_okay=False)] = _TPath("labels.geojson"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Verified cases as training labels (confirmed = pond, false_change/legal = hard negative)."""
    from tuban.pipelines.labels import write_labels

    labels = write_labels(ledger, out_path, overwrite=overwrite)
    n_pos = int(labels["positive"].sum())
    out.print(f"{out_path}: {n_pos} positives, {len(labels) - n_pos} hard negatives", markup=False, highlight=False)

# === end section: triage + tasks + cases + report + watch ====================================


# === section: flight (issue 7) ===============================================================

from pathlib import Path as _FPath  # noqa: E402

_FlightLogsArg = Annotated[list[_FPath], typer.Argument(
    callback=must_exist, dir_okay=False, help="One flight log per pilot (Airdata/DJI CSV, SRT, ULog, GPX).")]
_FlightCourseOpt = Annotated[_FPath | None, typer.Option(
    "--course", callback=must_exist, dir_okay=False, help="Course YAML (items, square, hover, targets, tolerances).")]
_FlightPilotOpt = Annotated[list[str] | None, typer.Option(
    "--pilot", help="Name a pilot: STEM=NAME (file stem of the log); repeatable.")]


def _flight_names(logs: list[_FPath], pilot: list[str] | None) -> dict[str, str]:
    names: dict[str, str] = {}
    for item in pilot or []:
        stem, sep, name = item.partition("=")
        if not sep or not stem.strip() or not name.strip():
            usage_error(f"expected STEM=NAME, got {item!r}", "--pilot")
        names[stem.strip()] = name.strip()
    unknown = sorted(set(names) - {p.stem for p in logs})
    if unknown:
        usage_error(f"no log with stem {', '.join(unknown)}", "--pilot")
    shown = [names.get(p.stem, p.stem) for p in logs]
    if len(set(shown)) != len(shown):
        usage_error(f"two logs give the same pilot name ({', '.join(shown)}); use --pilot STEM=NAME", "LOG")
    return names


def _flight_setup(logs: list[_FPath], course: _FPath | None, names: dict[str, str]) -> tuple[Any, list, list]:
    from tuban.pipelines.flight_course import default_course, load_course
    from tuban.pipelines.flight_score import read_logs

    crs = load_course(course) if course else default_course()
    named, failed = read_logs(logs, names)
    return crs, named, failed


def _flight_scored(named: list, failed: list, crs: Any) -> tuple[dict, list]:
    """Score the readable logs; warn per pilot without data; exit 1 when no pilot could be scored."""
    from tuban.pipelines.flight_score import NO_DATA, score_tracks

    with progress_bar("Scoring flights") as cb:
        result, judged = score_tracks(named, crs, progress=cb, failed=failed)
    lost = [p for p in result["pilots"] if p["status"] == NO_DATA]
    if not judged:
        where = {f.pilot: f.path or f.file for f in failed}
        fail("; ".join(f"{where.get(p['pilot'], p['source']['file'])}: {p['reason']}" for p in lost)
             + ("" if len(lost) == 1 else " (no pilot could be scored)"))
    for p in lost:
        info(f"Warning: {p['pilot']}: no data, not ranked ({p['source']['file']}: {p['reason']})")
    return result, judged


@flight_app.command("score")
@handles_errors
def flight_score_cmd(
    logs: _FlightLogsArg,
    out_dir: Annotated[_FPath, typer.Option("--out", file_okay=False, help="Output folder for scores.json and leaderboard.csv.")],
    course: _FlightCourseOpt = None,
    pilot: _FlightPilotOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Score each pilot's flight with the published rubric; write scores.json and leaderboard.csv."""
    from tuban.imagery.vector_io import check_output, write_text_atomic
    from tuban.pipelines.flight_score import leaderboard_csv, penalty_text, scores_json

    names = _flight_names(logs, pilot)
    targets = [check_output(out_dir / n, overwrite) for n in ("scores.json", "leaderboard.csv")]
    crs, named, failed = _flight_setup(logs, course, names)
    result, _ = _flight_scored(named, failed, crs)
    texts = [scores_json(result), leaderboard_csv(result)]
    for path, text in zip(targets, texts, strict=True):
        write_text_atomic(path, text, overwrite=overwrite)
    print_table("Leaderboard", ["rank", "pilot", "total", "penalties"],
                [[p["rank"] or "-", p["pilot"], "no data" if p["status"] == "no_data" else f"{p['total']:.1f}",
                  "" if p["status"] == "no_data" else penalty_text(p["penalty_points"])] for p in result["pilots"]])
    for p in result["pilots"]:
        for status in ("not_found", "rejected"):
            names = [k for k, v in p["items"].items() if v["status"] == status]
            if names:
                info(f"{p['pilot']}: {status.replace('_', ' ')}: {', '.join(names)}")
    info(f"Wrote {targets[0]} and {targets[1]}")


@flight_app.command("replay")
@handles_errors
def flight_replay_cmd(
    logs: _FlightLogsArg,
    out_dir: Annotated[_FPath, typer.Option("--out", file_okay=False, help="Output folder for index.html and PNG plots.")],
    course: _FlightCourseOpt = None,
    pilot: _FlightPilotOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write an offline replay page (index.html: tracks, scrubber, plots, scorecards) and PNG plots."""
    from tuban.imagery.vector_io import check_output, write_bytes_atomic, write_text_atomic
    from tuban.pipelines.flight_replay import replay_html, replay_pngs

    names = _flight_names(logs, pilot)
    check_output(out_dir / "index.html", overwrite)
    crs, named, failed = _flight_setup(logs, course, names)
    result, judged = _flight_scored(named, failed, crs)
    page, pngs = replay_html(judged, result, crs), replay_pngs(judged, crs)
    for name in pngs:
        check_output(out_dir / name, overwrite)
    for name, data in pngs.items():
        write_bytes_atomic(out_dir / name, data, overwrite=overwrite)
    write_text_atomic(out_dir / "index.html", page, overwrite=overwrite)
    info(f"Wrote {out_dir / 'index.html'} and {len(pngs)} PNG plots")

# === end section: flight =====================================================================


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
