"""Speed round 6 of ``tuban change``: each shortcut gives exactly the plain computation.

The preparation's sample windows are read through the tile-aligned windows covering them and
the decoded tiles are kept for the block reads (:mod:`tuban.pipelines.change_tiles`). These
tests pin the samples and every block read against plain reads, bit for bit (hypothesis over
tile sizes, grid offsets, sample positions and block sizes), check that no kept tile is
decoded again, and compare whole runs with the cache and without it. The scene brightness
levels (median and 1st percentile of millions of sampled pixels) come from a histogram
selection instead of numpy's partitions: pinned against ``np.nanmedian`` /
``np.nanpercentile`` bit for bit. Whole runs are also compared byte for byte by
``benchmarks/check_change_identical.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

import tuban.imagery.masks as masks
import tuban.pipelines.change as ch
import tuban.pipelines.change_blocks as cb
import tuban.pipelines.change_prepare as cp
import tuban.pipelines.change_tiles as ct
from tuban.imagery.align import block_windows, common_grid, open_on_grid
from tuban.imagery.raster_io import open_date
from tuban.pipelines.change import ChangeSettings, detect_changes

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402


class _FakeTiff:
    """A tiled image read window by window; counts the tile decodes each read costs."""

    def __init__(self, data: np.ndarray, tiles: ct.TileGrid) -> None:
        self.data, self.grid, self.decoded = data, tiles, 0

    def read(self, bands, window, out=None):
        r, c, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        self.decoded += len(self.grid.span(r, h, 0)) * len(self.grid.span(c, w, 1))
        values = self.data[[b - 1 for b in bands], r:r + h, c:c + w]
        if out is None:
            return values.copy()
        out[...] = values
        return out


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 5), st.integers(0, 5), st.integers(6, 40),
       st.integers(6, 40), st.integers(2, 30), st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_kept_tiles_give_the_plain_reads(tile_h, tile_w, off_r, off_c, height, width, block, seed, per_side):
    tiles = ct.TileGrid(tile_h, tile_w, off_r, off_c, height, width, "uint16")
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 65535, (3, height, width)).astype(np.uint16)
    size = int(rng.integers(1, min(height, width) + 1))
    grid = type("G", (), {"width": width, "height": height})()
    windows = cp._sample_windows(grid, size, per_side)
    kept = ct.SampleTiles(tiles, [3, 1])
    reader = _FakeTiff(data, tiles)
    for w in windows:
        cover = tiles.cover(w)
        assert cover.row_off <= w.row_off and cover.col_off <= w.col_off
        assert cover.row_off + cover.height >= w.row_off + w.height and cover.col_off + cover.width >= w.col_off + w.width
        kept.add(cover, reader.read([3, 1], cover))
    n_kept, plain = len(kept), 0
    reader.decoded = 0
    for r in range(0, height, block):
        for c in range(0, width, block):
            win = Window(c, r, min(block, width - c), min(block, height - r))
            assert np.array_equal(kept.read(reader, win), data[[2, 0], r:r + win.height, c:c + win.width])
            plain += len(tiles.span(r, int(win.height), 0)) * len(tiles.span(c, int(win.width), 1))
    assert len(kept) == 0  # every kept tile was taken whole by the blocks, then dropped
    if block % tile_h == 0 and block % tile_w == 0 and off_r == off_c == 0:
        assert reader.decoded == plain - n_kept  # no kept tile decoded again


def _tiled_pair(tmp: Path, size: int, tile: int, seed: int = 0) -> tuple[Path, Path]:
    """Two dates of random 4-band uint16 pixels (some nodata), tiled GeoTIFF."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in ("before.tif", "after.tif"):
        data = rng.integers(1, 4000, (4, size, size)).astype(np.uint16)
        data[:, rng.random((size, size)) < 0.01] = 0
        path = tmp / name
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint16",
                           crs="EPSG:32650", transform=Affine(10, 0, 400000, 0, -10, 2700000), nodata=0,
                           tiled=True, blockxsize=tile, blockysize=tile) as ds:
            ds.write(data)
            for i, role in enumerate(("blue", "green", "red", "nir"), start=1):
                ds.set_band_description(i, role)
        paths.append(path)
    return paths[0], paths[1]


def _read_samples(src, grid, windows, shift=(0.0, 0.0)):
    """The preparation's sample reads (``_read_cat``) as one band dict per window, and the kept tiles."""
    cat, _, _, kept = cp._read_cat(src, grid, windows, shift)
    return cp._windows_of(cat, windows), kept


