"""WGS84 <-> GCJ-02, the "offset" coordinates shown by phone map apps in China.

Ovital (奥维), Amap and Tencent maps display GCJ-02, which is WGS84 shifted by a few hundred
metres by a published obfuscation formula. tuban's exchange files stay WGS84; a KML/TXT meant
for such an app is converted with :func:`wgs84_to_gcj02` (and labelled as offset), points edited
in such an app come back through :func:`gcj02_to_wgs84` (an iterative inverse, ~1e-9 deg).
Outside mainland China (the usual rough box) both functions return their input unchanged.

Example:
    >>> lon, lat = wgs84_to_gcj02(116.404, 39.915)
    >>> round(lon, 9), round(lat, 9)
    (116.410244499, 39.916404282)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["in_china", "wgs84_to_gcj02", "gcj02_to_wgs84", "wgs84_to_gcj02_array"]

_A = 6378245.0  # Krasovsky 1940 semi-major axis used by the formula
_EE = 0.00669342162296594323  # its first eccentricity squared


def in_china(lon_deg: float, lat_deg: float) -> bool:
    """True inside the rough mainland-China box where GCJ-02 applies."""
    return 72.004 <= lon_deg <= 137.8347 and 0.8293 <= lat_deg <= 55.8271


def _offset(lon_deg: float, lat_deg: float) -> tuple[float, float]:
    x, y = lon_deg - 105.0, lat_deg - 35.0
    d_lat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
             + (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
             + (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
             + (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0)
    d_lon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
             + (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
             + (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
             + (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0)
    rad_lat = lat_deg / 180.0 * math.pi
    magic = 1.0 - _EE * math.sin(rad_lat) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * math.cos(rad_lat) * math.pi)
    return d_lon, d_lat


def wgs84_to_gcj02(lon_deg: float, lat_deg: float) -> tuple[float, float]:
    """GCJ-02 ``(lon, lat)`` of a WGS84 point (unchanged outside China)."""
    if not in_china(lon_deg, lat_deg):
        return lon_deg, lat_deg
    d_lon, d_lat = _offset(lon_deg, lat_deg)
    return lon_deg + d_lon, lat_deg + d_lat


def gcj02_to_wgs84(lon_deg: float, lat_deg: float, *, tol_deg: float = 1e-10,
                   max_iter: int = 30) -> tuple[float, float]:
    """WGS84 ``(lon, lat)`` of a GCJ-02 point, by fixed-point iteration (unchanged outside China)."""
    if not in_china(lon_deg, lat_deg):
        return lon_deg, lat_deg
    lon, lat = lon_deg, lat_deg
    for _ in range(max_iter):
        g_lon, g_lat = wgs84_to_gcj02(lon, lat)
        err_lon, err_lat = g_lon - lon_deg, g_lat - lat_deg
        lon, lat = lon - err_lon, lat - err_lat
        if abs(err_lon) < tol_deg and abs(err_lat) < tol_deg:
            break
    return lon, lat


def wgs84_to_gcj02_array(coords: np.ndarray) -> np.ndarray:
    """GCJ-02 of an ``(n, 2)`` lon/lat array (for ``shapely.transform``)."""
    out = np.array(coords, dtype=float, copy=True)
    for i, (lon, lat) in enumerate(out[:, :2]):
        out[i, 0], out[i, 1] = wgs84_to_gcj02(float(lon), float(lat))
    return out
