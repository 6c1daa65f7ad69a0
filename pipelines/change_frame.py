"""Per-pond decisions inside a dike frame: the whole framed body at once, not pixel by pixel.

Algae-rich and turbid ponds sit right at the scene's weak-water thresholds (their index is
weak, their darkness borderline), so their changed pixels come out as speckle and a pond is
only partly coded as changed, or its 1-px outline is hardly drier (by index) than its inside.
A pond is still plain to see as a whole: a dark, index-raised body inside a bright dry dike
ring. Two helpers decide at the level of the body:

* :func:`frame_brightness_step`: how much brighter the outline of a gained part is than its
  inside on the after date (in units of the scene's land-to-dark-water brightness gap), a
  second way of being *framed* next to the index step (dikes are bright bare earth; a
  fragment of a uniformly flooded field has no brighter rim);
* :func:`framed_body`: from a changed fragment, the body it belongs to: the connected pixels
  whose index moved the same way beyond the change margin and lies on the wet side of the
  weak-water level (no per-pixel darkness test), never through masked pixels or water of both
  dates; the body is then judged as one pond (shape, frame, solidity) by the caller. Several
  fragments of one body find the same body: each reports it and the repeats are dropped once
  on all records (:mod:`tuban.pipelines.change_fragments`), so a pond is reported once
  whichever worker examines which fragment.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rasterio.features import rasterize, shapes
from rasterio.windows import transform as window_transform
from scipy import ndimage
from shapely.geometry import shape

from tuban.pipelines.change_blob_ops import CROSS, bounds_window, dilate4, median32
from tuban.pipelines.change_blocks import CODE, LAND_LEVEL, dark_level_q, dequantise_index
from tuban.pipelines.change_fragments import BODY_PIXEL_SHARE, block_solidity, same_water

__all__ = ["BODY_MIN_SOLIDITY", "MIN_TRUE_RECTANGULARITY", "before_wetness", "true_rectangularity", "drop_duplicate_bodies", "frame_brightness_step", "framed_body", "framed_parts", "outer_ring"]

#: Share of a framed body a 3x3 opening must keep (the direct pond test asks 0.6): a body is
#: decided without per-pixel water evidence, so it must be a solid dug block.
BODY_MIN_SOLIDITY = 0.8


#: A pond is more rectangular than the ellipse inscribed in its bounding rectangle (pi / 4),
#: once the pixel staircase is taken out of the rectangle (:func:`true_rectangularity`).
MIN_TRUE_RECTANGULARITY = float(np.pi / 4.0)


def true_rectangularity(rectangularity: float, side_min_m: float, side_max_m: float,
                        pixel_size_m: float) -> float:
    """Rectangularity with the pixel staircase taken out of the bounding rectangle.

    The minimum rotated rectangle of a pixelated outline is about one pixel longer and wider
    than the shape itself, so a small rotated pond scores ~0.7 while a large irregular field
    scores the same for its shape alone. Shrinking the rectangle by one pixel in each direction
    removes that bias (capped at 1): small pixelated ponds come out near 1, large flooded paddy
    fields keep their irregularity.

    Example:
        >>> round(true_rectangularity(0.72, 60.0, 60.0, 10.0), 2), round(true_rectangularity(0.72, 240.0, 240.0, 10.0), 2)
        (1.0, 0.78)
    """
    a, b = side_min_m - pixel_size_m, side_max_m - pixel_size_m
    if a <= 0 or b <= 0:
        return 1.0
    return float(min(1.0, rectangularity * side_min_m * side_max_m / (a * b)))


def outer_ring(inside: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The part's outer 1-px ring (4-connected), sibling parts of the same blob left out."""
    return dilate4(inside) & ~inside & (labels == 0)


def frame_brightness_step(inside: np.ndarray, labels: np.ndarray, bright: np.ndarray,
                          dark_level: float, ring: np.ndarray | None = None) -> float:
    """How much brighter the part's outer 1-px ring is than its inside, scene-relative.

    Args:
        inside: the part's pixels.
        labels: all parts of the blob (sibling parts are left out of the ring).
        bright: brightness layer of the date the part holds water (land median = 63.5).
        dark_level: the scene's dark-water brightness level in the same units.
        ring: the part's outer 1-px ring without sibling parts, when the caller already has
            it (the same pixels this function would compute).

    Returns:
        (median ring brightness - median inside brightness) / (land median - dark level); 0 when
        there is no ring or the scene has no gap.

    Example:
        >>> b = np.full((7, 7), 63.5, np.float32); b[2:5, 2:5] = 30.0
        >>> inside = b < 40
        >>> round(frame_brightness_step(inside, inside.astype(int), b, 41.3), 2)
        1.51
    """
    gap = LAND_LEVEL - dark_level
    if ring is None:
        ring = outer_ring(inside, labels)
    if gap <= 0 or not ring.any() or not inside.any():
        return 0.0
    return float(_median(bright[ring]) - _median(bright[inside])) / gap


