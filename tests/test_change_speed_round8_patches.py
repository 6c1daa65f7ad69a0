"""Speed round 8 of ``tuban change`` (patch stage): measures of a whole chunk give exactly the per-blob ones.

:func:`tuban.pipelines.change_patches._chunk_parts` measures the single-part gains of a chunk of
blobs on one atlas of their windows (:mod:`tuban.pipelines.change_chunk`) instead of window by
window in :func:`~tuban.pipelines.change_patches._examine`. These tests pin the segmented
medians against :func:`median32`, every yielded part (polygon, shape stats, contrast, solidity
and every fact, bit for bit) against ``_examine`` on random stacks, and a whole run against the
per-blob path; whole runs are also compared byte for byte by ``benchmarks/check_change_identical.py``.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

import tuban.pipelines.change_patches as cp
from tuban.imagery.ponds import ShapeSettings, shape_stats_many
from tuban.imagery.raster_io import open_date
from tuban.pipelines.change import ChangeSettings, detect_changes
from tuban.pipelines.change_blob_ops import median32
from tuban.pipelines.change_blobs import blob_mask, blob_polygons, find_blobs
from tuban.pipelines.change_blocks import CODE, dequantise_index
from tuban.pipelines.change_chunk import pack_shelves, segment_medians

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402

INDEX = dequantise_index(np.arange(256, dtype=np.uint8))
LEVELS = np.arange(256, dtype=np.float32)


def _bits(x) -> bytes:
    """The exact value: float32 and float64 scalars by their bytes, NaN equal to NaN."""
    if isinstance(x, np.floating):
        return x.dtype.str.encode() + x.tobytes()
    if isinstance(x, float):
        return b"f" + struct.pack("<d", x)
    return repr(x).encode()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(0, 400), st.booleans())
def test_segment_medians_are_each_owners_median32(seed, n, size, index_values):
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, n, size)
    codes = rng.integers(1 if index_values else 0, rng.integers(2, 257), size).astype(np.uint8)
    values = INDEX if index_values else LEVELS
    med, count, lo, hi = segment_medians(owner, codes, n, values)
    for i in range(n):
        vals = values[codes[owner == i]]
        assert count[i] == vals.size
        if vals.size == 0:
            assert np.isnan(med[i]) and np.isnan(lo[i]) and np.isnan(hi[i])
            continue
        assert _bits(med[i]) == _bits(median32(vals)) == _bits(np.float32(np.median(vals)))
        assert lo[i] == np.minimum.reduce(vals) and hi[i] == np.maximum.reduce(vals)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 300)), min_size=1, max_size=30), st.integers(1, 400))
def test_shelves_hold_every_rectangle_apart_with_an_empty_pixel(sizes, min_width):
    places, (h, w) = pack_shelves(sizes, min_width)
    used = np.zeros((h, w), np.int32)
    for (y, x), (rh, rw) in zip(places, sizes, strict=True):
        assert y >= 1 and x >= 1 and y + rh + 1 <= h and x + rw + 1 <= w
        used[y - 1:y + rh + 1, x - 1:x + rw + 1] += 1  # with its empty border
    for (y, x), (rh, rw) in zip(places, sizes, strict=True):
        assert used[y:y + rh, x:x + rw].max(initial=0) <= 1  # no other rectangle (or its border) overlaps


def _random_job(seed: int, res: float):
    """A random result stack with gains of every size (some on the grid's edges, some noisy
    enough to be split) and its job."""
    rng = np.random.default_rng(seed)
    h, w = 90, 110
    codes = np.full((h, w), CODE["land"], np.uint8)
    before = np.clip(rng.normal(90, 30, (h, w)), 1, 255)
    after = np.clip(rng.normal(100, 30, (h, w)), 1, 255)
    bright = rng.integers(0, 256, (h, w))
    for k in range(16):
        r, c = rng.integers(-3, h - 2), rng.integers(-3, w - 2)
        box = slice(max(0, r), r + rng.integers(2, 18)), slice(max(0, c), c + rng.integers(2, 18))
        codes[box] = CODE["new_water"]
        spread = 40 if k % 4 == 0 else 2  # one in four may split
        after[box] = rng.integers(120, 220) + rng.integers(-spread, spread + 1, after[box].shape)
        before[box] = rng.integers(60, 170) + rng.integers(-20, 21, before[box].shape)
        bright[box] = rng.integers(10, 90) + rng.integers(-15, 16, bright[box].shape)
    for box in ((slice(40, 44), slice(40, 44)), (slice(60, 63), slice(70, 76))):  # cores of exactly 4 px
        codes[box] = CODE["new_water"]
        after[box] = 180
    codes[rng.random((h, w)) < 0.03] = CODE["new_water"]
    codes[rng.random((h, w)) < 0.02] = CODE["water"]
    codes[rng.random((h, w)) < 0.01] = CODE["lost_water"]
    stack = np.zeros((5, h, w), np.uint8)
    stack[0] = codes
    for layer, q in ((1, before), (2, after), (3, bright)):
        stack[layer] = np.clip(q, 0, 255).astype(np.uint8)
    stack[1:3][rng.random((2, h, w)) < 0.02] = 0  # NaN index
    t = SimpleNamespace(water=float(INDEX[140]), weak_water=float(INDEX[115]), change=float(rng.uniform(0.05, 0.4)),
                        water_mean=0.3, land_mean=-0.35, dark_level=0.05, land_brightness=0.11)
    grid = SimpleNamespace(transform=Affine(res, 0.0, 5e5 + 0.37, 0.0, -res, 4e6 - 0.11), pixel_size_m=res,
                           width=w, height=h, crs="EPSG:32650")
    return stack, SimpleNamespace(grid=grid, thresholds=t)


@pytest.mark.parametrize("seed", range(12))
def test_chunk_parts_are_what_examine_yields(seed):
    res = (10.0, 6.0, 4.0)[seed % 3]
    stack, job = _random_job(seed, res)
    shape_settings = ShapeSettings(min_area_m2=(200.0, 100.0, 50.0)[seed % 3])
    blobs = list(find_blobs(stack[0], (CODE["new_water"], CODE["lost_water"]), 2))
    masks = [blob_mask(b, stack[0]) for b in blobs]
    polygons = blob_polygons(blobs, stack[0], job.grid.transform, masks=masks)
    stats = shape_stats_many(polygons, res)
    bounds = shapely.bounds(polygons).tolist()
    measured = cp._chunk_parts(polygons, blobs, masks, stats, bounds, stack, job, shape_settings)
    seen = {"chunk": 0, "split": 0, "refill": 0}
    for i, (geom, b) in enumerate(zip(polygons, blobs, strict=True)):
        plain = list(cp._examine(geom, b.value, stack, job, shape_settings, res * res, (b, masks[i]),
                                 geom_stats=stats[i], bounds=tuple(bounds[i])))
        if measured[i] is None:
            seen["split"] += b.value == CODE["new_water"]
            continue
        seen["chunk"] += 1
        assert len(measured[i]) == len(plain)
        for got, want in zip(measured[i], plain, strict=True):
            assert got[0] is want[0] and got[1] == want[1] and got[3] == want[3]
            assert _bits(got[2]) == _bits(want[2]) and _bits(got[4]) == _bits(want[4])
            facts, want_facts = dict(got[5]), dict(want[5])
            want_mask = want_facts.pop("mask_px")
            if "mask_px" in facts:  # only where the refill test may need it
                seen["refill"] += 1
                wt, inside = facts.pop("mask_px")
                assert wt == want_mask[0] and np.array_equal(inside, want_mask[1])
            else:
                assert not cp.is_refill_candidate("new_pond", want_facts, cp.MIN_FRAME_STEP)
            assert list(facts) == list(want_facts)
            assert {k: _bits(v) for k, v in facts.items()} == {k: _bits(v) for k, v in want_facts.items()}
    assert seen["chunk"] >= 5 and seen["split"] >= 1
    if seed < 3:  # the random scenes reach the refill branch too
        assert seen["refill"] >= 1


def test_runs_with_and_without_the_chunk_measures_are_identical(tmp_path, monkeypatch):
    b, a = cs.pair(tmp_path)
    settings_ = ChangeSettings(block_px=96)
    calls = []
    chunk_parts = cp._chunk_parts

    def counted(*args):
        out = chunk_parts(*args)
        calls.append(sum(p is not None for p in out))
        return out

    monkeypatch.setattr(cp, "_chunk_parts", counted)
    fast = detect_changes(open_date([b]), open_date([a]), settings_)
    assert sum(calls) > 0  # the chunk path measured some parts
    monkeypatch.setattr(cp, "_chunk_parts", lambda polygons, *args: [None] * len(polygons))
    plain = detect_changes(open_date([b]), open_date([a]), settings_)
    assert len(fast.patches) > 0
    assert fast.patches.to_json() == plain.patches.to_json()
