"""The text files of a task pack: the offline phone page, KML (WGS84 and GCJ-02) and Ovital TXT.

Every value that came from a file or an officer is HTML/XML-escaped; the page loads nothing
from the network (no scripts, fonts or tiles from elsewhere), so it works offline on a phone.
The page can also save the officer's answers as ``returned.geojson`` for ``tuban tasks import``.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from tuban.imagery.gcj02 import wgs84_to_gcj02
from tuban.pipelines.cases import VERDICTS

__all__ = ["index_html", "tasks_kml", "ovital_txt", "FILL_IN"]

#: What the officer fills in, shown on every card.
FILL_IN = {
    "verdict": "one of: " + ", ".join(VERDICTS),
    "verified_by": "your name",
    "verified_at": "date and time of the visit (ISO 8601, e.g. 2025-05-01T09:30:00+08:00)",
    "note": "what you saw",
    "photos": "photo file names (put the photos in photos/ beside the returned file)",
}

_STYLE = """
body{font-family:sans-serif;margin:0;padding:8px;background:#f4f4f4;color:#222}
.card{background:#fff;border-radius:8px;padding:10px;margin:0 0 12px;box-shadow:0 1px 3px #0003}
.p1{border-left:6px solid #c62828}.p2{border-left:6px solid #ef6c00}.p3{border-left:6px solid #9e9e9e}
img{max-width:48%;height:auto;margin:2px;border:1px solid #ccc}
h1{font-size:1.2em}h2{font-size:1.05em;margin:0 0 6px}dl{margin:4px 0}dt{font-weight:bold}dd{margin:0 0 4px}
a.nav{display:inline-block;padding:8px 12px;background:#1565c0;color:#fff;border-radius:6px;text-decoration:none}
label{display:block;margin-top:6px}select,input,textarea{width:100%;box-sizing:border-box;font-size:1em}
"""

_SCRIPT = """
function saveReturned(){
  var data=JSON.parse(document.getElementById('tasks-data').textContent);
  data.features.forEach(function(f){
    var id=f.properties.task_id;
    ['verdict','verified_by','verified_at','note','photos'].forEach(function(k){
      var el=document.getElementById(k+'-'+id); if(!el||!el.value)return;
      f.properties[k]=(k==='photos')?el.value.split(',').map(function(s){return s.trim();}).filter(Boolean):el.value;
    });
  });
  var blob=new Blob([JSON.stringify(data)],{type:'application/geo+json'});
  var a=document.createElement('a');a.href=URL.createObjectURL(blob);a.download='returned.geojson';a.click();
}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _card(p: dict[str, Any]) -> str:
    tid = _e(p["task_id"])
    imgs = "".join(f'<img src="{_e(path)}" alt="{_e(path)}" loading="lazy">' for path in p.get("evidence") or [])
    geo = f"geo:{p['lat']:.7f},{p['lon']:.7f}"
    options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in VERDICTS)
    fill = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in FILL_IN.items())
    return f"""<div class="card p{int(p['priority'] or 3)}" id="{tid}">
<h2>{_e(p['case_id'])} &middot; priority {_e(p['priority'])} &middot; {_e(p['kind'])}</h2>
<p>Task {tid} &middot; {_e(p.get('grid_name'))} ({_e(p.get('grid_id'))}) &middot; officer {_e(p.get('officer'))}</p>
<p>{_e(f"{p['area_m2']:.0f}")} m² ({_e(f"{p['area_mu']:.2f}")} 亩) &middot; score {_e(f"{p['score']:.2f}")}
&middot; before {_e(p.get('before_date'))} &rarr; after {_e(p.get('after_date'))}</p>
<p>WGS84 lon {p['lon']:.7f}, lat {p['lat']:.7f} <a class="nav" href="{_e(geo)}">Navigate ({_e(geo)})</a></p>
<div>{imgs}</div>
<h3>What to check</h3><p>{_e(p.get('instructions'))}</p>
<h3>What to fill in</h3><dl>{fill}</dl>
<label>verdict<select id="verdict-{tid}"><option value=""></option>{options}</select></label>
<label>verified_by<input id="verified_by-{tid}"></label>
<label>verified_at<input id="verified_at-{tid}" placeholder="2025-05-01T09:30:00+08:00"></label>
<label>note<textarea id="note-{tid}"></textarea></label>
<label>photos<input id="photos-{tid}" placeholder="IMG_0001.jpg, IMG_0002.jpg"></label>
</div>"""


def index_html(pack_id: str, tasks_fc: dict[str, Any], *, created: str, version: str) -> str:
    """The offline phone page of one pack: one card per task, highest priority first."""
    props = [f["properties"] for f in tasks_fc["features"]]
    cards = "\n".join(_card(p) for p in props)
    # JSON inside <script>: escape '<' so no value can close the element.
    data = json.dumps(tasks_fc, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tuban task pack {_e(pack_id)}</title><style>{_STYLE}</style></head>
<body><h1>Task pack {_e(pack_id)} &middot; {len(props)} tasks</h1>
<p>Created {_e(created)} by tuban {_e(version)}. Coordinates are WGS84 (GPS).
The file tasks_gcj02.kml, if present, is shifted (GCJ-02) for Ovital/Amap only.</p>
{cards}
<p><button onclick="saveReturned()">Save answers as returned.geojson</button></p>
<script type="application/json" id="tasks-data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def tasks_kml(pack_id: str, tasks_fc: dict[str, Any], *, gcj02: bool = False) -> str:
    """KML with one placemark (point + polygon) per task; ``gcj02=True`` shifts every coordinate."""
    shift = wgs84_to_gcj02 if gcj02 else (lambda lon, lat: (lon, lat))
    label = "GCJ-02 OFFSET coordinates for Ovital/Amap, NOT WGS84" if gcj02 else "WGS84"
    marks = []
    for f in tasks_fc["features"]:
        p = f["properties"]
        lon, lat = shift(p["lon"], p["lat"])
        polys = []
        geom = f.get("geometry") or {}
        rings_sets = ([geom["coordinates"]] if geom.get("type") == "Polygon"
                      else geom.get("coordinates", []) if geom.get("type") == "MultiPolygon" else [])
        for rings in rings_sets:
            outer = " ".join("{:.7f},{:.7f}".format(*shift(x, y)) for x, y in rings[0])
            polys.append(f"<Polygon><outerBoundaryIs><LinearRing><coordinates>{outer}</coordinates>"
                         "</LinearRing></outerBoundaryIs></Polygon>")
        desc = (f"{p['kind']} | priority {p['priority']} | {p['area_mu']:.2f} mu | "
                f"{p.get('instructions') or ''}")
        marks.append(f"<Placemark><name>{_e(p['task_id'])}</name><description>{_e(desc)}</description>"
                     f"<MultiGeometry><Point><coordinates>{lon:.7f},{lat:.7f}</coordinates></Point>"
                     f"{''.join(polys)}</MultiGeometry></Placemark>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2"><Document>'
            f"<name>{_e(pack_id)} ({label})</name><description>{_e(label)}</description>"
            f"{''.join(marks)}</Document></kml>\n")


def ovital_txt(tasks_fc: dict[str, Any]) -> str:
    """Point list for Ovital import: ``name,lon,lat,description`` in GCJ-02, with a header saying so."""
    lines = ["# tuban task points, GCJ-02 OFFSET coordinates (for Ovital/Amap), NOT WGS84",
             "name,lon_gcj02,lat_gcj02,description"]
    for f in tasks_fc["features"]:
        p = f["properties"]
        lon, lat = wgs84_to_gcj02(p["lon"], p["lat"])
        desc = f"{p['kind']} priority {p['priority']}".replace(",", " ")
        lines.append(f"{str(p['task_id']).replace(',', ' ')},{lon:.7f},{lat:.7f},{desc}")
    return "\n".join(lines) + "\n"
