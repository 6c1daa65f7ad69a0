"""Offline replay of judged competition flights (``tuban flight replay``).

One self-contained HTML page (no CDN, no map tiles, no network): every pilot's track drawn as
an SVG path in local metres over the course (east right, north up, metres about the course's
start corner or the first pilot's take-off point), a timeline scrubber that animates each
aircraft at equal time since its take-off ("ghost" replay), altitude / speed / yaw plots with
a cursor, a scorecard per pilot (item scores, subscores with reasons, penalties, data source,
flight mode) and the leaderboard. Tracks and plots are drawn in static SVG, so the page shows
them even with scripts disabled; the script only moves the markers and cursors.

PNG plots for print come from matplotlib (Agg backend): ``tracks.png`` and one
``profile_<pilot>.png`` per pilot with the item windows shaded.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tuban.pipelines.flight_course import ITEMS, Course, default_course
from tuban.pipelines.flight_score import NO_DATA, Judged, penalty_text

__all__ = ["common_frame", "replay_html", "replay_pngs"]

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
_TEMPLATE = Path(__file__).with_name("templates") / "flight_replay.html"


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def common_frame(judged: Sequence[Judged], course: Course | None = None,
                 max_offset_m: float = 5000.0) -> tuple[float, float, list[np.ndarray], list[str]]:
    """Put every pilot in one ENU frame: ``(ref_lon, ref_lat, [offset_en per pilot], notes)``.

    The reference is the course's square start corner when given, else the first pilot's
    take-off. A pilot whose take-off lies more than ``max_offset_m`` away (another venue) is
    drawn about its own take-off point instead, and a note says so.
    """
    import pymap3d

    course = course or default_course()
    usable = [j for j in judged if len(j.series)]
    if course.square is not None:
        lon0, lat0 = course.square.origin_lon, course.square.origin_lat
    elif usable:
        lon0, lat0 = usable[0].series.origin_lon, usable[0].series.origin_lat
    else:
        lon0, lat0 = 0.0, 0.0
    offsets, notes = [], []
    for j in judged:
        off = np.zeros(2)
        if len(j.series):
            e, n, _ = pymap3d.geodetic2enu(j.series.origin_lat, j.series.origin_lon, 0.0, lat0, lon0, 0.0)
            off = np.array([float(e), float(n)])
            if float(np.hypot(*off)) > max_offset_m:
                notes.append(f"{j.pilot} took off {np.hypot(*off) / 1000:.1f} km away: drawn about its own take-off")
                off = np.zeros(2)
        offsets.append(off)
    return lon0, lat0, offsets, notes


def _course_shapes(judged: Sequence[Judged], offsets: list[np.ndarray], course: Course) -> dict:
    import pymap3d

    shapes: dict = {"square": None, "targets": []}
    for j, off in zip(judged, offsets, strict=True):
        if j.square is not None:
            shapes["square"] = (j.square.corners + off).round(2).tolist()
            shapes["square_source"] = "course" if not j.square.fitted else f"fitted to {j.pilot}"
            break
    ref = next((j for j in judged if len(j.series)), None)
    if ref is not None:
        off = offsets[judged.index(ref)]
        for t in course.targets:
            e, n, _ = pymap3d.geodetic2enu(t.lat, t.lon, 0.0, ref.series.origin_lat, ref.series.origin_lon, 0.0)
            shapes["targets"].append({"name": t.name, "x": round(float(e) + off[0], 2), "y": round(float(n) + off[1], 2)})
    return shapes


def _pilot_data(j: Judged, off: np.ndarray, step: int) -> dict:
    fs = j.series
    if not len(fs):
        return {"pilot": j.pilot, "t": [], "x": [], "y": [], "u": [], "v": [], "yaw": []}
    t0 = fs.t_s[j.segments.takeoff.start] if j.segments.takeoff else (
        fs.t_s[j.segments.airborne.start] if j.segments.airborne else 0.0)
    sl = slice(None, None, step)
    yaw = fs.yaw_deg[sl] if fs.has_yaw else np.zeros_like(fs.t_s[sl])
    windows = {}
    for item in ("takeoff", "hover", "rotation", "square", "landing"):
        w = j.square_window if item == "square" and j.square_window else getattr(j.segments, item)
        if w is not None:
            windows[item] = [round(float(fs.t_s[w.start] - t0), 1), round(float(fs.t_s[w.stop - 1] - t0), 1)]
    return {"pilot": j.pilot, "t": np.round(fs.t_s[sl] - t0, 2).tolist(),
            "x": np.round(fs.e_m[sl] + off[0], 2).tolist(), "y": np.round(fs.n_m[sl] + off[1], 2).tolist(),
            "u": np.round(fs.u_m[sl], 2).tolist(), "v": np.round(fs.speed_m_s[sl], 2).tolist(),
            "yaw": np.round(yaw, 1).tolist(), "windows": windows}


def _bounds(pilots: list[dict], shapes: dict) -> tuple[float, float, float, float]:
    xs = [x for p in pilots for x in p["x"]] + [c[0] for c in shapes["square"] or []] + [t["x"] for t in shapes["targets"]]
    ys = [y for p in pilots for y in p["y"]] + [c[1] for c in shapes["square"] or []] + [t["y"] for t in shapes["targets"]]
    if not xs:
        return -10.0, -10.0, 10.0, 10.0
    pad = max(2.0, 0.05 * max(max(xs) - min(xs), max(ys) - min(ys)))
    return min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad


def _map_svg(pilots: list[dict], shapes: dict) -> str:
    x0, y0, x1, y1 = _bounds(pilots, shapes)
    w, h = x1 - x0, y1 - y0
    parts = [f'<svg id="track-map" xmlns="http://www.w3.org/2000/svg" viewBox="{x0:.2f} {-y1:.2f} {w:.2f} {h:.2f}" '
             f'preserveAspectRatio="xMidYMid meet" data-x0="{x0:.2f}" data-y1="{y1:.2f}">',
             f'<rect x="{x0:.2f}" y="{-y1:.2f}" width="{w:.2f}" height="{h:.2f}" fill="#fbfbf8"/>']
    raw = max(w, h) / 8.0  # about 8 grid lines a side, on a 1-2-5 ladder
    mag = 10.0 ** np.floor(np.log10(raw))
    grid = float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))
    gx = np.arange(np.ceil(x0 / grid) * grid, x1, grid)
    gy = np.arange(np.ceil(y0 / grid) * grid, y1, grid)
    sw = max(w, h) / 600
    for g in gx:
        parts.append(f'<line class="grid" x1="{g:.1f}" y1="{-y1:.1f}" x2="{g:.1f}" y2="{-y0:.1f}" stroke="#e4e4e0" stroke-width="{sw:.3f}"/>')
    for g in gy:
        parts.append(f'<line class="grid" x1="{x0:.1f}" y1="{-g:.1f}" x2="{x1:.1f}" y2="{-g:.1f}" stroke="#e4e4e0" stroke-width="{sw:.3f}"/>')
    if shapes["square"]:
        pts = " ".join(f"{x:.2f},{-y:.2f}" for x, y in shapes["square"])
        parts.append(f'<polygon class="course-square" points="{pts}" fill="none" stroke="#444" '
                     f'stroke-dasharray="{4 * sw:.2f}" stroke-width="{2.5 * sw:.3f}"/>')
    for t in shapes["targets"]:
        parts.append(f'<g class="target"><circle cx="{t["x"]:.2f}" cy="{-t["y"]:.2f}" r="{6 * sw:.2f}" fill="none" '
                     f'stroke="#000" stroke-width="{1.5 * sw:.3f}"/><text x="{t["x"] + 8 * sw:.2f}" '
                     f'y="{-t["y"]:.2f}" font-size="{12 * sw:.2f}">{html.escape(t["name"])}</text></g>')
    for i, p in enumerate(pilots):
        if len(p["x"]) < 2:
            continue
        d = "M" + " L".join(f"{x:.2f},{-y:.2f}" for x, y in zip(p["x"], p["y"], strict=True))
        parts.append(f'<path class="track" data-pilot="{html.escape(p["pilot"])}" d="{d}" fill="none" '
                     f'stroke="{_colour(i)}" stroke-width="{2 * sw:.3f}" stroke-opacity="0.8"/>')
    for i, p in enumerate(pilots):
        if p["x"]:
            parts.append(f'<circle class="aircraft" id="ac-{i}" cx="{p["x"][0]:.2f}" cy="{-p["y"][0]:.2f}" '
                         f'r="{7 * sw:.2f}" fill="{_colour(i)}" stroke="#000" stroke-width="{sw:.3f}"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def _plot_svg(pilots: list[dict], key: str, label: str) -> str:
    W, H, m = 600.0, 160.0, 36.0
    ts = [t for p in pilots for t in p["t"]]
    vs = [v for p in pilots for v in p[key]]
    if not ts:
        return f'<svg class="plot" id="plot-{key}" viewBox="0 0 {W:.0f} {H:.0f}"></svg>'
    t0, t1 = min(ts), max(ts) if max(ts) > min(ts) else min(ts) + 1
    v0, v1 = min(vs), max(vs) if max(vs) > min(vs) else min(vs) + 1

    def sx(t: float) -> float:
        return m + (t - t0) / (t1 - t0) * (W - m - 8)

    def sy(v: float) -> float:
        return H - 20 - (v - v0) / (v1 - v0) * (H - 30)

    parts = [f'<svg class="plot" id="plot-{key}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W:.0f} {H:.0f}" '
             f'data-t0="{t0:.2f}" data-t1="{t1:.2f}" data-m="{m}" data-w="{W - m - 8:.1f}">',
             f'<text x="4" y="12" font-size="11">{html.escape(label)}</text>',
             f'<text x="4" y="{H - 22:.0f}" font-size="9">{v0:.1f}</text><text x="4" y="22" font-size="9">{v1:.1f}</text>',
             f'<text x="{m}" y="{H - 4:.0f}" font-size="9">{t0:.0f} s</text>'
             f'<text x="{W - 40:.0f}" y="{H - 4:.0f}" font-size="9">{t1:.0f} s</text>']
    for i, p in enumerate(pilots):
        step = max(1, len(p["t"]) // 800)
        pts = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in zip(p["t"][::step], p[key][::step], strict=True))
        parts.append(f'<polyline class="series" data-pilot="{html.escape(p["pilot"])}" points="{pts}" fill="none" '
                     f'stroke="{_colour(i)}" stroke-width="1.2"/>')
    parts.append(f'<line class="cursor" x1="{sx(0 if t0 <= 0 <= t1 else t0):.1f}" y1="10" '
                 f'x2="{sx(0 if t0 <= 0 <= t1 else t0):.1f}" y2="{H - 20:.0f}" stroke="#000" stroke-width="1"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def _leaderboard(result: dict) -> str:
    rows = ["<table id=\"leaderboard\"><thead><tr><th>Rank</th><th>Pilot</th><th>Total</th>"
            + "".join(f"<th>{i}</th>" for i in ITEMS) + "<th>Penalties</th><th>Flight time s</th></tr></thead><tbody>"]
    for p in result["pilots"]:
        if p.get("status") == NO_DATA:
            rows.append(f"<tr class=\"no-data\"><td>-</td><td>{html.escape(p['pilot'])}</td><td class=\"na\">no data</td>"
                        f"<td class=\"na\" colspan=\"{len(ITEMS) + 2}\">{html.escape(p['reason'])}</td></tr>")
            continue
        cells = "".join(f"<td>{p['items'][i]['score']:.1f}</td>" if p["items"][i]["status"] == "scored"
                        else f"<td class=\"na\">{html.escape(p['items'][i]['status'])}</td>" for i in ITEMS)
        rows.append(f"<tr><td>{p['rank']}</td><td>{html.escape(p['pilot'])}</td><td><b>{p['total']:.1f}</b></td>"
                    f"{cells}<td>{penalty_text(p['penalty_points'])}</td><td>{p['flight_time_s'] or ''}</td></tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _scorecard(p: dict, colour: str) -> str:
    if p.get("status") == NO_DATA:
        return (f'<section class="scorecard no-data" data-pilot="{html.escape(p["pilot"])}">'
                f'<h3>{html.escape(p["pilot"])} - no data (not ranked)</h3>'
                f'<p class="warn">{html.escape(str(p["source"]["file"]))}: {html.escape(p["reason"])}</p></section>')
    out = [f'<section class="scorecard" data-pilot="{html.escape(p["pilot"])}">',
           f'<h3><span class="swatch" style="background:{colour}"></span>{html.escape(p["pilot"])} '
           f'- {p["total"]:.1f} / 100 (rank {p["rank"]})</h3>',
           f'<p class="source">Source: {html.escape(str(p["source"]["file"]))} ({html.escape(p["source"]["format"])}, '
           f'{p["source"]["records"]} records)</p>']
    for w in p["source"]["warnings"]:
        out.append(f'<p class="warn">{html.escape(w)}</p>')
    out.append("<table><tr><th>Item</th><th>Score</th><th>Flight mode</th><th>Details</th></tr>")
    for item in ITEMS:
        it = p["items"][item]
        score = f"{it['score']:.1f}" if it["status"] == "scored" else html.escape(it["status"])
        reasons = "<br>".join(html.escape(r) for r in it["reasons"])
        out.append(f"<tr><td>{item}</td><td>{score}</td><td>{html.escape(it.get('flight_mode', ''))}</td>"
                   f"<td class=\"reasons\">{reasons}</td></tr>")
    out.append("</table>")
    if p["penalties"]:
        out.append("<ul class=\"penalties\">" + "".join(
            f"<li>{penalty_text(q['points'])}: {html.escape(q['item'])}: {html.escape(q['reason'])}</li>" for q in p["penalties"])
            + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def replay_html(judged: Sequence[Judged], result: dict, course: Course | None = None, *, rate_hz: float = 5.0) -> str:
    """The self-contained replay page (see module docstring) as text.

    Args:
        judged: from :func:`tuban.pipelines.flight_score.score_tracks`, in ranking order.
        result: the scores.json document.
        course: the course the flights were scored against.
        rate_hz: animation sample rate kept in the page.
    """
    course = course or default_course()
    _, _, offsets, frame_notes = common_frame(judged, course)
    step = max(1, int(round((1.0 / (judged[0].series.dt_s if judged and len(judged[0].series) else 0.1)) / rate_hz)))
    pilots = [_pilot_data(j, off, step) for j, off in zip(judged, offsets, strict=True)]
    shapes = _course_shapes(judged, offsets, course)
    t_all = [t for p in pilots for t in p["t"]]
    data = {"pilots": [{"pilot": p["pilot"], "colour": _colour(i), "t": p["t"], "x": p["x"], "y": p["y"]}
                       for i, p in enumerate(pilots)],
            "t0": min(t_all) if t_all else 0.0, "t1": max(t_all) if t_all else 0.0}
    legend = " ".join(f'<span class="legend"><span class="swatch" style="background:{_colour(i)}"></span>'
                      f'{html.escape(p["pilot"])}</span>' for i, p in enumerate(pilots))
    body = {
        "TITLE": html.escape(f"Flight replay - {result.get('course', '')}"),
        "COURSE": html.escape(f"{result.get('course', '')}; wind grade {result.get('wind_grade', 1)}; "
                              f"square: {shapes.get('square_source', 'none')}"),
        "LEGEND": legend + "".join(f'<p class="warn">{html.escape(n)}</p>' for n in frame_notes),
        "MAP": _map_svg(pilots, shapes),
        "PLOTS": "\n".join(_plot_svg(pilots, k, lab) for k, lab in
                           (("u", "Height above take-off (m)"), ("v", "Horizontal speed (m/s)"), ("yaw", "Yaw, unwrapped (deg)"))),
        "LEADERBOARD": _leaderboard(result),
        "SCORECARDS": "\n".join(_scorecard(p, _colour(i)) for i, p in enumerate(result["pilots"])),
        "DATA": json.dumps(data, separators=(",", ":")).replace("</", "<\\/"),
        "T0": f"{data['t0']:.1f}", "T1": f"{data['t1']:.1f}",
    }
    page = _TEMPLATE.read_text(encoding="utf-8")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: body[m.group(1)], page)


def _safe(name: str) -> str:
    """A file-name part from a pilot name: Unicode letters and digits kept (张三 stays 张三)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_.") or "pilot"


