"""The output table of ``tuban change``: patch records to a sorted EPSG:4326 GeoDataFrame.

Runs once per job, after every chunk of blobs was examined (with workers: in the parent alone,
so its cost is serial). The table is built column by column from the records, and the polygons
and their centroids are mapped to EPSG:4326 in one pyproj transform: the same numbers, bit for
bit, as a frame of all record keys mapped with ``to_crs`` and rounded in place
(``tests/test_change_speed_round8_patches.py``).
"""

from __future__ import annotations

import hashlib

import geopandas as gpd
import numpy as np
import shapely

from tuban.imagery.crs import M2_PER_MU, WGS84, transformer
from tuban.imagery.ponds import ShapeSettings, cluster_counts

__all__ = ["patch_id", "patch_table"]


def patch_id(kind: str, lon: float, lat: float) -> str:
    """Deterministic id from the kind and the centroid rounded to ~1 m.

    Example:
        >>> patch_id("new_pond", 117.123456, 24.5) == patch_id("new_pond", 117.1234561, 24.5)
        True
    """
    key = f"{kind}|{lon:.5f}|{lat:.5f}"
    return "CD-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def patch_table(records: list[dict], crs, settings: ShapeSettings, columns: list[str]) -> gpd.GeoDataFrame:
    """The output frame (EPSG:4326, sorted north to south, then west to east) of the records
    (geometries in ``crs``).

    Pond scores get the cluster bonus; ``lon``/``lat`` are the centroids (taken in ``crs``),
    areas and measures are rounded. Built column by column from the records, and the polygons
    and centroids are mapped to EPSG:4326 in one ``to_crs`` (the same transformer, point by
    point), not a frame of all record keys mapped and rounded in place: the same frame.
    """
    geoms = np.empty(len(records), dtype=object)
    geoms[:] = [r["geometry"] for r in records]
    centroids = shapely.centroid(geoms)
    cents = np.column_stack([shapely.get_x(centroids), shapely.get_y(centroids)])
    kinds = [r["kind"] for r in records]
    score = np.array([r["score"] for r in records], dtype=float)
    ponds = np.array([k.endswith("_pond") for k in kinds], dtype=bool)
    if ponds.sum() > 1:
        near = cluster_counts(cents[ponds], settings.cluster_radius_m)
        bonus = np.minimum(near, 4) * 0.025
        score[ponds] = np.minimum(1.0, score[ponds] + bonus)
    # the polygons' vertices and the centroids in one transform (GeoSeries.to_crs's transformer
    # and arithmetic: an always-xy pyproj transform of each point, then the same rings rebuilt)
    xy = np.concatenate([shapely.get_coordinates(geoms), cents])
    x, y = transformer(crs, WGS84).transform(xy[:, 0], xy[:, 1])
    n_vertices = len(xy) - len(records)
    mapped = shapely.set_coordinates(geoms.copy(), np.column_stack([x[:n_vertices], y[:n_vertices]]))
    lon, lat = np.round(x[n_vertices:], 7), np.round(y[n_vertices:], 7)
    area_m2 = np.round(np.array([r["area_m2"] for r in records], dtype=float), 1)
    data = {"patch_id": [patch_id(k, lo, la) for k, lo, la in zip(kinds, lon.tolist(), lat.tolist(), strict=True)],
            "kind": kinds, "score": np.round(score, 3), "area_m2": area_m2,
            "area_mu": np.round(area_m2 / M2_PER_MU, 3), "lon": lon, "lat": lat}
    for col in ("rectangularity", "compactness", "aspect", "solidity"):
        data[col] = np.round(np.array([r[col] for r in records], dtype=float), 3)
    for col in columns[:-1]:
        if col not in data:  # e.g. the dry ponds' ``state``
            data[col] = [r.get(col) for r in records]
    # north to south, then west to east, then by kind: the order of pandas' stable multi-key
    # sort_values (equal keys keep their order; lexsort's last key is the first)
    _, kind_codes = np.unique(np.array(kinds, dtype=object), return_inverse=True)
    order = np.lexsort((kind_codes, lon, -lat))
    table = {c: np.asarray(data[c], dtype=object if isinstance(data[c], list) else None)[order]
             for c in columns[:-1]}
    return gpd.GeoDataFrame(table, geometry=gpd.GeoSeries(mapped[order], crs=WGS84), crs=WGS84)
