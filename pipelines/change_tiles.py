"""Tiles the preparation decoded for its sample reads, reused by the block reads.

The preparation reads nine 512 px sample windows per date at positions that do not follow the
file's tiles, so each decodes up to four tiles (50 of the 400 tiles of a 10,000 px date of
512 px tiles). The block stage would decode all of them again. Here the samples are read
through the tile-aligned windows covering them instead (the same tiles decoded, the same
pixels sliced out) and those raw pixels are kept, so a block read copies them instead of
decoding them again and asks GDAL only for the rest of its window.

Only direct reads of a tiled GeoTIFF take part (a date on the comparison grid without
resampling, :func:`tuban.imagery.align.open_on_grid`): a window read of such a file holds the
same values whether it is read whole or in parts. Warped or mosaicked dates, striped files and
tiles much larger than the samples are read as before. The kept tiles are registered per job
(:func:`register`) and released when the block stage ends (:func:`release`); forked worker
processes inherit them, other processes (dask) simply read everything. Output never depends
on whether a tile came from here or from the file.
"""

from __future__ import annotations

import mmap
import threading
import weakref
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

__all__ = ["TileGrid", "SampleTiles", "tile_grid", "register", "release", "tiles_of"]

#: The covering window of a sample may hold at most this many times the sample's pixels
#: (tiles of 512 px around a 512 px sample: at most 4); else the samples are read alone.
MAX_COVER_FACTOR = 4
#: ... and a date's kept covering windows at most this many bytes in all (uint16, 4 bands,
#: 512 px tiles: 43 MB at 10,000 px), so the kept tiles never cost more memory than this per date.
MAX_KEPT_BYTES = 64 << 20


@dataclass(frozen=True)
class TileGrid:
    """The tiles of a date read directly on the comparison grid.

    Attributes:
        rows_px, cols_px: tile height and width in pixels.
        row_off_px, col_off_px: dataset pixel = grid pixel + offset (rows, columns).
        height_px, width_px: the grid's size.
        dtype: the raw pixel type every band of the file has.
    """

    rows_px: int
    cols_px: int
    row_off_px: int
    col_off_px: int
    height_px: int
    width_px: int
    dtype: str

    def span(self, start_px: int, length_px: int, axis: int) -> range:
        """Indices of the tiles along ``axis`` (0 rows, 1 columns) that grid pixels
        ``start_px .. start_px + length_px - 1`` fall in."""
        size, off = (self.rows_px, self.row_off_px) if axis == 0 else (self.cols_px, self.col_off_px)
        return range((start_px + off) // size, (start_px + length_px - 1 + off) // size + 1)

    def extent(self, index: int, axis: int) -> tuple[int, int]:
        """Grid pixels ``(start, stop)`` of tile ``index`` along ``axis``, clipped to the grid."""
        size, off, n = ((self.rows_px, self.row_off_px, self.height_px) if axis == 0
                        else (self.cols_px, self.col_off_px, self.width_px))
        return max(0, index * size - off), min(n, (index + 1) * size - off)

    def cover(self, window: Window) -> Window:
        """The tile-aligned window (clipped to the grid) covering ``window``."""
        rows = self.span(int(window.row_off), int(window.height), 0)
        cols = self.span(int(window.col_off), int(window.width), 1)
        r0, r1 = self.extent(rows[0], 0)[0], self.extent(rows[-1], 0)[1]
        c0, c1 = self.extent(cols[0], 1)[0], self.extent(cols[-1], 1)[1]
        return Window(c0, r0, c1 - c0, r1 - r0)


def tile_grid(reader, grid) -> TileGrid | None:
    """The :class:`TileGrid` of a grid reader, or None unless it reads a tiled GeoTIFF directly.

    ``reader`` is a :class:`tuban.imagery.align.GridReader`; a direct reader has an integer
    pixel offset into its dataset, a warped one none.
    """
    offset, ds = reader.offset_px, reader.dataset
    if offset is None or ds is None or getattr(ds, "driver", None) != "GTiff":
        return None
    shapes, dtypes = set(ds.block_shapes), set(ds.dtypes)
    if len(shapes) != 1 or len(dtypes) != 1:
        return None
    rows_px, cols_px = shapes.pop()
    if cols_px >= ds.width:  # strips: a sample would decode whole rows of the file
        return None
    return TileGrid(int(rows_px), int(cols_px), int(offset[1]), int(offset[0]), int(grid.height),
                    int(grid.width), dtypes.pop())


class SampleTiles:
    """Raw tiles of one date (``(bands, rows, cols)`` as read, bands in the job's order), kept
    from the sample reads, each until a block has taken all of its pixels."""

    def __init__(self, tiles: TileGrid, bands: list[int]) -> None:
        self.grid = tiles
        self.bands = list(bands)
        self._pieces: dict[tuple[int, int], np.ndarray] = {}
        self._left: dict[tuple[int, int], int] = {}  # pixels of a piece no block has taken yet
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pieces)

    def add(self, window: Window, raw: np.ndarray) -> None:
        """Keep the tiles of ``raw``, read at the tile-aligned grid ``window``."""
        g = self.grid
        r0, c0 = int(window.row_off), int(window.col_off)
        for i in g.span(r0, int(window.height), 0):
            a, b = g.extent(i, 0)
            for j in g.span(c0, int(window.width), 1):
                c, d = g.extent(j, 1)
                piece = raw[:, a - r0:b - r0, c - c0:d - c0]
                with self._lock:
                    self._pieces[(i, j)] = piece
                    self._left[(i, j)] = piece.shape[1] * piece.shape[2]

    def read(self, reader, window: Window) -> np.ndarray:
        """``reader.read(bands, window)``: kept tiles copied, the rest read from the file.

        Per row of tiles, each run of tiles not kept is one read; a window meeting no kept
        tile is one read, as without this cache.
        """
        g = self.grid
        r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        rows, cols = g.span(r0, h, 0), g.span(c0, w, 1)
        if not any((i, j) in self._pieces for i in rows for j in cols):
            return reader.read(self.bands, window)
        out = np.empty((len(self.bands), h, w), dtype=g.dtype)
        for i in rows:
            a, b = g.extent(i, 0)
            a, b = max(a, r0), min(b, r0 + h)
            run: list[int] = []
            for j in [*cols, None]:
                piece = self._take(i, j, a, b, c0, w) if j is not None else None
                if j is not None and piece is None:
                    run.append(j)
                    continue
                if run:  # the tiles not kept before this one: one read
                    c, d = max(g.extent(run[0], 1)[0], c0), min(g.extent(run[-1], 1)[1], c0 + w)
                    reader.read(self.bands, Window(c, a, d - c, b - a), out=out[:, a - r0:b - r0, c - c0:d - c0])
                    run = []
                if piece is not None:
                    (c, d), values = piece
                    out[:, a - r0:b - r0, c - c0:d - c0] = values
        return out

    def _take(self, i: int, j: int, a: int, b: int, c0: int, w: int):
        """``((start, stop) columns, values)`` of kept tile ``(i, j)`` in grid rows ``a:b`` and
        columns ``c0:c0 + w``, or None when not kept; a tile fully taken is dropped."""
        with self._lock:
            piece = self._pieces.get((i, j))
            if piece is None:
                return None
            pr0, pc0 = self.grid.extent(i, 0)[0], self.grid.extent(j, 1)[0]
            c, d = max(pc0, c0), min(pc0 + piece.shape[2], c0 + w)
            values = piece[:, a - pr0:b - pr0, c - pc0:d - pc0]
            self._left[(i, j)] -= (b - a) * (d - c)
            if self._left[(i, j)] <= 0:  # every pixel delivered (blocks never overlap)
                del self._pieces[(i, j)], self._left[(i, j)]
        return (c, d), values


