"""Tiny synthetic before/after scenes with known pond changes, for the change-detection tests.

A 10 m, 240 x 240 px UTM scene of textured crop and bare-soil fields. Ponds (clear water inside
one-pixel dikes) are placed at known pixel boxes:

* ``kept``: water on both dates;
* ``removed``: water before, filled with soil after;
* ``drained``: water before, wet mud after (dikes intact);
* ``new``: crop before, water after (with new dikes);
* ``new_algae``: crop before, algae-rich water after (weak NDWI, dark).

Values are uint16 reflectance x 10000, bands blue, green, red, nir, with descriptions and an
ACQUISITION_DATE tag, like the project's sample rasters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

SPECTRA = {
    "crop": (0.04, 0.08, 0.05, 0.38),
    "soil": (0.12, 0.15, 0.19, 0.26),
    "dike": (0.15, 0.17, 0.20, 0.25),
    "water": (0.06, 0.06, 0.03, 0.02),
    "algae": (0.05, 0.09, 0.05, 0.09),
    "mud": (0.09, 0.11, 0.12, 0.15),
    "fill": (0.13, 0.16, 0.20, 0.27),
    "cloud": (0.6, 0.6, 0.6, 0.6),
}
#: Pond boxes (row0, col0, row1, col1) in pixels (end exclusive).
PONDS = {
    "kept": (40, 40, 52, 56),
    "removed": (40, 100, 52, 116),
    "drained": (100, 40, 112, 56),
    "new": (100, 100, 114, 114),
    "new_algae": (170, 150, 182, 166),
}
ORIGIN = (500000.0, 2650000.0)
PIXEL_M = 10.0
SIZE = 240
CRS = "EPSG:32650"
TRANSFORM = Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1])


def _paint(img: np.ndarray, box, material: str, dike: bool = True) -> None:
    r0, c0, r1, c1 = box
    if dike:
        img[:, r0 - 1:r1 + 1, c0 - 1:c1 + 1] = np.array(SPECTRA["dike"])[:, None, None]
    img[:, r0:r1, c0:c1] = np.array(SPECTRA[material])[:, None, None]


def scene(date: str, seed: int = 0, cloud_box=None) -> np.ndarray:
    """Reflectance ``(4, SIZE, SIZE)`` float32 of one date (``before`` or ``after``)."""
    rng = np.random.default_rng(seed)
    img = np.empty((4, SIZE, SIZE), dtype=np.float32)
    img[:] = np.array(SPECTRA["crop"])[:, None, None]
    for r in range(0, SIZE, 60):  # alternate crop and soil fields, same on both dates
        for c in range(0, SIZE, 80):
            if (r // 60 + c // 80) % 3 == 0:
                img[:, r:r + 60, c:c + 80] = np.array(SPECTRA["soil"])[:, None, None]
    if date == "before":
        for name in ("kept", "removed", "drained"):
            _paint(img, PONDS[name], "water")
    else:
        _paint(img, PONDS["kept"], "water")
        _paint(img, PONDS["removed"], "fill", dike=False)
        _paint(img, PONDS["drained"], "mud")
        _paint(img, PONDS["new"], "water")
        _paint(img, PONDS["new_algae"], "algae")
    img *= rng.normal(1.0, 0.03, size=img.shape).astype(np.float32)  # texture / noise
    if cloud_box is not None:
        r0, c0, r1, c1 = cloud_box
        img[:, r0:r1, c0:c1] = np.array(SPECTRA["cloud"])[:, None, None]
    return img


def write(path: Path, refl: np.ndarray, *, date: str = "2024-05-01", transform: Affine = TRANSFORM,
          crs: str | None = CRS, descriptions: bool = True, nodata: float | None = 0) -> Path:
    """Write reflectance as uint16 x 10000 GeoTIFF with band descriptions and a date tag."""
    dn = np.clip(refl * 10000.0, 1, 65535).astype(np.uint16)
    kw = dict(driver="GTiff", width=dn.shape[2], height=dn.shape[1], count=dn.shape[0], dtype="uint16",
              nodata=nodata, tiled=True, blockxsize=64, blockysize=64)
    if crs is not None:
        kw.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **kw) as ds:
        ds.write(dn)
        if descriptions:
            for i, name in enumerate(("blue", "green", "red", "nir"), start=1):
                ds.set_band_description(i, name)
        ds.update_tags(ACQUISITION_DATE=date)
    return path


def pair(tmp: Path, *, after_transform: Affine = TRANSFORM, cloud_box=None) -> tuple[Path, Path]:
    """Write the before/after pair into ``tmp``; returns their paths."""
    b = write(tmp / "before.tif", scene("before", 1), date="2024-05-01")
    a = write(tmp / "after.tif", scene("after", 2, cloud_box), date="2025-06-02", transform=after_transform)
    return b, a


def field_background(seed: int) -> np.ndarray:
    """A ``(4, SIZE, SIZE)`` scene of 30 x 40 px soil (40 %) and crop fields, each with its own gain."""
    img = np.empty((4, SIZE, SIZE), dtype=np.float32)
    fields = np.random.default_rng(seed)
    for r in range(0, SIZE, 30):
        for c in range(0, SIZE, 40):
            material = "soil" if fields.random() < 0.4 else "crop"
            img[:, r:r + 30, c:c + 40] = fields.uniform(0.8, 1.2) * np.array(SPECTRA[material])[:, None, None]
    return img


def patches_of(tmp: Path, before: np.ndarray, after: np.ndarray, settings=None):
    """Write two reflectance scenes as a pair (dated 2024-05-01 and 2025-06-02), run
    ``run_change`` on them and return its patches in :data:`CRS`."""
    from tuban.pipelines.change import ChangeSettings, run_change

    b = write(tmp / "before.tif", before, date="2024-05-01")
    a = write(tmp / "after.tif", after, date="2025-06-02")
    return run_change([b], [a], settings or ChangeSettings()).patches.to_crs(CRS)


def pond_centre_map(name: str) -> tuple[float, float]:
    """Map (x, y) of a pond's centre on the before grid."""
    r0, c0, r1, c1 = PONDS[name]
    return TRANSFORM * ((c0 + c1) / 2.0, (r0 + r1) / 2.0)


def kinds_at(patches, box) -> list[str]:
    """Sorted kinds of the patches under the centre of pixel box ``(r0, c0, r1, c1)``."""
    from shapely.geometry import Point

    r0, c0, r1, c1 = box
    x, y = TRANSFORM * ((c0 + c1) / 2.0, (r0 + r1) / 2.0)
    return sorted(patches[patches.intersects(Point(x, y))]["kind"])


def patches_without(tmp: Path, before: np.ndarray, after: np.ndarray, rule: str, disabled):
    """:func:`patches_of` with ``tuban.pipelines.change_patches.<rule>`` replaced by ``disabled``
    (the pipeline as it was before that rule existed); the rule is restored afterwards."""
    import pytest

    import tuban.pipelines.change_patches as cp

    mp = pytest.MonkeyPatch()
    mp.setattr(cp, rule, disabled)
    try:
        return patches_of(tmp, before, after)
    finally:
        mp.undo()
