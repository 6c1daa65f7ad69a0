"""Mission file writers: KML (Ovital, Google Earth), Litchi CSV, QGroundControl .plan, DJI WPML KMZ.

All four render the same :class:`~tuban.pipelines.mission.MissionPlan`; field names and enums
follow FLIGHT.md section 3. Coordinates are WGS84; every format that has a choice writes
``lon,lat`` except Litchi CSV, whose columns are ``latitude,longitude`` by definition.
Heights are relative to the take-off point everywhere.

Several missions: KML holds them all as one ``Folder`` each in one file; the other formats
write one file per mission, named like the mission: ``<stem>_1<suffix>``, ``<stem>_2<suffix>``,
... from one launch site, ``<stem>_site1_1<suffix>``, ``<stem>_site2<suffix>``, ... from several
(one mission: exactly the path asked for). :func:`write_plan` writes all of them atomically or none.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

from tuban.imagery.vector_io import check_output, write_bytes_atomic, write_text_atomic
from tuban.pipelines.mission import Mission, MissionPlan, Waypoint

__all__ = [
    "MissionFormat",
    "WpmlDrone",
    "plan_to_kml",
    "mission_to_litchi_csv",
    "mission_to_qgc_plan",
    "mission_to_wpml_kmz",
    "output_paths",
    "write_plan",
    "KML_NS",
    "WPML_NS",
]

KML_NS = "http://www.opengis.net/kml/2.2"
WPML_NS = "http://www.dji.com/wpmz/1.0.2"


class MissionFormat(str, enum.Enum):
    kml = "kml"
    litchi = "litchi"
    qgc = "qgc"
    wpml = "wpml"


_SUFFIX = {MissionFormat.kml: ".kml", MissionFormat.litchi: ".csv", MissionFormat.qgc: ".plan",
           MissionFormat.wpml: ".kmz"}


class WpmlDrone(enum.Enum):
    """DJI enterprise aircraft for WPML: (droneEnumValue, droneSubEnumValue, payloadEnumValue)."""

    m30 = (67, 0, 52)
    m30t = (67, 1, 53)


def _fmt(v: float, nd: int = 7) -> str:
    return f"{v:.{nd}f}".rstrip("0").rstrip(".") if nd else f"{v:.0f}"


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def _xml(root: ET.Element) -> str:
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- KML (Ovital / Google Earth) ----------------------------------------------------------------


def plan_to_kml(plan: MissionPlan, *, title: str = "tuban inspection") -> str:
    """One KML document, one Folder per mission: take-off, waypoints and the closed route line.

    Waypoint heights are ``relativeToGround`` (take-off height on flat sites).
    """
    ET.register_namespace("", KML_NS)
    k = f"{{{KML_NS}}}"
    root = ET.Element(f"{k}kml")
    doc = _sub(root, f"{k}Document")
    _sub(doc, f"{k}name", title)
    for m in plan.missions:
        folder = _sub(doc, f"{k}Folder")
        _sub(folder, f"{k}name", m.name)
        _sub(folder, f"{k}description", f"{len(m.waypoints)} waypoints, {m.distance_m:.0f} m, "
             f"about {m.flight_s / 60:.1f} min incl. reserve, {m.altitude_m:g} m above take-off")
        pm = _sub(folder, f"{k}Placemark")
        _sub(pm, f"{k}name", f"{m.name} take-off")
        _sub(_sub(pm, f"{k}Point"), f"{k}coordinates", f"{_fmt(m.takeoff[0])},{_fmt(m.takeoff[1])},0")
        for i, w in enumerate(m.waypoints):
            pm = _sub(folder, f"{k}Placemark")
            _sub(pm, f"{k}name", w.name)
            _sub(pm, f"{k}description", f"waypoint {i + 1}: gimbal {w.gimbal_pitch_deg:g} deg, "
                 f"hover {w.hover_s:g} s{', photo' if w.take_photo else ''}")
            ext = _sub(pm, f"{k}ExtendedData")
            for key, val in (("index", i), ("altitude_m", w.altitude_m),
                             ("gimbal_pitch_deg", w.gimbal_pitch_deg), ("hover_s", w.hover_s)):
                data = _sub(ext, f"{k}Data")
                data.set("name", key)
                _sub(data, f"{k}value", val)
            pt = _sub(pm, f"{k}Point")
            _sub(pt, f"{k}altitudeMode", "relativeToGround")
            _sub(pt, f"{k}coordinates", f"{_fmt(w.lon)},{_fmt(w.lat)},{_fmt(w.altitude_m, 2)}")
        line = _sub(folder, f"{k}Placemark")
        _sub(line, f"{k}name", f"{m.name} route")
        ls = _sub(line, f"{k}LineString")
        _sub(ls, f"{k}altitudeMode", "relativeToGround")
        pts = [m.takeoff, *[(w.lon, w.lat) for w in m.waypoints], m.takeoff]
        _sub(ls, f"{k}coordinates", " ".join(f"{_fmt(lo)},{_fmt(la)},{_fmt(m.altitude_m, 2)}"
                                              for lo, la in pts))
    return _xml(root)


# --- Litchi CSV -----------------------------------------------------------------------------------

LITCHI_HEADER = (
    ["latitude", "longitude", "altitude(m)", "heading(deg)", "curvesize(m)", "rotationdir",
     "gimbalmode", "gimbalpitchangle"]
    + [c for i in range(1, 16) for c in (f"actiontype{i}", f"actionparam{i}")]
    + ["altitudemode", "speed(m/s)", "poi_latitude", "poi_longitude", "poi_altitude(m)",
       "poi_altitudemode", "photo_timeinterval", "photo_distinterval"]
)


def mission_to_litchi_csv(mission: Mission) -> str:
    """Litchi waypoint CSV: stay ``hover_s`` (action 0, ms) then take a photo (action 1).

    Gimbal mode 2 (interpolate) with the waypoint pitch; altitude mode 0 (relative to take-off).
    Litchi keeps no global settings: set "finish action: RTH" in the app after import.
    """
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(LITCHI_HEADER)
    for w in mission.waypoints:
        actions: list[tuple[int, float]] = []
        if w.hover_s > 0:
            actions.append((0, round(w.hover_s * 1000)))
        if w.take_photo:
            actions.append((1, 0))
        actions += [(-1, 0)] * (15 - len(actions))
        row: list[object] = [_fmt(w.lat), _fmt(w.lon), _fmt(w.altitude_m, 2), 0, 0, 0, 2,
                             _fmt(w.gimbal_pitch_deg, 1)]
        row += [v for a in actions for v in a]
        row += [0, _fmt(mission.speed_m_s, 2), 0, 0, 0, 0, -1, -1]
        wr.writerow(row)
    return buf.getvalue()


# --- QGroundControl .plan -------------------------------------------------------------------------

MAV_CMD_NAV_WAYPOINT = 16
MAV_CMD_NAV_RETURN_TO_LAUNCH = 20
MAV_CMD_NAV_TAKEOFF = 22
MAV_CMD_DO_MOUNT_CONTROL = 205
MAV_CMD_IMAGE_START_CAPTURE = 2000
MAV_FRAME_MISSION = 2
MAV_FRAME_GLOBAL_RELATIVE_ALT = 3


def mission_to_qgc_plan(mission: Mission, *, firmware_type: int = 12, vehicle_type: int = 2) -> str:
    """QGroundControl plan JSON: take-off, per waypoint gimbal/hold/photo, return to launch.

    Args:
        firmware_type: 12 = PX4, 3 = ArduPilot.
        vehicle_type: 2 = quadrotor.
    """
    items: list[dict] = []

    def add(command: int, frame: int, params: list, alt: float | None = None) -> None:
        item = {"type": "SimpleItem", "autoContinue": True, "command": command,
                "doJumpId": len(items) + 1, "frame": frame, "params": params}
        if alt is not None:
            item.update({"Altitude": alt, "AltitudeMode": 1, "AMSLAltAboveTerrain": None})
        items.append(item)

    lon0, lat0 = mission.takeoff
    add(MAV_CMD_NAV_TAKEOFF, MAV_FRAME_GLOBAL_RELATIVE_ALT,
        [0, 0, 0, None, lat0, lon0, mission.altitude_m], mission.altitude_m)
    pitch = None
    for w in mission.waypoints:
        if w.gimbal_pitch_deg != pitch:  # mount control before the leg, so it is set on arrival
            pitch = w.gimbal_pitch_deg
            add(MAV_CMD_DO_MOUNT_CONTROL, MAV_FRAME_MISSION, [pitch, 0, 0, 0, 0, 0, 2])
        add(MAV_CMD_NAV_WAYPOINT, MAV_FRAME_GLOBAL_RELATIVE_ALT,
            [w.hover_s, 2, 0, None, w.lat, w.lon, w.altitude_m], w.altitude_m)
        if w.take_photo:
            add(MAV_CMD_IMAGE_START_CAPTURE, MAV_FRAME_MISSION, [0, 0, 1, 0, 0, 0, 0])
    add(MAV_CMD_NAV_RETURN_TO_LAUNCH, MAV_FRAME_MISSION, [0, 0, 0, 0, 0, 0, 0])
    doc = {
        "fileType": "Plan", "version": 1, "groundStation": "QGroundControl",
        "mission": {"version": 2, "firmwareType": firmware_type, "vehicleType": vehicle_type,
                    "cruiseSpeed": mission.speed_m_s, "hoverSpeed": min(mission.speed_m_s, 5.0),
                    "globalPlanAltitudeMode": 1, "plannedHomePosition": [lat0, lon0, 0],
                    "items": items},
        "geoFence": {"circles": [], "polygons": [], "version": 2},
        "rallyPoints": {"points": [], "version": 2},
    }
    return json.dumps(doc, indent=1) + "\n"


# --- DJI WPML KMZ ----------------------------------------------------------------------------------


def _mission_config(doc: ET.Element, w: str, m: Mission, drone: WpmlDrone, *, template: bool) -> None:
    cfg = _sub(doc, f"{w}missionConfig")
    _sub(cfg, f"{w}flyToWaylineMode", "safely")
    _sub(cfg, f"{w}finishAction", "goHome")
    _sub(cfg, f"{w}exitOnRCLost", "executeLostAction")
    _sub(cfg, f"{w}executeRCLostAction", "goBack")
    _sub(cfg, f"{w}takeOffSecurityHeight", _fmt(min(max(m.altitude_m / 2, 20.0), 1500.0), 1))
    if template:  # lat,lon,height (DJI order); reference only, the real take-off point prevails
        _sub(cfg, f"{w}takeOffRefPoint", f"{_fmt(m.takeoff[1])},{_fmt(m.takeoff[0])},0")
        _sub(cfg, f"{w}takeOffRefPointAGLHeight", 0)
    _sub(cfg, f"{w}globalTransitionalSpeed", _fmt(min(m.speed_m_s, 15.0), 2))
    di = _sub(cfg, f"{w}droneInfo")
    _sub(di, f"{w}droneEnumValue", drone.value[0])
    _sub(di, f"{w}droneSubEnumValue", drone.value[1])
    pi = _sub(cfg, f"{w}payloadInfo")
    _sub(pi, f"{w}payloadEnumValue", drone.value[2])
    _sub(pi, f"{w}payloadPositionIndex", 0)


def _action_group(pm: ET.Element, w: str, group_id: int, index: int, wp: Waypoint) -> None:
    ag = _sub(pm, f"{w}actionGroup")
    _sub(ag, f"{w}actionGroupId", group_id)
    _sub(ag, f"{w}actionGroupStartIndex", index)
    _sub(ag, f"{w}actionGroupEndIndex", index)
    _sub(ag, f"{w}actionGroupMode", "sequence")
    _sub(_sub(ag, f"{w}actionTrigger"), f"{w}actionTriggerType", "reachPoint")
    actions: list[tuple[str, list[tuple[str, object]]]] = [("gimbalRotate", [
        ("gimbalRotateMode", "absoluteAngle"), ("gimbalPitchRotateEnable", 1),
        ("gimbalPitchRotateAngle", _fmt(wp.gimbal_pitch_deg, 1)), ("gimbalRollRotateEnable", 0),
        ("gimbalRollRotateAngle", 0), ("gimbalYawRotateEnable", 0), ("gimbalYawRotateAngle", 0),
        ("gimbalRotateTimeEnable", 0), ("gimbalRotateTime", 0), ("payloadPositionIndex", 0)])]
    if wp.hover_s > 0:
        actions.append(("hover", [("hoverTime", _fmt(wp.hover_s, 1))]))
    if wp.take_photo:
        suffix = "".join(c if c.isalnum() or c in "-_" else "_" for c in wp.name)[:32]
        actions.append(("takePhoto", [("fileSuffix", suffix), ("payloadPositionIndex", 0)]))
    for aid, (func, params) in enumerate(actions):
        act = _sub(ag, f"{w}action")
        _sub(act, f"{w}actionId", aid)
        _sub(act, f"{w}actionActuatorFunc", func)
        par = _sub(act, f"{w}actionActuatorFuncParam")
        for key, val in params:
            _sub(par, f"{w}{key}", val)


def _wpml_doc(m: Mission, drone: WpmlDrone, *, template: bool) -> str:
    ET.register_namespace("", KML_NS)
    ET.register_namespace("wpml", WPML_NS)
    k, w = f"{{{KML_NS}}}", f"{{{WPML_NS}}}"
    root = ET.Element(f"{k}kml")
    doc = _sub(root, f"{k}Document")
    if template:
        now_ms = int(time.time() * 1000)
        _sub(doc, f"{w}author", "tuban")
        _sub(doc, f"{w}createTime", now_ms)
        _sub(doc, f"{w}updateTime", now_ms)
    _mission_config(doc, w, m, drone, template=template)
    folder = _sub(doc, f"{k}Folder")
    if template:
        _sub(folder, f"{w}templateType", "waypoint")
    _sub(folder, f"{w}templateId", 0)
    if template:
        csp = _sub(folder, f"{w}waylineCoordinateSysParam")
        _sub(csp, f"{w}coordinateMode", "WGS84")
        _sub(csp, f"{w}heightMode", "relativeToStartPoint")
        _sub(csp, f"{w}globalShootHeight", _fmt(m.altitude_m, 2))
        _sub(csp, f"{w}positioningType", "GPS")
        _sub(folder, f"{w}autoFlightSpeed", _fmt(m.speed_m_s, 2))
        _sub(folder, f"{w}globalHeight", _fmt(m.altitude_m, 2))
        _sub(folder, f"{w}gimbalPitchMode", "usePointSetting")
        gh = _sub(folder, f"{w}globalWaypointHeadingParam")
        _sub(gh, f"{w}waypointHeadingMode", "followWayline")
        _sub(folder, f"{w}globalWaypointTurnMode", "toPointAndStopWithDiscontinuityCurvature")
        _sub(folder, f"{w}globalUseStraightLine", 1)
    else:
        _sub(folder, f"{w}executeHeightMode", "relativeToStartPoint")
        _sub(folder, f"{w}waylineId", 0)
        _sub(folder, f"{w}distance", _fmt(m.distance_m, 1))
        _sub(folder, f"{w}duration", _fmt(m.flight_s, 0))
        _sub(folder, f"{w}autoFlightSpeed", _fmt(m.speed_m_s, 2))
    for i, wp in enumerate(m.waypoints):
        pm = _sub(folder, f"{k}Placemark")
        _sub(_sub(pm, f"{k}Point"), f"{k}coordinates", f"{_fmt(wp.lon)},{_fmt(wp.lat)}")
        _sub(pm, f"{w}index", i)
        if template:  # never executeHeight in the template (FLIGHT.md 3.1)
            # the global height (relative to take-off) rules; the ellipsoid height of a relative
            # mission is unknown before take-off, so both per-point fields repeat the relative one
            _sub(pm, f"{w}height", _fmt(wp.altitude_m, 2))
            _sub(pm, f"{w}ellipsoidHeight", _fmt(wp.altitude_m, 2))
            same = wp.altitude_m == m.altitude_m
            for flag in ("useGlobalHeight", "useGlobalSpeed", "useGlobalHeadingParam",
                         "useGlobalTurnParam"):
                _sub(pm, f"{w}{flag}", int(same) if flag == "useGlobalHeight" else 1)
            _sub(pm, f"{w}gimbalPitchAngle", _fmt(wp.gimbal_pitch_deg, 1))
        else:
            _sub(pm, f"{w}executeHeight", _fmt(wp.altitude_m, 2))
            _sub(pm, f"{w}waypointSpeed", _fmt(m.speed_m_s, 2))
            hp = _sub(pm, f"{w}waypointHeadingParam")
            _sub(hp, f"{w}waypointHeadingMode", "followWayline")
            tp = _sub(pm, f"{w}waypointTurnParam")
            _sub(tp, f"{w}waypointTurnMode", "toPointAndStopWithDiscontinuityCurvature")
            _sub(tp, f"{w}waypointTurnDampingDist", 0)
        _action_group(pm, w, i, i, wp)
    return _xml(root)


def mission_to_wpml_kmz(mission: Mission, *, drone: WpmlDrone = WpmlDrone.m30t) -> bytes:
    """DJI WPML KMZ bytes: ``wpmz/template.kml`` + ``wpmz/waylines.wpml`` (namespace 1.0.2).

    Heights ``relativeToStartPoint``; at each waypoint gimbalRotate (absolute pitch), hover,
    takePhoto; finish action goHome. Only DJI enterprise aircraft fly WPML.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("wpmz/template.kml", _wpml_doc(mission, drone, template=True))
        zf.writestr("wpmz/waylines.wpml", _wpml_doc(mission, drone, template=False))
    return buf.getvalue()


