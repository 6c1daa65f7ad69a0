"""Land cover of the sample county: coast, tidal flat, mangrove, river, farmland, villages, roads.

Everything is built in *county metres* (origin at the south-west corner of the Sentinel-2-like
scene, x east, y north) as :class:`Patch` records in paint order; the ponds module adds the pond
clusters on top. A patch knows its material on both dates, so seasonal farmland changes
(harvested, greened, flooded paddy at transplanting) and the tide on the mudflat are part of the
world, not of the rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from tuban.sample_data.radiometry import MATERIALS, feature_spectrum, material_texture

__all__ = ["Patch", "Village", "Landscape", "make_patch", "build_landscape"]


@dataclass(frozen=True)
class Patch:
    """A painted polygon with its material and spectrum on each date (None = not painted)."""

    geometry: BaseGeometry
    material_before: str | None
    material_after: str | None
    spectrum_before: tuple[float, ...] | None
    spectrum_after: tuple[float, ...] | None
    texture: float
    role: str = "land"


@dataclass(frozen=True)
class Village:
    """A settlement: its centre (county metres) and built-up outline."""

    centre_xy_m: tuple[float, float]
    outline: BaseGeometry


@dataclass(frozen=True)
class Landscape:
    """The county without ponds: paint-ordered patches plus the geometry ponds must respect."""

    width_m: float
    height_m: float
    margin_m: float
    patches: tuple[Patch, ...]
    villages: tuple[Village, ...]
    land: BaseGeometry
    pond_zone: BaseGeometry
    no_ponds: BaseGeometry
    coast_xy_m: np.ndarray

    @property
    def world(self) -> Polygon:
        """The rendered world: the county box plus a margin for shifted scenes."""
        m = self.margin_m
        return box(-m, -m, self.width_m + m, self.height_m + m)


def make_patch(
    geom: BaseGeometry,
    before: str | None,
    after: str | None,
    rng: np.random.Generator,
    *,
    role: str = "land",
    jitter: float = 0.08,
    drift: float = 0.03,
) -> Patch:
    """A patch with per-feature spectra; an unchanged material drifts only slightly between dates."""
    sb = feature_spectrum(before, rng, jitter) if before else None
    sa: tuple[float, ...] | None
    if after and after == before and sb is not None:
        sa = tuple(float(v) for v in np.clip(np.asarray(sb) * (1 + rng.normal(0, drift, 4)), 0.005, 0.95))
    else:
        sa = feature_spectrum(after, rng, jitter) if after else None
    return Patch(geom, before, after, sb, sa, material_texture(after or before or "grass"), role)


def _noise1d(rng: np.random.Generator, t: np.ndarray, longest: float, shortest: float) -> np.ndarray:
    """Smooth 1-D noise (~unit std): octaves of random-phase sines, amplitude halving per octave."""
    out = np.zeros_like(t, dtype=float)
    wavelength, amp, norm = longest, 1.0, 0.0
    while wavelength >= shortest:
        lam = wavelength * rng.uniform(0.7, 1.3)
        out += amp * np.sin(2 * np.pi * t / lam + rng.uniform(0, 2 * np.pi))
        norm += amp * amp / 2
        wavelength, amp = wavelength / 2, amp / 2
    return out / np.sqrt(max(norm, 1e-12))


def _blob(rng: np.random.Generator, cx: float, cy: float, radius_m: float, n: int) -> BaseGeometry:
    pts = [Point(cx, cy).buffer(radius_m * rng.uniform(0.6, 1.0), 16)]
    for _ in range(n - 1):
        a, r = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.9) * radius_m
        pts.append(Point(cx + r * np.cos(a), cy + r * np.sin(a)).buffer(radius_m * rng.uniform(0.35, 0.7), 16))
    return unary_union(pts)


def _coast(rng, w, h, m):
    """Coastline x per y (a bay-and-headland curve) and the low-tide mudflat width."""
    ys = np.linspace(-m, h + m, int((h + 2 * m) / 20) + 2)
    xs = w * rng.uniform(0.80, 0.87) + 0.035 * w * _noise1d(rng, ys, 1.2 * h, 120.0)
    mud_w = np.clip(0.07 * w, 120.0, 700.0) * np.clip(1 + 0.35 * _noise1d(rng, ys, 0.6 * h, 80.0), 0.3, None)
    return ys, xs, mud_w


def _river(rng, w, h, m, ys, xs, mud_w) -> tuple[LineString, BaseGeometry]:
    """A meandering river from the west edge to the estuary: its centre line and water polygon.

    The channel heading wanders around the direction to the mouth by up to ~65 degrees with a
    drifting meander wavelength, which gives irregular bends instead of a sine wave.
    """
    y0, y1 = rng.uniform(0.3, 0.7) * h, rng.uniform(0.35, 0.65) * h
    mouth = np.array([np.interp(y1, ys, xs) + 1.2 * np.interp(y1, ys, mud_w), y1])
    p = np.array([-m - 60.0, y0])
    ds = 15.0
    lam = float(np.clip(0.12 * w, 250.0, 1400.0))
    amp = rng.uniform(0.8, 1.15)
    wobble = _noise1d(rng, np.arange(4000) * ds, 6 * lam, lam / 2)
    phase = rng.uniform(0, 2 * np.pi)
    pts = [p.copy()]
    for k in range(4000):
        if p[0] >= mouth[0]:
            break
        to = mouth - p
        near_coast = np.clip((mouth[0] - p[0]) / (0.1 * w), 0.3, 1.0)
        phase += 2 * np.pi * ds / lam * max(0.25, 1 + 0.8 * wobble[k])
        heading = np.arctan2(to[1], to[0]) + amp * near_coast * (0.7 + 0.3 * wobble[-k - 1]) * np.sin(phase)
        p = p + ds * np.array([np.cos(heading), np.sin(heading)])
        pts.append(p.copy())
    line = np.asarray(pts)
    n = len(line)
    chunks = 6
    parts = []
    for k in range(chunks):
        seg = line[k * n // chunks: (k + 1) * n // chunks + 2]
        if len(seg) >= 2:
            parts.append(LineString(seg).buffer((11 + 6 * k) * rng.uniform(0.9, 1.1), 8))
    return LineString(line), unary_union(parts)


def _tidal_creeks(rng, h, ys, xs, mud_w) -> BaseGeometry:
    """Branching tidal creeks cut into the mudflat from the low-tide line (water on both dates)."""
    creeks = []
    for _ in range(int(rng.integers(3, 8))):
        y = rng.uniform(0.05, 0.95) * h
        start = np.array([np.interp(y, ys, xs) + np.interp(y, ys, mud_w) + 20.0, y])
        reach = np.interp(y, ys, mud_w) * rng.uniform(0.6, 1.0)
        trunk = np.repeat(start[None], 26, axis=0)
        for depth, width in ((0, rng.uniform(6, 12)), (1, rng.uniform(3, 6)), (1, rng.uniform(3, 6))):
            n = 25
            heading = np.pi + rng.normal(0, 0.25) + (rng.choice([-0.7, 0.7]) if depth else 0.0)
            steps = heading + np.cumsum(rng.normal(0, 0.25, n))
            seg = reach / n * (0.5 if depth else 1.0)
            p0 = start if not depth else trunk[int(rng.integers(5, n // 2))]
            pts = p0 + np.cumsum(np.column_stack([np.cos(steps), np.sin(steps)]) * seg, axis=0)
            pts = np.vstack([p0, pts])
            if not depth:
                trunk = pts
            half = len(pts) // 2
            creeks.append(LineString(pts[: half + 1]).buffer(width / 2, 4))
            creeks.append(LineString(pts[half:]).buffer(width / 4, 4))
    return unary_union(creeks) if creeks else Polygon()


def _canals(rng, w, h, m, ys, xs, river: LineString) -> BaseGeometry:
    """Straight irrigation canals, 4-8 m wide, across the farmland (linear water, not ponds)."""
    lines = []
    for _ in range(int(rng.integers(2, 5))):
        y = rng.uniform(0.1, 0.9) * h
        x_end = float(np.interp(y, ys, xs)) - rng.uniform(0.05, 0.2) * w
        angle = np.deg2rad(rng.normal(0, 6))
        x_start = rng.uniform(-m, 0.3 * w)
        length = max(x_end - x_start, 0.0)
        if length < 0.2 * w:
            continue
        lines.append(LineString([(x_start, y), (x_start + length * np.cos(angle), y + length * np.sin(angle))])
                     .buffer(rng.uniform(2.0, 4.0), 2, cap_style="flat"))
    return unary_union(lines) if lines else Polygon()


def _bulk_patches(rng, geoms, before, after, *, role, jitter=0.08, drift=0.03) -> list[Patch]:
    """:func:`make_patch` for many features at once (vectorised spectra)."""
    n = len(geoms)
    if n == 0:
        return []
    table = {k: np.asarray(v) for k, v in MATERIALS.items()}

    def spectra(mats):
        base = np.stack([table[m] for m in mats])
        bright = 1 + rng.normal(0, jitter, (n, 1))
        return np.clip(base * bright * (1 + rng.normal(0, jitter / 2, (n, 4))), 0.005, 0.95)

    sb = spectra(before)
    fresh = spectra(after)
    same = np.asarray(before) == np.asarray(after)
    sa = np.where(same[:, None], np.clip(sb * (1 + rng.normal(0, drift, (n, 4))), 0.005, 0.95), fresh)
    return [Patch(g, b, a, tuple(x.tolist()), tuple(y.tolist()), material_texture(a), role)
            for g, b, a, x, y in zip(geoms, before, after, sb, sa, strict=True)]


def _farmland(rng, world: Polygon, w: float, h: float, patches: list[Patch]) -> list[BaseGeometry]:
    """Farmland blocks (Voronoi cells) cut into strips and parcels; returns the block outlines."""
    spacing = float(np.clip(min(w, h) / 6.0, 250.0, 550.0))
    minx, miny, maxx, maxy = world.bounds
    gx = np.arange(minx, maxx + spacing, spacing)
    gy = np.arange(miny, maxy + spacing, spacing)
    pts = np.array([(x, y) for y in gy for x in gx]) + rng.uniform(-0.35, 0.35, (gx.size * gy.size, 2)) * spacing
    cells = shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=world)
    blocks = [c.intersection(world) for c in shapely.get_parts(cells)]
    blocks = [b for b in blocks if b.area > 100]
    farm_angle = rng.uniform(0, 180)
    before_mix = {"crop": 0.30, "young_crop": 0.15, "stubble": 0.22, "bare_soil": 0.18, "grass": 0.15}
    names = list(before_mix)
    probs = np.array(list(before_mix.values()))
    # after ~11 months: harvested (crop -> stubble/bare), greened (bare -> crop), or unchanged
    after_of = {
        "crop": (["crop", "stubble", "bare_soil", "young_crop"], [0.35, 0.35, 0.2, 0.1]),
        "young_crop": (["crop", "young_crop", "stubble"], [0.5, 0.3, 0.2]),
        "stubble": (["crop", "young_crop", "bare_soil", "stubble"], [0.35, 0.25, 0.2, 0.2]),
        "bare_soil": (["crop", "young_crop", "bare_soil"], [0.4, 0.3, 0.3]),
        "grass": (["grass", "crop", "bare_soil"], [0.7, 0.2, 0.1]),
    }
    parcels, before, after = [], [], []
    for block in blocks:
        c = block.centroid
        angle = farm_angle + rng.normal(0, 12)
        local = affinity.rotate(block, -angle, origin=c)
        bx0, by0, bx1, by1 = local.bounds
        dominant = names[rng.choice(len(names), p=probs)]
        x = bx0
        rects, mats = [], []
        while x < bx1:
            sw = rng.uniform(25, 75)
            y = by0
            while y < by1:
                pl = rng.uniform(70, 260)
                rects.append((x, y, min(x + sw, bx1), min(y + pl, by1)))
                mats.append(dominant if rng.random() < 0.7 else names[rng.choice(len(names), p=probs)])
                y += pl
            x += sw
        r = np.asarray(rects)
        parts = shapely.intersection(shapely.box(r[:, 0], r[:, 1], r[:, 2], r[:, 3]), local)
        keep = ~shapely.is_empty(parts) & (shapely.area(parts) >= 200)
        parts = shapely.buffer(parts[keep], -0.8, join_style="mitre")  # 1.6 m field ridges
        rad = np.deg2rad(angle)
        rot = np.array([[np.cos(rad), np.sin(rad)], [-np.sin(rad), np.cos(rad)]])
        parts = shapely.transform(parts, lambda xy, rot=rot, c=c: (xy - (c.x, c.y)) @ rot + (c.x, c.y))
        for geom, mat in zip(parts, np.asarray(mats)[keep], strict=True):
            if geom.is_empty:
                continue
            choices, p = after_of[str(mat)]
            parcels.append(geom)
            before.append(str(mat))
            after.append(str(rng.choice(choices, p=p)))
    patches.extend(_bulk_patches(rng, parcels, before, after, role="farmland"))
    return blocks


def build_landscape(rng: np.random.Generator, width_m: float, height_m: float, margin_m: float = 300.0) -> Landscape:
    """A deterministic coastal county landscape for one random generator state.

    Args:
        rng: the generator (consumed).
        width_m, height_m: county size (the first scene's extent), metres.
        margin_m: extra world around the county so shifted and resized scenes stay covered.
    """
    w, h, m = width_m, height_m, margin_m
    world = box(-m, -m, w + m, h + m)
    patches: list[Patch] = []
    ys, xs, mud_w = _coast(rng, w, h, m)
    coast_xy = np.column_stack([xs, ys])
    land = Polygon([(-m - 10, -m - 10), *coast_xy.tolist(), (-m - 10, h + m + 10)]).buffer(0)
    east = world.difference(land)

    # hills with forest in the west
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = rng.uniform(-0.05, 0.2) * w, rng.uniform(0.1, 0.9) * h
        forest = _blob(rng, cx, cy, min(w, h) * rng.uniform(0.06, 0.12), 5).intersection(world)
        patches.append(make_patch(forest, "forest", "forest", rng, role="forest"))

    blocks = _farmland(rng, world, w, h, patches)
    # flooded paddy at transplanting: whole irregular blocks of shallow water (distractor)
    land_blocks = [b for b in blocks if b.centroid.x < np.median(xs) - 0.15 * w]
    n_flood = max(2, round(len(land_blocks) * 0.03))
    for i in rng.choice(len(land_blocks), size=min(n_flood, len(land_blocks)), replace=False):
        before = "flooded_paddy" if rng.random() < 0.25 else "stubble"
        patches.append(make_patch(land_blocks[int(i)].buffer(-1.0), before, "flooded_paddy", rng, role="paddy"))

    # tidal mudflat and sea: the after date has a higher tide (narrower mudflat)
    patches.append(make_patch(east, "mudflat", "mudflat", rng, role="mudflat", jitter=0.04))
    creeks = _tidal_creeks(rng, h, ys, xs, mud_w)
    if not creeks.is_empty:
        patches.append(make_patch(creeks, "sea", "sea", rng, role="creek", jitter=0.05))
    for date, frac in (("before", 1.0), ("after", rng.uniform(0.45, 0.7))):
        sea_line = np.column_stack([xs + mud_w * frac, ys])
        sea = Polygon([(w + m + 10, -m - 10), *sea_line.tolist(), (w + m + 10, h + m + 10)]).buffer(0)
        mat = ("sea", None) if date == "before" else (None, "sea")
        patches.append(make_patch(sea.intersection(world), mat[0], mat[1], rng, role="sea", jitter=0.03))

    centre, river = _river(rng, w, h, m, ys, xs, mud_w)
    patches.append(make_patch(river, "river", "river", rng, role="river", jitter=0.05))
    canals = _canals(rng, w, h, m, ys, xs, centre)
    if not canals.is_empty:
        patches.append(make_patch(canals, "river", "river", rng, role="canal", jitter=0.08))

    # mangrove: a patchy band on the upper mudflat and along the estuary banks
    mg_w = np.clip(0.05 * w, 80.0, 400.0) * np.clip(0.45 + 0.8 * _noise1d(rng, ys, 0.3 * h, 40.0), 0.0, None)
    inner = np.column_stack([xs - 60, ys])
    outer = np.column_stack([xs + mg_w, ys])
    band = Polygon(np.vstack([inner, outer[::-1]])).buffer(0)
    estuary = centre.buffer(95).difference(river).intersection(box(np.median(xs) - 0.12 * w, -m, w + m, h + m))
    mangrove = unary_union([band, estuary]).intersection(world)
    patches.append(make_patch(mangrove, "mangrove", "mangrove", rng, role="mangrove"))

    # villages: settlements on land away from river and coast, houses with varied roofs
    n_vill = int(rng.integers(6, 13))
    villages: list[Village] = []
    min_gap = min(w, h) / (np.sqrt(n_vill) + 1.0)
    radius = float(np.clip(min(w, h) * 0.025, 60.0, 220.0))
    tries = 0
    while len(villages) < n_vill and tries < 5000:
        tries += 1
        cx, cy = rng.uniform(0.04, 0.96) * w, rng.uniform(0.04, 0.96) * h
        if cx > np.interp(cy, ys, xs) - 2.5 * radius or centre.distance(Point(cx, cy)) < radius * 1.6:
            continue
        gap = min_gap if tries < 3000 else min_gap * 0.6
        if any(np.hypot(cx - v.centre_xy_m[0], cy - v.centre_xy_m[1]) < gap for v in villages):
            continue
        villages.append(Village((float(cx), float(cy)), _village_outline(rng, cx, cy, radius)))
    for v in villages:
        patches.append(make_patch(v.outline, "built", "built", rng, role="village"))
        _houses(rng, v, patches)

    # roads: a wiggly main road north-south, village connectors
    mx = rng.uniform(0.25, 0.45) * w
    ry2 = np.linspace(-m - 20, h + m + 20, 60)
    main = LineString(np.column_stack([mx + 0.03 * w * _noise1d(rng, ry2, h, 0.1 * h), ry2]))
    roads = [main.buffer(rng.uniform(5, 7), 4, cap_style="flat")]
    for v in villages:
        p = Point(v.centre_xy_m)
        q = main.interpolate(main.project(p))
        roads.append(LineString([p, q]).buffer(rng.uniform(3, 4), 4))
    road = unary_union(roads)
    patches.append(make_patch(road, "road", "road", rng, role="road", jitter=0.05))

    zone_w = float(np.clip(0.35 * w, 700.0, 3500.0))
    inner_zone = Polygon(np.vstack([np.column_stack([xs - zone_w, ys]), coast_xy[::-1]])).buffer(0)
    pond_zone = unary_union([inner_zone, centre.buffer(min(600.0, 0.15 * w)).intersection(land)])
    no_ponds = unary_union([river.buffer(35), road.buffer(18), canals.buffer(15)]
                           + [v.outline.buffer(50) for v in villages])
    return Landscape(w, h, m, tuple(patches), tuple(villages), land, pond_zone, no_ponds, coast_xy)


def _village_outline(rng: np.random.Generator, cx: float, cy: float, radius: float) -> BaseGeometry:
    """An irregular settlement stretched along a street: circles of varied size along a line."""
    size = radius * rng.uniform(0.6, 1.4)
    length = size * rng.uniform(1.0, 4.0)
    a = rng.uniform(0, np.pi)
    parts = []
    for t in np.linspace(-0.5, 0.5, int(rng.integers(3, 7))):
        px = cx + t * length * np.cos(a) + rng.normal(0, 0.2 * size)
        py = cy + t * length * np.sin(a) + rng.normal(0, 0.2 * size)
        parts.append(Point(px, py).buffer(size * rng.uniform(0.35, 0.75), 12))
    return unary_union(parts).buffer(8, 4).buffer(-8, 4)


def _houses(rng: np.random.Generator, village: Village, patches: list[Patch]) -> None:
    """Rows of houses (varied roofs) and a few trees inside a village outline."""
    outline = village.outline
    cx, cy = village.centre_xy_m
    angle = rng.uniform(0, 90)
    x0, y0, x1, y1 = affinity.rotate(outline, -angle, origin=(cx, cy)).bounds
    roofs = ["roof_grey", "roof_red", "roof_blue"]
    houses = []
    y = y0
    while y < y1:
        hh = rng.uniform(9, 15)
        x = x0
        while x < x1:
            hw = rng.uniform(8, 16)
            if rng.random() < 0.8:
                houses.append(box(x, y, x + hw, y + hh))
            x += hw + rng.uniform(3, 8)
        y += hh + rng.uniform(4, 9)
    if not houses:
        return
    arr = shapely.affinity.rotate(shapely.GeometryCollection(houses), angle, origin=(cx, cy))
    inside = [g for g in shapely.get_parts(arr) if outline.contains(g.centroid)]
    for g in inside:
        mat = roofs[rng.choice(3, p=[0.5, 0.3, 0.2])]
        patches.append(make_patch(g, mat, mat, rng, role="house", jitter=0.1, drift=0.01))
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(15, 40)
        p = outline.representative_point()
        tree = Point(p.x + rng.normal(0, 40), p.y + rng.normal(0, 40)).buffer(r, 8).intersection(outline)
        if not tree.is_empty:
            patches.append(make_patch(tree, "forest", "forest", rng, role="trees"))
