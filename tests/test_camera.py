"""Camera intrinsics, ray casting footprints, the pixel <-> ground inverse, DEM marching."""

from __future__ import annotations

import math

import numpy as np
import pymap3d
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from tuban.imagery.camera import (
    CAMERA_PRESETS,
    Camera,
    camera_preset,
    footprint,
    ground_to_pixel,
    gsd_m,
    pixel_to_ground,
    view_above_horizon,
)
from tuban.imagery.georaster import GeoRaster

LON0, LAT0 = 114.3, 30.5


def _ned(lon, lat):
    n, e, _ = pymap3d.geodetic2ned(lat, lon, 0.0, LAT0, LON0, 0.0)
    return np.asarray(n), np.asarray(e)


def _metric_extent(poly):
    xs, ys = np.asarray(poly.exterior.coords).T
    n, e = _ned(xs, ys)
    return n.max() - n.min(), e.max() - e.min()


def test_presets_match_flight_md_table():
    # FLIGHT.md §2.3: HFOV / VFOV and fx
    assert CAMERA_PRESETS["p4rtk"].hfov_deg == pytest.approx(73.7, abs=0.1)
    assert CAMERA_PRESETS["p4rtk"].fx_px == pytest.approx(3648, abs=1)
    assert CAMERA_PRESETS["m3e"].hfov_deg == pytest.approx(70.3, abs=0.1)
    assert CAMERA_PRESETS["m30t-wide"].fx_px == pytest.approx(5625, abs=1)
    assert CAMERA_PRESETS["m30t-thermal"].hfov_deg == pytest.approx(45.8, abs=0.1)
    assert CAMERA_PRESETS["mini2"].vfov_deg == pytest.approx(53.7, abs=0.1)
    assert gsd_m(CAMERA_PRESETS["m3e"], 100.0) == pytest.approx(0.0267, abs=1e-4)
    assert camera_preset("M3E") is CAMERA_PRESETS["m3e"]
    with pytest.raises(ValueError, match="known"):
        camera_preset("nonexistent")


def test_35mm_diagonal_rule():
    cam = Camera.from_35mm(24.0, 5280, 3956)
    diag_fov = 2 * math.degrees(math.atan(43.2666 / 48.0))
    got = 2 * math.degrees(math.atan(math.hypot(5280, 3956) / 2 / cam.fx_px))
    assert got == pytest.approx(diag_fov)
    assert cam.hfov_deg == pytest.approx(71.6, abs=0.1)  # not 2*atan(36/48) = 73.7


def test_for_image_keeps_hfov_and_zoom_narrows():
    cam = CAMERA_PRESETS["m3e"]
    video = cam.for_image(3840, 2160)
    assert video.hfov_deg == pytest.approx(cam.hfov_deg)
    assert video.cx_px == 1920 and video.cy_px == 1080
    assert cam.zoomed(2.0).hfov_deg < cam.hfov_deg


@pytest.mark.parametrize("h", [30.0, 80.0, 120.0])
@pytest.mark.parametrize("yaw", [0.0, 37.0])
def test_nadir_centre_and_width(h, yaw):
    cam = Camera.from_hfov(70.0, 4000, 3000)
    lon, lat, hit = pixel_to_ground(cam, cam.cx_px, cam.cy_px, lon_deg=LON0, lat_deg=LAT0, height_m=h,
                                    yaw_deg=yaw, pitch_deg=-90.0)
    n, e = _ned(lon, lat)
    assert hit[0] and abs(n[0]) < 1e-6 and abs(e[0]) < 1e-6  # 0 centre error at nadir
    poly = footprint(LON0, LAT0, h, 0.0, -90.0, 0.0, cam)
    along_n, along_e = _metric_extent(poly)
    assert along_e == pytest.approx(2 * h * math.tan(math.radians(35.0)), rel=1e-4)  # width
    assert along_n == pytest.approx(2 * h * math.tan(math.radians(cam.vfov_deg / 2)), rel=1e-4)


@pytest.mark.parametrize("yaw", [0.0, 90.0, -135.0])
def test_oblique_45_centre_at_h_along_yaw(yaw):
    cam = CAMERA_PRESETS["m3e"]
    lon, lat, _ = pixel_to_ground(cam, cam.cx_px, cam.cy_px, lon_deg=LON0, lat_deg=LAT0, height_m=100.0,
                                  yaw_deg=yaw, pitch_deg=-45.0)
    n, e = _ned(lon, lat)
    assert n[0] == pytest.approx(100 * math.cos(math.radians(yaw)), abs=0.01)
    assert e[0] == pytest.approx(100 * math.sin(math.radians(yaw)), abs=0.01)


def test_top_of_nadir_image_points_along_yaw():
    cam = CAMERA_PRESETS["m3e"]  # FLIGHT.md check: yaw 30, h 100, top-left -> N 80.9, E -34.6
    lon, lat, _ = pixel_to_ground(cam, 0, 0, lon_deg=LON0, lat_deg=LAT0, height_m=100.0, yaw_deg=30.0,
                                  pitch_deg=-90.0)
    n, e = _ned(lon, lat)
    assert (n[0], e[0]) == pytest.approx((80.9, -34.6), abs=0.2)


