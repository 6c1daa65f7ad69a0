"""The sample county's drone clip: a flight over the county's own new ponds.

:func:`generate_county_clip` picks a pond cluster of the generated county that holds new ponds
(dug between the two dates), renders a high-resolution RGB ortho of the ground around it and
films it with :func:`tuban.sample_data.uav_clip.generate_uav_clip`, so drone frames cover the
same ponds that change detection finds and triage turns into cases (sky -> drone -> ground).

The ortho (default 0.25 m) is built from the county's own files, never from a re-run of its
generator:

* the ground between the ponds is the county's after-date high-resolution scene (2 m; the
  10 m scene where the 2 m one has no data), resampled bilinearly and corrected for that
  scene's recorded gain and offset, so fields, roads and villages are where the satellite
  sees them;
* every pond of ``truth/ponds_after.geojson`` near the flight is painted sharply on top: an
  earth dike ``dike_width_m`` wide around it, then the water (``water_colour``) or, for a
  drained pond, mud with a puddle in one corner, some water with a paddle-wheel aerator's
  foam. Colours are the county generator's material spectra
  (:mod:`tuban.sample_data.radiometry`), with its per-material texture amplitude on world-fixed
  texture waves a few decimetres to tens of metres long;
* a camera model turns reflectance into 8-bit RGB: daylight white balance (reflectance as is),
  exposure putting the ortho's median at 18 % grey, sRGB gamma.

Truth ponds of the clip keep the county's ``pond_id``, ``kind`` and ``cluster_id``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.warp import Resampling, reproject
from shapely import affinity
from shapely.geometry import Polygon, box

from tuban import InputError
from tuban.imagery.crs import WGS84, transformer
from tuban.imagery.georaster import GeoRaster
from tuban.sample_data.radiometry import MATERIALS, material_texture, water_spectrum
from tuban.sample_data.uav_clip import (
    ClipOutputs,
    ClipSettings,
    flight_poses,
    generate_uav_clip,
    true_footprint_m,
)

__all__ = ["CountyClipPlan", "plan_county_flight", "render_county_ortho", "generate_county_clip"]


@dataclass(frozen=True)
class CountyClipPlan:
    """Where the clip flies: the cluster, the flight settings and the ortho box.

    Args:
        cluster_id: county cluster flown over.
        settings: camera and flight (origin, course, lane) for :func:`generate_uav_clip`.
        ortho_bounds_m: ``(minx, miny, maxx, maxy)`` of the ortho in the county CRS.
    """

    cluster_id: str
    settings: ClipSettings
    ortho_bounds_m: tuple[float, float, float, float]


def _pick_cluster(ponds: gpd.GeoDataFrame) -> str:
    """The cluster with new ponds (preferably inside the 2 m scene) whose ponds are smallest.

    Small ponds are the ones a drone at 80 m can see whole in one frame.
    """
    if "cluster_id" not in ponds.columns or "kind" not in ponds.columns:
        raise ValueError("truth ponds need cluster_id and kind")
    new = ponds[ponds["kind"] == "new_pond"]
    pool = new if len(new) else ponds
    if "in_hr" in pool.columns and pool["in_hr"].astype(bool).any():
        pool = pool[pool["in_hr"].astype(bool)]
    if pool.empty:
        raise ValueError("the county has no ponds to fly over")
    size = ponds.assign(side_m=np.sqrt(ponds.geometry.area)).groupby("cluster_id")["side_m"].median()
    candidates = sorted(set(pool["cluster_id"]), key=lambda c: (round(float(size[c]), 3), c))
    return candidates[0]


def plan_county_flight(ponds_m: gpd.GeoDataFrame, base: ClipSettings | None = None, *,
                       margin_m: float = 60.0) -> CountyClipPlan:
    """Lay the nadir pass along a cluster's new ponds and the oblique pass beside it.

    The nadir pass runs through the centre of the cluster's new ponds (all its ponds if it has
    none) along the longer side of their minimum rotated rectangle, from one end to the other
    plus ``margin_m``; the oblique pass flies back ``lane_offset_m`` to the right so its gimbal
    (``oblique_pitch_deg``) looks at the first pass's ground line. Speed keeps each pass within
    6-12 m/s and 12-40 s.

    Args:
        ponds_m: truth ponds in a metric CRS (``cluster_id``, ``kind``).
        base: camera and noise settings to keep (origin, course and timing are replaced).
        margin_m: extra pass length before and after the cluster.
    """
    s = base or ClipSettings()
    cid = _pick_cluster(ponds_m)
    cl = ponds_m[ponds_m["cluster_id"] == cid]
    new = cl[cl["kind"] == "new_pond"]
    target = new if len(new) else cl  # new ponds are often one extension row of a larger cluster
    rect = target.geometry.union_all().minimum_rotated_rectangle
    xy = np.asarray(rect.exterior.coords)[:4]
    edges = np.roll(xy, -1, axis=0) - xy
    k = int(np.argmax(np.hypot(edges[:, 0], edges[:, 1])))
    length = float(np.hypot(*edges[k]))
    course = math.degrees(math.atan2(edges[k][0], edges[k][1])) % 360.0  # from north, clockwise
    centre = np.asarray(rect.centroid.coords[0])
    a = math.radians(course)
    fwd = np.array([math.sin(a), math.cos(a)])  # (east, north)
    pass_m = length + 2 * margin_m
    pass_s = float(np.clip(pass_m / 8.0, 12.0, 40.0))
    speed = float(np.clip(pass_m / pass_s, 6.0, 12.0))
    pass_m = speed * pass_s
    # oblique lane: the centre ray of a gimbal at oblique_pitch_deg meets the nadir pass line
    lane = s.altitude_m / math.tan(math.radians(-s.oblique_pitch_deg))
    start = centre - fwd * pass_m / 2
    takeoff = start - fwd * 10.0  # take off 10 m behind the start of the nadir pass
    settings = replace(s, heading_deg=round(course, 3), lane_offset_m=round(lane, 3), start_along_m=10.0,
                       pass_s=pass_s, speed_m_s=round(speed, 3))
    # footprints of the true flight (local frame = take-off at 0,0) bound the ortho
    pose = flight_poses(settings)
    pts = []
    for i in range(0, len(pose["time_s"]), max(1, int(settings.fps // 2))):
        fp = true_footprint_m((pose["east_m"][i], pose["north_m"][i]), pose["height_m"][i],
                              (pose["gimbal_yaw_deg"][i], pose["gimbal_pitch_deg"][i], 0.0), settings)
        pts.append(np.asarray(fp.exterior.coords))
    allp = np.vstack(pts) + takeoff  # local metres ~ county metres near take-off (scale ~1)
    pad = 30.0
    bounds = (float(allp[:, 0].min() - pad), float(allp[:, 1].min() - pad),
              float(allp[:, 0].max() + pad), float(allp[:, 1].max() + pad))
    crs = ponds_m.crs
    lon, lat = transformer(crs, WGS84).transform(float(takeoff[0]), float(takeoff[1]))
    settings = replace(settings, origin_lon=round(float(lon), 7), origin_lat=round(float(lat), 7))
    return CountyClipPlan(cid, settings, bounds)


def _background(root: Path, manifest: dict, tf: Affine, shape: tuple[int, int], crs: CRS) -> np.ndarray:
    """Surface reflectance (blue, green, red) on the ortho grid from the after-date scenes."""
    out = np.zeros((3, *shape), np.float32)
    valid = np.zeros(shape, bool)
    for name in ("hr/after", "s2/after"):
        path = root / f"{name}.tif"
        if not path.is_file():
            continue
        info = manifest.get("scenes", {}).get(name, {})
        gain = np.asarray(info.get("gain", [1.0] * 4), np.float32)[:3]
        offset = np.asarray(info.get("offset", [0.0] * 4), np.float32)[:3]
        with rasterio.open(path) as ds:
            dst = np.zeros((3, *shape), np.float32)
            for b in range(3):
                reproject(rasterio.band(ds, b + 1), dst[b], dst_transform=tf, dst_crs=crs,
                          resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
        ok = np.all(dst > 0, axis=0) & ~valid
        refl = (dst / 10000.0 - offset[:, None, None]) / gain[:, None, None]
        out[:, ok] = refl[:, ok]
        valid |= ok
        if valid.all():
            break
    if not valid.any():
        raise InputError(root, "no after-date scene covers the flight area")
    fill = np.median(out[:, valid], axis=1)
    out[:, ~valid] = fill[:, None]
    return out


def _texture(tf: Affine, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean texture (~unit std) from world-fixed waves 0.6-40 m long."""
    h, w = shape
    x = tf.c + tf.a * (np.arange(w) + 0.5)
    y = tf.f + tf.e * (np.arange(h) + 0.5)
    field = np.zeros(shape, np.float32)
    n = 16
    for wl, d, ph in zip(np.exp(rng.uniform(np.log(0.6), np.log(40.0), n)), rng.uniform(0, np.pi, n),
                         rng.uniform(0, 2 * np.pi, n), strict=True):
        k = 2 * np.pi / wl
        ax, ay = k * np.cos(d) * x + ph, k * np.sin(d) * y
        field += (np.cos(ay)[:, None] * np.sin(ax)[None, :] + np.sin(ay)[:, None] * np.cos(ax)[None, :])
    return field * np.float32(math.sqrt(2.0 / n))


