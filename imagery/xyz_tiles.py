"""Cached web-map tile folders (``z/x/y.png|jpg``) read as one georeferenced raster.

Field offices often hold imagery as tiles saved by a web map or a tile downloader. The tile
indices are the georeference: at zoom ``z`` the Web Mercator square (EPSG:3857, half-width
20,037,508.34 m) is cut into ``2**z`` x ``2**z`` tiles, ``x`` growing east and ``y`` growing
south (the XYZ / "slippy map" scheme; TMS folders count ``y`` from the south and need
``scheme="tms"``). :class:`XyzTileMosaic` exposes the tiles of one zoom level as a raster
with an affine transform and reads any pixel window by decoding only the tiles it touches.
Missing tiles and fully transparent pixels read as invalid (nodata).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from pyproj import CRS

from tuban import RasterError

__all__ = ["WEB_MERCATOR", "ORIGIN_SHIFT_M", "XyzTileMosaic", "is_xyz_folder", "tile_transform"]

WEB_MERCATOR = CRS.from_epsg(3857)
#: Half the width of the Web Mercator square, metres.
ORIGIN_SHIFT_M = 20037508.342789244
_EXTS = (".png", ".jpg", ".jpeg", ".webp")
_INT = re.compile(r"^\d+$")


def tile_transform(z: int, x: int, y: int, tile_px: int) -> Affine:
    """Affine transform (EPSG:3857 metres) of tile ``z/x/y`` (XYZ scheme) of ``tile_px`` pixels.

    Example:
        >>> tile_transform(0, 0, 0, 256).c
        -20037508.342789244
    """
    tile_m = 2.0 * ORIGIN_SHIFT_M / (2 ** z)
    res = tile_m / tile_px
    return Affine(res, 0.0, -ORIGIN_SHIFT_M + x * tile_m, 0.0, -res, ORIGIN_SHIFT_M - y * tile_m)


def _zoom_dirs(root: Path) -> dict[int, Path]:
    return {int(p.name): p for p in root.iterdir() if p.is_dir() and _INT.match(p.name)}


def _tiles_of(zdir: Path) -> dict[tuple[int, int], Path]:
    tiles: dict[tuple[int, int], Path] = {}
    for xdir in zdir.iterdir():
        if not (xdir.is_dir() and _INT.match(xdir.name)):
            continue
        for f in xdir.iterdir():
            if f.suffix.lower() in _EXTS and _INT.match(f.stem):
                tiles[(int(xdir.name), int(f.stem))] = f
    return tiles


def is_xyz_folder(path: str | Path) -> bool:
    """True if ``path`` is a folder holding ``z/x/y.<image>`` tiles."""
    root = Path(path)
    if not root.is_dir():
        return False
    return any(_tiles_of(zdir) for zdir in _zoom_dirs(root).values())


@dataclass(frozen=True)
class _Grid:
    zoom: int
    x_min: int
    y_min: int
    cols: int
    rows: int
    tile_px: int


class XyzTileMosaic:
    """The tiles of one zoom level of an XYZ folder as one raster (3 bands, RGB, EPSG:3857).

    Args:
        root: folder holding ``z/x/y.png|jpg`` tiles.
        zoom: zoom level to read; default the highest present.
        scheme: ``"xyz"`` (y from the north, web maps) or ``"tms"`` (y from the south).
        cache_tiles: decoded tiles kept in memory (slices overlap, so tiles are reused).

    Raises:
        RasterError: no tiles, unknown zoom, undecodable or inconsistent tiles.
    """

    band_names = ("red", "green", "blue")
    count = 3
    crs = WEB_MERCATOR
    nodata = None
    dtype = "uint8"

    def __init__(self, root: str | Path, zoom: int | None = None, scheme: str = "xyz",
                 cache_tiles: int = 64) -> None:
        self.path = Path(root)
        if scheme not in ("xyz", "tms"):
            raise ValueError("scheme must be 'xyz' or 'tms'")
        zooms = _zoom_dirs(self.path) if self.path.is_dir() else {}
        with_tiles = {z: d for z, d in zooms.items() if _tiles_of(d)}
        if not with_tiles:
            raise RasterError(self.path, "no z/x/y.png|jpg tiles found")
        z = max(with_tiles) if zoom is None else zoom
        if z not in with_tiles:
            raise RasterError(self.path, f"no tiles at zoom {z}; zooms present: {sorted(with_tiles)}")
        tiles = _tiles_of(with_tiles[z])
        if scheme == "tms":
            tiles = {(x, (2 ** z - 1) - y): p for (x, y), p in tiles.items()}
        n = 2 ** z
        bad = [k for k in tiles if not (0 <= k[0] < n and 0 <= k[1] < n)]
        if bad:
            raise RasterError(self.path, f"tile index {bad[0]} outside zoom {z} (0..{n - 1})")
        self._tiles = tiles
        first = self._decode(next(iter(tiles.values())))
        tile_px = first.shape[0]
        if first.shape[0] != first.shape[1]:
            raise RasterError(next(iter(tiles.values())), f"tile is not square: {first.shape[:2]}")
        xs = [k[0] for k in tiles]
        ys = [k[1] for k in tiles]
        self._grid = _Grid(z, min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1, tile_px)
        self.width = self._grid.cols * tile_px
        self.height = self._grid.rows * tile_px
        self.transform = tile_transform(z, self._grid.x_min, self._grid.y_min, tile_px)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_tiles

    @property
    def zoom(self) -> int:
        return self._grid.zoom

    @property
    def tile_count(self) -> int:
        return len(self._tiles)

    def _decode(self, path: Path) -> np.ndarray:
        """``(rows, cols, 4)`` uint8 RGBA of one tile file (any PNG/JPEG mode)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGBA"))
        except (OSError, UnidentifiedImageError) as exc:
            raise RasterError(path, f"cannot decode tile ({exc})") from exc

    def _tile(self, key: tuple[int, int]) -> np.ndarray | None:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = self._tiles.get(key)
        if path is None:
            return None
        arr = self._decode(path)
        if arr.shape[:2] != (self._grid.tile_px, self._grid.tile_px):
            raise RasterError(path, f"tile size {arr.shape[:2]} differs from {self._grid.tile_px} px")
        self._cache[key] = arr
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arr

    def read(self, col_off: int, row_off: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Read a pixel window of the mosaic.

        Returns:
            ``(data, valid)``: ``(3, height, width)`` uint8 RGB and a boolean ``(height, width)``
            mask, False where tiles are missing or transparent.
        """
        t = self._grid.tile_px
        data = np.zeros((3, height, width), np.uint8)
        valid = np.zeros((height, width), bool)
        for ty in range(row_off // t, (row_off + height - 1) // t + 1):
            for tx in range(col_off // t, (col_off + width - 1) // t + 1):
                tile = self._tile((self._grid.x_min + tx, self._grid.y_min + ty))
                if tile is None:
                    continue
                # overlap of this tile with the window, in mosaic pixels
                c0, c1 = max(col_off, tx * t), min(col_off + width, (tx + 1) * t)
                r0, r1 = max(row_off, ty * t), min(row_off + height, (ty + 1) * t)
                if c0 >= c1 or r0 >= r1:
                    continue
                part = tile[r0 - ty * t:r1 - ty * t, c0 - tx * t:c1 - tx * t]
                data[:, r0 - row_off:r1 - row_off, c0 - col_off:c1 - col_off] = np.moveaxis(part[..., :3], -1, 0)
                valid[r0 - row_off:r1 - row_off, c0 - col_off:c1 - col_off] = part[..., 3] > 0
        return data, valid

    def read_decimated(self, max_px: int = 1024, max_tiles: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """A decimated RGB read of the whole mosaic (nearest, every n-th pixel of each tile).

        At most ``max_tiles`` tiles, evenly spread, are decoded (enough for robust percentiles);
        the others read as invalid.
        """
        step = max(1, int(np.ceil(max(self.width, self.height) / max_px)))
        t = self._grid.tile_px
        sub = len(range(0, t, step))
        data = np.zeros((3, self._grid.rows * sub, self._grid.cols * sub), np.uint8)
        valid = np.zeros(data.shape[1:], bool)
        keys = sorted(self._tiles)
        for x, y in keys[::max(1, -(-len(keys) // max_tiles))]:
            tile = self._tile((x, y))
            assert tile is not None
            r, c = (y - self._grid.y_min) * sub, (x - self._grid.x_min) * sub
            small = tile[::step, ::step]
            data[:, r:r + sub, c:c + sub] = np.moveaxis(small[..., :3], -1, 0)
            valid[r:r + sub, c:c + sub] = small[..., 3] > 0
        return data, valid
