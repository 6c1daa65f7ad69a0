"""Speed round 8 of ``tuban change`` (the preparation): each shortcut gives exactly the plain
computation, bit for bit.

The plain computations are written out here as they were before the round (``_plain_*``) and
compared with the shortcuts on random samples (hypothesis), including NaN, ties, gains and
sizes around the subsampling steps. Whole runs are compared byte for byte by
``benchmarks/check_change_identical.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

import tuban.pipelines.change_blocks as cb
import tuban.pipelines.change_prepare as cp
from tuban.imagery import align, masks, water
from tuban.imagery.align import common_grid, open_on_grid
from tuban.imagery.raster_io import open_date
from tuban.imagery.water import BandGain
from tuban.pipelines.change_blocks import apply_gains

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402

ROLES = ("blue", "green", "red", "nir")


def _plain_fit(before, after, valid, invariant_fraction=0.3, min_pixels=200, max_samples=200_000):
    """``fit_normalisation`` before round 8 (whole bands converted to float64, then subsampled)."""
    roles = [r for r in before if r in after and r != "qa"]
    v = valid.ravel()
    if v.sum() < min_pixels or not roles:
        return {r: BandGain() for r in roles}
    idx = np.flatnonzero(v)
    if idx.size > max_samples:
        idx = idx[:: int(np.ceil(idx.size / max_samples))]
    xb = {r: np.asarray(before[r], dtype=np.float64).ravel()[idx] for r in roles}
    xa = {r: np.asarray(after[r], dtype=np.float64).ravel()[idx] for r in roles}
    worst = np.zeros(idx.size, dtype=np.float32)
    for r in roles:
        np.maximum(worst, np.abs(water._ranks(xb[r]) - water._ranks(xa[r])), out=worst)
    keep = worst <= np.quantile(worst, invariant_fraction)
    if keep.sum() < min_pixels:
        return {r: BandGain() for r in roles}
    gains = {}
    for r in roles:
        b, a = xb[r][keep], xa[r][keep]
        sa, sb = a.std(), b.std()
        if sa <= 0 or sb <= 0:
            gains[r] = BandGain()
            continue
        cov = np.mean((a - a.mean()) * (b - b.mean()))
        gain = float(np.sign(cov) * sb / sa) if cov != 0 else 1.0
        if gain <= 0:
            gains[r] = BandGain()
            continue
        gains[r] = BandGain(gain=gain, offset=float(b.mean() - gain * a.mean()))
    return gains


def _samples(seed: int, n: int, nan_share: float, integer: bool) -> tuple[dict, dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    before, after = {}, {}
    for k, r in enumerate(ROLES):
        base = rng.gamma(2.0, 400.0 + 100 * k, n)
        b = np.round(base) if integer else base
        a = np.round(1.3 * base + 50 + rng.normal(0, 30, n)) if integer else 1.3 * base + 50 + rng.normal(0, 30, n)
        before[r], after[r] = b.astype(np.float32), a.astype(np.float32)
    nan = rng.random(n) < nan_share
    before["green"][nan] = np.nan
    valid = (rng.random(n) > 0.05) & ~nan
    return before, after, valid


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([150, 2_000, 199_999, 200_001, 450_000]),
       st.sampled_from([0.0, 0.3]), st.booleans(), st.sampled_from([200, 2_000]), st.booleans())
def test_fit_normalisation_subsamples_before_converting(seed, n, nan_share, integer, max_samples, all_valid):
    before, after, valid = _samples(seed, n, nan_share, integer)
    if all_valid:
        valid[:] = True
    # repr: the exact floats, NaN included (a NaN pixel marked valid gives a NaN gain in both)
    plain = repr(_plain_fit(before, after, valid, max_samples=max_samples))
    assert repr(water.fit_normalisation(before, after, valid, max_samples=max_samples)) == plain
    in_threads = functools.partial(cp._map_threads, True)  # each date's half in its own thread
    assert repr(water.fit_normalisation(before, after, valid, max_samples=max_samples, map_dates=in_threads)) == plain


def _plain_thresholds(cat, cat_a, valid, gains, index_name):
    """The thresholds and clear share as ``_prepare`` computed them before round 8."""
    cat_a = apply_gains({r: v.copy() for r, v in cat_a.items()}, gains)
    ib, ia = water.water_index(cat, index_name), water.water_index(cat_a, index_name)
    ok = valid & np.isfinite(ib) & np.isfinite(ia)
    if not ok.any():
        return None, 0.0
    sum_b, sum_a = water.brightness(cp._spectral(cat)), water.brightness(cp._spectral(cat_a))
    return water.water_thresholds(ib[ok], ia[ok], sum_b[ok], sum_a[ok]), float(ok.mean())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([40, 3_000, 250_001, 600_000]), st.sampled_from([0.0, 0.2]),
       st.sampled_from(["none", "all", "index_bands_unchanged"]), st.sampled_from(["ndwi", "mndwi"]), st.booleans(),
       st.booleans())
def test_scene_thresholds_subsample_first(seed, n, nan_share, gained, index_name, all_valid, indices_given):
    before, after, valid = _samples(seed, n, nan_share, True)
    if all_valid:
        valid[:] = True
    rng = np.random.default_rng(seed)
    before["swir1"], after["swir1"] = (rng.gamma(2.0, 300.0, n).astype(np.float32) for _ in range(2))
    before["green"][: n // 50] = 0.0  # 0 / 0: index NaN
    after["nir"][: n // 50] = 0.0
    after["swir1"][: n // 50] = 0.0
    water_px = rng.random(n) < 0.2
    before["nir"][water_px] *= 0.1
    after["nir"][water_px & (rng.random(n) < 0.5)] *= 0.1
    gains = {r: BandGain(gain=0.9 + 0.05 * k, offset=10.0 * k) for k, r in enumerate([*ROLES, "swir1"])}
    if gained == "none":
        gains = {r: BandGain() for r in gains}
    elif gained == "index_bands_unchanged":
        gains.update({r: BandGain() for r in ("green", "nir", "swir1")})
    plain = _plain_thresholds(before, after, valid, gains, index_name)
    given_ = ((water.water_index(before, index_name), water.water_index(after, index_name)) if indices_given
              else (None, None))
    fast = cp._scene_thresholds(before, {r: v.copy() for r, v in after.items()}, valid, gains, index_name, *given_)
    assert fast == plain
    none = cp._scene_thresholds(before, after, np.zeros(n, dtype=bool), gains, index_name)
    assert none == (None, 0.0)


# --- the per-date sample task: bands written into the concatenation, masks without per-window work


def _plain_sample_date(src, grid, windows, shift=(0.0, 0.0)):
    """``_sample_date`` before round 8: per-window arrays concatenated, NaN tested band by band,
    each window's invalid mask computed alone, the brightness levels from selected copies."""
    with open_on_grid(src, grid, shift_px=shift) as reader:  # each window read on its own
        samples = [cb.read_date(reader, src, w) for w in windows]
    cat = {r: np.concatenate([s[r].ravel() for s in samples]) for r in samples[0]}
    spectral = cp._spectral(cat)
    finite = np.isfinite(np.stack(list(spectral.values()))).all(axis=0)
    if not finite.any():
        return cat, None, None
    bright = _plain_scene_brightness(spectral, finite)
    invalid = np.concatenate([cb.invalid_mask(w, src, bright)[0].ravel() for w in cp._windows_of(cat, windows)])
    return cat, bright, invalid


