"""Airdata / DJI OSD CSV, GPX, PX4 ULog, photo EXIF/XMP, exiftool CSV and the sniffing dispatcher."""

from __future__ import annotations

import datetime as dt
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuban import TelemetryError
from tuban.imagery.photo_meta import parse_dms, read_exiftool_csv, read_photo_meta
from tuban.imagery.telemetry import read_track, sniff_format
from tuban.imagery.ulog import quaternion_to_ypr_deg, read_ulog, track_from_ulog

AIRDATA = (
    "time(millisecond),datetime(utc),latitude,longitude,height_above_takeoff(feet),"
    "altitude_above_seaLevel(feet),speed(mph),satellites, xSpeed(mph), compass_heading(degrees),"
    " pitch(degrees), roll(degrees),gimbal_heading(degrees),gimbal_pitch(degrees),gimbal_roll(degrees),"
    "isVideo,flycStateRaw,flycState\n"
    "0,2024-05-01 02:00:00,0,0,0,100,0,0,0,0,0,0,0,0,0,0,6,Motors_Started\n"
    "100,2024-05-01 02:00:00,0,0,0,100,0,3,0,0,0,0,0,0,0,0,6,Motors_Started\n"
    "200,2024-05-01 02:00:00,30.5,114.3,0,100,0,12,0,350,1,2,350,-10,0,0,6,P-GPS\n"
    "300,2024-05-01 02:00:01,30.5001,114.3001,100,200,10,13,0,10,1,2,10,-90,0,1,6,P-GPS\n"
)


def test_airdata_units_leading_spaces_and_gps_lock(tmp_path):
    p = tmp_path / "flight.csv"
    p.write_text(AIRDATA)
    track = read_track(p)
    t = track.table
    assert track.format == "airdata-csv"
    assert len(t) == 2  # two rows before the GPS lock dropped
    assert any("before the first GPS lock" in w for w in track.warnings)
    assert t.time_s.tolist() == pytest.approx([0.0, 0.1])
    assert t.rel_alt_m.iloc[1] == pytest.approx(30.48)  # 100 ft
    assert t.abs_alt_m.iloc[1] == pytest.approx(60.96)
    assert t.speed_m_s.iloc[1] == pytest.approx(4.4704)  # 10 mph
    assert t.yaw_deg.tolist() == pytest.approx([-10.0, 10.0])  # compass 350 -> -10
    assert t.pitch_deg.iloc[0] == 1 and t.roll_deg.iloc[0] == 2
    assert t.gimbal_pitch_deg.tolist() == [-10, -90]
    assert t.flight_mode.tolist() == ["P-GPS", "P-GPS"]
    assert track.start_utc == dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.timezone.utc)


def test_airdata_metric_units(tmp_path):
    p = tmp_path / "metric.csv"
    p.write_text("time(millisecond),latitude,longitude,height_above_takeoff(meters),speed(m/s)\n"
                 "0,30.5,114.3,50,3\n1000,30.5,114.3001,55,4\n")
    t = read_track(p).table
    assert t.rel_alt_m.tolist() == [50, 55] and t.speed_m_s.tolist() == [3, 4]


def test_osd_csv_with_nul_bytes_and_latin1(tmp_path):
    header = ("CUSTOM.date [local],CUSTOM.updateTime [local],OSD.flyTime [s],OSD.latitude,OSD.longitude,"
              "OSD.height [ft],OSD.altitude [ft],OSD.hSpeed [MPH],OSD.yaw,OSD.pitch,OSD.roll,GIMBAL.yaw,"
              "GIMBAL.pitch,GIMBAL.roll,OSD.flycState,APP.tip\n")
    rows = ("2024/05/01,2024/05/01 10:00:00.000,0.0,0,0,0,0,0,0,0,0,0,0,0,P-GPS,\n"
            "2024/05/01,2024/05/01 10:00:00.100,0.1,30.5,114.3,10,110,0,-170,1,2,-170,-45,0,P-GPS,caf\xe9\n"
            "2024/05/01,2024/05/01 10:00:00.200,0.2,30.5001,114.3,20,120,10,-160,1,2,-160,-90,0,GPS_Atti,\n")
    p = tmp_path / "DJIFlightRecord.csv"
    p.write_bytes(b"\x00" + (header + rows).encode("latin-1").replace(b"\n", b"\x00\n"))
    assert sniff_format(p) == "osd"
    track = read_track(p)
    t = track.table
    assert len(t) == 2 and track.format == "dji-osd-csv"
    assert t.time_s.tolist() == pytest.approx([0.0, 0.1])
    assert t.rel_alt_m.tolist() == pytest.approx([3.048, 6.096])
    assert t.speed_m_s.iloc[1] == pytest.approx(4.4704)
    assert t.gimbal_pitch_deg.tolist() == [-45, -90]
    assert t.flight_mode.tolist() == ["P-GPS", "GPS_Atti"]


