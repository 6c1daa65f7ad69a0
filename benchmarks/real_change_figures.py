"""Run ``tuban change`` on the real public samples and draw before / after / overlay PNGs.

Usage::

    python benchmarks/real_change_figures.py [--data ../shared/data/real] [--out docs/img]

Writes ``change_<case>.png`` (three panels: before, after, patches over the after image) and
prints one summary line per case (dates, shift, patch counts). Needs matplotlib.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import rasterio
from rasterio.vrt import WarpedVRT

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tuban.imagery.bands import parse_band_spec  # noqa: E402
from tuban.imagery.raster_io import open_date  # noqa: E402
from tuban.pipelines.change import ChangeSettings, run_change  # noqa: E402

COLOURS = {"new_pond": "#00e5ff", "removed_pond": "#ff1744", "drained_pond": "#ffab00",
           "new_water": "#2979ff", "lost_water": "#d500f9"}


def cases(data: Path) -> list[dict]:
    naip = data / "naip_potholes"
    puc = data / "landsat_pucallpa"
    puc_roles = parse_band_spec("swir1=1,nir=2,red=3,green=4")
    return [
        {"name": "naip_potholes", "before": [naip / "m_4709963_se_14_1_20090818.tif"],
         "after": [naip / "m_4709963_se_14_1_20150926.tif"],
         "settings": ChangeSettings(sensor_before="naip", sensor_after="naip"),
         "display": ("nir", "red", "green")},
        {"name": "landsat_pucallpa", "before": [puc / "1985.tif"], "after": [puc / "2020.tif"],
         "settings": ChangeSettings(bands_before=puc_roles, bands_after=puc_roles),
         "display": ("swir1", "nir", "red")},
        {"name": "landsat8_crop_same_date", "before": [data / "landsat8_crop"], "after": [data / "landsat8_crop"],
         "settings": ChangeSettings(), "display": ("swir1", "nir", "red")},
        {"name": "s2_dollard_same_date", "before": [data / "s2_dollard" / "cog.tif"],
         "after": [data / "s2_dollard" / "cog.tif"],
         "settings": ChangeSettings(sensor_before="sentinel2", sensor_after="sentinel2"),
         "display": ("nir", "red", "green")},
    ]


def _rgb(paths, settings_bands, sensor, roles_display, grid_crs, bounds, shape):
    src = open_date(paths, bands=settings_bands, sensor=sensor)
    with rasterio.open(src.dataset) as ds:
        from rasterio.transform import from_bounds

        t = from_bounds(*bounds, shape[1], shape[0])
        with WarpedVRT(ds, crs=grid_crs, transform=t, width=shape[1], height=shape[0]) as vrt:
            arr = np.stack([vrt.read(src.roles[r]).astype(np.float32) for r in roles_display])
    out = np.empty_like(arr)
    for i, band in enumerate(arr):
        valid = band[np.isfinite(band) & (band > 0)]
        lo, hi = (np.percentile(valid, (2, 98)) if valid.size else (0, 1))
        out[i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.nan_to_num(out.transpose(1, 2, 0))


def draw(case: dict, out_dir: Path) -> str:
    s = case["settings"]
    r = run_change(case["before"], case["after"], s)
    g = r.stats["grid"]
    from pyproj import CRS

    grid_crs = CRS.from_user_input(g["crs"])
    patches = r.patches.to_crs(grid_crs)
    ref = open_date(case["before"], bands=s.bands_before, sensor=s.sensor_before)
    with rasterio.open(ref.dataset) as ds:
        from rasterio.warp import transform_bounds

        bounds = transform_bounds(ds.crs, grid_crs, *ds.bounds)
    shape = (min(900, g["height"]), min(900, g["width"]))
    before = _rgb(case["before"], s.bands_before, s.sensor_before, case["display"], grid_crs, bounds, shape)
    after = _rgb(case["after"], s.bands_after, s.sensor_after, case["display"], grid_crs, bounds, shape)
    extent = (bounds[0], bounds[2], bounds[1], bounds[3])
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.4))
    for ax, img, title in zip(axes, (before, after, after), (f"before {r.dates[0]}", f"after {r.dates[1]}",
                                                             "patches over after"), strict=True):
        ax.imshow(img, extent=extent)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    for kind, colour in COLOURS.items():
        sel = patches[patches["kind"] == kind]
        if len(sel):
            sel.boundary.plot(ax=axes[2], color=colour, linewidth=1.2, label=f"{kind} ({len(sel)})")
    if len(patches):
        axes[2].legend(loc="lower right", fontsize=8, framealpha=0.8)
    axes[2].set_xlim(extent[0], extent[1])
    axes[2].set_ylim(extent[2], extent[3])
    shift = r.stats["shift_px"]
    fig.suptitle(f"{case['name']}: shift dx={shift['dx']:+.2f} px dy={shift['dy']:+.2f} px, "
                 f"index {r.stats['index']}, masked {r.stats['pixels']['masked']} px", fontsize=11)
    fig.tight_layout()
    path = out_dir / f"change_{case['name']}.png"
    fig.savefig(path, dpi=50)
    plt.close(fig)
    counts = {k: v for k, v in r.stats["patches"].items() if v}
    return (f"{case['name']}: {r.dates[0]} -> {r.dates[1]}, shift ({shift['dx']:+.2f}, {shift['dy']:+.2f}) px, "
            f"grid {g['width']}x{g['height']} @ {g['pixel_size_m']:.1f} m, patches {counts or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--data", type=Path, default=root / ".." / "shared" / "data" / "real")
    ap.add_argument("--out", type=Path, default=root / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for case in cases(args.data.resolve()):
        print(draw(case, args.out), flush=True)


if __name__ == "__main__":
    main()