@pytest.mark.parametrize("size,tile,block", [(600, 128, 256), (600, 128, 200), (520, 64, 512)])
def test_samples_and_blocks_of_a_tiled_file_are_the_plain_reads(tmp_path, size, tile, block):
    b, a = _tiled_pair(tmp_path, size, tile)
    src = open_date([b])
    grid = common_grid(src, open_date([a]))
    windows = cp._sample_windows(grid, 512, 3)
    samples, kept = _read_samples(src, grid, windows)
    assert kept is not None and len(kept) > 0
    with open_on_grid(src, grid) as reader:
        plain = [cb.read_date(reader, src, w) for w in windows]
        for got, want in zip(samples, plain, strict=True):
            assert got.keys() == want.keys()
            for role in got:
                assert np.array_equal(got[role], want[role], equal_nan=True)
        bands = [src.roles[r] for r in src.roles]
        for w in block_windows(grid, block):
            assert np.array_equal(cb._read_raw(reader, src, w, kept), reader.read(bands, w))


def test_a_date_larger_than_the_grid_reads_its_kept_tiles_at_the_grid_offset(tmp_path, monkeypatch):
    """The before date covers more than the after date: the grid is the overlap, so the before
    date is read at a pixel offset that does not follow its 128 px tiles."""
    b, _ = _tiled_pair(tmp_path, 600, 128, seed=1)
    small = tmp_path / "small"
    small.mkdir()
    _, a = _tiled_pair(small, 480, 64, seed=2)
    with rasterio.open(a, "r+") as ds:  # 37 columns right and 50 rows down of the before date's corner
        ds.transform = Affine(10, 0, 400000 + 370, 0, -10, 2700000 - 500)
    src_b, src_a = open_date([b]), open_date([a])
    grid = common_grid(src_b, src_a)
    assert (grid.width, grid.height) == (480, 480)
    windows = cp._sample_windows(grid, 512, 3)
    samples, kept = _read_samples(src_b, grid, windows)
    assert kept is not None and (kept.grid.row_off_px, kept.grid.col_off_px) == (50, 37)
    with open_on_grid(src_b, grid) as reader:
        bands = [src_b.roles[r] for r in src_b.roles]
        assert all(np.array_equal(s[r], p[r], equal_nan=True) for s, p in
                   zip(samples, [cb.read_date(reader, src_b, w) for w in windows], strict=True) for r in s)
        for w in block_windows(grid, 100):
            assert np.array_equal(cb._read_raw(reader, src_b, w, kept), reader.read(bands, w))
    with_tiles = detect_changes(src_b, src_a, ChangeSettings(block_px=100))
    monkeypatch.setattr(ct, "tile_grid", lambda reader, grid: None)
    plain = detect_changes(src_b, src_a, ChangeSettings(block_px=100))
    assert with_tiles.patches.to_json() == plain.patches.to_json()
    assert with_tiles.stats["pixels"] == plain.stats["pixels"]


def test_striped_or_warped_dates_keep_no_tiles(tmp_path):
    b, a = cs.pair(tmp_path)  # 64 px tiles
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    _, a_shift = cs.pair(shifted, after_transform=cs.TRANSFORM @ Affine.translation(1.5, 0.5))
    src_b, src_a = open_date([b]), open_date([a_shift])
    grid = common_grid(src_b, src_a)
    windows = cp._sample_windows(grid, 512, 3)
    assert _read_samples(src_b, grid, windows)[1] is not None
    assert _read_samples(src_a, grid, windows, (1.5, 0.5))[1] is None  # warped read
    striped = tmp_path / "striped.tif"
    with rasterio.open(b) as ds:
        profile = {**ds.profile, "tiled": False, "blockysize": 8}
        profile.pop("blockxsize", None)
        with rasterio.open(striped, "w", **profile) as out:
            out.write(ds.read())
            out.descriptions = ds.descriptions
    src_s = open_date([striped])
    assert _read_samples(src_s, common_grid(src_s, src_b), windows)[1] is None


def test_kept_tiles_stay_within_their_memory_budget(tmp_path, monkeypatch):
    b, a = _tiled_pair(tmp_path, 600, 128)
    src = open_date([b])
    grid = common_grid(src, open_date([a]))
    windows = cp._sample_windows(grid, 512, 3)
    samples, kept = _read_samples(src, grid, windows)
    assert kept is not None
    n_all = len(kept)
    monkeypatch.setattr(ct, "MAX_KEPT_BYTES", 0)
    samples_alone, none = _read_samples(src, grid, windows)
    assert none is None
    monkeypatch.setattr(ct, "MAX_KEPT_BYTES", 600 * 600 * 4 * 2)  # room for some covering windows only
    samples_some, some = _read_samples(src, grid, windows)
    assert 0 < len(some) < n_all
    for got, alone, partly in zip(samples, samples_alone, samples_some, strict=True):
        assert all(np.array_equal(got[r], alone[r], equal_nan=True) for r in got)
        assert all(np.array_equal(got[r], partly[r], equal_nan=True) for r in got)
    with open_on_grid(src, grid) as reader:
        bands = [src.roles[r] for r in src.roles]
        for w in block_windows(grid, 256):
            assert np.array_equal(cb._read_raw(reader, src, w, some), reader.read(bands, w))


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_with_and_without_kept_tiles_are_identical(tmp_path, monkeypatch, workers):
    b, a = cs.pair(tmp_path, cloud_box=(150, 20, 190, 60))  # a cloud: blocks are coded again with a halo
    settings_ = ChangeSettings(block_px=96, workers=workers)
    copied = []
    take = ct.SampleTiles._take

    def counted_take(self, *args):
        piece = take(self, *args)
        copied.append(piece is not None)
        return piece

    monkeypatch.setattr(ct.SampleTiles, "_take", counted_take)
    held = dict(ct._REGISTRY)  # other tests' prepared jobs may still hold theirs
    with_tiles = detect_changes(open_date([b]), open_date([a]), settings_)
    assert ct._REGISTRY == held  # this run's tiles released after the blocks
    if workers == 1:  # (worker processes count in their own memory)
        assert sum(copied) >= 16  # the 240 px sample window is the whole grid: 16 tiles of 64 px
    monkeypatch.setattr(ct, "tile_grid", lambda reader, grid: None)
    plain = detect_changes(open_date([b]), open_date([a]), settings_)
    assert len(with_tiles.patches) > 0
    assert with_tiles.patches.to_json() == plain.patches.to_json()
    assert {k: v for k, v in with_tiles.stats.items() if k not in ("seconds", "cpu_seconds")} == {
        k: v for k, v in plain.stats.items() if k not in ("seconds", "cpu_seconds")}