def test_gpx_track(tmp_path):
    p = tmp_path / "route.data"
    p.write_text(
        '<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
        '<trkpt lat="30.5" lon="114.3"><ele>21.5</ele><time>2024-05-01T02:00:00Z</time></trkpt>'
        '<trkpt lat="30.5002" lon="114.3001"><ele>25</ele><time>2024-05-01T02:00:05Z</time></trkpt>'
        "</trkseg></trk></gpx>")
    track = read_track(p)  # sniffed from content, not suffix
    assert track.format == "gpx"
    assert track.table.lon.tolist() == [114.3, 114.3001] and track.table.lat.tolist() == [30.5, 30.5002]
    assert track.table.time_s.tolist() == [0.0, 5.0]
    assert track.table.abs_alt_m.tolist() == [21.5, 25]
    assert track.start_utc == dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.timezone.utc)


def test_malformed_gpx_and_unknown_format(tmp_path):
    bad = tmp_path / "bad.gpx"
    bad.write_text("<gpx><trk><trkpt lat='1'")
    with pytest.raises(TelemetryError, match="malformed GPX"):
        read_track(bad)
    other = tmp_path / "notes.txt"
    other.write_text("just some notes\n")
    with pytest.raises(TelemetryError, match="unknown telemetry format"):
        read_track(other)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(TelemetryError, match="empty"):
        read_track(empty)


def test_srt_sniffed_without_suffix(real_data, tmp_path):
    p = tmp_path / "telemetry.txt"
    shutil.copy(real_data / "dji_srt" / "p4_rtk.SRT", p)
    assert sniff_format(p) == "srt"
    assert len(read_track(p)) == 55


# PX4 ULog ------------------------------------------------------------------------------------

ULOGS = {
    # name: (records, first lon, first lat, flight modes)
    "sample_log_small.ulg": (32, 10.4082151, 63.4170622, {"MANUAL"}),
    "sample_logging_tagged_and_default_params.ulg": (44, 8.5455938, 47.3977421, {"MANUAL"}),
    "sample_px4_events.ulg": (109, 8.5455939, 47.3977418, {"AUTO_TAKEOFF", "AUTO_LOITER", "AUTO_RTL"}),
}


@pytest.mark.parametrize("name", sorted(ULOGS))
def test_real_ulogs_load(real_data, name):
    n, lon, lat, modes = ULOGS[name]
    track = read_track(real_data / "px4_ulog" / name)
    t = track.table
    assert len(t) == n
    assert t.lon.iloc[0] == pytest.approx(lon, abs=1e-5) and t.lat.iloc[0] == pytest.approx(lat, abs=1e-5)
    assert set(t.flight_mode) == modes
    assert t.yaw_deg.notna().all() and t.yaw_deg.between(-180, 180).all()
    assert t.rel_alt_m.notna().all()


def test_ulog_fix_filter_takeoff_and_clock(real_data):
    tagged = read_ulog(real_data / "px4_ulog" / "sample_logging_tagged_and_default_params.ulg")
    assert any("without a 2-D/3-D fix" in w for w in tagged.warnings)
    assert tagged.start_utc is not None and tagged.start_utc.year == 2022
    events = read_ulog(real_data / "px4_ulog" / "sample_px4_events.ulg").table
    assert events.rel_alt_m.max() > 1.5  # SITL take-off
    assert events.time_s.iloc[-1] > 20
    # fused position has no clock of its own: UTC borrowed from the GNSS topic (log 14_49_10.ulg)
    assert read_ulog(real_data / "px4_ulog" / "sample_px4_events.ulg").start_utc.strftime("%Y-%m-%d %H:%M") == "2024-03-18 14:49"


