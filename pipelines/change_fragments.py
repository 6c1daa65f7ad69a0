"""Fragments of one pond decided together: every fragment's framed body reported, repeats dropped once.

An algae-rich or turbid pond whose pixels sit at the scene's darkness threshold is coded as
changed only in fragments; :func:`tuban.pipelines.change_frame.framed_parts` grows each
fragment into the framed body it belongs to and decides that body as a whole (split at its
dikes into ponds). Several fragments of one pond, or of neighbouring ponds whose thin dikes
are blurred into one body, find the same body or overlapping ones. Electing one fragment as the
body's *owner* before the body is decided loses the pond whenever the elected fragment never
grows a body (it is a pond of its own, or its window cuts the body at its edge). Here instead
every fragment reports the parts of its body and the repeats are dropped afterwards, once, on
the records of the whole grid in their fixed order, so the result does not depend on which
worker examined which fragment (:func:`drop_repeated_bodies`).

The other rules that decide a pond from its pieces:

* :func:`same_water`: a body grows only through water that could be the fragment's (not across
  a blurred dike into a clearer neighbour);
* :data:`BODY_PIXEL_SHARE`: a body's pixels move by half the change margin, its median by all
  of it;
* :func:`block_solidity`: a body's solidity is judged against a solid block of its own extent;
* :func:`split_parts_again` with :func:`every_part_above_its_seams`: merged ponds cut at one
  dike only are cut at the others too, each part standing above its own seams.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import shapely
from rasterio.features import rasterize
from scipy import ndimage

from tuban.pipelines.change_blob_ops import open4

__all__ = ["BODY_PIXEL_SHARE", "MAX_SPLIT_DEPTH", "block_solidity", "drop_repeated_bodies", "every_part_above_its_seams",
           "same_water", "seams", "split_parts_again"]


#: Share of the change margin each pixel of a framed body must move by; the body's median must
#: move by the whole margin. The margin is three robust sigmas of one pixel's index change
#: (:mod:`tuban.imagery.water`); the median of a body of n pixels varies ~sqrt(n) times less, so
#: a body is held to the margin as a whole while its pixels, one by one, need only half of it
#: (the frame step's share, ``MIN_FRAME_STEP``).
BODY_PIXEL_SHARE = 0.5


def drop_repeated_bodies(records: list[dict], key: str = "framed_body", max_overlap: float = 0.25) -> list[dict]:
    """Records without the framed-body parts that repeat an earlier body part.

    A body record (``key`` true) is dropped when it covers more than ``max_overlap`` of, or is
    covered that much by, a body record kept before it. Records come in the grid's fixed blob
    order, so the first fragment of a body (in raster order) keeps its parts, whatever the
    worker count. Records that are not bodies are kept as they are.

    Args:
        records: patch records with a shapely ``geometry`` (one metric CRS).
        key: the record flag marking a framed-body part.
        max_overlap: share of the smaller of two body parts above which they are one.

    Example:
        >>> from shapely.geometry import box
        >>> recs = [{"geometry": box(0, 0, 10, 10), "framed_body": True},
        ...         {"geometry": box(0, 0, 10, 10), "framed_body": True},
        ...         {"geometry": box(20, 0, 30, 10), "framed_body": True}]
        >>> len(drop_repeated_bodies(recs))
        2
    """
    bodies = [i for i, r in enumerate(records) if r.get(key)]
    if len(bodies) < 2:
        return records
    geoms = [records[i]["geometry"] for i in bodies]
    tree = shapely.STRtree(geoms)
    dropped: set[int] = set()
    for a, g in enumerate(geoms):
        if a in dropped:
            continue
        for b in tree.query(g, predicate="intersects").tolist():
            if b <= a or b in dropped:
                continue
            h = geoms[b]
            if g.intersection(h).area > max_overlap * min(g.area, h.area):
                dropped.add(b)
    gone = {bodies[b] for b in dropped}
    return [r for i, r in enumerate(records) if i not in gone]


def same_water(seed: np.ndarray, wet_index: np.ndarray, change: float) -> np.ndarray:
    """Pixels whose water could be the seed fragment's: index at most ``change`` above its median.

    One pond holds one water: algae-rich, turbid or clear, uniform up to noise, and the
    scene's change margin is at least three robust sigmas of that noise. A fragment of an algae
    pond grown into its framed body must not run across a blurred dike into a clear neighbour,
    whose index is far higher (that neighbour is found on its own): cut at the dike, the split
    would measure the algae pond against the clear water and cut the uniform pond instead.
    Only an upper bound: the body's lower bound is the scene's weak-water level.

    Args:
        seed: the fragment's pixels.
        wet_index: water index on the date the fragment holds water.
        change: the scene's change margin.

    Example:
        >>> idx = np.array([[0.0, 0.05, 0.4]], np.float32)
        >>> same_water(np.array([[True, False, False]]), idx, 0.1).tolist()
        [[True, True, False]]
    """
    vals = wet_index[seed]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return np.ones(wet_index.shape, bool)
    with np.errstate(invalid="ignore"):
        return wet_index <= float(np.median(vals)) + change


#: How many times a part of a split blob is split again (a row of 2**3 = 8 ponds at most).
MAX_SPLIT_DEPTH = 3


def split_parts_again(labels: np.ndarray, split: Callable[[np.ndarray], np.ndarray | None],
                      depth: int = MAX_SPLIT_DEPTH) -> np.ndarray:
    """Labels with every part split again by ``split`` while splits are accepted.

    A blob of several ponds merged through blurred dikes is split at the first set of seams
    that passes the dike test; a row of three ponds may come out as one pond and a pair, and
    the pair, elongated but still pond-shaped, is reported as one pond. The same test applied
    to each part cuts the pair too.

    Args:
        labels: parts 1..n of a blob (0 outside).
        split: labels of one part's mask (1..m), or None when that part is not to be split.
        depth: how many more rounds of splitting are allowed.

    Returns:
        Labels 1..N in the same window, parts numbered in order.

    Example:
        >>> lab = np.array([[1, 1, 0, 2, 2, 2]])
        >>> halves = lambda m: np.where(m, 1 + (np.cumsum(m, axis=1) > 1), 0) if m.sum() == 3 else None
        >>> split_parts_again(lab, halves).tolist()
        [[1, 1, 0, 2, 3, 3]]
    """
    if depth <= 0:
        return labels
    out = np.zeros_like(labels)
    n = 0
    for part in range(1, int(labels.max()) + 1):
        inside = labels == part
        if not inside.any():
            continue
        sub = split(inside)
        if sub is not None and sub.max() > 1:
            sub = split_parts_again(sub, split, depth - 1)
            out[inside] = sub[inside] + n
            n += int(sub.max())
        else:
            n += 1
            out[inside] = n
    return out


def seams(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The pixels of ``region`` whose 3x3 neighbourhood holds two labels, or a label and the
    outside of ``region`` (where a split cuts its parts apart).

    Example:
        >>> seams(np.array([[1, 1, 2, 2]]), np.ones((1, 4), bool)).tolist()
        [[False, True, True, False]]
    """
    return region & (ndimage.grey_dilation(labels, size=3) != ndimage.grey_erosion(
        np.where(region, labels, labels.max() + 1), size=3))


