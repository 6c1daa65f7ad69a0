"""Triage: fuse change patches, detections and drone frames into cases in the ledger.

A case is a place. A patch found again in a later run (IoU or centroid distance in a local
metric CRS) joins the existing case, open or closed, instead of making a new one, so
``case_id`` (``<6-digit admin code>-<sequence>``) is stable from sky to closure. Re-running the
same triage on the same inputs changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from tuban import VectorError
from tuban.imagery.crs import M2_PER_MU, WGS84, metric_crs_for_gdf
from tuban.imagery.vector_io import geojson_dict, geojson_to_gdf, read_json, read_vector
from tuban.pipelines.ledger import Ledger, open_ledger, utc_now

__all__ = ["TriageSettings", "TriageResult", "read_patches", "read_frames", "triage", "priority_of"]

_RASTER_KEYS = {"before": ("before_raster", "before_image", "before_path"),
                "after": ("after_raster", "after_image", "after_path")}
_NO_GRID = "000000"
#: Cases in these statuses that are found again by triage go to ``review``.
_REFOUND_REVIEW = ("closed", "rectified")


@dataclass(frozen=True)
class TriageSettings:
    """How patches join cases and how priority is scored.

    Args:
        min_iou: a patch joins a case when their IoU reaches this...
        join_distance_m: ...or when their centroids are this close (metres), and closer than half
            the side of the smaller one (so neighbouring small ponds are never merged).
        high_score / mid_score: change scores worth 2 / 1 priority points.
        large_area_m2: patches at least this large get 1 point (default 10 亩).
        target_kinds: case kinds that are the enforcement target (a pond dug since the before
            image) and get ``target_kind_points``; so a large, high-score new pond is priority
            1 from the satellite change alone.
        target_kind_points: points for a case of a ``target_kinds`` kind.
        protected_points: points for touching a protected zone.
        detections_make_cases: a detection overlapping no case becomes a case of its own.
    """

    min_iou: float = 0.3
    join_distance_m: float = 30.0
    high_score: float = 0.8
    mid_score: float = 0.5
    large_area_m2: float = 10 * M2_PER_MU
    target_kinds: tuple[str, ...] = ("new_pond",)
    target_kind_points: int = 1
    protected_points: int = 2
    detections_make_cases: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou <= 1.0:
            raise ValueError("min_iou must be in (0, 1]")
        if self.join_distance_m < 0:
            raise ValueError("join_distance_m must be >= 0")


@dataclass(frozen=True)
class TriageResult:
    """What one triage run did to the ledger."""

    new_cases: tuple[str, ...] = ()
    joined_cases: tuple[str, ...] = ()
    frames_attached: int = 0
    run_id: int | None = None
    unchanged: bool = False
    warnings: tuple[str, ...] = field(default=())


def priority_of(score: float, area_m2: float, n_detections: int, n_frames: int, protected: bool,
                settings: TriageSettings = TriageSettings(), *, kind: str | None = None,
                changed: bool = True) -> int:
    """Priority 1 (high) to 3 (low) from score, area, kind, evidence agreement and protected zones.

    Points: score >= high_score 2 (>= mid_score 1); area >= large_area_m2 1; a target kind
    (new_pond) 1; a detection agrees 1; drone frames cover it 1; protected zone 2.
    Priority 1 at >= 4 points, 2 at >= 2, else 3. A case without change evidence
    (``changed=False``: only detections, no change patch) shows a pond, not a change, which may
    well be an old legal one: priority 3 unless it touches a protected zone.

    Example:
        >>> priority_of(0.9, 10000, 1, 0, False)
        1
        >>> priority_of(0.9, 10000, 0, 0, False, kind="new_pond"), priority_of(0.9, 10000, 0, 0, False, kind="new_water")
        (1, 2)
    """
    points = 2 if score >= settings.high_score else 1 if score >= settings.mid_score else 0
    points += int(area_m2 >= settings.large_area_m2)
    points += settings.target_kind_points if kind in settings.target_kinds else 0
    points += int(n_detections > 0) + int(n_frames > 0)
    points += settings.protected_points if protected else 0
    if not changed and not protected:
        return 3
    return 1 if points >= 4 else 2 if points >= 2 else 3


def _areas(area_m2: float) -> dict[str, float]:
    """Case area as stored and shown: 0.1 m² and 0.001 亩 (finer digits are measurement noise)."""
    return {"area_m2": round(area_m2, 1), "area_mu": round(area_m2 / M2_PER_MU, 3)}


def read_patches(path: str | Path) -> tuple[gpd.GeoDataFrame, dict[str, str]]:
    """Patches GeoJSON plus the source raster paths it names (``{"before": ..., "after": ...}``).

    Raster paths may be top-level members (``before_raster``/``after_raster``, or a ``rasters``
    / ``sources`` object with ``before``/``after``), or such keys inside a top-level object
    (``{"tuban_change": {"before_raster": ...}}``); relative paths are resolved against the
    patches file's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise VectorError(path, "file not found")
    if path.suffix.lower() not in (".geojson", ".json"):  # GeoPackage, Shapefile, ...: no raster members
        return read_vector(path), {}
    doc = read_json(path)
    gdf = geojson_to_gdf(doc, path)
    rasters: dict[str, str] = {}
    # top-level members first, then one level down (e.g. {"tuban_change": {"before_raster": ...}})
    scopes = [doc, *(v for v in doc.values() if isinstance(v, dict))]
    for scope in reversed(scopes):
        for member in ("rasters", "sources", "source_rasters", "inputs"):
            if isinstance(scope.get(member), dict):
                for role in ("before", "after"):
                    if isinstance(scope[member].get(role), str):
                        rasters[role] = scope[member][role]
        for role, keys in _RASTER_KEYS.items():
            for key in keys:
                if isinstance(scope.get(key), str):
                    rasters[role] = scope[key]
    resolved = {r: str((path.parent / p).resolve()) if not Path(p).is_absolute() else p
                for r, p in rasters.items()}
    return gdf, resolved


