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
