"""Aquaculture pond clusters of the sample county and what happens to them between the dates.

A cluster is a (possibly rotated) grid of rectangular ponds, 50-300 m on a side, separated by
dikes 3-10 m wide. Each pond has a state on each date (``absent``, ``water``, ``drained``) and a
change ``kind``: ``pond`` (no change of existence), ``new_pond`` (dug and filled), ``removed_pond``
(filled in, now soil or crop) or ``drained_pond`` (water before, mud inside the intact dike grid
after). With ``dug_fraction > 0`` that share of the new ponds is *freshly dug*: ``absent ->
drained`` (new dikes around a wet mud floor, a small puddle, no standing water yet); they stay
``kind == "new_pond"`` and are told apart by ``state_after == "drained"``. The same polygons are painted into the rasters and written as truth, so truth matches the
pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep

from tuban.sample_data.landcover import Landscape, Patch, make_patch
from tuban.sample_data.radiometry import MATERIALS, WATER_COLOURS, material_texture, water_spectrum

__all__ = ["Pond", "PondWorld", "KINDS", "build_ponds"]

#: Change kinds, as written in the truth files' ``kind`` property.
KINDS: tuple[str, ...] = ("pond", "new_pond", "removed_pond", "drained_pond")


@dataclass(frozen=True)
class Pond:
    """One pond: its water polygon (county metres), dike, size, and state on both dates."""

    pond_id: str
    cluster_id: str
    geometry: Polygon
    length_m: float
    width_m: float
    angle_deg: float
    dike_width_m: float
    state_before: str
    state_after: str
    colour_before: str | None
    colour_after: str | None
    kind: str

    def __post_init__(self) -> None:
        states = ("absent", "water", "drained")
        if self.state_before not in states or self.state_after not in states:
            raise ValueError(f"bad pond state {self.state_before!r} -> {self.state_after!r}")
        if self.kind not in KINDS:
            raise ValueError(f"bad pond kind {self.kind!r}")


@dataclass(frozen=True)
class PondWorld:
    """All ponds plus the patches (fills, dikes, water) that paint them, in paint order."""

    ponds: tuple[Pond, ...]
    patches: tuple[Patch, ...]
    cluster_outlines: tuple[BaseGeometry, ...]


@dataclass
class _Cell:
    row: int
    col: int
    geom: Polygon
    length_m: float
    width_m: float
    kind: str = "pond"
    before: str = "water"
    after: str = "water"


@dataclass
class _Cluster:
    cid: str
    cells: list[_Cell]
    rows: int
    cols: int
    angle_deg: float
    dike_m: float
    outline: Polygon
    in_hr: bool
    centre_xy_m: tuple[float, float]
    size_xy_m: tuple[float, float]
    lens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wids: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _rotate(geoms, angle_deg: float, cx: float, cy: float):
    """Rotate an array of geometries counter-clockwise about ``(cx, cy)`` (vectorised)."""
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    return shapely.transform(geoms, lambda xy: (xy - (cx, cy)) @ rot + (cx, cy))


def _make_cluster(rng: np.random.Generator, cid: str, cx: float, cy: float) -> _Cluster:
    """A cluster plan: its outline now, its ponds (``cells``) built by :func:`_build_cells`."""
    rows, cols = int(rng.integers(2, 5)), int(rng.integers(2, 7))
    size_class = rng.choice(3, p=[0.35, 0.45, 0.2])
    length = (rng.uniform(55, 90), rng.uniform(90, 170), rng.uniform(170, 280))[size_class]
    width = float(np.clip(length * rng.uniform(0.5, 0.95), 50, 300))
    dike = float(rng.uniform(3, 10))
    lens = np.clip(length * rng.uniform(0.85, 1.15, cols), 50, 300)
    wids = np.clip(width * rng.uniform(0.85, 1.15, rows), 50, 300)
    angle = float(rng.normal(0, 4) if rng.random() < 0.65 else rng.uniform(-40, 40))
    total_x = lens.sum() + dike * (cols + 1)
    total_y = wids.sum() + dike * (rows + 1)
    x0, y0 = cx - total_x / 2, cy - total_y / 2
    outline = _rotate(box(x0, y0, x0 + total_x, y0 + total_y), angle, cx, cy)
    return _Cluster(cid, [], rows, cols, angle, dike, outline, False, (cx, cy), (total_x, total_y), lens, wids)


def _build_cells(cl: _Cluster) -> None:
    (cx, cy), (total_x, total_y) = cl.centre_xy_m, cl.size_xy_m
    lens, wids, d = cl.lens, cl.wids, cl.dike_m
    xs = cx - total_x / 2 + d + np.concatenate([[0.0], np.cumsum(lens + d)[:-1]])
    ys = cy - total_y / 2 + d + np.concatenate([[0.0], np.cumsum(wids + d)[:-1]])
    rr, cc = np.meshgrid(np.arange(cl.rows), np.arange(cl.cols), indexing="ij")
    r, c = rr.ravel(), cc.ravel()
    rects = _rotate(shapely.box(xs[c], ys[r], xs[c] + lens[c], ys[r] + wids[r]), cl.angle_deg, cx, cy)
    cl.cells = [_Cell(int(i), int(j), g, float(lens[j]), float(wids[i])) for i, j, g in zip(r, c, rects, strict=True)]


def _place_clusters(
    rng: np.random.Generator, land: Landscape, hr_box: Polygon, target: int
) -> list[_Cluster]:
    zone = prep(land.pond_zone)
    blocked = prep(land.no_ponds)
    county = box(60, 60, land.width_m - 60, land.height_m - 60)
    hr_inner = hr_box.buffer(-40)
    clusters: list[_Cluster] = []
    taken: list[Polygon] = []
    n_ponds, tries = 0, 0
    hr_wanted = 3
    while n_ponds < target and tries < 3000:
        tries += 1
        want_hr = sum(c.in_hr for c in clusters) < hr_wanted and tries < 1500
        bx = hr_inner.bounds if want_hr else land.pond_zone.bounds
        cx, cy = rng.uniform(bx[0], bx[2]), rng.uniform(bx[1], bx[3])
        cl = _make_cluster(rng, f"C{len(clusters) + 1:02d}", cx, cy)
        o = cl.outline
        if not county.contains(o) or not zone.contains(o) or blocked.intersects(o):
            continue
        if any(t.intersects(o) for t in taken):
            continue
        if want_hr and not hr_inner.contains(o):
            continue
        cl.in_hr = hr_box.contains(o)
        _build_cells(cl)
        clusters.append(cl)
        taken.append(o.buffer(40))
        n_ponds += len(cl.cells)
    return clusters


def _run(rng: np.random.Generator, cl: _Cluster, length: int) -> list[_Cell]:
    """Up to ``length`` neighbouring unchanged ponds in one row of a cluster (farmers work in rows)."""
    row = int(rng.integers(cl.rows))
    cells = [c for c in cl.cells if c.row == row and c.kind == "pond" and c.before == "water"]
    if not cells:
        return []
    start = int(rng.integers(len(cells)))
    return cells[start: start + length]


def _mark_dug(rng: np.random.Generator, clusters: list[_Cluster], fraction: float) -> None:
    """Turn ``fraction`` of the new ponds into freshly dug dry ponds (``absent -> drained``).

    Whole rows are dug at a time (farmers dig a row, then fill it), so a dug pond usually sits
    next to other dug ponds or to old water ponds.
    """
    new = [cell for c in clusters for cell in c.cells if cell.kind == "new_pond"]
    target = round(fraction * len(new))
    rows = [[cell for cell in c.cells if cell.kind == "new_pond" and cell.row == r]
            for c in clusters for r in range(c.rows)]
    rows = [r for r in rows if r]
    done = 0
    for i in rng.permutation(len(rows)):
        for cell in rows[int(i)]:
            if done >= target:
                return
            cell.after = "drained"
            done += 1


def _assign_changes(rng: np.random.Generator, clusters: list[_Cluster], scale: float) -> None:
    if not clusters:
        return
    new_target = max(3, round(rng.integers(12, 29) * scale))
    removed_target = max(2, round(rng.integers(6, 14) * scale))
    drained_target = max(2, round(rng.integers(5, 10) * scale))
    hr = [c for c in clusters if c.in_hr]
    rest = [c for c in clusters if not c.in_hr]
    order = [clusters[i] for i in rng.permutation(len(clusters))]
    if hr:  # the high-resolution sub-area should show every kind of change
        order = [hr[0]] + [c for c in order if c is not hr[0]]
    n_total = sum(len(c.cells) for c in clusters)
    new = 0
    # whole new clusters (dug in farmland or mangrove) while enough old ponds remain
    for c in [*rest, *hr] if len(order) > 1 else []:
        if new + len(c.cells) <= new_target and n_total - new - len(c.cells) >= removed_target + drained_target + 6:
            for cell in c.cells:
                cell.kind, cell.before = "new_pond", "absent"
            new += len(c.cells)
            break
    # extension rows of existing clusters
    for c in order:
        if new >= new_target:
            break
        if c.rows < 2 or any(cell.kind == "new_pond" for cell in c.cells):
            continue
        for cell in c.cells:
            if cell.row == c.rows - 1:
                cell.kind, cell.before = "new_pond", "absent"
                new += 1
    for kind, target, max_run in (("removed_pond", removed_target, 3), ("drained_pond", drained_target, 4)):
        done, guard = 0, 0
        while done < target and guard < 200:
            guard += 1
            cl = order[(guard - 1) % len(order)] if guard <= len(order) else order[int(rng.integers(len(order)))]
            for cell in _run(rng, cl, min(int(rng.integers(1, max_run + 1)), target - done)):
                cell.kind = kind
                cell.after = "absent" if kind == "removed_pond" else "drained"
                done += 1
    # distractors that are not changes of existence: drained on both dates, refilled after drying
    stable = [cell for c in clusters for cell in c.cells if cell.kind == "pond"]
    for i in rng.permutation(len(stable))[: int(rng.integers(1, 3))]:
        stable[i].before = "drained"
        stable[i].after = "drained" if rng.random() < 0.5 else "water"


def build_ponds(
    rng: np.random.Generator, land: Landscape, hr_box: Polygon, *, scale: float = 1.0,
    dug_fraction: float = 0.0,
) -> PondWorld:
    """Pond clusters, their changes and their paint patches.

    Args:
        rng: the generator (consumed).
        land: the landscape; clusters stay inside its pond zone and off rivers, roads, villages.
        hr_box: the high-resolution sub-area (county metres); about three clusters go there.
        scale: county area relative to the default 12 km x 12 km; scales pond counts.
        dug_fraction: share (0-1) of the new ponds that are freshly dug and still dry after
            (``absent -> drained``). 0 (default) draws nothing extra from ``rng``, so every
            existing output stays bit-identical.
    """
    if not 0.0 <= dug_fraction <= 1.0:
        raise ValueError(f"dug_fraction must be 0-1, got {dug_fraction}")
    target = max(12, round(rng.integers(60, 111) * scale))
    clusters = _place_clusters(rng, land, hr_box, target)
    _assign_changes(rng, clusters, scale)
    if dug_fraction > 0:
        _mark_dug(np.random.default_rng([int(rng.integers(2**31)), 17]), clusters, dug_fraction)
    fills: list[Patch] = []
    dikes: list[Patch] = []
    waters: list[Patch] = []
    extras: list[Patch] = []
    ponds: list[Pond] = []
    for cl in clusters:
        dominant = str(rng.choice(WATER_COLOURS, p=[0.35, 0.4, 0.25]))
        dike_patch = make_patch(cl.outline, "dike", "dike", rng, role="dike")
        grass = rng.uniform(0.0, 0.6)  # many dikes carry grass: less bright, greener
        dike_spec = tuple(float((1 - grass) * d + grass * g) for d, g in
                          zip(dike_patch.spectrum_before or (), MATERIALS["grass"], strict=True))
        extras.extend(_sheds(rng, cl))
        for cell in cl.cells:
            frame = cell.geom.buffer(cl.dike_m, join_style="mitre")
            b = "dike" if cell.before != "absent" else None
            a = "dike" if cell.after != "absent" else None
            spec = dike_spec
            dikes.append(Patch(frame, b, a, spec if b else None, spec if a else None,
                               material_texture("dike"), "dike"))
            if cell.after == "absent":
                fill = str(rng.choice(["fill", "bare_soil", "young_crop", "grass"], p=[0.45, 0.2, 0.2, 0.15]))
                fills.append(make_patch(frame, None, fill, rng, role="fill"))
            colour = dominant if rng.random() < 0.65 else str(rng.choice(WATER_COLOURS))
            if cell.before == "absent":
                colour = str(rng.choice(WATER_COLOURS, p=[0.3, 0.5, 0.2]))
            colour_after = colour
            if cell.kind == "pond" and rng.random() < 0.15:  # bloom or clearing: not a change of existence
                colour_after = str(rng.choice([c for c in WATER_COLOURS if c != colour]))
            cb = {"absent": None, "water": colour, "drained": "mud"}[cell.before]
            ca = {"absent": None, "water": colour_after, "drained": "mud"}[cell.after]
            sb = water_spectrum(cb, rng) if cb else None
            sa: tuple[float, ...] | None
            if ca and ca == cb and sb is not None:
                sa = tuple(float(v) for v in np.asarray(sb) * (1 + rng.normal(0, 0.04, 4)))
            else:
                sa = water_spectrum(ca, rng) if ca else None
            tex = material_texture(ca or cb or "clear")
            waters.append(Patch(cell.geom, cb, ca, sb, sa, tex, "pond"))
            extras.extend(_aerators(rng, cell, cl.angle_deg))
            if "drained" in (cell.before, cell.after):  # a puddle left in one corner (< 10 % of the bottom)
                corner = cell.geom.exterior.coords[int(rng.integers(4))]
                puddle = affinity.scale(cell.geom, 0.25, 0.25, origin=corner)
                spec = water_spectrum("turbid", rng)
                extras.append(Patch(puddle, "turbid" if cell.before == "drained" else None,
                                    "turbid" if cell.after == "drained" else None,
                                    spec if cell.before == "drained" else None,
                                    spec if cell.after == "drained" else None, 0.04, "puddle"))
            ponds.append(Pond(
                pond_id=f"P{len(ponds) + 1:04d}", cluster_id=cl.cid, geometry=cell.geom,
                length_m=round(cell.length_m, 2), width_m=round(cell.width_m, 2),
                angle_deg=round(cl.angle_deg, 2), dike_width_m=round(cl.dike_m, 2),
                state_before=cell.before, state_after=cell.after, colour_before=cb, colour_after=ca,
                kind=cell.kind,
            ))
    return PondWorld(tuple(ponds), tuple(fills + dikes + waters + extras), tuple(c.outline for c in clusters))


def _aerators(rng: np.random.Generator, cell: _Cell, angle_deg: float) -> list[Patch]:
    """Paddle-wheel aerators of fish/shrimp ponds: small bright foam patches on the water (2 m scale)."""
    if "water" not in (cell.before, cell.after) or rng.random() < 0.5:
        return []
    c = cell.geom.centroid
    t = np.deg2rad(angle_deg)
    out = []
    for _ in range(int(rng.integers(1, 3))):
        u = rng.uniform(-1, 1) * max(cell.length_m / 2 - 12, 0)
        v = rng.uniform(-1, 1) * max(cell.width_m / 2 - 12, 0)
        x = c.x + u * np.cos(t) - v * np.sin(t)
        y = c.y + u * np.sin(t) + v * np.cos(t)
        foam = affinity.rotate(affinity.scale(Point(x, y).buffer(1.0, 8), rng.uniform(2, 4), rng.uniform(1, 1.8)),
                               rng.uniform(0, 180), origin=(x, y))
        spec = tuple(float(v) for v in np.array([0.20, 0.22, 0.21, 0.15]) * rng.uniform(0.8, 1.2))
        b = spec if cell.before == "water" else None
        a = spec if cell.after == "water" else None
        out.append(Patch(foam, "foam" if b else None, "foam" if a else None, b, a, 0.1, "aerator"))
    return out


def _sheds(rng: np.random.Generator, cl: _Cluster) -> list[Patch]:
    """One or two farm sheds just outside a cluster's outer dike (bright roofs, never on water)."""
    cx, cy = cl.centre_xy_m
    sx, sy = cl.size_xy_m
    out = []
    for _ in range(int(rng.integers(1, 3))):
        w, h = rng.uniform(6, 12), rng.uniform(5, 9)
        x = cx - sx / 2 + rng.uniform(0, max(sx - w, 1))
        y = cy - sy / 2 - h - rng.uniform(3, 6) if rng.random() < 0.5 else cy + sy / 2 + rng.uniform(3, 6)
        shed = affinity.rotate(box(x, y, x + w, y + h), cl.angle_deg, origin=(cx, cy))
        mat = str(rng.choice(["roof_blue", "roof_grey"]))
        exists_before = not all(c.before == "absent" for c in cl.cells)
        out.append(make_patch(shed, mat if exists_before else None, mat, rng, role="shed"))
    return out
