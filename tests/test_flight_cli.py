"""`tuban flight score` / `tuban flight replay` end to end: generated Airdata CSV and SRT files read back
through the telemetry parsers, real public logs, output contract, determinism, errors, and the replay
page rendered in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess

import pytest

from tuban.cli import app
from tuban.sample_data.flights import write_flights


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_flights(tmp_path_factory.mktemp("flights"))


def _logs(sample, kind):
    return [str(p[kind]) for p in sample["pilots"].values()]


@pytest.mark.parametrize("kind", ["csv", "srt"])
def test_score_contract_and_ranking(runner, sample, tmp_path, kind):
    out = tmp_path / "scores"
    res = runner.invoke(app, ["flight", "score", *_logs(sample, kind), "--course", str(sample["course"]),
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "scores.json").read_text())
    expected = sorted(sample["pilots"], key=lambda n: sample["pilots"][n]["truth"]["rank"])
    assert [p["pilot"] for p in doc["pilots"]] == expected
    for p in doc["pilots"]:
        assert set(p) >= {"pilot", "total", "items", "penalties"}
        assert 0 <= p["total"] <= 100
        assert set(p["items"]) == {"takeoff", "rotation", "square", "hover", "targets"}
        for item in p["items"].values():
            assert set(item) >= {"status", "score", "metrics", "subscores", "reasons"}
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["pilot"] for r in rows] == expected
    assert [float(r["total"]) for r in rows] == sorted((float(r["total"]) for r in rows), reverse=True)
    skipper = next(p for p in doc["pilots"] if p["pilot"] == "skipper")
    assert any(q["code"] == "skipped_leg" for q in skipper["penalties"])
    shaky = next(p for p in doc["pilots"] if p["pilot"] == "shaky")
    assert any(q["code"] == "no_full_turn" for q in shaky["penalties"])
    if kind == "csv":  # flycState from the Airdata CSV, reported next to hover and rotation
        assert shaky["items"]["hover"]["flight_mode"] == "ATTI"
        assert skipper["items"]["rotation"]["flight_mode"] == "P-GPS"
    else:  # SRT carries no flight mode
        assert shaky["items"]["hover"]["flight_mode"] == "unknown (not in log)"
    truth = sample["pilots"]["solid"]["truth"]
    solid = next(p for p in doc["pilots"] if p["pilot"] == "solid")
    assert solid["items"]["hover"]["metrics"]["r95_m"] == pytest.approx(truth["hover_r95_m"], abs=0.2)
    assert solid["items"]["square"]["metrics"]["xte_rms_m"] == pytest.approx(truth["square_xte_rms_m"], abs=0.2)


def test_score_is_byte_identical_and_pilot_mapping(runner, sample, tmp_path):
    logs = _logs(sample, "csv")
    args = ["flight", "score", *logs, "--course", str(sample["course"]), "--pilot", "ace=Alice Wang"]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "b")]).exit_code == 0
    for name in ("scores.json", "leaderboard.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    doc = json.loads((tmp_path / "a" / "scores.json").read_text())
    assert doc["pilots"][0]["pilot"] == "Alice Wang"


def test_score_errors(runner, sample, tmp_path):
    logs = _logs(sample, "csv")
    out = tmp_path / "o"
    assert runner.invoke(app, ["flight", "score", *logs, "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["flight", "score", *logs, "--out", str(out)])
    assert res.exit_code == 1 and "already exists" in res.output
    res = runner.invoke(app, ["flight", "score", *logs, "--out", str(out), "--pilot", "nonsense"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["flight", "score", *logs, "--out", str(out), "--pilot", "nobody=X"])
    assert res.exit_code == 2
    bad = tmp_path / "course.yaml"
    bad.write_text("wind_grade: 7\n")
    res = runner.invoke(app, ["flight", "score", *logs, "--course", str(bad), "--out", str(tmp_path / "p")])
    assert res.exit_code == 1 and "course.yaml" in res.output and "wind_grade" in res.output
    assert not (tmp_path / "p" / "scores.json").exists()
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b\n1,2\n")
    res = runner.invoke(app, ["flight", "score", str(junk), "--out", str(tmp_path / "q")])
    assert res.exit_code == 1 and res.output.startswith("Error:") and "junk.csv" in res.output
    assert not (tmp_path / "q" / "scores.json").exists()


def test_broken_real_srt_is_one_line_error(runner, real_data, tmp_path):
    res = runner.invoke(app, ["flight", "score", str(real_data / "dji_srt" / "broken_empty.SRT"),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and res.output.startswith("Error:") and "broken_empty.SRT" in res.output


def test_real_logs_score_and_report_not_found(runner, real_data, tmp_path):
    srt = [real_data / "dji_srt" / n for n in ("MAVIC3.srt", "matrice_300.srt", "p4_rtk.SRT", "mavic_pro.SRT",
                                               "air2s.srt", "mavic_mini.SRT")]
    ulg = sorted((real_data / "px4_ulog").glob("*.ulg"))
    res = runner.invoke(app, ["flight", "score", *map(str, srt + ulg), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert len(doc["pilots"]) == len(srt) + len(ulg)
    not_found = 0
    for p in doc["pilots"]:
        for item in p["items"].values():
            if item["status"] == "not_found":
                not_found += 1
                assert item["score"] == 0 and item["reasons"][0]
        assert sum(q["code"] == "missing_item" for q in p["penalties"]) == sum(
            v["status"] == "not_found" for v in p["items"].values())
    assert not_found > 0  # these are not competition flights


@pytest.fixture(scope="module")
def replay_dir(sample, tmp_path_factory):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("replay")
    res = CliRunner().invoke(app, ["flight", "replay", *_logs(sample, "csv"), "--course", str(sample["course"]),
                                   "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    return out


def test_replay_page_is_self_contained(replay_dir, sample):
    page = (replay_dir / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert len(re.findall(r'<path class="track" data-pilot="', page)) == len(sample["pilots"])
    assert 'class="course-square"' in page and page.count('class="target"') == 2
    assert 'id="scrubber"' in page and page.count('class="aircraft"') == len(sample["pilots"])
    assert 'id="leaderboard"' in page and page.count('class="scorecard"') == len(sample["pilots"])
    for key in ("plot-u", "plot-v", "plot-yaw"):
        assert f'id="{key}"' in page
    urls = set(re.findall(r"(?:src|href)\s*=\s*[\"']([^\"']+)", page)) | set(re.findall(r"url\(", page))
    assert not urls, urls
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
    data = json.loads(re.search(r'<script type="application/json" id="replay-data">(.*?)</script>', page, re.S).group(1))
    assert [p["pilot"] for p in data["pilots"]][0] == "ace"
    assert all(len(p["t"]) == len(p["x"]) > 100 for p in data["pilots"])
    for png in ["tracks.png", *(f"profile_{n}.png" for n in sample["pilots"])]:
        assert (replay_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_refuses_to_overwrite(runner, sample, replay_dir):
    res = runner.invoke(app, ["flight", "replay", *_logs(sample, "csv"), "--out", str(replay_dir)])
    assert res.exit_code == 1 and "already exists" in res.output


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed")
def test_replay_renders_tracks_in_headless_chromium(replay_dir, sample):
    from PIL import Image

    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1300,1000", f"--user-data-dir={replay_dir / 'chrome-profile'}"]
    url = (replay_dir / "index.html").as_uri()
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="track"') == len(sample["pilots"])
    assert "-0.0 s" not in dom and re.search(r'<span id="clock">-?\d+\.\d s</span>', dom)  # the script ran
    shot = replay_dir / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    img = Image.open(shot).convert("RGB")
    colours = {(0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28), (0x2C, 0xA0, 0x2C), (0xFF, 0x7F, 0x0E)}
    track_area = img.crop((0, 100, 700, 700))  # the map sits at the left under the controls
    hits = {}
    for px in track_area.getdata():
        for c in colours:
            if sum(abs(a - b) for a, b in zip(px, c, strict=True)) < 60:
                hits[c] = hits.get(c, 0) + 1
    assert len(hits) == len(sample["pilots"]) and min(hits.values()) > 50, hits  # tracks overlap


def test_real_logs_from_different_places_replay(runner, real_data, tmp_path):
    logs = [real_data / "dji_srt" / "MAVIC3.srt", real_data / "dji_srt" / "matrice_300.srt",
            real_data / "px4_ulog" / "sample_px4_events.ulg"]
    res = runner.invoke(app, ["flight", "replay", *map(str, logs), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "index.html").read_text()
    assert page.count('<path class="track"') == 3
    assert page.count("km away: drawn about its own take-off") == 2  # three venues, one frame each
    assert page.count('class="grid"') < 60


def test_penalty_text_never_minus_zero():
    from tuban.pipelines.flight_score import penalty_text

    assert [penalty_text(v) for v in (0.0, -0.0, 0.04, 12, 2.5, None)] == ["0", "0", "0", "-12", "-2.5", ""]


def test_clean_pilot_penalties_print_as_zero_not_minus_zero(runner, sample, replay_dir, tmp_path):
    res = runner.invoke(app, ["flight", "score", *_logs(sample, "csv"), "--course", str(sample["course"]),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert any(p["penalty_points"] == 0 for p in doc["pilots"])  # a clean pilot is in the sample
    assert "-0 " not in res.stdout and "│ 0 " in res.stdout
    page = (replay_dir / "index.html").read_text()
    assert "<td>-0</td>" not in page and "<td>0</td>" in page


def test_one_broken_log_does_not_stop_the_others(runner, sample, real_data, tmp_path):
    logs = [*_logs(sample, "csv"), str(real_data / "dji_srt" / "broken_empty.SRT"),
            str(real_data / "dji_srt" / "mavic_air.SRT")]
    res = runner.invoke(app, ["flight", "score", *logs, "--course", str(sample["course"]), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "Warning: broken_empty: no data" in res.output and "Warning: mavic_air: no data" in res.output
    doc = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert [p["status"] for p in doc["pilots"]] == ["scored"] * len(sample["pilots"]) + ["no_data"] * 2
    lost = {p["pilot"]: p for p in doc["pilots"] if p["status"] == "no_data"}
    assert lost["broken_empty"]["reason"] == "empty telemetry file"
    assert "no GPS" in lost["mavic_air"]["reason"]
    assert lost["mavic_air"]["rank"] is None and lost["mavic_air"]["total"] == 0  # contract: total in 0-100
    assert {v["status"] for v in lost["mavic_air"]["items"].values()} == {"no_data"}
    assert [p["rank"] for p in doc["pilots"][:-2]] == list(range(1, len(sample["pilots"]) + 1))
    rows = list(csv.DictReader((tmp_path / "o" / "leaderboard.csv").open()))
    assert rows[-1]["pilot"] == "mavic_air" and rows[-1]["rank"] == "" and rows[-1]["square"] == "no_data"
    assert "│ -    │ mavic_air" in res.stdout and "no data" in res.stdout
    res = runner.invoke(app, ["flight", "replay", *logs, "--course", str(sample["course"]), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / "index.html").read_text()
    assert page.count('class="scorecard no-data"') == 2 and "empty telemetry file" in page
    assert page.count('<path class="track"') == len(sample["pilots"])
    both = [str(real_data / "dji_srt" / "broken_empty.SRT"), str(real_data / "dji_srt" / "mavic_air.SRT")]
    res = runner.invoke(app, ["flight", "score", *both, "--out", str(tmp_path / "n")])
    assert res.exit_code == 1 and res.output.startswith("Error:") and "no pilot could be scored" in res.output
    assert not (tmp_path / "n" / "scores.json").exists()


def test_replay_chinese_pilot_names_get_one_profile_png_each(runner, sample, tmp_path):
    import shutil as _sh

    logs = []
    for src, name in ((sample["pilots"]["ace"]["csv"], "张 三.csv"), (sample["pilots"]["solid"]["csv"], "李四.csv"),
                      (sample["pilots"]["shaky"]["csv"], "李四!.csv")):
        logs.append(tmp_path / name)
        _sh.copyfile(src, logs[-1])
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = runner.invoke(app, ["flight", "replay", *map(str, logs), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "r").glob("profile_*.png"))
    assert names == ["profile_张_三.png", "profile_李四.png", "profile_李四_2.png"]
    assert not [w for w in caught if "Glyph" in str(w.message)]  # no per-glyph noise on stderr
