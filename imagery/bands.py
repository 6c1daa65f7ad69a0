"""Band roles (blue, green, red, nir, swir1, qa) and sensor presets.

A role is resolved to a 1-based band index of a stacked raster, in this order:

1. an explicit ``--bands green=2,nir=4`` mapping;
2. the raster's band descriptions (``"green"``, ``"NIR"``, ``"B3"`` are not guessed: only role
   names and common spellings such as ``"near infrared"`` or ``"swir 1"``);
3. a sensor preset (``sentinel2``, ``landsat8``, ``landsat9``, ``landsat-tm``, ``naip``,
   ``gaofen2``, ``planetscope``), chosen by band count where a sensor ships several layouts.

Per-band deliveries (Landsat ``*_B3.TIF`` files) map roles to file-name suffixes instead; see
:func:`band_file_suffixes`. A role that cannot be resolved raises :class:`tuban.BandError`
naming the missing roles and how to supply them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from tuban import BandError

__all__ = [
    "ROLES",
    "SENSORS",
    "parse_band_spec",
    "roles_from_descriptions",
    "preset_roles",
    "resolve_roles",
    "band_file_suffixes",
    "sensor_from_mtl",
]

ROLES = ("blue", "green", "red", "nir", "swir1", "qa")

# Stacked layouts (band count -> role -> 1-based index) per sensor. None = any band count.
_STACKED: dict[str, dict[int | None, dict[str, int]]] = {
    "sentinel2": {
        # 13-band L1C order B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B10,B11,B12.
        13: {"blue": 2, "green": 3, "red": 4, "nir": 8, "swir1": 12},
        # 12-band L2A order (no B10).
        12: {"blue": 2, "green": 3, "red": 4, "nir": 8, "swir1": 11},
        # 10 m stack B2,B3,B4,B8 (+ optional B11 resampled).
        4: {"blue": 1, "green": 2, "red": 3, "nir": 4},
        5: {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5},
    },
    "landsat8": {None: {"blue": 2, "green": 3, "red": 4, "nir": 5, "swir1": 6}},
    "landsat9": {None: {"blue": 2, "green": 3, "red": 4, "nir": 5, "swir1": 6}},
    "landsat-tm": {None: {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5}},
    "naip": {None: {"red": 1, "green": 2, "blue": 3, "nir": 4}},
    "gaofen2": {None: {"blue": 1, "green": 2, "red": 3, "nir": 4}},
    "planetscope": {
        4: {"blue": 1, "green": 2, "red": 3, "nir": 4},
        # SuperDove 8-band: coastal, blue, green I, green, yellow, red, red edge, nir.
        8: {"blue": 2, "green": 4, "red": 6, "nir": 8},
    },
}

# Per-band file suffixes (file stem ends with ``_<suffix>``), case-insensitive.
_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "landsat8": {"blue": ("B2",), "green": ("B3",), "red": ("B4",), "nir": ("B5",),
                 "swir1": ("B6",), "qa": ("QA_PIXEL", "BQA")},
    "landsat-tm": {"blue": ("B1",), "green": ("B2",), "red": ("B3",), "nir": ("B4",),
                   "swir1": ("B5",), "qa": ("QA_PIXEL", "BQA")},
    "sentinel2": {"blue": ("B02",), "green": ("B03",), "red": ("B04",), "nir": ("B08",),
                  "swir1": ("B11",)},
}
_FILES["landsat9"] = _FILES["landsat8"]

SENSORS = tuple(sorted(_STACKED))

_DESCRIPTION_WORDS = {
    "blue": ("blue", "b", "coastal blue"),
    "green": ("green", "g"),
    "red": ("red", "r"),
    "nir": ("nir", "near infrared", "near-infrared", "nir1", "infrared", "near ir"),
    "swir1": ("swir1", "swir 1", "swir-1", "swir", "shortwave infrared 1", "swir16"),
    "qa": ("qa", "bqa", "qa_pixel", "pixel qa", "quality"),
}


def parse_band_spec(spec: str | None) -> dict[str, int]:
    """Parse ``"green=2,nir=4"`` into ``{"green": 2, "nir": 4}`` (1-based indices).

    Raises:
        ValueError: unknown role, non-integer or non-positive index, or a repeated role.

    Example:
        >>> parse_band_spec("green=2, nir=4")
        {'green': 2, 'nir': 4}
    """
    out: dict[str, int] = {}
    if not spec:
        return out
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        role, sep, idx = part.partition("=")
        role = role.strip().lower()
        if not sep or role not in ROLES:
            raise ValueError(f"expected role=index with role in {', '.join(ROLES)}; got {part!r}")
        try:
            index = int(idx.strip())
        except ValueError:
            raise ValueError(f"band index for {role!r} must be an integer; got {idx.strip()!r}") from None
        if index < 1:
            raise ValueError(f"band index for {role!r} must be >= 1 (1-based); got {index}")
        if role in out:
            raise ValueError(f"role {role!r} given twice")
        out[role] = index
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower().replace("_", " "))


def roles_from_descriptions(descriptions: Sequence[str | None]) -> dict[str, int]:
    """Roles named by band descriptions such as ``"green"`` or ``"Near Infrared"``."""
    out: dict[str, int] = {}
    words = {role: {_norm(w) for w in ws} for role, ws in _DESCRIPTION_WORDS.items()}
    for i, desc in enumerate(descriptions, start=1):
        if not desc:
            continue
        d = _norm(desc)
        for role, names in words.items():
            if d in names and role not in out:
                out[role] = i
    return out


def preset_roles(sensor: str, band_count: int) -> dict[str, int]:
    """The stacked layout of ``sensor`` for a raster with ``band_count`` bands."""
    layouts = _STACKED.get(sensor)
    if layouts is None:
        raise BandError(f"unknown sensor {sensor!r}; known: {', '.join(SENSORS)}")
    layout = layouts.get(band_count, layouts.get(None))
    if layout is None:
        counts = ", ".join(str(c) for c in layouts if c is not None)
        raise BandError(f"sensor {sensor!r} has no layout for {band_count} bands (known: {counts})")
    return {r: i for r, i in layout.items() if i <= band_count}


def resolve_roles(
    band_count: int,
    *,
    descriptions: Sequence[str | None] = (),
    explicit: Mapping[str, int] | None = None,
    sensor: str | None = None,
    required: Sequence[Sequence[str]] = (("green",), ("nir", "swir1")),
    source: str = "raster",
) -> dict[str, int]:
    """Resolve band roles to 1-based indices (explicit, then descriptions, then preset).

    Args:
        band_count: number of bands in the raster.
        descriptions: per-band descriptions (None where absent).
        explicit: user mapping from ``--bands``; wins over everything else.
        sensor: optional sensor preset name.
        required: groups of roles; at least one role of each group must resolve.
        source: name used in error messages (the file).

    Raises:
        BandError: an index is out of range, or a required group resolves to nothing.
    """
    roles: dict[str, int] = {}
    if sensor:
        roles.update(preset_roles(sensor, band_count))
    roles.update(roles_from_descriptions(descriptions))
    for role, idx in (explicit or {}).items():
        if idx > band_count:
            raise BandError(f"{source}: --bands {role}={idx} but the raster has only {band_count} band(s)")
        roles[role] = idx
    missing = [" or ".join(group) for group in required if not any(r in roles for r in group)]
    if missing:
        hint = "pass --bands (e.g. green=2,nir=4) or --sensor"
        raise BandError(
            f"{source}: cannot resolve band role(s) {', '.join(missing)} from {band_count} band(s) "
            f"(descriptions {list(descriptions) or 'none'}); {hint}"
        )
    return roles


def band_file_suffixes(sensor: str) -> dict[str, tuple[str, ...]]:
    """File-name suffixes per role for sensors delivered one file per band."""
    if sensor not in _FILES:
        raise BandError(f"sensor {sensor!r} is not delivered as per-band files in tuban's presets")
    return dict(_FILES[sensor])


def sensor_from_mtl(mtl_text: str) -> str | None:
    """The sensor preset named by a Landsat MTL's ``SPACECRAFT_ID`` (None if unknown)."""
    m = re.search(r'SPACECRAFT_ID\s*=\s*"?([A-Z_0-9]+)', mtl_text)
    if not m:
        return None
    craft = m.group(1)
    if craft.endswith("_8"):
        return "landsat8"
    if craft.endswith("_9"):
        return "landsat9"
    if craft.endswith(("_4", "_5", "_7")):
        return "landsat-tm"
    return None
