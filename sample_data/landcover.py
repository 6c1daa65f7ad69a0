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
from tuban.sample_data.radiometry import feature_spectrum, material_texture

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
    if after and after == before and sb is not None:
        sa = tuple(float(v) for v in np.clip(np.asarray(sb) * (1 + rng.normal(0, drift, 4)), 0.005, 0.95))
    else:
        sa = feature_spectrum(after, rng, jitter) if after else None
    return Patch(geom, before, after, sb, sa, material_texture(after or before or "grass"), role)


def _coast_x(y: np.ndarray, width_m: float, height_m: float, rng_params: np.ndarray) -> np.ndarray:
    c0, a1, l1, p1, a2, l2, p2 = rng_params
    return width_m * c0 + a1 * np.sin(2 * np.pi * y / l1 + p1) + a2 * np.sin(2 * np.pi * y / l2 + p2)


def _blob(rng: np.random.Generator, cx: float, cy: float, radius_m: float, n: int) -> BaseGeometry:
    pts = [Point(cx, cy).buffer(radius_m * rng.uniform(0.6, 1.0), 16)]
    for _ in range(n - 1):
        a, r = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.9) * radius_m
        pts.append(Point(cx + r * np.cos(a), cy + r * np.sin(a)).buffer(radius_m * rng.uniform(0.35, 0.7), 16))
    return unary_union(pts)


def _coast(rng, w, h, m):
    params = np.array([rng.uniform(0.80, 0.88), 0.03 * w, rng.uniform(0.8, 1.4) * h, rng.uniform(0, 6.3),
                       0.012 * w, rng.uniform(0.2, 0.35) * h, rng.uniform(0, 6.3)])
    ys = np.linspace(-m, h + m, int((h + 2 * m) / 20) + 2)
    xs = _coast_x(ys, w, h, params)
    mud_w = np.clip(0.07 * w, 120.0, 700.0) * (1 + 0.3 * np.sin(2 * np.pi * ys / (0.5 * h) + rng.uniform(0, 6.3)))
    return ys, xs, mud_w


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
    for block in blocks:
        c = block.centroid
        angle = farm_angle + rng.normal(0, 12)
        local = affinity.rotate(block, -angle, origin=c)
        bx0, by0, bx1, by1 = local.bounds
        dominant = names[rng.choice(len(names), p=probs)]
        x = bx0
        geoms, mats = [], []
        while x < bx1:
            sw = rng.uniform(25, 75)
            y = by0
            while y < by1:
                pl = rng.uniform(70, 260)
                geoms.append(box(x, y, min(x + sw, bx1), min(y + pl, by1)))
                mats.append(dominant if rng.random() < 0.6 else names[rng.choice(len(names), p=probs)])
                y += pl
            x += sw
        parts = shapely.intersection(np.array(geoms, dtype=object), local)
        for geom, mat in zip(parts, mats, strict=True):
            if geom.is_empty or geom.area < 200:
                continue
            parcel = affinity.rotate(geom.buffer(-0.8, join_style="mitre"), angle, origin=c)  # 1.6 m field ridges
            if parcel.is_empty:
                continue
            choices, p = after_of[mat]
            patches.append(make_patch(parcel, mat, str(rng.choice(choices, p=p)), rng, role="farmland"))
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
    for date, frac in (("before", 1.0), ("after", rng.uniform(0.45, 0.7))):
        sea_line = np.column_stack([xs + mud_w * frac, ys])
        sea = Polygon([(w + m + 10, -m - 10), *sea_line.tolist(), (w + m + 10, h + m + 10)]).buffer(0)
        mat = ("sea", None) if date == "before" else (None, "sea")
        patches.append(make_patch(sea.intersection(world), mat[0], mat[1], rng, role="sea", jitter=0.03))

    # a meandering river from the west edge into the estuary
    y0, y1 = rng.uniform(0.3, 0.7) * h, rng.uniform(0.35, 0.65) * h
    rx = np.linspace(-m - 50, np.interp(y1, ys, xs) + np.interp(y1, ys, mud_w) * 1.2, 300)
    t = (rx - rx[0]) / (rx[-1] - rx[0])
    amp, lam = rng.uniform(0.02, 0.05) * h, rng.uniform(0.15, 0.3) * w
    ry = y0 + (y1 - y0) * t + amp * np.sin(2 * np.pi * rx / lam + rng.uniform(0, 6.3)) \
        + 0.4 * amp * np.sin(2 * np.pi * rx / (0.37 * lam) + rng.uniform(0, 6.3))
    centre = LineString(np.column_stack([rx, ry]))
    n_seg = 4
    river = unary_union([
        LineString(np.column_stack([rx, ry])[k * 75: (k + 1) * 75 + 1]).buffer(rng.uniform(16, 22) + 8 * k, 8)
        for k in range(n_seg)
    ])
    patches.append(make_patch(river, "river", "river", rng, role="river", jitter=0.05))

    # mangrove: a patchy band on the upper mudflat and along the estuary banks
    mg_w = np.clip(0.05 * w, 80.0, 400.0) * np.clip(
        0.35 + 0.9 * np.sin(2 * np.pi * ys / (0.23 * h) + rng.uniform(0, 6.3)), 0.0, None)
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
        villages.append(Village((float(cx), float(cy)), _blob(rng, cx, cy, radius, int(rng.integers(3, 6)))))
    for v in villages:
        patches.append(make_patch(v.outline, "built", "built", rng, role="village"))
        _houses(rng, v, patches)

    # roads: a wiggly main road north-south, village connectors
    mx = rng.uniform(0.25, 0.45) * w
    ry2 = np.linspace(-m - 20, h + m + 20, 60)
    main = LineString(np.column_stack([mx + 0.03 * w * np.sin(2 * np.pi * ry2 / h + rng.uniform(0, 6.3)), ry2]))
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
    no_ponds = unary_union([river.buffer(35), road.buffer(18)] + [v.outline.buffer(50) for v in villages])
    return Landscape(w, h, m, tuple(patches), tuple(villages), land, pond_zone, no_ponds, coast_xy)


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
