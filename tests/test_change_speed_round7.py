"""Speed round 7 of ``tuban change``: each shortcut gives exactly the plain computation.

The patch examination takes the polygons' bounds in one ``shapely.bounds`` call per chunk of
blobs instead of one ``polygon.bounds`` per blob, reuses the part's 4-connected erosion (the
first half of its opening, for the solidity) as the core of the brightness texture, and takes
the median of each date's finite index inside a new-water part once (the after one serves
``wet_index`` and the frame step, the before one ``before_wetness`` and the before frame step).
These tests pin each against the plain calls; whole runs are also compared byte for byte by
``benchmarks/check_change_identical.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

import tuban.pipelines.change_patches as cp
from tuban.imagery.raster_io import open_date
from tuban.pipelines.change import ChangeSettings, detect_changes
from tuban.pipelines.change_blob_ops import dilate4, erode4, median32, open4
from tuban.pipelines.change_blobs import blob_mask, blob_polygons, find_blobs
from tuban.pipelines.change_frame import before_wetness

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 0.5), st.sampled_from([0.3, 2.0, 10.0, 30.0]),
       st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_chunk_bounds_equal_each_polygons_bounds(seed, density, res, x0, y0):
    codes = (np.random.default_rng(seed).random((40, 50)) < density).astype(np.uint8) * 2
    transform = Affine(res, 0.0, x0, 0.0, -res, y0)
    blobs = list(find_blobs(codes, (2,), 1))
    if not blobs:
        return
    polygons = blob_polygons(blobs, codes, transform, masks=[blob_mask(b, codes) for b in blobs])
    assert [tuple(b) for b in shapely.bounds(polygons).tolist()] == [p.bounds for p in polygons]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(1, 30), st.floats(0.1, 0.9))
def test_opening_from_the_reused_erosion_is_the_opening(seed, h, w, density):
    inside = np.random.default_rng(seed).random((h, w)) < density
    core = erode4(inside)
    assert np.array_equal(core, ndimage.binary_erosion(inside))
    assert np.array_equal(dilate4(core), open4(inside))
    assert np.array_equal(dilate4(core), ndimage.binary_opening(inside))


def test_runs_with_and_without_the_round7_shortcuts_are_identical(tmp_path, monkeypatch):
    b, a = cs.pair(tmp_path)
    settings_ = ChangeSettings(block_px=96)
    cores = []
    texture = cp.brightness_texture

    def checked_texture(bright, inside, core):
        cores.append(np.array_equal(core, erode4(inside)))
        return texture(bright, inside, core)

    monkeypatch.setattr(cp, "brightness_texture", checked_texture)
    # every part through _examine (round 8 measures most gains per chunk, tests/test_change_speed_round8_patches.py)
    monkeypatch.setattr(cp, "_chunk_parts", lambda polygons, *args: [None] * len(polygons))
    fast = detect_changes(open_date([b]), open_date([a]), settings_)
    assert cores and all(cores)  # the texture got the plain erosion of every part
    records = cp._records
    monkeypatch.setattr(cp, "_records", lambda *args: records(*args[:4]))  # each polygon's own bounds
    plain = detect_changes(open_date([b]), open_date([a]), settings_)
    assert len(fast.patches) > 0
    assert fast.patches.to_json() == plain.patches.to_json()


_index = st.lists(st.one_of(st.floats(-1.0, 1.0, width=32), st.just(float("nan"))), min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(_index, st.integers(0, 2**32 - 1))
def test_frame_step_with_the_inside_median_given_is_the_plain_step(values, seed):
    rng = np.random.default_rng(seed)
    index = np.asarray(values, dtype=np.float32)
    inside = rng.random(index.size) < 0.5
    ring = ~inside & (rng.random(index.size) < 0.7)
    vals = index[inside][np.isfinite(index[inside])]
    given_median = median32(vals) if vals.size else None  # what ``_examine`` passes
    plain = cp._frame_step(inside, None, index, ring)
    assert cp._frame_step(inside, None, index, ring, given_median) == plain


@settings(max_examples=200, deadline=None)
@given(_index, st.floats(-0.8, 0.2), st.floats(-0.5, 0.5))
def test_before_wetness_with_the_median_given_is_the_plain_value(values, land_mean, weak_water):
    index = np.asarray(values, dtype=np.float32)
    t = SimpleNamespace(land_mean=land_mean, weak_water=weak_water)
    vals = index[np.isfinite(index)]
    given_median = median32(vals) if vals.size else None
    assert before_wetness(index, t, given_median) == before_wetness(index, t)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 25), st.integers(1, 25))
def test_open_edge_equals_the_plain_sums(seed, h, w):
    rng = np.random.default_rng(seed)
    inside, wet = rng.random((h, w)) < 0.4, rng.random((h, w)) < 0.5
    ring = dilate4(inside) & ~inside
    n = int(ring.sum())
    assert cp._open_edge(inside, None, wet, ring) == (float(wet[ring].sum()) / n if n else 0.0)