def _unique(name: str, taken: dict[str, bytes]) -> str:
    stem, k = name, 2
    while f"profile_{name}.png" in taken:
        name, k = f"{stem}_{k}", k + 1
    return f"profile_{name}.png"


def replay_pngs(judged: Sequence[Judged], course: Course | None = None) -> dict[str, bytes]:
    """PNG plots for print: ``tracks.png`` and ``profile_<pilot>.png`` -> PNG bytes.

    File names keep Unicode letters; two pilots whose names sanitise alike get ``_2``, ``_3``.
    Fonts without CJK glyphs draw such names as boxes; matplotlib's per-glyph warnings are
    silenced (the HTML page shows the names).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        return _replay_pngs(judged, course)


def _replay_pngs(judged: Sequence[Judged], course: Course | None) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    course = course or default_course()
    _, _, offsets, _ = common_frame(judged, course)
    shapes = _course_shapes(judged, offsets, course)
    out: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    if shapes["square"]:
        sq = np.array(shapes["square"] + shapes["square"][:1])
        ax.plot(sq[:, 0], sq[:, 1], "k--", lw=1.5, label="course square")
    for t in shapes["targets"]:
        ax.plot(t["x"], t["y"], "k^")
        ax.annotate(t["name"], (t["x"], t["y"]), xytext=(4, 4), textcoords="offset points")
    for i, (j, off) in enumerate(zip(judged, offsets, strict=True)):
        if len(j.series):
            ax.plot(j.series.e_m + off[0], j.series.n_m + off[1], color=_colour(i), lw=1.2,
                    label=f"{j.pilot} ({j.entry['total']:.1f})")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("All tracks, local metres")
    out["tracks.png"] = _png(fig)
    shade = {"takeoff": "#c6dbef", "hover": "#c7e9c0", "rotation": "#fdd0a2", "square": "#dadaeb", "landing": "#f0f0f0"}
    for i, j in enumerate(judged):
        fs = j.series
        fig, axes = plt.subplots(3, 1, figsize=(9, 7), dpi=100, sharex=True)
        if len(fs):
            for ax, y, lab in zip(axes, (fs.u_m, fs.speed_m_s, fs.yaw_deg),
                                  ("height (m)", "speed (m/s)", "yaw (deg)"), strict=True):
                ax.plot(fs.t_s, y, color=_colour(i), lw=1)
                ax.set_ylabel(lab)
                ax.grid(alpha=0.3)
                for item, colour in shade.items():
                    w = j.square_window if item == "square" and j.square_window else getattr(j.segments, item)
                    if w is not None:
                        ax.axvspan(fs.t_s[w.start], fs.t_s[w.stop - 1], color=colour, alpha=0.6, lw=0)
            axes[0].legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in shade.values()],
                           labels=list(shade), fontsize=7, ncol=5, loc="upper right")
        axes[-1].set_xlabel("time since log start (s)")
        axes[0].set_title(f"{j.pilot}: {j.entry['total']:.1f} / 100")
        out[_unique(_safe(j.pilot), out)] = _png(fig)
    return out


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
