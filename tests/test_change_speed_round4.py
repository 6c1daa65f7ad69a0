"""Speed round 4 of ``tuban change``: each shortcut gives exactly the plain computation.

Strips without QA band or cloud candidate are coded by one fused function (fewer array
passes, written straight into the result stack); pond cluster counts come from a grid of
cells instead of ``scipy.spatial.cKDTree``; the blobs' polygons of a chunk are built in one
shapely call. These tests pin each against the plain computation, bit for bit (random inputs
with NaN, nodata, zero sums, infinities, cloud candidates; lattice points at exactly the
radius; polygons with holes). Whole runs are compared byte for byte by
``benchmarks/check_change_identical.py``.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
import shapely.geometry
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio.features import shapes

import tuban.pipelines.change_blocks as cb
from tuban.imagery.masks import SceneBrightness
from tuban.imagery.ponds import cluster_counts
from tuban.imagery.raster_io import open_date
from tuban.imagery.water import BandGain, WaterThresholds
from tuban.pipelines.change import ChangeSettings, _prepare
from tuban.pipelines.change_blobs import blob_mask, blob_polygons, find_blobs

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402

ALL = (slice(None), slice(None))


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> cb.BlockJob:
    b, a = cs.pair(tmp_path_factory.mktemp("round4"))
    return _prepare(open_date([b]), open_date([a]), ChangeSettings())[0]


def _both_paths(job: cb.BlockJob, raw_b: np.ndarray, raw_a: np.ndarray, user) -> tuple:
    """``(strip result, strip stack, whole-path stack)`` of the same raw reads."""
    shape = (len(cb.LAYERS), *raw_b.shape[1:])
    strip, whole = np.full(shape, 77, np.uint8), np.full(shape, 77, np.uint8)
    done = cb._code_into(strip, job, raw_b, raw_a, None, user)
    bits = cb._code_into(whole, job, raw_b.copy(), raw_a.copy(), ALL, user)
    assert bits == int(np.bitwise_or.reduce(whole[4], axis=None))
    if done is not None:  # the flag bits it reports are those it wrote
        assert done == int(np.bitwise_or.reduce(strip[4], axis=None))
        zeroed = np.zeros(shape, np.uint8)  # into zeros, all-zero flags are left unwritten: same
        assert cb._code_into(zeroed, job, raw_b, raw_a, None, user, zeroed=True) == done
        assert np.array_equal(zeroed, strip)
    return done is not None, strip, whole


_levels = st.floats(-0.9, 0.9)


@settings(max_examples=80, deadline=None)
@given(st.data(), st.integers(0, 2**32 - 1), _levels, _levels, st.floats(0.05, 3.0), st.floats(0.02, 0.5),
       st.booleans(), st.booleans())
def test_fused_strip_coding_equals_the_general_path_uint16(job, data, seed, water, weak, dark_q, change,
                                                          gains, with_user):
    rng = np.random.default_rng(seed)
    rows, cols = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 13))
    # values around the scene's levels, some 0 (nodata), some equal green and nir (index 0)
    top = np.array([1200, 1200, 1200, 6000])[:, None, None]  # NIR sometimes at cloud level
    raw_b = rng.integers(0, top, (4, rows, cols)).astype(np.uint16)
    raw_a = rng.integers(0, top, (4, rows, cols)).astype(np.uint16)
    raw_a[:, rng.random((rows, cols)) < 0.1] = 0
    raw_b[3] = np.where(rng.random((rows, cols)) < 0.2, raw_b[1], raw_b[3])
    t = WaterThresholds(water=water, weak_water=min(water, weak), dark_level=dark_q * 6000, change=change,
                        separability=0.5, water_mean=0.4, land_mean=-0.4, land_brightness=6000.0)
    j = dataclasses.replace(job, thresholds=t)
    if gains:
        j = dataclasses.replace(j, gains={"green": BandGain(1.1, -20.0), "nir": BandGain(0.93, 15.0)})
    user = rng.random((rows, cols)) < 0.2 if with_user else None
    done, strip, whole = _both_paths(j, raw_b, raw_a, user)
    if done:
        assert np.array_equal(strip, whole)
    else:  # a cloud candidate: nothing written, the block is coded whole instead
        assert (strip == 77).all()


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, (2, 4, 5, 6), elements=st.one_of(
    st.floats(-2.0, 4.0, width=32), st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan]))))
def test_fused_strip_coding_equals_the_general_path_float(job, raws):
    src = dataclasses.replace(job.before, dtype="float32", nodata=None)
    bright = SceneBrightness(visible=1.0, nir=1.0, visible_floor=0.1, nir_floor=0.1)
    t = WaterThresholds(water=0.1, weak_water=-0.1, dark_level=2.0, change=0.2, separability=0.5,
                        water_mean=0.4, land_mean=-0.4, land_brightness=3.0)
    j = dataclasses.replace(job, before=src, after=src, thresholds=t, bright_before=bright, bright_after=bright)
    done, strip, whole = _both_paths(j, raws[0], raws[1], None)
    if done:
        assert np.array_equal(strip, whole)
    else:
        assert (strip == 77).all()


def test_fused_strip_coding_gives_up_on_cloud_candidates(job):
    raw = np.full((4, 3, 4), 1000, np.uint16)
    raw[:, 1, 2] = 60000  # bright and white in every band: a cloud candidate
    done, strip, _ = _both_paths(job, raw, raw.copy(), None)
    assert not done and (strip == 77).all()
    done, strip, whole = _both_paths(job, np.full((4, 3, 4), 1000, np.uint16), raw * 0 + 900, None)
    assert done and np.array_equal(strip, whole)


def _ckdtree_counts(points: np.ndarray, radius: float) -> np.ndarray:
    """``cluster_counts`` as first written (``scipy.spatial.cKDTree``)."""
    from scipy.spatial import cKDTree

    return np.asarray(cKDTree(points).query_ball_point(points, radius, return_length=True), dtype=int) - 1


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 120), st.sampled_from([0.0, 50.0, 100.0, 141.4213562373095, 300.0]),
       st.booleans())
def test_cluster_counts_equal_ckdtree(seed, n, radius, lattice):
    rng = np.random.default_rng(seed)
    if lattice:  # pond centroids on a 100 m lattice: many neighbours exactly at the radius
        points = rng.integers(0, 12, (n, 2)) * 100.0 + np.array([512345.25, 2734567.75])
    else:
        points = rng.random((n, 2)) * 2000.0 + np.array([4e5, 2.7e6])
    assert np.array_equal(cluster_counts(points, radius), _ckdtree_counts(points, radius))


def test_blob_polygons_in_one_call_equal_polygons_one_by_one():
    codes = np.zeros((40, 50), np.uint8)
    codes[2:10, 3:12] = 2
    codes[4:6, 6:8] = 0  # a hole
    codes[15:30, 20:45] = 3
    codes[15:18, 20:23] = 0
    codes[35:38, 1:4] = 2
    transform = Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 2700000.0)
    blobs = list(find_blobs(codes, (2, 3), 1))
    got = blob_polygons(blobs, codes, transform, atlas_width_px=16)  # several atlas shelves
    for blob, poly in zip(blobs, got, strict=True):
        r0, c0 = blob.rows[0], blob.cols[0]
        mask = blob_mask(blob, codes).astype(np.uint8)
        one = [shapely.geometry.shape(g) for g, v in
               shapes(mask, mask=mask.astype(bool), transform=transform * Affine.translation(c0, r0)) if v == 1]
        assert len(one) == 1 and shapely.to_wkb(poly) == shapely.to_wkb(one[0])


def test_shape_stats_many_equal_shape_stats_one_by_one():
    from shapely.geometry import Polygon, box

    from tuban.imagery.ponds import shape_stats, shape_stats_many

    rng = np.random.default_rng(3)
    geoms = [box(0, 0, 80, 80), Polygon([(0, 0), (90, 0), (90, 70), (0, 70)], [[(20, 20), (40, 20), (40, 40), (20, 40)]]),
             Polygon([(0, 0), (10, 0), (20, 0), (0, 0)]), Polygon(), box(0, 0, 1e-9, 5),
             Polygon([(0, 0), (30, 1), (60, 0), (31, 2)]), shapely.MultiPolygon([box(0, 0, 5, 5), box(9, 9, 20, 20)])]
    for _ in range(40):  # staircase outlines of rotated and irregular blobs
        pts = rng.random((int(rng.integers(3, 12)), 2)) * 100
        geoms.append(shapely.convex_hull(shapely.MultiPoint(np.round(pts))).buffer(float(rng.random()) * 5))
    for px in (0.5, 2.0, 10.0):
        assert [repr(s) for s in shape_stats_many(geoms, px)] == [repr(shape_stats(g, px)) for g in geoms]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (4, 30), elements=st.one_of(st.floats(0, 5000, width=32), st.just(float("nan")))),
       arrays(bool, (30,)))
def test_scene_brightness_in_place_equals_nan_functions(a, valid):
    from tuban.imagery.masks import scene_brightness

    bands = dict(zip(("blue", "green", "red", "nir"), a, strict=True))
    vis, nir = ((a[0] + a[1]) + a[2]) / 3, a[3]
    got = scene_brightness(bands, valid)
    if not valid.any():
        return
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN slices
        want = SceneBrightness(float(np.nanmedian(vis[valid])), float(np.nanmedian(nir[valid])),
                               float(np.nanpercentile(vis[valid], 1)), float(np.nanpercentile(nir[valid], 1)))
    assert repr(got) == repr(want)
