"""Refilled ponds are not new ponds: was a gain's floor drained-pond mud inside a dike frame before?

A pond drained (for the winter, for harvest, to dry the bottom) and filled again between the
two dates gains water exactly like a pond dug in a field, inside the same dike frame. What tells
them apart is the *before* date: the drained pond already had its frame, bright bare or grassy
dikes, around a floor of wet mud (dark: wet soil absorbs; its water index at or above the
scene's weak-water level), while the place a pond is dug into was a field, which continues
under the future dike line with the same cover (crop: dark but dry by the index; bare soil:
possibly as wet by the index as mud in a vegetated scene, but no darker than the soil around it).

The stack holds the before date's water index but not its brightness, so for the few gains
still ambiguous after the cheap tests (a pond by shape and frame whose before index was already
at the weak-water level, :func:`tuban.pipelines.change_frame.before_wetness` > 1) the before
date is read again over the part's window: the part is a refill when its before-date floor is
clearly darker than the land around it within two pixels (its dike line), by the same ratio
that calls a lost pond's floor mud on the after date
(:data:`tuban.pipelines.change_patches.MUD_FRAME_RATIO`). A field's brightness does not matter
(dim soil is as bright as the soil around it); only the frame does. The before date is opened
once per chunk of blobs that holds a candidate (in whichever process examines the chunk) and
read over each candidate's window only; each part is decided on its own pixels, so the output
does not depend on the worker count.
"""

from __future__ import annotations

import numpy as np
from rasterio.features import rasterize

from tuban.imagery.align import open_on_grid
from tuban.imagery.water import brightness
from tuban.pipelines.change_blob_ops import bounds_window, dilate4, window_affine
from tuban.pipelines.change_blocks import CODE, read_date
from tuban.pipelines.change_fields import FIELD_SHAPE_SCORE

__all__ = ["before_floor_levels", "demote_refills", "is_refill_candidate", "was_mud_before"]


def is_refill_candidate(kind: str, facts: dict) -> bool:
    """Whether a part needs the before-floor test: a new pond whose before index was already
    at the scene's weak-water level (``before_wetness`` > 1). Parts already recognised as
    existing ponds (framed before) never reach here; everything else costs no read.

    Example:
        >>> is_refill_candidate("new_pond", {"before_wetness": 1.2}), is_refill_candidate("new_pond", {"before_wetness": 0.7})
        (True, False)
    """
    return kind == "new_pond" and facts.get("before_wetness", 0.0) > 1.0


def before_floor_levels(bright_before: np.ndarray, inside: np.ndarray, codes: np.ndarray,
                        land_brightness: float) -> tuple[float, float]:
    """``(floor level, frame level)`` of a part on the before date, relative to the land median.

    The floor is the median brightness of the part's pixels; the frame is the median of the
    land-coded pixels within two 4-connected steps around it (its dikes), NaN when fewer than 4
    (as :class:`~tuban.pipelines.change_patches.LostFloor` measures a lost pond on the after date).

    Example:
        >>> b = np.full((7, 7), 2.0, np.float32); b[2:5, 2:5] = 0.9
        >>> inside = b < 1.5
        >>> [round(v, 3) for v in before_floor_levels(b, inside, np.zeros((7, 7), np.uint8), 1.0)]
        [0.9, 2.0]
    """
    ref = land_brightness if land_brightness > 0 else 1.0
    vals = bright_before[inside]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return float("nan"), float("nan")
    ring = dilate4(dilate4(inside)) & ~inside & (codes == CODE["land"])
    ring_vals = bright_before[ring]
    ring_vals = ring_vals[np.isfinite(ring_vals)]
    frame = float(np.median(ring_vals)) / ref if ring_vals.size >= 4 else float("nan")
    return float(np.median(vals)) / ref, frame


def was_mud_before(poly, stack, job, reader, frame_ratio: float) -> bool:
    """Whether the part ``poly`` (grid CRS) was a darker floor inside a brighter frame before.

    Args:
        poly: the part's polygon.
        stack: the result stack (codes, index before, ...).
        job: the :class:`~tuban.pipelines.change_blocks.BlockJob`.
        reader: its before date opened on the grid (:func:`~tuban.imagery.align.open_on_grid`).
        frame_ratio: the floor must be darker than this share of its frame's brightness.
    """
    grid, t = job.grid, job.thresholds
    win = bounds_window(poly.bounds, grid, 3)
    wt = window_affine(win, grid.transform)
    shape_hw = (int(win.height), int(win.width))
    inside = rasterize([(poly, 1)], out_shape=shape_hw, transform=wt, fill=0, dtype="uint8").astype(bool)
    rs = slice(int(win.row_off), int(win.row_off + win.height))
    cs = slice(int(win.col_off), int(win.col_off + win.width))
    bands = read_date(reader, job.before, win)
    bright = brightness({r: v for r, v in bands.items() if r != "qa"})
    level, frame = before_floor_levels(bright, inside, np.asarray(stack[0, rs, cs]), t.land_brightness)
    return bool(np.isfinite(level) and np.isfinite(frame) and level < frame_ratio * frame)


def demote_refills(candidates: list[tuple[dict, object]], stack, job, frame_ratio: float) -> int:
    """Relabel the candidate new ponds that were a mud floor in a frame before as ``new_water``.

    Args:
        candidates: ``(record, polygon)`` of the parts :func:`is_refill_candidate` picked; the
            record has ``kind``, ``score`` and ``contrast`` (the index-change part of the
            score). Changed in place.
        stack, job: the result stack and the job that coded it.
        frame_ratio: see :func:`was_mud_before`.

    Returns:
        How many were relabelled. The before date is opened once for all of them (nothing is
        read when there is no candidate).
    """
    if not candidates:
        return 0
    n = 0
    with open_on_grid(job.before, job.grid) as reader:
        for rec, poly in candidates:
            if was_mud_before(poly, stack, job, reader, frame_ratio):
                rec["kind"] = "new_water"
                rec["score"] = 0.5 * rec.get("contrast", 0.0) + 0.5 * FIELD_SHAPE_SCORE
                n += 1
    return n
