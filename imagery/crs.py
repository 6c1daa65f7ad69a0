"""CRS conventions: normalise once, measure in metres, exchange in EPSG:4326 lon/lat.

Areas and distances are always computed in a metric CRS (the local UTM zone unless the user
chooses one); exchange files are EPSG:4326 with x = lon, y = lat.
"""

from __future__ import annotations

import math

import geopandas as gpd
from pyproj import CRS, Transformer

__all__ = [
    "WGS84",
    "M2_PER_MU",
    "utm_crs_for",
    "metric_crs_for_gdf",
    "areas_m2",
    "to_wgs84",
    "transformer",
]

WGS84 = CRS.from_epsg(4326)
#: 1 亩 (mu) = 10000/15 m² = 666.667 m².
M2_PER_MU = 10000.0 / 15.0


def utm_crs_for(lon_deg: float, lat_deg: float) -> CRS:
    """The WGS84 UTM zone CRS containing a lon/lat point.

    Example:
        >>> utm_crs_for(117.0, 24.5).to_epsg()
        32650
    """
    if not (-180.0 <= lon_deg <= 180.0 and -90.0 <= lat_deg <= 90.0):
        raise ValueError(f"not a lon/lat position: ({lon_deg}, {lat_deg})")
    zone = min(int(math.floor((lon_deg + 180.0) / 6.0)) + 1, 60)
    return CRS.from_epsg((32600 if lat_deg >= 0 else 32700) + zone)


def transformer(src: CRS | str | int, dst: CRS | str | int) -> Transformer:
    """An always-xy transformer between two CRSs."""
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def metric_crs_for_gdf(gdf: gpd.GeoDataFrame) -> CRS:
    """A metric CRS for measuring ``gdf``: its own if projected in metres (and not Mercator,
    whose scale error is 1/cos(lat)² in area), else the local UTM zone."""
    if gdf.crs is None:
        raise ValueError("GeoDataFrame has no CRS")
    crs = CRS.from_user_input(gdf.crs)
    if (crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter")
            and not _is_mercator(crs)):
        return crs
    minx, miny, maxx, maxy = gdf.to_crs(WGS84).total_bounds
    return utm_crs_for((minx + maxx) / 2.0, (miny + maxy) / 2.0)


def _is_mercator(crs: CRS) -> bool:
    """Mercator grids (e.g. Web Mercator, EPSG:3857) are in metres but far from true scale."""
    op = crs.coordinate_operation
    return op is not None and "mercator" in op.method_name.lower()


def areas_m2(gdf: gpd.GeoDataFrame):
    """Per-feature areas in m², measured in a metric CRS (never in degrees)."""
    if len(gdf) == 0:
        return gdf.geometry.area
    return gdf.to_crs(metric_crs_for_gdf(gdf)).geometry.area


def to_wgs84(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``gdf`` in EPSG:4326 (lon/lat)."""
    if gdf.crs is None:
        raise ValueError("GeoDataFrame has no CRS")
    return gdf if CRS.from_user_input(gdf.crs) == WGS84 else gdf.to_crs(WGS84)
