"""Speed round 8 of ``tuban change`` (patch stage): measures of a whole chunk give exactly the per-blob ones.

:func:`tuban.pipelines.change_patches._chunk_parts` measures the single-part gains of a chunk of
blobs on one atlas of their windows (:mod:`tuban.pipelines.change_chunk`) instead of window by
window in :func:`~tuban.pipelines.change_patches._examine`. These tests pin the segmented
medians against :func:`median32`, every yielded part (polygon, shape stats, contrast, solidity
and every fact, bit for bit) against ``_examine`` on random stacks, a whole run against the
per-blob path, and the output frame built column by column (one transform for polygons and
centroids) against the frame built as before; whole runs are also compared byte for byte by ``benchmarks/check_change_identical.py``.
"""

from __future__ import annotations

import pickle
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

import tuban.pipelines.change_chunk as change_chunk
import tuban.pipelines.change_patches as cp
from tuban.imagery.crs import M2_PER_MU, WGS84
from tuban.imagery.ponds import ShapeSettings, cluster_counts, shape_stats_many
from tuban.imagery.raster_io import open_date
from tuban.pipelines.change import ChangeSettings, detect_changes
from tuban.pipelines.change_blob_ops import bounds_window, bounds_windows, median32, pack_shelves
from tuban.pipelines.change_blobs import blob_mask, blob_polygons, find_blobs
from tuban.pipelines.change_blocks import CODE, dequantise_index
from tuban.pipelines.change_chunk import segment_medians
from tuban.pipelines.change_fields import (
    ROUGHER_THAN,
    WEAK_SHARE,
    demote_flooded_fields,
    open_water_level,
)
from tuban.pipelines.change_frame import drop_duplicate_bodies
from tuban.pipelines.change_table import patch_table

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402

INDEX = dequantise_index(np.arange(256, dtype=np.uint8))
LEVELS = np.arange(256, dtype=np.float32)


def _bits(x) -> bytes:
    """The exact value: float32 scalars by their bytes, float64 ones (Python or numpy: the same
    arithmetic) by theirs, NaN equal to NaN."""
    if isinstance(x, float):  # np.float64 too
        return b"f8" + struct.pack("<d", x)
    if isinstance(x, np.floating):
        return x.dtype.str.encode() + x.tobytes()
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


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.3, 2.0, 10.0, 30.0, 8.983e-5]), st.floats(-1e6, 1e6),
       st.floats(-1e6, 1e6), st.integers(0, 5))
def test_bounds_windows_are_each_bounds_window(seed, res, x0, y0, pad):
    rng = np.random.default_rng(seed)
    grid = SimpleNamespace(transform=Affine(res, 0.0, x0, 0.0, -res, y0), width=300, height=200)
    cols = np.sort(rng.uniform(0, 300, (40, 2)), axis=1)  # inside the grid, as blobs are
    rows = np.sort(rng.uniform(0, 200, (40, 2)), axis=1)
    cols[:10] = np.round(cols[:10])  # pixel edges, as blob polygons have
    rows[:10] = np.round(rows[:10])
    bounds = np.column_stack([x0 + cols[:, 0] * res, y0 - rows[:, 1] * res, x0 + cols[:, 1] * res, y0 - rows[:, 0] * res])
    got = bounds_windows(bounds, grid, pad).tolist()
    for b, (r0, r1, c0, c1) in zip(bounds.tolist(), got, strict=True):
        win = bounds_window(tuple(b), grid, pad)
        assert (r0, r1, c0, c1) == (win.row_off, win.row_off + win.height, win.col_off, win.col_off + win.width)


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
def test_chunk_parts_are_what_examine_yields(seed, monkeypatch):
    if seed % 4 == 3:  # a small atlas budget: the chunk's later blobs go through _examine
        monkeypatch.setattr(change_chunk, "MAX_ATLAS_PX", 1500)
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


