"""Open one acquisition date as a lazily read, georeferenced source.

A date may be given as

* one GeoTIFF / COG / VRT (any band order, resolved by :mod:`tuban.imagery.bands`);
* several tiles of the same date (a folder, a glob or a list): mosaicked on the fly by an
  in-memory VRT description, never merged into a big file;
* per-band files of one acquisition (Landsat ``*_B3.TIF`` + ``*_MTL.txt``, Sentinel-2
  ``*_B03.jp2``): stacked by a VRT, with the MTL's reflectance gain/offset and date.

The result is a small picklable :class:`DateSource` (a VRT XML string or a file path plus band
roles), so worker processes and dask workers each open their own handle.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioError

from tuban import RasterError
from tuban.imagery.bands import band_file_suffixes, resolve_roles, sensor_from_mtl

__all__ = ["DateSource", "open_date", "date_from_text", "RASTER_SUFFIXES"]

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@dataclass(frozen=True)
class DateSource:
    """One acquisition date, ready to be read block by block.

    Args:
        dataset: what ``rasterio.open`` accepts: a file path or a VRT XML string.
        label: user-facing name of the input (used in error messages).
        roles: band role -> 1-based band index in ``dataset``.
        date: acquisition date ``YYYY-MM-DD`` (or ``YYYY``), None if unknown.
        scales: role -> ``(gain, offset)`` applied to raw values (Landsat MTL), default (1, 0).
        qa_kind: how to decode the ``qa`` band (``landsat-pre``, ``landsat-c1``, ``landsat-c2``).
        crs_wkt: the dataset CRS (WKT); width/height/transform describe its grid.
    """

    dataset: str
    label: str
    roles: dict[str, int]
    date: str | None
    crs_wkt: str
    transform: Affine
    width: int
    height: int
    nodata: float | None
    dtype: str
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)
    qa_kind: str | None = None

    @property
    def is_vrt(self) -> bool:
        return self.dataset.lstrip().startswith("<VRTDataset")


_DATE_PATTERNS = (
    (re.compile(r"(?<!\d)(19|20)(\d{2})[-_:./]?(0[1-9]|1[0-2])[-_:./]?(0[1-9]|[12]\d|3[01])(?!\d)"), "ymd"),
    (re.compile(r"L[CETMO]0?\d(\d{6})((?:19|20)\d{2})(\d{3})"), "doy"),
    (re.compile(r"(?<![\dA-Za-z])((?:19|20)\d{2})(?![\dA-Za-z])"), "y"),
)


def date_from_text(text: str) -> str | None:
    """An ISO date (or year) found in a tag value or file name, else None.

    Example:
        >>> date_from_text("m_4709963_se_14_1_20090818.tif")
        '2009-08-18'
        >>> date_from_text("2020:03:05 10:11:12")
        '2020-03-05'
    """
    for pattern, kind in _DATE_PATTERNS:
        m = pattern.search(text)
        if not m:
            continue
        if kind == "ymd":
            return f"{m.group(1)}{m.group(2)}-{m.group(3)}-{m.group(4)}"
        if kind == "doy":
            year, doy = int(m.group(2)), int(m.group(3))
            if 1 <= doy <= 366:
                d = np.datetime64(f"{year}-01-01") + np.timedelta64(doy - 1, "D")
                return str(d)
            continue
        return m.group(1)
    return None


def _date_from_tags(tags: dict[str, str]) -> str | None:
    for key in ("ACQUISITION_DATE", "DATE_ACQUIRED", "ACQUISITIONDATE", "DATETIME",
                "TIFFTAG_DATETIME", "DATE"):
        for k, v in tags.items():
            if k.upper() == key and v:
                found = date_from_text(str(v))
                if found:
                    return found
    return None


def _expand(inputs: Sequence[str | Path]) -> tuple[list[Path], Path | None]:
    """Files named by ``inputs`` (files, folders, globs) and an MTL file if one is present."""
    files: list[Path] = []
    mtl: Path | None = None
    for item in inputs:
        text = str(item)
        if any(c in text for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text))
            if not matches:
                raise RasterError(text, "glob matches no file")
            files.extend(matches)
            continue
        p = Path(text)
        if p.is_dir():
            children = sorted(c for c in p.iterdir() if c.is_file())
            mtls = [c for c in children if c.name.upper().endswith("MTL.TXT")]
            mtl = mtls[0] if mtls else mtl
            files.extend(c for c in children if c.suffix.lower() in RASTER_SUFFIXES)
        elif p.is_file():
            if p.name.upper().endswith("MTL.TXT"):
                mtl = p
                files.extend(sorted(c for c in p.parent.iterdir() if c.suffix.lower() in RASTER_SUFFIXES))
            else:
                files.append(p)
        else:
            raise RasterError(p, "no such file or folder")
    if not files:
        raise RasterError(", ".join(str(i) for i in inputs), "no raster files found")
    return files, mtl


def _probe(path: Path) -> dict:
    try:
        with rasterio.open(path) as ds:
            info = {
                "count": ds.count, "crs": ds.crs, "transform": ds.transform, "width": ds.width,
                "height": ds.height, "nodata": ds.nodata, "dtype": ds.dtypes[0],
                "descriptions": tuple(ds.descriptions), "tags": ds.tags(),
                "gcps": bool(ds.gcps[0]),
            }
    except (RasterioError, OSError) as exc:
        raise RasterError(path, f"cannot read raster ({str(exc).splitlines()[0][:160]})") from None
    if info["crs"] is None or (info["transform"] == Affine.identity() and not info["gcps"]):
        raise RasterError(path, "not georeferenced (no CRS or geotransform)")
    if info["gcps"] and info["transform"] == Affine.identity():
        raise RasterError(path, "georeferenced by GCPs only; warp it to a grid first (gdalwarp)")
    return info


_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64", "int8": "Int8"}


def _vrt_xml(width: int, height: int, crs_wkt: str, transform: Affine, dtype: str,
             nodata: float | None, bands: list[list[tuple[Path, int, dict]]]) -> str:
    """A VRT description; ``bands[i]`` lists (file, band, probe) sources placed by georeference."""
    gt = ",".join(repr(float(v)) for v in transform.to_gdal())
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"<SRS>{escape(crs_wkt)}</SRS><GeoTransform>{gt}</GeoTransform>"]
    for i, sources in enumerate(bands, start=1):
        parts.append(f'<VRTRasterBand dataType="{_GDAL_TYPES.get(dtype, "Float64")}" band="{i}">')
        if nodata is not None:
            parts.append(f"<NoDataValue>{nodata!r}</NoDataValue>")
        for path, band, info in sources:
            t: Affine = info["transform"]
            xoff = (t.c - transform.c) / transform.a
            yoff = (t.f - transform.f) / transform.e
            xsize = info["width"] * t.a / transform.a
            ysize = info["height"] * t.e / transform.e
            tag = "ComplexSource" if nodata is not None else "SimpleSource"
            parts.append(
                f"<{tag}><SourceFilename relativeToVRT=\"0\">{escape(str(path.resolve()))}</SourceFilename>"
                f"<SourceBand>{band}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{info["width"]}" ySize="{info["height"]}"/>'
                f'<DstRect xOff="{xoff!r}" yOff="{yoff!r}" xSize="{xsize!r}" ySize="{ysize!r}"/>'
                + (f"<NODATA>{nodata!r}</NODATA>" if nodata is not None else "")
                + f"</{tag}>"
            )
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)


def _mosaic(files: list[Path], infos: list[dict]) -> tuple[str, dict]:
    """VRT XML mosaicking same-CRS, same-band-count tiles onto the finest tile resolution."""
    first = infos[0]
    for path, info in zip(files[1:], infos[1:], strict=True):
        if info["crs"] != first["crs"]:
            raise RasterError(path, f"tile CRS {info['crs']} differs from {files[0].name} ({first['crs']})")
        if info["count"] != first["count"]:
            raise RasterError(path, f"tile has {info['count']} bands, {files[0].name} has {first['count']}")
        if info["transform"].b or info["transform"].d:
            raise RasterError(path, "rotated tiles cannot be mosaicked")
    res_x = min(abs(i["transform"].a) for i in infos)
    res_y = min(abs(i["transform"].e) for i in infos)
    left = min(i["transform"].c for i in infos)
    top = max(i["transform"].f for i in infos)
    right = max(i["transform"].c + i["width"] * i["transform"].a for i in infos)
    bottom = min(i["transform"].f + i["height"] * i["transform"].e for i in infos)
    width = int(round((right - left) / res_x))
    height = int(round((top - bottom) / res_y))
    transform = Affine(res_x, 0, left, 0, -res_y, top)
    nodata = first["nodata"]
    bands = [[(f, b, i) for f, i in zip(files, infos, strict=True)] for b in range(1, first["count"] + 1)]
    xml = _vrt_xml(width, height, first["crs"].to_wkt(), transform, first["dtype"], nodata, bands)
    return xml, {**first, "transform": transform, "width": width, "height": height}


def _mtl_values(mtl_text: str) -> dict[str, str]:
    return {k: v.strip().strip('"') for k, v in re.findall(r"^\s*([A-Z0-9_]+)\s*=\s*(.+?)\s*$", mtl_text, re.M)}


def _per_band(files: list[Path], mtl: Path | None, sensor: str | None, label: str) -> DateSource | None:
    """Stack per-band files of one acquisition, or None if ``files`` are not per-band files."""
    mtl_text = mtl.read_text(errors="replace") if mtl else ""
    sensor = sensor or (sensor_from_mtl(mtl_text) if mtl_text else None)
    candidates = [sensor] if sensor else ["landsat8", "sentinel2"]
    for name in candidates:
        try:
            suffixes = band_file_suffixes(name)
        except Exception:
            return None
        chosen: dict[str, Path] = {}
        for role, sfx in suffixes.items():
            for s in sfx:
                hits = [f for f in files if f.stem.upper().endswith("_" + s.upper())]
                if hits:
                    chosen[role] = hits[0]
                    break
        if "green" in chosen and ("nir" in chosen or "swir1" in chosen):
            break
    else:
        return None
    order = [r for r in ("blue", "green", "red", "nir", "swir1", "qa") if r in chosen]
    infos = {r: _probe(chosen[r]) for r in order}
    ref = infos[order[0]]
    for r in order:
        i = infos[r]
        if i["crs"] != ref["crs"] or i["width"] != ref["width"] or i["transform"] != ref["transform"]:
            raise RasterError(chosen[r], f"per-band file grid differs from {chosen[order[0]].name}")
    dtype = "uint16" if all(infos[r]["dtype"] == "uint16" for r in order) else "float64"
    bands = [[(chosen[r], 1, infos[r])] for r in order]
    # Landsat L1 DN of 0 is fill; keep it as nodata for every band.
    nodata = ref["nodata"] if ref["nodata"] is not None else (0.0 if mtl_text else None)
    xml = _vrt_xml(ref["width"], ref["height"], ref["crs"].to_wkt(), ref["transform"], dtype, nodata, bands)
    values = _mtl_values(mtl_text) if mtl_text else {}
    scales: dict[str, tuple[float, float]] = {}
    for r in order:
        m = re.search(r"_B(\d+)$", chosen[r].stem, re.I)
        if m and f"REFLECTANCE_MULT_BAND_{m.group(1)}" in values:
            scales[r] = (float(values[f"REFLECTANCE_MULT_BAND_{m.group(1)}"]),
                         float(values.get(f"REFLECTANCE_ADD_BAND_{m.group(1)}", 0.0)))
    date = date_from_text(values.get("DATE_ACQUIRED", "")) or _date_from_tags(ref["tags"]) or \
        date_from_text(" ".join(str(f.name) for f in files))
    qa_kind = None
    if "qa" in chosen:
        coll = values.get("COLLECTION_NUMBER", "")
        qa_kind = "landsat-c2" if coll.startswith("02") or "QA_PIXEL" in chosen["qa"].name.upper() \
            else "landsat-c1" if coll.startswith("01") else "landsat-pre"
    return DateSource(
        dataset=xml, label=label, roles={r: k for k, r in enumerate(order, start=1)}, date=date,
        crs_wkt=ref["crs"].to_wkt(), transform=ref["transform"], width=ref["width"],
        height=ref["height"], nodata=nodata, dtype=dtype, scales=scales, qa_kind=qa_kind,
    )


def open_date(
    inputs: Sequence[str | Path],
    *,
    bands: dict[str, int] | None = None,
    sensor: str | None = None,
) -> DateSource:
    """Describe one acquisition date given as a file, tiles, or per-band files.

    Args:
        inputs: one or more files, folders or glob patterns forming one date.
        bands: explicit role -> 1-based band index (``--bands``).
        sensor: sensor preset name (``--sensor``).

    Raises:
        RasterError: unreadable, non-georeferenced, inconsistent tiles, or no rasters found.
        BandError: a required band role cannot be resolved.
    """
    label = ", ".join(str(i) for i in inputs)
    files, mtl = _expand(inputs)
    if len(files) > 1 or mtl is not None:
        stacked = _per_band(files, mtl, sensor, label)
        if stacked is not None:
            if bands:
                roles = dict(stacked.roles)
                roles.update(bands)
                stacked = replace(stacked, roles=roles)
            return stacked
    infos = [_probe(f) for f in files]
    if len(files) == 1:
        dataset, info = str(files[0]), infos[0]
    else:
        dataset, info = _mosaic(files, infos)
    if info["transform"].b or info["transform"].d:
        raise RasterError(files[0], "rotated geotransforms are not supported; warp to a north-up grid")
    roles = resolve_roles(info["count"], descriptions=info["descriptions"], explicit=bands,
                          sensor=sensor, source=str(files[0]))
    date = _date_from_tags(info["tags"]) or date_from_text(" ".join(f.name for f in files)) \
        or date_from_text(str(files[0].parent.name))
    qa_kind = "landsat-c2" if "qa" in roles else None
    return DateSource(
        dataset=dataset, label=label, roles=roles, date=date, crs_wkt=info["crs"].to_wkt(),
        transform=info["transform"], width=info["width"], height=info["height"],
        nodata=info["nodata"], dtype=info["dtype"], qa_kind=qa_kind,
    )