def _plain_scene_brightness(bands, valid):
    vis = masks._visible(bands)[valid]
    nir = np.asarray(bands.get("nir", bands.get("swir1")), dtype=np.float32)[valid]
    if vis.size == 0:
        return masks.SceneBrightness(1.0, 1.0, 0.0, 0.0)
    return masks.SceneBrightness(float(np.nanmedian(vis)), float(np.nanmedian(nir)),
                                 float(np.nanpercentile(vis, 1)), float(np.nanpercentile(nir, 1)))


def _assert_same_sample_date(src, grid, windows, shift=(0.0, 0.0)):
    cat, bright, invalid, _ = cp._sample_date(src, grid, windows, shift)
    p_cat, p_bright, p_invalid = _plain_sample_date(src, grid, windows, shift)
    assert cat.keys() == p_cat.keys()
    for r in cat:
        assert cat[r].dtype == p_cat[r].dtype and np.array_equal(cat[r], p_cat[r], equal_nan=True)
    assert bright == p_bright
    assert (invalid is None and p_invalid is None) or np.array_equal(invalid, p_invalid)
    return bright, invalid


@pytest.mark.parametrize("cloud", [None, (150, 20, 190, 60)])
@pytest.mark.parametrize("nodata_box", [False, True])
def test_sample_date_gives_the_plain_samples_and_masks(tmp_path, cloud, nodata_box):
    b, a = cs.pair(tmp_path, cloud_box=cloud)
    if nodata_box:  # a nodata corner in both dates
        for path in (b, a):
            with rasterio.open(path, "r+") as ds:
                data = ds.read()
                data[:, :30, :50] = 0
                ds.write(data)
    src_b, src_a = open_date([b]), open_date([a])
    grid = common_grid(src_b, src_a)
    windows = cp._sample_windows(grid, 100, 3)
    _assert_same_sample_date(src_b, grid, windows)
    _, invalid = _assert_same_sample_date(src_a, grid, windows)
    assert invalid.any() == (cloud is not None or nodata_box)
    _assert_same_sample_date(src_a, grid, windows, (1.5, 0.5))  # a warped (float32) read


