"""Connected change blobs of the whole-grid code raster, found strip by strip.

A blob is a 4-connected component of one change code (``new_water`` or ``lost_water``), the
same pixel sets ``rasterio.features.shapes(codes, connectivity=4)`` would polygonise. The grid
is labelled in strips of rows so memory stays bounded (one strip of ``int32`` labels, never the
whole grid). A component that reaches the bottom row of a strip may continue below: it is
carried over, and the next strip starts at the top of the highest such component, so every
component is labelled whole exactly once (a component taller than a strip makes the next strip
grow until it fits).

Each blob is described by a small picklable :class:`Blob` (code, bounding box, one seed pixel,
size) so worker processes can rebuild its mask and polygon from the code raster alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage

from tuban.pipelines.change_blob_ops import CROSS, pack_shelves

__all__ = ["Blob", "find_blobs", "blob_mask", "blob_polygons", "blob_polygon", "STRIP_PX"]

#: Pixels per labelling strip (rows = STRIP_PX // width); fixed, so results never depend on
#: block size or worker count.
STRIP_PX = 8_000_000
#: Blobs whose box has at most this many pixels carry their mask from the labelling (so it is
#: not labelled again); bigger ones rebuild it when needed, which keeps memory bounded.
KEEP_MASK_PX = 1 << 14


@dataclass(frozen=True)
class Blob:
    """One connected change blob of the grid.

    Args:
        value: its change code (see ``change_blocks.CODE``).
        rows, cols: half-open bounding box ``(start, stop)`` in grid pixels.
        seed_px: ``(row, col)`` of its first pixel in scan order (identifies it in the box).
        n_px: its size in pixels.
        mask: its :func:`blob_mask` when :func:`find_blobs` kept it (small boxes only), else
            None; not part of the blob's identity.
    """

    value: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    seed_px: tuple[int, int]
    n_px: int
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.rows[0] <= self.seed_px[0] < self.rows[1] and self.cols[0] <= self.seed_px[1] < self.cols[1]):
            raise ValueError(f"seed {self.seed_px} outside the blob's box {self.rows} x {self.cols}")


def find_blobs(codes: np.ndarray, values: Sequence[int], min_px: int, *,
               strip_px: int = STRIP_PX) -> Iterator[Blob]:
    """Every 4-connected component of ``codes == v`` (``v`` in ``values``) of ``min_px`` or more.

    Args:
        codes: ``(rows, cols)`` uint8 code raster (an array or a memory map).
        values: the codes whose components are wanted.
        min_px: smaller components are skipped.
        strip_px: pixels per labelling strip (memory bound; does not change the result).

    Yields:
        Blobs strip by strip, in scan order of their seed pixel within a strip.

    Example:
        >>> c = np.zeros((6, 6), np.uint8); c[1:3, 1:3] = 2; c[4, :] = 3
        >>> [(b.value, b.n_px, b.seed_px) for b in find_blobs(c, (2, 3), 1, strip_px=12)]
        [(2, 4, (1, 1)), (3, 6, (4, 0))]
    """
    height, width = codes.shape
    step = max(1, strip_px // max(1, width))
    start, end, prev_end = 0, 0, 0
    while end < height:
        end = min(height, end + step)
        last = end == height
        strip = np.asarray(codes[start:end])
        next_start = end
        found: list[Blob] = []
        for v in values:
            hit = strip == v
            for a, b, c_lo, c_hi in _hit_boxes(hit):
                # no component crosses a row without hits: each run of rows is labelled alone,
                # over the columns its hits span (the same components, far fewer pixels)
                labels, _ = ndimage.label(hit[a:b, c_lo:c_hi])
                for i, box in enumerate(ndimage.find_objects(labels), start=1):
                    if box is None:
                        continue
                    r0, r1 = box[0].start + a + start, box[0].stop + a + start
                    if r1 < prev_end:
                        continue  # lies whole above the previous strip's last row: already yielded
                    if r1 == end and not last:
                        next_start = min(next_start, r0)  # may continue below: label it again whole
                        continue
                    own = labels[box] == i
                    n_px = int(np.count_nonzero(own))
                    if n_px < min_px:
                        continue
                    seed_col = int(own[0].argmax())  # = np.argmax, without its wrapper
                    c0, c1 = box[1].start + c_lo, box[1].stop + c_lo
                    found.append(Blob(int(v), (r0, r1), (c0, c1), (r0, c0 + seed_col), n_px,
                                      own if own.size <= KEEP_MASK_PX else None))
                del labels
            del hit
        found.sort(key=lambda b: (b.seed_px, b.value))
        yield from found
        prev_end, start = end, next_start


def _hit_boxes(hit: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """``(row0, row1, col0, col1)`` of each run of consecutive rows holding a hit, cut to the
    columns its hits span."""
    rows = np.flatnonzero(hit.any(axis=1))
    if rows.size == 0:
        return
    cuts = np.flatnonzero(np.diff(rows) > 1)
    for a, b in zip(np.r_[rows[0], rows[cuts + 1]], np.r_[rows[cuts] + 1, rows[-1] + 1], strict=True):
        cols = np.flatnonzero(hit[a:b].any(axis=0))
        yield int(a), int(b), int(cols[0]), int(cols[-1]) + 1


def blob_mask(blob: Blob, codes: np.ndarray) -> np.ndarray:
    """Boolean mask of ``blob`` over its bounding box, from the grid's code raster."""
    if blob.mask is not None:
        return blob.mask
    (r0, r1), (c0, c1) = blob.rows, blob.cols
    labels, _ = ndimage.label(np.asarray(codes[r0:r1, c0:c1]) == blob.value, structure=CROSS)
    return labels == labels[blob.seed_px[0] - r0, blob.seed_px[1] - c0]