def _plain_frame(records, crs, settings_, columns):
    """The output frame as ``patches_from_codes`` built it before round 8 (a frame of the records,
    mapped with ``to_crs``, rounded in place)."""
    gdf = gpd.GeoDataFrame(records, geometry="geometry", crs=crs)
    centroids = gdf.geometry.centroid
    cents = np.column_stack([centroids.x, centroids.y])
    ponds = gdf["kind"].str.endswith("_pond").to_numpy()
    if ponds.sum() > 1:
        near = cluster_counts(cents[ponds], settings_.cluster_radius_m)
        bonus = np.minimum(near, 4) * 0.025
        gdf.loc[ponds, "score"] = np.minimum(1.0, gdf.loc[ponds, "score"].to_numpy() + bonus)
    gdf = gdf.to_crs(WGS84)
    cents_wgs = gpd.GeoSeries(shapely.points(cents), crs=crs).to_crs(WGS84)
    gdf["lon"] = cents_wgs.x.round(7).to_numpy()
    gdf["lat"] = cents_wgs.y.round(7).to_numpy()
    gdf["area_m2"] = gdf["area_m2"].round(1)
    gdf["area_mu"] = (gdf["area_m2"] / M2_PER_MU).round(3)
    gdf["score"] = gdf["score"].astype(float).round(3)
    for col in ("rectangularity", "compactness", "aspect", "solidity"):
        gdf[col] = gdf[col].astype(float).round(3)
    gdf["patch_id"] = [cp.patch_id(k, x, y) for k, x, y in zip(gdf["kind"], gdf["lon"], gdf["lat"], strict=True)]
    gdf = gdf.sort_values(["lat", "lon", "kind"], ascending=[False, True, True]).reset_index(drop=True)
    return gdf[columns]


def _random_records(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    kinds = ["new_pond", "new_water", "removed_pond", "drained_pond", "lost_water"]
    out = []
    for i in range(n):
        if i and rng.random() < 0.1:  # a repeat of an earlier place: ties in lat, lon (and kind)
            r = dict(out[int(rng.integers(0, i))])
        else:
            x, y = 5e5 + rng.uniform(0, 3000), 4e6 + rng.uniform(0, 3000)
            w, h = rng.uniform(10, 80), rng.uniform(10, 80)
            geom = shapely.Polygon([(x, y), (x + w, y), (x + w, y + h), (x + 0.3 * w, y + 1.2 * h)])
            r = {"kind": kinds[int(rng.integers(0, 5))], "score": float(rng.uniform(0, 1)),
                 "area_m2": float(geom.area), "rectangularity": float(rng.uniform(0.5, 1)),
                 "compactness": float(rng.uniform(0.3, 1)), "aspect": np.float64(rng.uniform(1, 6)),
                 "solidity": rng.integers(1, 90) / np.int64(90), "geometry": geom, "framed_body": False,
                 "wet_index": float(rng.uniform(-0.2, 0.6)), "texture": float(rng.uniform(0, 0.2)),
                 "contrast": float(rng.uniform(0, 1))}
        out.append(r)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_patch_frame_is_the_plain_frame(seed):
    crs = "EPSG:32650"
    records = _random_records(seed, 300)
    columns = cp.COLUMNS
    if seed % 2:  # the dry ponds' state column
        columns = [*cp.COLUMNS[:-1], "state", "geometry"]
        for i, r in enumerate(records):
            r["state"] = "dry" if i % 5 == 0 else None
    fast = patch_table([dict(r) for r in records], crs, ShapeSettings(), columns)
    plain = _plain_frame([dict(r) for r in records], crs, ShapeSettings(), columns)
    assert list(fast.dtypes) == list(plain.dtypes) and fast.crs == plain.crs
    assert_frame_equal(fast, plain, check_exact=True)
    assert fast.to_json() == plain.to_json()


def test_flooded_fields_and_duplicate_bodies_as_before():
    records = _random_records(7, 400)
    for i, r in enumerate(records):
        r["kind"] = "new_pond" if i % 3 else "new_water"
        r["framed_body"] = i % 50 == 0
        if i % 11 == 0:  # a large, weak, rough block
            r.update(wet_index=-0.15, area_m2=1e6 + i, texture=0.5)
        if i % 17 == 0:
            r["wet_index"] = float("nan")
        if i % 19 == 0:
            r["texture"] = float("inf")
    plain = [dict(r) for r in records]
    fast = [dict(r) for r in records]
    # the plain computation: np.isfinite per value
    idx = [r["wet_index"] for r in plain if r["kind"] == "new_pond"]
    level = 0.1 + WEAK_SHARE * (float(np.median([v for v in idx if np.isfinite(v)])) - 0.1)
    assert open_water_level(fast, 0.1) == level
    n = demote_flooded_fields(fast, 0.1)
    ponds = [r for r in plain if r["kind"] == "new_pond"]
    open_ponds = [r for r in ponds if r["wet_index"] >= level]
    largest = max(r["area_m2"] for r in open_ponds)
    rough = float(np.quantile([t for t in (r["texture"] for r in open_ponds) if np.isfinite(t)], ROUGHER_THAN))
    demoted = [r for r in ponds if not r["wet_index"] >= level and r["area_m2"] > largest and r["texture"] > rough]
    assert n == len(demoted) > 0
    assert [r["kind"] for r in fast].count("new_water") == [r["kind"] for r in plain].count("new_water") + n
    kept = drop_duplicate_bodies(fast)
    assert len(kept) < len(fast)  # the repeats of direct ponds are gone
    assert drop_duplicate_bodies([r for r in fast if not r["framed_body"]]) == [r for r in fast if not r["framed_body"]]


def test_chunk_records_pickle_as_the_records():
    records = _random_records(3, 150)
    records[5]["refill_px"] = (Affine(10.0, 0.0, 5e5, 0.0, -10.0, 4e6), np.eye(4, dtype=bool))
    records[9]["geometry"] = shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (2, 1), (2, 2), (1, 1)]])
    back = pickle.loads(pickle.dumps(change_chunk.ChunkRecords([dict(r) for r in records])))
    assert type(back) is list and len(back) == len(records)
    for got, want in zip(back, records, strict=True):
        assert list(got) == list(want)  # same keys, same order
        assert shapely.to_wkb(got["geometry"]) == shapely.to_wkb(want["geometry"])  # every coordinate's bits
        assert {k: _bits(v) for k, v in got.items() if k not in ("geometry", "refill_px")} == {
            k: _bits(v) for k, v in want.items() if k not in ("geometry", "refill_px")}
    assert back[5]["refill_px"][0] == records[5]["refill_px"][0]
    assert np.array_equal(back[5]["refill_px"][1], records[5]["refill_px"][1])
    assert pickle.loads(pickle.dumps(change_chunk.ChunkRecords())) == []


