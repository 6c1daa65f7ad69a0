"""Where cloud shadows fall: each cloud's own shape, moved along the scene's shadow direction.

A cloud shadow is the cloud projected onto the ground along the sun's rays: the same shape,
displaced away from the sun by ``cloud height x tan(sun zenith)``. The direction is the same
for every cloud of a scene (one sun azimuth); the distance varies with each cloud's height.
This is the geometric test of Fmask (Zhu & Woodcock 2012), here without sun angles from
metadata (not every input has them): the displacement is *measured* from the scene itself.

* the whole-grid cloud map is cross-correlated (FFT) with the map of shadow-like darkening
  outside clouds, within the reach of a shadow; the best displacement gives the scene's shadow
  direction, and is only trusted when the moved cloud lands clearly on darkened ground (far
  more than the darkening around the cloud in general) and the darkening ends where the moved
  cloud's outline ends (a few bright roofs moved into a large dark pond fit inside only), and
  when no displacement in another direction (over 60 degrees off) comes close: one sun, one
  direction (scattered bright fields taken for clouds match dark fields about equally well in
  many directions);
* every cloud object of a useful size then looks for its own distance along that direction
  (clouds at other heights cast their shadows nearer or further), keeping the scene's when its
  own match is weak;
* the shadow zone is every cloud object moved by its displacement, grown by the geometric
  uncertainty (working-grid rounding, mask dilation, a tenth of the displacement).

Only darkening inside this zone is a shadow. A field turned into a dark algae pond darkens
like a shadow, but with no cloud in the right place to cast it, it is a change. When no
displacement is convincing (no shadow visible, a shadow under the cloud, clouds of two dates
with two sun positions, a few bright roofs taken for clouds), the direction is unknown but the
size is not: a shadow is as large as its cloud, so only darkened regions within reach of a
cloud and no larger than :data:`SHADOW_SIZE_RATIO` times the largest cloud are shadows; when a
cloud is cut by the grid edge (its size unknown), every darkening within reach, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["ShadowFit", "shadow_zone", "reduce_cells", "coarse_flags", "MIN_MATCH", "MIN_CONTRAST"]

#: Working grid edge for the displacement search (cells); the zone is drawn on the input grid.
WORK_PX = 384
#: The moved cloud must land on darkened ground for at least this share of its visible cells...
MIN_MATCH = 0.1
#: ... and this many times more often than darkening occurs around clouds in general.
MIN_CONTRAST = 4.0
#: Around the moved cloud (2 cells), the darkened share must be at most this part of the share
#: inside it: the darkening ends with the cloud's shape.
MAX_EDGE_SHARE = 0.5
#: The best displacement's score must be this many times that of any other direction.
MIN_DIRECTION_CONTRAST = 2.0
#: Cloud objects smaller than this (working cells) take the scene's displacement.
MIN_OBJECT_CELLS = 12
#: Distances tried per cloud object along the shadow direction.
DISTANCE_STEPS = 96
#: Without a measured displacement, a darkened region larger than this many times the largest
#: cloud is no shadow (a shadow has its cloud's size; clouds cut by the grid edge count as
#: unbounded).
SHADOW_SIZE_RATIO = 1.5


@dataclass(frozen=True)
class ShadowFit:
    """The measured shadow displacement of a scene.

    Attributes:
        shift_px: (dx, dy) of the scene's best displacement, in input-grid pixels (x = columns).
        match: share of the moved cloud's visible cells that darkened.
        background: share of the cloud-free cells within reach that darkened.
        found: whether the displacement was trusted (else the zone is the reach disc).
    """

    shift_px: tuple[float, float]
    match: float
    background: float
    found: bool


def reduce_cells(a: np.ndarray, k: int, how: str) -> np.ndarray:
    """``a`` on a ``k`` times coarser grid (zero-padded to whole cells): each cell's ``any``
    (``how="any"``) or float32 mean (else) of its ``k x k`` pixels."""
    pad = (-a.shape[0] % k, -a.shape[1] % k)
    a = np.pad(a, ((0, pad[0]), (0, pad[1])))
    r = a.reshape(a.shape[0] // k, k, a.shape[1] // k, k)
    return r.any(axis=(1, 3)) if how == "any" else r.mean(axis=(1, 3), dtype=np.float32)


def coarse_flags(flags_layer: np.ndarray, factor: int, strip_px: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The cloud (bit 0) and shadow-like (bit 1) flags on a ``factor`` times coarser grid (any).

    Read strip by strip; each strip is a whole number of coarse rows, so every coarse cell
    covers the same ``factor x factor`` pixels as a reduction of the whole layer would.
    """
    height, width = flags_layer.shape
    step = max(factor, strip_px - strip_px % factor)
    shape = (-(-height // factor), -(-width // factor))
    coarse, coarse_dark = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    for r in range(0, height, step):
        flags = np.asarray(flags_layer[r:r + step])
        for bit, target in ((1, coarse), (2, coarse_dark)):
            red = reduce_cells((flags & bit).astype(bool), factor, "any")
            target[r // factor: r // factor + red.shape[0]] |= red
    return coarse, coarse_dark


def _moved(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``a`` moved by (dx, dy) cells (x = columns), zero where nothing moved in."""
    out = np.zeros_like(a)
    h, w = a.shape
    src = a[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def _correlate(a: np.ndarray, cloud: np.ndarray) -> np.ndarray:
    """``out[dy + h - 1, dx + w - 1] = sum_p cloud[p] * a[p + (dy, dx)]`` for every shift.

    The full linear cross-correlation by FFT (numpy's, zero-padded: no wrap-around); a few
    hundred cells a side, so it costs milliseconds.
    """
    shape = (a.shape[0] + cloud.shape[0] - 1, a.shape[1] + cloud.shape[1] - 1)
    spec = np.fft.rfft2(a.astype(np.float64), s=shape) * np.fft.rfft2(cloud[::-1, ::-1].astype(np.float64), s=shape)
    out = np.fft.irfft2(spec, s=shape)
    np.maximum(out, 0.0, out=out)  # sums of non-negative terms: round-off below zero is zero
    return out


def _object_distance(rows: np.ndarray, cols: np.ndarray, unit: np.ndarray, reach: float,
                     dark: np.ndarray, cloud: np.ndarray) -> tuple[float, float]:
    """Best distance (cells) of one cloud object along ``unit`` and its match there."""
    h, w = dark.shape
    if rows.size > 1024:  # a regular subsample is enough to place a large object
        step = int(np.ceil(rows.size / 1024))
        rows, cols = rows[::step], cols[::step]
    best = (0.0, 0.0, 0.0)  # distance, score, share of the visible cells that darkened
    for t in np.linspace(1.0, reach, DISTANCE_STEPS):
        r = np.rint(rows + t * unit[1]).astype(int)
        c = np.rint(cols + t * unit[0]).astype(int)
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        r, c = r[ok], c[ok]
        free = ~cloud[r, c]
        if free.sum() < 0.3 * rows.size:
            continue
        hit = float(dark[r[free], c[free]].sum())
        score = hit * hit / float(free.sum())  # as for the scene's displacement
        if score > best[1]:
            best = (float(t), score, hit / float(free.sum()))
    return best[0], best[2]


def _members(owner: np.ndarray, n: int, rows: np.ndarray, cols: np.ndarray,
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(rows, cols)`` of each object 1..n, given each pixel's object number ``owner``."""
    order = np.argsort(owner, kind="stable")
    edges = np.searchsorted(owner[order], np.arange(1, n + 2))
    return [(rows[order[a:b]], cols[order[a:b]]) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _sized_fallback(cloud: np.ndarray, dark: np.ndarray, reach_px: float) -> np.ndarray:
    """Within ``reach_px`` of a cloud, the darkened regions no larger than a cloud could shade.

    With no measured displacement the shadow may lie in any direction, but it still has its
    cloud's size: a darkened field or pond far larger than every cloud of the scene (e.g. a
    few bright roofs taken for clouds) is not their shadow. A cloud object touching the grid
    edge may be larger than what is seen, so it allows any size.
    """
    disc = ndimage.distance_transform_edt(~cloud) <= reach_px  # within reach (only needed here)
    eight = np.ones((3, 3), dtype=bool)
    lab_c, n_c = ndimage.label(cloud, structure=eight)
    edge = np.unique(np.concatenate([lab_c[0], lab_c[-1], lab_c[:, 0], lab_c[:, -1]]))
    if (edge > 0).any():
        return disc
    largest = float(np.bincount(lab_c.ravel())[1:].max()) if n_c else 0.0
    near_dark = dark & disc & ~cloud
    # Darkening is speckled at its threshold (an algae pond comes out in pieces): pieces within
    # 2 px are one region, whose size is its darkened pixels.
    lab_d, n_d = ndimage.label(ndimage.binary_dilation(near_dark, structure=eight, iterations=2), structure=eight)
    if n_d == 0:
        return np.zeros_like(disc)
    size = np.bincount(lab_d[near_dark], minlength=n_d + 1)
    small = size <= SHADOW_SIZE_RATIO * largest
    small[0] = False
    return small[lab_d] & near_dark


def shadow_zone(cloud: np.ndarray, dark: np.ndarray, reach_px: float) -> tuple[np.ndarray, ShadowFit]:
    """Pixels where a cloud's shadow may lie, and the fitted displacement.

    Args:
        cloud: boolean cloud map of the grid (either date).
        dark: boolean map of shadow-like darkening (or brightening back) on the same grid.
        reach_px: the longest possible shadow displacement, in pixels of this grid.

    Returns:
        ``(zone, fit)``: boolean map of the same shape, and the :class:`ShadowFit`. Without a
        trusted displacement the zone is the darkened regions within ``reach_px`` of a cloud
        that are no larger than :data:`SHADOW_SIZE_RATIO` times the largest cloud (any size
        when a cloud touches the grid edge).

    Example:
        >>> cloud = np.zeros((60, 60), bool); cloud[10:20, 10:20] = True
        >>> dark = np.zeros_like(cloud); dark[10:20, 30:40] = True; dark[45:50, 5:10] = True
        >>> zone, fit = shadow_zone(cloud, dark, 40.0)
        >>> fit.found, round(fit.shift_px[0]), round(fit.shift_px[1]), bool(zone[15, 35]), bool(zone[47, 7])
        (True, 20, 0, True, False)
    """
    h, w = cloud.shape
    k = max(1, int(np.ceil(max(h, w) / WORK_PX)))
    c = reduce_cells(cloud, k, "any")
    free = ~c
    d = reduce_cells(dark & ~cloud, k, "mean") * free
    reach = reach_px / k
    hits = _correlate(d, c)
    visible = _correlate(free.astype(np.float32), c)
    ch, cw = c.shape
    dy = np.arange(hits.shape[0])[:, None] - (ch - 1)
    dx = np.arange(hits.shape[1])[None, :] - (cw - 1)
    dist = np.hypot(dx, dy)
    n_cloud = float(c.sum())
    allowed = (dist <= reach) & (dist >= 1.0) & (visible >= 0.3 * n_cloud)
    background = float(d[(ndimage.distance_transform_edt(free) <= reach) & free].mean()) if free.any() else 0.0
    if not allowed.any():
        return _sized_fallback(cloud, dark, reach_px), ShadowFit((0.0, 0.0), 0.0, background, False)
    # most darkened cells covered, and as few undarkened ones: a shadow partly hidden under its
    # cloud is covered as fully by slightly longer displacements, which also cover bright ground
    score = np.where(allowed, hits * hits / np.maximum(visible, 1e-9), -1.0)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    sy, sx = float(dy[i, 0]), float(dx[0, j])
    match = float(hits[i, j] / max(1e-9, visible[i, j]))
    # One sun, one direction: the best displacement must clearly beat every displacement more
    # than 60 degrees away from it (scattered bright objects taken for clouds match dark fields
    # in many directions about equally).
    turn = np.abs((np.arctan2(dy, dx) - np.arctan2(sy, sx) + np.pi) % (2 * np.pi) - np.pi)
    other = allowed & (turn > np.pi / 3)
    rival = float(score[other].max()) if other.any() else 0.0
    # A shadow has its cloud's shape: the darkening ends where the moved cloud ends. A few
    # bright roofs moved into a large dark pond match inside but not at the edge.
    moved_c = _moved(c, int(sx), int(sy))
    band = ndimage.binary_dilation(moved_c, iterations=2) & ~moved_c & free
    edge = float(d[band].mean()) if band.any() else 0.0
    found = (match >= MIN_MATCH and match >= MIN_CONTRAST * background
             and hits[i, j] >= MIN_OBJECT_CELLS and edge <= MAX_EDGE_SHARE * match
             and score[i, j] >= MIN_DIRECTION_CONTRAST * rival)
    fit = ShadowFit((sx * k, sy * k), round(match, 4), round(background, 4), bool(found))
    if not found:
        return _sized_fallback(cloud, dark, reach_px), fit
    unit = np.array([sx, sy]) / np.hypot(sx, sy)
    lab, n = ndimage.label(c, structure=np.ones((3, 3), bool))
    rr_all, cc_all = np.nonzero(lab)
    cells = _members(lab[rr_all, cc_all], n, rr_all, cc_all)
    rows_all, cols_all = np.nonzero(cloud)
    pixels = _members(lab[rows_all // k, cols_all // k], n, rows_all, cols_all)
    moved = np.zeros((h, w), dtype=bool)
    spread = 0.0
    for obj in range(n):
        (r_full, c_full), (rr, cc) = pixels[obj], cells[obj]
        shift = np.array([sx, sy]) * k
        if rr.size >= MIN_OBJECT_CELLS:
            t, m = _object_distance(rr.astype(float), cc.astype(float), unit, reach, d, c)
            if m >= MIN_MATCH and m >= MIN_CONTRAST * background:
                shift = unit * t * k
        spread = max(spread, float(np.hypot(*shift)))
        r = np.rint(r_full + shift[1]).astype(int)
        q = np.rint(c_full + shift[0]).astype(int)
        ok = (r >= 0) & (r < h) & (q >= 0) & (q < w)
        moved[r[ok], q[ok]] = True
    # rounding to the working grid, the 2 px mask dilation, and the object's own extent in height
    tolerance = k + 2 + 0.1 * spread
    zone = ndimage.distance_transform_edt(~moved) <= tolerance if moved.any() else moved
    return zone, fit
