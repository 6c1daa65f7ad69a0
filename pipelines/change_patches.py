"""From the whole-grid change codes to classified patches (one polygon per pond).

Changed blobs are found on the whole-grid code raster (no block seams), strip by strip, and
polygonised chunk by chunk (:mod:`tuban.pipelines.change_blobs`); chunks are examined in the
job's worker processes when there are several (:mod:`tuban.pipelines.change_pool`). Each blob is
examined in a small window of the result stack:

* blobs of several ponds merged through blurred dikes are split at the dikes (one-pixel index
  valleys, else the blob's high-index cores; pixels assigned to the nearest core);
* shape measures decide pond-like vs. free water (:mod:`tuban.imagery.ponds`), and a pond must
  be framed: its outline drier than its inside and mostly not water (speckle of flooded fields
  has no frame);
* a blob with no pond part may be a fragment of an algae or turbid pond: the framed body it
  belongs to is decided as one pond (:mod:`tuban.pipelines.change_frame`);
* a gain that was already weak water or wet mud before is a colour change or refill;
* a lost blob still as dark as water after is a colour change, not a loss, and is dropped;
  slivers under 1.5 px mean width are dropped;
* a lost pond is *drained* when its floor is wet mud (darker than its own dike frame and wetter
  than land, :class:`LostFloor`), else *removed* (filled in, or grown over);
* the score (0-1) mixes change contrast and pond-likeness.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize, shapes
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import shape

from tuban.imagery.crs import WGS84
from tuban.imagery.ponds import (
    ShapeSettings,
    ShapeStats,
    is_pond_like,
    shape_score,
    shape_stats,
    shape_stats_many,
)
from tuban.pipelines.change_blob_ops import (
    CROSS,
    bounds_window,
    bounds_windows,
    dilate4,
    erode4,
    median32,
    nanmean32,
    window_affine,
)
from tuban.pipelines.change_blobs import Blob, blob_mask, blob_polygons, find_blobs
from tuban.pipelines.change_blocks import CODE, LAND_LEVEL, BlockJob, dark_level_q, dequantise_index
from tuban.pipelines.change_chunk import ChunkRecords, chunk_measures
from tuban.pipelines.change_fields import brightness_texture, demote_flooded_fields
from tuban.pipelines.change_fragments import (
    drop_repeated_bodies,
    every_part_above_its_seams,
    seams,
    split_parts_again,
)
from tuban.pipelines.change_frame import (
    MIN_TRUE_RECTANGULARITY,
    before_wetness,
    drop_duplicate_bodies,
    frame_brightness_step,
    framed_parts,
    outer_ring,
    true_rectangularity,
)
from tuban.pipelines.change_pool import StackFile, portable, results
from tuban.pipelines.change_refill import demote_refills, is_refill_candidate
from tuban.pipelines.change_table import patch_id, patch_table

__all__ = ["patches_from_codes", "patch_id", "split_blob"]

# rasterize() in worker processes warns about its own in-memory target (it has the transform we
# pass); the warning is spurious, so it is silenced for rasterio.features only.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.features")

#: Blobs examined together (one atlas of measures, one polygonising call, one task for a
#: worker): larger chunks spread the per-chunk calls over more ponds; the output does not depend
#: on it (every blob is measured on its own pixels, records keep the blobs' order).
CHUNK_BLOBS = 256

COLUMNS = ["patch_id", "kind", "score", "area_m2", "area_mu", "lon", "lat", "rectangularity",
           "compactness", "aspect", "solidity", "geometry"]


def split_blob(blob: np.ndarray, index: np.ndarray, min_px: int,
               accept: Callable[[np.ndarray], bool] | None = None, margin: float | None = None,
               ) -> np.ndarray:
    """Label array splitting a blob of merged ponds at its low-index seams (dikes).

    Candidate cores are tried in turn; the first whose components include two or more of at
    least ``min_px // 4`` pixels wins, and every blob pixel joins its nearest core:

    1. with ``margin``: pixels no more than ``margin`` below the blob's median index (a dike
       mixed into a pixel drops the index far more than noise does), not eroded, so one-pixel
       valleys between ponds at 10 m are enough;
    2. the blob's pixels above increasing index levels (all, lower quartile, median), eroded
       by one pixel.

    A split is only kept when ``accept(labels)`` agrees (e.g. every part is pond-shaped), so
    irregular water (tidal flats, floods) is never cut into fake ponds.
    Returns labels 1..n (0 outside), or the blob itself as label 1.

    Example:
        >>> idx = np.full((6, 9), 0.5, dtype=np.float32); idx[:, 4] = 0.0
        >>> int(split_blob(np.ones((6, 9), bool), idx, 8, margin=0.2).max())
        2
    """
    labels_out = blob.astype(np.int32)
    vals = index[blob & np.isfinite(index)]
    if vals.size < 2 * min_px:
        return labels_out
    tries: list[tuple[float, int]] = []
    if margin is not None and margin > 0:
        tries.append((float(np.median(vals)) - margin, 0))
    tries += [(level, 1) for level in (-np.inf, *np.quantile(vals, (0.25, 0.5)))]
    for level, erode in tries:
        cores = blob & (index > level)
        if erode:
            cores = ndimage.binary_erosion(cores, structure=CROSS, iterations=erode)
        lab, n = ndimage.label(cores, structure=CROSS)
        if n < 2:
            continue
        sizes = ndimage.sum(np.ones_like(lab), lab, index=np.arange(1, n + 1))
        big = np.flatnonzero(sizes >= max(2, min_px // 4)) + 1
        if len(big) < 2:
            continue
        markers = np.where(np.isin(lab, big), lab, 0)
        _, (ri, ci) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
        nearest = np.where(blob, markers[ri, ci], 0).astype(np.int32)
        if accept is None or accept(nearest):
            return nearest
    return labels_out


#: A pond is enclosed by its dikes: a part whose outline runs mostly along water that was there on
#: both dates is a piece of a larger water body (flooded paddy speckle, a lake margin), not a pond.
#: Half the outline allows a new pond merged with old neighbours on up to two sides.
MAX_OPEN_EDGE = 0.5
#: ... and its outline is drier than its inside (on the date it holds water) by at least half
#: the scene's change margin (which is >= 3 robust sigmas of the index noise).
MIN_FRAME_STEP = 0.5


#: A lost pond's floor brighter than the land median is still mud when it is this much darker
#: than its own dike frame (bright bare dikes around a mud floor).
MUD_FRAME_RATIO = 0.9


@dataclass(frozen=True)
class LostFloor:
    """What a lost pond's floor looks like on the after date (scene-relative units).

    Attributes:
        level: median after-date brightness of the floor / the scene's land median.
        frame_level: the same for the land ring 1-2 px around it (its dikes); NaN when the ring
            has fewer than 4 land pixels.
        wetness: (median after index - land median index) / (water mean - land mean index).
        mud_wetness: the wetness a mud floor must exceed: half-way from the land median to the
            scene's weak-water level.
    """

    level: float
    frame_level: float
    wetness: float
    mud_wetness: float

    def is_mud(self) -> bool:
        """A drained floor is wet mud: darker than the scene's dry land (its median), or
        clearly darker than its own dike frame (by :data:`MUD_FRAME_RATIO`), and wetter than
        land. Fill and bare soil are brighter than the land median, and only a little darker
        than dikes at best (grassy dikes are darker than bare ones); a floor under grass or
        young crops is dark but drier than land. A floor whose index still reaches the scene's
        weak-water level (saturated) is mud when it is at most as much brighter than the land
        median as :data:`MUD_FRAME_RATIO` allows (fresh mud dries lighter; fill is brighter).
        """
        frame = self.frame_level if np.isfinite(self.frame_level) else 1.0
        darker = self.level < 1.0 or self.level < MUD_FRAME_RATIO * frame
        saturated = self.wetness >= 2.0 * self.mud_wetness and self.level < 1.0 / MUD_FRAME_RATIO
        return bool((darker or saturated) and self.wetness > self.mud_wetness)


def _open_edge(inside: np.ndarray, labels: np.ndarray, wet: np.ndarray, ring: np.ndarray | None = None) -> float:
    """Share of the part's outer 1-px ring (4-connected) that is ``wet``.

    ``wet`` is water on the date the part is water (after for gains, before for losses), so
    a pond dug in a flooded field or a fragment of speckled flooding has a wet outline, while
    a pond has dikes around it. Pixels of sibling parts of the same blob (split seams) are left
    out of the ring (``ring``: :func:`outer_ring`, when already computed).
    """
    if ring is None:
        ring = outer_ring(inside, labels)
    n = np.count_nonzero(ring)  # = int(ring.sum()), without the method's wrapper
    if n == 0:
        return 0.0
    return float(np.count_nonzero(wet[ring])) / n


def is_sliver(geom, pixel_size_m: float) -> bool:
    """Whether ``geom`` is on average less than 1.5 pixels wide (mean width = 2 area / perimeter).

    Such ribbons are edges: residual misregistration along roads, field borders and shores.

    Example:
        >>> from shapely.geometry import box
        >>> is_sliver(box(0, 0, 300, 10), 10.0), is_sliver(box(0, 0, 60, 40), 10.0)
        (True, False)
    """
    length = float(geom.length)
    return length > 0 and 2.0 * float(geom.area) / length < 1.5 * pixel_size_m


def _frame_step(inside: np.ndarray, labels: np.ndarray, index: np.ndarray, ring: np.ndarray | None = None,
                median_inside=None) -> float:
    """How much wetter the part is than its outer 1-px ring (median index difference).

    A pond is framed by dikes: on the date it holds water its outline is clearly drier than
    its inside. Speckle cut out of uniformly flooded fields by a threshold has no such frame.
    ``ring``: :func:`outer_ring`, when already computed. ``median_inside``: ``median32`` of the
    finite ``index[inside]`` (not empty), when already taken.
    """
    if ring is None:
        ring = outer_ring(inside, labels)
    vals_ring = index[ring]
    vals_ring = vals_ring[np.isfinite(vals_ring)]
    if median_inside is None:
        vals_in = index[inside]
        vals_in = vals_in[np.isfinite(vals_in)]
        if vals_in.size == 0 or vals_ring.size == 0:
            return 0.0
        median_inside = median32(vals_in)
    elif vals_ring.size == 0:
        return 0.0
    return float(median_inside - median32(vals_ring))


def part_kind(value: int, stats: ShapeStats, solidity: float, drained: bool, facts: dict,
              settings: ShapeSettings, pixel_size_m: float) -> tuple[str, bool]:
    """The patch kind of one examined part, and whether it counts as a pond.

    Args:
        value: the blob's change code (``CODE["new_water"]`` or ``CODE["lost_water"]``).
        stats: shape measures of the part (metric CRS).
        solidity: share of the part kept by a 3x3 opening.
        drained: whether a lost pond's floor looks like wet mud inside its frame.
        facts: further measurements from :func:`_examine`: ``open_edge`` (share of the
            outline that is water on the part's wet date), ``frame_step`` (how much drier
            the outline is than the inside, in units of the scene's change margin), and for
            gains ``frame_bright`` (how much brighter, :func:`frame_brightness_step`) and
            ``before_wetness`` (:func:`before_wetness`).
        settings: pond shape criteria.
        pixel_size_m: grid pixel size in metres.
    """
    framed = max(facts.get("frame_step", np.inf), facts.get("frame_bright", -np.inf)) >= MIN_FRAME_STEP
    pond = (is_pond_like(stats, settings, pixel_size_m) and solidity >= 0.6
            and facts.get("open_edge", 0.0) <= MAX_OPEN_EDGE and framed
            and true_rectangularity(stats.rectangularity, stats.side_min_m, stats.side_max_m,
                                    pixel_size_m) > MIN_TRUE_RECTANGULARITY)
    if value == CODE["new_water"]:
        # Weak water (algae, turbid) or wet mud already before, inside a drier frame (the pond
        # was there): a pond that changed colour or was refilled, not a new one. A pond dug in
        # bare soil (whose index can reach the weak-water level) had no frame before.
        pond = pond and not (facts.get("before_wetness", 0.0) > 1.0
                             and facts.get("before_frame_step", 0.0) >= MIN_FRAME_STEP)
        # Water is darker than its dikes: a gain whose outline is no brighter than its inside
        # (a shadow, a darkened field) is framed by the index alone, not by dikes.
        pond = pond and facts.get("frame_bright", 1.0) > 0.0
        return ("new_pond" if pond else "new_water"), pond
    return (("drained_pond" if drained else "removed_pond") if pond else "lost_water"), pond


def _water_on_wet_date(value: int, codes: np.ndarray, ib: np.ndarray, ia: np.ndarray, nir: np.ndarray,
                       t, dark63: float) -> np.ndarray:
    """Water on the date a gain (``value``) or a loss holds water, pixel by pixel (:func:`_open_edge`).

    After a gain: the after date's water rule (brightness: 63.5 = the land median,
    ``dark63`` = :func:`dark_level_q`). Before a loss (no before brightness in the stack): open
    water by the index alone.
    """
    with np.errstate(invalid="ignore"):
        if value == CODE["new_water"]:
            return (ia > t.water) | ((ia > t.weak_water) & (nir < dark63))
        return (ib > t.water) | (codes == CODE["water"])


def _may_split(blob: np.ndarray, index: np.ndarray, change: float) -> bool:
    """Whether :func:`split_blob` could cut ``blob`` at all under :func:`_examine`'s ``accept``.

    ``accept`` wants seams wetter than the parts by more than ``change`` (a difference of two
    means of the blob's finite index values), which cannot happen when the blob's whole index
    range is below ``change``: then the split is skipped, with the same result. The 1e-3 margin
    covers float32 rounding in the means (index steps are 1/127).
    """
    vals = index[blob]
    vals = vals[np.isfinite(vals)]
    return vals.size > 0 and float(np.maximum.reduce(vals)) - float(np.minimum.reduce(vals)) >= change - 1e-3


def _split_part(part: np.ndarray, index: np.ndarray, min_px: int, change: float,
                accept: Callable[[np.ndarray, np.ndarray], bool]) -> np.ndarray | None:
    """One part of an accepted split, split again (:func:`change_fragments.split_parts_again`).

    Besides the blob's own test (``accept(labels, region)``), every new part must be wetter
    than its own seams by the frame step a pond's outline shows (:data:`MIN_FRAME_STEP` of the
    change margin): a dike is drier than both ponds it separates. None when the part is too
    small to hold two ponds or its index range cannot hold a seam.
    """
    if np.count_nonzero(part) < 2 * min_px or not _may_split(part, index, change):
        return None
    return split_blob(part, index, min_px, margin=change, accept=lambda lab: every_part_above_its_seams(
        lab, part, index, MIN_FRAME_STEP * change) and accept(lab, part))


def _blob_mask(geom, value: int, win_codes: np.ndarray, wt, shape_hw) -> np.ndarray:
    """The blob's pixels: the 4-connected component of ``value`` under an interior point.

    Same pixels as rasterizing the polygon (it was polygonised from them), ~20x cheaper.
    """
    lab, _ = ndimage.label(win_codes == value, structure=CROSS)
    pt = geom.representative_point()
    col, row = ~wt @ (pt.x, pt.y)
    r, c = int(np.floor(row)), int(np.floor(col))
    if 0 <= r < shape_hw[0] and 0 <= c < shape_hw[1] and lab[r, c] > 0:
        return lab == lab[r, c]
    return rasterize([(geom, 1)], out_shape=shape_hw, transform=wt, fill=0, dtype="uint8").astype(bool)


def _placed_mask(known: tuple[Blob, np.ndarray], win: Window, shape_hw) -> np.ndarray | None:
    """A blob's box mask placed in window ``win``; None if the box is not inside it."""
    b, mask = known
    r, c = b.rows[0] - int(win.row_off), b.cols[0] - int(win.col_off)
    if r < 0 or c < 0 or r + mask.shape[0] > shape_hw[0] or c + mask.shape[1] > shape_hw[1]:
        return None
    out = np.zeros(shape_hw, dtype=bool)
    out[r:r + mask.shape[0], c:c + mask.shape[1]] = mask
    return out