def test_sample_date_of_float_and_scaled_inputs(tmp_path):
    b, a = cs.pair(tmp_path)
    with rasterio.open(b) as ds:
        profile, data = ds.profile, ds.read().astype(np.float32) / 10000
        names = ds.descriptions
    data[:, 5:9, 5:9] = np.nan
    data[1, 20, 20] = np.inf  # finite test and nodata mask differ here
    profile.update(dtype="float32", nodata=None)
    fb = tmp_path / "float.tif"
    with rasterio.open(fb, "w", **profile) as out:
        out.write(data)
        out.descriptions = names
    src_f, src_a = open_date([fb]), open_date([a])
    grid = common_grid(src_f, src_a)
    windows = cp._sample_windows(grid, 100, 3)
    _assert_same_sample_date(src_f, grid, windows)
    scaled = dataclasses.replace(src_a, scales={"green": (2e-5, -0.1), "nir": (1e35, 0.0)})  # nir may overflow
    assert not cb.nodata_is_nan_alone(np.dtype("uint16"), scaled)
    assert cb.nodata_is_nan_alone(np.dtype("uint16"), dataclasses.replace(src_a, scales={"green": (2e-5, -0.1)}))
    _assert_same_sample_date(scaled, grid, windows)


def test_sample_date_with_a_landsat_qa_band(real_data):
    f = real_data / "landsat8_crop"
    src = open_date([f])
    assert "qa" in src.roles and src.qa_kind
    grid = common_grid(src, src)
    _assert_same_sample_date(src, grid, cp._sample_windows(grid, 512, 3))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["uint8", "uint16", "int16", "float32"]),
       st.sampled_from([None, 0.0, 7.0]), st.booleans())
def test_bands_written_in_place_are_the_plain_bands(seed, dtype, nodata, scaled):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if dtype != "float32" else None
    raw = (rng.integers(info.min, int(info.max) + 1, (3, 9, 11)) if info else rng.normal(0, 100, (3, 9, 11)))
    raw = raw.astype(dtype)
    raw[:, 2, 3] = 7
    roles = {"green": 1, "nir": 2, "qa": 3}
    src = type("Src", (), {"roles": roles, "nodata": nodata,
                           "scales": {"green": (0.5, 3.0)} if scaled else {}})()
    plain, bad = cb.bands_of(raw, src)
    out = {r: np.full(raw.shape[1:], 5, dtype=raw.dtype if r == "qa" else np.float32) for r in roles}
    got, bad2 = cb.bands_of(raw, src, out=out)
    assert np.array_equal(bad, bad2)
    for r in roles:
        assert got[r] is out[r] and np.array_equal(got[r], plain[r], equal_nan=True)
    if info is not None and cb.nodata_is_nan_alone(raw.dtype, src):
        spectral = np.stack([got["green"], got["nir"]])
        assert np.array_equal(np.isfinite(spectral).all(axis=0), ~bad)


# --- scene brightness levels: no selected copy when every pixel counts, ranks by a bracket


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([10, 70_000, 300_001]), st.sampled_from(["gamma", "int", "ties", "periodic"]),
       st.booleans(), st.booleans())