def read_samples(reader, grid, bands: list[int], windows: list[Window]) -> tuple[list[np.ndarray], SampleTiles | None]:
    """Raw ``(bands, rows, cols)`` arrays of sample ``windows`` and the tiles decoded for them.

    The samples are the same pixels as ``reader.read(bands, window)``; when the reader reads
    a tiled GeoTIFF directly, they are sliced from reads of their tile-aligned covering
    windows, whose tiles are returned for the block reads (else None). A window whose cover
    is too large (:data:`MAX_COVER_FACTOR`) or no longer fits the date's budget
    (:data:`MAX_KEPT_BYTES`, in window order) is read alone.
    """
    tiles = tile_grid(reader, grid)
    if tiles is None:
        return [reader.read(bands, w) for w in windows], None
    kept, out, budget = SampleTiles(tiles, bands), [], MAX_KEPT_BYTES
    px_bytes = len(bands) * np.dtype(tiles.dtype).itemsize
    for w in windows:
        cover = tiles.cover(w)
        if _area(cover) > MAX_COVER_FACTOR * _area(w) or _area(cover) * px_bytes > budget:
            out.append(reader.read(bands, w))  # its tiles are decoded again by the blocks
            continue
        budget -= _area(cover) * px_bytes
        raw = reader.read(bands, cover, out=_own_pages((len(bands), int(cover.height), int(cover.width)),
                                                      tiles.dtype))
        kept.add(cover, raw)
        r, c = int(w.row_off - cover.row_off), int(w.col_off - cover.col_off)
        out.append(raw[:, r:r + int(w.height), c:c + int(w.width)])
    return out, (kept if len(kept) else None)


def _own_pages(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """An array in a private anonymous memory map of its own: its memory goes back to the
    system as soon as the last of its tiles is dropped (a heap block of freed tiles would
    stay in the process until the job ends)."""
    nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def _area(window: Window) -> int:
    return int(window.width) * int(window.height)


_REGISTRY: dict[str, tuple[SampleTiles | None, SampleTiles | None]] = {}


def register(job, before: SampleTiles | None, after: SampleTiles | None) -> None:
    """Make a job's kept tiles (before, after) available to the block reads of its ``token``
    in this process (and in worker processes forked after this call), until :func:`release`
    or until ``job`` is gone (a job that failed)."""
    if before is not None or after is not None:
        entry = _REGISTRY[job.token] = (before, after)
        weakref.finalize(job, _release_entry, job.token, entry)


def tiles_of(token: str, date: int) -> SampleTiles | None:
    """The kept tiles of date ``date`` (0 before, 1 after) of job ``token``, if any."""
    entry = _REGISTRY.get(token)
    return None if entry is None else entry[date]


def release(token: str) -> None:
    """Forget a job's kept tiles."""
    _REGISTRY.pop(token, None)


def _release_entry(token: str, entry: tuple) -> None:
    """:func:`release`, unless a later job of the same token registered tiles of its own."""
    if _REGISTRY.get(token) is entry:
        del _REGISTRY[token]
