"""DJI SRT parsing: every real sample file, synthetic variants, and round-trip invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuban import TelemetryError
from tuban.imagery.srt import frame_interval_s, parse_srt_text, read_srt

# name: (records, format, first (lon, lat), last (lon, lat))
REAL = {
    "MAVIC3.srt": (12318, "srt-modern", (-3.37440, 3.41531), (-3.37721, 3.41368)),
    "air2s.srt": (17, "srt-mavic2", (2.234156, 41.424724), (2.234102, 41.424730)),
    "broken_incomplete.SRT": (19, "srt-legacy", (-58.4563, -34.7383), (-58.4563, -34.7383)),
    "broken_incomplete2.SRT": (4, "srt-mavic2", (-57.823395, -34.869950), (-57.823383, -34.869945)),
    "m2zoom.SRT": (7113, "srt-mavic2", (74.398751, 31.452012), (74.398905, 31.450438)),
    "matrice_300.srt": (381, "srt-m300", (-6.1120, 36.6146), (-6.1120, 36.6146)),
    "mavic_2_style.SRT": (468, "srt-mavic2", (149.0251, -20.2533), (149.0251, -20.2532)),
    "mavic_2pro_new.SRT": (8952, "srt-mavic2", (-60.286702, -35.080155), (-60.314572, -35.077976)),
    "mavic_air2.srt": (25, "srt-mavic2", (2.162162, 41.420684), (2.162162, 41.420686)),
    "mavic_mini.SRT": (117, "srt-legacy", (-121.7458, 48.0771), (-121.7476, 48.0775)),
    "mavic_pro.SRT": (468, "srt-legacy", (149.0251, -20.2533), (149.0251, -20.2532)),
    "mavic_pro_buggy.SRT": (530, "srt-legacy", (-1.2218, 42.4668), (-1.2217, 42.4668)),
    "mix_p4rtk_mavic2pro.srt": (12, "srt-mixed", (-59.409424, -34.650200), (-59.409483, -34.651180)),
    "old_format.SRT": (468, "srt-legacy", (149.0251, -20.2533), (149.0251, -20.2532)),
    "p4_rtk.SRT": (55, "srt-p4", (-58.851745, -34.237922), (-58.849196, -34.232349)),
    "p4p_sample.SRT": (5, "srt-legacy", (8.2090, 47.4692), (8.2090, 47.4692)),
}
BROKEN = {
    "broken_empty.SRT": "empty",
    "broken_empty2.SRT": "not a DJI SRT",
    "mavic_air.SRT": "no GPS position",
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_srt_counts_and_coordinates(real_data, name):
    n, fmt, first, last = REAL[name]
    track = read_srt(real_data / "dji_srt" / name)
    t = track.table
    assert len(track) == n
    assert track.format == fmt
    assert t.lon.iloc[0] == pytest.approx(first[0], abs=1e-5)
    assert t.lat.iloc[0] == pytest.approx(first[1], abs=1e-5)
    assert t.lon.iloc[-1] == pytest.approx(last[0], abs=1e-5)
    assert t.lat.iloc[-1] == pytest.approx(last[1], abs=1e-5)
    assert np.all(np.diff(t.time_s) >= 0) and t.time_s.iloc[0] == 0
    assert t.lat.between(-90, 90).all() and t.lon.between(-180, 180).all()
    assert not ((t.lat == 0) & (t.lon == 0)).any()


def test_all_twenty_real_files_are_covered(real_data):
    names = {p.name for p in (real_data / "dji_srt").iterdir() if p.name != "LICENSE"}
    assert names == set(REAL) | set(BROKEN)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_srt_raise_clear_error(real_data, name):
    with pytest.raises(TelemetryError, match=BROKEN[name]) as info:
        read_srt(real_data / "dji_srt" / name)
    assert name in str(info.value)


def test_truncated_files_warn(real_data):
    assert any("truncated" in w for w in read_srt(real_data / "dji_srt" / "broken_incomplete.SRT").warnings)
    assert any("2 of 6" in w for w in read_srt(real_data / "dji_srt" / "broken_incomplete2.SRT").warnings)
    buggy = read_srt(real_data / "dji_srt" / "mavic_pro_buggy.SRT")  # GPS(N/A,N/A,3) before the fix
    assert any("16 of 546" in w for w in buggy.warnings)


def test_mavic3_frames_and_heights(real_data):
    t = read_srt(real_data / "dji_srt" / "MAVIC3.srt").table
    assert t.frame.iloc[0] == 0 and t.frame.iloc[-1] == 12317
    assert np.all(np.diff(t.frame) == 1)
    assert t.rel_alt_m.iloc[0] == pytest.approx(-2.4)
    assert t.abs_alt_m.iloc[0] == pytest.approx(0.401)
    assert t.video_time_s.iloc[-1] == pytest.approx(246.34)
    assert t.focal_len_35mm.iloc[0] == pytest.approx(24.0)


def test_mavic2_encodings_and_restarting_framecnt(real_data):
    zoom = read_srt(real_data / "dji_srt" / "m2zoom.SRT").table
    assert zoom.focal_len_35mm.min() == pytest.approx(24.0)  # "focal_len : 240" is x10
    assert zoom.focal_len_35mm.max() == pytest.approx(48.0)
    assert zoom.abs_alt_m.iloc[0] == pytest.approx(213.983002)
    assert zoom.frame.iloc[-1] == 7112  # 59.94 fps from 16/17 ms cues
    pro = read_srt(real_data / "dji_srt" / "mavic_2pro_new.SRT")
    assert any("FrameCnt does not follow" in w for w in pro.warnings)
    assert pro.table.frame.iloc[-1] == round(pro.table.video_time_s.iloc[-1] * 25)


def test_legacy_tuple_order_and_attitude(real_data):
    m300 = read_srt(real_data / "dji_srt" / "matrice_300.srt").table  # GPS(lat,lon,0.0M)
    assert m300.lat.iloc[0] == pytest.approx(36.6146) and m300.lon.iloc[0] == pytest.approx(-6.1120)
    assert m300.rel_alt_m.iloc[0] == pytest.approx(0.3)
    p4 = read_srt(real_data / "dji_srt" / "p4_rtk.SRT").table
    row = p4.iloc[0]
    assert (row.pitch_deg, row.roll_deg, row.yaw_deg) == pytest.approx((2.7, -7.0, 110.1))
    assert (row.gimbal_pitch_deg, row.gimbal_roll_deg, row.gimbal_yaw_deg) == pytest.approx((-24.4, 0.0, 110.4))
    assert row.rel_alt_m == pytest.approx(85.8)
    assert p4.speed_m_s.iloc[1] == pytest.approx(2.88)
    mini = read_srt(real_data / "dji_srt" / "mavic_mini.SRT").table
    assert mini.rel_alt_m.iloc[0] == pytest.approx(200.70)
    pro = read_srt(real_data / "dji_srt" / "mavic_pro.SRT").table
    assert pro.video_time_s.iloc[0] == pytest.approx(1.0) and pro.frame.iloc[0] == -1  # 1 Hz, fps unknown
    assert pro.satellites.iloc[0] == 16


ENTERPRISE = """1
00:00:00,000 --> 00:00:00,033
<font size="28">FrameCnt: 1, DiffTime: 33ms
2024-05-01 10:00:00.100
[iso: 170] [shutter: 1/99.77] [fnum: 4.4] [ev: 0] [color_md : default] [ae_meter_md: 1]
[focal_len: 284.80] [dzoom_ratio: 1.77], [latitude: 53.388452] [longitude: 5.361783]
[rel_alt: 55.774 abs_alt: 98.364] [gb_yaw: -83.6 gb_pitch: -9.1 gb_roll: 0.0]
[drone_speedx: 3.0 drone_speedy: 4.0 drone_speedz: 0.0] [drone_yaw: -20.4 drone_pitch: 2.4 drone_roll: -2.1] </font>

