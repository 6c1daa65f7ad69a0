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
from rasterio.windows import Window

from tuban import RasterError
from tuban.imagery.align import Grid, block_windows
from tuban.imagery.crs import M2_PER_MU
from tuban.imagery.georaster import GeoRaster
from tuban.imagery.ponds import ShapeSettings
from tuban.imagery.raster_io import DateSource, open_date
from tuban.pipelines.change_blocks import (
    CLOUD_HALO_PX,
    CODE,
    LAYERS,
    BlockJob,
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
from tuban.pipelines.change_prepare import _prepare
from tuban.pipelines.change_shadow import coarse_flags, shadow_zone
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
