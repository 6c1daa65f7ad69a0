"""Local worker processes for the change job (``--workers N``).

Block coding and patch examination are numpy/scipy/GEOS work in many short calls; threads
share one GIL there and never scale. Here each worker is a process (forked on Linux, so it
starts in milliseconds with the job already imported) that opens its own dataset handles and
maps the job's result stack, a file-backed ``uint8`` memory map shared by all processes:

* a block task codes one window and writes it straight into the shared stack, returning only
  its code histogram and whether it saw a cloud (a few bytes over the pipe);
* a patch task examines a chunk of blobs, reading the stack, and returns the records.

Every task writes a disjoint part of the stack or returns values collected in submission
order, so the output never depends on the number of workers.

A forked worker must never read through a dataset handle it inherited: parent and child would
share the file offset, and GDAL then decodes the wrong bytes (seen as "TIFFFillTile: Read
error", or silently as wrong pixels). Workers therefore drop the parent's cached readers on
start (:func:`~tuban.pipelines.change_blocks.forget_inherited_readers`) and open their own.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from tuban import InputError, TubanError
from tuban.pipelines.change_blocks import (
    CODE,
    LAYERS,
    BlockJob,
    close_thread_readers,
    code_window,
    forget_inherited_readers,
)

__all__ = ["StackFile", "BlockTally", "local_pool", "code_blocks", "map_in", "results", "portable",
           "store_block"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class StackFile:
    """The job's ``(layers, rows, cols)`` uint8 result stack as a file any process can map."""

    path: str
    shape: tuple[int, int, int]

    def create(self) -> np.memmap:
        """Create (zero-filled, sparse) and map the file for the parent."""
        return np.memmap(self.path, dtype=np.uint8, mode="w+", shape=self.shape)

    def open(self) -> np.memmap:
        """Map the file in a worker (once per process)."""
        key = (self.path, self.shape)
        if key not in _OPEN:
            _OPEN.clear()  # an earlier job's stack
            _OPEN[key] = np.memmap(self.path, dtype=np.uint8, mode="r+", shape=self.shape)
        return _OPEN[key]


_OPEN: dict[tuple, np.memmap] = {}


@dataclass
class BlockTally:
    """Summed over blocks: pixel counts per code, whether any block holds a cloud, and whether
    any holds a cloud candidate (then masks near block edges need the blocks' surroundings)."""

    counts: np.ndarray
    cloudy: bool = False
    candidates: bool = False

    @classmethod
    def empty(cls) -> BlockTally:
        return cls(np.zeros(len(CODE), dtype=np.int64))

    def add(self, counts: np.ndarray, cloudy: bool, candidates: bool) -> None:
        self.counts += counts
        self.cloudy |= cloudy
        self.candidates |= candidates

    @classmethod
    def of_stack(cls, stack: np.ndarray, strip_px: int = 1024) -> BlockTally:
        """The tally of a whole result stack, strip by strip."""
        tally = cls.empty()
        for r in range(0, stack.shape[1], strip_px):
            tally.add(*block_summary(np.asarray(stack[:, r:r + strip_px])))
        return tally


def block_summary(block: np.ndarray, flag_bits: int | None = None) -> tuple[np.ndarray, bool, bool]:
    """Code histogram of a processed block, and whether its flags mark a cloud / a candidate
    (``flag_bits``: the OR of its flags, when known; else read from the block)."""
    codes = block[0]
    counts = np.array([np.count_nonzero(codes == v) for v in range(len(CODE))], dtype=np.int64)
    bits = flag_bits
    if bits is None:
        bits = int(np.bitwise_or.reduce(block[LAYERS.index("flags")], axis=None))  # one pass, no temporaries
    return counts, bool(bits & 1), bool(bits & 4)


def _start_method() -> str:
    # fork starts a worker in milliseconds with everything imported; elsewhere fall back to
    # spawn (macOS and Windows cannot fork a process using system frameworks safely).
    return "fork" if sys.platform.startswith("linux") else "spawn"


