"""Drone evidence for suspect patches: which georeferenced frames show each patch, best first.

Input is the frame index of ``tuban uav index`` (one Feature per frame: footprint polygon and
``frame``, ``time_s``, ``lon``, ``lat``, ``alt_m``, ``gimbal_pitch_deg``, ``image`` ...) and
the suspect patches (any polygons). A frame is evidence for a patch when its footprint covers
the patch centroid. Frames are ranked by the view angle of the patch centroid from the
camera (0 = straight below the camera, i.e. the least distorted and nearest view), then by
horizontal distance, then by ground sample distance. This is a pure function: the triage /
ledger code decides what to store.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd

from tuban import VectorError
from tuban.imagery.crs import WGS84, transformer, utm_crs_for

__all__ = ["attach_frames", "EVIDENCE_COLUMNS"]

#: columns always present in the result (frame properties that exist are carried along too)
EVIDENCE_COLUMNS = ("patch_id", "rank", "frame", "time_s", "view_angle_deg", "distance_m",
                    "image", "lon", "lat", "alt_m", "gimbal_pitch_deg", "gsd_m")
#: Columns that name a patch, in order of preference (also used by mission planning).
ID_COLUMNS = ("case_id", "patch_id", "tuban_id", "pond_id", "id", "name")


def attach_frames(
    patches: gpd.GeoDataFrame,
    frames: gpd.GeoDataFrame,
    *,
    id_column: str | None = None,
    max_per_patch: int | None = None,
) -> pd.DataFrame:
    """Frames whose footprint covers each patch centroid, best view first.

    Args:
        patches: suspect patches (polygons or points), any CRS.
        frames: frame footprints from ``tuban uav index`` (EPSG:4326 or any CRS) with at least
            ``frame``, ``lon``, ``lat``, ``alt_m``; ``time_s``, ``image``, ``gimbal_pitch_deg``,
            ``gsd_m`` and any other properties (e.g. ``video``) are carried along.
        id_column: patch column that identifies a patch; default the first of ``case_id``,
            ``patch_id``, ``tuban_id``, ``pond_id``, ``id``, ``name`` present, else the row label.
        max_per_patch: keep only the best N frames per patch (None = all).

    Returns:
        One row per (patch, frame), sorted by ``patch_id`` order of ``patches`` then ``rank``
        (1 = best). Patches seen by no frame have no rows. Columns: :data:`EVIDENCE_COLUMNS`
        plus the frames' other properties.

    Example:
        >>> from shapely.geometry import box, Point
        >>> p = gpd.GeoDataFrame({"case_id": ["A"]}, geometry=[Point(117.0, 24.5).buffer(1e-4)], crs=4326)
        >>> f = gpd.GeoDataFrame({"frame": [0, 5], "lon": [117.0, 117.0003], "lat": [24.5, 24.5],
        ...                       "alt_m": [80.0, 80.0]},
        ...                      geometry=[box(116.999, 24.499, 117.001, 24.501)] * 2, crs=4326)
        >>> attach_frames(p, f)[["patch_id", "rank", "frame"]].values.tolist()
        [['A', 1, 0], ['A', 2, 5]]
    """
    if patches.crs is None or frames.crs is None:
        raise VectorError(None, "patches and frames need a CRS")
    missing = [c for c in ("frame", "lon", "lat", "alt_m") if c not in frames.columns]
    if missing:
        raise VectorError(None, f"frame index lacks columns {missing} (is it from `tuban uav index`?)")
    empty = pd.DataFrame(columns=list(EVIDENCE_COLUMNS))
    pts = patches[patches.geometry.notna() & ~patches.geometry.is_empty]
    fr = frames[frames.geometry.notna() & ~frames.geometry.is_empty]
    if len(pts) == 0 or len(fr) == 0:
        return empty
    pts = pts.to_crs(WGS84)
    fr = fr.to_crs(WGS84)
    c0 = pts.geometry.iloc[0].representative_point()
    utm = utm_crs_for(c0.x, c0.y)
    idc = id_column or next((c for c in ID_COLUMNS if c in pts.columns), None)
    if idc is not None and idc not in pts.columns:
        raise VectorError(None, f"patches have no column {idc!r}")
    ids = pts[idc].to_numpy() if idc else pts.index.to_numpy()
    cent = gpd.GeoDataFrame({"patch_id": ids, "_order": np.arange(len(pts))},
                            geometry=pts.to_crs(utm).geometry.centroid.to_crs(WGS84).to_numpy(), crs=WGS84)
    fcols = [c for c in fr.columns if c != fr.geometry.name and c not in ("patch_id", "_order")]
    joined = gpd.sjoin(cent, fr[[*fcols, fr.geometry.name]], predicate="within", how="inner")
    if len(joined) == 0:
        return empty
    to_m = transformer(WGS84, utm)
    px, py = to_m.transform(joined.geometry.x.to_numpy(), joined.geometry.y.to_numpy())
    cx, cy = to_m.transform(joined["lon"].to_numpy(float), joined["lat"].to_numpy(float))
    dist = np.hypot(px - cx, py - cy)
    alt = joined["alt_m"].to_numpy(float)
    view = np.degrees(np.arctan2(dist, np.where(alt > 0, alt, np.nan)))
    out = pd.DataFrame(joined.drop(columns=[joined.geometry.name, "index_right"]))
    out["distance_m"] = dist.round(2)
    out["view_angle_deg"] = view.round(2)
    for c in ("time_s", "image", "gimbal_pitch_deg", "gsd_m"):
        if c not in out.columns:
            out[c] = np.nan
    gsd = pd.to_numeric(out["gsd_m"], errors="coerce").fillna(np.inf)
    out = out.assign(_gsd=gsd.to_numpy(), _view=np.nan_to_num(view, nan=90.0).round(1))
    out = out.sort_values(["_order", "_view", "distance_m", "_gsd"], kind="stable")
    out["rank"] = out.groupby("_order").cumcount() + 1
    if max_per_patch is not None:
        out = out[out["rank"] <= max_per_patch]
    rest = [c for c in out.columns if c not in EVIDENCE_COLUMNS and not c.startswith("_")]
    return out[[*EVIDENCE_COLUMNS, *rest]].reset_index(drop=True)