def _window_arrays(geom, value: int, stack, grid, pad: int, known: tuple[Blob, np.ndarray] | None = None,
                   whole: bool = False, bounds: tuple | None = None):
    """``(wt, shape_hw, codes, blob, index_before, index_after, brightness_after)`` of the
    blob's bounding window grown by ``pad`` pixels.

    ``known``: the blob and its mask over its box (:func:`change_blobs.blob_mask`), when the
    caller already has them (the same pixels, not labelled again). ``whole``: the blob is all of
    ``geom`` (a grown framed body, :mod:`tuban.pipelines.change_frame`). ``bounds``:
    ``geom.bounds``, when already taken (:func:`_examine_blobs`: one call per chunk).
    """
    win = bounds_window(geom.bounds if bounds is None else bounds, grid, pad)
    wt = window_affine(win, grid.transform)
    rs = slice(int(win.row_off), int(win.row_off + win.height))
    cs = slice(int(win.col_off), int(win.col_off + win.width))
    shape_hw = (int(win.height), int(win.width))
    win_codes = np.asarray(stack[0, rs, cs])
    if whole:
        blob = rasterize([(geom, 1)], out_shape=shape_hw, transform=wt, fill=0, dtype="uint8").astype(bool)
    else:
        blob = _placed_mask(known, win, shape_hw) if known is not None else None
    if blob is None:
        blob = _blob_mask(geom, value, win_codes, wt, shape_hw)
    ib = dequantise_index(np.asarray(stack[1, rs, cs]))
    ia = dequantise_index(np.asarray(stack[2, rs, cs]))
    nir = np.asarray(stack[3, rs, cs]).astype(np.float32)
    return wt, shape_hw, win_codes, blob, ib, ia, nir


