"""The four sample scenes: grids, acquisition effects and rendering to uint16 reflectance.

A scene is one date seen by one sensor: a north-up grid in county metres (the after grid is
shifted by a fraction of a pixel and may be a few pixels larger or smaller than the before grid,
so the pair never shares a grid) plus the effects of that acquisition (haze, gain, cloud, no-data
swath edge, sensor noise). :func:`render_scene` turns the painted world into the uint16 array
written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from affine import Affine
from shapely.geometry import Point, Polygon, box

from tuban.sample_data.atmosphere import (
    Cloud,
    Gain,
    Haze,
    add_sensor_noise,
    apply_cloud,
    apply_gain,
    apply_haze,
    apply_psf,
    to_digital_numbers,
    wedge_mask,
)
from tuban.sample_data.radiometry import Layer, render_surface, world_texture

__all__ = ["CountySpec", "Scene", "make_scenes", "make_cloud", "render_scene", "texture_waves"]


@dataclass(frozen=True)
class CountySpec:
    """Size and placement of the sample county.

    Args:
        s2_size_px: side of the Sentinel-2-like before scene, pixels (the county is this square).
        s2_res_m: its pixel size, metres.
        s2_supersample: fine pixels per output pixel when rendering it (mixed edge pixels).
        hr_size_px: side of the high-resolution before scene, pixels (a sub-area of the county).
        hr_res_m: its pixel size, metres.
        hr_supersample: fine pixels per output pixel for it.
        centre_lon_deg, centre_lat_deg: where the county lies (sets the UTM zone).
        before_date, after_date: acquisition dates, ISO ``YYYY-MM-DD``.
    """

    s2_size_px: int = 1200
    s2_res_m: float = 10.0
    s2_supersample: int = 5
    hr_size_px: int = 1800
    hr_res_m: float = 2.0
    hr_supersample: int = 2
    centre_lon_deg: float = 117.42
    centre_lat_deg: float = 23.93
    before_date: str = "2025-11-03"
    after_date: str = "2026-10-15"

    def __post_init__(self) -> None:
        if self.s2_size_px < 64 or self.hr_size_px < 64:
            raise ValueError("scenes must be at least 64 pixels on a side")
        if self.s2_res_m <= 0 or self.hr_res_m <= 0 or self.s2_supersample < 1 or self.hr_supersample < 1:
            raise ValueError("resolutions and supersampling must be positive")
        if self.hr_size_px * self.hr_res_m > 0.8 * self.s2_size_px * self.s2_res_m:
            raise ValueError("the high-resolution scene must be a sub-area of the county")
        if not self.before_date < self.after_date:
            raise ValueError("before_date must precede after_date")

    @classmethod
    def small(cls) -> CountySpec:
        """A 3 km county (300 px at 10 m, 400 px at 2 m) for fast tests."""
        return cls(s2_size_px=300, hr_size_px=400)

    @classmethod
    def of_size_km(cls, size_km: float) -> CountySpec:
        """A square county ``size_km`` on a side; the 2 m scene covers 30 % of the side (<= 3.6 km)."""
        if not 2.0 <= size_km <= 20.0:
            raise ValueError(f"county size must be 2-20 km, got {size_km}")
        s2 = round(size_km * 100)
        return cls(s2_size_px=s2, hr_size_px=min(1800, max(64, round(s2 * 10 * 0.3 / 2))))

    @property
    def county_size_m(self) -> float:
        return self.s2_size_px * self.s2_res_m

    @property
    def area_scale(self) -> float:
        """County area relative to the default 12 km x 12 km."""
        return (self.county_size_m / 12000.0) ** 2


@dataclass(frozen=True)
class Scene:
    """One acquisition: grid (county metres), effects, and the sensor's noise level."""

    sensor: str
    date_role: str
    date: str
    transform: Affine
    width: int
    height: int
    res_m: float
    supersample: int
    wedge: Polygon | None = None
    haze: Haze | None = None
    gain: Gain = field(default_factory=lambda: Gain((1.0, 1.0, 1.0, 1.0), (0.0, 0.0, 0.0, 0.0)))
    cloud: Cloud | None = None
    noise_abs: float = 0.002
    noise_rel: float = 0.01
    psf_sigma_px: float = 0.45

    @property
    def name(self) -> str:
        return f"{self.sensor}/{self.date_role}"

    @property
    def box(self) -> Polygon:
        x0, y1 = self.transform.c, self.transform.f
        return box(x0, y1 - self.height * self.res_m, x0 + self.width * self.res_m, y1)

    @property
    def footprint(self) -> Polygon:
        """The scene's valid-data area: its box minus the no-data wedge (county metres)."""
        return self.box.difference(self.wedge) if self.wedge is not None else self.box