def _keep_freed_memory() -> None:
    """Let glibc reuse freed block-sized arrays instead of unmapping them (Linux only).

    Every block allocates and frees a few dozen arrays of megabytes; by default each comes from
    a fresh ``mmap`` whose pages fault in one by one, which made a fifth of a worker's time
    system time. Keeping them on the heap bounds a worker's memory by its largest block.
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD


def _init_worker() -> None:
    if sys.platform.startswith("linux"):
        _keep_freed_memory()
    forget_inherited_readers()
    _OPEN.clear()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    warnings.simplefilter("ignore")  # nothing may write to the parent's terminal


@contextlib.contextmanager
def local_pool(workers: int) -> Iterator[Executor | None]:
    """A process pool of ``workers`` processes, or None for one worker (run in-process).

    The objects that exist when the job starts (every imported module's) are frozen out of the
    cyclic GC for the job: each full collection would otherwise scan them all again while the
    patch stage makes its many small objects, and forked workers would copy every page the GC
    writes to. On a normal exit the workers are told to stop and reaped in the background:
    every result is in by then, so the caller need not wait for their exits.
    """
    gc.freeze()
    try:
        if workers <= 1:
            yield None
            return
        ctx = multiprocessing.get_context(_start_method())
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=False)
    finally:
        gc.unfreeze()


def portable(fn: Callable, *args):
    """Run ``fn(*args)`` in a worker; tuban errors come back as plain ``TubanError`` lines.

    ``InputError(path, problem)`` cannot be rebuilt from its pickled message, so it is sent
    as a ``TubanError`` with the same text (same one-line error, same exit code).
    """
    try:
        return fn(*args)
    except InputError as exc:
        raise TubanError(str(exc)) from None


def results(futures: Sequence[Future], on_done: Callable[[int], None] | None = None) -> list:
    """Results of ``futures`` in order; the first failure cancels the rest and is raised."""
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise fut.exception()
                if on_done:
                    on_done(len(futures) - len(pending))
        return [f.result() for f in futures]
    except BrokenProcessPool:
        raise TubanError("a worker process died (out of memory?); try fewer --workers") from None


def map_in(pool: Executor | None, fn: Callable, *iterables) -> list:
    """``list(map(fn, *iterables))``, in ``pool``'s processes when given (results in order)."""
    if pool is None:
        return list(map(fn, *iterables))
    return results([pool.submit(portable, fn, *args) for args in zip(*iterables, strict=True)])


def store_block(stack: np.ndarray, window: Window, block: np.ndarray) -> tuple[np.ndarray, bool, bool]:
    """Write a coded ``block`` into ``stack`` at ``window``; its :func:`block_summary`."""
    r, c = int(window.row_off), int(window.col_off)
    stack[:, r:r + block.shape[1], c:c + block.shape[2]] = block
    return block_summary(block)


def _code_block(job: BlockJob, window: Window, stack: StackFile) -> tuple[np.ndarray, bool, bool]:
    block = _view(stack.open(), window)
    return block_summary(block, code_window(job, window, block))


def _view(stack: np.ndarray, window: Window) -> np.ndarray:
    """The ``(layers, rows, cols)`` part of ``stack`` under ``window`` (blocks are coded into it)."""
    r, c = int(window.row_off), int(window.col_off)
    return stack[:, r:r + int(window.height), c:c + int(window.width)]


def code_blocks(job: BlockJob, windows: Sequence[Window], stack: np.ndarray, pool: Executor | None,
                stack_file: StackFile | None, progress: Progress | None = None) -> BlockTally:
    """Code every window into ``stack`` (in-process, or in ``pool`` through ``stack_file``).

    ``stack`` holds zeros where it was not coded before (a fresh stack; blocks coded again have
    a halo and rewrite every layer): flags that stay zero are not written.
    """
    tally = BlockTally.empty()
    total = len(windows)
    if pool is None:
        try:
            for n, w in enumerate(windows, start=1):
                block = _view(stack, w)
                tally.add(*block_summary(block, code_window(job, w, block)))
                if progress:
                    progress(n, total)
        finally:
            close_thread_readers()
        return tally
    if stack_file is None:
        raise ValueError("worker processes need the stack as a file")
    futures = [pool.submit(portable, _code_block, job, w, stack_file) for w in windows]
    for summary in results(futures, (lambda n: progress(n, total)) if progress else None):
        tally.add(*summary)
    return tally


def stack_path(folder: str | Path) -> str:
    """Where a job keeps its shared stack inside its temporary folder."""
    return str(Path(folder) / "stack.u8")