def _examine(geom, value, stack, job: BlockJob, settings: ShapeSettings, px_area_m2,
             known: tuple[Blob, np.ndarray] | None = None, whole: bool = False,
             geom_stats: ShapeStats | None = None, bounds: tuple | None = None):
    """Yield ``(polygon, stats, contrast, drained, solidity, facts)`` per part of one blob.

    ``polygon`` is in the grid CRS; ``facts`` holds the measurements :func:`part_kind` uses
    (``open_edge``, ``frame_step``) and, for losses, the floor measures of :class:`LostFloor`.
    ``known``: the :class:`Blob` and its box mask, when already at hand. ``geom_stats``:
    :func:`shape_stats` of ``geom``, when already measured; ``bounds``: ``geom.bounds``, when
    already taken.
    """
    grid = job.grid
    t = job.thresholds
    wt, shape_hw, win_codes, blob, ib, ia, nir = _window_arrays(geom, value, stack, grid, 3, known, whole, bounds)
    wet_index = ia if value == CODE["new_water"] else ib
    min_px = max(1, int(settings.min_area_m2 / px_area_m2))

    def pond_fraction(labels: np.ndarray) -> tuple[int, float]:
        """How many parts are pond-like, and the share of the blob they cover."""
        n_pond, area = 0, 0
        for part in range(1, int(labels.max()) + 1):
            inside = labels == part
            polys = [shape(g) for g, v in shapes(inside.astype(np.uint8), mask=inside, transform=wt) if v == 1]
            if len(polys) == 1 and is_pond_like(shape_stats(polys[0], grid.pixel_size_m), settings,
                                                grid.pixel_size_m):
                n_pond += 1
                area += int(inside.sum())
        return n_pond, area / max(1, int(np.count_nonzero(labels)))  # labels cover the whole region split

    def accept(labels: np.ndarray, region: np.ndarray = blob) -> bool:
        # Both tests must pass; the cheap seam test runs first (the order changes no decision).
        # A blob is only cut along real dikes: the seams must be clearly less wet than the
        # parts (cuts through textured flooding or tide follow no such valley).
        seam = seams(labels, region)
        core = region & ~seam
        if seam.sum() == 0 or core.sum() == 0:
            return False
        with warnings.catch_warnings():  # all-NaN seam or core: NaN gap, rejected
            warnings.simplefilter("ignore", RuntimeWarning)
            gap = float(np.nanmean(wet_index[core]) - np.nanmean(wet_index[seam]))
        if not gap > t.change:
            return False
        n_pond, share = pond_fraction(labels)
        return n_pond >= 2 and share >= 0.6

    labels = blob.astype(np.int32)
    if np.count_nonzero(blob) >= 2 * min_px and _may_split(blob, wet_index, t.change):
        labels = split_blob(blob, wet_index, min_px, accept, margin=t.change)
        if labels.max() > 1:  # a row of ponds cut at one dike only: each part is split the same way
            labels = split_parts_again(labels, lambda part: _split_part(part, wet_index, min_px, t.change, accept))
    span = max(1e-6, t.water_mean - t.land_mean)
    dark63 = dark_level_q(t)
    wet = _water_on_wet_date(value, win_codes, ib, ia, nir, t, dark63)
    n_parts = int(labels.max())  # labels do not change below
    for part in range(1, n_parts + 1):
        inside = labels == part
        if not inside.any():
            continue
        if n_parts == 1:
            poly = geom  # the blob as polygonised on the whole grid
        else:
            polys = [shape(g) for g, v in shapes(inside.astype(np.uint8), mask=inside, transform=wt) if v == 1]
            if not polys:
                continue
            poly = max(polys, key=lambda p: p.area)
        stats = geom_stats if poly is geom and geom_stats is not None else shape_stats(poly, grid.pixel_size_m)
        if stats.area_m2 < settings.min_area_m2 or is_sliver(poly, grid.pixel_size_m):
            continue
        # A pond is a solid block: a 3x3 opening keeps most of it, while fragments of textured
        # flooding, shadow edges or tide (speckle around a threshold) mostly vanish.
        core = erode4(inside)  # open4(inside) = dilate4(core); the texture's core below
        solidity = np.count_nonzero(dilate4(core)) / np.count_nonzero(inside)  # the same float quotient
        ia_in, ib_in = ia[inside], ib[inside]  # each taken once, for the measures below
        delta = nanmean32(np.abs(ia_in - ib_in))
        # np.clip's value, without its per-call overhead on a scalar
        contrast = min(max(float(delta / span), 0.0), 1.0) if math.isfinite(delta) else 0.0
        drained = False
        grown = dilate4(inside)
        ring1 = grown & ~inside & (labels == 0)  # :func:`outer_ring`
        med_in = None  # median of the finite after index inside (new water: wet_index is ia)
        if value == CODE["new_water"]:
            wet_vals = ia_in[np.isfinite(ia_in)]  # :mod:`change_fields`: weak-water level and roughness
            med_in = median32(wet_vals) if wet_vals.size else None
        facts = {"open_edge": _open_edge(inside, labels, wet, ring1),
                 "frame_step": _frame_step(inside, labels, wet_index, ring1, med_in) / max(1e-6, t.change)}
        if value == CODE["new_water"]:  # dikes are bright: a brighter rim frames weak-index ponds too
            facts["wet_index"] = float(med_in) if med_in is not None else float("nan")
            facts["texture"] = brightness_texture(nir, inside, core)
            facts["frame_bright"] = frame_brightness_step(inside, labels, nir, dark63, ring1)
            dry_vals = ib_in[np.isfinite(ib_in)]
            med_b = median32(dry_vals) if dry_vals.size else None  # one median for the two before measures
            facts["before_wetness"] = before_wetness(ib_in, t, med_b)
            facts["before_frame_step"] = _frame_step(inside, labels, ib, ring1, med_b) / max(1e-6, t.change)
            facts["mask_px"] = (wt, inside)  # where the part is, for :mod:`change_refill`
        if value == CODE["lost_water"]:
            # two 4-connected dilations of the part (the first one is ``grown``)
            ring = dilate4(grown) & ~inside & (win_codes == CODE["land"])
            # Brightness layer: 63.5 = the land median. A drained floor is wet mud, darker than
            # its dike frame (or than dry land); fill is dry soil, as bright as the dikes or more.
            floor = LostFloor(
                level=float(np.median(nir[inside])) / LAND_LEVEL,
                frame_level=float(np.median(nir[ring])) / LAND_LEVEL if ring.sum() >= 4 else float("nan"),
                wetness=(float(np.nanmedian(ia[inside])) - t.land_mean) / span,
                mud_wetness=0.5 * (t.weak_water - t.land_mean) / span)
            if floor.level < t.dark_level / max(1e-9, t.land_brightness):
                # As dark as water on the after date: the water changed colour (turbid, algae,
                # deep) and left the index range, it was not lost.
                continue
            drained = floor.is_mud()
            facts.update(floor_level=floor.level, frame_level=floor.frame_level, wetness=floor.wetness,
                         mud_wetness=floor.mud_wetness)
        yield poly, stats, contrast, drained, solidity, facts