def render_county_ortho(root: Path, ponds_m: gpd.GeoDataFrame, bounds_m: tuple[float, float, float, float],
                        gsd_m: float, rng: np.random.Generator) -> GeoRaster:
    """RGB uint8 ortho (county CRS) of ``bounds_m``: after-date ground plus sharp ponds and dikes.

    Args:
        root: the county folder (``county.json``, ``hr/after.tif``, ``s2/after.tif``).
        ponds_m: truth ponds of the after date in the county CRS (``dike_width_m``,
            ``state_after``, ``water_colour``).
        bounds_m: ``(minx, miny, maxx, maxy)`` in the county CRS.
        gsd_m: ortho pixel size, metres.
        rng: generator for spectra and texture.
    """
    import cv2

    manifest = json.loads((root / "county.json").read_text(encoding="utf-8"))
    crs = CRS.from_user_input(ponds_m.crs)
    x0, y0, x1, y1 = bounds_m
    w, h = int(math.ceil((x1 - x0) / gsd_m)), int(math.ceil((y1 - y0) / gsd_m))
    tf = Affine(gsd_m, 0.0, x0, 0.0, -gsd_m, y1)
    refl = _background(root, manifest, tf, (h, w), crs)
    img = np.ascontiguousarray(refl.transpose(1, 2, 0))  # (h, w, 3) blue, green, red
    amp = np.full((h, w), material_texture("grass"), np.float32)

    def fill(poly: Polygon, spec, tex: float) -> None:
        ring = np.asarray(poly.exterior.coords)
        pix = np.c_[(ring[:, 0] - x0) / gsd_m, (y1 - ring[:, 1]) / gsd_m]
        pts = [np.round(pix * 4).astype(np.int32)]
        cv2.fillPoly(img, pts, tuple(float(v) for v in spec[:3]), lineType=cv2.LINE_AA, shift=2)
        cv2.fillPoly(amp, pts, float(tex), shift=2)

    near = ponds_m[ponds_m.intersects(box(*bounds_m).buffer(50.0))]
    near = near[near["state_after"] != "absent"] if "state_after" in near.columns else near
    dike_spec = {}
    for cid in sorted(set(near.get("cluster_id", ["C"]))):
        grass = rng.uniform(0.0, 0.5)  # grassy dikes are darker and greener
        dike_spec[cid] = (1 - grass) * np.asarray(MATERIALS["dike"]) + grass * np.asarray(MATERIALS["grass"])
    for _, p in near.iterrows():  # all dikes first, then the water inside them
        frame = p.geometry.buffer(float(p.get("dike_width_m", 5.0) or 5.0), join_style="mitre")
        fill(frame, dike_spec[p.get("cluster_id", "C")] * rng.uniform(0.95, 1.05), material_texture("dike"))
    for _, p in near.iterrows():
        colour = p.get("water_colour") or "turbid"
        drained = p.get("state_after") == "drained" or colour == "mud"
        fill(p.geometry, water_spectrum("mud" if drained else colour, rng), material_texture(
            "mud" if drained else colour))
        if drained:  # a puddle left in one corner
            corner = p.geometry.exterior.coords[int(rng.integers(4))]
            fill(affinity.scale(p.geometry, 0.25, 0.25, origin=corner), water_spectrum("turbid", rng), 0.04)
        elif rng.random() < 0.5:  # a paddle-wheel aerator's foam
            c = p.geometry.centroid
            foam = affinity.rotate(affinity.scale(c.buffer(1.0, 8), rng.uniform(2, 4), rng.uniform(1, 1.8)),
                                   rng.uniform(0, 180), origin=c)
            fill(foam, np.array([0.21, 0.22, 0.20]) * rng.uniform(0.8, 1.2), 0.1)
    img *= 1.0 + amp[..., None] * _texture(tf, (h, w), rng)[..., None]
    # camera: daylight white balance (reflectance as is), exposure putting the median at 18 % grey
    med = float(np.median(img[::7, ::7]))
    lin = img * (0.18 / max(med, 1e-4))
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(np.clip(lin, 0, None), 1 / 2.4) - 0.055)
    bgr = np.clip(srgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    bgr = cv2.GaussianBlur(bgr, (0, 0), 0.6)
    return GeoRaster(data=np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1)), transform=tf, crs=crs,
                     band_names=("red", "green", "blue"))


