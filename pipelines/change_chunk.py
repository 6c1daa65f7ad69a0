"""Per-pond measures of a whole chunk of blobs in one pass, bit for bit what the per-blob code gives.

:func:`tuban.pipelines.change_patches._examine` measures a blob in its own small window of the
result stack: a few morphology steps, about ten pixel counts, six medians and two means, each a
numpy call on a few hundred pixels, where the per-call overhead is most of the cost. Most blobs
are a single pond that is not split, and for those every measure is a count, a sum or a median
over one of a handful of masks. So the windows of a chunk's blobs are packed side by side (one
pixel of empty gap between them, shelf by shelf) into one small *atlas* of the stack's layers,
every mask is built once on the atlas, and each measure is taken for all blobs at once:

* counts by ``np.bincount`` of the owning blob;
* medians by one sort of ``owner * 256 + quantised value`` keys: the stack's layers are uint8
  and their float values (:func:`~tuban.pipelines.change_blocks.dequantise_index`, the
  brightness as ``float32``) increase with the code, so the middle codes of a blob's sorted keys
  are the middle values numpy's partition finds, averaged with :func:`median32`'s arithmetic;
* sums of integer brightness values in float64 (exact, so in any order).

The morphology is the same on the atlas as in a window: the gap is empty, so an erosion treats
it as the outside of the window, and a dilation's spill into the gap is left out of every ring.
Float32 means (whose rounding depends on the order of the sum) are still summed blob by blob,
over the blob's pixels in the window's row order. ``tests/test_change_speed_round8_patches.py``
checks every measure against the per-window functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from tuban.pipelines.change_blob_ops import dilate4, erode4, nanmean32, pack_shelves
from tuban.pipelines.change_blocks import dequantise_index

__all__ = ["MAX_ATLAS_PX", "MAX_WINDOW_SIDE_PX", "ChunkMeasures", "ChunkRecords", "chunk_measures", "segment_medians"]

#: Windows taller or wider than this are measured on their own (ponds fit): the atlas is at most
#: this wide and no shelf taller, whatever the shape of the blobs.
MAX_WINDOW_SIDE_PX = 256
#: At most this many window pixels in one atlas (~40 bytes each across its layers and masks; the
#: atlas, packed tallest first by :func:`pack_shelves`, holds at most ~3 times as many); the
#: chunk's further blobs are measured on their own. A memory bound, it changes no number.
MAX_ATLAS_PX = 1 << 20
#: The float32 values of the index layers' codes (NaN for 0) and of the brightness layer's codes.
_INDEX = dequantise_index(np.arange(256, dtype=np.uint8))
_LEVELS = np.arange(256, dtype=np.float32)


@dataclass(frozen=True)
class ChunkMeasures:
    """Per-blob measures of a chunk (arrays indexed by the blob's position in the chunk).

    A blob's *inside* is its mask, its *ring* the 4-connected 1-px ring around it within its
    window, its *core* the inside eroded by one pixel (4-connected), *opened* that core dilated
    again. ``*_med`` are medians as :func:`median32` gives them (NaN when the count is 0),
    ``*_n`` the counts they are taken over.

    Attributes:
        packed: whether the blob was measured (False: window too large or mask not placed).
        n_inside, n_opened, n_ring, n_ring_wet: pixel counts (``wet``: the caller's water mask).
        ia_in_med, ia_in_n, ia_in_min, ia_in_max: finite after-index values inside.
        ia_ring_med, ia_ring_n: finite after-index values on the ring.
        ib_in_med, ib_in_n, ib_ring_med, ib_ring_n: the same for the before index.
        nir_in_med, nir_ring_med: brightness medians inside and on the ring.
        tex_n, tex_sum, tex_sumsq: count, sum and sum of squares (float64) of the brightness
            over the core when it has 4 pixels or more, else over the inside.
        delta_mean: :func:`nanmean32` of ``|index after - index before|`` inside.
        windows: ``(row0, row1, col0, col1)`` of each blob's window on the grid.
        inside: the atlas mask of the insides; ``places``: each window's ``(row, col)`` in it.
    """

    packed: np.ndarray
    n_inside: np.ndarray
    n_opened: np.ndarray
    n_ring: np.ndarray
    n_ring_wet: np.ndarray
    ia_in_med: np.ndarray
    ia_in_n: np.ndarray
    ia_in_min: np.ndarray
    ia_in_max: np.ndarray
    ia_ring_med: np.ndarray
    ia_ring_n: np.ndarray
    ib_in_med: np.ndarray
    ib_in_n: np.ndarray
    ib_ring_med: np.ndarray
    ib_ring_n: np.ndarray
    nir_in_med: np.ndarray
    nir_ring_med: np.ndarray
    tex_n: np.ndarray
    tex_sum: np.ndarray
    tex_sumsq: np.ndarray
    delta_mean: list
    windows: list
    inside: np.ndarray
    places: list

    def inside_of(self, i: int) -> np.ndarray:
        """Blob ``i``'s mask over its window (a copy)."""
        r0, r1, c0, c1 = self.windows[i]
        y, x = self.places[i]
        return self.inside[y:y + r1 - r0, x:x + c1 - c0].copy()


def segment_medians(owner: np.ndarray, codes: np.ndarray, n: int, values: np.ndarray):
    """Per-owner medians of ``values[codes]``, as :func:`median32` of each owner's float32 values.

    Args:
        owner: owner index (0..n-1) of each selected pixel.
        codes: its uint8 code.
        n: number of owners.
        values: float32 value of each code, increasing with the code.

    Returns:
        ``(median, count, min, max)`` arrays of length ``n`` (NaN where the count is 0).

    Example:
        >>> m, c, lo, hi = segment_medians(np.array([0, 0, 1, 1, 1]), np.array([3, 1, 5, 2, 9], np.uint8), 3,
        ...                                np.arange(256, dtype=np.float32))
        >>> m.tolist(), c.tolist(), lo.tolist()[:2], hi.tolist()[:2]
        ([2.0, 5.0, nan], [2, 3, 0], [1.0, 2.0], [3.0, 9.0])
    """
    counts = np.bincount(owner, minlength=n)
    nan = np.full(n, np.nan, dtype=np.float32)
    if owner.size == 0:
        return nan, counts, nan.copy(), nan.copy()
    keys = owner.astype(np.int64) * 256 + codes
    keys.sort()
    ends = np.cumsum(counts)
    starts = ends - counts
    last = keys.size - 1
    half = counts // 2
    top = values[keys[np.minimum(starts + half, last)] & 255]
    below = values[keys[np.clip(starts + half - 1, 0, last)] & 255]
    zero = np.float32(0)
    # median32: the middle value (from 0: -0.0 becomes 0.0), or the mean of the middle two
    med = np.where(counts % 2 == 1, zero + top, ((zero + below) + top) / np.float32(2))
    lo = values[keys[np.minimum(starts, last)] & 255]
    hi = values[keys[np.clip(ends - 1, 0, last)] & 255]
    empty = counts == 0
    for a in (med, lo, hi):
        a[empty] = np.nan
    return med, counts, lo, hi


def chunk_measures(windows: list, blobs: list, masks: list, stack: np.ndarray, wet_rule) -> ChunkMeasures:
    """Measure a chunk's single-part gains in one pass over an atlas of their windows.

    Args:
        windows: each blob's window ``(row0, row1, col0, col1)`` on the grid; None to leave
            the blob out.
        blobs: the :class:`~tuban.pipelines.change_blobs.Blob` of each (its box places the mask).
        masks: each blob's mask over its box.
        stack: the result stack (codes, index before, index after, brightness after, ...).
        wet_rule: ``wet_rule(codes, index_before, index_after, brightness)`` -> the water mask
            of the date the part holds water, pixel by pixel (as the per-window code computes it).
    """
    n = len(blobs)
    packed = np.zeros(n, dtype=bool)
    sizes = []
    total_px = 0
    for i, (win, b, m) in enumerate(zip(windows, blobs, masks, strict=True)):
        if win is not None:
            r0, r1, c0, c1 = win
            r, c = b.rows[0] - r0, b.cols[0] - c0
            px = (r1 - r0) * (c1 - c0)
            packed[i] = (max(r1 - r0, c1 - c0) <= MAX_WINDOW_SIDE_PX and total_px + px <= MAX_ATLAS_PX
                         and r >= 0 and c >= 0 and r + m.shape[0] <= r1 - r0 and c + m.shape[1] <= c1 - c0)
            total_px += px if packed[i] else 0
        sizes.append((win[1] - win[0], win[3] - win[2]) if packed[i] else (0, 0))
    places, shape_hw = pack_shelves(sizes, MAX_WINDOW_SIDE_PX)
    layers = np.zeros((4, *shape_hw), dtype=np.uint8)
    owner = np.full(shape_hw, -1, dtype=np.int32)
    inside = np.zeros(shape_hw, dtype=bool)
    for i in np.flatnonzero(packed):
        r0, r1, c0, c1 = windows[i]
        y, x = places[i]
        layers[:, y:y + r1 - r0, x:x + c1 - c0] = stack[0:4, r0:r1, c0:c1]
        owner[y:y + r1 - r0, x:x + c1 - c0] = i
        b, m = blobs[i], masks[i]
        my, mx = y + b.rows[0] - r0, x + b.cols[0] - c0
        inside[my:my + m.shape[0], mx:mx + m.shape[1]] = m
    codes, qb, qa, qn = layers
    ib, ia = dequantise_index(qb), dequantise_index(qa)
    nir = qn.astype(np.float32)
    core = erode4(inside)
    grown = dilate4(inside)
    ring = grown & ~inside & (owner >= 0)  # the gap is outside every window
    wet = wet_rule(codes, ib, ia, nir)

    def count(mask):
        return np.bincount(owner[mask], minlength=n)

    n_inside, n_core = count(inside), count(core)
    med = {}
    for name, mask, q, values in (("ia_in", inside & (qa != 0), qa, _INDEX),
                                  ("ia_ring", ring & (qa != 0), qa, _INDEX),
                                  ("ib_in", inside & (qb != 0), qb, _INDEX),
                                  ("ib_ring", ring & (qb != 0), qb, _INDEX),
                                  ("nir_in", inside, qn, _LEVELS), ("nir_ring", ring, qn, _LEVELS)):
        med[name] = segment_medians(owner[mask], q[mask], n, values)
    tex = np.where(n_core[owner] >= 4, core, inside) & inside  # owner -1 (gap): inside is False there
    tex_owner, tex_vals = owner[tex], qn[tex].astype(np.float64)
    # |after - before| inside, each blob's values in its window's row order (a stable sort)
    owner_in = owner[inside]
    order = np.argsort(owner_in, kind="stable")
    delta = np.abs(ia[inside] - ib[inside])[order]
    ends = np.cumsum(n_inside).tolist()
    with_nan = np.bincount(owner_in[order][np.isnan(delta)], minlength=n).tolist()
    add = np.add.reduce
    # nanmean32: numpy's pairwise float32 sum of each blob's values (no NaN), divided as float64
    sums = np.array([add(delta[e - k:e]) if k and not nan else np.nan
                     for e, k, nan in zip(ends, n_inside.tolist(), with_nan, strict=True)], dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / n_inside).astype(np.float32)
    delta_mean = [means[i] if not nan else nanmean32(delta[e - k:e]) if k else np.float32(np.nan)
                  for i, (e, k, nan) in enumerate(zip(ends, n_inside.tolist(), with_nan, strict=True))]
    return ChunkMeasures(
        packed=packed, n_inside=n_inside, n_opened=count(dilate4(core)), n_ring=count(ring),
        n_ring_wet=count(ring & wet),
        ia_in_med=med["ia_in"][0], ia_in_n=med["ia_in"][1], ia_in_min=med["ia_in"][2], ia_in_max=med["ia_in"][3],
        ia_ring_med=med["ia_ring"][0], ia_ring_n=med["ia_ring"][1],
        ib_in_med=med["ib_in"][0], ib_in_n=med["ib_in"][1], ib_ring_med=med["ib_ring"][0], ib_ring_n=med["ib_ring"][1],
        nir_in_med=med["nir_in"][0], nir_ring_med=med["nir_ring"][0],
        tex_n=np.bincount(tex_owner, minlength=n), tex_sum=np.bincount(tex_owner, tex_vals, minlength=n),
        tex_sumsq=np.bincount(tex_owner, tex_vals * tex_vals, minlength=n),
        delta_mean=delta_mean, windows=windows, inside=inside, places=places)


class ChunkRecords(list):
    """A chunk's patch records that cross a process boundary with their polygons as one WKB array.

    Pickling each shapely polygon on its own (WKB, one call per polygon each way) cost the
    parent of a 2-worker job ~2 us per pond; one vectorised ``to_wkb``/``from_wkb`` per chunk
    carries the same WKB, so the same coordinates to the last bit. Unpickled, it is a plain list.
    """

    def __reduce__(self):
        geoms = np.empty(len(self), dtype=object)
        geoms[:] = [r["geometry"] for r in self]
        return _unpack_records, ([{**r, "geometry": None} for r in self], shapely.to_wkb(geoms))


def _unpack_records(records: list[dict], wkb: np.ndarray) -> list[dict]:
    """:class:`ChunkRecords` back from pickling: each record's polygon from its WKB (in place)."""
    for r, g in zip(records, shapely.from_wkb(wkb).tolist(), strict=True):
        r["geometry"] = g
    return records
