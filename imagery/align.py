"""Bring two dates onto one grid and measure their sub-pixel misregistration.

The common grid lies in the first date's CRS when it is metric (else the local UTM zone), at the
coarser of the two resolutions, over the intersection of the two footprints. Reading a date on
that grid goes through a ``WarpedVRT`` (so block reads stay windowed) unless the date already
sits on the grid, in which case plain windowed reads are used. A misregistration measured by
phase correlation is corrected by offsetting the warp of the second date by the shift.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from tuban import AlignmentError
from tuban.imagery.crs import WGS84, utm_crs_for
from tuban.imagery.raster_io import DateSource

__all__ = ["Grid", "common_grid", "estimate_shift", "shift_spectrum", "shift_of_spectra", "open_on_grid", "GridReader",
           "block_windows"]


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: CRS (WKT), affine transform, size in pixels."""

    crs_wkt: str
    transform: Affine
    width: int
    height: int

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def pixel_size_m(self) -> float:
        return abs(self.transform.a)


def _metric(crs: CRS) -> bool:
    return bool(crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"))


def _resolution_in(src: DateSource, dst: CRS) -> float:
    src_crs = CRS.from_wkt(src.crs_wkt)
    if src_crs == dst:
        return abs(src.transform.a)
    x0, y0, x1, y1 = rasterio.transform.array_bounds(src.height, src.width, src.transform)
    t, _, _ = calculate_default_transform(src_crs, dst, src.width, src.height, x0, y0, x1, y1)
    return abs(t.a)


def common_grid(before: DateSource, after: DateSource, *, min_size_px: int = 4) -> Grid:
    """The grid both dates are compared on (see module docstring).

    Raises:
        AlignmentError: the footprints do not overlap (or overlap by fewer than ``min_size_px``).
    """
    b_crs, a_crs = CRS.from_wkt(before.crs_wkt), CRS.from_wkt(after.crs_wkt)
    if _metric(b_crs):
        dst = b_crs
    elif _metric(a_crs):
        dst = a_crs
    else:
        x0, y0, x1, y1 = rasterio.transform.array_bounds(before.height, before.width, before.transform)
        lon, lat = rasterio.warp.transform(b_crs, WGS84, [(x0 + x1) / 2], [(y0 + y1) / 2])
        dst = utm_crs_for(lon[0], lat[0])
    res = max(_resolution_in(before, dst), _resolution_in(after, dst))
    boxes = []
    for src, crs in ((before, b_crs), (after, a_crs)):
        x0, y0, x1, y1 = rasterio.transform.array_bounds(src.height, src.width, src.transform)
        boxes.append(transform_bounds(crs, dst, x0, y0, x1, y1, densify_pts=21))
    left = max(boxes[0][0], boxes[1][0])
    bottom = max(boxes[0][1], boxes[1][1])
    right = min(boxes[0][2], boxes[1][2])
    top = min(boxes[0][3], boxes[1][3])
    if right - left < min_size_px * res or top - bottom < min_size_px * res:
        raise AlignmentError(f"{before.label} and {after.label} do not overlap (no common area)")
    if dst == b_crs and math.isclose(abs(before.transform.a), res, rel_tol=1e-9):
        # Snap to the first date's pixel lattice so it is read without resampling.
        ox, oy = before.transform.c, before.transform.f
        left = ox + math.ceil((left - ox) / res - 1e-6) * res
        top = oy - math.ceil((oy - top) / res - 1e-6) * res
    width = int(math.floor((right - left) / res + 1e-6))
    height = int(math.floor((top - bottom) / res + 1e-6))
    if width < min_size_px or height < min_size_px:
        raise AlignmentError(f"{before.label} and {after.label} overlap by less than {min_size_px} pixels")
    return Grid(dst.to_wkt(), Affine(res, 0, left, 0, -res, top), width, height)


def block_windows(grid: Grid, block_px: int) -> list[Window]:
    """Row-major windows of at most ``block_px`` x ``block_px`` covering ``grid``."""
    return [
        Window(c, r, min(block_px, grid.width - c), min(block_px, grid.height - r))
        for r in range(0, grid.height, block_px)
        for c in range(0, grid.width, block_px)
    ]


class GridReader:
    """Windowed reads of one date on a :class:`Grid` (direct when aligned, else warped)."""

    def __init__(self, ds, offset_px: tuple[int, int] | None) -> None:
        self._ds = ds
        self._offset = offset_px

    @property
    def dataset(self):
        """The dataset read (the file itself when direct, a warped view otherwise)."""
        return self._ds

    @property
    def offset_px(self) -> tuple[int, int] | None:
        """``(col, row)`` offset of the grid in the dataset when read directly, else None (warped)."""
        return self._offset

    def read(self, band: int | list[int], window: Window, out: np.ndarray | None = None) -> np.ndarray:
        if self._offset is not None:
            window = Window(window.col_off + self._offset[0], window.row_off + self._offset[1],
                            window.width, window.height)
        return self._ds.read(band, window=window, out=out)


@contextlib.contextmanager
def open_on_grid(
    src: DateSource,
    grid: Grid,
    *,
    shift_px: tuple[float, float] = (0.0, 0.0),
    resampling: Resampling = Resampling.bilinear,
) -> Iterator[GridReader]:
    """Open ``src`` for windowed reads on ``grid``, optionally shifted by ``shift_px`` (x, y).

    A shift ``(dx, dy)`` means the date's content appears ``dx`` columns right and ``dy`` rows
    down of where the grid expects it; reads sample it back into place.
    """
    with rasterio.open(src.dataset) as ds:
        same_crs = CRS.from_wkt(src.crs_wkt) == grid.crs
        t = src.transform
        col = (grid.transform.c - t.c) / t.a
        row = (grid.transform.f - t.f) / t.e
        aligned = (same_crs and math.isclose(t.a, grid.transform.a, rel_tol=1e-9)
                   and math.isclose(t.e, grid.transform.e, rel_tol=1e-9)
                   and abs(col - round(col)) < 1e-3 and abs(row - round(row)) < 1e-3
                   and abs(shift_px[0]) < 0.05 and abs(shift_px[1]) < 0.05
                   and round(col) >= 0 and round(row) >= 0
                   and round(col) + grid.width <= src.width and round(row) + grid.height <= src.height)
        if aligned:
            yield GridReader(ds, (int(round(col)), int(round(row))))
            return
        dst_t = grid.transform @ Affine.translation(shift_px[0], shift_px[1])
        nodata = src.nodata
        vrt_kw = dict(crs=grid.crs, transform=dst_t, width=grid.width, height=grid.height,
                      resampling=resampling)
        if nodata is not None:
            vrt_kw.update(src_nodata=nodata, nodata=nodata)
        elif np.issubdtype(np.dtype(src.dtype), np.floating):
            vrt_kw.update(nodata=float("nan"))
        else:
            # A sentinel outside the data range marks pixels the warp could not fill.
            vrt_kw.update(dtype="float32", nodata=-9999.0)
        with WarpedVRT(ds, **vrt_kw) as vrt:
            yield GridReader(vrt, None)


NORM_POWER = 0.5
MIN_RESPONSE = 0.02  # unrelated images give ~0.011 (512 px windows)


def estimate_shift(reference: np.ndarray, moving: np.ndarray, *, max_shift_px: float = 8.0,
                   ) -> tuple[float, float, float]:
    """Sub-pixel translation of ``moving`` relative to ``reference`` by phase correlation.

    Args:
        reference: 2-D float image (NaN allowed) of the first date.
        moving: same-shaped image of the second date.
        max_shift_px: larger estimates are treated as unreliable and reported as 0.

    Returns:
        ``(dx_px, dy_px, response)``: ``moving`` shows a feature at ``(x + dx, y + dy)`` when
        ``reference`` shows it at ``(x, y)``; response is the correlation peak strength (0-1).

    Example:
        >>> rng = np.random.default_rng(0); a = rng.random((64, 64))
        >>> dx, dy, _ = estimate_shift(a, np.roll(a, 2, axis=1))
        >>> round(dx), round(dy)
        (2, 0)
    """
    if reference.shape != moving.shape:
        return 0.0, 0.0, 0.0
    return shift_of_spectra(shift_spectrum(reference), shift_spectrum(moving), max_shift_px=max_shift_px)


def shift_spectrum(image: np.ndarray) -> np.ndarray | None:
    """The one-image half of :func:`estimate_shift`: the 2-D FFT of ``image`` with NaN filled by
    its mean, centred and Hann-windowed; None when there is nothing to correlate (smaller than
    16 px, all NaN, or flat). Each date's spectra can be taken apart (e.g. in parallel)."""
    if min(image.shape) < 16:
        return None
    finite = bool(np.isfinite(image).all())
    if not finite and np.isnan(image).all():  # nothing valid to correlate
        return None
    x = image.astype(np.float64)
    if not finite:  # (with every value finite there is nothing for nan_to_num to replace)
        x = np.nan_to_num(x, copy=False, nan=float(np.nanmean(image)))
    x -= x.mean()
    if not x.any():
        return None
    return np.fft.fft2(x * _hanning(x.shape))


@functools.lru_cache(maxsize=8)  # bounded: one window shape per grid, 2 MB each at 512 px
def _hanning(shape: tuple[int, int]) -> np.ndarray:
    window = cv2.createHanningWindow(shape[::-1], cv2.CV_64F)
    window.flags.writeable = False
    return window


def shift_of_spectra(reference: np.ndarray | None, moving: np.ndarray | None, *, max_shift_px: float = 8.0,
                     ) -> tuple[float, float, float]:
    """:func:`estimate_shift` from the two images' :func:`shift_spectrum` (the same result)."""
    if reference is None or moving is None or reference.shape != moving.shape:
        return 0.0, 0.0, 0.0
    # np.multiply, not ``*``: with a temporary right operand numpy may multiply in place into it,
    # operands swapped, and a complex product rounds differently then
    product = np.multiply(moving, reference.conj())
    product /= np.maximum(np.abs(product), 1e-12) ** NORM_POWER
    corr = np.fft.ifft2(product).real
    top = int(np.argmax(corr))
    peak = np.array(np.unravel_index(top, corr.shape), dtype=float)
    response = float(corr.flat[top] / max(1e-12, np.sqrt((np.abs(product) ** 2).sum() / product.size)))
    size = np.array(corr.shape)
    peak[peak > size // 2] -= size[peak > size // 2]
    # Refine to 1/20 px with a matrix-multiply DFT around the peak (Guizar-Sicairos et al. 2008).
    up = 20
    peak = np.round(peak * up) / up
    region = int(np.ceil(up * 1.5))
    centre = np.fix(region / 2.0)
    offsets = centre - peak * up
    with _one_blas_thread():
        fine = _upsampled_dft(product, region, up, offsets)
    best = np.array(np.unravel_index(int(np.argmax(np.abs(fine))), fine.shape), dtype=float)
    dy, dx = peak + (best - centre) / up
    if not (abs(dx) <= max_shift_px and abs(dy) <= max_shift_px) or response < MIN_RESPONSE:
        return 0.0, 0.0, response
    return float(dx), float(dy), response


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS (OpenBLAS) on the calling thread only, for the small products of
    :func:`_upsampled_dft`.

    Their arithmetic takes milliseconds, but a multi-threaded OpenBLAS call leaves its helper
    threads busy-waiting for new work for a while afterwards: ~0.2-0.3 s of CPU per job taken
    from the other core (and from other workers). Each product element is computed the same
    way on one thread. No-op when the library or its thread setters cannot be found. The
    setting is process-wide, so threads take turns (the products take milliseconds).
    """
    setters = _openblas_threads()
    if setters is None:
        yield
        return
    with _BLAS_LOCK:
        before = setters[0]()
        if before > 1:
            setters[1](1)
        try:
            yield
        finally:
            if before > 1:
                setters[1](before)


_BLAS_LOCK = threading.Lock()


@functools.cache
def _openblas_threads() -> tuple | None:
    """``(get_num_threads, set_num_threads)`` of the OpenBLAS numpy is linked with, or None."""
    import ctypes
    import glob
    import os

    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "lib*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                                   ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                                   ("openblas_get_num_threads", "openblas_set_num_threads")):
            get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
    return None


def _upsampled_dft(data: np.ndarray, region: int, factor: int, offsets: np.ndarray) -> np.ndarray:
    """Inverse DFT of ``data`` sampled on a ``factor``-times finer grid in a small region."""
    out = data
    for n, off in zip(data.shape[::-1], offsets[::-1], strict=True):
        out = np.tensordot(_dft_kernel(int(n), float(off), int(region), int(factor)), out, axes=(1, -1))
    return out


@functools.lru_cache(maxsize=16)
def _dft_kernel(n: int, off: float, region: int, factor: int) -> np.ndarray:
    """One axis' kernel of :func:`_upsampled_dft` (the same for every window of one shift)."""
    kernel = np.exp(2j * np.pi * (np.arange(region) - off)[:, None] * np.fft.fftfreq(n, factor)[None, :])
    kernel.flags.writeable = False
    return kernel
