"""One block of the change job: read both dates, normalise, mask, and code each pixel.

A :class:`BlockJob` is a small picklable description of the whole job (sources, grid, shift,
scene statistics); :func:`process_block` turns one window of it into a ``uint8`` code array.
The same function runs in local threads and on dask workers, so both give identical output.
Each thread keeps its own open dataset handles (GDAL handles must not be shared).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.windows import Window

from tuban.imagery.align import Grid, GridReader, open_on_grid
from tuban.imagery.masks import (
    SceneBrightness,
    cloud_candidates,
    cloud_levels,
    cloud_shadow_mask,
    nodata_mask,
    qa_mask,
    user_mask,
)
from tuban.imagery.raster_io import DateSource
from tuban.imagery.water import BandGain, WaterThresholds, brightness, is_water, water_index
from tuban.pipelines.change_tiles import SampleTiles, tiles_of

__all__ = ["CODE", "LAYERS", "BlockJob", "process_block", "code_window", "read_date", "bands_of", "close_thread_readers",
           "forget_inherited_readers", "quantise_index", "dequantise_index", "quantise_level", "LAND_LEVEL",
           "dark_level_q"]

#: Pixel codes of the change raster.
CODE = {"land": 0, "water": 1, "new_water": 2, "lost_water": 3, "masked": 4}

#: GDAL block cache while a thread reads blocks. rasterio passes an integer GDAL_CACHEMAX to
#: GDALSetCacheMax in BYTES (and the setting is process-wide), so it is given in bytes here.
GDAL_CACHE_MB = 64


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs to code any block of the comparison grid."""

    token: str
    before: DateSource
    after: DateSource
    grid: Grid
    shift_px: tuple[float, float]
    index_name: str
    gains: dict[str, BandGain]
    thresholds: WaterThresholds
    bright_before: SceneBrightness
    bright_after: SceneBrightness
    halo_px: int = 0
    mask_geoms_wkb: tuple[bytes, ...] = field(default=())


_local = threading.local()


def _readers(job: BlockJob) -> tuple[GridReader, GridReader]:
    cache: OrderedDict = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = OrderedDict()
    if job.token not in cache:
        stack = contextlib.ExitStack()
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB << 20))
        rb = stack.enter_context(open_on_grid(job.before, job.grid))
        ra = stack.enter_context(open_on_grid(job.after, job.grid, shift_px=job.shift_px))
        cache[job.token] = (stack, rb, ra)
        while len(cache) > 2:
            cache.popitem(last=False)[1][0].close()
    _, rb, ra = cache[job.token]
    return rb, ra


def close_thread_readers() -> None:
    """Close the dataset handles the calling thread opened."""
    cache = getattr(_local, "cache", None)
    while cache:
        cache.popitem()[1][0].close()


_inherited: list = []


def forget_inherited_readers() -> None:
    """In a forked worker: never use the parent's dataset handles (they share file offsets).

    The inherited handles are kept referenced, not closed: closing them runs GDAL code on
    state that belongs to the parent.
    """
    global _local
    _inherited.append(_local)
    _local = threading.local()


def read_date(reader: GridReader, src: DateSource, window: Window) -> dict[str, np.ndarray]:
    """Role -> float32 array of ``window`` on the grid, with MTL scaling applied (qa raw).

    All bands are read in one call: pixel-interleaved files decode each tile once.
    """
    return _read_bands(reader, src, window)[0]


def _comparable(dtype: np.dtype, value: float) -> object | None:
    """``value`` as a scalar to compare ``dtype`` pixels with exactly, or None if none can equal it.

    Integer pixels are compared with an integer of their own type (no float64 copy of the band);
    the result is the same as comparing with the float.
    """
    if not np.issubdtype(dtype, np.integer):
        return value
    info = np.iinfo(dtype)
    if not float(value).is_integer() or not info.min <= value <= info.max:
        return None
    return dtype.type(int(value))


