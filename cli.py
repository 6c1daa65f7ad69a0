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