2
00:00:00,033 --> 00:00:00,067
<font size="28">FrameCnt: 2, DiffTime: 34ms
2024-05-01 10:00:00.133
[iso: 170] [shutter: 1/99.77] [fnum: 4.4] [ev: 0] [color_md : default] [ae_meter_md: 1]
[focal_len: 284.80] [dzoom_ratio: 1.77], [latitude: 53.388460] [longitude: 5.361790]
[rel_alt: 55.800 abs_alt: 98.390] [gb_yaw: -83.0 gb_pitch: -90.0 gb_roll: 0.0]
[drone_speedx: 0.0 drone_speedy: 0.0 drone_speedz: 0.0] [drone_yaw: -20.0 drone_pitch: 2.0 drone_roll: -2.0] </font>
"""


def test_enterprise_fields():
    track = parse_srt_text(ENTERPRISE)
    t = track.table
    assert track.format == "srt-enterprise"
    assert t.gimbal_yaw_deg.tolist() == [-83.6, -83.0]
    assert t.gimbal_pitch_deg.tolist() == [-9.1, -90.0]
    assert t.yaw_deg.iloc[0] == -20.4 and t.roll_deg.iloc[0] == -2.1
    assert t.speed_m_s.iloc[0] == pytest.approx(5.0)
    assert t.dzoom_ratio.iloc[0] == pytest.approx(1.77)
    assert t.focal_len_35mm.iloc[0] == pytest.approx(284.8)  # decimals: not x10 encoded
    assert t.frame.tolist() == [0, 1]


def test_one_line_and_framecnt_zero_variants():
    text = "".join(
        f"{i + 1}\n00:00:{i // 30:02d},{(i % 30) * 33:03d} --> 00:00:{i // 30:02d},{(i % 30) * 33 + 33:03d}\n"
        f'<font size="28">FrameCnt: {i} 2026-08-21 17:38:52.{i:03d} [iso: 100] [latitude: {30 + i * 1e-5:.6f}] '
        f"[longitude: {114 + i * 1e-5:.6f}] [rel_alt: {80 + i:.3f} abs_alt: 120.0] </font>\n\n"
        for i in range(10)
    )
    t = parse_srt_text(text).table
    assert len(t) == 10
    assert t.frame.tolist() == list(range(10))  # FrameCnt counted from 0
    assert t.lat.iloc[3] == pytest.approx(30.00003) and t.lon.iloc[3] == pytest.approx(114.00003)
    assert t.rel_alt_m.iloc[9] == pytest.approx(89.0)


def test_drops_zero_nan_and_out_of_range_positions():
    recs = [(114.1, 30.1), (0.0, 0.0), (float("nan"), 30.0), (200.0, 30.0), (114.2, 30.2)]
    text = "".join(
        f"{i + 1}\n00:00:0{i},000 --> 00:00:0{i + 1},000\n[latitude: {lat}] [longitude: {lon}] [rel_alt: 10 abs_alt: 20]\n\n"
        for i, (lon, lat) in enumerate(recs)
    )
    track = parse_srt_text(text)
    assert track.table.lon.tolist() == [114.1, 114.2]
    assert any("3 of 5 SRT records dropped" in w for w in track.warnings)


def test_not_srt_text_raises():
    with pytest.raises(TelemetryError):
        parse_srt_text("hello world\nthis is not telemetry\n")


def test_frame_interval_snaps_to_standard_rates():
    assert 1 / frame_interval_s(np.array([0.040, 0.041, 0.040, 0.080])) == pytest.approx(25.0)
    assert 1 / frame_interval_s(np.array([0.033, 0.034, 0.033, 0.034])) == pytest.approx(29.97)


def _modern_srt(lons, lats, rels, dt_ms):
    lines = []
    for i, (lon, lat, rel) in enumerate(zip(lons, lats, rels, strict=True)):
        t0, t1 = i * dt_ms, (i + 1) * dt_ms
        fmt = lambda ms: f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"  # noqa: E731
        lines.append(
            f"{i + 1}\n{fmt(t0)} --> {fmt(t1)}\n<font size=\"28\">FrameCnt: {i + 1}, DiffTime: {dt_ms}ms\n"
            f"2024-01-01 00:00:00.000\n[iso: 100] [focal_len: 24.00] [latitude: {lat:.6f}] "
            f"[longitude: {lon:.6f}] [rel_alt: {rel:.3f} abs_alt: {rel + 12.5:.3f}] </font>\n"
        )
    return "\n".join(lines)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-179.9, 179.9).filter(lambda v: abs(v) > 1e-3),
            st.floats(-89.9, 89.9).filter(lambda v: abs(v) > 1e-3),
            st.floats(-50, 500),
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([20, 33, 40]),
)
def test_modern_srt_round_trip(records, dt_ms):
    lons, lats, rels = (np.array(c) for c in zip(*records, strict=True))
    t = parse_srt_text(_modern_srt(lons, lats, rels, dt_ms)).table
    assert len(t) == len(records)
    np.testing.assert_allclose(t.lon, np.round(lons, 6), atol=1e-9)
    np.testing.assert_allclose(t.lat, np.round(lats, 6), atol=1e-9)
    np.testing.assert_allclose(t.rel_alt_m, np.round(rels, 3), atol=1e-9)
    np.testing.assert_allclose(t.abs_alt_m - t.rel_alt_m, 12.5, atol=2e-3)
    assert t.frame.tolist() == list(range(len(records)))
    np.testing.assert_allclose(t.video_time_s, np.arange(len(records)) * dt_ms / 1000)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(91, 179.9), st.floats(-89.9, 89.9).filter(lambda v: abs(v) > 1e-3)),
        min_size=1,
        max_size=20,
    )
)
def test_legacy_tuple_round_trip_is_lon_first(records):
    text = "".join(
        f"{i + 1}\n00:00:{i + 1:02d},000 --> 00:00:{i + 2:02d},000\nHOME({records[0][0]:.4f},{records[0][1]:.4f}) "
        f"2017.08.05 14:11:{i:02d}\nGPS({lon:.4f},{lat:.4f},16) BAROMETER:{i}.5\nISO:100 Shutter:60 EV: Fnum:2.2\n\n"
        for i, (lon, lat) in enumerate(records)
    )
    t = parse_srt_text(text).table
    np.testing.assert_allclose(t.lon, [round(r[0], 4) for r in records])
    np.testing.assert_allclose(t.lat, [round(r[1], 4) for r in records])
    np.testing.assert_allclose(t.rel_alt_m, np.arange(len(records)) + 0.5)


_SMALL_REAL = ["p4_rtk.SRT", "mavic_mini.SRT", "air2s.srt", "matrice_300.srt", "mix_p4rtk_mavic2pro.srt",
               "mavic_2_style.SRT", "broken_incomplete2.SRT"]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(_SMALL_REAL), cut=st.floats(0, 1), junk=st.text(max_size=40), at=st.floats(0, 1))
def test_truncated_or_corrupted_real_files_never_crash(real_data, name, cut, junk, at):
    text = (real_data / "dji_srt" / name).read_text(encoding="utf-8", errors="replace")
    text = text[: int(len(text) * cut)]
    pos = int(len(text) * at)
    text = text[:pos] + junk + text[pos:]
    try:
        track = parse_srt_text(text, source=name)
    except TelemetryError as exc:
        assert name in str(exc)
        return
    t = track.table
    assert len(t) >= 1
    assert t.lat.between(-90, 90).all() and t.lon.between(-180, 180).all()
    assert np.all(np.diff(t.time_s) >= 0)


@pytest.mark.parametrize("name", ["mavic_pro.SRT", "old_format.SRT", "mavic_pro_buggy.SRT", "p4_rtk.SRT",
                                  "broken_incomplete.SRT", "mix_p4rtk_mavic2pro.srt"])
def test_legacy_positions_are_near_home_so_not_swapped(real_data, name):
    import re

    text = (real_data / "dji_srt" / name).read_text(encoding="utf-8", errors="replace")
    home_lon, home_lat = (float(v) for v in re.search(r"HOME\s*\(\s*([-\d.]+)\s*,\s*([-\d.]+)", text).groups())
    t = read_srt(real_data / "dji_srt" / name).table
    north = (t.lat - home_lat) * 111_000
    east = (t.lon - home_lon) * 111_000 * np.cos(np.radians(home_lat))
    assert np.hypot(north, east).max() < 2_000  # swapped lon/lat would be thousands of km away


MINI3 = """1
00:00:00,000 --> 00:00:00,033
<font size="28">SrtCnt : 1, DiffTime : 33ms
2024-09-04 13:29:07.288
[iso : 120] [shutter : 1/2000.0] [fnum : 170] [ev : 0] [ct : 5165] [color_md : default] [focal_len : 240] [dzoom_ratio: 10000, delta:0],[latitude: 37.451022] [longitude: 126.656545] [rel_alt: 45.000 abs_alt: 111.890] [Drone: Yaw:90.4, Pitch:0.8, Roll:-1.6] [Gimbal: Yaw:91.0, Pitch:-45.0, Roll:0.0] </font>