def blob_polygons(blobs: Sequence[Blob], codes: np.ndarray, transform: Affine,
                  atlas_width_px: int = 1024, masks: Sequence[np.ndarray] | None = None) -> list:
    """The blobs as polygons (holes included) in the grid's CRS, one per blob, in order.

    GDAL's polygoniser has a fixed cost per call far above the cost of a small blob, so the
    blobs' masks are packed side by side (one pixel apart, shelf by shelf) into one small
    atlas raster and polygonised in one call. Each polygon comes out in atlas pixel
    coordinates (exact integers), is moved back to its blob's place and mapped to the grid's
    CRS as GDAL does for a whole grid (``x = c + col * a + row * b``): the coordinates are the
    same to the last bit as polygonising the whole grid. ``masks``: the blobs'
    :func:`blob_mask`, when the caller already has them.
    """
    if not blobs:
        return []
    if masks is None:
        masks = [blob_mask(b, codes) for b in blobs]
    places, atlas_hw = pack_shelves([m.shape for m in masks], atlas_width_px)
    atlas = np.zeros(atlas_hw, dtype=np.uint8)
    owner = np.full(atlas.shape, -1, dtype=np.int32)
    for i, ((ay, ax), m) in enumerate(zip(places, masks, strict=True)):
        atlas[ay:ay + m.shape[0], ax:ax + m.shape[1]] |= m
        owner[ay:ay + m.shape[0], ax:ax + m.shape[1]] = i
    owners, pieces = [], []
    for g, _ in shapes(atlas, mask=atlas.view(bool), connectivity=4):
        x0, y0 = g["coordinates"][0][0]  # exterior ring starts at the top-left of its first pixel
        owners.append(int(owner[int(y0), int(x0)]))
        pieces.append(g["coordinates"])
    shifts = [(blobs[i].cols[0] - places[i][1], blobs[i].rows[0] - places[i][0]) for i in owners]
    out: list = [None] * len(blobs)
    for i, poly in zip(owners, _polygons(pieces, shifts, transform), strict=True):
        out[i] = poly if out[i] is None else shapely.union_all([out[i], poly])
    return out


def _polygons(pieces: list, shifts: list[tuple[int, int]], transform: Affine) -> list:
    """GDAL's polygons (lists of rings of atlas pixel corners), each moved by its ``(cols, rows)``
    shift and mapped to the grid CRS, built in one shapely call.

    The same coordinates as ``shapely.Polygon(rings[0], rings[1:])`` of each piece's rings
    mapped one by one (every point goes through the same arithmetic, in GDAL's geotransform
    order), without the per-polygon cost of building them one at a time.
    """
    if not pieces:
        return []
    t = transform
    ring_px = [len(r) for rings in pieces for r in rings]
    rings_per = [len(rings) for rings in pieces]
    px = np.array([xy for rings in pieces for r in rings for xy in r], dtype=np.float64)
    per_point = np.repeat(np.repeat(np.asarray(shifts, dtype=np.int64).reshape(-1, 2), rings_per, axis=0),
                          ring_px, axis=0)
    col, row = px[:, 0] + per_point[:, 0], px[:, 1] + per_point[:, 1]
    xy = np.column_stack([t.c + col * t.a + row * t.b, t.f + col * t.d + row * t.e])
    rings = shapely.linearrings(xy, indices=np.repeat(np.arange(len(ring_px)), ring_px))
    return list(shapely.polygons(rings, indices=np.repeat(np.arange(len(pieces)), rings_per)))


def blob_polygon(blob: Blob, codes: np.ndarray, transform: Affine):
    """One blob as a polygon in the grid's CRS (see :func:`blob_polygons`)."""
    return blob_polygons([blob], codes, transform)[0]