def _read_bands(reader: GridReader, src: DateSource, window: Window) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`read_date` plus its nodata mask (any reflective band NaN, nodata or warp fill)."""
    return bands_of(_read_raw(reader, src, window), src)


def _read_raw(reader: GridReader, src: DateSource, window: Window, tiles: SampleTiles | None = None) -> np.ndarray:
    """The ``(roles, rows, cols)`` array of ``window`` as stored, bands in ``src.roles`` order
    (``tiles``: the date's tiles kept from the sample reads, copied instead of decoded again)."""
    if tiles is not None:
        return tiles.read(reader, window)
    return reader.read([src.roles[r] for r in src.roles], window)


def bands_of(raw: np.ndarray, src: DateSource, out: Mapping[str, np.ndarray] | None = None,
             ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`read_date` of the raw array :func:`_read_raw` read, with its nodata mask (pixel
    by pixel: any part of it gives the same values as the whole).

    ``out``: role -> array of ``raw``'s pixel shape to write the bands into (float32, the QA
    band in ``raw``'s type; e.g. views of a concatenation), instead of new arrays.
    """
    roles = list(src.roles)
    raw_nodata = src.nodata
    floating = np.issubdtype(raw.dtype, np.floating)
    nodata = None if raw_nodata is None or np.isnan(raw_nodata) else _comparable(raw.dtype, raw_nodata)
    # warp fill sentinel for integer sources without nodata
    fill = _comparable(raw.dtype, -9999.0) if raw_nodata is None or not floating else None
    bad = np.zeros(raw.shape[1:], dtype=bool)
    for k, role in enumerate(roles):
        if role == "qa":
            continue
        arr = raw[k]
        if floating:
            bad |= np.isnan(arr)
        if nodata is not None:
            bad |= arr == nodata
        if fill is not None:
            bad |= arr == fill
    any_bad = bool(bad.any())
    bands: dict[str, np.ndarray] = {}
    for k, role in enumerate(roles):
        if role == "qa":
            if out is not None:
                out[role][...] = raw[k]
            bands[role] = raw[k] if out is None else out[role]
            continue
        if out is None:
            a = raw[k].astype(np.float32)
        else:
            a = out[role]
            np.copyto(a, raw[k], casting="unsafe")  # the cast of astype, into place
        gain, offset = src.scales.get(role, (1.0, 0.0))
        if gain != 1.0 or offset != 0.0:
            a *= np.float32(gain)
            a += np.float32(offset)
        if any_bad:
            np.copyto(a, np.float32(np.nan), where=bad)
        bands[role] = a
    return bands, bad


def nodata_is_nan_alone(dtype: np.dtype, src: DateSource) -> bool:
    """Whether :func:`bands_of` of integer pixels of ``dtype`` is finite except where its nodata
    mask is (NaN there): the scaled values of every reflective band cannot overflow float32."""
    if not np.issubdtype(dtype, np.integer):
        return False  # float pixels may hold inf
    info = np.iinfo(dtype)
    top = max(abs(int(info.min)), abs(int(info.max)))
    for role in src.roles:
        if role == "qa":
            continue
        gain, offset = src.scales.get(role, (1.0, 0.0))
        g, o = float(np.float32(gain)), float(np.float32(offset))
        if not (np.isfinite(g) and np.isfinite(o)) or top * abs(g) + abs(o) >= 1e38:
            return False
    return True


def _expand(window: Window, grid: Grid, halo: int) -> tuple[Window, tuple[slice, slice]]:
    c0 = max(0, int(window.col_off) - halo)
    r0 = max(0, int(window.row_off) - halo)
    c1 = min(grid.width, int(window.col_off + window.width) + halo)
    r1 = min(grid.height, int(window.row_off + window.height) + halo)
    inner = (slice(int(window.row_off) - r0, int(window.row_off) - r0 + int(window.height)),
             slice(int(window.col_off) - c0, int(window.col_off) - c0 + int(window.width)))
    return Window(c0, r0, c1 - c0, r1 - r0), inner


def apply_gains(bands: Mapping[str, np.ndarray], gains: Mapping[str, BandGain]) -> dict[str, np.ndarray]:
    """After-date bands mapped onto the before-date radiometry (in place where possible)."""
    out = dict(bands)
    for role, g in gains.items():
        if role in out and (g.gain != 1.0 or g.offset != 0.0):
            a = out[role]
            np.multiply(a, np.float32(g.gain), out=a)
            np.add(a, np.float32(g.offset), out=a)
    return out


#: Shadows next to a cloud are looked for this close to it inside a block (far ones by the
#: whole-grid pass, ``change.mask_shadows``).
SHADOW_REACH_PX = 16
#: How far a block's cloud and shadow masks depend on pixels around it: speckle opening (2 px),
#: shadow reach, and the 2 px dilation of both masks, plus a margin.
CLOUD_HALO_PX = SHADOW_REACH_PX + 8


def invalid_mask(bands: Mapping[str, np.ndarray], src: DateSource, bright: SceneBrightness,
                 nodata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(invalid, cloud)``: nodata, QA-flagged, cloud and near cloud-shadow pixels; clouds.

    ``nodata`` is the mask :func:`_read_bands` already made (NaN in any band), when known.
    """
    invalid, cloud, _ = _masks(bands, src, bright, nodata)
    return invalid, cloud


def _masks(bands: Mapping[str, np.ndarray], src: DateSource, bright: SceneBrightness,
           nodata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`invalid_mask` plus the raw cloud candidates (before speckle opening)."""
    bad = nodata_mask(bands, None) if nodata is None else nodata.copy()
    if "qa" in bands and src.qa_kind:
        q = qa_mask(bands["qa"], src.qa_kind)
        bad |= q
    clean = {r: b for r, b in bands.items() if r != "qa"}  # NaN compares False: never cloud
    candidates = cloud_candidates(clean, bright)
    cloud, shadow = cloud_shadow_mask(clean, bright, shadow_reach_px=SHADOW_REACH_PX, candidates=candidates)
    if "qa" in bands and src.qa_kind:
        cloud = cloud | q
    return bad | cloud | shadow, cloud, candidates


def code_pixels(index_before: np.ndarray, index_after: np.ndarray, bright_before: np.ndarray,
                bright_after: np.ndarray, valid: np.ndarray, t: WaterThresholds) -> np.ndarray:
    """Per-pixel change codes (see :data:`CODE`) from both dates' water index and brightness."""
    wb = is_water(index_before, bright_before, t)
    wa = is_water(index_after, bright_after, t)
    codes = np.zeros(index_before.shape, dtype=np.uint8)
    # copyto(where=) writes in place without building index arrays; the classes are disjoint.
    np.copyto(codes, np.uint8(CODE["water"]), where=wb & wa)
    _code_one_date_water(codes, index_before, index_after, wb, wa, t)
    np.copyto(codes, np.uint8(CODE["masked"]), where=~valid)
    return codes


def _code_one_date_water(codes: np.ndarray, index_before: np.ndarray, index_after: np.ndarray,
                         wb: np.ndarray, wa: np.ndarray, t: WaterThresholds) -> None:
    """Code (in place) new and lost water among the pixels that are water on one date alone.

    Only those pixels can be new or lost, so the index difference is taken there alone (the
    same float32 subtraction pixel by pixel as on the whole block).
    """
    at = np.flatnonzero(wa ^ wb)
    if at.size:
        d = np.subtract(index_after.ravel()[at], index_before.ravel()[at])
        gained = wa.ravel()[at]
        flat = codes.reshape(-1)
        with np.errstate(invalid="ignore"):
            flat[at[gained & (d > t.change)]] = CODE["new_water"]
            flat[at[~gained & (d < -t.change)]] = CODE["lost_water"]


def quantise_index(index: np.ndarray) -> np.ndarray:
    """Water index in [-1, 1] as uint8 1..255 (0 = no value)."""
    finite = np.isfinite(index)
    scaled = index + 1.0
    scaled *= 127.0
    np.copyto(scaled, 0.0, where=~finite)  # no NaN in the cast; zeroed below anyway
    np.clip(scaled, 0, 254, out=scaled)
    q = scaled.astype(np.uint8)
    q += np.uint8(1)
    q *= finite
    return q


def dequantise_index(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantise_index` (NaN where 0)."""
    q = np.asarray(q)
    if q.dtype == np.uint8:  # a look-up in the 256 values the formula gives: the same floats
        return _DEQUANTISED.take(q)
    return _dequantise(q)


def _dequantise(q: np.ndarray) -> np.ndarray:
    out = (q.astype(np.float32) - 1.0) / 127.0 - 1.0
    out[q == 0] = np.nan
    return out


_DEQUANTISED = _dequantise(np.arange(256, dtype=np.uint8))


#: Value of :func:`quantise_level` at its ``reference`` (the brightness layer's land median).
LAND_LEVEL = 63.5


def quantise_level(values: np.ndarray, reference: float) -> np.ndarray:
    """Brightness relative to a scene level: uint8 1..255 covering 0-4x ``reference``."""
    ref = reference if reference > 0 else 1.0
    finite = np.isfinite(values)
    scaled = values * np.float32(LAND_LEVEL / ref)
    np.copyto(scaled, 0.0, where=np.isnan(scaled))  # +-inf clip to 254 / 0 as before
    np.clip(scaled, 0, 254, out=scaled)
    q = scaled.astype(np.uint8)
    q += np.uint8(1)
    q *= finite
    return q


def dark_level_q(t: WaterThresholds) -> float:
    """The scene's dark-water brightness level in brightness-layer units (land median = :data:`LAND_LEVEL`)."""
    return LAND_LEVEL * t.dark_level / max(1e-9, t.land_brightness)


#: Layers of a processed block / of the whole-grid result stack.
LAYERS = ("codes", "index_before", "index_after", "brightness_after", "flags")


#: Pixels per strip of a block coded at once: the dozens of array passes of the coding stay in
#: the CPU cache (a 1024 px block codes ~2x faster in strips than whole). Strips never change the
#: result: the coding is pixel by pixel except for cloud masks, and blocks with cloud
#: candidates are coded whole.
STRIP_PX = 1 << 16


def process_block(job: BlockJob, window: Window, out: np.ndarray | None = None) -> tuple[Window, np.ndarray]:
    """Code one window of the grid (into ``out``, e.g. the window's view of the result stack,
    when given).

    Returns:
        The window and a ``(5, rows, cols)`` uint8 stack: change codes, quantised water index
        of both dates, the after date's brightness relative to the land median, and flags
        (bit 0 cloud on either date, bit 1 shadow-like darkening, bit 2 cloud candidate: where
        the neighbourhood of the block matters, see :data:`CLOUD_HALO_PX`).
    """
    zeroed = out is None
    if zeroed:
        out = np.zeros((len(LAYERS), int(window.height), int(window.width)), dtype=np.uint8)
    return window, _process(job, window, out, zeroed)[0]


def code_window(job: BlockJob, window: Window, out: np.ndarray) -> int:
    """:func:`process_block` into ``out`` that holds zeros (a fresh result stack).

    Strips whose flags are all zero leave the flags layer unwritten, so its pages of the stack
    are never touched (a fifth of the stack's page faults, when there are no clouds).

    Returns:
        The OR of the window's flags, known without reading them back from the stack.
    """
    return _process(job, window, out, zeroed=True)[1]


def _process(job: BlockJob, window: Window, out: np.ndarray, zeroed: bool) -> tuple[np.ndarray, int]:
    """Code one window into ``out``; ``(out, OR of its flags)``. ``zeroed``: ``out`` holds zeros."""
    rb, ra = _readers(job)
    big, inner = _expand(window, job.grid, job.halo_px)
    raw_b = _read_raw(rb, job.before, big, tiles_of(job.token, 0))
    raw_a = _read_raw(ra, job.after, big, tiles_of(job.token, 1))
    user = None
    if job.mask_geoms_wkb:
        import shapely

        geoms = shapely.from_wkb(list(job.mask_geoms_wkb))
        wt = rasterio.windows.transform(window, job.grid.transform)
        user = user_mask(geoms, wt, (int(window.height), int(window.width)))
    rows = max(1, STRIP_PX // max(1, int(big.width)))
    if job.halo_px == 0 and rows < int(big.height):
        # Strip by strip while no strip holds a cloud candidate (masks are then pixel by pixel).
        bits = 0
        for r in range(0, int(big.height), rows):
            s = slice(r, r + rows)
            done = _code_into(out[:, s], job, raw_b[:, s], raw_a[:, s], None, None if user is None else user[s],
                              zeroed=zeroed)
            if done is None:
                break
            bits |= done
        else:
            return out, bits
    return out, _code_into(out, job, raw_b, raw_a, inner, user)


def _code_into(out: np.ndarray, job: BlockJob, raw_b: np.ndarray, raw_a: np.ndarray,
               inner: tuple[slice, slice] | None, user: np.ndarray | None, *, zeroed: bool = False,
               ) -> int | None:
    """Code raw reads of both dates into ``out`` (the ``inner`` part of them; all when None);
    the OR of the flags written. ``zeroed``: ``out`` holds zeros (all-zero flags may be skipped).

    With ``inner`` None the arrays may be a strip of a block: then nothing is written and None
    returned when the strip holds a cloud candidate (the block must be coded whole).
    """
    before, nodata_b = bands_of(raw_b, job.before)
    after, nodata_a = bands_of(raw_a, job.after)
    after = apply_gains(after, job.gains)
    if inner is None and "qa" not in before and "qa" not in after:
        return _code_strip(out, job, before, after, nodata_b, nodata_a, user, zeroed)
    bad_b, cloud_b, maybe_b = _masks(before, job.before, job.bright_before, nodata_b)
    bad_a, cloud_a, maybe_a = _masks(after, job.after, job.bright_after, nodata_a)
    maybe = maybe_b | maybe_a  # not in place: with no candidates, cloud_b may be maybe_b itself
    if inner is None:
        if maybe.any():
            return None
        inner = (slice(None), slice(None))
    bad_b |= bad_a
    valid = ~bad_b[inner]
    cloud_b |= cloud_a
    cloud = cloud_b[inner]
    if user is not None:
        valid &= ~user
    before = {r: before[r][inner] for r in before if r != "qa"}
    after = {r: after[r][inner] for r in after if r != "qa"}
    ib = water_index(before, job.index_name)
    ia = water_index(after, job.index_name)
    valid &= np.isfinite(ib)
    valid &= np.isfinite(ia)
    bb = brightness(before)
    ba = brightness(after)
    t = job.thresholds
    out[0] = code_pixels(ib, ia, bb, ba, valid, t)
    out[1] = quantise_index(ib)
    out[2] = quantise_index(ia)
    out[3] = quantise_level(ba, t.land_brightness if t.land_brightness > 0 else 1.0)
    # Darkening (or brightening back) by >40 % without open water on the darker date: what a
    # cloud shadow does. Masked later only where a cloud is near (see change.mask_shadows).
    with np.errstate(invalid="ignore"):
        shadowish = (ba < 0.6 * bb) & ~(ia > t.water)
        shadowish |= (bb < 0.6 * ba) & ~(ib > t.water)
    np.left_shift(shadowish, 1, out=out[4], dtype=np.uint8)
    out[4] |= cloud
    out[4] |= np.left_shift(maybe[inner], 2, dtype=np.uint8)
    return int(np.bitwise_or.reduce(out[4], axis=None))  # just written: no page is faulted in


def no_cloud_candidates(bands: dict[str, np.ndarray], bright: SceneBrightness) -> bool:
    """``not cloud_candidates(bands, bright).any()``: the NIR test alone usually settles it."""
    nir = np.asarray(bands.get("nir", bands.get("swir1")), dtype=np.float32)
    if not (nir > cloud_levels(bright)[1]).any():
        return True  # a candidate's NIR is above this level too
    return not cloud_candidates(bands, bright).any()


def _index_and_finite(bands: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`water_index` and where it is finite, without its NaN pass when all is finite."""
    a, b = bands["green"], bands["swir1" if name == "mndwi" else "nir"]
    den = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.subtract(a, b)
        np.divide(out, den, out=out)
    finite = np.isfinite(out)
    if not finite.all():
        out[~finite] = np.nan
    return out, finite


def _quantise_into(dst: np.ndarray, scaled: np.ndarray, finite: np.ndarray, all_finite: bool) -> None:
    """The last steps of :func:`quantise_index` / :func:`quantise_level`, written into ``dst``."""
    if not all_finite:
        np.copyto(scaled, 0.0, where=~finite)
    np.clip(scaled, 0, 254, out=scaled)
    np.copyto(dst, scaled, casting="unsafe")  # the float -> uint8 cast of astype
    dst += np.uint8(1)
    if not all_finite:
        dst *= finite


def _code_strip(out: np.ndarray, job: BlockJob, before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                nodata_b: np.ndarray, nodata_a: np.ndarray, user: np.ndarray | None, zeroed: bool) -> int | None:
    """:func:`_code_into` of a strip without QA bands: the same values with fewer array passes.

    Without a cloud candidate (else None, nothing written) the cloud and shadow masks are
    empty, so invalid pixels are nodata alone; indices, brightness and codes are the same
    float32 operations pixel by pixel, written straight into ``out``. The flags (shadow-like
    darkening only) are not written when all zero and ``out`` holds zeros already.
    """
    if not (no_cloud_candidates(before, job.bright_before) and no_cloud_candidates(after, job.bright_after)):
        return None
    t = job.thresholds
    valid = np.logical_or(nodata_b, nodata_a, out=nodata_b)
    np.logical_not(valid, out=valid)
    if user is not None:
        valid &= ~user
    ib, fin_b = _index_and_finite(before, job.index_name)
    ia, fin_a = _index_and_finite(after, job.index_name)
    valid &= fin_b
    valid &= fin_a
    bb = brightness(before)
    ba = brightness(after)
    # code_pixels and is_water, keeping the open-water tests for the shadow flag below
    open_b, open_a = ib > t.water, ia > t.water
    wb = (ib > t.weak_water) & (bb < t.dark_level)
    wb |= open_b
    wa = (ia > t.weak_water) & (ba < t.dark_level)
    wa |= open_a
    codes = (wb & wa).view(np.uint8)  # CODE["water"] is 1, CODE["land"] 0
    _code_one_date_water(codes, ib, ia, wb, wa, t)
    np.copyto(codes, np.uint8(CODE["masked"]), where=~valid)
    out[0] = codes
    all_b, all_a = bool(fin_b.all()), bool(fin_a.all())
    for dst, index, finite, all_finite in ((out[1], ib, fin_b, all_b), (out[2], ia, fin_a, all_a)):
        scaled = index + 1.0
        scaled *= 127.0
        _quantise_into(dst, scaled, finite, all_finite)
    fin_ba = np.isfinite(ba)
    ref = t.land_brightness if t.land_brightness > 0 else 1.0
    scaled = ba * np.float32(LAND_LEVEL / ref)
    if fin_ba.all():  # no NaN to zero, nothing to clear
        _quantise_into(out[3], scaled, fin_ba, True)
    else:
        np.copyto(scaled, 0.0, where=np.isnan(scaled))  # quantise_level's order: NaN, then clip
        _quantise_into(out[3], scaled, fin_ba, False)
    with np.errstate(invalid="ignore"):
        shadowish = ba < 0.6 * bb
        np.greater(shadowish, open_a, out=shadowish)  # a & ~b for booleans
        darker_b = bb < 0.6 * ba
        np.greater(darker_b, open_b, out=darker_b)
    shadowish |= darker_b
    if shadowish.any():
        np.left_shift(shadowish, 1, out=out[4], dtype=np.uint8)  # no cloud, no candidate: bits 0, 2 clear
        return 2
    if not zeroed:
        out[4] = 0
    return 0
