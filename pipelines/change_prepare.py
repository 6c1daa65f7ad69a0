"""The preparation of a change job: sample windows, scene statistics, shift, thresholds.

:func:`_prepare` reads nine 512 px sample windows of each date (through the tiles the block
stage reuses, :mod:`tuban.pipelines.change_tiles`), measures each date's scene brightness and
masks, the misregistration by phase correlation on five of them, fits the radiometric
normalisation and derives the scene thresholds, and returns the :class:`BlockJob` every block
is coded with. Each date's part runs in one task (:func:`_date_task`; with workers, both dates
at once in two threads of the parent); every shortcut gives exactly the plain computation
(``tests/test_change_speed_round*.py``).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import shapely
from rasterio.windows import Window

from tuban import RasterError
from tuban.imagery.align import (
    Grid,
    common_grid,
    estimate_shift,
    open_on_grid,
    shift_of_spectra,
    shift_spectrum,
)
from tuban.imagery.crs import WGS84
from tuban.imagery.masks import SceneBrightness, nodata_mask, scene_brightness
from tuban.imagery.raster_io import DateSource
from tuban.imagery.water import (
    THRESHOLD_SAMPLES,
    WaterThresholds,
    brightness,
    fit_normalisation,
    water_index,
    water_index_name,
    water_thresholds,
)
from tuban.pipelines.change_blocks import (
    BlockJob,
    apply_gains,
    bands_of,
    invalid_mask,
    no_cloud_candidates,
    nodata_is_nan_alone,
)
from tuban.pipelines.change_tiles import SampleTiles, read_samples
from tuban.pipelines.change_tiles import register as register_tiles

if TYPE_CHECKING:
    from tuban.pipelines.change import ChangeSettings

__all__ = ["_prepare"]


def _sample_windows(grid: Grid, size: int, per_side: int) -> list[Window]:
    w, h = min(size, grid.width), min(size, grid.height)
    cols = np.linspace(0, grid.width - w, per_side).round().astype(int)
    rows = np.linspace(0, grid.height - h, per_side).round().astype(int)
    seen, out = set(), []
    for r in rows:
        for c in cols:
            if (r, c) not in seen:
                seen.add((r, c))
                out.append(Window(int(c), int(r), w, h))
    return out


def _sample_date(src: DateSource, grid: Grid, windows: list[Window], shift=(0.0, 0.0),
                 ) -> tuple[dict[str, np.ndarray], SceneBrightness | None, np.ndarray | None, SampleTiles | None]:
    """One date's sample windows, concatenated (role -> 1-D array, window after window), the
    scene brightness of its pixels where every reflective band is finite, and its
    :func:`invalid_mask` window by window, concatenated alike (both None when no pixel is
    finite); and the file tiles decoded for the samples (see :func:`_read_cat`). A
    per-date task: with workers both dates are measured at once (:func:`_map_threads`)."""
    cat, nodata, nan_alone, tiles = _read_cat(src, grid, windows, shift)
    spectral = _spectral(cat)
    if nan_alone:  # integer pixels: NaN exactly at nodata, every other value finite
        finite = ~nodata
    else:
        finite = None
        for band in spectral.values():  # = np.isfinite(np.stack(bands)).all(axis=0), without the stack
            finite = np.isfinite(band) if finite is None else np.logical_and(finite, np.isfinite(band), out=finite)
    if not finite.any():
        return cat, None, None, tiles
    bright = scene_brightness(spectral, finite)
    if not ("qa" in cat and src.qa_kind) and no_cloud_candidates(spectral, bright):
        # No cloud candidate in any window: no cloud, no shadow, so each window's invalid_mask
        # is its nodata mask (any band NaN), pixel by pixel: the same for the concatenation.
        invalid = nodata if nan_alone else nodata_mask(spectral, None)
    else:
        invalid = np.concatenate([invalid_mask(w, src, bright)[0].ravel() for w in _windows_of(cat, windows)])
    return cat, bright, invalid, tiles


def _read_cat(src: DateSource, grid: Grid, windows: list[Window], shift=(0.0, 0.0),
              ) -> tuple[dict[str, np.ndarray], np.ndarray, bool, SampleTiles | None]:
    """Each window's bands as :func:`read_date` gives them, and the file tiles decoded for them
    when the block reads can reuse them (:mod:`tuban.pipelines.change_tiles`), concatenated
    (role -> 1-D array, window after window: each window's
    bands written in place, no per-window arrays), the nodata mask alike, whether the bands are
    NaN exactly there and finite elsewhere (:func:`nodata_is_nan_alone`), and the kept tiles."""
    with open_on_grid(src, grid, shift_px=shift) as reader:
        raws, tiles = read_samples(reader, grid, [src.roles[r] for r in src.roles], windows)
    sizes = [raw.shape[1] * raw.shape[2] for raw in raws]
    total = sum(sizes)
    cat = {r: np.empty(total, dtype=raws[0].dtype if r == "qa" else np.float32) for r in src.roles}
    nodata = np.empty(total, dtype=bool)
    start = 0
    for raw, n in zip(raws, sizes, strict=True):
        part = {r: v[start:start + n].reshape(raw.shape[1:]) for r, v in cat.items()}
        nodata[start:start + n] = bands_of(raw, src, out=part)[1].ravel()
        start += n
    return cat, nodata, nodata_is_nan_alone(raws[0].dtype, src), tiles


def _windows_of(cat: dict[str, np.ndarray], windows: list[Window]) -> list[dict[str, np.ndarray]]:
    """The sample windows of :func:`_sample_date`'s concatenation, as views (role -> 2-D)."""
    h, w = int(windows[0].height), int(windows[0].width)
    return [{r: v[i * h * w:(i + 1) * h * w].reshape(h, w) for r, v in cat.items()} for i in range(len(windows))]


