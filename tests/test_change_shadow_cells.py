"""The whole-grid cloud and shadow flag map used for shadow masking (``change_shadow.coarse_flags``)."""

from __future__ import annotations

import numpy as np
import pytest

from tuban.pipelines.change_shadow import coarse_flags, reduce_cells


@pytest.mark.parametrize(("height", "width", "factor"), [(5000, 700, 3), (3000, 90, 2), (1100, 50, 1), (2049, 40, 5)])
def test_strips_give_the_same_cells_as_the_whole_layer(height, width, factor):
    # A factor that does not divide the 1024-row strip once put later strips' cells up to
    # factor - 1 rows off the grid's own cells (grids over 4,096 px).
    rng = np.random.default_rng(height + factor)
    flags = (rng.random((height, width)) < 0.002).astype(np.uint8) | ((rng.random((height, width)) < 0.002) * 2).astype(np.uint8)
    cloud, dark = coarse_flags(flags, factor)
    assert np.array_equal(cloud, reduce_cells((flags & 1).astype(bool), factor, "any"))
    assert np.array_equal(dark, reduce_cells((flags & 2).astype(bool), factor, "any"))