def _examine_blobs(blobs: list[Blob], stack, job: BlockJob, settings: ShapeSettings) -> list[dict]:
    """Records of a chunk of blobs (a :class:`ChunkRecords`); ``stack`` is the result stack or, in
    a worker, its file."""
    if isinstance(stack, StackFile):
        stack = stack.open()
    if isinstance(stack, np.memmap):  # the same memory; plain slices skip memmap's per-slice hooks
        stack = stack.view(np.ndarray)
    masks = [blob_mask(b, stack[0]) for b in blobs]
    polygons = blob_polygons(blobs, stack[0], job.grid.transform, masks=masks)
    stats = shape_stats_many(polygons, job.grid.pixel_size_m)  # one vectorised pass for the chunk
    bounds = shapely.bounds(polygons).tolist()  # each = polygon.bounds, in one call
    measured = _chunk_parts(polygons, blobs, masks, stats, bounds, stack, job, settings)
    return ChunkRecords(_records(zip(polygons, [b.value for b in blobs], zip(blobs, masks, strict=True), stats,
                                     strict=True), stack, job, settings, bounds, measured))


#: The facts :func:`_examine` gives a gain's part, in its order (``mask_px`` aside).
_FACTS = ("open_edge", "frame_step", "wet_index", "texture", "frame_bright", "before_wetness", "before_frame_step")


