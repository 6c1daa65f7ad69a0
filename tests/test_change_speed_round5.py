"""Speed round 5 of ``tuban change``: with workers, the five phase correlations of the
preparation run in two threads of the parent; the shift and response are exactly those of the
serial computation (whole runs are compared byte for byte by
``benchmarks/check_change_identical.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from tuban.imagery.align import shift_spectrum
from tuban.imagery.water import water_index
from tuban.pipelines.change_prepare import _shift_of


def _pair(rng: np.random.Generator, dx: int, dy: int) -> tuple[dict, dict]:
    """A textured window and the same scene moved by ``(dx, dy)`` pixels, green + nir."""
    base = rng.random((96, 96)).astype(np.float32)
    green, nir = 1.0 + base, 1.0 + base[::-1].copy()
    green[rng.random(green.shape) < 0.02] = np.nan  # a few invalid pixels
    before = {"green": green[8:72, 8:72], "nir": nir[8:72, 8:72]}
    after = {"green": green[8 - dy:72 - dy, 8 - dx:72 - dx], "nir": nir[8 - dy:72 - dy, 8 - dx:72 - dx]}
    return before, after


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threaded_shift_is_the_serial_shift(seed):
    rng = np.random.default_rng(seed)
    pairs = [_pair(rng, 2, -1) for _ in range(4)] + [_pair(rng, 3, 1)]
    sb, sa = [b for b, _ in pairs], [a for _, a in pairs]
    ib, ia = [water_index(w, "ndwi") for w in sb], [water_index(w, "ndwi") for w in sa]
    serial = _shift_of(ib, ia, spectra=False)  # one worker: each pair's estimate_shift in turn
    threaded = _shift_of([shift_spectrum(x) for x in ib], [shift_spectrum(x) for x in ia], threads=True)
    assert threaded == serial  # the same floats, bit for bit
    (dx, dy), response = serial
    assert (round(dx), round(dy)) == (2, -1)  # the median of the five windows' shifts
    assert response > 0.1