2
00:00:00,033 --> 00:00:00,066
<font size="28">SrtCnt : 2, DiffTime : 33ms
2024-09-04 13:29:07.324
[iso : 120] [shutter : 1/2000.0] [fnum : 170] [ev : 0] [ct : 5164] [color_md : default] [focal_len : 240] [dzoom_ratio: 20000, delta:0],[latitude: 37.451030] [longitude: 126.656550] [rel_alt: 45.100 abs_alt: 111.990] [Drone: Yaw:90.5, Pitch:0.7, Roll:-1.5] [Gimbal: Yaw:91.1, Pitch:-45.0, Roll:0.0] </font>
"""


def test_mini3_style_encodings_and_ypr_brackets():
    t = parse_srt_text(MINI3).table
    assert t.dzoom_ratio.tolist() == [1.0, 2.0]  # x10000 encoding
    assert t.focal_len_35mm.tolist() == [24.0, 24.0]  # x10 encoding
    assert t.rel_alt_m.tolist() == [45.0, 45.1]
    assert (t.yaw_deg.iloc[0], t.pitch_deg.iloc[0], t.roll_deg.iloc[0]) == (90.4, 0.8, -1.6)
    assert (t.gimbal_yaw_deg.iloc[1], t.gimbal_pitch_deg.iloc[1]) == (91.1, -45.0)
    assert t.frame.tolist() == [0, 1]
