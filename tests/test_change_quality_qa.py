"""Fragments of one pond decided together (:mod:`tuban.pipelines.change_fragments`).

A small 10 m scene (uint16 reflectance x 10000, blue, green, red, nir): two pairs of new ponds,
each a clear pond and, across a shared dike narrower than a pixel, an algae-rich pond whose
pixels sit just above the scene's darkness threshold (only a few are coded as changed). The
clear pond comes first in raster order. Before this round the algae pond's body ran on into the
clear neighbour, the clear pond's fragment was elected the body's owner, and it never grew a
body (it is a pond on its own): the algae pond was lost. Plus unit rules.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely import affinity
from shapely.geometry import box

from tuban.pipelines.change import ChangeSettings
from tuban.pipelines.change_fragments import (
    block_solidity,
    drop_repeated_bodies,
    every_part_above_its_seams,
    same_water,
    split_parts_again,
)

sys.path.insert(0, str(Path(__file__).parent))
import change_scenes as cs  # noqa: E402

# --- a scene --------------------------------------------------------------------------------

BOXES = {
    "clear_kept": (30, 30, 42, 46),  # water on both dates: the scene's water level
    "clear_kept2": (30, 150, 42, 166),
    "clear_new": (100, 80, 112, 96),
    "algae_new": (100, 97, 112, 113),  # shares the dike column 96 with clear_new
    "clear_new2": (170, 60, 182, 76),
    "algae_new2": (170, 77, 182, 93),
}
#: Algae-rich water a little brighter than the darkness threshold: ~7 % of its pixels coded.
ALGAE = (0.0685, 0.126, 0.0685, 0.126)
#: The shared dike covers a quarter of its pixel column, the rest is the algae pond's water.
DIKE_SHARE = 0.25


def _scene(date: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cs.field_background(7)
    img[:, 90:125, 70:126] = np.array(cs.SPECTRA["crop"])[:, None, None]
    img[:, 160:195, 50:106] = np.array(cs.SPECTRA["crop"])[:, None, None]
    ponds = {"clear_kept": cs.SPECTRA["water"], "clear_kept2": cs.SPECTRA["water"]}
    if date == "after":
        ponds |= {"clear_new": cs.SPECTRA["water"], "algae_new": ALGAE,
                  "clear_new2": cs.SPECTRA["water"], "algae_new2": ALGAE}
    for r0, c0, r1, c1 in (BOXES[n] for n in ponds):
        img[:, r0 - 1:r1 + 1, c0 - 1:c1 + 1] = np.array(cs.SPECTRA["dike"])[:, None, None]
    for name, spec in ponds.items():
        r0, c0, r1, c1 = BOXES[name]
        img[:, r0:r1, c0:c1] = np.array(spec)[:, None, None]
    if date == "after":
        blurred = DIKE_SHARE * np.array(cs.SPECTRA["dike"]) + (1 - DIKE_SHARE) * np.array(ALGAE)
        for name in ("algae_new", "algae_new2"):
            r0, c0, r1, _ = BOXES[name]
            img[:, r0:r1, c0 - 1] = blurred[:, None]
    img *= rng.normal(1.0, 0.04, size=img.shape).astype(np.float32)
    return img


@pytest.fixture(scope="module")
def pair_paths(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fragments")
    return (cs.write(tmp / "before.tif", _scene("before", 1), date="2024-05-01"),
            cs.write(tmp / "after.tif", _scene("after", 2), date="2025-06-02"))


@pytest.fixture(scope="module")
def patches(pair_paths):
    from tuban.pipelines.change import run_change

    return run_change([pair_paths[0]], [pair_paths[1]], ChangeSettings()).patches.to_crs(cs.CRS)


def _geom(name: str):
    r0, c0, r1, c1 = BOXES[name]
    (x0, y0), (x1, y1) = cs.TRANSFORM * (c0, r1), cs.TRANSFORM * (c1, r0)
    return box(x0, y0, x1, y1)


def _best_iou(patches, name: str) -> float:
    truth = _geom(name)
    ponds = patches[(patches["kind"] == "new_pond") & patches.intersects(truth)]
    return max((g.intersection(truth).area / g.union(truth).area for g in ponds.geometry), default=0.0)


@pytest.mark.parametrize("name", ["algae_new", "algae_new2"])
def test_algae_pond_beside_a_clear_one_across_a_blurred_dike_is_found(patches, name):
    assert _best_iou(patches, name) > 0.8


@pytest.mark.parametrize("name", ["clear_new", "clear_new2"])
def test_the_clear_neighbour_stays_one_pond(patches, name):
    assert _best_iou(patches, name) > 0.9


def test_four_new_ponds_and_no_other_pond(patches):
    assert (patches["kind"] == "new_pond").sum() == 4
    assert not patches["kind"].isin(["removed_pond", "drained_pond"]).any()


def test_same_ponds_with_two_workers(patches, pair_paths):
    from tuban.pipelines.change import run_change

    two = run_change([pair_paths[0]], [pair_paths[1]], ChangeSettings(workers=2)).patches.to_crs(cs.CRS)
    assert list(two["patch_id"]) == list(patches["patch_id"])
    assert list(two["kind"]) == list(patches["kind"])


# --- unit rules ---------------------------------------------------------------------------


def test_repeated_bodies_keep_the_first_and_leave_direct_patches_alone():
    recs = [{"kind": "new_pond", "geometry": box(0, 0, 100, 100), "framed_body": True},
            {"kind": "new_pond", "geometry": box(10, 0, 100, 100), "framed_body": True},  # the same pond again
            {"kind": "new_pond", "geometry": box(95, 0, 200, 100), "framed_body": True},  # a neighbour
            {"kind": "new_water", "geometry": box(0, 0, 100, 100)}]  # not a body
    kept = drop_repeated_bodies(recs)
    assert [r["geometry"].bounds for r in kept] == [(0, 0, 100, 100), (95, 0, 200, 100), (0, 0, 100, 100)]


def test_same_water_stops_at_clearer_water_not_at_weaker():
    index = np.array([[0.02, 0.05, 0.10, 0.40, -0.05]], np.float32)
    seed = np.array([[True, True, False, False, False]])
    assert same_water(seed, index, 0.1).tolist() == [[True, True, True, False, True]]


def test_a_cut_through_uniform_water_is_no_dike():
    index = np.full((6, 12), 0.1, np.float32)
    index[:, 8] = -0.3  # a dike at column 8 only
    region = np.ones(index.shape, bool)
    at_dike = np.where(np.arange(12) < 8, 1, 2)[None, :].repeat(6, 0)
    through_water = np.where(np.arange(12) < 4, 1, 2)[None, :].repeat(6, 0)
    assert every_part_above_its_seams(at_dike, region, index, 0.1)
    assert not every_part_above_its_seams(through_water, region, index, 0.1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=4, max_size=30), st.integers(1, 3))
def test_splitting_parts_again_only_refines_them(row_labels, pieces):
    labels = np.array([row_labels] * 3, dtype=np.int32)

    def split(mask: np.ndarray):  # cut a part into ``pieces`` column bands, when wide enough
        cols = np.flatnonzero(mask.any(axis=0))
        if cols.size < 2 * pieces or pieces < 2:
            return None
        band = np.minimum((np.cumsum(mask, axis=1) - 1) * pieces // cols.size, pieces - 1)
        return np.where(mask, band + 1, 0)

    out = split_parts_again(labels, split)
    assert ((out > 0) == (labels > 0)).all()
    for part in np.unique(out[out > 0]):  # every new part lies inside one old part
        assert np.unique(labels[out == part]).size == 1
    assert np.unique(out[out > 0]).tolist() == list(range(1, int(out.max()) + 1))


def test_the_opening_takes_more_of_a_small_solid_block_than_of_a_large_one():
    transform = Affine(10, 0, 0, 0, -10, 0)
    small = block_solidity(box(20, -80, 80, -20), transform, (30, 30))  # 6 x 6 px: 4 corners go
    large = block_solidity(box(20, -220, 220, -20), transform, (30, 30))  # 20 x 20 px
    assert small == pytest.approx(32 / 36) and large == pytest.approx(396 / 400)
    turned = block_solidity(affinity.rotate(box(20, -80, 80, -20), 20), transform, (30, 30))
    assert 0.5 < turned <= 1.0
