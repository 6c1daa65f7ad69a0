"""Verdicts back into the ledger: validate everything first, then apply in one transaction.

- Importing the same file twice changes nothing (each verdict has a content digest).
- Unknown task ids and invalid verdict values reject the whole import, listing them by name.
- A verdict that disagrees with an earlier verdict for the same task is kept in the history
  beside it and the case goes to ``review``.
- Photo checks: a photo whose EXIF position is far from the case, or taken before dispatch,
  flags the verdict and sends the case to ``review``; so does a returned position far away.
- Photos shipped with the verdicts are kept in ``<ledger stem>_photos/<case_id>/`` and listed as
  ``photo`` evidence of the case (with EXIF position and time).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tuban import LedgerError
from tuban.imagery.photo_exif import read_photo_meta
from tuban.imagery.vector_io import write_bytes_atomic
from tuban.pipelines.cases import VERDICT_STATUS, VERDICTS
from tuban.pipelines.ledger import Ledger, open_ledger, utc_now
from tuban.pipelines.returned import ReadLimits, ReturnedBatch, ReturnedVerdict, read_returned

__all__ = ["ImportSettings", "ImportResult", "import_verdicts", "apply_batch", "distance_m", "photo_dir"]

#: Largest UTC offset on Earth: a photo without an offset is only "before dispatch" beyond it.
_MAX_TZ = timedelta(hours=14)


@dataclass(frozen=True)
class ImportSettings:
    """Import options.

    Args:
        from_gcj02: returned positions are GCJ-02 (edited in Ovital/Amap); convert to WGS84.
        max_photo_distance_m: a photo (or returned point) farther than this from the case
            polygon is flagged.
    """

    from_gcj02: bool = False
    max_photo_distance_m: float = 300.0
    limits: ReadLimits = ReadLimits()


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    applied: int
    duplicates: int
    blank: int
    flagged: tuple[tuple[str, str], ...]
    review_cases: tuple[str, ...]
    run_id: int | None = None
    warnings: tuple[str, ...] = ()


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres (haversine, mean Earth radius).

    Example:
        >>> round(distance_m(0, 0, 0, 1))
        111195
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371008.8 * math.asin(min(1.0, math.sqrt(a)))


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _digest(r: ReturnedVerdict) -> str:
    key = [r.task_id, r.verdict, r.verified_by, r.verified_at, r.note, list(r.photos)]
    return hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).hexdigest()


def _far(case: dict[str, Any], lon: float, lat: float) -> float:
    """Distance from a point to the case polygon, in metres (0 inside)."""
    geom = case["geometry"]
    if geom is not None and not geom.is_empty:
        import shapely

        nearest = shapely.ops.nearest_points(geom, shapely.Point(lon, lat))[0]
        return distance_m(lon, lat, nearest.x, nearest.y)
    return distance_m(lon, lat, case["lon"], case["lat"])


def _checks(r: ReturnedVerdict, case: dict[str, Any], task: dict[str, Any], batch: ReturnedBatch,
            settings: ImportSettings) -> list[str]:
    flags = []
    if r.lon is not None and r.lat is not None and (r.lon, r.lat) != (case["lon"], case["lat"]):
        d = _far(case, r.lon, r.lat)
        if d > settings.max_photo_distance_m:
            flags.append(f"returned position {d:.0f} m from the patch")
    dispatched = _parse_time(task.get("dispatched_at"))
    if r.verified_at and _parse_time(r.verified_at) is None:
        flags.append(f"verified_at {r.verified_at!r} is not ISO 8601")
    for name in r.photos:
        data = batch.photos.get(name)
        if not data:
            flags.append(f"photo {name} missing from the returned pack")
            continue
        meta = read_photo_meta(data)
        if meta.lon_deg is None or meta.lat_deg is None:
            flags.append(f"photo {name} has no GPS position")
        else:
            d = _far(case, meta.lon_deg, meta.lat_deg)
            if d > settings.max_photo_distance_m:
                flags.append(f"photo {name} taken {d:.0f} m from the patch")
        if meta.taken is not None and dispatched is not None:
            if meta.taken.tzinfo is not None:
                early = meta.taken < dispatched
            else:  # local time of unknown zone: only certain beyond the largest UTC offset
                early = meta.taken.replace(tzinfo=timezone.utc) + _MAX_TZ < dispatched
            if early:
                flags.append(f"photo {name} taken {meta.taken.isoformat()} before dispatch {task['dispatched_at']}")
    return flags


def photo_dir(ledger_path: str | Path) -> Path:
    """Where imported field photos are kept: ``<ledger stem>_photos/`` beside the ledger."""
    ledger_path = Path(ledger_path)
    return ledger_path.parent / f"{ledger_path.stem}_photos"


def _keep_photos(led: Ledger, r: ReturnedVerdict, case_id: str, batch: ReturnedBatch, run_id: int | None) -> None:
    """Copy the verdict's photos beside the ledger and record each as evidence (kind ``photo``)."""
    for name in r.photos:
        data = batch.photos.get(name)
        if not data:
            continue
        sha = hashlib.sha256(data).hexdigest()
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-80:] or "photo"
        target = photo_dir(led.path) / re.sub(r"[^A-Za-z0-9_.-]+", "_", case_id) / f"{sha[:12]}_{safe}"
        if not target.exists():
            write_bytes_atomic(target, data)
        meta = read_photo_meta(data)
        props = {"task_id": r.task_id, "name": name, "sha256": sha, "lon": meta.lon_deg, "lat": meta.lat_deg,
                 "taken": meta.taken.isoformat() if meta.taken else None, "verified_by": r.verified_by}
        led.conn.execute(
            "INSERT OR IGNORE INTO evidence (case_id, kind, source_id, path, rank_key, properties, run_id) "
            "VALUES (?, 'photo', ?, ?, NULL, ?, ?)",
            (case_id, sha, str(target), json.dumps(props, ensure_ascii=False), run_id))


