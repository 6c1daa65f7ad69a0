"""The offline report (rendered in headless Chromium) and detector labels from verdicts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile

import pytest
from cases_fixtures import LAT0, LON0, grids_file, offset, patch_features, write_fc
from PIL import Image

from tuban.cli import app
from tuban.imagery.vector_io import read_vector
from tuban.pipelines.cases import close_case
from tuban.pipelines.labels import case_labels
from tuban.pipelines.report import collect_report, render_report
from tuban.pipelines.tasks_export import ExportSettings, export_packs
from tuban.pipelines.tasks_import import import_verdicts
from tuban.pipelines.triage import read_patches, triage

XSS = '<img src=x onerror="alert(1)">'
VERDICTS = {0: ("confirmed_illegal", "2026-03-01T12:00:00Z"), 1: ("false_change", "2026-03-02T00:00:00Z"),
            2: ("legal", "2026-03-04T00:00:00Z"), 3: ("rectified", "2026-03-01T06:00:00Z")}


@pytest.fixture()
def ledger(tmp_path):
    """Five cases: four with verdicts (one note carrying HTML), one still dispatched."""
    centres = [(LON0, LAT0), offset(LON0, LAT0, 0, 400), offset(LON0, LAT0, 0, 800), offset(LON0, LAT0, 0, 1200),
               (LON0 + 0.03, LAT0)]
    p = write_fc(tmp_path / "patches.geojson", patch_features(centres))
    patches, _ = read_patches(p)
    path = tmp_path / "tuban.gpkg"
    triage(path, patches, read_vector(grids_file(tmp_path / "grids.geojson")))
    packs = export_packs(path, tmp_path / "packs", ExportSettings(), now="2026-03-01T00:00:00Z")
    feats = []
    for pk in packs:
        with zipfile.ZipFile(pk.path) as zf:
            feats += json.loads(zf.read(f"{pk.pack_id}/tasks.geojson"))["features"]
    feats.sort(key=lambda f: f["properties"]["case_id"])
    for i, (verdict, at) in VERDICTS.items():
        feats[i]["properties"].update(verdict=verdict, verified_at=at, verified_by="张三",
                                      note=XSS if i == 2 else "ok")
    ret = tmp_path / "returned.geojson"
    ret.write_text(json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False), encoding="utf-8")
    import_verdicts(ret, path)
    return path


def test_numbers_precision_and_time_to_verdict(ledger):
    data = collect_report(ledger)
    assert data.by_status["confirmed"] == 1 and data.by_status["dismissed"] == 2
    assert data.by_status["rectified"] == 1 and data.by_status["dispatched"] == 1
    assert (data.confirmed, data.verified) == (2, 4) and data.precision == 0.5
    assert sorted(data.hours_to_verdict) == [6.0, 12.0, 24.0, 72.0]
    assert data.by_grid == {"G-E": {"dispatched": 1}, "G-W": {"confirmed": 1, "dismissed": 2, "rectified": 1}}


def test_page_is_offline_and_escapes_notes(ledger):
    html = render_report(collect_report(ledger))
    assert XSS not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from the network
    assert "50.0%" in html and "median 18.0 h" in html
    assert html.count('class="case"') == 5


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    return exe


@pytest.mark.slow
def test_report_renders_in_headless_chromium(ledger, tmp_path, runner):
    out = tmp_path / "report.html"
    r = runner.invoke(app, ["report", "--ledger", str(ledger), "--out", str(out)])
    assert r.exit_code == 0 and "precision 50.0%" in r.output
    r = runner.invoke(app, ["report", "--ledger", str(ledger), "--out", str(out)])
    assert r.exit_code == 1 and "already exists" in r.output
    exe = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    dom = subprocess.run([exe, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    # the parsed DOM: five case shapes in the SVG map, the note still text, no injected element
    assert dom.stdout.count('class="case"') == 5
    assert "<img" not in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *flags, f"--screenshot={shot}", "--window-size=900,900", out.as_uri()],
                   capture_output=True, timeout=120)
    img = Image.open(shot).convert("RGB")
    colours = img.getcolors(maxcolors=1_000_000)
    # the map draws confirmed (red) and dispatched (purple) shapes: their colours are on screen
    present = {c for _, c in colours}
    assert any(abs(r - 0xC6) < 40 and g < 90 and b < 90 for r, g, b in present)  # confirmed red-ish
    assert any(abs(r - 0x6A) < 40 and g < 80 and abs(b - 0x9A) < 50 for r, g, b in present)  # dispatched


def test_labels_from_verdicts(ledger, tmp_path, runner):
    labels = case_labels(ledger)
    assert sorted(zip(labels["verdict"], labels["label"], strict=True)) == [
        ("confirmed_illegal", "pond"), ("false_change", "hard_negative"), ("legal", "hard_negative"),
        ("rectified", "pond")]
    close_case(ledger, "350181-00001", "demolished")  # closing keeps the verdict, so still a label
    out = tmp_path / "labels.geojson"
    r = runner.invoke(app, ["model", "labels", "--ledger", str(ledger), "--out", str(out)])
    assert r.exit_code == 0 and "2 positives, 2 hard negatives" in r.output
    fc = json.loads(out.read_text())
    assert "crs" not in fc and len(fc["features"]) == 4
    r = runner.invoke(app, ["model", "labels", "--ledger", str(tmp_path / "none.gpkg"), "--out", str(out)])
    assert r.exit_code == 1


def test_per_grid_precision_and_time(ledger):
    data = collect_report(ledger)
    assert data.grid_quality["G-W"] == (2, 4, 18.0)
    assert data.grid_quality["G-E"] == (0, 0, None)
