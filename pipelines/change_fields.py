"""Flooded fields are not new ponds: a per-scene size test for weak-water gains.

Rice paddies flooded for transplanting are shallow: their water index stays near the land's
(stubble, mud and green shoots show through), like an algae-rich pond's, and their bunds are far
narrower than a pixel at 10 m, so a block of fields flooded together is seen as one large body
of weak water. Aquaculture ponds in a county are dug to a few similar sizes, and most of them
hold open water, which is smooth, while a field block is rough (bunds, uneven shoots and
puddles). So a new body whose water is clearly weaker than the scene's typical new pond, which
is larger than *every* new pond of open water in the same scene, and rougher (after-date
brightness) than nine in ten of them is a flooded field block, not a pond: it is reported as
``new_water``. All references are the scene's own (its water threshold, its new ponds' median
index, its open-water new ponds' largest area and texture): no size, index or texture
constant, and the test never fires in a scene without open-water new ponds. A large algae pond
is as smooth as the open ones and stays a pond.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FIELD_SHAPE_SCORE", "ROUGHER_THAN", "WEAK_SHARE", "brightness_texture", "demote_flooded_fields", "open_water_level"]

#: Shape part of the score of a non-pond patch (as in ``change_patches._records``).
FIELD_SHAPE_SCORE = 0.3
#: A flooded field is rougher than this share of the scene's open-water new ponds.
ROUGHER_THAN = 0.9
#: Weak water: below this share of the way from the water threshold to the typical new pond's
#: index (flooded blocks measured at <= 0.19 of the way, true ponds taken at 0.28 and 0.34).
WEAK_SHARE = 0.25


def brightness_texture(bright: np.ndarray, inside: np.ndarray, core: np.ndarray | None = None) -> float:
    """Coefficient of variation of the after-date brightness over the part's inner pixels.

    ``core``: ``inside`` eroded by one pixel (its edge is mixed with the dikes), when already
    at hand; the whole part is used when fewer than 4 core pixels are left.

    Example:
        >>> b = np.full((6, 6), 40.0)
        >>> b[2, 2] = 60.0
        >>> round(brightness_texture(b, np.ones((6, 6), bool)), 3)
        0.117
    """
    if core is None:
        from scipy import ndimage

        core = ndimage.binary_erosion(inside)
    vals = np.asarray(bright)[core if np.count_nonzero(core) >= 4 else inside].astype(np.float64)
    if vals.size == 0:
        return 0.0
    mean = float(np.add.reduce(vals)) / vals.size
    var = max(0.0, float(np.add.reduce(vals * vals)) / vals.size - mean * mean)
    return float(np.sqrt(var) / mean) if mean > 0 else 0.0


def open_water_level(records: list[dict], water_threshold: float) -> float | None:
    """The index a new pond's median must reach to count as open water in this scene.

    :data:`WEAK_SHARE` of the way from the scene's water threshold to the median index of its
    new ponds (the typical pond's water); None without new ponds.

    Example:
        >>> open_water_level([{"kind": "new_pond", "wet_index": 0.5}, {"kind": "new_water", "wet_index": 0.0}], 0.1)
        0.2
    """
    # math.isfinite: np.isfinite's answer for a scalar, without a ufunc call per record
    idx = [v for r in records if r["kind"] == "new_pond" and math.isfinite(v := r.get("wet_index", np.nan))]
    if not idx:
        return None
    return water_threshold + WEAK_SHARE * (float(np.median(idx)) - water_threshold)


def demote_flooded_fields(records: list[dict], water_threshold: float) -> int:
    """Relabel weak, rough new ponds larger than the scene's largest open-water new pond.

    Args:
        records: patch records of one scene (``kind``, ``area_m2``, ``score``, ``wet_index``:
            median after-date index of the part, ``texture``: :func:`brightness_texture`,
            ``contrast``: the index-change part of the score). Changed in place.
        water_threshold: the scene's water index threshold.

    Returns:
        How many new ponds were relabelled ``new_water``.

    Example:
        >>> def rec(area, idx, tex):
        ...     return {"kind": "new_pond", "area_m2": area, "wet_index": idx, "texture": tex,
        ...             "score": 0.9, "contrast": 0.6}
        >>> recs = [rec(9000, 0.45, 0.03), rec(8000, 0.40, 0.02), rec(40000, 0.05, 0.08),
        ...         rec(38000, 0.05, 0.025), rec(5000, 0.05, 0.09)]
        >>> demote_flooded_fields(recs, 0.15), [r["kind"] for r in recs]
        (1, ['new_pond', 'new_pond', 'new_water', 'new_pond', 'new_pond'])
    """
    level = open_water_level(records, water_threshold)
    if level is None:
        return 0
    ponds = [r for r in records if r["kind"] == "new_pond"]
    is_open = [bool(r.get("wet_index", np.inf) >= level) for r in ponds]
    open_ponds = [r for r, o in zip(ponds, is_open, strict=True) if o]
    if not open_ponds:
        return 0
    largest = max(r["area_m2"] for r in open_ponds)
    textures = [t for r in open_ponds if math.isfinite(t := r.get("texture", np.nan))]
    rough = float(np.quantile(textures, ROUGHER_THAN)) if textures else np.inf
    n = 0
    for r, o in zip(ponds, is_open, strict=True):
        if not o and r["area_m2"] > largest and r.get("texture", -np.inf) > rough:
            r["kind"] = "new_water"
            r["score"] = 0.5 * r.get("contrast", 0.0) + 0.5 * FIELD_SHAPE_SCORE
            n += 1
    return n