def test_scene_brightness_is_the_plain_levels(seed, n, kind, all_valid, with_nan):
    rng = np.random.default_rng(seed)
    bands = {}
    for r in ("blue", "green", "red", "nir"):
        v = rng.gamma(2.0, 500.0, n)
        if kind == "int":
            v = np.round(v)
        elif kind == "ties":
            v = rng.integers(0, 4, n) * 100.0
        elif kind == "periodic":  # every 61st value far off: the bracketing sample is biased
            v[::61] = 1e6 + v[::61]
        bands[r] = v.astype(np.float32)
    if with_nan:
        bands["green"][rng.random(n) < 0.01] = np.nan
    valid = np.ones(n, dtype=bool) if all_valid else rng.random(n) > 0.1
    kept = {r: v.copy() for r, v in bands.items()}
    assert masks.scene_brightness(bands, valid) == _plain_scene_brightness(bands, valid)
    assert all(np.array_equal(bands[r], kept[r], equal_nan=True) for r in bands)  # inputs untouched


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 200_000), st.sampled_from(["gamma", "ties", "periodic", "sorted"]))
def test_bracketed_ranks_are_the_order_statistics(seed, n, kind):
    rng = np.random.default_rng(seed)
    v = rng.gamma(2.0, 500.0, n)
    if kind == "ties":
        v = rng.integers(0, 3, n) * 1.0
    elif kind == "periodic":
        v[::61] += 1e5
    elif kind == "sorted":
        v.sort()
    v = v.astype(np.float32)
    # the ranks scene_brightness asks for (the median's and the 1st percentile's; the extremes
    # 0 and n - 1 are never bracketed, so asking for them would leave nothing to compare)
    ranks = sorted({n // 2, max(0, n // 2 - 1), int(0.01 * (n - 1)), min(n - 1, int(0.01 * (n - 1)) + 1)})
    got = masks._bracketed(v, ranks)
    if got is not None:
        order = np.sort(v)
        assert got == {k: order[k] for k in ranks}
    if n >= masks._SELECT_MIN:  # the sizes it serves: bracketed unless the sample is the biased values
        assert (got is None) == (kind == "periodic")


# --- phase correlations: each date's spectra apart, then the pairs


def _plain_estimate_shift(reference, moving, *, max_shift_px=8.0):
    """``estimate_shift`` before round 8 (both spectra and the correlation in one call)."""
    if reference.shape != moving.shape or min(reference.shape) < 16:
        return 0.0, 0.0, 0.0
    if np.isnan(reference).all() or np.isnan(moving).all():
        return 0.0, 0.0, 0.0
    ref = np.nan_to_num(reference.astype(np.float64), nan=float(np.nanmean(reference)))
    mov = np.nan_to_num(moving.astype(np.float64), nan=float(np.nanmean(moving)))
    ref -= ref.mean()
    mov -= mov.mean()
    if not ref.any() or not mov.any():
        return 0.0, 0.0, 0.0
    window = cv2.createHanningWindow(ref.shape[::-1], cv2.CV_64F)
    product = np.fft.fft2(mov * window) * np.fft.fft2(ref * window).conj()
    product /= np.maximum(np.abs(product), 1e-12) ** align.NORM_POWER
    corr = np.fft.ifft2(product).real
    peak = np.array(np.unravel_index(int(np.argmax(corr)), corr.shape), dtype=float)
    response = float(corr.max() / max(1e-12, np.sqrt((np.abs(product) ** 2).sum() / product.size)))
    size = np.array(corr.shape)
    peak[peak > size // 2] -= size[peak > size // 2]
    up = 20
    peak = np.round(peak * up) / up
    region = int(np.ceil(up * 1.5))
    centre = np.fix(region / 2.0)
    offsets = centre - peak * up
    out = product
    for n, off in zip(product.shape[::-1], offsets[::-1], strict=True):
        kernel = np.exp(2j * np.pi * (np.arange(region) - off)[:, None] * np.fft.fftfreq(n, up)[None, :])
        out = np.tensordot(kernel, out, axes=(1, -1))
    best = np.array(np.unravel_index(int(np.argmax(np.abs(out))), out.shape), dtype=float)
    dy, dx = peak + (best - centre) / up
    if not (abs(dx) <= max_shift_px and abs(dy) <= max_shift_px) or response < align.MIN_RESPONSE:
        return 0.0, 0.0, response
    return float(dx), float(dy), response


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(12, 40), (16, 16), (48, 64), (128, 128)]),
       st.integers(-5, 5), st.integers(-5, 5), st.sampled_from(["plain", "nan", "inf", "all_nan", "flat"]),
       st.sampled_from([np.float32, np.float64]))
