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
from tuban.imagery.masks import SceneBrightness, cloud_shadow_mask, nodata_mask, qa_mask, user_mask
from tuban.imagery.raster_io import DateSource
from tuban.imagery.water import BandGain, WaterThresholds, brightness, is_water, water_index

__all__ = ["CODE", "LAYERS", "BlockJob", "process_block", "read_date", "close_thread_readers",
           "quantise_index", "dequantise_index", "quantise_level"]

#: Pixel codes of the change raster.
CODE = {"land": 0, "water": 1, "new_water": 2, "lost_water": 3, "masked": 4}

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
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
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


def read_date(reader: GridReader, src: DateSource, window: Window) -> dict[str, np.ndarray]:
    """Role -> float32 array of ``window`` on the grid, with MTL scaling applied (qa raw).

    All bands are read in one call: pixel-interleaved files decode each tile once.
    """
    roles = list(src.roles)
    raw = reader.read([src.roles[r] for r in roles], window)
    out: dict[str, np.ndarray] = {}
    raw_nodata = src.nodata
    floating = np.issubdtype(raw.dtype, np.floating)
    bad = np.zeros(raw.shape[1:], dtype=bool)
    for k, role in enumerate(roles):
        if role == "qa":
            continue
        arr = raw[k]
        if floating:
            bad |= np.isnan(arr)
        if raw_nodata is not None and not np.isnan(raw_nodata):
            bad |= arr == raw_nodata
        if raw_nodata is None or not floating:
            bad |= arr == -9999.0  # warp fill sentinel for integer sources without nodata
    for k, role in enumerate(roles):
        if role == "qa":
            out[role] = raw[k]
            continue
        a = raw[k].astype(np.float32)
        gain, offset = src.scales.get(role, (1.0, 0.0))
        if gain != 1.0 or offset != 0.0:
            a *= np.float32(gain)
            a += np.float32(offset)
        a[bad] = np.nan
        out[role] = a
    return out


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


def invalid_mask(bands: Mapping[str, np.ndarray], src: DateSource, bright: SceneBrightness,
                 halo_px: int) -> tuple[np.ndarray, np.ndarray]:
    """``(invalid, cloud)``: nodata, QA-flagged, cloud and near cloud-shadow pixels; clouds."""
    bad = nodata_mask(bands, None)
    if "qa" in bands and src.qa_kind:
        q = qa_mask(bands["qa"], src.qa_kind)
        bad |= q
    clean = {r: b for r, b in bands.items() if r != "qa"}  # NaN compares False: never cloud
    # Shadows next to a cloud are caught here; far ones by the whole-grid pass (mask_shadows).
    cloud, shadow = cloud_shadow_mask(clean, bright, shadow_reach_px=max(16, halo_px))
    if "qa" in bands and src.qa_kind:
        cloud = cloud | q
    return bad | cloud | shadow, cloud


def code_pixels(index_before: np.ndarray, index_after: np.ndarray, bright_before: np.ndarray,
                bright_after: np.ndarray, valid: np.ndarray, t: WaterThresholds) -> np.ndarray:
    """Per-pixel change codes (see :data:`CODE`) from both dates' water index and brightness."""
    wb = is_water(index_before, bright_before, t)
    wa = is_water(index_after, bright_after, t)
    d = index_after - index_before
    codes = np.zeros(index_before.shape, dtype=np.uint8)
    codes[wb & wa] = CODE["water"]
    codes[wa & ~wb & (d > t.change)] = CODE["new_water"]
    codes[wb & ~wa & (d < -t.change)] = CODE["lost_water"]
    codes[~valid] = CODE["masked"]
    return codes


def quantise_index(index: np.ndarray) -> np.ndarray:
    """Water index in [-1, 1] as uint8 1..255 (0 = no value)."""
    q = np.clip(np.nan_to_num((index + 1.0) * 127.0), 0, 254).astype(np.uint8) + np.uint8(1)
    q[~np.isfinite(index)] = 0
    return q


def dequantise_index(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantise_index` (NaN where 0)."""
    out = (q.astype(np.float32) - 1.0) / 127.0 - 1.0
    out[q == 0] = np.nan
    return out


def quantise_level(values: np.ndarray, reference: float) -> np.ndarray:
    """Brightness relative to a scene level: uint8 1..255 covering 0-4x ``reference``."""
    ref = reference if reference > 0 else 1.0
    q = np.clip(np.nan_to_num(values * np.float32(63.5 / ref)), 0, 254).astype(np.uint8) + np.uint8(1)
    q[~np.isfinite(values)] = 0
    return q


#: Layers of a processed block / of the whole-grid result stack.
LAYERS = ("codes", "index_before", "index_after", "brightness_after", "flags")


def process_block(job: BlockJob, window: Window) -> tuple[Window, np.ndarray]:
    """Code one window of the grid.

    Returns:
        The window and a ``(5, rows, cols)`` uint8 stack: change codes, quantised water index
        of both dates, the after date's brightness relative to the land median, and flags
        (bit 0 cloud on either date, bit 1 shadow-like darkening).
    """
    rb, ra = _readers(job)
    big, inner = _expand(window, job.grid, job.halo_px)
    before = read_date(rb, job.before, big)
    after = apply_gains(read_date(ra, job.after, big), job.gains)
    bad_b, cloud_b = invalid_mask(before, job.before, job.bright_before, job.halo_px)
    bad_a, cloud_a = invalid_mask(after, job.after, job.bright_after, job.halo_px)
    valid = ~(bad_b | bad_a)[inner]
    cloud = (cloud_b | cloud_a)[inner]
    if job.mask_geoms_wkb:
        import shapely

        geoms = shapely.from_wkb(list(job.mask_geoms_wkb))
        wt = rasterio.windows.transform(window, job.grid.transform)
        valid &= ~user_mask(geoms, wt, valid.shape)
    ib = water_index({r: before[r][inner] for r in before}, job.index_name)
    ia = water_index({r: after[r][inner] for r in after}, job.index_name)
    valid &= np.isfinite(ib) & np.isfinite(ia)
    out = np.empty((len(LAYERS),) + ib.shape, dtype=np.uint8)
    bb = brightness({r: before[r][inner] for r in before})
    ba = brightness({r: after[r][inner] for r in after})
    out[0] = code_pixels(ib, ia, bb, ba, valid, job.thresholds)
    out[1] = quantise_index(ib)
    out[2] = quantise_index(ia)
    out[3] = quantise_level(ba, job.thresholds.dark_level / 0.65 if job.thresholds.dark_level > 0 else 1.0)
    # Darkening (or brightening back) by >40 % without open water on the darker date: what a
    # cloud shadow does. Masked later only where a cloud is near (see change.mask_shadows).
    with np.errstate(invalid="ignore"):
        shadowish = ((ba < 0.6 * bb) & ~(ia > job.thresholds.water)) | \
                    ((bb < 0.6 * ba) & ~(ib > job.thresholds.water))
    out[4] = cloud.astype(np.uint8) | (shadowish.astype(np.uint8) << 1)
    return window, out
