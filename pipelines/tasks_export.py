"""Task packs for grid officers: one zip per grid cell, dispatched cases marked in the ledger.

A pack (format version :data:`PACK_FORMAT`) holds::

    tasks.geojson        RFC 7946, one feature per task (properties: see TASK_PROPERTIES)
    tasks.kml            the same in WGS84 KML
    tasks_gcj02.kml/txt  only with gcj02=True: GCJ-02 OFFSET coordinates for Ovital, labelled so
    evidence/            before/after chips per case, best drone frames when present
    index.html           offline phone page, one card per task
    manifest.json        pack id, tuban version, created time, sha256 of every other file

Zips are written atomically; the ledger is updated (tasks rows, cases -> ``dispatched``) in one
transaction only after every zip is on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import rasterio
from PIL import Image

from tuban import LedgerError, RasterError, __version__
from tuban.imagery.chips import render_chip_from
from tuban.imagery.crs import WGS84
from tuban.imagery.vector_io import atomic_path, geojson_dict
from tuban.pipelines.cases import DISPATCHABLE, VERDICTS
from tuban.pipelines.ledger import Ledger, open_ledger, utc_now
from tuban.pipelines.pack_page import index_html, ovital_txt, tasks_kml

__all__ = ["PACK_FORMAT", "TASK_PROPERTIES", "ExportSettings", "PackInfo", "export_packs", "instructions_for"]

PACK_FORMAT = 1
TASK_PROPERTIES = (
    "case_id", "task_id", "kind", "priority", "score", "area_m2", "area_mu", "lon", "lat", "grid_id",
    "grid_name", "officer", "before_date", "after_date", "evidence", "instructions", "status",
    "verdict", "verified_by", "verified_at", "note", "photos",
)
_MAX_FRAME_BYTES = 20 * 2**20

_CHECK = {
    "new_pond": "A pond seems to have been dug or filled here since {before}. Is it an aquaculture pond "
                "(water, dikes, aerators, feeding platforms, fences)? Is anything stocked?",
    "drained_pond": "This pond looks drained since {before}. Is it being cleaned for re-stocking, "
                    "or abandoned/filled in?",
    "removed_pond": "This pond seems to have been removed since {before}. Is it filled in and the "
                    "land restored, or only temporarily dry?",
    "new_water": "New open water since {before}. Is it a pond, a flooded field, or temporary flooding?",
    "lost_water": "Open water disappeared since {before}. Drained pond, harvested paddy, or filled land?",
    "restocked": "This case was closed or rectified, but new imagery shows water again. Is the pond "
                 "stocked or used again?",
}
_ALWAYS = (" Photograph the site from the dike (at least one photo facing the patch, one of the "
           "surroundings) with location on. Never enter unsafe water. Return a verdict: "
           + ", ".join(VERDICTS) + ".")


@dataclass(frozen=True)
class ExportSettings:
    """What to export and how.

    Args:
        grid_id: only this grid cell (None: every grid).
        max_per_pack: split a grid's tasks into packs of at most this many.
        gcj02: also write GCJ-02 (offset) KML/TXT for Ovital.
        chip_size_px: longest side of evidence chips.
        max_frames: drone frames per case copied into the pack.
        frame_max_px: drone frames are shrunk to this long side (JPEG).
        overwrite: replace existing zips of the same name.
    """

    grid_id: str | None = None
    max_per_pack: int = 500
    gcj02: bool = False
    chip_size_px: int = 256
    max_frames: int = 3
    frame_max_px: int = 1600
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.max_per_pack < 1:
            raise ValueError("max_per_pack must be at least 1")


@dataclass(frozen=True)
class PackInfo:
    """One written pack."""

    pack_id: str
    path: Path
    grid_id: str
    task_ids: tuple[str, ...]


def instructions_for(case: dict[str, Any]) -> str:
    """What the officer should check for a case, in plain words."""
    key = "restocked" if case.get("status") == "restocked" else case.get("kind")
    text = _CHECK.get(str(key), "Something changed here since {before}. What is on the ground now?")
    text = text.format(before=case.get("before_date") or "the earlier image")
    if case.get("protected"):
        text += " The patch touches a protected zone."
    return text + _ALWAYS


def _safe(name: str) -> str:
    """A file-name part: Unicode letters and digits kept (grid ids are often village names)."""
    return re.sub(r"[^\w.-]+", "_", str(name)).strip("._")[:80] or "x"


def _grid_file_parts(grids: list[str]) -> dict[str, str]:
    """One distinct file-name part per grid id; ids that sanitise alike get a short hash."""
    parts: dict[str, str] = {}
    taken: dict[str, int] = {}
    for g in grids:
        base = _safe(g)
        taken[base] = taken.get(base, 0) + 1
    for g in grids:
        base = _safe(g)
        parts[g] = base if taken[base] == 1 else f"{base}_{hashlib.sha1(str(g).encode()).hexdigest()[:6]}"
    return parts


class _Rasters:
    """Source rasters kept open for the whole export (GDAL's block cache serves many chips)."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.open: dict[str, Any] = {}

    def get(self, path: str) -> Any:
        if path not in self.open:
            try:
                self.open[path] = self.stack.enter_context(rasterio.open(path))
            except Exception as exc:
                raise RasterError(path, f"cannot open raster ({exc})") from None
        return self.open[path]


def _evidence_files(led: Ledger, case: dict[str, Any], geom: Any, settings: ExportSettings,
                    rasters: _Rasters) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    cid = _safe(case["case_id"])
    for role in ("before", "after"):
        path = case.get(f"raster_{role}")
        if isinstance(path, str) and path and Path(path).is_file():
            chip = render_chip_from(rasters.get(path), geom, size_px=settings.chip_size_px)
            if chip:
                files[f"evidence/{cid}_{role}.png"] = chip
    frames = led.rows("SELECT path FROM evidence WHERE case_id = ? AND kind = 'frame' AND path IS NOT NULL "
                      "ORDER BY rank_key, source_id", (case["case_id"],))
    n = 0
    for fr in frames:
        p = Path(fr["path"])
        if n >= settings.max_frames or not p.is_file() or p.stat().st_size > _MAX_FRAME_BYTES:
            continue
        n += 1
        files[f"evidence/{cid}_frame{n}.jpg"] = _phone_jpeg(p, settings.frame_max_px)
    return files


def _phone_jpeg(path: Path, max_px: int) -> bytes:
    """A drone frame as a JPEG no larger than ``max_px`` on its long side (phones, slow links)."""
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            if max(img.size) <= max_px and img.format == "JPEG":
                return data
            img.thumbnail((max_px, max_px))
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=85)
            return buf.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return data


