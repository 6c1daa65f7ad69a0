"""Check that ``tuban change`` output is byte-identical to a reference run (speed work guard).

Usage::

    python benchmarks/check_change_identical.py write REF_DIR [--cases ...]
    python benchmarks/check_change_identical.py compare REF_DIR [--cases ...]

Cases: sample counties (``seedN-s2``, ``seedN-hr``: generated once under ``--data DIR``), the
real pairs in ../shared/data/real (``naip``, ``pucallpa``, ``s2``, ``landsat``), the 4,000 px
benchmark pair (``bench4k``) and a 2-worker run of it (``bench4k-w2``), and a test scene pair whose
second date is misregistered by (1.5, 0.5) px, so the shift is measured and corrected
(``shifted``, ``shifted-w2``). ``write`` stores one
GeoJSON per case (the patches as ``tuban change`` writes them, without the run's timing stats);
``compare`` runs again and reports every case whose bytes differ. A speed change must keep
every case identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from tuban.imagery.vector_io import geojson_dict
from tuban.pipelines.change import ChangeSettings, run_change
from tuban.pipelines.change_output import change_summary

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
DEFAULT_CASES = ["seed0-s2", "seed0-hr", "seed1-s2", "seed1-hr", "seed2-s2", "naip", "pucallpa", "s2",
                 "landsat", "bench4k", "bench4k-w2", "shifted", "shifted-w2"]


def _case(name: str, data: Path):
    """``(before paths, after paths, settings)`` of one named case."""
    if name.startswith("seed"):
        seed, res = name[4:].split("-")
        root = data / f"seed{seed}"
        if not (root / "county.json").exists():
            from tuban.sample_data.county import generate_county

            generate_county(root, seed=int(seed))
        return [root / res / "before.tif"], [root / res / "after.tif"], ChangeSettings()
    if name == "naip":
        f = REAL / "naip_potholes"
        return ([f / "m_4709963_se_14_1_20090818.tif"], [f / "m_4709963_se_14_1_20150926.tif"],
                ChangeSettings(sensor_before="naip", sensor_after="naip"))
    if name == "pucallpa":
        roles = {"swir1": 1, "nir": 2, "red": 3, "green": 4}
        f = REAL / "landsat_pucallpa"
        return [f / "1985.tif"], [f / "2020.tif"], ChangeSettings(bands_before=roles, bands_after=roles)
    if name == "s2":
        cog = REAL / "s2_dollard" / "cog.tif"
        return [cog], [cog], ChangeSettings(sensor_before="sentinel2", sensor_after="sentinel2")
    if name == "landsat":
        f = REAL / "landsat8_crop"
        return [f], [f], ChangeSettings()
    if name.startswith("bench4k"):
        folder = data / "bench4k"
        if not (folder / "after.tif").exists():
            sys.path.insert(0, str(Path(__file__).parent))
            from bench_change import generate

            folder.mkdir(parents=True, exist_ok=True)
            generate(folder, 4000)
        workers = 2 if name.endswith("-w2") else 1
        return [folder / "before.tif"], [folder / "after.tif"], ChangeSettings(workers=workers)
    if name.startswith("shifted"):
        folder = data / "shifted"
        if not (folder / "after.tif").exists():
            from affine import Affine

            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            import change_scenes

            folder.mkdir(parents=True, exist_ok=True)
            change_scenes.pair(folder, after_transform=change_scenes.TRANSFORM @ Affine.translation(1.5, 0.5))
        workers = 2 if name.endswith("-w2") else 1
        return [folder / "before.tif"], [folder / "after.tif"], ChangeSettings(workers=workers)
    raise SystemExit(f"unknown case {name}")


def run_case(name: str, data: Path) -> bytes:
    """The GeoJSON bytes ``tuban change`` would write for one case."""
    before, after, settings = _case(name, data)
    result = run_change(before, after, settings)
    doc = {"tuban_change": change_summary(result), **geojson_dict(result.patches)}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["write", "compare"])
    ap.add_argument("ref", type=Path)
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    ap.add_argument("--data", type=Path, default=Path("/tmp/tuban-identical-data"))
    args = ap.parse_args()
    args.ref.mkdir(parents=True, exist_ok=True)
    bad = []
    for name in args.cases:
        t0 = time.perf_counter()
        data = run_case(name, args.data)
        path = args.ref / f"{name}.geojson"
        if args.mode == "write":
            path.write_bytes(data)
            state = "written"
        else:
            same = path.read_bytes() == data
            state = "identical" if same else "DIFFERENT"
            if not same:
                bad.append(name)
                (args.ref / f"{name}.new.geojson").write_bytes(data)
        digest = hashlib.sha1(data).hexdigest()[:12]
        print(f"{name:12s} {state:10s} {len(data):9d} B sha1 {digest} {time.perf_counter() - t0:6.1f} s", flush=True)
    if bad:
        raise SystemExit(f"outputs differ: {', '.join(bad)}")


if __name__ == "__main__":
    main()