def _chunk_parts(polygons: list, blobs: list[Blob], masks: list, stats: list, bounds: list, stack,
                 job: BlockJob, settings: ShapeSettings) -> list[list | None]:
    """What :func:`_examine` yields for each gain of a chunk that is one part (not split), from
    measures taken for the whole chunk at once (:mod:`tuban.pipelines.change_chunk`, the same
    numbers); None for the blobs :func:`_examine` must examine itself (losses, blobs that may
    split, large windows)."""
    grid, t = job.grid, job.thresholds
    gain = CODE["new_water"]
    if not any(b.value == gain for b in blobs):
        return [None] * len(blobs)
    # the windows :func:`_window_arrays` reads (its :func:`bounds_window`, for the whole chunk)
    windows = [tuple(w) if b.value == gain else None
               for b, w in zip(blobs, bounds_windows(bounds, grid, 3).tolist(), strict=True)]
    dark63 = dark_level_q(t)
    m = chunk_measures(windows, blobs, masks, stack,
                       lambda codes, ib, ia, nir: _water_on_wet_date(gain, codes, ib, ia, nir, t, dark63))
    min_px = max(1, int(settings.min_area_m2 / grid.pixel_size_m ** 2))
    span = max(1e-6, t.water_mean - t.land_mean)
    change = max(1e-6, t.change)
    span_b = t.weak_water - t.land_mean
    gap = LAND_LEVEL - dark63
    # each fact for the whole chunk, with the per-part code's arithmetic element by element
    # (float32 differences of float32 medians, then float64; Python's max/min as np.where)
    with np.errstate(all="ignore"):
        ia_ok, ib_ok = m.ia_in_n > 0, m.ib_in_n > 0
        frame_step = np.where(ia_ok & (m.ia_ring_n > 0), (m.ia_in_med - m.ia_ring_med).astype(np.float64), 0.0) / change
        before_step = np.where(ib_ok & (m.ib_ring_n > 0), (m.ib_in_med - m.ib_ring_med).astype(np.float64), 0.0) / change
        before_wet = (np.where(ib_ok, (m.ib_in_med - t.land_mean).astype(np.float64), 0.0) / span_b
                      if span_b > 0 else np.zeros(len(blobs)))
        frame_bright = (np.where((m.n_ring > 0) & (m.n_inside > 0), (m.nir_ring_med - m.nir_in_med).astype(np.float64),
                                 0.0) / gap if gap > 0 else np.zeros(len(blobs)))
        open_edge = np.where(m.n_ring > 0, m.n_ring_wet / m.n_ring, 0.0)
        mean = m.tex_sum / m.tex_n  # :func:`brightness_texture`
        var = m.tex_sumsq / m.tex_n - mean * mean
        var = np.where(var > 0.0, var, 0.0)  # max(0.0, var)
        texture = np.where((m.tex_n > 0) & (mean > 0), np.sqrt(var) / mean, 0.0)
        delta = np.array(m.delta_mean, dtype=np.float32)
        contrast = (delta / span).astype(np.float64)
        contrast = np.where(0.0 > contrast, 0.0, contrast)  # max(x, 0.0)
        contrast = np.where(np.isfinite(delta), np.where(1.0 < contrast, 1.0, contrast), 0.0)  # min(x, 1.0)
        solidity = m.n_opened / m.n_inside
        may_split = ((m.n_inside >= 2 * min_px) & ia_ok
                     & (m.ia_in_max.astype(np.float64) - m.ia_in_min.astype(np.float64) >= t.change - 1e-3))
    facts_of = zip(open_edge.tolist(), frame_step.tolist(), m.ia_in_med.astype(np.float64).tolist(), texture.tolist(),
                   frame_bright.tolist(), before_wet.tolist(), before_step.tolist(), strict=True)
    out: list[list | None] = []
    for i, (geom, st, values) in enumerate(zip(polygons, stats, facts_of, strict=True)):
        if not m.packed[i] or may_split[i]:  # :func:`_may_split` from the blob's finite after index
            out.append(None)
            continue
        if st.area_m2 < settings.min_area_m2 or is_sliver(geom, grid.pixel_size_m):
            out.append([])
            continue
        facts = dict(zip(_FACTS, values, strict=True))
        if is_refill_candidate("new_pond", facts, MIN_FRAME_STEP):  # the kind aside: may be a refill
            r0, r1, c0, c1 = m.windows[i]
            facts["mask_px"] = (window_affine(Window(c0, r0, c1 - c0, r1 - r0), grid.transform), m.inside_of(i))
        out.append([(geom, st, contrast[i].item(), False, solidity[i].item(), facts)])
    return out