def test_atlas_of_long_thin_windows_stays_near_their_pixels():
    # Straight canals gained along and across the grid, alternating in the chunk: shelf by shelf
    # in that order, every tall window would open a shelf of its own height for a few narrow
    # neighbours, and the atlas (its layers and masks) would grow far beyond the windows' pixels.
    h = w = 430
    codes = np.full((h, w), CODE["land"], np.uint8)
    for k in range(40):
        codes[3:197, 5 + 5 * k] = CODE["new_water"]  # along the columns, 194 px
        codes[222 + 5 * k, 210:404] = CODE["new_water"]  # along the rows
    stack = np.zeros((5, h, w), np.uint8)
    stack[0], stack[1], stack[2], stack[3] = codes, 100, 180, 40
    found = list(find_blobs(codes, (CODE["new_water"],), 2))
    tall = [b for b in found if b.rows[1] - b.rows[0] > 1]
    wide = [b for b in found if b.rows[1] - b.rows[0] == 1]
    assert len(tall) == len(wide) == 40
    blobs = [b for pair in zip(tall, wide, strict=True) for b in pair]
    masks = [blob_mask(b, codes) for b in blobs]
    windows = [(max(0, b.rows[0] - 3), min(h, b.rows[1] + 3), max(0, b.cols[0] - 3), min(w, b.cols[1] + 3))
               for b in blobs]
    m = change_chunk.chunk_measures(windows, blobs, masks, stack, lambda codes, ib, ia, nir: ia > 0.5)
    assert m.packed.all() and m.n_inside.tolist() == [194] * 80 and m.n_ring.tolist() == [390] * 80
    window_px = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in windows)
    assert m.inside.size <= 3 * window_px, m.inside.size / window_px  # 18x before the windows were packed tallest first
