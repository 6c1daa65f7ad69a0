"""Village grid cells (网格) of the sample county: who walks to each suspect patch.

Grid cells are the Voronoi cells of the village centres clipped to the county, so they tile it
and every pond falls in exactly one. Names, officers and phone numbers are invented: village
names from common Minnan place-name syllables, officers from common Fujian surnames, and phone
numbers that are well-formed mainland mobile numbers drawn at random (fictitious).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPoint, Polygon
from shapely.geometry.base import BaseGeometry

__all__ = ["GridCell", "COUNTY_ADMIN_CODE", "build_grids"]

#: 6-digit county code (行政区代码) of the sample county (Yunxiao, Zhangzhou, Fujian).
COUNTY_ADMIN_CODE = "350622"

_FIRST = "东西南北上下新后前大小竹林洋浦港埭沙溪岭"
_SECOND = "厝头尾埔坑墩洲塘寮埕美湖山田港兜"
_SURNAMES = "陈林黄吴张李蔡郑王杨方许曾汤何游庄"
_GIVEN = "建国志明文华丽娟金水秀英海龙春生福荣玉兰振宇晓东"
_TOWNSHIPS = ("竹塔镇", "城关镇", "东厦镇", "列屿镇")
_MOBILE_PREFIXES = ("133", "135", "136", "137", "138", "139", "150", "151", "152", "158", "159",
                    "177", "180", "186", "187", "188", "189", "199")


@dataclass(frozen=True)
class GridCell:
    """One village grid cell: polygon in county metres and its contact details."""

    grid_id: str
    name: str
    township: str
    admin_code: str
    village_code: str
    officer: str
    phone: str
    geometry: BaseGeometry

    def __post_init__(self) -> None:
        if len(self.admin_code) != 6 or not self.admin_code.isdigit():
            raise ValueError(f"admin_code must be 6 digits, got {self.admin_code!r}")


def _names(rng: np.random.Generator, n: int) -> list[str]:
    pool = [a + b + "村" for a in _FIRST for b in _SECOND]
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def _officer(rng: np.random.Generator) -> str:
    given = "".join(rng.choice(list(_GIVEN), size=int(rng.integers(1, 3))))
    return str(rng.choice(list(_SURNAMES))) + given


def build_grids(
    rng: np.random.Generator, centres_xy_m: list[tuple[float, float]], extent: Polygon
) -> list[GridCell]:
    """Grid cells tiling ``extent`` around each village centre (county metres).

    Args:
        rng: the generator (consumed).
        centres_xy_m: village centres, one grid cell each (order kept).
        extent: the area to tile (the county plus margin).
    """
    if not centres_xy_m:
        raise ValueError("need at least one village centre")
    if len(centres_xy_m) == 1:
        cells: list[BaseGeometry] = [extent]
    else:
        vor = shapely.voronoi_polygons(MultiPoint(centres_xy_m), extend_to=extent)
        parts = list(shapely.get_parts(vor))
        cells = []
        for x, y in centres_xy_m:
            pt = shapely.Point(x, y)
            cell = next(p for p in parts if p.covers(pt))
            cells.append(cell.intersection(extent))
    names = _names(rng, len(centres_xy_m))
    n_town = min(len(_TOWNSHIPS), max(1, len(centres_xy_m) // 3))
    towns = [_TOWNSHIPS[i] for i in rng.choice(len(_TOWNSHIPS), size=n_town, replace=False)]
    out = []
    # townships split the county west to east, villages numbered within their township
    order = np.argsort([c[0] for c in centres_xy_m], kind="stable")
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    counters: dict[int, int] = {}
    for i, cell in enumerate(cells):
        t = int(rank[i] * n_town // len(cells))
        counters[t] = counters.get(t, 0) + 1
        phone = str(rng.choice(_MOBILE_PREFIXES)) + "".join(str(d) for d in rng.integers(0, 10, 8))
        out.append(GridCell(
            grid_id=f"G{i + 1:02d}",
            name=names[i],
            township=towns[t],
            admin_code=COUNTY_ADMIN_CODE,
            village_code=f"{COUNTY_ADMIN_CODE}{100 + t + 1:03d}{200 + counters[t]:03d}",
            officer=_officer(rng),
            phone=phone,
            geometry=cell,
        ))
    return out
