"""Flooded paddy blocks are not new ponds (``tuban.pipelines.change_fields``): a new body of weak
water, larger than every open-water new pond of its scene and rougher than nine in ten of them,
is reported as ``new_water``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuban.pipelines.change_fields import demote_flooded_fields, open_water_level

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402

PADDY = (0.07, 0.08, 0.06, 0.08)  # flooded paddy: shallow water over mud and shoots (NDWI ~0)
#: (row0, col0, row1, col1): four clear new ponds, a small algae pond, a flooded field block
CLEAR = [(20, 20, 32, 34), (20, 40, 32, 54), (40, 20, 52, 34), (40, 40, 52, 54)]
ALGAE = (70, 20, 80, 32)
FIELD = (120, 110, 145, 145)


def _rec(area, idx, kind="new_pond", texture=0.08):
    return {"kind": kind, "area_m2": area, "wet_index": idx, "texture": texture, "score": 0.8, "contrast": 0.6}


def test_weak_body_larger_than_every_open_pond_becomes_new_water():
    recs = [_rec(9000, 0.45, texture=0.03), _rec(8000, 0.40, texture=0.02), _rec(12000, 0.42, texture=0.03),
            _rec(40000, 0.05), _rec(5000, 0.02), _rec(30000, 0.0, kind="new_water"),
            _rec(36000, 0.04, texture=0.03)]  # a large algae pond: as smooth as the open ones
    # a quarter of the way from the water threshold to the new ponds' median index (0.05 + 0.40) / 2
    assert open_water_level(recs, 0.15) == pytest.approx(0.15 + 0.25 * (0.225 - 0.15))
    assert demote_flooded_fields(recs, 0.15) == 1
    assert [r["kind"] for r in recs] == ["new_pond", "new_pond", "new_pond", "new_water", "new_pond", "new_water",
                                         "new_pond"]
    assert recs[3]["score"] == pytest.approx(0.5 * 0.6 + 0.5 * 0.3)  # scored like other new water


def test_nothing_changes_without_open_water_ponds():
    recs = [_rec(40000, 0.05), _rec(2000, 0.04)]  # all equally weak: no reference, keep them
    assert demote_flooded_fields(recs, 0.15) == 0
    assert demote_flooded_fields([], 0.15) == 0
    assert [r["kind"] for r in recs] == ["new_pond", "new_pond"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1000, 100000), st.floats(-0.3, 0.6), st.floats(0.01, 0.2)),
                min_size=1, max_size=30), st.floats(-0.2, 0.3))
def test_only_weak_rough_ponds_larger_than_the_largest_open_one_move(ponds, water):
    recs = [_rec(a, i, texture=t) for a, i, t in ponds]
    level = open_water_level(recs, water)
    n = demote_flooded_fields(recs, water)
    open_areas = [a for a, i, _ in ponds if i >= level]
    rough = np.quantile([t for _, i, t in ponds if i >= level], 0.9) if open_areas else 0.0
    expect = ([a > max(open_areas) and i < level and t > rough for a, i, t in ponds] if open_areas
              else [False] * len(ponds))
    assert [r["kind"] == "new_water" for r in recs] == expect
    assert n == sum(expect)
    # never more than all but one: the largest open-water pond itself always stays
    assert n < len(recs) or not open_areas


def _scene(date: str) -> np.ndarray:
    img = cs.field_background(3)
    if date == "after":
        for box in CLEAR:
            cs._paint(img, box, "water")
        cs._paint(img, ALGAE, "algae")
        r0, c0, r1, c1 = FIELD  # a flooded field block inside its bunds (bright frame), 8.75 ha, rough
        cs._paint(img, FIELD, "dike")
        img[:, r0:r1, c0:c1] = np.array(PADDY)[:, None, None]
        # rough: plots of uneven depth and shoots (10 % per 2x2 px), unlike smooth pond water
        plots = np.random.default_rng(9).normal(1.0, 0.10, ((r1 - r0 + 1) // 2, (c1 - c0 + 1) // 2))
        img[:, r0:r1, c0:c1] *= np.kron(plots, np.ones((2, 2)))[: r1 - r0, : c1 - c0].astype(np.float32)
    img *= np.random.default_rng(5 if date == "after" else 4).normal(1.0, 0.03, img.shape).astype(np.float32)
    return img


@pytest.fixture(scope="module")
def field_runs(tmp_path_factory):
    """Patches with the flooded-field test, and without it (the test's function disabled)."""
    before, after = _scene("before"), _scene("after")
    with_test = cs.patches_of(tmp_path_factory.mktemp("fields"), before, after)
    without = cs.patches_without(tmp_path_factory.mktemp("nofields"), before, after,
                                 "demote_flooded_fields", lambda records, water: 0)  # as before this test
    return with_test, without


def test_flooded_field_block_is_new_water_and_ponds_stay(field_runs):
    with_test, without = field_runs
    assert cs.kinds_at(without, FIELD) == ["new_pond"]  # framed and rectangular: a pond by shape alone
    assert cs.kinds_at(with_test, FIELD) == ["new_water"]
    for box in (*CLEAR, ALGAE):  # open-water ponds and a small weak (algae) pond are kept
        assert cs.kinds_at(with_test, box) == ["new_pond"], box
    assert (with_test["kind"] == "new_pond").sum() == (without["kind"] == "new_pond").sum() - 1
