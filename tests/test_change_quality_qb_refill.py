"""Gains that are not new ponds: refilled ponds (:mod:`tuban.pipelines.change_refill`) and dark
patches without a brighter rim (``change_patches.part_kind``).

A 10 m synthetic scene of crop and bare-soil fields with a pond cluster: one pond drained to
wet mud on the before date and filled again after (a refill), two ponds dug between the dates
(one in a bare-soil field, whose water index is as high as the mud's in a vegetated scene, one
in a crop field), and a pond with water on both dates. Only the dug ponds are new ponds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tuban.pipelines.change import ChangeSettings
from tuban.pipelines.change_patches import MIN_FRAME_STEP, MUD_FRAME_RATIO
from tuban.pipelines.change_refill import before_floor_levels, is_refill_candidate, was_mud_before

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402

#: (row0, col0, row1, col1) pixel boxes (end exclusive)
KEPT = (60, 60, 72, 76)
REFILL = (60, 80, 72, 96)        # mud inside its dikes before, clear water after
DUG_SOIL = (150, 42, 162, 58)    # a bare-soil field before (no dikes), water after
DUG_CROP = (150, 170, 162, 186)  # a crop field before, water after


def _scene(date: str) -> np.ndarray:
    img = cs.field_background(3)
    img[:, 140:172, 30:70] = np.array(cs.SPECTRA["soil"])[:, None, None]   # DUG_SOIL's field
    img[:, 140:172, 160:200] = np.array(cs.SPECTRA["crop"])[:, None, None]  # DUG_CROP's field
    cs._paint(img, KEPT, "water")
    if date == "before":
        cs._paint(img, REFILL, "mud")
    else:
        for box in (REFILL, DUG_SOIL, DUG_CROP):
            cs._paint(img, box, "water")
    img *= np.random.default_rng(11 if date == "after" else 10).normal(1.0, 0.03, img.shape).astype(np.float32)
    return img


@pytest.fixture(scope="module")
def refill_runs(tmp_path_factory):
    """Patches with the refill test, and without it (its before-floor read disabled)."""
    before, after = _scene("before"), _scene("after")
    with_rule = cs.patches_of(tmp_path_factory.mktemp("refill"), before, after)
    without = cs.patches_without(tmp_path_factory.mktemp("norefill"), before, after,
                                 "demote_refills", lambda *a, **k: 0)  # as before this rule existed
    two = cs.patches_of(tmp_path_factory.mktemp("refill2"), before, after, ChangeSettings(workers=2))
    return with_rule, without, two


def test_refilled_pond_is_new_water_and_dug_ponds_stay_new(refill_runs):
    with_rule, without, _ = refill_runs
    assert cs.kinds_at(without, REFILL) == ["new_pond"]  # framed water after, wet before: was a false alarm
    assert cs.kinds_at(with_rule, REFILL) == ["new_water"]
    assert cs.kinds_at(with_rule, DUG_SOIL) == ["new_pond"]  # as wet as mud by the index before, but bright
    assert cs.kinds_at(with_rule, DUG_CROP) == ["new_pond"]
    assert cs.kinds_at(with_rule, KEPT) == []
    assert (with_rule["kind"] == "new_pond").sum() == 2


def test_refill_rule_does_not_depend_on_the_worker_count(refill_runs):
    with_rule, _, two = refill_runs
    cols = ["patch_id", "kind", "area_m2", "score"]
    assert with_rule[cols].equals(two[cols])


def test_only_wet_new_ponds_not_drier_than_their_outline_are_candidates():
    wet = {"before_wetness": 1.3, "before_frame_step": 0.1}
    assert is_refill_candidate("new_pond", wet, MIN_FRAME_STEP)
    assert not is_refill_candidate("new_pond", wet | {"before_wetness": 0.9}, MIN_FRAME_STEP)  # land-like before
    # bare soil clearly drier than the (grassy) dikes around it: not mud, nothing is read
    assert not is_refill_candidate("new_pond", wet | {"before_frame_step": -0.8}, MIN_FRAME_STEP)
    assert not is_refill_candidate("new_water", wet, MIN_FRAME_STEP)  # not a pond anyway
    assert not is_refill_candidate("new_pond", {}, MIN_FRAME_STEP)


def test_a_gain_with_no_brighter_rim_is_no_pond():
    """A cloud shadow or a darkened field can pass the index frame, but water is darker than
    its dikes: with an outline no brighter than the inside the gain is new water."""
    from shapely.geometry import box

    from tuban.imagery.ponds import ShapeSettings, shape_stats
    from tuban.pipelines.change_blocks import CODE
    from tuban.pipelines.change_patches import part_kind

    stats, s = shape_stats(box(0, 0, 80, 60), 10.0), ShapeSettings()
    framed = {"open_edge": 0.0, "frame_step": 0.8, "frame_bright": 0.2}
    assert part_kind(CODE["new_water"], stats, 1.0, False, framed, s, 10.0) == ("new_pond", True)
    for dark_rim in (0.0, -0.05):
        facts = framed | {"frame_bright": dark_rim}
        assert part_kind(CODE["new_water"], stats, 1.0, False, facts, s, 10.0) == ("new_water", False)
    # losses have no after-date rim measure: unchanged
    assert part_kind(CODE["lost_water"], stats, 1.0, False, {"open_edge": 0.0, "frame_step": 0.8}, s,
                     10.0) == ("removed_pond", True)


def test_floor_levels_are_relative_to_the_land_median_and_the_dike_ring():
    bright = np.full((9, 9), 1.5, np.float32)  # dikes and beyond
    bright[3:6, 3:6] = 0.45                     # the floor
    inside = bright < 1.0
    codes = np.zeros((9, 9), np.uint8)
    level, frame = before_floor_levels(bright, inside, codes, land_brightness=0.5)
    assert (level, frame) == pytest.approx((0.9, 3.0))
    assert level < MUD_FRAME_RATIO * frame  # a floor clearly darker than its frame
    bright[:] = 0.45  # a field going on under the future dike line: no frame, however dim
    assert before_floor_levels(bright, inside, codes, 0.5) == pytest.approx((0.9, 0.9))
    codes[:] = 4  # no land ring (all masked): no frame level
    assert np.isnan(before_floor_levels(bright, inside, codes, 0.5)[1])


def test_the_frame_is_where_the_dikes_are_bright_after():
    """At 10 m the ring around a pond mixes its dike with neighbouring water; the frame is the
    part of the ring that is bright on the after date (the dike line)."""
    from tuban.pipelines.change_blob_ops import dilate4

    inside = np.zeros((11, 11), bool)
    inside[4:7, 4:7] = True
    ring = dilate4(dilate4(inside)) & ~inside
    water = np.zeros_like(ring)
    rr, cc = np.nonzero(ring)
    water[rr[: ring.sum() // 2], cc[: ring.sum() // 2]] = True  # half the ring: a neighbour's water
    before = np.where(water, 0.3, 1.0).astype(np.float32)
    before[inside] = 0.45                                       # mud floor
    after = np.where(water, 20.0, 60.0).astype(np.float32)      # the water is still there after
    codes = np.zeros((11, 11), np.uint8)
    plain = before_floor_levels(before, inside, codes, 0.5)
    framed = before_floor_levels(before, inside, codes, 0.5, bright_after=after)
    assert framed == pytest.approx((0.9, 2.0)) and plain[1] < framed[1]
    assert was_mud_before(before, inside, codes, 0.5, MUD_FRAME_RATIO, bright_after=after)
    # a field going on under the future dikes: as bright before as the floor, however bright after
    assert not was_mud_before(np.full((11, 11), 0.45, np.float32), inside, codes, 0.5, MUD_FRAME_RATIO, after)