def _chunks(blobs: Iterator[Blob], size: int) -> Iterator[list[Blob]]:
    chunk: list[Blob] = []
    for b in blobs:
        chunk.append(b)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _min_blob_px(settings: ShapeSettings, px_area_m2: float) -> int:
    """The smallest changed blob that is examined (half the smallest pond)."""
    return max(1, int(0.5 * settings.min_area_m2 / px_area_m2))


def _kind_of(value: int, part: tuple, settings: ShapeSettings, pixel_size_m: float) -> tuple[str, bool]:
    """:func:`part_kind` of one part yielded by :func:`_examine`: its kind, and whether it is a pond."""
    _, stats, _, drained, solidity, facts = part
    return part_kind(value, stats, solidity, drained, facts, settings, pixel_size_m)


def _records(blobs, stack, job: BlockJob, settings: ShapeSettings, bounds: list | None = None,
             measured: list | None = None) -> list[dict]:
    """Patch records of ``(polygon, value, (blob, box mask), shape stats)`` per blob (:func:`_examine_blobs`);
    ``bounds``: each polygon's ``bounds``, when already taken; ``measured``: each blob's parts as
    :func:`_examine` yields them, when already measured (:func:`_chunk_parts`; None: not)."""
    grid = job.grid
    px_area = grid.pixel_size_m ** 2
    out = []
    with contextlib.ExitStack() as env:
        # one GDAL environment for the many small rasterize/shapes calls, entered once one is needed
        gdal_env = []

        def in_gdal_env() -> None:
            if not gdal_env:
                gdal_env.append(env.enter_context(rasterio.Env()))

        for i, (geom, v, known, geom_stats) in enumerate(blobs):  # known: (blob, mask); the geometry's shape stats
            parts = None if measured is None else measured[i]
            if parts is None:
                in_gdal_env()
                parts = list(_examine(geom, v, stack, job, settings, px_area, known, geom_stats=geom_stats,
                                      bounds=None if bounds is None else tuple(bounds[i])))
            kinds = [_kind_of(v, p, settings, grid.pixel_size_m) for p in parts]
            if not any(pond for _, pond in kinds):
                in_gdal_env()
                # A fragment of an algae / turbid pond: decide the framed body it belongs to at once.
                body = framed_parts(
                    geom, v, stack, grid, job.thresholds,
                    lambda g, v=v: list(_examine(g, v, stack, job, settings, px_area, whole=True)),
                    lambda p, v=v: _kind_of(v, p, settings, grid.pixel_size_m)[1],
                    int(np.sqrt(settings.max_area_m2 / px_area)) + 2)
                if body is not None:  # framed_parts flags its parts (a fact part_kind does not read)
                    parts = body
                    kinds = [_kind_of(v, p, settings, grid.pixel_size_m) for p in parts]
            for (poly, stats, contrast, _, solidity, facts), (kind, pond) in zip(parts, kinds, strict=True):
                score = 0.5 * contrast + 0.5 * (shape_score(stats, settings) if pond else 0.3)
                out.append({"kind": kind, "score": score, "area_m2": stats.area_m2,
                            "rectangularity": stats.rectangularity, "compactness": stats.compactness,
                            "aspect": stats.aspect, "solidity": solidity, "geometry": poly,
                            "framed_body": facts.get("framed_body", False),
                            "wet_index": facts.get("wet_index", np.nan),
                            "texture": facts.get("texture", np.nan), "contrast": contrast})
                if is_refill_candidate(kind, facts, MIN_FRAME_STEP):  # judged once per scene (:mod:`change_refill`)
                    out[-1]["refill_px"] = facts["mask_px"]
    return out