def every_part_above_its_seams(labels: np.ndarray, region: np.ndarray, wet_index: np.ndarray,
                               change: float) -> bool:
    """Whether every part of a split is wetter than the seam pixels around it by ``change``.

    A dike is drier than *both* ponds it separates. The seam test of a first split compares all
    seams with all parts at once, which an open-water neighbour passes for any cut through an
    algae pond beside it; a part split again is held to the stricter test, part by part.

    Args:
        labels: parts 1..n of the split (0 outside ``region``).
        region: the pixels that were split.
        wet_index: water index on the date the region holds water.
        change: the scene's change margin.

    Example:
        >>> idx = np.array([[0.1] * 6 + [-0.3, 0.5, 0.5, 0.5]] * 3, np.float32)  # algae, dike, clear
        >>> region = np.ones(idx.shape, bool)
        >>> every_part_above_its_seams(np.array([[1] * 6 + [2] * 4] * 3), region, idx, 0.1)  # at the dike
        True
        >>> every_part_above_its_seams(np.array([[1] * 3 + [2] * 7] * 3), region, idx, 0.1)  # through the algae
        False
    """
    lab = np.where(region, labels, 0)
    seam = seams(lab, region)
    finite = np.isfinite(wet_index)
    for part in range(1, int(lab.max()) + 1):
        inside = lab == part
        near = seam & ndimage.binary_dilation(inside, structure=np.ones((3, 3), bool)) & finite
        core = inside & ~seam & finite
        if not near.any() or not core.any():
            continue
        if not float(wet_index[core].mean()) - float(wet_index[near].mean()) > change:
            return False
    return True


def block_solidity(poly, transform, shape_hw: tuple[int, int]) -> float:
    """Share of a solid block of the part's own extent that a 3x3 opening keeps.

    The solidity test (share kept by a 4-connected 3x3 opening) takes pixels off a perfectly
    solid block too: the four corners of a small upright pond (a 6 x 6 px pond keeps 0.89, a
    20 x 20 px one 0.99), single pixels sticking out of a rotated pond's staircase outline. The
    same opening of the part's minimum rotated rectangle, drawn on the same pixels, measures
    that loss alone; a body is held to its solidity threshold times this share.

    Args:
        poly: the part's polygon (grid CRS).
        transform: affine transform of the window the part lies in.
        shape_hw: the window's ``(rows, cols)``.

    Example:
        >>> from affine import Affine
        >>> from shapely.geometry import box
        >>> round(block_solidity(box(10, -90, 90, -10), Affine(10, 0, 0, 0, -10, 0), (10, 10)), 3)  # 4 corners go
        0.938
    """
    rect = poly.minimum_rotated_rectangle
    mask = rasterize([(rect, 1)], out_shape=shape_hw, transform=transform, fill=0, dtype="uint8").astype(bool)
    n = int(mask.sum())
    return float(np.count_nonzero(open4(mask))) / n if n else 1.0