def test_ulog_without_position_is_an_error():
    fake = SimpleNamespace(data_list=[SimpleNamespace(name="vehicle_attitude", multi_id=0,
                                                      data={"timestamp": np.arange(5)})])
    with pytest.raises(TelemetryError, match="no global or GNSS position"):
        track_from_ulog(fake, source="bench.ulg")


def test_quaternion_yaw_pitch_roll():
    half = np.radians(30) / 2
    y, p, r = quaternion_to_ypr_deg(np.array([[np.cos(half), 0, np.sin(half), 0]]))  # pitch 30
    assert (y[0], p[0], r[0]) == pytest.approx((0, 30, 0), abs=1e-9)


# Photos ----------------------------------------------------------------------------------------


def test_dji_photo_exif_and_xmp(real_data):
    meta = read_photo_meta(real_data / "deepforest" / "AWPE Pigeon Lake 2020 DJI_0005.JPG")
    assert meta["lat"] == pytest.approx(45.0 + 2 / 60 + 16.77 / 3600)
    assert meta["lon"] == pytest.approx(-(94 + 20 / 60 + 55.53 / 3600))  # W
    assert meta["rel_alt_m"] == pytest.approx(61.1) and meta["abs_alt_m"] == pytest.approx(422.55)
    assert meta["gimbal_pitch_deg"] == -88.0 and meta["gimbal_yaw_deg"] == 111.3
    assert meta["calibrated_focal_px"] == pytest.approx(3666.666504)
    assert meta["local_time"] == dt.datetime(2020, 6, 4, 22, 10, 30)
    track = read_track(real_data / "deepforest")  # a directory: every JPEG, non-photos ignored
    assert len(track) == 1 and track.format == "photo-exif"


def test_dronetm_exiftool_csv(real_data):
    track = read_track(real_data / "dronetm_agung" / "image_metadata.csv")
    t = track.table
    assert len(t) == 1817
    first = t.iloc[0]  # earliest photo, DJI_20251002115719_0001_D.JPG
    assert first.image.endswith("DJI_20251002115719_0001_D.JPG")
    assert first.lat == pytest.approx(-8.290747, abs=1e-5) and first.lon == pytest.approx(115.466631, abs=1e-5)
    assert first.abs_alt_m == pytest.approx(1037.576)
    assert (t.gimbal_pitch_deg == -80).mean() > 0.9
    # inside the published AOI (lon 115.456-115.467, lat -8.300..-8.290): not swapped, south and east
    assert t.lon.between(115.45, 115.47).all() and t.lat.between(-8.31, -8.28).all()
    assert t.time_s.iloc[-1] > 3600


@settings(max_examples=50, deadline=None)
@given(deg=st.integers(0, 179), minutes=st.integers(0, 59), seconds=st.floats(0, 59.99), hemi=st.sampled_from("NSEW"))
def test_parse_dms_round_trip(deg, minutes, seconds, hemi):
    text = f"{deg} deg {minutes}' {seconds:.2f}\" {hemi}"
    value = deg + minutes / 60 + round(seconds, 2) / 3600
    assert parse_dms(text) == pytest.approx(-value if hemi in "SW" else value)


def test_exiftool_csv_with_bad_rows(tmp_path):
    p = tmp_path / "meta.csv"
    p.write_text("SourceFile,GPSLatitude,GPSLongitude,RelativeAltitude,GimbalYawDegree,DateTimeOriginal\n"
                 "a.jpg,30.5,114.3,80,10,2024:05:01 10:00:00\n"
                 "b.jpg,,,80,10,2024:05:01 10:00:02\n")
    track = read_exiftool_csv(p)
    assert len(track) == 1 and any("1 of 2 photos" in w for w in track.warnings)