def _date_task(src: DateSource, grid: Grid, windows: list[Window], picks: list[int], index_name: str,
               spectra: bool = True):
    """:func:`_sample_date` plus the date's water index over all samples (before any
    normalisation) and the shift spectra of the ``picks`` windows' index (each date's half of the
    phase correlations), so with workers all of it runs in the date's thread.

    ``spectra`` False: the picked windows' index itself instead of its spectra (in one process
    the correlations then take them pair by pair: ten spectra of 4 MB are never held at once).
    """
    cat, bright, invalid, tiles = _sample_date(src, grid, windows)
    index = water_index(cat, index_name)  # pixel by pixel: each window's index is a slice of it
    index_windows = _windows_of({"index": index}, windows)
    views = [index_windows[i]["index"] for i in picks]
    return cat, bright, invalid, tiles, index, [shift_spectrum(v) for v in views] if spectra else views


def _shift_of(spectra_b: list, spectra_a: list, threads: bool = False, spectra: bool = True):
    """Median phase-correlation shift over the sample windows (x, y in pixels) and the best
    response, from both dates' :func:`shift_spectrum` of each window's water index (what
    :func:`estimate_shift` gives for each pair of windows), or from the windows' index itself
    when not ``spectra``. ``threads``: the correlations in two threads of this process (the
    estimates do not depend on where they run)."""
    estimates = _map_threads(threads, shift_of_spectra if spectra else estimate_shift, spectra_b, spectra_a)
    shifts = [(dx, dy, resp) for dx, dy, resp in estimates if resp > 0]
    if not shifts:
        return (0.0, 0.0), 0.0
    arr = np.array(shifts)
    return (float(np.median(arr[:, 0])), float(np.median(arr[:, 1]))), float(arr[:, 2].max())