def _task_feature(case: dict[str, Any], geom: Any, task_id: str, evidence: list[str]) -> dict[str, Any]:
    props = {k: case.get(k) for k in TASK_PROPERTIES if k in case}
    props.update(task_id=task_id, evidence=evidence, instructions=instructions_for(case), status="dispatched",
                 verdict=None, verified_by=None, verified_at=None, note=None, photos=[],
                 priority=int(case.get("priority") or 3), score=float(case.get("score") or 0.0),
                 area_m2=round(float(case.get("area_m2") or 0.0), 1),
                 area_mu=round(float(case.get("area_mu") or 0.0), 3))
    if geom is not None and geom.geom_type == "MultiPolygon" and len(geom.geoms) == 1:
        geom = geom.geoms[0]  # field apps handle plain polygons best
    return {"properties": {k: props.get(k) for k in TASK_PROPERTIES}, "geometry": geom}


def _build_zip(pack_id: str, grid_id: str, features: list[dict[str, Any]], files: dict[str, bytes],
               settings: ExportSettings, created: str) -> bytes:
    gdf = gpd.GeoDataFrame([f["properties"] for f in features], geometry=[f["geometry"] for f in features],
                           crs=WGS84)
    fc = geojson_dict(gdf)
    contents: dict[str, bytes] = dict(sorted(files.items()))
    contents["tasks.geojson"] = json.dumps(fc, ensure_ascii=False, separators=(",", ":")).encode()
    contents["tasks.kml"] = tasks_kml(pack_id, fc).encode()
    if settings.gcj02:
        contents["tasks_gcj02.kml"] = tasks_kml(pack_id, fc, gcj02=True).encode()
        contents["tasks_gcj02.txt"] = ovital_txt(fc).encode()
    contents["index.html"] = index_html(pack_id, fc, created=created, version=__version__).encode()
    manifest = {"pack_id": pack_id, "pack_format": PACK_FORMAT, "tuban_version": __version__,
                "created": created, "grid_id": grid_id, "n_tasks": len(features),
                "task_ids": [f["properties"]["task_id"] for f in features],
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}}
    contents["manifest.json"] = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    try:
        t = datetime.fromisoformat(created.replace("Z", "+00:00"))
        stamp = (max(t.year, 1980), t.month, t.day, t.hour, t.minute, t.second)
    except ValueError:
        stamp = (1980, 1, 1, 0, 0, 0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in contents.items():
            info = zipfile.ZipInfo(f"{pack_id}/{name}", date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED if name.endswith((".png", ".jpg")) else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def export_packs(ledger_path: str | Path, out_dir: str | Path, settings: ExportSettings = ExportSettings(), *,
                 now: str | None = None, progress: Callable[[int, int], None] | None = None) -> list[PackInfo]:
    """Write task packs for every dispatchable case (status open or restocked).

    Returns:
        The packs written (empty when nothing is waiting for dispatch).
    """
    out_dir = Path(out_dir)
    created = now or utc_now()
    stamp = re.sub(r"[^0-9TZ]", "", created)
    with open_ledger(ledger_path) as led, contextlib.ExitStack() as stack:
        rasters = _Rasters(stack)
        where = f"status IN ({', '.join('?' * len(DISPATCHABLE))})"
        params: list[Any] = list(DISPATCHABLE)
        if settings.grid_id is not None:
            where += " AND grid_id = ?"
            params.append(settings.grid_id)
        cases = led.cases(where, params)
        if not len(cases):
            return []
        cases = cases.assign(_grid=cases["grid_id"].fillna("nogrid").astype(str))
        cases = cases.sort_values(["_grid", "priority", "score", "case_id"], ascending=[True, True, False, True])
        attempts = {r["case_id"]: r["n"] for r in led.rows("SELECT case_id, COUNT(*) AS n FROM tasks GROUP BY case_id")}
        packs: list[tuple[str, str, list[dict[str, Any]], bytes]] = []
        done, total = 0, len(cases)
        file_part = _grid_file_parts(sorted(cases["_grid"].unique()))
        for grid, group in cases.groupby("_grid", sort=True):
            records = group.drop(columns=["_grid"]).to_dict("records")
            chunks = [records[i:i + settings.max_per_pack] for i in range(0, len(records), settings.max_per_pack)]
            for k, chunk in enumerate(chunks, start=1):
                pack_id = f"{file_part[grid]}-{stamp}" + (f"-{k}" if len(chunks) > 1 else "")
                features, files = [], {}
                for case in chunk:
                    geom = case.pop("geometry")
                    task_id = f"{case['case_id']}-T{attempts.get(case['case_id'], 0) + 1}"
                    ev = _evidence_files(led, case, geom, settings, rasters)
                    files.update(ev)
                    features.append(_task_feature(case, geom, task_id, list(ev)))  # before, after, frames
                    done += 1
                    if progress:
                        progress(done, total)
                data = _build_zip(pack_id, str(grid), features, files, settings, created)
                packs.append((pack_id, str(grid), features, data))
        written: list[PackInfo] = []
        try:
            for pack_id, grid, features, data in packs:
                path = out_dir / f"{pack_id}.zip"
                with atomic_path(path, overwrite=settings.overwrite) as tmp:
                    tmp.write_bytes(data)
                written.append(PackInfo(pack_id, path, grid, tuple(f["properties"]["task_id"] for f in features)))
            with led.transaction():
                run_id = led.start_run("export", inputs={"out": str(out_dir), "packs": [p.pack_id for p in written]})
                for info, (_, _, features, _) in zip(written, packs, strict=True):
                    for f in features:
                        p = f["properties"]
                        if led.rows("SELECT 1 FROM tasks WHERE task_id = ?", (p["task_id"],)):
                            raise LedgerError(f"{ledger_path}: task {p['task_id']} already exists")
                        led.conn.execute("INSERT INTO tasks (task_id, case_id, pack_id, status, dispatched_at, run_id) "
                                         "VALUES (?, ?, ?, 'dispatched', ?, ?)",
                                         (p["task_id"], p["case_id"], info.pack_id, created, run_id))
                        led.set_status(p["case_id"], "dispatched", "dispatched", detail=f"{p['task_id']} in {info.pack_id}",
                                       run_id=run_id, at=created)
                led.finish_run(run_id, {"packs": len(written), "tasks": sum(len(w.task_ids) for w in written)})
        except BaseException:
            for info in written:
                info.path.unlink(missing_ok=True)
            raise
    return written
