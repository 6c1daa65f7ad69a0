"""Water indices, radiometric normalisation between dates, and per-scene thresholds.

Everything here is pure: arrays in, arrays or numbers out. Thresholds are always derived from
the scene at hand (Otsu on the joint histogram of both normalised dates), never fixed.

* NDWI (McFeeters) = (green - nir) / (green + nir); MNDWI = (green - swir1) / (green + swir1)
  when both dates carry a SWIR band.
* Relative radiometric normalisation maps the second date onto the first with one gain/offset
  per band, fitted on pseudo-invariant pixels (pixels whose rank in every band hardly changes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "normalized_difference",
    "water_index_name",
    "water_index",
    "BandGain",
    "fit_normalisation",
    "otsu_threshold",
    "WaterThresholds",
    "water_thresholds",
    "robust_scale",
    "otsu_two_thresholds",
    "brightness",
    "is_water",
]


def normalized_difference(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``(a - b) / (a + b)`` in float32; NaN where ``a + b`` is 0 or an input is NaN.

    Example:
        >>> float(normalized_difference(np.array([3.0]), np.array([1.0]))[0])
        0.5
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    den = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.subtract(a, b, out=out)
        np.divide(out, den, out=out)
    out[~np.isfinite(out)] = np.nan
    return out


def water_index_name(roles_before: Mapping[str, int], roles_after: Mapping[str, int]) -> str:
    """``"mndwi"`` when both dates have green and swir1, else ``"ndwi"``."""
    if all("swir1" in r and "green" in r for r in (roles_before, roles_after)):
        return "mndwi"
    return "ndwi"


def water_index(bands: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """The water index ``name`` (ndwi or mndwi) from role -> array."""
    other = "swir1" if name == "mndwi" else "nir"
    return normalized_difference(bands["green"], bands[other])


@dataclass(frozen=True)
class BandGain:
    """``before_like = gain * after + offset`` for one band."""

    gain: float = 1.0
    offset: float = 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    order = _stable_order(x)
    r = np.empty(x.size, dtype=np.float32)
    r[order] = np.linspace(0.0, 1.0, x.size, dtype=np.float32)
    return r


def _stable_order(x: np.ndarray) -> np.ndarray:
    """``np.argsort(x, kind="stable")`` of a 1-D float array, from one sort of packed keys (or,
    for whole numbers 0..65535, the stable radix sort of their 16-bit copy).

    Values that float32 holds exactly (the sampled bands are float32) are mapped to unsigned
    integers in the same order (-0.0 as 0.0) and packed above their position: the keys are
    distinct, so any sort gives the stable order, and numpy sorts integers several times
    faster than its stable float sort. Other input takes the plain call.
    """
    x = np.asarray(x)
    if x.ndim != 1 or x.size >= 2**32:
        return np.argsort(x, kind="stable")
    if x.size and 0 <= x.min() and x.max() <= 65535:  # (False with NaN)
        small = x.astype(np.uint16)
        if np.array_equal(small, x):  # integers 0..65535 (e.g. 16-bit pixels): numpy's radix sort
            return np.argsort(small, kind="stable")
    with np.errstate(over="ignore", invalid="ignore"):  # values float32 cannot hold: plain call
        f32 = x.astype(np.float32) + np.float32(0.0)  # -0.0 -> 0.0
    if np.isnan(f32).any() or not np.array_equal(f32, x):
        return np.argsort(x, kind="stable")
    bits = f32.view(np.uint32)
    sortable = np.where(bits >= np.uint32(2**31), ~bits, bits | np.uint32(2**31))
    keys = (sortable.astype(np.uint64) << np.uint64(32)) | np.arange(x.size, dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64(2**32 - 1)).astype(np.intp)


def fit_normalisation(
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    valid: np.ndarray,
    *,
    invariant_fraction: float = 0.3,
    min_pixels: int = 200,
    max_samples: int = 200_000,
    map_dates: Callable | None = None,
) -> dict[str, BandGain]:
    """Per-band gain/offset mapping ``after`` onto ``before`` using pseudo-invariant pixels.

    Pixels are ranked per band in both dates; those whose worst rank change over all bands is in
    the lowest ``invariant_fraction`` are taken as invariant, and a total-least-squares line is
    fitted per band on them (robust to gain *and* haze offset differences).

    Args:
        before, after: role -> 1-D or 2-D float arrays of the same shape (sampled pixels).
        valid: boolean mask of usable pixels (both dates clear).
        invariant_fraction: share of valid pixels kept as pseudo-invariant.
        min_pixels: below this many invariant pixels the identity is returned.
        map_dates: a ``map``-like ``(fn, [before, after])`` runner for the two dates' independent
            halves (subsample and per-band ranks), e.g. in two threads; the built-in ``map`` when
            None (the result does not depend on it).
    """
    roles = [r for r in before if r in after and r != "qa"]
    v = valid.ravel()
    n_valid = int(np.count_nonzero(v))
    if n_valid < min_pixels or not roles:
        return {r: BandGain() for r in roles}
    # a regular subsample keeps the fit fast and deterministic
    step = int(np.ceil(n_valid / max_samples)) if n_valid > max_samples else 1
    idx = slice(None, None, step) if n_valid == v.size else np.flatnonzero(v)[::step]  # (a slice: all valid)

    def half(bands: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        # the subsample taken first, then converted (the same float64 values, a tenth of the work)
        x = {r: np.asarray(bands[r]).ravel()[idx].astype(np.float64) for r in roles}
        return x, {r: _ranks(x[r]) for r in roles}

    (xb, ranks_b), (xa, ranks_a) = (map_dates or map)(half, [before, after])
    worst = np.zeros(next(iter(xb.values())).size, dtype=np.float32)
    for r in roles:
        np.maximum(worst, np.abs(ranks_b[r] - ranks_a[r]), out=worst)
    keep = worst <= np.quantile(worst, invariant_fraction)
    if keep.sum() < min_pixels:
        return {r: BandGain() for r in roles}
    gains: dict[str, BandGain] = {}
    for r in roles:
        b, a = xb[r][keep], xa[r][keep]
        sa, sb = a.std(), b.std()
        if sa <= 0 or sb <= 0:
            gains[r] = BandGain()
            continue
        cov = np.mean((a - a.mean()) * (b - b.mean()))
        # Orthogonal (TLS) regression of b on a after standardising keeps it symmetric.
        gain = float(np.sign(cov) * sb / sa) if cov != 0 else 1.0
        if gain <= 0:
            gains[r] = BandGain()
            continue
        gains[r] = BandGain(gain=gain, offset=float(b.mean() - gain * a.mean()))
    return gains


def otsu_threshold(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Otsu's threshold of finite ``values`` and its separability (0-1, between/total variance).

    Example:
        >>> v = np.r_[np.full(100, -0.5), np.full(100, 0.5)]
        >>> t, eta = otsu_threshold(v)
        >>> -0.5 < t < 0.5 and eta > 0.9
        True
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.min() == v.max():
        return (float(v[0]) if v.size else 0.0), 0.0
    hist, edges = np.histogram(v, bins=bins)
    return _otsu_of_histogram(hist, edges, v)


def _otsu_of_histogram(hist: np.ndarray, edges: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """:func:`otsu_threshold` from the histogram of its finite values ``v``."""
    centres = (edges[:-1] + edges[1:]) / 2
    p = hist / hist.sum()
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centres)
    mu_t = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * w0 - mu) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = 0
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    k = int(best[len(best) // 2])  # middle of a flat optimum (an empty gap between classes)
    total = float(np.var(v))
    eta = float(between[k] / total) if total > 0 else 0.0
    return float(edges[k + 1]), eta


@dataclass(frozen=True)
class WaterThresholds:
    """Per-scene water decision (all levels derived from the scene itself).

    A pixel is water when its index exceeds ``water`` (open water), or when it exceeds
    ``weak_water`` *and* its total brightness is below ``dark_level`` (algae-rich, turbid or
    shallow water: weak index but dark in every band, unlike wet mud or shadow-free soil).
    A state change must also move the index by more than ``change``.
    """

    water: float
    weak_water: float
    dark_level: float
    change: float
    separability: float
    water_mean: float
    land_mean: float
    land_brightness: float = 0.0


def robust_scale(values: np.ndarray) -> float:
    """1.4826 x median absolute deviation of finite values (a robust sigma)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def brightness(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """Sum of the reflective bands present (blue, green, red, nir, swir1), float32."""
    present = [np.asarray(bands[r], dtype=np.float32) for r in ("blue", "green", "red", "nir", "swir1") if r in bands]
    if not present:
        raise KeyError("no reflective band to measure brightness")
    if len(present) == 1:
        return present[0].copy()
    out = np.add(present[0], present[1])  # the first sum into a new array (no copy of the first band)
    for b in present[2:]:
        np.add(out, b, out=out)
    return out


def otsu_two_thresholds(values: np.ndarray, bins: int = 128) -> tuple[float, float]:
    """Two thresholds splitting finite ``values`` into three classes (multi-level Otsu).

    Example:
        >>> v = np.r_[np.full(50, -0.6), np.full(50, -0.2), np.full(50, 0.5)]
        >>> t1, t2 = otsu_two_thresholds(v)
        >>> -0.6 < t1 < -0.2 < t2 < 0.5
        True
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 3 or v.min() == v.max():
        x = float(v[0]) if v.size else 0.0
        return x, x
    hist, edges = np.histogram(v, bins=bins)
    return _otsu_two_of_histogram(hist, edges, bins)


def _otsu_two_of_histogram(hist: np.ndarray, edges: np.ndarray, bins: int) -> tuple[float, float]:
    """:func:`otsu_two_thresholds` from the ``bins``-bin histogram of its finite values."""
    centres = (edges[:-1] + edges[1:]) / 2
    p = hist / hist.sum()
    w = np.concatenate([[0.0], np.cumsum(p)])
    m = np.concatenate([[0.0], np.cumsum(p * centres)])
    i, j = np.triu_indices(bins + 1, k=1)
    keep = (i >= 1) & (j <= bins - 1)
    i, j = i[keep], j[keep]
    w0, w1, w2 = w[i], w[j] - w[i], 1.0 - w[j]
    m0, m1, m2 = m[i], m[j] - m[i], m[-1] - m[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = m0 ** 2 / w0 + m1 ** 2 / w1 + m2 ** 2 / w2
    between[~np.isfinite(between)] = -np.inf
    k = int(np.argmax(between))
    return float(edges[i[k]]), float(edges[j[k]])


#: :func:`water_thresholds` keeps a regular subsample of at most this many pixels per date.
THRESHOLD_SAMPLES = 250_000

#: Weak water lies above this share of the way from the land median up to the water threshold.
WEAK_SHARE = 0.5


def water_thresholds(index_before: np.ndarray, index_after: np.ndarray,
                     brightness_before: np.ndarray, brightness_after: np.ndarray, *,
                     dark_fraction: float = 0.65) -> WaterThresholds:
    """Scene thresholds from the joint histogram of both dates' (normalised) water index.

    * ``water``: among Otsu's three-class upper threshold and two-class threshold, the first
      whose upper class is darker than the rest (water is the darkest cover in total
      brightness; a bright upper class means the split fell between two kinds of land);
    * ``weak_water``: halfway between ``water`` and the median land index;
    * ``dark_level``: ``dark_fraction`` x the median brightness of land (``land_brightness``);
    * ``change``: a tenth of the water-land gap, and at least 3 robust sigmas of the index
      difference over pixels that are open water on both dates (sensor noise, residual shift).

    Args:
        index_before, index_after: sampled index values (same pixels, both dates, finite).
        brightness_before, brightness_after: :func:`brightness` of the same pixels.
        dark_fraction: dark water is darker than this share of the land median brightness.
    """
    step = max(1, int(np.ceil(index_before.size / THRESHOLD_SAMPLES)))  # a regular subsample is plenty
    index_before, index_after = index_before[::step], index_after[::step]
    brightness_before, brightness_after = brightness_before[::step], brightness_after[::step]
    joint = np.concatenate([index_before, index_after]).astype(np.float64)
    bright = np.concatenate([brightness_before, brightness_after]).astype(np.float64)
    ok = np.isfinite(joint) & np.isfinite(bright)
    if not ok.all():
        joint, bright = joint[ok], bright[ok]
    if joint.size < 10:
        return WaterThresholds(0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0)
    t2, eta, t3 = _both_otsu(joint)
    t, land_level, up = t2, None, None
    for cand in (t3, t2):
        up = joint > cand
        if up.any() and (~up).any():
            land_median = np.median(bright[~up])
            if np.median(bright[up]) < 0.75 * land_median:
                t, land_level = cand, float(land_median)  # the land below t: ~up, its median taken
                break
    else:
        # No dark upper class: the scene holds (almost) no water; keep the split out of land.
        t = max(t2, float(np.quantile(joint, 0.995)))
        up = joint > t
    water = joint[up]
    land = joint[~up]
    w_mean = float(np.median(water)) if water.size else t
    l_mean = float(np.median(land)) if land.size else t
    stable = (index_before > t) & (index_after > t)
    diff = (index_after - index_before)[stable] if stable.sum() >= 100 else index_after - index_before
    noise = robust_scale(diff)
    change = max(0.1 * (w_mean - l_mean), 3.0 * noise)
    if land_level is None:
        land_b = bright[~up]
        land_level = float(np.median(land_b)) if land_b.size else 0.0
    dark = dark_fraction * land_level
    return WaterThresholds(water=t, weak_water=t - WEAK_SHARE * (t - l_mean), dark_level=dark,
                           change=float(change), separability=eta, water_mean=w_mean, land_mean=l_mean,
                           land_brightness=land_level)


def _both_otsu(v: np.ndarray) -> tuple[float, float, float]:
    """``(*otsu_threshold(v), otsu_two_thresholds(v)[1])`` of finite float64 ``v`` (10 or more
    values), from one histogram: the 128 bins of the three-class split are the 256 bins of the
    two-class one summed in pairs (``np.histogram`` bins by its edges, and every other edge of
    its 257 is, exactly, an edge of its 129: checked, else the 128 bins are counted again)."""
    lo, hi = v.min(), v.max()
    if lo == hi:
        return float(v[0]), 0.0, float(v[0])
    hist, edges = np.histogram(v, bins=256)
    t2, eta = _otsu_of_histogram(hist, edges, v)
    if np.array_equal(edges[::2], np.linspace(lo, hi, 129, endpoint=True, dtype=edges.dtype)):
        two = _otsu_two_of_histogram(hist.reshape(128, 2).sum(axis=1), edges[::2], 128)
    else:
        two = otsu_two_thresholds(v)
    return t2, eta, two[1]


def is_water(index: np.ndarray, bright: np.ndarray, t: WaterThresholds) -> np.ndarray:
    """Boolean water mask under the scene thresholds ``t`` (see :class:`WaterThresholds`)."""
    return (index > t.water) | ((index > t.weak_water) & (bright < t.dark_level))