def test_shift_from_spectra_is_the_plain_estimate(seed, shape, dx, dy, kind, dtype):
    rng = np.random.default_rng(seed)
    big = rng.random((shape[0] + 20, shape[1] + 20))
    big = np.cumsum(np.cumsum(big, axis=0), axis=1)  # smooth, so a shift is measurable
    ref = big[10:10 + shape[0], 10:10 + shape[1]].astype(dtype)
    mov = big[10 - dy:10 - dy + shape[0], 10 - dx:10 - dx + shape[1]].astype(dtype)
    mov = mov + rng.normal(0, 0.01, mov.shape).astype(dtype)
    if kind == "nan":
        ref[rng.random(shape) < 0.1] = np.nan
    elif kind == "inf":
        mov[0, 0] = np.inf
    elif kind == "all_nan":
        ref[:] = np.nan
    elif kind == "flat":
        mov[:] = 3.0
    plain = np.array(_plain_estimate_shift(ref, mov))  # NaN response with an inf pixel, in both
    assert np.array_equal(align.estimate_shift(ref, mov), plain, equal_nan=True)
    assert np.array_equal(align.shift_of_spectra(align.shift_spectrum(ref), align.shift_spectrum(mov)), plain,
                          equal_nan=True)
    assert align.estimate_shift(ref, mov[:, 1:]) == (0.0, 0.0, 0.0)


def test_measure_shift_of_the_dates_spectra_is_the_plain_median(tmp_path):
    from affine import Affine

    b, a = cs.pair(tmp_path, after_transform=cs.TRANSFORM @ Affine.translation(1.5, 0.5))
    src_b, src_a = open_date([b]), open_date([a])
    grid = common_grid(src_b, src_a)
    windows = cp._sample_windows(grid, 120, 3)
    for threads in (False, True):
        task_b = cp._date_task(src_b, grid, windows, [0, 2, 4, 6, 8], "ndwi")
        task_a = cp._date_task(src_a, grid, windows, [0, 2, 4, 6, 8], "ndwi")
        sb = [cp._windows_of(task_b[0], windows)[i] for i in (0, 2, 4, 6, 8)]
        sa = [cp._windows_of(task_a[0], windows)[i] for i in (0, 2, 4, 6, 8)]
        plain = [_plain_estimate_shift(water.water_index(x, "ndwi"), water.water_index(y, "ndwi"))
                 for x, y in zip(sb, sa, strict=True)]
        shifts = np.array([p for p in plain if p[2] > 0])
        want = (float(np.median(shifts[:, 0])), float(np.median(shifts[:, 1]))), float(shifts[:, 2].max())
        assert cp._shift_of(task_b[5], task_a[5], threads) == want
        views_b = cp._date_task(src_b, grid, windows, [0, 2, 4, 6, 8], "ndwi", spectra=False)[5]
        views_a = cp._date_task(src_a, grid, windows, [0, 2, 4, 6, 8], "ndwi", spectra=False)[5]
        assert cp._shift_of(views_b, views_a, threads, spectra=False) == want  # one process: pair by pair
        for task in (task_b, task_a):  # the index of all samples, before normalisation
            assert np.array_equal(task[4], water.water_index(task[0], "ndwi"), equal_nan=True)
        assert abs(want[0][0] + 1.5) < 0.3 or abs(want[0][0] - 1.5) < 0.3


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5_000),
       st.sampled_from(["uint16", "uint8", "ties", "negative", "large", "fraction", "nan", "negzero"]),
       st.sampled_from([np.float32, np.float64]))
