"""Cloud shadows by geometry (:mod:`tuban.pipelines.change_shadow`), saturated mud floors and
the pixel-staircase-corrected rectangularity of ponds.

Unit tests of the displacement fit and the shadow zone, and a small 10 m scene in which a cloud
casts its shadow over an algae pond dug under it (nothing may be reported there) while another
algae pond, 1 km from the cloud but not in its shadow, is a new pond (the previous rule masked
every darkening within 3 km of any cloud).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from tuban.pipelines.change_patches import LostFloor
from tuban.pipelines.change_shadow import SHADOW_SIZE_RATIO, shadow_zone

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402


def _cloud_and_shadow(shape, cloud_box, shift):
    cloud = np.zeros(shape, bool)
    r0, c0, r1, c1 = cloud_box
    cloud[r0:r1, c0:c1] = True
    dark = np.zeros(shape, bool)
    dy, dx = shift
    dark[max(0, r0 + dy):r1 + dy, max(0, c0 + dx):c1 + dx] = True
    return cloud, dark & ~cloud


@settings(max_examples=25, deadline=None)
@given(angle=st.floats(0, 2 * np.pi), dist=st.floats(25, 90))
def test_displacement_recovered_in_any_direction(angle, dist):
    dx, dy = int(round(dist * np.cos(angle))), int(round(dist * np.sin(angle)))
    cloud, dark = _cloud_and_shadow((240, 240), (100, 100, 130, 140), (dy, dx))
    dark[10:25, 10:25] |= ~cloud[10:25, 10:25]  # an unrelated darkened field
    zone, fit = shadow_zone(cloud, dark, 120.0)
    assert fit.found
    assert abs(fit.shift_px[0] - dx) <= 2 and abs(fit.shift_px[1] - dy) <= 2
    assert zone[dark & ~cloud & (np.arange(240)[:, None] > 30)].mean() > 0.99  # the shadow is in the zone
    assert not zone[15:20, 15:20].any() or np.hypot(dx, dy) > 100  # the field is not


def test_clouds_at_two_heights_cast_shadows_at_two_distances():
    cloud = np.zeros((400, 400), bool)
    dark = np.zeros_like(cloud)
    cloud[40:70, 40:80] = True
    dark[40 + 30:70 + 30, 40 + 40:80 + 40] = True  # low cloud: shadow 50 px away
    cloud[200:220, 200:260] = True
    dark[200 + 60:220 + 60, 200 + 80:260 + 80] = True  # high cloud, same direction: 100 px
    dark &= ~cloud
    zone, fit = shadow_zone(cloud, dark, 150.0)
    assert fit.found
    assert zone[dark].mean() > 0.97
    assert zone.sum() < 4 * dark.sum()


def test_no_displacement_keeps_darkening_no_larger_than_the_clouds():
    cloud = np.zeros((200, 200), bool)
    cloud[20:26, 20:26] = True  # a few bright roofs taken for a cloud
    cloud[150:155, 150:156] = True
    dark = np.zeros_like(cloud)
    dark[60:100, 60:110] = True  # a dark algae pond, far larger than any "cloud"
    dark[30:34, 40:44] = True  # a small darkening that could be their shadow
    zone, fit = shadow_zone(cloud, dark, 300.0)
    assert not fit.found
    assert not zone[60:100, 60:110].any()
    assert zone[30:34, 40:44].all()
    assert 2000 > SHADOW_SIZE_RATIO * 36


def test_cloud_cut_by_the_grid_edge_masks_all_darkening_within_reach():
    cloud = np.zeros((200, 200), bool)
    cloud[0:6, 20:26] = True  # its size beyond the edge is unknown
    dark = np.zeros_like(cloud)
    dark[60:100, 60:110] = True
    zone, _ = shadow_zone(cloud, dark, 300.0)
    assert zone[60:100, 60:110].all()


def test_saturated_floor_near_land_brightness_is_mud_but_bright_fill_is_not():
    # index at the weak-water level, floor as bright as land and its dikes: drained mud
    assert LostFloor(level=1.05, frame_level=1.02, wetness=0.35, mud_wetness=0.15).is_mud()
    # as wet, but clearly brighter than the land median: fill
    assert not LostFloor(level=1.2, frame_level=1.0, wetness=0.35, mud_wetness=0.15).is_mud()
    # below the weak-water level and as bright as land: fill (unchanged rule)
    assert not LostFloor(level=1.05, frame_level=1.02, wetness=0.25, mud_wetness=0.15).is_mud()


# --- a 10 m scene -------------------------------------------------------------------------

CLOUD = (20, 150, 60, 200)  # rows, cols (end exclusive)
SHIFT = (60, -40)  # the shadow: 60 rows down, 40 columns left
AWAY = (170, 40, 182, 56)  # an algae pond ~1.5 km from the cloud, outside its shadow
KEPT = [(40, 20, 52, 36), (40, 60, 52, 76), (200, 120, 212, 136), (200, 200, 212, 216)]  # clear, both dates


def _scene(tmp_path):
    from tuban.pipelines.change import run_change

    before = cs.field_background(7)
    for r0, c0, r1, c1 in KEPT:  # open water, so that the algae pond is weak water
        before[:, r0 - 1:r1 + 1, c0 - 1:c1 + 1] = np.array(cs.SPECTRA["dike"])[:, None, None]
        before[:, r0:r1, c0:c1] = np.array(cs.SPECTRA["water"])[:, None, None]
    after = before.copy()
    r0, c0, r1, c1 = AWAY
    after[:, r0 - 1:r1 + 1, c0 - 1:c1 + 1] = np.array(cs.SPECTRA["dike"])[:, None, None]
    after[:, r0:r1, c0:c1] = np.array(cs.SPECTRA["algae"])[:, None, None]
    rng = np.random.default_rng(3)
    before *= rng.normal(1.0, 0.02, before.shape).astype(np.float32)
    after *= rng.normal(1.0, 0.02, after.shape).astype(np.float32)
    r0, c0, r1, c1 = CLOUD
    dy, dx = SHIFT
    after[:, r0 + dy:r1 + dy, c0 + dx:c1 + dx] *= 0.45  # the shadow
    after[:, r0:r1, c0:c1] = np.array(cs.SPECTRA["cloud"])[:, None, None]
    b = cs.write(tmp_path / "before.tif", before, date="2024-05-01")
    a = cs.write(tmp_path / "after.tif", after, date="2025-06-02")
    return run_change([b], [a])


def _box_map(b):
    r0, c0, r1, c1 = b
    x0, y0 = cs.TRANSFORM * (c0, r1)
    x1, y1 = cs.TRANSFORM * (c1, r0)
    return box(x0, y0, x1, y1)


def test_algae_pond_away_from_the_shadow_is_found_and_the_shadow_masked(tmp_path):
    result = _scene(tmp_path)
    patches = result.patches.to_crs(cs.CRS)
    away = _box_map(AWAY)
    found = [(g, k) for g, k in zip(patches.geometry, patches["kind"], strict=True)
             if g.intersection(away).area / g.union(away).area > 0.5]
    assert [k for _, k in found] == ["new_pond"]  # the previous rule masked it (1.5 km < 3 km)
    r0, c0, r1, c1 = CLOUD
    dy, dx = SHIFT
    shadow = _box_map((r0 + dy, c0 + dx, r1 + dy, c1 + dx))
    assert not any(g.intersects(shadow) for g in patches.geometry)
    # the cloud and its darkened shadow are masked (the shadow's overlap with the cloud counted once)
    cloud_px = (r1 - r0) * (c1 - c0)
    shadow_px = cloud_px - (r1 - (r0 + dy)) * (c1 + dx - c0) if r1 > r0 + dy else cloud_px
    assert result.stats["pixels"]["masked"] >= 0.9 * (cloud_px + shadow_px)
    assert result.stats["pixels"]["masked"] <= 1.6 * (cloud_px + shadow_px)


def _pixelated(poly, pixel_m=10.0):
    """The polygon as a 10 m pixel mask polygonised back (what the change raster gives)."""
    import rasterio.features
    from affine import Affine
    from shapely.geometry import shape

    x0, y0, x1, y1 = poly.bounds
    t = Affine(pixel_m, 0, x0 - pixel_m, 0, -pixel_m, y1 + pixel_m)
    w, h = int((x1 - x0) / pixel_m) + 3, int((y1 - y0) / pixel_m) + 3
    mask = rasterio.features.rasterize([poly], out_shape=(h, w), transform=t).astype(np.uint8)
    parts = [shape(g) for g, v in rasterio.features.shapes(mask, mask=mask > 0, transform=t) if v == 1]
    return max(parts, key=lambda p: p.area)


def test_true_rectangularity_keeps_small_rotated_ponds_and_rejects_large_irregular_fields():
    from shapely import affinity
    from shapely.geometry import Polygon

    from tuban.imagery.ponds import shape_stats
    from tuban.pipelines.change_frame import MIN_TRUE_RECTANGULARITY, true_rectangularity

    def true_rect(poly):
        s = shape_stats(_pixelated(poly), 10.0)
        return s.rectangularity, true_rectangularity(s.rectangularity, s.side_min_m, s.side_max_m, 10.0)

    for angle in (0, 20, 35, 45):  # 60 x 50 m ponds, rotated: pixelation costs up to ~30 %
        raw, true = true_rect(affinity.rotate(box(0, 0, 60, 50), angle))
        assert true > MIN_TRUE_RECTANGULARITY
    # a 4 ha flooded paddy block with skewed field boundaries
    field = Polygon([(0, 0), (300, 0), (200, 200), (60, 180)])
    raw, true = true_rect(field)
    assert raw > 0.65  # it passed the raw rectangularity test
    assert true < MIN_TRUE_RECTANGULARITY
