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
clearly darker than its frame, the land within two pixels around it where the after date shows
the dikes (the brighter half of that ring after), by the same ratio
that calls a lost pond's floor mud on the after date
(:data:`tuban.pipelines.change_patches.MUD_FRAME_RATIO`). A field's brightness does not matter
(dim soil is as bright as the soil around it); only the frame does. Candidates are judged once
per scene, after every blob was examined (whichever worker examined it): the before date is
opened once and read once per group of nearby candidates, and each part is decided on its own
pixels, so the output does not depend on the worker count.
"""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from tuban.imagery.align import open_on_grid
from tuban.imagery.water import brightness
from tuban.pipelines.change_blob_ops import dilate4
from tuban.pipelines.change_blocks import CODE, read_date
from tuban.pipelines.change_fields import FIELD_SHAPE_SCORE

__all__ = ["MAX_READ_PX", "before_floor_levels", "demote_refills", "is_refill_candidate", "was_mud_before"]


def is_refill_candidate(kind: str, facts: dict, min_step: float) -> bool:
    """Whether a part needs the before-floor test (everything else costs no read).

    A new pond whose before index was already at the scene's weak-water level
    (``before_wetness`` > 1) and whose floor was not clearly *drier* than its outline before
    (``before_frame_step`` > -``min_step``, the change-margin share a frame must show): a wet mud
    floor is never drier than the dikes around it, while the floor of a pond dug in dry bare
    soil inside an existing dike grid can be (the 10k benchmark scene: nothing is read there).

    Example:
        >>> is_refill_candidate("new_pond", {"before_wetness": 1.2, "before_frame_step": 0.1}, 0.5)
        True
        >>> is_refill_candidate("new_pond", {"before_wetness": 0.7, "before_frame_step": 0.1}, 0.5)
        False
        >>> is_refill_candidate("new_pond", {"before_wetness": 1.2, "before_frame_step": -0.8}, 0.5)
        False
    """
    return (kind == "new_pond" and facts.get("before_wetness", 0.0) > 1.0
            and facts.get("before_frame_step", 0.0) > -min_step)


def before_floor_levels(bright_before: np.ndarray, inside: np.ndarray, codes: np.ndarray,
                        land_brightness: float, bright_after: np.ndarray | None = None) -> tuple[float, float]:
    """``(floor level, frame level)`` of a part on the before date, relative to the land median.

    The floor is the median before-date brightness of the part's pixels. The frame is measured on
    the land-coded pixels within two 4-connected steps around the part; with ``bright_after``
    only on those of them at least as bright *after* as the ring's median, i.e. where the dikes
    are on the after date (at 10 m a dike shares its pixels with floor and neighbouring water;
    its brighter half is mostly dike). NaN when fewer than 4 such pixels.

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
    if bright_after is not None and ring.any():
        ring &= bright_after >= np.median(bright_after[ring])
    ring_vals = bright_before[ring]
    ring_vals = ring_vals[np.isfinite(ring_vals)]
    frame = float(np.median(ring_vals)) / ref if ring_vals.size >= 4 else float("nan")
    return float(np.median(vals)) / ref, frame


#: At most this many pixels are read from the before date at once (nearby candidates share one
#: read; a memory bound, it does not change any decision).
MAX_READ_PX = 512 * 512


def _box(wt, inside: np.ndarray, grid) -> tuple[int, int, int, int]:
    """``(row0, col0, row1, col1)`` of a part's window on the grid (from its window transform)."""
    col0 = int(round((wt.c - grid.transform.c) / grid.transform.a))
    row0 = int(round((wt.f - grid.transform.f) / grid.transform.e))
    return row0, col0, row0 + inside.shape[0], col0 + inside.shape[1]


