"""Satellite change detection: new, removed and drained ponds between two dates.

Flow (``run_change``)::

    open_date x2 ──> common_grid ──> sample windows ──> phase-correlation shift
        ──> radiometric normalisation + Otsu thresholds + scene brightness (per scene)
        ──> block codes (worker processes or dask) ──> blobs labelled strip by strip
        ──> shape/kind per blob (worker processes)
        ──> GeoDataFrame (EPSG:4326)

Memory stays bounded: blocks are read window by window, and the only full-size array is the
``uint8`` result stack (see ``LAYERS``), held in a temporary memory-mapped file for big grids or
when worker processes share it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from rasterio.windows import Window

from tuban import RasterError
from tuban.imagery.align import (
    Grid,
    block_windows,
    common_grid,
    estimate_shift,
    open_on_grid,
    shift_of_spectra,
    shift_spectrum,
)
from tuban.imagery.crs import M2_PER_MU, WGS84
from tuban.imagery.georaster import GeoRaster
from tuban.imagery.masks import SceneBrightness, nodata_mask, scene_brightness
from tuban.imagery.ponds import ShapeSettings
from tuban.imagery.raster_io import DateSource, open_date
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
    CLOUD_HALO_PX,
    CODE,
    LAYERS,
    BlockJob,
    apply_gains,
    bands_of,
    invalid_mask,
    no_cloud_candidates,
    nodata_is_nan_alone,
    process_block,
)
from tuban.pipelines.change_patches import patches_from_codes
from tuban.pipelines.change_pool import (
    BlockTally,
    StackFile,
    code_blocks,
    local_pool,
    stack_path,
    store_block,
)
from tuban.pipelines.change_shadow import reduce_cells, shadow_zone
from tuban.pipelines.change_tiles import SampleTiles, read_samples
from tuban.pipelines.change_tiles import register as register_tiles
from tuban.pipelines.change_tiles import release as release_tiles

__all__ = ["ChangeSettings", "ChangeResult", "run_change", "detect_changes", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("new_pond", "removed_pond", "drained_pond", "new_water", "lost_water")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ChangeSettings:
    """Options of one change job.

    Args:
        bands_before, bands_after: explicit role -> 1-based band index (``--bands``).
        sensor_before, sensor_after: sensor presets (``--sensor``).
        block_px: block edge in pixels for windowed processing.
        workers: local worker processes for block coding and patch examination (blocks go
            to the dask cluster instead when ``scheduler`` is given).
        scheduler: dask distributed scheduler address (``tcp://host:port``) or a ``Client``.
        correct_shift: resample the second date by the measured misregistration.
        shapes: pond size and shape criteria.
        mask_geoms: exclusion polygons (shapely, EPSG:4326) from a user mask.
        shadow_reach_m: how far from a cloud its shadow may fall (cloud height / tan(sun elev.)).
        dry_ponds: also report freshly dug ponds without water yet (``kind`` ``new_pond``,
            ``state`` ``"dry"``; see :mod:`tuban.pipelines.change_dug`).
    """

    bands_before: dict[str, int] | None = None
    bands_after: dict[str, int] | None = None
    sensor_before: str | None = None
    sensor_after: str | None = None
    block_px: int = 1024
    workers: int = 1
    scheduler: object | None = None
    correct_shift: bool = True
    shapes: ShapeSettings = field(default_factory=ShapeSettings)
    mask_geoms: tuple = ()
    shadow_reach_m: float = 3000.0
    dry_ponds: bool = False


@dataclass(frozen=True)
class ChangeResult:
    """Patches (EPSG:4326 GeoDataFrame), measured shift, dates and run statistics."""

    patches: gpd.GeoDataFrame
    shift_px: tuple[float, float]
    dates: tuple[str | None, str | None]
    stats: dict


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


def _read_samples(src: DateSource, grid: Grid, windows: list[Window], shift=(0.0, 0.0),
                  ) -> tuple[list[dict[str, np.ndarray]], SampleTiles | None]:
    """:func:`read_date` of each window, and the file tiles decoded for them when the block
    reads can reuse them (:mod:`tuban.pipelines.change_tiles`)."""
    with open_on_grid(src, grid, shift_px=shift) as reader:
        raws, tiles = read_samples(reader, grid, [src.roles[r] for r in src.roles], windows)
        return [bands_of(raw, src)[0] for raw in raws], tiles


def _sample_date(src: DateSource, grid: Grid, windows: list[Window], shift=(0.0, 0.0),
                 ) -> tuple[dict[str, np.ndarray], SceneBrightness | None, np.ndarray | None, SampleTiles | None]:
    """One date's sample windows, concatenated (role -> 1-D array, window after window), the
    scene brightness of its pixels where every reflective band is finite, and its
    :func:`invalid_mask` window by window, concatenated alike (both None when no pixel is
    finite); and the file tiles decoded for the samples (see :func:`_read_samples`). A
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
    """:func:`_read_samples` concatenated (role -> 1-D array, window after window: each window's
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
    views = [_windows_of({"index": index}, windows)[i]["index"] for i in picks]
    return cat, bright, invalid, tiles, index, [shift_spectrum(v) for v in views] if spectra else views


def _spectra(windows: list[dict[str, np.ndarray]], index_name: str) -> list[np.ndarray | None]:
    """:func:`shift_spectrum` of each window's water index."""
    return [shift_spectrum(water_index(w, index_name)) for w in windows]


def _measure_shift(sb: list[dict], sa: list[dict], index_name: str, threads: bool = False):
    """Median phase-correlation shift over sample windows (x, y in pixels) and best response.

    ``threads``: the correlations in two threads of this process (the estimates do not depend
    on where they run).
    """
    spectra_b, spectra_a = _map_threads(threads, _spectra, [sb, sa], [index_name, index_name])
    return _shift_of(spectra_b, spectra_a, threads)


def _shift_of(spectra_b: list, spectra_a: list, threads: bool = False, spectra: bool = True):
    """:func:`_measure_shift` from both dates' :func:`_spectra` (what :func:`estimate_shift`
    gives for each pair of windows), or from the windows' index itself when not ``spectra``."""
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
    gains = fit_normalisation(cat, cat_a, valid, map_dates=None if pool is None else functools.partial(_map_threads, True))
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


def coarse_flags(flags_layer: np.ndarray, factor: int, strip_px: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The cloud (bit 0) and shadow-like (bit 1) flags on a ``factor`` times coarser grid (any).

    Read strip by strip; each strip is a whole number of coarse rows, so every coarse cell
    covers the same ``factor x factor`` pixels as a reduction of the whole layer would.
    """
    height, width = flags_layer.shape
    step = max(factor, strip_px - strip_px % factor)
    shape = (-(-height // factor), -(-width // factor))
    coarse, coarse_dark = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    for r in range(0, height, step):
        flags = np.asarray(flags_layer[r:r + step])
        for bit, target in ((1, coarse), (2, coarse_dark)):
            red = reduce_cells((flags & bit).astype(bool), factor, "any")
            target[r // factor: r // factor + red.shape[0]] |= red
    return coarse, coarse_dark


def mask_shadows(stack: np.ndarray, grid: Grid, reach_m: float, strip_px: int = 1024) -> int:
    """Mask (in place) shadow-like darkening where a cloud of either date casts its shadow.

    Clouds are found per block; their shadows can fall kilometres away, beyond any block halo,
    so proximity is measured here on a coarse whole-grid cloud map.

    Returns:
        How many pixels were newly masked.
    """
    factor = max(1, int(math.ceil(max(grid.width, grid.height) / 2048)))
    coarse, coarse_dark = coarse_flags(stack[4], factor, strip_px)
    if not coarse.any():
        return 0
    changed = 0
    reach_px = reach_m / (grid.pixel_size_m * factor)
    # Only where a cloud's own shape, moved along the measured shadow direction, lands
    # (change_shadow); within reach of any cloud when no displacement can be measured.
    near, fit = shadow_zone(coarse, coarse_dark, reach_px)
    log.debug("cloud shadow fit: %s", fit)
    for r in range(0, grid.height, strip_px):
        rows = np.arange(r, min(grid.height, r + strip_px)) // factor
        cols = np.arange(grid.width) // factor
        near_full = near[rows][:, cols]
        flags = np.asarray(stack[4, r:r + strip_px])
        shade = near_full & ((flags & 2) > 0)
        if shade.any():
            codes = stack[0, r:r + strip_px]
            changed += int(np.count_nonzero(codes[shade] != CODE["masked"]))
            codes[shade] = CODE["masked"]
    return changed


def _code(job: BlockJob, windows: list[Window], stack: np.ndarray, pool: Executor | None,
          stack_file: StackFile | None, scheduler, progress: Progress | None) -> BlockTally:
    """Code ``windows`` into ``stack`` locally (in-process or worker processes) or on dask."""
    if scheduler is None:
        return code_blocks(job, windows, stack, pool, stack_file, progress)
    return _run_dask(job, windows, stack, scheduler, progress)


def _near_candidates(stack: np.ndarray, window: Window, grid: Grid) -> bool:
    """Whether a cloud candidate lies within :data:`CLOUD_HALO_PX` of ``window``."""
    r0, c0 = max(0, int(window.row_off) - CLOUD_HALO_PX), max(0, int(window.col_off) - CLOUD_HALO_PX)
    r1 = min(grid.height, int(window.row_off + window.height) + CLOUD_HALO_PX)
    c1 = min(grid.width, int(window.col_off + window.width) + CLOUD_HALO_PX)
    return bool((np.asarray(stack[LAYERS.index("flags"), r0:r1, c0:c1]) & 4).any())


def _mask_in_grid(geoms: Sequence, grid: Grid) -> list:
    if not geoms:
        return []
    return list(gpd.GeoSeries(list(geoms), crs=WGS84).to_crs(grid.crs))


def _run_dask(job: BlockJob, windows: list[Window], stack: np.ndarray, scheduler,
              progress: Progress | None) -> BlockTally:
    from distributed import Client, as_completed

    tally = BlockTally.empty()
    client = scheduler if isinstance(scheduler, Client) else Client(str(scheduler))
    try:
        job_f = client.scatter(job, broadcast=True)
        futures = client.map(process_block, [job_f] * len(windows), windows, pure=False)
        for n, fut in enumerate(as_completed(futures), start=1):
            win, block = fut.result()
            tally.add(*store_block(stack, win, block))
            if progress:
                progress(n, len(windows))
    finally:
        if client is not scheduler:
            client.close()
    return tally


def detect_changes(before: DateSource | GeoRaster, after: DateSource | GeoRaster,
                   settings: ChangeSettings | None = None, progress: Progress | None = None,
                   ) -> ChangeResult:
    """Change patches between two opened dates (or in-memory GeoRasters).

    Args:
        before, after: dates from :func:`tuban.imagery.raster_io.open_date`, or GeoRasters with
            ``band_names`` naming roles (written to a temporary GeoTIFF first).
        settings: job options; defaults apply when None.
        progress: optional ``callback(done_blocks, total_blocks)``.
    """
    settings = settings or ChangeSettings()
    clock = [time.perf_counter()]
    cpu = [time.process_time()]  # this process only (worker processes not included)
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}

    def lap(stage: str) -> None:
        clock.append(time.perf_counter())
        cpu.append(time.process_time())
        seconds[stage] = round(clock[-1] - clock[-2], 3)
        cpu_seconds[stage] = round(cpu[-1] - cpu[-2], 3)

    with tempfile.TemporaryDirectory(prefix="tuban-change-") as tmp:
        before = _as_source(before, Path(tmp) / "before.tif")
        after = _as_source(after, Path(tmp) / "after.tif")
        with local_pool(settings.workers) as pool:
            job, stats = _prepare(before, after, settings, pool)
            lap("prepare")
            grid = job.grid
            shape = (len(LAYERS), grid.height, grid.width)
            # Worker processes share the stack through a file; one process keeps small grids in RAM.
            stack_file = None
            if settings.workers > 1 or grid.width * grid.height > 64_000_000:
                stack_file = StackFile(stack_path(tmp), shape)
                stack = stack_file.create()
            else:
                stack = np.zeros(shape, dtype=np.uint8)
            windows = block_windows(grid, settings.block_px)
            try:
                tally = _code(job, windows, stack, pool, stack_file, settings.scheduler, progress)
                if tally.candidates:
                    # Blocks near cloud candidates again, with their surroundings, so cloud and shadow
                    # masks are what the whole grid would give, whatever the block size.
                    redo = [w for w in windows if _near_candidates(stack, w, grid)]
                    _code(dataclasses.replace(job, halo_px=CLOUD_HALO_PX), redo, stack, pool, stack_file,
                          settings.scheduler, None)
                    tally = BlockTally.of_stack(stack)
            finally:
                release_tiles(job.token)  # the sample reads' tiles (change_tiles): coded, or failed
            lap("blocks")
            if tally.cloudy and mask_shadows(stack, grid, settings.shadow_reach_m):
                tally = BlockTally.of_stack(stack)
            counts = tally.counts
            stats["pixels"] = {k: int(counts[v]) for k, v in CODE.items()}
            if counts[CODE["masked"]] == grid.width * grid.height:
                raise RasterError(f"{before.label} / {after.label}", "every pixel is nodata or masked")
            lap("shadows")
            patches = patches_from_codes(stack, job, settings.shapes, pool=pool, stack_file=stack_file,
                                         dry_ponds=settings.dry_ponds)
        del stack
        lap("patches")
        stats["seconds"] = seconds
        # CPU time of this process per stage (the workers' is not in it when there are some)
        stats["cpu_seconds"] = cpu_seconds

    patches["before_date"] = before.date
    patches["after_date"] = after.date
    stats["patches"] = {k: int((patches["kind"] == k).sum()) for k in KINDS}
    return ChangeResult(patches=patches, shift_px=(stats["shift_px"]["dx"], stats["shift_px"]["dy"]),
                        dates=(before.date, after.date), stats=stats)


def _as_source(src: DateSource | GeoRaster, tmp_path: Path) -> DateSource:
    if isinstance(src, DateSource):
        return src
    import rasterio

    r = src
    with rasterio.open(tmp_path, "w", driver="GTiff", width=r.width, height=r.height, count=r.count,
                       dtype=r.data.dtype, crs=r.crs, transform=r.transform, nodata=r.nodata) as ds:
        ds.write(r.data)
        for i, name in enumerate(r.band_names, start=1):
            ds.set_band_description(i, name)
    return open_date([tmp_path])


def run_change(before_paths: Sequence[str | Path], after_paths: Sequence[str | Path],
               settings: ChangeSettings | None = None, progress: Progress | None = None,
               ) -> ChangeResult:
    """Open both dates from paths (files, folders, globs, per-band sets) and detect changes."""
    settings = settings or ChangeSettings()
    before = open_date(before_paths, bands=settings.bands_before, sensor=settings.sensor_before)
    after = open_date(after_paths, bands=settings.bands_after, sensor=settings.sensor_after)
    result = detect_changes(before, after, settings, progress)
    # name the inputs, so triage can cut before/after evidence chips from them later
    result.stats["sources"] = {"before": _source_names(before_paths), "after": _source_names(after_paths)}
    return result


def _source_names(paths: Sequence[str | Path]) -> str | list[str]:
    """Absolute input path(s) of one date: a string for one file, else a list."""
    names = [str(Path(p).resolve()) if Path(p).exists() else str(p) for p in paths]
    return names[0] if len(names) == 1 else names


def area_mu(area_m2: float) -> float:
    """m² to 亩."""
    return area_m2 / M2_PER_MU