def patches_from_codes(stack: np.ndarray, job: BlockJob, settings: ShapeSettings, *,
                       pool: Executor | None = None, stack_file: StackFile | None = None,
                       dry_ponds: bool = False) -> gpd.GeoDataFrame:
    """Classified change patches (EPSG:4326) from the grid's result stack (see ``LAYERS``).

    Args:
        stack: ``(layers, rows, cols)`` uint8 result stack of the whole grid.
        job: the job that coded it.
        settings: pond size and shape criteria.
        pool: worker processes (see :mod:`tuban.pipelines.change_pool`); None runs in-process.
        stack_file: the stack as a file, for the workers (required with ``pool``).
        dry_ponds: also look for freshly dug dry ponds (:mod:`tuban.pipelines.change_dug`);
            the output then has a ``state`` column (``"dry"`` for those, else null).
    """
    grid = job.grid
    px_area = grid.pixel_size_m ** 2
    min_blob_px = _min_blob_px(settings, px_area)
    # Blobs are labelled strip by strip here while the workers already examine the first
    # chunks; chunks keep their order, so the result does not depend on the worker count.
    blobs = find_blobs(stack[0], (CODE["new_water"], CODE["lost_water"]), min_blob_px)
    if pool is None:
        parts = [_examine_blobs(c, stack, job, settings) for c in _chunks(blobs, CHUNK_BLOBS)]
    else:
        if stack_file is None:
            raise ValueError("worker processes need the stack as a file")
        futures = [pool.submit(portable, _examine_blobs, c, stack_file, job, settings)
                   for c in _chunks(blobs, CHUNK_BLOBS)]
        parts = results(futures)
    records = [r for part in parts for r in part]
    demote_refills(records, stack, job, MUD_FRAME_RATIO)  # drained ponds refilled: new water (worker-count free)
    records = drop_repeated_bodies(drop_duplicate_bodies(records))
    demote_flooded_fields(records, job.thresholds.water)  # flooded paddy blocks (per scene, after all parts: worker-count free)
    columns = COLUMNS
    if dry_ponds:  # in this process, after the water changes: independent of the worker count
        from tuban.pipelines.change_dug import dry_pond_records

        records += dry_pond_records(stack, job, settings)
        columns = [*COLUMNS[:-1], "state", "geometry"]
        for r in records:
            r.setdefault("state", None)
    if not records:
        empty = {c: gpd.pd.Series(dtype=str if c in ("patch_id", "kind", "state") else float)
                 for c in columns[:-1]}
        return gpd.GeoDataFrame(empty, geometry=gpd.GeoSeries([], crs=WGS84), crs=WGS84)
    return patch_table(records, grid.crs, settings, columns)
