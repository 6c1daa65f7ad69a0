"""Pixels that must not be compared: nodata, clouds, cloud shadows, QA flags, user masks.

Cloud and shadow heuristics are relative to the scene (multiples of the scene's median land
brightness), so they work for reflectance, DN, uint8 stretches and float inputs alike:

* cloud: visible brightness and NIR both far above the scene's land median, spectrally flat;
* shadow: every band darker than the land median by a large factor, and close to a cloud
  (shadows without a cloud in the scene are not guessed);
* Landsat QA bands (pre-collection BQA, Collection 1 BQA, Collection 2 QA_PIXEL) are decoded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["SceneBrightness", "scene_brightness", "cloud_levels", "cloud_candidates", "cloud_shadow_mask", "qa_mask", "nodata_mask",
           "user_mask"]

_VISIBLE = ("blue", "green", "red")


def _visible(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    vis = [bands[r] for r in _VISIBLE if r in bands]
    if len(vis) == 1:
        return np.asarray(vis[0], dtype=np.float32)
    if all(np.asarray(v).dtype == np.float32 for v in vis):
        # The float32 mean, summed in band order as np.mean over a stack does, without the stack.
        out = np.add(vis[0], vis[1])
        for v in vis[2:]:
            out += v
        out /= len(vis)
        return out
    return np.mean(np.stack(vis).astype(np.float32, copy=False), axis=0)


@dataclass(frozen=True)
class SceneBrightness:
    """Scene reference levels (medians over clear land) used by the cloud/shadow heuristics."""

    visible: float
    nir: float
    visible_floor: float
    nir_floor: float


def scene_brightness(bands: Mapping[str, np.ndarray], valid: np.ndarray) -> SceneBrightness:
    """Median visible and NIR brightness, and their 1st percentiles, over valid pixels."""
    vis = _visible(bands)
    nir = np.asarray(bands.get("nir", bands.get("swir1")), dtype=np.float32)
    if valid.all():  # every pixel: no selected copy (nothing below writes into them)
        vis, nir = vis.ravel(), nir.ravel()
    else:
        vis, nir = vis[valid], nir[valid]
    if vis.size == 0:
        return SceneBrightness(1.0, 1.0, 0.0, 0.0)
    if _selectable(vis) and _selectable(nir):  # no NaN (nor inf, nor a sign bit): histogram selection
        (med_vis, p1_vis), (med_nir, p1_nir) = _select_median_and_p1(vis), _select_median_and_p1(nir)
        return SceneBrightness(med_vis, med_nir, p1_vis, p1_nir)
    if np.isnan(vis).any() or np.isnan(nir).any():
        return SceneBrightness(float(np.nanmedian(vis)), float(np.nanmedian(nir)),
                               float(np.nanpercentile(vis, 1)), float(np.nanpercentile(nir, 1)))
    (med_vis, p1_vis), (med_nir, p1_nir) = _median_and_p1(vis.copy()), _median_and_p1(nir.copy())
    return SceneBrightness(med_vis, med_nir, p1_vis, p1_nir)


#: Below this many values :func:`_median_and_p1` takes numpy's partitions directly.
_SELECT_MIN = 1 << 16


def _median_and_p1(values: np.ndarray) -> tuple[float, float]:
    """``(np.median(values), np.percentile(values, 1))`` of a fresh 1-D array without NaN,
    bit for bit.

    numpy partitions the whole array for each (two passes of introselect over millions of
    sampled pixels). For float32 values that are all finite and >= +0.0 (pixel sums; their bit
    patterns sort as the values do), the order statistics both need are found instead by a
    bracket guessed from a regular sample (:func:`_bracketed`), or where a bracket misses from
    one histogram of the top 16 bits (:func:`_ranked`), and numpy then computes the median and
    the interpolated percentile from them (the mean of the middle pair; the linear
    interpolation at the same fraction), so the arithmetic is numpy's own.
    Other input takes the plain path (partitioned in place: ``values`` is overwritten).
    """
    if not _selectable(values):
        return (float(np.nanmedian(values, overwrite_input=True)),
                float(np.nanpercentile(values, 1, overwrite_input=True)))
    return _select_median_and_p1(values)


def _selectable(values: np.ndarray) -> bool:
    """Whether :func:`_select_median_and_p1` applies: a 1-D float32 array of at least
    :data:`_SELECT_MIN` values, all finite and >= +0.0."""
    if values.dtype != np.float32 or values.ndim != 1 or values.size < _SELECT_MIN:
        return False
    # 0x7F800000 and above: +inf, NaN, or a sign bit (negatives, -0.0)
    return int(np.maximum.reduce(values.view(np.uint32))) < 0x7F800000


def _select_median_and_p1(values: np.ndarray) -> tuple[float, float]:
    """:func:`_median_and_p1` of :func:`_selectable` values (never written to)."""
    n = values.size
    bits = values.view(np.uint32)
    virtual = (n - 1) * np.float64(0.01)  # numpy's linear method: index (n - 1) q, q = 1 / 100
    prev = int(np.floor(virtual))
    mid = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
    stats = _bracketed(values, [*mid, prev, prev + 1])
    if stats is None:
        stats = _ranked(values, bits, [*mid, prev, prev + 1])
    median = float(np.median(np.array([stats[k] for k in mid], dtype=np.float32)))
    pair = np.array([stats[prev], stats[prev + 1]], dtype=np.float32)
    return median, float(np.quantile(pair, float(virtual - np.floor(virtual))))


#: Every this many-th value is in the sample that brackets the ranks (prime: no image period).
_BRACKET_STRIDE = 61


def _bracketed(values: np.ndarray, ranks: list[int]) -> dict[int, np.float32] | None:
    """The ``k``-th smallest of ``values`` (0-based, finite) for each ``k`` in ``ranks``, or
    None when a guessed bracket missed a rank.

    A regular sample of the values guesses, per run of neighbouring ranks, a value range
    ``[lo, hi]`` that holds them; counting the values below ``lo`` and partitioning the few
    inside the range then gives each rank exactly (ties included: the values in the range are
    the ranks ``below .. below + count - 1``). Three comparisons and one small selection per
    range instead of a histogram of every value. A range that turns out not to hold its ranks
    gives None (the caller takes :func:`_ranked`), so the result never depends on the guess.
    """
    n = values.size
    sample = values[::_BRACKET_STRIDE]
    m = sample.size
    groups: list[list[int]] = []
    for k in sorted(set(ranks)):
        if groups and k - groups[-1][-1] <= 1:
            groups[-1].append(k)
        else:
            groups.append([k])
    spans = []
    for group in groups:
        q = (group[0] + group[-1]) / 2 / max(1, n - 1)
        margin = int(5 * math.sqrt(m * q * (1 - q))) + 32
        j = q * (m - 1)
        spans.append((max(0, int(j) - margin), min(m - 1, int(j) + 1 + margin)))
    sample = np.partition(sample, sorted({i for span in spans for i in span}))
    out: dict[int, np.float32] = {}
    for group, (i, j) in zip(groups, spans, strict=True):
        lo, hi = sample[i], sample[j]
        below = values < lo
        n_below = int(np.count_nonzero(below))
        inside = values <= hi
        np.greater(inside, below, out=inside)  # lo <= value <= hi
        within = values[inside]
        if not (n_below <= group[0] and group[-1] < n_below + within.size):
            return None
        within.partition([k - n_below for k in group])
        for k in group:
            out[k] = within[k - n_below]
    return out


def _ranked(values: np.ndarray, bits: np.ndarray, ranks: list[int]) -> dict[int, np.float32]:
    """The ``k``-th smallest of ``values`` (0-based) for each ``k`` in ``ranks``, from a
    histogram of the top 16 bits of their (sortable, non-negative) bit patterns."""
    top = bits >> np.uint32(16)
    ends = np.cumsum(np.bincount(top, minlength=1 << 15))
    out, buckets = {}, {}
    for k in ranks:
        b = int(np.searchsorted(ends, k, side="right"))
        if b not in buckets:
            buckets[b] = np.sort(values[top == b])
        out[k] = buckets[b][k - (int(ends[b - 1]) if b else 0)]
    return out


def cloud_levels(ref: SceneBrightness, cloud_factor: float = 2.5) -> tuple[float, float]:
    """``(visible, nir)`` levels both of which a cloud candidate exceeds (see :func:`cloud_candidates`)."""
    return (ref.visible_floor + cloud_factor * (ref.visible - ref.visible_floor),
            ref.nir_floor + 0.6 * cloud_factor * (ref.nir - ref.nir_floor))


def cloud_candidates(bands: Mapping[str, np.ndarray], ref: SceneBrightness, *, cloud_factor: float = 2.5,
                     visible: np.ndarray | None = None) -> np.ndarray:
    """Pixels bright and white enough to be cloud, before any speckle removal (pixel by pixel).

    :func:`cloud_shadow_mask` opens and dilates these; a caller working block by block can use
    them to know where the neighbourhood of a block matters.
    """
    vis = _visible(bands) if visible is None else visible
    nir = np.asarray(bands.get("nir", bands.get("swir1")), dtype=np.float32)
    vis_cloud, nir_cloud = cloud_levels(ref, cloud_factor)
    cloud = (vis > vis_cloud) & (nir > nir_cloud)
    if "green" in bands and "nir" in bands and cloud.any():
        # Only the bright pixels can stay cloud: the flatness test runs on them alone (the same
        # float32 arithmetic pixel by pixel, so the same result as on the whole arrays).
        g = np.asarray(bands["green"], dtype=np.float32)[cloud]
        n = np.asarray(bands["nir"], dtype=np.float32)[cloud]
        with np.errstate(divide="ignore", invalid="ignore"):
            cloud[cloud] = np.abs(g - n) < 0.35 * (g + n)  # clouds are white: green ~ nir
    return cloud


def cloud_shadow_mask(
    bands: Mapping[str, np.ndarray],
    ref: SceneBrightness,
    *,
    cloud_factor: float = 2.5,
    shadow_factor: float = 0.5,
    shadow_reach_px: int = 40,
    dilate_px: int = 2,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(cloud, shadow)`` masks of one date (see module docstring).

    Args:
        bands: role -> 2-D arrays on the comparison grid (after scaling).
        ref: scene brightness levels of this date.
        cloud_factor: cloud if visible and NIR exceed ``floor + factor * (median - floor)``.
        shadow_factor: shadow if visible and NIR are below ``floor + factor * (median - floor)``.
        shadow_reach_px: shadows are only looked for this close to a cloud.
        dilate_px: both masks grow by this many pixels (soft cloud edges).
        candidates: :func:`cloud_candidates` of the same bands, when already computed.
    """
    cloud = cloud_candidates(bands, ref, cloud_factor=cloud_factor) if candidates is None else candidates.copy()
    # Speckles of a few pixels are bright roofs or sand, not clouds.
    if cloud.any():
        cloud = ndimage.binary_opening(cloud, iterations=1)
    shadow = np.zeros_like(cloud)
    if cloud.any() and shadow_reach_px > 0:
        vis = _visible(bands)
        nir = np.asarray(bands.get("nir", bands.get("swir1")), dtype=np.float32)
        near = ndimage.binary_dilation(cloud, iterations=shadow_reach_px)
        dark = (vis < ref.visible_floor + shadow_factor * (ref.visible - ref.visible_floor)) & \
               (nir < ref.nir_floor + shadow_factor * (ref.nir - ref.nir_floor))
        shadow = dark & near & ~cloud
        if dilate_px > 0:
            cloud = ndimage.binary_dilation(cloud, iterations=dilate_px)
            shadow = ndimage.binary_dilation(shadow, iterations=dilate_px) & ~cloud
    return cloud, shadow