def test_stable_order_is_numpys_stable_argsort(seed, n, kind, dtype):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 65536, n).astype(np.float64)
    if kind == "uint8":
        x = rng.integers(0, 256, n).astype(np.float64)
    elif kind == "ties":
        x = rng.integers(0, 3, n).astype(np.float64)
    elif kind == "negative":
        x[0] = -1.0
    elif kind == "large":
        x[-1] = 65536.0
    elif kind == "fraction":
        x[n // 2] += 0.5
    elif kind == "nan":
        x[n // 3] = np.nan
    elif kind == "negzero":
        x[rng.random(n) < 0.3] = -0.0
        x[rng.random(n) < 0.3] = 0.0
    x = x.astype(dtype)
    assert np.array_equal(water._stable_order(x), np.argsort(x, kind="stable"))


# --- scene thresholds: both Otsu splits from one histogram, the land median taken once


def _plain_water_thresholds(index_before, index_after, brightness_before, brightness_after, dark_fraction=0.65):
    """``water_thresholds`` before round 8."""
    step = max(1, int(np.ceil(index_before.size / 250_000)))
    index_before, index_after = index_before[::step], index_after[::step]
    brightness_before, brightness_after = brightness_before[::step], brightness_after[::step]
    joint = np.concatenate([index_before, index_after]).astype(np.float64)
    bright = np.concatenate([brightness_before, brightness_after]).astype(np.float64)
    ok = np.isfinite(joint) & np.isfinite(bright)
    joint, bright = joint[ok], bright[ok]
    if joint.size < 10:
        return water.WaterThresholds(0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0)
    t2, eta = water.otsu_threshold(joint)
    t = t2
    for cand in (water.otsu_two_thresholds(joint)[1], t2):
        up = joint > cand
        if up.any() and (~up).any() and np.median(bright[up]) < 0.75 * np.median(bright[~up]):
            t = cand
            break
    else:
        t = max(t2, float(np.quantile(joint, 0.995)))
    water_ = joint[joint > t]
    land = joint[joint <= t]
    w_mean = float(np.median(water_)) if water_.size else t
    l_mean = float(np.median(land)) if land.size else t
    stable = (index_before > t) & (index_after > t)
    diff = (index_after - index_before)[stable] if stable.sum() >= 100 else index_after - index_before
    noise = water.robust_scale(diff)
    change = max(0.1 * (w_mean - l_mean), 3.0 * noise)
    land_b = bright[joint <= t]
    land_level = float(np.median(land_b)) if land_b.size else 0.0
    return water.WaterThresholds(water=t, weak_water=t - water.WEAK_SHARE * (t - l_mean),
                                 dark_level=dark_fraction * land_level, change=float(change), separability=eta,
                                 water_mean=w_mean, land_mean=l_mean, land_brightness=land_level)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([5, 12, 900, 30_000, 260_000]),
       st.sampled_from(["dark_water", "bright_water", "no_water", "three", "flat", "coarse"]),
       st.sampled_from([0.0, 0.05]))
def test_water_thresholds_are_the_plain_thresholds(seed, n, kind, nan_share):
    rng = np.random.default_rng(seed)
    wet = rng.random(n) < (0.0 if kind == "no_water" else 0.15)
    ib = np.where(wet, rng.normal(0.4, 0.1, n), rng.normal(-0.3, 0.15, n))
    ia = ib + rng.normal(0, 0.05, n)
    bb = np.where(wet, rng.normal(1500, 200, n), rng.normal(5000, 800, n))
    if kind == "bright_water":
        bb = np.where(wet, rng.normal(9000, 200, n), bb)
    elif kind == "three":
        ib = np.where(rng.random(n) < 0.3, rng.normal(0.0, 0.05, n), ib)
    elif kind == "flat":
        ib = np.full(n, 0.25)
        ia = ib.copy()
    elif kind == "coarse":  # few distinct values: many on the histogram's edges
        ib, ia = np.round(ib, 1), np.round(ia, 1)
    ba = bb * rng.normal(1.0, 0.05, n)
    arrays = [x.astype(np.float32) for x in (ib, ia, bb, ba)]
    if nan_share:
        arrays[0][rng.random(n) < nan_share] = np.nan
        arrays[3][rng.random(n) < nan_share] = np.nan
    got = water.water_thresholds(*arrays)
    assert repr(got) == repr(_plain_water_thresholds(*arrays))
    joint = np.concatenate(arrays[:2]).astype(np.float64)
    joint = joint[np.isfinite(joint)]
    if joint.size >= 10:
        assert water._both_otsu(joint) == (*water.otsu_threshold(joint), water.otsu_two_thresholds(joint)[1])