def read_frames(path: str | Path) -> gpd.GeoDataFrame:
    """Drone frame footprints (from ``tuban uav index``) with ``image`` paths made absolute."""
    path = Path(path)
    frames = read_vector(path)
    if "image" in frames.columns:
        frames["image"] = [None if not isinstance(p, str) or not p else
                           p if Path(p).is_absolute() else str((path.parent / p).resolve())
                           for p in frames["image"]]
    return frames


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, gpd.GeoDataFrame):
            p = geojson_dict(p) if len(p) else []
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _polygons(gdf: gpd.GeoDataFrame, what: str, source: Any = None) -> gpd.GeoDataFrame:
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    bad = ~gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    if bad.any():
        kinds = ", ".join(sorted(set(gdf.geometry.geom_type[bad])))
        raise VectorError(source, f"{what}: {int(bad.sum())} features are not polygons ({kinds})")
    return gdf.assign(geometry=shapely.make_valid(gdf.geometry.values)).reset_index(drop=True)


def _num(value: Any, default: float = 0.0) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return default
    return default if f != f else f


def _str(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


class _Matcher:
    """Existing and new case geometries in a metric CRS, with IoU / distance matching."""

    def __init__(self, ids: list[str], geoms: np.ndarray, settings: TriageSettings) -> None:
        self.ids = list(ids)
        self.geoms = list(geoms)
        self.settings = settings

    def match(self, geom: Any) -> str | None:
        if not self.geoms:
            return None
        arr = np.asarray(self.geoms, dtype=object)
        reach = self.settings.join_distance_m
        near = shapely.dwithin(arr, geom, reach) if reach > 0 else shapely.intersects(arr, geom)
        best, best_key = None, None
        for i in np.flatnonzero(near):
            other = arr[i]
            inter = shapely.area(shapely.intersection(other, geom))
            union = shapely.area(shapely.union(other, geom))
            iou = inter / union if union > 0 else 0.0
            dist = shapely.distance(shapely.centroid(other), shapely.centroid(geom))
            # centroid reach scales with size, so neighbouring small ponds of a cluster stay apart
            size_m = math.sqrt(max(min(shapely.area(other), shapely.area(geom)), 0.0))
            if iou >= self.settings.min_iou or dist <= min(reach, 0.5 * size_m):
                key = (iou, -dist)
                if best_key is None or key > best_key:
                    best, best_key = self.ids[i], key
        return best

    def add(self, case_id: str, geom: Any) -> None:
        self.ids.append(case_id)
        self.geoms.append(geom)

    def replace(self, case_id: str, geom: Any) -> None:
        self.geoms[self.ids.index(case_id)] = geom


def _grid_for(geom_wgs84: Any, grids: gpd.GeoDataFrame | None, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The grid cell containing the centroid (first in file order if cells overlap), else the
    cell sharing most of the polygon, else none."""
    if grids is None or not len(grids):
        return {}
    hits = grids.sindex.query(shapely.centroid(geom_wgs84), predicate="intersects")
    if not len(hits):
        touching = grids.sindex.query(geom_wgs84, predicate="intersects")
        if not len(touching):
            return {}
        shared = [shapely.area(shapely.intersection(grids.geometry.iloc[int(i)], geom_wgs84)) for i in touching]
        hits = [touching[int(np.argmax(shared))]]
    row = records[int(min(hits))]
    return {k: _str(row.get(k)) for k in ("grid_id", "grid_name", "officer", "phone", "admin_code")}


def _grids(grids: gpd.GeoDataFrame | None, source: Any = None) -> gpd.GeoDataFrame | None:
    if grids is None:
        return None
    g = grids.to_crs(WGS84).reset_index(drop=True)
    if "grid_id" not in g.columns:
        raise VectorError(source, "grids have no grid_id property")
    if "grid_name" not in g.columns:
        g["grid_name"] = g["name"] if "name" in g.columns else g["grid_id"]
    for col in ("officer", "phone", "admin_code"):
        if col not in g.columns:
            g[col] = None
    return g


def triage(
    ledger_path: str | Path,
    patches: gpd.GeoDataFrame,
    grids: gpd.GeoDataFrame | None,
    *,
    detections: Sequence[gpd.GeoDataFrame] = (),
    frames: gpd.GeoDataFrame | None = None,
    protected: gpd.GeoDataFrame | None = None,
    rasters: dict[str, str] | None = None,
    inputs: dict[str, Any] | None = None,
    settings: TriageSettings = TriageSettings(),
    progress: Callable[[int, int], None] | None = None,
) -> TriageResult:
    """Fuse evidence into cases in the ledger at ``ledger_path`` (created if missing).

    Args:
        patches: change patches (polygons; properties patch_id, kind, score, area_m2,
            before_date, after_date), any CRS.
        grids: grid cells (grid_id, name/grid_name, admin_code, officer, phone).
        detections: detector outputs (polygons with label, score); they support the cases
            they overlap and, unless disabled, make new cases where they overlap none.
        frames: drone frame footprints (frame, time_s, gsd_m, image, gimbal_pitch_deg); each
            attaches to every case whose centroid it covers.
        protected: protected zones; a case touching one gets extra priority.
        rasters: source raster paths ``{"before": ..., "after": ...}`` for evidence chips.
        inputs: file names etc. recorded in the run row; ``patches``, ``detections`` (a list)
            and ``grids`` also name the file in errors about that input.

    Returns:
        The new and joined case ids. The whole run is one transaction.
    """
    names = inputs or {}
    det_names = list(names.get("detections") or [])
    patches = _polygons(patches.to_crs(WGS84), "patches", names.get("patches"))
    dets = [_polygons(d.to_crs(WGS84), "detections", det_names[i] if i < len(det_names) else None)
            for i, d in enumerate(detections)]
    grid_gdf = _grids(grids, names.get("grids"))
    prot = protected.to_crs(WGS84) if protected is not None and len(protected) else None
    if frames is not None and len(frames):  # frames looking above the horizon have no footprint
        frames = frames.to_crs(WGS84)
        frames = frames[frames.geometry.notna() & ~frames.geometry.is_empty].reset_index(drop=True)
    frames = frames if frames is not None and len(frames) else None
    rasters = dict(rasters or {})
    digest = _digest(patches, dets, frames if frames is not None else [], grid_gdf if grid_gdf is not None else [],
                     prot if prot is not None else [], rasters, asdict(settings))
    all_geoms = [*patches.geometry, *(g for d in dets for g in d.geometry)]
    if not all_geoms:
        return TriageResult(warnings=("no patches or detections to triage",))
    with open_ledger(ledger_path, create=True) as led:
        if led.run_with_digest("triage", digest):
            return TriageResult(unchanged=True)
        with led.transaction():
            return _triage_in(led, patches, dets, grid_gdf, frames, prot, rasters, inputs, digest,
                              settings, progress)


def _triage_in(led: Ledger, patches, dets, grids, frames, prot, rasters, inputs, digest, settings,
               progress) -> TriageResult:
    now = utc_now()
    run_id = led.start_run("triage", digest=digest, inputs={**(inputs or {}), "rasters": rasters})
    existing = led.cases()
    everything = gpd.GeoDataFrame(geometry=[*existing.geometry, *patches.geometry,
                                            *(g for d in dets for g in d.geometry)], crs=WGS84)
    metric = metric_crs_for_gdf(everything)
    to_m = gpd.GeoSeries(existing.geometry, crs=WGS84).to_crs(metric)
    matcher = _Matcher(list(existing["case_id"]), to_m.values, settings)
    status_of = dict(zip(existing["case_id"], existing["status"], strict=True))
    grid_records = grids.drop(columns="geometry").to_dict("records") if grids is not None else []
    new, joined, touched = [], [], set()
    total = len(patches) + sum(len(d) for d in dets)

    def place(geom_wgs: Any, geom_m: Any, props: dict[str, Any], kind_default: str, evidence_kind: str,
              source_id: str, creates: bool) -> str | None:
        case_id = matcher.match(geom_m)
        area_m2 = float(shapely.area(geom_m))
        score = _num(props.get("score"))
        if case_id is None:
            if not creates:
                return None
            c = shapely.centroid(geom_wgs)
            grid = _grid_for(geom_wgs, grids, grid_records)
            admin = (grid.get("admin_code") or _NO_GRID)[:6]
            case_id = led.next_case_id(admin if admin.isdigit() and len(admin) == 6 else _NO_GRID)
            led.insert_case({
                "case_id": case_id, "kind": _str(props.get("kind") or props.get("label")) or kind_default,
                "status": "open", "score": score, **_areas(area_m2),
                "lon": round(c.x, 7), "lat": round(c.y, 7), **grid,
                "before_date": _str(props.get("before_date")), "after_date": _str(props.get("after_date")),
                "raster_before": _str(props.get("before_raster")) or rasters.get("before"),
                "raster_after": _str(props.get("after_raster")) or rasters.get("after"),
                "first_run": run_id, "last_run": run_id, "created_at": now, "updated_at": now,
            }, geom_wgs)
            led.add_event(case_id, "created", None, "open", detail=f"{evidence_kind} {source_id}",
                          run_id=run_id, at=now)
            matcher.add(case_id, geom_m)
            status_of[case_id] = "open"
            new.append(case_id)
        else:
            if case_id not in new and case_id not in joined:
                joined.append(case_id)
            if evidence_kind == "patch":
                _join_patch(led, case_id, geom_wgs, geom_m, props, score, area_m2, rasters, run_id, now,
                            status_of, matcher)
        led.conn.execute(
            "INSERT OR IGNORE INTO evidence (case_id, kind, source_id, path, rank_key, properties, run_id) "
            "VALUES (?, ?, ?, NULL, ?, ?, ?)",
            (case_id, evidence_kind, source_id, score,
             json.dumps({k: _str(v) if not isinstance(v, (int, float)) else v for k, v in props.items()},
                        ensure_ascii=False), run_id))
        touched.add(case_id)
        return case_id

    done = 0
    patches_m = patches.geometry.to_crs(metric).values
    for geom, geom_m, props in zip(patches.geometry, patches_m, patches.drop(columns="geometry").to_dict("records"),
                                   strict=True):
        wkb = hashlib.sha256(shapely.to_wkb(shapely.set_precision(geom, 1e-7))).hexdigest()[:12]
        source = f"{_str(props.get('patch_id')) or 'patch'}|{props.get('before_date')}|{props.get('after_date')}|{wkb}"
        place(geom, geom_m, props, "change", "patch", source, True)
        done += 1
        if progress:
            progress(done, total)
    for d in dets:
        for geom, geom_m, props in zip(d.geometry, d.geometry.to_crs(metric).values,
                                       d.drop(columns="geometry").to_dict("records"), strict=True):
            wkb = hashlib.sha256(shapely.to_wkb(shapely.set_precision(geom, 1e-7))).hexdigest()[:12]
            source = f"{_str(props.get('label')) or 'detection'}|{wkb}"
            place(geom, geom_m, props, "detection", "detection", source, settings.detections_make_cases)
            done += 1
            if progress:
                progress(done, total)
    n_frames = _attach_frames(led, frames, run_id) if frames is not None else 0
    _rescore(led, prot, settings, run_id, now)
    led.touch_extent()
    counts = {"new_cases": len(new), "joined_cases": len(joined), "frames_attached": n_frames}
    led.finish_run(run_id, counts)
    return TriageResult(new_cases=tuple(new), joined_cases=tuple(joined), frames_attached=n_frames,
                        run_id=run_id)


def _join_patch(led, case_id, geom_wgs, geom_m, props, score, area_m2, rasters, run_id, now, status_of,
                matcher) -> None:
    case = led.case(case_id)
    after = _str(props.get("after_date"))
    fields: dict[str, Any] = {"last_run": run_id, "score": max(_num(case["score"]), score)}
    if after and (case["after_date"] is None or after > case["after_date"]):
        c = shapely.centroid(geom_wgs)
        fields.update(after_date=after, before_date=_str(props.get("before_date")), **_areas(area_m2),
                      lon=round(c.x, 7), lat=round(c.y, 7),
                      raster_before=_str(props.get("before_raster")) or rasters.get("before") or case["raster_before"],
                      raster_after=_str(props.get("after_raster")) or rasters.get("after") or case["raster_after"])
        led.update_case(case_id, geometry=geom_wgs, **fields)
        matcher.replace(case_id, geom_m)
    else:
        led.update_case(case_id, **fields)
    status = status_of[case_id]
    if status in _REFOUND_REVIEW and after and case["after_date"] != after:
        led.set_status(case_id, "review", "found_again", run_id=run_id, at=now, review_flag=1,
                       review_reason=f"found again by triage ({after}) after being {status}",
                       detail=f"patch after {after}")
        status_of[case_id] = "review"
    else:
        led.add_event(case_id, "joined", status, status, detail=f"patch after {after}", run_id=run_id, at=now)


def _attach_frames(led: Ledger, frames: gpd.GeoDataFrame, run_id: int) -> int:
    """Attach each drone frame to every case whose centroid its footprint covers."""
    cases = led.cases()
    if not len(cases):
        return 0
    points = gpd.GeoSeries(shapely.points(cases["lon"].astype(float), cases["lat"].astype(float)), crs=WGS84)
    foot_idx, case_idx = points.sindex.query(frames.geometry, predicate="contains")
    n = 0
    for fi, ci in zip(foot_idx, case_idx, strict=True):
        f = frames.iloc[int(fi)]
        pitch = _num(f.get("gimbal_pitch_deg"), float("nan"))
        off_nadir = abs(pitch + 90.0) if pitch == pitch else 90.0
        gsd = _num(f.get("gsd_m"), 999.0)
        image = _str(f.get("image"))
        source = image or f"frame {_str(f.get('frame'))}@{_str(f.get('time_s'))}"
        props = {k: _str(f.get(k)) for k in ("frame", "time_s", "gsd_m", "gimbal_pitch_deg", "video", "image")}
        cur = led.conn.execute(
            "INSERT OR IGNORE INTO evidence (case_id, kind, source_id, path, rank_key, properties, run_id) "
            "VALUES (?, 'frame', ?, ?, ?, ?, ?)",
            (cases["case_id"].iloc[int(ci)], source, image, round(off_nadir, 1) * 1000.0 + min(gsd, 999.0),
             json.dumps(props, ensure_ascii=False), run_id))
        n += cur.rowcount
    return n


def _rescore(led: Ledger, prot: gpd.GeoDataFrame | None, settings: TriageSettings, run_id: int, now: str) -> None:
    counts = {(r["case_id"], r["kind"]): r["n"] for r in
              led.rows("SELECT case_id, kind, COUNT(*) AS n FROM evidence GROUP BY case_id, kind")}
    cases = led.cases()
    protected_hits: set[int] = set()
    if prot is not None and len(cases):
        _, hit = cases.sindex.query(prot.geometry, predicate="intersects")
        protected_hits = {int(i) for i in hit}
    for i, row in enumerate(cases.itertuples(index=False)):
        n_p, n_d, n_f = (counts.get((row.case_id, k), 0) for k in ("patch", "detection", "frame"))
        is_prot = int(i in protected_hits or bool(row.protected))
        prio = priority_of(_num(row.score), _num(row.area_m2), n_d, n_f, bool(is_prot), settings, kind=row.kind,
                           changed=n_p > 0)
        new = {"n_patches": n_p, "n_detections": n_d, "n_frames": n_f, "protected": is_prot, "priority": prio}
        if any(getattr(row, k) != v for k, v in new.items()):
            led.update_case(row.case_id, updated_at=now, **new)