def _median(values: np.ndarray):
    """``np.median`` bit for bit (:func:`median32` for float32 values without NaN)."""
    if values.dtype == np.float32 and not np.isnan(values).any():
        return median32(values)
    return np.median(values)


def before_wetness(index_before: np.ndarray, thresholds, median=None) -> float:
    """Median before-date index of a gained part, from the land median (0) to weak water (1).

    Above 1 the part already held weak water (algae, turbid) or wet mud before: a pond that
    changed colour or was refilled, not a new pond.

    Example:
        >>> from types import SimpleNamespace
        >>> t = SimpleNamespace(land_mean=-0.4, weak_water=-0.1)
        >>> round(before_wetness(np.array([-0.25, -0.25, np.nan]), t), 2)
        0.5

    ``median``: :func:`median32` of the finite values (not empty), when already taken.
    """
    span = thresholds.weak_water - thresholds.land_mean
    if median is None:
        vals = index_before[np.isfinite(index_before)]
        if vals.size == 0 or span <= 0:
            return 0.0
        median = median32(vals)
    elif span <= 0:
        return 0.0
    return float(median - thresholds.land_mean) / span


def framed_body(seed: np.ndarray, wet_index: np.ndarray, dry_index: np.ndarray, codes: np.ndarray,
                weak_water: float, change: float, masked_code: int, water_code: int,
                dark: np.ndarray | None = None) -> np.ndarray | None:
    """The body a changed fragment belongs to, grown without the per-pixel darkness test.

    A pixel joins when, on the date the body holds water, its index lies above the scene's
    weak-water level, its index moved from the other date by more than the change margin,
    and it is neither masked nor water on both dates; only pixels 4-connected to ``seed``.

    Args:
        seed: the fragment's pixels (a bool window).
        wet_index: water index on the date the body holds water (after for gains).
        dry_index: water index on the other date.
        codes: change codes of the window.
        weak_water, change: the scene's weak-water level and change margin.
        masked_code, water_code: the codes of masked pixels and of water on both dates.
        dark: where the wet date is dark enough for water (when its brightness is known); a
            dike mixed into a pixel is brighter, so growth stops at the dikes.

    Returns:
        The body (bool window), or None when it touches the window edge (larger than the
        window: not a pond-sized body) or adds nothing to the seed.

    Example:
        >>> wet = np.full((8, 8), -0.5, np.float32); wet[2:6, 2:6] = 0.0
        >>> seed = np.zeros((8, 8), bool); seed[3, 3] = True
        >>> body = framed_body(seed, wet, np.full((8, 8), -0.5, np.float32), np.zeros((8, 8), np.uint8),
        ...                    -0.2, 0.1, 4, 1)
        >>> int(body.sum())
        16
    """
    with np.errstate(invalid="ignore"):
        grow = (wet_index > weak_water) & (wet_index - dry_index > change)
    grow &= (codes != masked_code) & (codes != water_code)
    if dark is not None:
        grow &= dark
    grow |= seed
    lab, _ = ndimage.label(grow, structure=CROSS)
    ids = np.unique(lab[seed])
    body = np.isin(lab, ids[ids > 0])
    if body.sum() <= seed.sum():
        return None
    if body[0].any() or body[-1].any() or body[:, 0].any() or body[:, -1].any():
        return None
    return body


