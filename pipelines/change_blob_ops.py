"""Exact, low-overhead stand-ins for numpy, scipy and affine calls on the tiny arrays of one blob.

Patch examination makes a few hundred calls per changed blob on windows of a few hundred
pixels, where the libraries' per-call overhead (argument checks, structuring elements rebuilt,
deprecation-warning machinery) costs more than the arithmetic. Each function here gives the
same result as the library call it names, bit for bit (``tests/test_change_speed.py``), so the
decisions of :mod:`tuban.pipelines.change_patches` do not change.
"""

from __future__ import annotations

import functools

import numpy as np
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

__all__ = ["CROSS", "dilate4", "erode4", "open4", "nanmean32", "median32", "window_affine", "apply_affine",
           "inverse_affine", "bounds_window", "bounds_windows", "pack_shelves"]

#: 4-connectivity, scipy's default structuring element in 2-D, built once (scipy rebuilds it on
#: every call otherwise, a noticeable share of the per-blob time).
CROSS = ndimage.generate_binary_structure(2, 1)


def dilate4(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_dilation(mask)`` (4-connected, one step, outside False) by array shifts.

    The same pixels; on the small windows of single blobs scipy's call overhead is most of
    the cost of a morphology step.
    """
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def erode4(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_erosion(mask)`` (4-connected, one step, outside False) by array shifts."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[0] = False
    out[-1] = False
    out[:, 0] = False
    out[:, -1] = False
    return out


def open4(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_opening(mask)`` (4-connected): erosion, then dilation."""
    return dilate4(erode4(mask))


def nanmean32(values: np.ndarray):
    """``np.nanmean`` of a 1-D float32 array, bit for bit, short path when it holds no NaN.

    numpy sums in float32 (NaN replaced by 0), then divides by the count as a float64 and
    returns float32; with no NaN that is the plain sum of the values.
    """
    if values.dtype != np.float32 or values.ndim != 1 or values.size == 0 or np.isnan(values).any():
        return np.nanmean(values)
    return np.float32(np.add.reduce(values) / np.intp(values.size))


def median32(values: np.ndarray):
    """``np.median`` of a 1-D array of finite values (no NaN), bit for bit, without its wrapper
    layers.

    numpy partitions and averages the middle one or two values in the array's own type
    (``(a + b) / 2`` in float32 for float32); only float32 takes the short path.
    """
    if values.dtype != np.float32 or values.ndim != 1 or values.size == 0:
        return np.median(values)
    half, zero = values.size // 2, np.float32(0)
    # np.mean sums from 0 (so -0.0 becomes 0.0), then divides by the count
    part = values.copy()  # = np.partition(values, ...), without its wrapper
    if values.size % 2:
        part.partition(half)
        return zero + part[half]
    part.partition((half - 1, half))
    return ((zero + part[half - 1]) + part[half]) / np.float32(2)


def window_affine(win: Window, transform: Affine) -> Affine:
    """``rasterio.windows.transform(win, transform)``: the same arithmetic (Affine's own
    formulas, in its order), without ``Affine``'s per-operation overhead (a measurable cost per
    blob)."""
    sa, sb, sc, sd, se, sf = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    x, y = apply_affine(transform, win.col_off or 0.0, win.row_off or 0.0)
    tx, ty = x - sc, y - sf
    # Affine.translation(tx, ty) @ transform, term by term as Affine.__matmul__ computes it
    return Affine(1.0 * sa + 0.0 * sd, 1.0 * sb + 0.0 * se, 1.0 * sc + 0.0 * sf + tx,
                  0.0 * sa + 1.0 * sd, 0.0 * sb + 1.0 * se, 0.0 * sc + 1.0 * sf + ty)


def apply_affine(t: Affine, x: float, y: float) -> tuple[float, float]:
    """``t @ (x, y)`` with ``Affine.__matmul__``'s arithmetic."""
    return x * t.a + y * t.b + t.c, x * t.d + y * t.e + t.f


@functools.lru_cache(maxsize=16)
def inverse_affine(t: Affine) -> Affine:
    """``~t``, cached: every blob of a job maps through the same grid transform."""
    return ~t


def bounds_window(bounds, grid, pad_px: int) -> Window:
    """The pixel window of map ``bounds`` (``minx, miny, maxx, maxy``) on ``grid`` (its
    ``transform``, ``width``, ``height``), grown by ``pad_px`` and clipped to the grid."""
    inv = inverse_affine(grid.transform)
    minx, miny, maxx, maxy = bounds
    c0, r1 = apply_affine(inv, minx, miny)
    c1, r0 = apply_affine(inv, maxx, maxy)
    c0, r0 = max(0, int(c0) - pad_px), max(0, int(r0) - pad_px)
    c1, r1 = min(grid.width, int(np.ceil(c1)) + pad_px), min(grid.height, int(np.ceil(r1)) + pad_px)
    return Window(c0, r0, c1 - c0, r1 - r0)


def bounds_windows(bounds: np.ndarray, grid, pad_px: int) -> np.ndarray:
    """:func:`bounds_window` of many map bounds at once: ``(n, 4)`` int64 rows of
    ``(row0, row1, col0, col1)`` (the same float64 arithmetic, element by element; ``int()``
    truncates toward zero, as ``astype`` does)."""
    inv = inverse_affine(grid.transform)
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    minx, miny, maxx, maxy = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    c0 = np.maximum(0, (minx * inv.a + miny * inv.b + inv.c).astype(np.int64) - pad_px)
    r1 = np.minimum(grid.height, np.ceil(minx * inv.d + miny * inv.e + inv.f).astype(np.int64) + pad_px)
    c1 = np.minimum(grid.width, np.ceil(maxx * inv.a + maxy * inv.b + inv.c).astype(np.int64) + pad_px)
    r0 = np.maximum(0, (maxx * inv.d + maxy * inv.e + inv.f).astype(np.int64) - pad_px)
    return np.column_stack([r0, r1, c0, c1])


def pack_shelves(shapes_hw: list[tuple[int, int]], min_width: int = 1024) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """``(row, col)`` places of rectangles packed shelf by shelf, one empty pixel around each.

    Returns the places (in the rectangles' order) and the atlas shape (empty rows and columns at
    its edges too). The tallest are placed first: a shelf is as tall as its first rectangle, so
    the atlas holds at most about twice the rectangles' pixels (with their gaps) plus one shelf,
    whatever their order (in the given order, a tall thin rectangle among wide ones opens a
    shelf of its height for each: measured 18x).

    Example:
        >>> pack_shelves([(2, 3), (4, 2)], min_width=8)
        ([(1, 4), (1, 1)], (6, 8))
    """
    width = max([min_width, *[w + 2 for _, w in shapes_hw]])
    places = [(0, 0)] * len(shapes_hw)
    x, y, shelf = 1, 1, 0
    for i in sorted(range(len(shapes_hw)), key=lambda i: -shapes_hw[i][0]):
        h, w = shapes_hw[i]
        if x + w + 1 > width:
            x, y, shelf = 1, y + shelf + 1, 0
        places[i] = (y, x)
        x += w + 1
        shelf = max(shelf, h)
    return places, (y + shelf + 1, width)
