"""tuban: triage drone and satellite imagery for environmental enforcement.

A 图斑 (tú bān) is a suspect map patch. tuban carries one case id through the whole loop:
sky (change detection) -> drone (missions, georeferenced evidence) -> ground (task packs for grid
officers, verdicts back) -> ledger (closure and re-watch), and scores drone-skills competitions.

The library raises one exception tree and never calls ``sys.exit``; the CLI maps it to
``Error: ...`` and an exit code::

    TubanError                      any failure tuban itself reports (exit 1)
    ├── InputError                  a file the user gave cannot be used; carries ``path``
    │   ├── RasterError             unreadable, non-georeferenced, wrong bands, all nodata
    │   ├── TelemetryError          a flight log / SRT / CSV tuban cannot parse
    │   └── VectorError             bad GeoJSON/CSV/zip content (patches, grids, returned packs)
    ├── AlignmentError              two inputs do not overlap or cannot be aligned
    ├── BandError                   a band role (green, nir, ...) cannot be resolved
    ├── LedgerError                 the case ledger refused an operation (unknown id, bad verdict)
    ├── ModelError                  detector weights missing or unusable
    └── OutputExistsError           an output exists and ``overwrite`` was not given
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "TubanError",
    "InputError",
    "RasterError",
    "TelemetryError",
    "VectorError",
    "AlignmentError",
    "BandError",
    "LedgerError",
    "ModelError",
    "OutputExistsError",
]


class TubanError(Exception):
    """Base of every error tuban raises on purpose."""


class InputError(TubanError):
    """A user-supplied file cannot be used.

    Args:
        path: the offending file (named in the message).
        problem: one line saying what is wrong with it.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class RasterError(InputError):
    """A raster is unreadable, not georeferenced, has the wrong bands, or is all nodata."""


class TelemetryError(InputError):
    """A telemetry file (SRT, CSV, ULog, GPX, EXIF) cannot be parsed."""


class VectorError(InputError):
    """A vector or tabular input (GeoJSON, CSV, task-pack zip) is malformed or unsafe."""


class AlignmentError(TubanError):
    """Two rasters do not overlap or cannot be brought onto one grid."""


class BandError(TubanError):
    """A band role needed by an algorithm (e.g. green, nir) cannot be resolved."""


class LedgerError(TubanError):
    """The case ledger refused an operation (unknown case or task, invalid verdict, ...)."""


class ModelError(TubanError):
    """Detector weights are missing, unreadable or of the wrong kind."""


class OutputExistsError(TubanError):
    """An output already exists and overwriting was not requested."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: already exists (use --overwrite to replace it)")