def qa_mask(qa: np.ndarray, kind: str | None) -> np.ndarray:
    """True where a Landsat QA band flags fill, cloud (medium/high), cirrus (high) or shadow.

    Args:
        qa: integer QA band.
        kind: ``landsat-pre`` (pre-collection BQA), ``landsat-c1`` or ``landsat-c2`` (QA_PIXEL).
    """
    q = np.asarray(qa).astype(np.uint32)
    if kind == "landsat-pre":
        fill = (q & 1) > 0
        cloud_conf = (q >> 14) & 3
        cirrus_conf = (q >> 12) & 3
        return fill | (cloud_conf >= 2) | (cirrus_conf == 3)
    if kind == "landsat-c1":
        fill = (q & 1) > 0
        cloud = (q >> 4) & 1
        shadow_conf = (q >> 7) & 3
        cirrus_conf = (q >> 11) & 3
        return fill | (cloud > 0) | (shadow_conf == 3) | (cirrus_conf == 3)
    # Collection 2 QA_PIXEL: fill, dilated cloud, cirrus, cloud, cloud shadow.
    return (q & 0b11111) > 0


def nodata_mask(bands: Mapping[str, np.ndarray], nodata: float | None) -> np.ndarray:
    """True where any band is NaN or equals ``nodata``."""
    arrays = [np.asarray(b) for r, b in bands.items() if r != "qa"]
    bad = np.zeros(arrays[0].shape, dtype=bool)
    for a in arrays:
        if np.issubdtype(a.dtype, np.floating):
            bad |= np.isnan(a)
        if nodata is not None and not np.isnan(nodata):
            bad |= a == nodata
    return bad


def user_mask(geometries, window_transform, shape: tuple[int, int]) -> np.ndarray:
    """True inside user-given exclusion geometries (already in the grid CRS)."""
    from rasterio.features import geometry_mask

    geoms = list(geometries)
    if not geoms:
        return np.zeros(shape, dtype=bool)
    return geometry_mask(geoms, out_shape=shape, transform=window_transform, invert=True)