def framed_parts(geom, value: int, stack, grid, thresholds,
                 examine: Callable[[object], list], is_pond: Callable[[tuple], bool],
                 max_side_px: int) -> list | None:
    """The examined parts of the framed body a non-pond fragment belongs to, decided as one pond.

    Args:
        geom: the fragment (blob polygon, grid CRS).
        value: its change code (new or lost water).
        stack: the result stack (codes, index before, index after, ...).
        grid: the comparison grid.
        thresholds: the scene's :class:`~tuban.imagery.water.WaterThresholds`.
        examine: examines a body polygon as a whole, returning its parts.
        is_pond: whether an examined part is a pond.
        max_side_px: how far around the fragment the body may extend (the largest pond side).

    Returns:
        None to keep the fragment's own parts (no larger body, or the body is no pond), else
        the body's parts (flagged ``framed_body``; repeats of one body by several fragments are
        dropped later, :func:`tuban.pipelines.change_fragments.drop_repeated_bodies`).
    """
    win = bounds_window(geom.bounds, grid, max_side_px)
    wt = window_transform(win, grid.transform)
    rs, cs = slice(win.row_off, win.row_off + win.height), slice(win.col_off, win.col_off + win.width)
    codes = np.asarray(stack[0, rs, cs])
    ib, ia = dequantise_index(np.asarray(stack[1, rs, cs])), dequantise_index(np.asarray(stack[2, rs, cs]))
    bright_after = np.asarray(stack[3, rs, cs]).astype(np.float32)
    seed = rasterize([(geom, 1)], out_shape=codes.shape, transform=wt, fill=0, dtype="uint8").astype(bool)
    seed &= codes == value
    if not seed.any():
        return None
    t = thresholds
    gain = value == CODE["new_water"]
    # Half-way from the dark-water level to the land median: darker than that is water-dark.
    dark_mid = 0.5 * (dark_level_q(t) + LAND_LEVEL)
    wet, dry = (ia, ib) if gain else (ib, ia)
    allow = same_water(seed, wet, t.change)  # not across a dike into clearer water
    # Pixel by pixel half the change margin, the body as a whole (its median) the full margin.
    body = framed_body(seed, wet, dry, codes, t.weak_water, BODY_PIXEL_SHARE * t.change,
                       CODE["masked"], CODE["water"], dark=(allow & (bright_after < dark_mid)) if gain else allow)
    if body is None or not np.nanmedian(wet[body] - dry[body]) > t.change:
        return None
    # The body as a whole must have changed state: land on its dry date by the median index
    # (a gain), resp. not still dark weak water after (a loss: algae or turbid water that
    # only changed colour).
    if gain and not np.nanmedian(ib[body]) < t.weak_water:
        return None
    if not gain and (np.nanmedian(ia[body]) > t.weak_water and np.median(bright_after[body]) < dark_mid):
        return None
    polys = [shape(g) for g, v in shapes(body.astype(np.uint8), mask=body, transform=wt) if v == 1]
    if len(polys) != 1:
        return None
    # A body decided without per-pixel water evidence must be a solid dug block: ponds the
    # same way but less solid (ragged margins of natural water) are left out.
    parts = [p for p in examine(polys[0]) if not is_pond(p) or p[4] >= BODY_MIN_SOLIDITY
             or p[4] >= BODY_MIN_SOLIDITY * block_solidity(p[0], wt, codes.shape)]  # staircase corners
    if not any(is_pond(p) for p in parts):
        return None
    for p in parts:
        p[-1]["framed_body"] = True
    return parts


def drop_duplicate_bodies(records: list[dict], key: str = "framed_body", max_overlap: float = 0.25) -> list[dict]:
    """Records without the framed bodies that repeat a pond found directly.

    A body grown from a fragment can reach, across a dike blurred into one pixel, a neighbour
    that was already found as a pond on its own; the direct pond wins. A body record (``key``
    true) is dropped when it covers more than ``max_overlap`` of, or is covered that much by,
    a pond-kind record that is not a body. Runs once on all records, so the result does not
    depend on which worker examined which blob.

    Example:
        >>> from shapely.geometry import box
        >>> recs = [{"kind": "new_pond", "geometry": box(0, 0, 10, 10)},
        ...         {"kind": "new_pond", "geometry": box(0, 0, 20, 10), "framed_body": True}]
        >>> len(drop_duplicate_bodies(recs))
        1
    """
    import shapely

    if not any(r.get(key) for r in records):  # no body (tested first: it is the cheaper test)
        return records
    direct = [r["geometry"] for r in records if not r.get(key) and r["kind"].endswith("_pond")]
    if not direct:
        return records
    tree = shapely.STRtree(direct)
    out = []
    for r in records:
        if r.get(key):
            g = r["geometry"]
            hits = [direct[i] for i in tree.query(g, predicate="intersects")]
            if any(g.intersection(h).area > max_overlap * min(g.area, h.area) for h in hits):
                continue
        out.append(r)
    return out
