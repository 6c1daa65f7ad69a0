"""DJI SRT parsing speed: tuban's whole-text regex parser vs a naive per-line parser.

    nice -n 10 .venv/bin/python benchmarks/bench_telemetry.py [--srt PATH] [--repeat 7]

Default input: the 12,318-record ``MAVIC3.srt`` from ``../shared/data/real/dji_srt``. Both
parsers start from the file's text already in memory (file reading is timed separately) and
are timed over ``--repeat`` runs (best and median printed). The naive baseline is the usual
per-line state machine (split blocks, one regex search per field per block, float() each),
as most public SRT parsers do; it extracts only lat/lon/rel_alt/abs_alt/cue time, i.e. less
than tuban does. Results are checked to agree record by record before timing is reported.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRT = ROOT.parent / "shared" / "data" / "real" / "dji_srt" / "MAVIC3.srt"

_NAIVE_CUE = re.compile(r"(\d+):(\d+):(\d+),(\d+)\s*-->")
_NAIVE_FIELDS = {
    "lat": re.compile(r"\[latitude\s*:\s*([-\d.]+)\]"),
    "lon": re.compile(r"\[longt?itude\s*:\s*([-\d.]+)\]"),
    "rel": re.compile(r"rel_alt\s*:\s*([-\d.]+)"),
    "abs": re.compile(r"abs_alt\s*:\s*([-\d.]+)"),
}


def naive_parse(text: str) -> dict[str, list[float]]:
    """Per-line state machine: what a straightforward SRT parser does."""
    out: dict[str, list[float]] = {"t": [], "lat": [], "lon": [], "rel": [], "abs": []}
    block: list[str] = []
    for line in text.splitlines() + [""]:
        if line.strip():
            block.append(line)
            continue
        if not block:
            continue
        body = "\n".join(block)
        block = []
        cue = _NAIVE_CUE.search(body)
        vals = {k: p.search(body) for k, p in _NAIVE_FIELDS.items()}
        if cue is None or vals["lat"] is None or vals["lon"] is None:
            continue
        h, m, s, ms = (int(x) for x in cue.groups())
        out["t"].append(h * 3600 + m * 60 + s + ms / 1000)
        for k, match in vals.items():
            out[k].append(float(match.group(1)) if match else float("nan"))
    return out


def _time(fn, repeat: int, clock=time.perf_counter) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--srt", type=Path, default=DEFAULT_SRT)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    if not args.srt.is_file():
        print(f"SRT not found: {args.srt}", file=sys.stderr)
        return 1
    from tuban.imagery.srt import parse_srt_text, read_srt

    t0 = time.perf_counter()
    text = args.srt.read_bytes().decode("utf-8", errors="replace")
    read_s = time.perf_counter() - t0

    track = parse_srt_text(text)  # warm-up (regex compilation, imports) and correctness check
    naive = naive_parse(text)
    n = len(track)
    assert n == len(naive["lat"]), (n, len(naive["lat"]))
    np.testing.assert_allclose(track.table["lat"], naive["lat"])
    np.testing.assert_allclose(track.table["lon"], naive["lon"])
    np.testing.assert_allclose(track.table["video_time_s"], naive["t"])

    ours = _time(lambda: parse_srt_text(text), args.repeat)
    base = _time(lambda: naive_parse(text), args.repeat)
    full = _time(lambda: read_srt(args.srt), args.repeat)
    full_cpu = _time(lambda: read_srt(args.srt), args.repeat, time.process_time)
    ours_cpu = _time(lambda: parse_srt_text(text), args.repeat, time.process_time)
    base_cpu = _time(lambda: naive_parse(text), args.repeat, time.process_time)
    best, med = min(ours), statistics.median(ours)
    print(f"file            : {args.srt.name} ({len(text) / 1e6:.1f} MB, {n} records; read+decode {read_s * 1000:.1f} ms)")
    print(f"tuban parse     : best {best * 1000:.1f} ms, median {med * 1000:.1f} ms -> {n / best:,.0f} records/s")
    print(f"tuban read_srt  : best {min(full) * 1000:.1f} ms wall, {min(full_cpu) * 1000:.1f} ms CPU (file read + parse)")
    print(f"naive per-line  : best {min(base) * 1000:.1f} ms, median {statistics.median(base) * 1000:.1f} ms "
          f"-> {n / min(base):,.0f} records/s")
    print(f"speed-up        : {min(base) / best:.1f}x wall, {min(base_cpu) / min(ours_cpu):.1f}x CPU "
          f"(tuban {min(ours_cpu) * 1000:.1f} ms CPU, naive {min(base_cpu) * 1000:.1f} ms CPU; best of {args.repeat})")
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        print(f"note            : load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall times inflated")
    print(f"target < 100 ms : {'met' if min(full) < 0.1 else 'NOT met'} (wall), "
          f"{'met' if min(full_cpu) < 0.1 else 'NOT met'} (CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