def _groups(boxes: list[tuple[int, int, int, int]]) -> list[tuple[tuple[int, int, int, int], list[int]]]:
    """Consecutive boxes gathered while their common bounding box stays within :data:`MAX_READ_PX`
    and at most twice their summed area (neighbours share a read; scattered ones are read alone)."""
    out: list[tuple[tuple[int, int, int, int], list[int]]] = []
    summed = 0
    for i, b in enumerate(boxes):
        area = (b[2] - b[0]) * (b[3] - b[1])
        if out:
            (r0, c0, r1, c1), members = out[-1]
            u = (min(r0, b[0]), min(c0, b[1]), max(r1, b[2]), max(c1, b[3]))
            u_area = (u[2] - u[0]) * (u[3] - u[1])
            if u_area <= MAX_READ_PX and u_area <= 2 * (summed + area):
                out[-1] = (u, [*members, i])
                summed += area
                continue
        out.append((b, [i]))
        summed = area
    return out


def was_mud_before(bright_before: np.ndarray, inside: np.ndarray, codes: np.ndarray, land_brightness: float,
                   frame_ratio: float, bright_after: np.ndarray | None = None) -> bool:
    """Whether a part was a floor clearly darker than the land ring around it on the before date.

    Args:
        bright_before: before-date brightness over the part's window.
        inside: the part's pixels in that window.
        codes: change codes of the window (the ring is taken on land pixels only).
        land_brightness: the scene's land median brightness.
        frame_ratio: the floor must be darker than this share of its frame's brightness.
        bright_after: after-date brightness of the window (the frame is where it is bright).

    Example:
        >>> b = np.full((9, 9), 0.75, np.float32); b[3:6, 3:6] = 0.47  # mud inside bare dikes
        >>> was_mud_before(b, b < 0.6, np.zeros((9, 9), np.uint8), 0.5, 0.9)
        True
    """
    level, frame = before_floor_levels(bright_before, inside, codes, land_brightness, bright_after)
    return bool(np.isfinite(level) and np.isfinite(frame) and level < frame_ratio * frame)


def demote_refills(records: list[dict], stack, job, frame_ratio: float, key: str = "refill_px") -> int:
    """Relabel the candidate new ponds that were a floor inside a brighter frame before as ``new_water``.

    Runs once per scene on all records (so the result does not depend on which worker examined
    which blob); the before date is opened once and read once per group of nearby candidates, in
    record order (nothing is read when there is no candidate).

    Args:
        records: patch records; candidates (:func:`is_refill_candidate`) carry ``key`` =
            ``(window transform, part mask)``, which is removed. A relabelled record gets
            ``kind`` ``new_water`` and the score of a non-pond part (from its ``contrast``).
            Changed in place.
        stack, job: the result stack and the :class:`~tuban.pipelines.change_blocks.BlockJob`
            that coded it (its before date is read).
        frame_ratio: see :func:`was_mud_before`.

    Returns:
        How many were relabelled.
    """
    candidates = [(r, r.pop(key)) for r in records if key in r]
    if not candidates:
        return 0
    grid, t = job.grid, job.thresholds
    boxes = [_box(wt, inside, grid) for _, (wt, inside) in candidates]
    n = 0
    with open_on_grid(job.before, grid) as reader:
        for (r0, c0, r1, c1), members in _groups(boxes):
            bands = read_date(reader, job.before, Window(c0, r0, c1 - c0, r1 - r0))
            bright = brightness({r: v for r, v in bands.items() if r != "qa"})
            for i in members:
                rec, (_, inside) = candidates[i]
                br0, bc0, br1, bc1 = boxes[i]
                rows, cols = slice(br0 - r0, br1 - r0), slice(bc0 - c0, bc1 - c0)
                if was_mud_before(bright[rows, cols], inside, np.asarray(stack[0, br0:br1, bc0:bc1]),
                                  t.land_brightness, frame_ratio, np.asarray(stack[3, br0:br1, bc0:bc1])):
                    rec["kind"] = "new_water"
                    rec["score"] = 0.5 * rec.get("contrast", 0.0) + 0.5 * FIELD_SHAPE_SCORE
                    n += 1
    return n
