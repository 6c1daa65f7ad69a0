"""Speed round 8 of ``tuban change`` (the preparation): each shortcut gives exactly the plain
computation, bit for bit.

The plain computations are written out here as they were before the round (``_plain_*``) and
compared with the shortcuts on random samples (hypothesis), including NaN, ties, gains and
sizes around the subsampling steps. Whole runs are compared byte for byte by
``benchmarks/check_change_identical.py``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tuban.pipelines.change as ch
from tuban.imagery import water
from tuban.imagery.water import BandGain
from tuban.pipelines.change_blocks import apply_gains

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
       st.sampled_from([0.0, 0.3]), st.booleans(), st.sampled_from([200, 2_000]))
def test_fit_normalisation_subsamples_before_converting(seed, n, nan_share, integer, max_samples):
    before, after, valid = _samples(seed, n, nan_share, integer)
    assert water.fit_normalisation(before, after, valid, max_samples=max_samples) == \
        _plain_fit(before, after, valid, max_samples=max_samples)


def _plain_thresholds(cat, cat_a, valid, gains, index_name):
    """The thresholds and clear share as ``_prepare`` computed them before round 8."""
    cat_a = apply_gains({r: v.copy() for r, v in cat_a.items()}, gains)
    ib, ia = water.water_index(cat, index_name), water.water_index(cat_a, index_name)
    ok = valid & np.isfinite(ib) & np.isfinite(ia)
    if not ok.any():
        return None, 0.0
    sum_b, sum_a = water.brightness(ch._spectral(cat)), water.brightness(ch._spectral(cat_a))
    return water.water_thresholds(ib[ok], ia[ok], sum_b[ok], sum_a[ok]), float(ok.mean())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([40, 3_000, 250_001, 600_000]), st.sampled_from([0.0, 0.2]),
       st.booleans(), st.sampled_from(["ndwi", "mndwi"]))
def test_scene_thresholds_subsample_first(seed, n, nan_share, gained, index_name):
    before, after, valid = _samples(seed, n, nan_share, True)
    rng = np.random.default_rng(seed)
    before["swir1"], after["swir1"] = (rng.gamma(2.0, 300.0, n).astype(np.float32) for _ in range(2))
    before["green"][: n // 50] = 0.0  # 0 / 0: index NaN
    after["nir"][: n // 50] = 0.0
    after["swir1"][: n // 50] = 0.0
    water_px = rng.random(n) < 0.2
    before["nir"][water_px] *= 0.1
    after["nir"][water_px & (rng.random(n) < 0.5)] *= 0.1
    gains = ({r: BandGain(gain=0.9 + 0.05 * k, offset=10.0 * k) for k, r in enumerate([*ROLES, "swir1"])}
             if gained else {r: BandGain() for r in [*ROLES, "swir1"]})
    plain = _plain_thresholds(before, after, valid, gains, index_name)
    fast = ch._scene_thresholds(before, {r: v.copy() for r, v in after.items()}, valid, gains, index_name)
    assert fast == plain
    none = ch._scene_thresholds(before, after, np.zeros(n, dtype=bool), gains, index_name)
    assert none == (None, 0.0)