def generate_county_clip(county_root: str | Path, seed: int = 0, *, settings: ClipSettings | None = None,
                         overwrite: bool = False) -> ClipOutputs:
    """Render the drone clip of a generated county into ``county_root/uav/``.

    Args:
        county_root: folder written by :func:`tuban.sample_data.county.generate_county`.
        seed: random seed for the ortho's colours and texture, GNSS noise and barometric offset.
        settings: camera and noise settings (origin, course and timing are planned here).
        overwrite: replace an existing clip.

    Raises:
        InputError: the folder is not a generated county.
    """
    root = Path(county_root)
    truth_path = root / "truth" / "ponds_after.geojson"
    if not (root / "county.json").is_file() or not truth_path.is_file():
        raise InputError(root, "not a sample county (county.json or truth/ponds_after.geojson missing)")
    manifest = json.loads((root / "county.json").read_text(encoding="utf-8"))
    crs = CRS.from_user_input(manifest["crs"])
    ponds = gpd.read_file(truth_path).to_crs(crs)
    base = settings or ClipSettings()
    try:
        plan = plan_county_flight(ponds, base)
    except ValueError as exc:  # no ponds, or truth without cluster_id/kind
        raise InputError(truth_path, str(exc)) from exc
    rng = np.random.default_rng([seed, 11])
    ortho = render_county_ortho(root, ponds, plan.ortho_bounds_m, base.ortho_gsd_m, rng)
    cols = [c for c in ("pond_id", "kind", "cluster_id", "water_colour") if c in ponds.columns]
    flown = ponds[ponds.intersects(box(*plan.ortho_bounds_m))]
    truth = gpd.GeoDataFrame(flown[cols].assign(water=(flown["state_after"] == "water").to_numpy()),
                             geometry=flown.geometry, crs=crs)
    return generate_uav_clip(root, seed, ortho=ortho, ponds=truth, settings=plan.settings, overwrite=overwrite)
