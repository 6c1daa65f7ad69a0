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
worker examined which fragment.
"""

from __future__ import annotations

import numpy as np
import shapely

__all__ = ["drop_repeated_bodies", "same_water"]


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