def texture_waves(rng: np.random.Generator, n: int = 14) -> np.ndarray:
    """World-fixed texture waves ``(wavelength_m, direction_rad, phase_rad)``, 6-400 m."""
    wl = np.exp(rng.uniform(np.log(6.0), np.log(400.0), n))
    return np.column_stack([wl, rng.uniform(0, np.pi, n), rng.uniform(0, 2 * np.pi, n)])


def make_cloud(rng: np.random.Generator, county_m: float, avoid: Polygon | None = None) -> Cloud:
    """A cumulus cloud inside the county; its shadow falls to the north-north-west (sun SSE).

    The cloud's centre keeps clear of ``avoid`` (the high-resolution scene), so that scene is at
    most touched at an edge while the Sentinel-2-like one has the whole cloud and shadow.
    """
    r = float(np.clip(0.05 * county_m, 120.0, 600.0))
    for _ in range(100):
        cx, cy = rng.uniform(0.2, 0.8, 2) * county_m
        if avoid is None or avoid.buffer(r).distance(Point(cx, cy)) > 0:
            break
    puffs = tuple(
        (float(cx + rng.normal(0, 0.5 * r)), float(cy + rng.normal(0, 0.5 * r)),
         float(rng.uniform(0.25, 0.5) * r), float(rng.uniform(0.6, 1.0)))
        for _ in range(int(rng.integers(8, 15)))
    )
    d = float(np.clip(0.08 * county_m, 150.0, 1100.0))
    az = np.deg2rad(330.0 + rng.normal(0, 8))
    spec = tuple(float(v) for v in rng.uniform(0.5, 0.6) + rng.normal(0, 0.01, 4))
    return Cloud(puffs, (float(d * np.sin(az)), float(d * np.cos(az))), float(rng.uniform(0.4, 0.6)), spec)


def _wedge(rng: np.random.Generator, scene_box: Polygon, frac: tuple[float, float]) -> Polygon:
    """A diagonal no-data triangle at one corner of a scene (the edge of the satellite's swath)."""
    x0, y0, x1, y1 = scene_box.bounds
    a = rng.uniform(*frac) * (x1 - x0)
    b = rng.uniform(*frac) * (y1 - y0)
    corner = int(rng.integers(4))
    cx, sx = (x0, 1) if corner in (0, 3) else (x1, -1)
    cy, sy = (y0, 1) if corner in (0, 1) else (y1, -1)
    return Polygon([(cx - sx, cy - sy), (cx + sx * a, cy - sy), (cx - sx, cy + sy * b)])


def _shifted(rng: np.random.Generator, before: Affine, width: int, height: int, res: float):
    """After grid: sub-pixel shift of 0.3-0.6 px on each axis, a few pixels of extent change."""
    dx = rng.uniform(0.3, 0.6) * res * rng.choice([-1, 1])
    dy = rng.uniform(0.3, 0.6) * res * rng.choice([-1, 1])
    ox, oy = int(rng.integers(-3, 4)), int(rng.integers(-3, 4))
    t = Affine(res, 0.0, before.c + dx + ox * res, 0.0, -res, before.f + dy - oy * res)
    return t, width + int(rng.integers(-4, 5)) - ox, height + int(rng.integers(-4, 5)) - oy


