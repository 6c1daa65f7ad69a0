"""The bureau's report: one offline HTML page with counts, precision, time to verdict and a map.

Everything is inline (CSS and an SVG map of case polygons, no tiles, no scripts), and every
value from the ledger is HTML-escaped, notes included.

Triage precision = confirmed / verified, where *confirmed* cases have the verdict
``confirmed_illegal`` or ``rectified`` (there was an illegal pond) and *verified* cases have any
verdict that answers the question (those two plus ``legal`` and ``false_change``).
``not_found`` and ``unreachable`` do not count either way.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from statistics import median
from typing import Any

from tuban import __version__
from tuban.imagery.vector_io import write_text_atomic
from tuban.pipelines.cases import STATUSES, VERDICTS
from tuban.pipelines.ledger import open_ledger, utc_now

__all__ = ["ReportData", "collect_report", "render_report", "write_report", "CONFIRMED", "VERIFIED"]

CONFIRMED = ("confirmed_illegal", "rectified")
VERIFIED = (*CONFIRMED, "legal", "false_change")
_COLOURS = {"open": "#1565c0", "dispatched": "#6a1b9a", "review": "#f9a825", "confirmed": "#c62828",
            "rectified": "#2e7d32", "dismissed": "#9e9e9e", "closed": "#37474f", "restocked": "#ff6f00"}


@dataclass(frozen=True)
class ReportData:
    """The numbers of a report, computed from the ledger."""

    created: str
    by_status: dict[str, int]
    by_grid: dict[str, dict[str, int]]
    by_verdict: dict[str, int]
    verdict_history: dict[str, int]
    confirmed: int
    verified: int
    hours_to_verdict: tuple[float, ...]
    grid_quality: dict[str, tuple[int, int, float | None]] = field(default_factory=dict)
    review: tuple[dict[str, Any], ...] = ()
    cases: tuple[dict[str, Any], ...] = ()
    shapes: tuple[tuple[str, str, Any], ...] = field(default=())

    @property
    def precision(self) -> float | None:
        return self.confirmed / self.verified if self.verified else None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else None


def collect_report(ledger_path: str | Path) -> ReportData:
    """Count cases, verdicts and times in the ledger."""
    with open_ledger(ledger_path) as led:
        cases = led.cases()
        history = led.rows("SELECT verdict FROM verdicts")
        firsts = led.rows("SELECT t.case_id, t.dispatched_at, v.verified_at, v.imported_at FROM tasks t JOIN verdicts v "
                          "ON v.task_id = t.task_id WHERE v.fid = (SELECT MIN(fid) FROM verdicts WHERE task_id = t.task_id)")
        notes = {r["case_id"]: r["note"] for r in led.rows(
            "SELECT case_id, note FROM verdicts v WHERE fid = (SELECT MAX(fid) FROM verdicts WHERE case_id = v.case_id)")}
    records = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
               for r in cases.drop(columns="geometry").to_dict("records")]
    by_status = {s: 0 for s in STATUSES} | dict(Counter(r["status"] for r in records))
    by_grid: dict[str, dict[str, int]] = {}
    for r in records:
        counts = by_grid.setdefault(str(r["grid_id"] or "(no grid)"), {})
        status = str(r["status"])
        counts[status] = counts.get(status, 0) + 1
    by_verdict = dict(Counter(r["verdict"] for r in records if r["verdict"]))
    grid_of = {r["case_id"]: str(r["grid_id"] or "(no grid)") for r in records}
    hours: list[float] = []
    grid_hours: dict[str, list[float]] = {}
    for f in firsts:
        t0, t1 = _time(f["dispatched_at"]), _time(f["verified_at"]) or _time(f["imported_at"])
        if t0 and t1 and t1 >= t0:
            hours.append((t1 - t0).total_seconds() / 3600.0)
            grid_hours.setdefault(grid_of.get(f["case_id"], "(no grid)"), []).append(hours[-1])
    grid_quality: dict[str, tuple[int, int, float | None]] = {}
    for g in by_grid:
        mine = [r for r in records if grid_of[r["case_id"]] == g]
        verified = sum(1 for r in mine if r["verdict"] in VERIFIED)
        confirmed = sum(1 for r in mine if r["verdict"] in CONFIRMED)
        gh = grid_hours.get(g)
        grid_quality[g] = (confirmed, verified, median(gh) if gh else None)
    for r in records:
        r["note"] = notes.get(r["case_id"])
    return ReportData(
        created=utc_now(), by_status=by_status, by_grid=dict(sorted(by_grid.items())), by_verdict=by_verdict,
        verdict_history=dict(Counter(h["verdict"] for h in history)),
        confirmed=sum(1 for r in records if r["verdict"] in CONFIRMED),
        verified=sum(1 for r in records if r["verdict"] in VERIFIED),
        hours_to_verdict=tuple(hours), grid_quality=grid_quality, review=tuple(r for r in records if r["review_flag"]),
        cases=tuple(records),
        shapes=tuple(zip(cases["case_id"], cases["status"], cases.geometry, strict=True)))


def _e(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return escape(str(v), quote=True)


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _svg_map(shapes: tuple[tuple[str, str, Any], ...], width: int = 800, height: int = 500) -> str:
    geoms = [(cid, st, g) for cid, st, g in shapes if g is not None and not g.is_empty]
    if not geoms:
        return '<svg id="map" xmlns="http://www.w3.org/2000/svg" width="800" height="60"><text x="10" y="30">no cases</text></svg>'
    minx = min(g.bounds[0] for *_, g in geoms)
    miny = min(g.bounds[1] for *_, g in geoms)
    maxx = max(g.bounds[2] for *_, g in geoms)
    maxy = max(g.bounds[3] for *_, g in geoms)
    kx = math.cos(math.radians((miny + maxy) / 2))  # equirectangular, metres-true at mid latitude
    pad, top = 20, 30
    scale = min((width - 2 * pad) / max((maxx - minx) * kx, 1e-9), (height - pad - top) / max(maxy - miny, 1e-9))
    # centre the drawing in the frame
    x0 = pad + ((width - 2 * pad) - (maxx - minx) * kx * scale) / 2
    y0 = height - pad - ((height - pad - top) - (maxy - miny) * scale) / 2

    def xy(lon: float, lat: float) -> str:
        return f"{x0 + (lon - minx) * kx * scale:.1f},{y0 - (lat - miny) * scale:.1f}"

    parts = []
    for cid, st, g in geoms:
        colour = _COLOURS.get(st, "#000")
        title = f"<title>{_e(cid)} ({_e(st)})</title>"
        b = g.bounds
        if max((b[2] - b[0]) * kx, b[3] - b[1]) * scale < 4:
            c = g.centroid
            cx, cy = xy(c.x, c.y).split(",")
            parts.append(f'<circle class="case" cx="{cx}" cy="{cy}" r="4" fill="{colour}">{title}</circle>')
            continue
        polys = g.geoms if g.geom_type == "MultiPolygon" else [g]
        d = " ".join("M" + " L".join(xy(x, y) for x, y in p.exterior.coords) + " Z" for p in polys)
        parts.append(f'<path class="case" d="{d}" fill="{colour}" fill-opacity="0.6" stroke="{colour}">{title}</path>')
    legend = "".join(f'<rect x="{10 + i * 95}" y="4" width="10" height="10" fill="{c}"/>'
                     f'<text x="{24 + i * 95}" y="13" font-size="11">{_e(s)}</text>'
                     for i, (s, c) in enumerate(_COLOURS.items()))
    return (f'<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" style="background:#eef3f7">{legend}{"".join(parts)}</svg>')


def render_report(data: ReportData, *, title: str = "tuban case report") -> str:
    """The report page as one self-contained HTML string."""
    prec = "n/a (no verified cases)" if data.precision is None else f"{data.precision:.1%}"
    h = data.hours_to_verdict
    ttv = ("n/a (no verdicts yet)" if not h else
           f"median {median(h):.1f} h, mean {sum(h) / len(h):.1f} h, max {max(h):.1f} h over {len(h)} tasks")
    statuses = [s for s in STATUSES if any(s in g for g in data.by_grid.values())]
    grid_rows = []
    for g, c in data.by_grid.items():
        conf, ver, med = data.grid_quality.get(g, (0, 0, None))
        grid_rows.append([g, *[c.get(s, 0) for s in statuses], sum(c.values()), ver,
                          f"{conf / ver:.0%}" if ver else "", f"{med:.1f}" if med is not None else ""])
    case_rows = [[r["case_id"], r["status"], r["priority"], r["kind"], r["grid_id"], r["officer"],
                  f"{r['area_mu']:.2f}" if r["area_mu"] == r["area_mu"] and r["area_mu"] is not None else "",
                  r["verdict"], r["note"], r["review_reason"]] for r in data.cases]
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>
body{{font-family:sans-serif;margin:16px;color:#222}} table{{border-collapse:collapse;margin:8px 0 16px}}
th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}} th{{background:#eee}}
.kpi{{display:inline-block;margin:0 24px 12px 0}} .kpi b{{display:block;font-size:1.6em}}
</style></head><body>
<h1>{_e(title)}</h1><p>Generated {_e(data.created)} by tuban {_e(__version__)}, offline page.</p>
<div class="kpi" id="kpi-cases"><b>{len(data.cases)}</b>cases</div>
<div class="kpi" id="kpi-precision"><b>{_e(prec)}</b>triage precision ({data.confirmed} confirmed / {data.verified} verified)</div>
<div class="kpi" id="kpi-ttv"><b>{_e(f"{median(h):.1f} h" if h else "n/a")}</b>time to verdict: {_e(ttv)}</div>
<h2>Map</h2>{_svg_map(data.shapes)}
<h2>By status</h2>{_table(["status", "cases"], [[s, n] for s, n in data.by_status.items()], "by-status")}
<h2>By grid</h2>{_table(["grid", *statuses, "total", "verified", "precision", "median h to verdict"],
                         grid_rows, "by-grid")}
<h2>By verdict</h2>{_table(["verdict", "cases (latest)", "verdicts (history)"],
                           [[v, data.by_verdict.get(v, 0), data.verdict_history.get(v, 0)] for v in VERDICTS], "by-verdict")}
<h2>Needs review ({len(data.review)})</h2>{_table(["case", "status", "reason"],
                                               [[r["case_id"], r["status"], r["review_reason"]] for r in data.review], "review")}
<h2>Cases</h2>{_table(["case", "status", "priority", "kind", "grid", "officer", "亩", "verdict", "note", "review"],
                      case_rows, "cases")}
</body></html>
"""


def write_report(ledger_path: str | Path, out_path: str | Path, *, overwrite: bool = False) -> ReportData:
    """Collect, render and atomically write the report; returns its numbers."""
    data = collect_report(ledger_path)
    write_text_atomic(out_path, render_report(data), overwrite=overwrite)
    return data