def _token(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def _prepare(before: DateSource, after: DateSource, settings: ChangeSettings, pool: Executor | None = None,
             ) -> tuple[BlockJob, dict]:
    grid = common_grid(before, after)
    index_name = water_index_name(before.roles, after.roles)
    # Nine 512 px windows (tile-sized reads) serve both the shift and the scene statistics.
    windows = _sample_windows(grid, 512, 3)
    picks = [0, 2, 4, 6, 8] if len(windows) == 9 else list(range(len(windows)))  # centre + corners
    # Each date's samples, statistics and its half of the five phase correlations (the FFTs of
    # its windows) in one task; with workers both dates at once, in two threads of this process.
    threads = pool is not None
    (cat, bright_b, invalid_b, tiles_b, index_b, shift_b), (cat_a, bright_a, invalid_a, tiles_a, index_a, shift_a) = \
        _map_threads(threads, _date_task, [before, after], [grid, grid], [windows, windows], [picks, picks],
                     [index_name, index_name], [threads, threads])
    # In this process: five 512 px correlations cost no more than shipping the windows to workers
    # (with workers, in two threads: the FFTs run outside the GIL).
    shift, response = _shift_of(shift_b, shift_a, threads=threads, spectra=threads)
    applied = shift if settings.correct_shift and max(abs(shift[0]), abs(shift[1])) >= 0.2 else (0.0, 0.0)
    if applied != (0.0, 0.0):
        # read again, shifted (a warped read: its tiles are not the block reads' either)
        cat_a, bright_a, invalid_a, tiles_a = _sample_date(after, grid, windows, applied)
        index_a = None
    if bright_b is None:
        raise RasterError(before.label, "all sampled pixels in the overlap are nodata")
    if bright_a is None:
        raise RasterError(after.label, "all sampled pixels in the overlap are nodata")
    valid = ~(invalid_b | invalid_a)
    # with workers, each date's half of the fit (subsample, ranks) in its own thread
    gains = fit_normalisation(cat, cat_a, valid, map_dates=functools.partial(_map_threads, threads))
    thresholds, clear = _scene_thresholds(cat, cat_a, valid, gains, index_name, index_b, index_a)
    if thresholds is None:
        raise RasterError(f"{before.label} / {after.label}", "no clear (cloud-free, valid) pixels in common")
    wkb = tuple(shapely.to_wkb(g) for g in _mask_in_grid(settings.mask_geoms, grid))
    job = BlockJob(
        token=_token(before, after, grid, applied, gains, thresholds, wkb),
        before=before, after=after, grid=grid, shift_px=applied, index_name=index_name,
        gains=gains, thresholds=thresholds, bright_before=bright_b, bright_after=bright_a,
        mask_geoms_wkb=wkb,
    )
    register_tiles(job, tiles_b, tiles_a)  # released by detect_changes after the blocks
    stats = {
        "grid": {"crs": grid.crs.to_string(), "width": grid.width, "height": grid.height,
                 "pixel_size_m": grid.pixel_size_m},
        "index": index_name,
        "shift_px": {"dx": round(shift[0], 3), "dy": round(shift[1], 3), "response": round(response, 3),
                     "applied": bool(applied != (0.0, 0.0))},
        "shift_m": round(math.hypot(*shift) * grid.pixel_size_m, 2),
        "thresholds": {"water": round(thresholds.water, 4), "weak_water": round(thresholds.weak_water, 4),
                       "dark_level": round(thresholds.dark_level, 4), "change": round(thresholds.change, 4),
                       "separability": round(thresholds.separability, 3)},
        "normalisation": {r: [round(g.gain, 4), round(g.offset, 4)] for r, g in gains.items()},
        "clear_fraction_sampled": round(clear, 4),
    }
    return job, stats


def _scene_thresholds(cat: dict[str, np.ndarray], cat_a: dict[str, np.ndarray], valid: np.ndarray,
                      gains: dict, index_name: str, index_b: np.ndarray | None = None,
                      index_a: np.ndarray | None = None) -> tuple[WaterThresholds | None, float]:
    """:func:`water_thresholds` of the sampled pixels clear on both dates with a finite index
    (the after date normalised by ``gains``), and the share of such pixels; (None, 0.0) if none.

    The same values as the thresholds of the whole clear samples: ``water_thresholds`` keeps a
    regular subsample of at most 250,000 of them, which is taken here first, so the index and
    brightness of the other pixels are never computed beyond what the clear test needs (the
    after date's index bands, normalised in place; its other bands only at the subsample).
    ``index_b``, ``index_a``: each date's water index already taken (:func:`_date_task`, before
    normalisation: the after date's is used only when the gains leave its index bands as they are).
    """
    index_roles = ("green", "swir1" if index_name == "mndwi" else "nir")
    ib = water_index(cat, index_name) if index_b is None else index_b
    unchanged = all(r not in gains or (gains[r].gain == 1.0 and gains[r].offset == 0.0) for r in index_roles)
    if index_a is None or not unchanged:
        index_a = water_index(apply_gains({r: cat_a[r] for r in index_roles}, gains), index_name)
    ia = index_a
    ok = valid & np.isfinite(ib) & np.isfinite(ia)
    n_ok = int(np.count_nonzero(ok))
    if n_ok == 0:
        return None, 0.0
    step = max(1, int(np.ceil(n_ok / THRESHOLD_SAMPLES)))  # water_thresholds' own step
    at = slice(None, None, step) if n_ok == ok.size else np.flatnonzero(ok)[::step]
    sub_b = {r: v[at] for r, v in _spectral(cat).items()}
    sub_a = {r: np.array(v[at]) for r, v in _spectral(cat_a).items()}
    sub_a.update(apply_gains({r: v for r, v in sub_a.items() if r not in index_roles}, gains))
    thresholds = water_thresholds(ib[at], ia[at], brightness(sub_b), brightness(sub_a))
    return thresholds, n_ok / ok.size


def _map_threads(threads: bool, fn, *iterables) -> list:
    """``list(map(fn, *iterables))``, in two threads of this process when ``threads``.

    For the preparation's per-date sample tasks and phase correlations with workers: the reads
    decode in GDAL, the FFTs and statistics are large numpy passes, all outside the GIL, so two
    threads run two at once without pickling ~40 MB of samples per date back from a worker
    process (measured slower than doing it serially).
    """
    if not threads:
        return list(map(fn, *iterables))
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="tuban-prepare") as pool:
        return list(pool.map(fn, *iterables))


def _spectral(bands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reflectance bands of a date's band dict (its QA band left out)."""
    return {r: v for r, v in bands.items() if r != "qa"}


def _mask_in_grid(geoms: Sequence, grid: Grid) -> list:
    if not geoms:
        return []
    return list(gpd.GeoSeries(list(geoms), crs=WGS84).to_crs(grid.crs))