def make_scenes(
    rng: np.random.Generator, spec: CountySpec, hr_origin_m: tuple[float, float], cloud: Cloud
) -> dict[str, Scene]:
    """The four scenes (``s2/before``, ``s2/after``, ``hr/before``, ``hr/after``) and their effects.

    Args:
        rng: the generator (consumed).
        spec: the county spec.
        hr_origin_m: south-west corner of the high-resolution before scene, county metres.
        cloud: the after date's cloud (the same cloud in both after scenes).
    """
    s, r = spec.s2_size_px, spec.s2_res_m
    s2_before_t = Affine(r, 0.0, 0.0, 0.0, -r, s * r)
    s2_after_t, s2w, s2h = _shifted(rng, s2_before_t, s, s, r)
    hs, hr = spec.hr_size_px, spec.hr_res_m
    hr_before_t = Affine(hr, 0.0, hr_origin_m[0], 0.0, -hr, hr_origin_m[1] + hs * hr)
    hr_after_t, hrw, hrh = _shifted(rng, hr_before_t, hs, hs, hr)

    def haze(strength: float) -> Haze:
        blue = strength * rng.uniform(0.025, 0.045)
        waves = tuple((float(rng.uniform(1500, 6000)), float(rng.uniform(0, np.pi)), float(rng.uniform(0, 6.3)))
                      for _ in range(3))
        return Haze((blue, blue * rng.uniform(0.55, 0.7), blue * rng.uniform(0.3, 0.4), blue * 0.12), waves)

    g = rng.uniform(0.88, 0.94)
    s2_gain = Gain(tuple(float(g + rng.normal(0, 0.015)) for _ in range(4)),
                   tuple(float(v) for v in rng.uniform(0.002, 0.008, 4)))
    hg = rng.uniform(1.03, 1.08)
    hr_gain = Gain(tuple(float(hg + rng.normal(0, 0.01)) for _ in range(4)),
                   tuple(float(v) for v in rng.uniform(-0.004, 0.002, 4)))
    s2_before = Scene("s2", "before", spec.before_date, s2_before_t, s, s, r, spec.s2_supersample,
                      haze=haze(1.0), noise_abs=0.002, noise_rel=0.01)
    s2_after = Scene("s2", "after", spec.after_date, s2_after_t, s2w, s2h, r, spec.s2_supersample,
                     gain=s2_gain, cloud=cloud, noise_abs=0.002, noise_rel=0.01)
    s2_after = _with_wedge(rng, s2_after, (0.15, 0.3))
    hr_before = Scene("hr", "before", spec.before_date, hr_before_t, hs, hs, hr, spec.hr_supersample,
                      noise_abs=0.004, noise_rel=0.02)
    hr_before = _with_wedge(rng, hr_before, (0.1, 0.2))
    hr_after = Scene("hr", "after", spec.after_date, hr_after_t, hrw, hrh, hr, spec.hr_supersample,
                     haze=haze(0.6), gain=hr_gain, cloud=cloud, noise_abs=0.004, noise_rel=0.02)
    return {sc.name: sc for sc in (s2_before, s2_after, hr_before, hr_after)}


def _with_wedge(rng: np.random.Generator, scene: Scene, frac: tuple[float, float]) -> Scene:
    return replace(scene, wedge=_wedge(rng, scene.box, frac))


def render_scene(
    scene: Scene,
    layers: list[Layer],
    background: Layer,
    waves: np.ndarray,
    rng: np.random.Generator,
    shape_cache: dict | None = None,
) -> np.ndarray:
    """The scene as uint16 reflectance x10000, shape ``(4, height, width)``, 0 = no data.

    Surface (area-averaged, textured) -> optics blur (PSF) -> cloud shadow and cloud -> haze ->
    sensor gain -> noise.
    """
    t = scene.transform
    refl, amp = render_surface(layers, t, scene.width, scene.height, supersample=scene.supersample,
                               background=background, shape_cache=shape_cache)
    tex = world_texture(t, scene.width, scene.height, waves, min_wavelength_m=2.5 * scene.res_m)
    refl *= 1.0 + amp[None] * tex[None]
    refl = apply_psf(refl, scene.psf_sigma_px)
    if scene.cloud is not None:
        refl, _ = apply_cloud(refl, scene.cloud, t)
    if scene.haze is not None:
        refl = apply_haze(refl, scene.haze, t)
    refl = apply_gain(refl, scene.gain)
    refl = add_sensor_noise(refl, rng, sigma_abs=scene.noise_abs, sigma_rel=scene.noise_rel)
    return to_digital_numbers(refl, wedge_mask(scene.wedge, t, scene.width, scene.height))
