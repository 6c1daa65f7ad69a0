"""Write a change result: GeoJSON (always), GeoPackage (optional), JSON report (optional).

All outputs are checked before any is written and each is written atomically, so a failure
leaves no partial file and an existing file is replaced only with ``overwrite``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from tuban.imagery.vector_io import atomic_path, check_output, geojson_dict
from tuban.pipelines.change import ChangeResult

__all__ = ["change_outputs", "write_change", "change_summary"]


def change_outputs(out: Path, fmt: str, report: Path | None) -> list[Path]:
    """Paths a change run will write (GeoJSON, optional .gpkg beside it, optional report)."""
    paths = [Path(out)]
    if fmt == "gpkg":
        paths.append(Path(out).with_suffix(".gpkg"))
    if report is not None:
        paths.append(Path(report))
    return paths


def change_summary(result: ChangeResult) -> dict:
    """Top-level facts about a run (stored in the GeoJSON and the report).

    ``before_raster``/``after_raster`` name the inputs (absolute paths; a list for tile sets)
    so that ``tuban triage`` can cut evidence chips for the task packs.
    """
    sources = result.stats.get("sources", {})
    return {
        "before_raster": sources.get("before"),
        "after_raster": sources.get("after"),
        "before_date": result.dates[0],
        "after_date": result.dates[1],
        "shift_px": {"dx": result.shift_px[0], "dy": result.shift_px[1]},
        "shift_m": result.stats.get("shift_m"),
        "patch_counts": result.stats.get("patches", {}),
    }


def write_change(result: ChangeResult, out: Path, *, fmt: str = "geojson", report: Path | None = None,
                 overwrite: bool = False) -> list[Path]:
    """Write the patches (and GeoPackage / report); returns the written paths."""
    paths = change_outputs(out, fmt, report)
    for p in paths:
        check_output(p, overwrite)
    doc = {"tuban_change": change_summary(result), **geojson_dict(result.patches)}
    with atomic_path(paths[0], overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        if fmt == "gpkg":
            with atomic_path(paths[1], overwrite=overwrite) as gtmp:
                gtmp.unlink(missing_ok=True)
                with warnings.catch_warnings():  # the temp name does not end in .gpkg
                    warnings.simplefilter("ignore", RuntimeWarning)
                    result.patches.to_file(gtmp, driver="GPKG", layer="patches")
        if report is not None:
            with atomic_path(report, overwrite=overwrite) as rtmp:
                full = {**change_summary(result), "stats": result.stats}
                rtmp.write_text(json.dumps(full, indent=2, ensure_ascii=False), encoding="utf-8")
    return paths