def _validate(led: Ledger, batch: ReturnedBatch) -> dict[str, dict[str, Any]]:
    missing = [str(r.row + 1) for r in batch.rows if not r.task_id]
    if missing:
        raise LedgerError(f"{batch.source}: rows with a verdict but no task_id: {', '.join(missing[:20])}")
    bad = sorted({(r.verdict, r.task_id or f"row {r.row}") for r in batch.rows if r.verdict not in VERDICTS})
    if bad:
        listed = ", ".join(f"{v!r} (task {t})" for v, t in bad[:20])
        raise LedgerError(f"{batch.source}: invalid verdict values: {listed}{' ...' if len(bad) > 20 else ''}; "
                          f"allowed: {', '.join(VERDICTS)}")
    ids = sorted({r.task_id for r in batch.rows})
    tasks = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for t in led.rows(f"SELECT * FROM tasks WHERE task_id IN ({', '.join('?' * len(chunk))})", chunk):
            tasks[t["task_id"]] = t
    unknown = [t for t in ids if t not in tasks]
    if unknown:
        listed = ", ".join(repr(t) for t in unknown[:20])
        raise LedgerError(f"{batch.source}: {len(unknown)} unknown task ids: {listed}{' ...' if len(unknown) > 20 else ''}")
    return tasks


def apply_batch(led: Ledger, batch: ReturnedBatch, settings: ImportSettings = ImportSettings(), *,
                now: str | None = None, progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Validate a returned batch against the ledger and apply it in one transaction."""
    now = now or utc_now()
    tasks = _validate(led, batch)
    applied = dupes = 0
    flagged: list[tuple[str, str]] = []
    review: list[str] = []
    latest_task = {r["case_id"]: r["task_id"] for r in
                   led.rows("SELECT case_id, task_id FROM tasks t WHERE fid = (SELECT MAX(fid) FROM tasks WHERE case_id = t.case_id)")}
    with led.transaction():
        run_id = None
        for i, r in enumerate(batch.rows):
            digest = _digest(r)
            if led.conn.execute("SELECT 1 FROM verdicts WHERE digest = ?", (digest,)).fetchone():
                dupes += 1
                continue
            if run_id is None:
                run_id = led.start_run("import", inputs={"source": str(batch.source)})
            task = tasks[r.task_id]
            case = led.case(task["case_id"])
            flags = _checks(r, case, task, batch, settings)
            _keep_photos(led, r, case["case_id"], batch, run_id)
            earlier = {v["verdict"] for v in led.rows("SELECT verdict FROM verdicts WHERE task_id = ?", (r.task_id,))}
            conflict = bool(earlier - {r.verdict})
            led.conn.execute(
                "INSERT INTO verdicts (digest, task_id, case_id, verdict, verified_by, verified_at, note, photos, "
                "lon, lat, flags, source, imported_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (digest, r.task_id, case["case_id"], r.verdict, r.verified_by, r.verified_at, r.note,
                 json.dumps(list(r.photos), ensure_ascii=False), r.lon, r.lat,
                 json.dumps(flags, ensure_ascii=False), str(batch.source), now, run_id))
            led.conn.execute("UPDATE tasks SET status = 'returned', returned_at = ? WHERE task_id = ?", (now, r.task_id))
            applied += 1
            for f in flags:
                flagged.append((r.task_id, f))
            detail = f"{r.task_id}: {r.verdict}" + (f" by {r.verified_by}" if r.verified_by else "")
            if latest_task.get(case["case_id"]) != r.task_id:
                led.add_event(case["case_id"], "late_verdict", case["status"], case["status"], detail=detail,
                              run_id=run_id, at=now)
            elif conflict or flags:
                reason = (f"conflicting verdicts for {r.task_id}: {', '.join(sorted(earlier | {r.verdict}))}"
                          if conflict else "; ".join(flags))
                led.set_status(case["case_id"], "review", "verdict_review", detail=f"{detail}; {reason}", run_id=run_id,
                               at=now, verdict=r.verdict, verified_at=r.verified_at, review_flag=1, review_reason=reason)
                review.append(case["case_id"])
            else:
                led.set_status(case["case_id"], VERDICT_STATUS[r.verdict], "verdict", detail=detail, run_id=run_id,
                               at=now, verdict=r.verdict, verified_at=r.verified_at)
            if progress:
                progress(i + 1, len(batch.rows))
        if run_id is not None:
            led.finish_run(run_id, {"applied": applied, "duplicates": dupes, "flagged": len(flagged)})
    return ImportResult(applied=applied, duplicates=dupes, blank=batch.blank, flagged=tuple(flagged),
                        review_cases=tuple(dict.fromkeys(review)), run_id=run_id, warnings=batch.warnings)


def import_verdicts(returned_path: str | Path, ledger_path: str | Path, settings: ImportSettings = ImportSettings(),
                    *, now: str | None = None, progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Read a returned GeoJSON / CSV / zip and apply its verdicts to the ledger."""
    batch = read_returned(returned_path, from_gcj02=settings.from_gcj02, limits=settings.limits)
    with open_ledger(ledger_path) as led:
        return apply_batch(led, batch, settings, now=now, progress=progress)
