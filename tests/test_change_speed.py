"""The speed paths of ``tuban change`` give exactly what the plain computations give.

Every shortcut of the change job (strip-wise block coding, sparse change codes, the cloud
flatness test on bright pixels only, skipping dike splits that cannot be accepted) must leave
the output byte-identical; ``benchmarks/check_change_identical.py`` checks whole runs on the
sample, real and benchmark scenes, these tests the pieces on scenes built to hit each branch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import box

import tuban.pipelines.change_blocks as cb
from tuban.imagery.align import block_windows
from tuban.imagery.masks import SceneBrightness, cloud_candidates
from tuban.imagery.raster_io import open_date
from tuban.imagery.water import WaterThresholds, is_water
from tuban.pipelines.change import ChangeSettings, _prepare
from tuban.pipelines.change_patches import _may_split, split_blob

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402

T = WaterThresholds(water=0.1, weak_water=-0.1, dark_level=0.5, change=0.2, separability=0.8,
                    water_mean=0.5, land_mean=-0.4, land_brightness=1.0)


def _dense_codes(ib, ia, bb, ba, valid, t):
    """The change codes as first written: whole-array boolean algebra."""
    wb, wa = is_water(ib, bb, t), is_water(ia, ba, t)
    d = ia - ib
    codes = np.zeros(ib.shape, dtype=np.uint8)
    codes[wb & wa] = 1
    with np.errstate(invalid="ignore"):
        codes[wa & ~wb & (d > t.change)] = 2
        codes[wb & ~wa & (d < -t.change)] = 3
    codes[~valid] = 4
    return codes


floats = st.one_of(st.floats(-1.0, 1.0, width=32), st.just(float("nan")))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (4, 9, 11), elements=floats), arrays(bool, (9, 11)))
def test_sparse_change_codes_equal_dense_codes(a, valid):
    ib, ia, bb, ba = a[0], a[1], np.abs(a[2]), np.abs(a[3])
    assert np.array_equal(cb.code_pixels(ib, ia, bb, ba, valid, T), _dense_codes(ib, ia, bb, ba, valid, T))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (4, 7, 8), elements=st.one_of(st.floats(0, 3, width=32), st.just(float("nan")))))
def test_cloud_candidates_equal_whole_array_flatness(a):
    bands = dict(zip(("blue", "green", "red", "nir"), a, strict=True))
    ref = SceneBrightness(visible=0.5, nir=0.5, visible_floor=0.1, nir_floor=0.1)
    vis = (a[0] + a[1] + a[2]) / 3
    with np.errstate(invalid="ignore"):
        expected = (vis > 0.1 + 2.5 * 0.4) & (a[3] > 0.1 + 1.5 * 0.4) & (np.abs(a[1] - a[3]) < 0.35 * (a[1] + a[3]))
    assert np.array_equal(cloud_candidates(bands, ref), expected)


@pytest.fixture(scope="module")
def cloudy_pair(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cloudy")
    b, a = cs.pair(tmp, cloud_box=(150, 20, 200, 80))
    with rasterio.open(a, "r+") as ds:  # a nodata corner too
        data = ds.read()
        data[:, :30, :30] = 0
        ds.write(data)
    return b, a


@pytest.mark.parametrize("block_px,halo", [(240, 0), (96, 0), (96, cb.CLOUD_HALO_PX)])
def test_blocks_coded_in_strips_equal_blocks_coded_whole(cloudy_pair, monkeypatch, block_px, halo):
    b, a = cloudy_pair
    mask = (box(*(cs.TRANSFORM * (60, 200)), *(cs.TRANSFORM * (120, 140))),)  # a user mask, map coords
    job, _ = _prepare(open_date([b]), open_date([a]), ChangeSettings())
    import dataclasses

    import shapely

    job = dataclasses.replace(job, halo_px=halo, mask_geoms_wkb=tuple(shapely.to_wkb(g) for g in mask))
    calls = []
    code_into = cb._code_into

    def spy(out, job, raw_b, raw_a, inner, user, **kw):
        done = code_into(out, job, raw_b, raw_a, inner, user, **kw)
        calls.append((inner is None, done is not None))  # None: a strip given up
        return done

    monkeypatch.setattr(cb, "_code_into", spy)
    for w in block_windows(job.grid, block_px):
        monkeypatch.setattr(cb, "STRIP_PX", 1 << 30)
        whole = cb.process_block(job, w)[1]
        monkeypatch.setattr(cb, "STRIP_PX", 7 * int(w.width))  # 7-row strips
        strips = cb.process_block(job, w)[1]
        assert np.array_equal(strips, whole)
    if halo:
        assert not any(strip for strip, _ in calls)  # blocks with a halo are coded whole
    else:  # both branches ran: strips coded, and strips given up (cloud candidates)
        assert (True, True) in calls and (True, False) in calls


def test_strip_coding_sees_the_cloud_and_the_user_mask(cloudy_pair, monkeypatch):
    b, a = cloudy_pair
    job, _ = _prepare(open_date([b]), open_date([a]), ChangeSettings())
    monkeypatch.setattr(cb, "STRIP_PX", 7 * 240)
    codes = cb.process_block(job, block_windows(job.grid, 240)[0])[1]
    assert (codes[0, 150:200, 20:80] == cb.CODE["masked"]).all()  # the cloud, coded whole
    assert (codes[0, :30, :30] == cb.CODE["masked"]).all()  # the nodata corner


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 0.5))
def test_skipped_splits_are_splits_accept_would_refuse(seed, change):
    # When _may_split says no, split_blob with an accept that demands a seam gap > change
    # (the test _examine makes) returns the blob unsplit.
    rng = np.random.default_rng(seed)
    blob = np.zeros((14, 20), bool)
    blob[2:12, 1:19] = True
    index = np.full(blob.shape, 0.4, np.float32)
    index[:, 9:11] = 0.4 - rng.uniform(0, 0.6)  # a dike valley of random depth
    index += rng.normal(0, 0.01, blob.shape).astype(np.float32)

    def accept(labels):
        from scipy import ndimage

        seam = blob & (ndimage.grey_dilation(labels, size=3) != ndimage.grey_erosion(
            np.where(blob, labels, labels.max() + 1), size=3))
        core = blob & ~seam
        return bool(seam.any() and core.any() and index[core].mean() - index[seam].mean() > change)

    split = split_blob(blob, index, 8, accept, margin=change)
    if not _may_split(blob, index, change):
        assert np.array_equal(split, blob.astype(np.int32))


def test_deep_dike_is_still_split():
    blob = np.ones((6, 17), bool)
    index = np.full(blob.shape, 0.5, np.float32)
    index[:, 8] = 0.0
    assert _may_split(blob, index, 0.2)
    assert int(split_blob(blob, index, 8, margin=0.2).max()) == 2
    assert not _may_split(blob, np.full(blob.shape, 0.5, np.float32), 0.2)


def test_identity_check_script_cases_exist():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import check_change_identical as chk

    before, after, s = chk._case("pucallpa", Path("/nonexistent"))
    assert s.bands_before == {"swir1": 1, "nir": 2, "red": 3, "green": 4}
    assert before[0].name == "1985.tif" and after[0].name == "2020.tif"


@settings(max_examples=80, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 9), st.integers(1, 9))))
def test_shift_morphology_equals_scipy(mask):
    from scipy import ndimage

    from tuban.pipelines.change_blob_ops import dilate4 as _dilate4
    from tuban.pipelines.change_blob_ops import erode4 as _erode4
    from tuban.pipelines.change_blob_ops import open4 as _open4

    assert np.array_equal(_dilate4(mask), ndimage.binary_dilation(mask))
    assert np.array_equal(_erode4(mask), ndimage.binary_erosion(mask))
    assert np.array_equal(_open4(mask), ndimage.binary_opening(mask))
    assert np.array_equal(_dilate4(_dilate4(mask)), ndimage.binary_dilation(mask, iterations=2))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 500), st.integers(0, 500), st.floats(-1e6, 1e6), st.floats(-1e6, 1e6),
       st.sampled_from([0.5, 2.0, 10.0, 30.0]))
def test_window_affine_equals_rasterio(col, row, x0, y0, res):
    from affine import Affine
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from tuban.pipelines.change_blob_ops import window_affine as _window_affine

    t = Affine(res, 0.0, x0, 0.0, -res, y0)
    win = Window(col, row, 7, 5)
    assert tuple(_window_affine(win, t)) == tuple(window_transform(win, t))


@settings(max_examples=80, deadline=None)
@given(st.floats(allow_nan=True), st.floats(allow_nan=True))
def test_shape_score_equals_numpy_clip_formula(rect, compact):
    from tuban.imagery.ponds import ShapeSettings, ShapeStats, shape_score

    s = ShapeSettings()
    stats = ShapeStats(1000.0, rect, 1.0, compact, 10.0, 10.0)
    r = (rect - s.min_rectangularity) / max(1e-6, 1.0 - s.min_rectangularity)
    c = (compact - s.min_compactness) / max(1e-6, 0.785 - s.min_compactness)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = float(np.clip(0.5 + 0.25 * np.clip(r, 0, 1) + 0.25 * np.clip(c, 0, 1), 0.0, 1.0))
    got = shape_score(stats, s)
    assert got == expected or (np.isnan(got) and np.isnan(expected))


@settings(max_examples=400, deadline=None)
@given(arrays(np.float32, st.integers(1, 40), elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_median_equals_numpy_median(values):
    from tuban.pipelines.change_blob_ops import median32 as _median

    got, expected = _median(values), np.median(values)
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()


def test_dequantise_lookup_equals_formula():
    q = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = (q.astype(np.float32) - 1.0) / 127.0 - 1.0
    expected[q == 0] = np.nan
    got = cb.dequantise_index(q)
    assert got.dtype == np.float32 and got.shape == q.shape
    assert got.tobytes() == expected.tobytes()
    assert cb.dequantise_index(q[::3, 1:7]).tobytes() == expected[::3, 1:7].tobytes()  # views too


@settings(max_examples=300, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=st.floats(0, 2, width=32)))
def test_nanmean_equals_numpy_nanmean(values):
    from tuban.pipelines.change_blob_ops import nanmean32 as _nanmean

    got, expected = _nanmean(values), np.nanmean(values)
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 60), st.just(2)), elements=st.integers(0, 40).map(lambda v: v * 50.0)))
def test_cluster_counts_equal_point_by_point_queries(points):
    # points on a 50 m lattice: many pairs exactly 300 m apart (the radius)
    from scipy.spatial import cKDTree

    from tuban.imagery.ponds import cluster_counts

    tree = cKDTree(points)
    expected = np.array([len(tree.query_ball_point(p, 300.0)) - 1 for p in points], dtype=int)
    assert np.array_equal(cluster_counts(points, 300.0), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(8, 60), st.integers(8, 60), st.integers(1, 12),
       st.floats(0.002, 0.3))
def test_find_blobs_on_sparse_rows_equal_whole_grid_labelling(seed, rows, cols, strip_rows, density):
    # sparse changes leave rows without hits; each run of rows is labelled alone
    from scipy import ndimage

    from tuban.pipelines.change_blobs import find_blobs

    rng = np.random.default_rng(seed)
    codes = ((rng.random((rows, cols)) < density) * rng.integers(2, 4, (rows, cols))).astype(np.uint8)
    codes = ndimage.grey_dilation(codes, size=(1, 2))  # some horizontal runs
    expected = set()
    for v in (2, 3):
        lab, _ = ndimage.label(codes == v)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            own = lab[sl] == i
            c0 = sl[1].start + int(np.argmax(own[0]))
            expected.add((v, (sl[0].start, sl[0].stop), (sl[1].start, sl[1].stop), (sl[0].start, c0),
                          int(own.sum()), own.tobytes()))
    got = {(b.value, b.rows, b.cols, b.seed_px, b.n_px, b.mask.tobytes())
           for b in find_blobs(codes, (2, 3), 1, strip_px=strip_rows * cols)}
    assert got == expected


def _gdal_cache_max_bytes() -> int | None:
    """GDAL's process-wide block cache size, read from rasterio's bundled libgdal (None if absent)."""
    import ctypes
    import glob
    import os

    libs = glob.glob(os.path.join(os.path.dirname(rasterio.__file__), "..", "rasterio.libs", "libgdal*"))
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    return int(lib.GDALGetCacheMax64())


def test_block_readers_leave_gdal_a_real_block_cache(cloudy_pair):
    """rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax in BYTES, process-wide: "64"
    once left the whole process (a dask thread never closes its readers) with a 64-byte cache,
    and every later tiled read decoded each tile again and again."""
    import threading

    if _gdal_cache_max_bytes() is None:
        pytest.skip("rasterio without a bundled libgdal")
    b, a = cloudy_pair
    job, _ = _prepare(open_date([b]), open_date([a]), ChangeSettings())
    seen = []

    def dask_like_worker():  # opens the thread's readers and, like a dask thread, never closes them
        cb.process_block(job, block_windows(job.grid, 240)[0])
        seen.append(_gdal_cache_max_bytes())

    t = threading.Thread(target=dask_like_worker)
    t.start()
    t.join()
    assert seen[0] >= cb.GDAL_CACHE_MB << 20
    assert _gdal_cache_max_bytes() >= cb.GDAL_CACHE_MB << 20