def test_a_failed_job_leaves_no_kept_tiles(tmp_path, monkeypatch):
    b, a = cs.pair(tmp_path)

    def boom(*args, **kwargs):
        raise RuntimeError("block stage failed")

    monkeypatch.setattr(ch, "code_blocks", boom)
    held = dict(ct._REGISTRY)  # other tests' prepared jobs may still hold theirs
    with pytest.raises(RuntimeError) as failed:
        detect_changes(open_date([b]), open_date([a]), ChangeSettings())
    assert failed.traceback  # the traceback keeps the failed job alive: released at once all the same
    assert ct._REGISTRY == held


def _values(kind: int, n: int, seed: int) -> np.ndarray:
    """Non-negative float32 pixel-like values of one of several shapes."""
    rng = np.random.default_rng(seed)
    if kind == 0:  # integer DNs (uint16 bands), many ties
        return rng.integers(0, 4000, n).astype(np.float32)
    if kind == 1:  # reflectance, continuous
        return rng.random(n, dtype=np.float32)
    if kind == 2:  # heavy tail and zeros
        v = rng.lognormal(0.0, 3.0, n).astype(np.float32)
        v[rng.random(n) < 0.2] = 0.0
        return v
    if kind == 3:  # a few distinct values, tiny (subnormal) and huge ones
        return rng.choice(np.array([0.0, 1e-40, 1e-30, 3.0, 3.0000002, 1e30, 3e38], np.float32), n)
    return (rng.integers(0, 3, n) * 3 + rng.integers(0, 1000, n)).astype(np.float32) / np.float32(3)  # visible means


def _numpy_levels(values: np.ndarray) -> tuple[float, float]:
    return float(np.nanmedian(values.copy())), float(np.nanpercentile(values.copy(), 1))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4), st.integers(2, 700), st.integers(0, 2**32 - 1))
def test_histogram_selection_gives_numpys_median_and_percentile(kind, n, seed):
    values = _values(kind, n, seed)
    want = _numpy_levels(values)
    old = masks._SELECT_MIN
    masks._SELECT_MIN = 2  # the selection at every size (the job uses it from 65,536 values)
    try:
        got = masks._median_and_p1(values.copy())
    finally:
        masks._SELECT_MIN = old
    assert np.array_equal(np.array(got), np.array(want))  # bit for bit (0.0 vs -0.0 included)
    assert [np.signbit(x) for x in got] == [np.signbit(x) for x in want]


@pytest.mark.parametrize("kind", range(5))
def test_histogram_selection_on_sample_sized_arrays(kind):
    for n, seed in ((65_536, 1), (100_001, 2), (2_359_296, 3)):
        values = _values(kind, n, seed)
        assert masks._median_and_p1(values.copy()) == _numpy_levels(values)


def test_values_the_selection_cannot_order_take_numpys_path():
    rng = np.random.default_rng(4)
    for bad in (-1.0, -0.0, np.inf):
        values = rng.random(70_000).astype(np.float32)
        values[::7] = bad
        got = masks._median_and_p1(values.copy())
        assert np.array_equal(np.array(got), np.array(_numpy_levels(values)))


def test_scene_brightness_levels_are_numpys(tmp_path):
    rng = np.random.default_rng(5)
    bands = {r: rng.integers(1, 3000, (300, 300)).astype(np.float32) for r in ("blue", "green", "red", "nir")}
    valid = rng.random((300, 300)) < 0.9
    got = masks.scene_brightness(bands, valid)
    vis = masks._visible(bands)[valid]
    nir = bands["nir"][valid]
    assert (got.visible, got.visible_floor) == _numpy_levels(vis)
    assert (got.nir, got.nir_floor) == _numpy_levels(nir)