# --- writing ----------------------------------------------------------------------------------------


def output_paths(plan: MissionPlan, fmt: MissionFormat, out: str | Path) -> list[Path]:
    """The files :func:`write_plan` will write for ``plan`` (see module doc for the naming)."""
    out = Path(out)
    if fmt is MissionFormat.kml or len(plan.missions) == 1:
        return [out]
    suffix = out.suffix or _SUFFIX[fmt]
    tails = [m.name[len(plan.name):] if m.name.startswith(plan.name + "_") else None for m in plan.missions]
    if any(t is None for t in tails) or len(set(tails)) != len(tails):
        tails = [f"_{i + 1}" for i in range(len(plan.missions))]
    return [out.with_name(f"{out.stem}{t}{suffix}") for t in tails]


def write_plan(plan: MissionPlan, fmt: MissionFormat, out: str | Path, *,
               overwrite: bool = False) -> list[Path]:
    """Write every mission of ``plan`` in ``fmt``; all files or none (each one atomic).

    Raises:
        OutputExistsError: one of the outputs exists and ``overwrite`` is False.
    """
    paths = output_paths(plan, fmt, out)
    for p in paths:
        check_output(p, overwrite)
    if fmt is MissionFormat.kml:
        return [write_text_atomic(paths[0], plan_to_kml(plan), overwrite=overwrite)]
    written: list[Path] = []
    try:
        for p, m in zip(paths, plan.missions, strict=True):
            if fmt is MissionFormat.litchi:
                write_text_atomic(p, mission_to_litchi_csv(m), overwrite=overwrite)
            elif fmt is MissionFormat.qgc:
                write_text_atomic(p, mission_to_qgc_plan(m), overwrite=overwrite)
            else:
                write_bytes_atomic(p, mission_to_wpml_kmz(m), overwrite=overwrite)
            written.append(p)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written