def test_horizon_views_have_no_footprint_and_partial_views_are_clipped():
    cam = CAMERA_PRESETS["m3e"]
    assert view_above_horizon(cam, 0.0) and view_above_horizon(cam, 10.0)
    assert footprint(LON0, LAT0, 80.0, 0.0, 0.0, 0.0, cam) is None
    assert footprint(LON0, LAT0, 80.0, 0.0, 5.0, 0.0, cam) is None
    assert math.isnan(gsd_m(cam, 80.0, pitch_deg=0.0))
    poly = footprint(LON0, LAT0, 80.0, 0.0, -15.0, 0.0, cam, max_range_m=500.0)
    assert poly is not None and poly.is_valid
    far_n, _ = _metric_extent(poly)
    assert far_n <= 500.0 + 1e-6
    _, _, hit = pixel_to_ground(cam, [cam.cx_px, cam.cx_px], [0, cam.height_px], lon_deg=LON0, lat_deg=LAT0,
                                height_m=80.0, yaw_deg=0.0, pitch_deg=-15.0, max_range_m=500.0)
    assert hit.tolist() == [False, True]


def test_invalid_inputs_give_no_footprint():
    cam = CAMERA_PRESETS["m3e"]
    assert footprint(LON0, LAT0, float("nan"), 0.0, -90.0, 0.0, cam) is None
    assert footprint(LON0, LAT0, -5.0, 0.0, -90.0, 0.0, cam) is None


@settings(max_examples=60, deadline=None)
@given(
    u=st.floats(0.5, 3999.5), v=st.floats(0.5, 2999.5), h=st.floats(10, 300), yaw=st.floats(-180, 180),
    pitch=st.floats(-90, -50), roll=st.floats(-10, 10),
)
def test_pixel_ground_pixel_round_trip(u, v, h, yaw, pitch, roll):
    cam = Camera.from_hfov(70.0, 4000, 3000)
    kw = dict(lon_deg=LON0, lat_deg=LAT0, height_m=h, yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll)
    lon, lat, hit = pixel_to_ground(cam, u, v, max_range_m=1e6, **kw)
    assert hit[0]
    u2, v2, inside = ground_to_pixel(cam, lon, lat, **kw)
    assert inside[0]
    assert u2[0] == pytest.approx(u, abs=0.02) and v2[0] == pytest.approx(v, abs=0.02)


@settings(max_examples=40, deadline=None)
@given(h=st.floats(20, 200), yaw=st.floats(-180, 180), pitch=st.floats(-90, -60))
def test_footprint_contains_the_centre_ground_point(h, yaw, pitch):
    cam = CAMERA_PRESETS["m30t-wide"]
    poly = footprint(LON0, LAT0, h, yaw, pitch, 0.0, cam)
    lon, lat, _ = pixel_to_ground(cam, cam.cx_px, cam.cy_px, lon_deg=LON0, lat_deg=LAT0, height_m=h,
                                  yaw_deg=yaw, pitch_deg=pitch)
    assert poly.contains(Point(lon[0], lat[0]))


def test_points_behind_or_outside_are_not_in_frame():
    cam = CAMERA_PRESETS["m3e"]
    kw = dict(lon_deg=LON0, lat_deg=LAT0, height_m=80.0, yaw_deg=0.0, pitch_deg=-45.0)
    behind_lat = LAT0 - 200 / 111_000  # 200 m south of a north-looking camera
    _, _, inside = ground_to_pixel(cam, [LON0, LON0 + 0.01], [behind_lat, LAT0], **kw)
    assert inside.tolist() == [False, False]


def _dem(z, lon0=LON0 - 0.005, lat0=LAT0 + 0.005, cell=1e-5):
    return GeoRaster(z.astype(np.float32), Affine(cell, 0, lon0, 0, -cell, lat0), "EPSG:4326")


def test_dem_flat_matches_flat_ground():
    cam = CAMERA_PRESETS["m3e"]
    dem = _dem(np.full((1000, 1000), 250.0))
    kw = dict(lon_deg=LON0, lat_deg=LAT0, height_m=80.0, yaw_deg=20.0, pitch_deg=-60.0)
    u = np.array([0, 2640, 5280])
    v = np.array([0, 1978, 3956])
    flat = pixel_to_ground(cam, u, v, **kw)
    on_dem = pixel_to_ground(cam, u, v, dem=dem, **kw)
    n1, e1 = _ned(flat[0], flat[1])
    n2, e2 = _ned(on_dem[0], on_dem[1])
    assert np.all(on_dem[2])
    np.testing.assert_allclose(n2, n1, atol=0.05)
    np.testing.assert_allclose(e2, e1, atol=0.05)


def test_dem_slope_shortens_oblique_ray():
    cam = CAMERA_PRESETS["m3e"]
    rows = np.arange(1000)[:, None]
    # ground rises 0.2 m per row towards the north (row 0 is north): a hill ahead of the camera
    z = np.broadcast_to(100.0 + 0.2 * (999 - rows), (1000, 1000)).astype(float)
    dem = _dem(z)
    kw = dict(lon_deg=LON0, lat_deg=LAT0, height_m=80.0, yaw_deg=0.0, pitch_deg=-45.0)
    lon, lat, hit = pixel_to_ground(cam, cam.cx_px, cam.cy_px, dem=dem, **kw)
    n, _ = _ned(lon, lat)
    # analytic: ground slope s = 0.2 m per 1.11 m north; ray descends 1 m per 1 m north
    slope = 0.2 / (1e-5 * 111_000)
    assert hit[0] and n[0] == pytest.approx(80.0 / (1 + slope), rel=0.03)
    poly = footprint(LON0, LAT0, 80.0, 0.0, -45.0, 0.0, cam, dem=dem)
    assert poly is not None and poly.is_valid
