"""Object F1 of ``tuban detect`` with the SHIPPED pond model on the held-out seeds (no training).

    nice -n 5 .venv/bin/python benchmarks/detect_stretch_eval.py --work /tmp/tuban-pond --report /tmp/f1.json \
        --runtime onnx

Same scoring as step 5 of ``benchmarks/train_pond_model.py`` (default slicing, conf 0.25,
IoU >= 0.25, one prediction per truth), for both resolutions and both dates of each seed; used to
measure changes to the per-raster contrast stretch before/after with the same weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/tuban-pond"), help="scratch folder (counties)")
    ap.add_argument("--model", type=Path, default=Path("models/pond_yolo11n.pt"))
    ap.add_argument("--seeds", default="201,202,203")
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runtime", choices=["auto", "onnx", "torch", "onnx-int8"], default="auto",
                    help="model engine, as tuban detect --runtime (auto = onnx when possible; onnx-int8 = int8 weights)")
    args = ap.parse_args(argv)

    # Import the detection code first, so that a run measures the code as it was at start.
    from train_pond_model import _county, _labelled_rasters, _prf

    from tuban.models.onnx_detector import load_detector_for_runtime
    from tuban.models.yolo import YoloSettings
    from tuban.pipelines.detect import DetectSettings, detect_raster
    from tuban.pipelines.evaluate import score_objects

    seeds = [int(s) for s in args.seeds.split(",")]
    detector = load_detector_for_runtime(args.model, YoloSettings(conf=0.25, threads=args.threads), args.runtime)
    rows, totals = [], {}
    for s in seeds:
        for raster, truth, res in _labelled_rasters(_county(args.work, s)):
            gdf, stats = detect_raster(raster, detector, DetectSettings())
            sc = score_objects(gdf, truth, iou_threshold=0.25)
            row = {"seed": s, "raster": f"{res}/{raster.name}", **sc.as_dict(), "seconds": stats.wall_s}
            rows.append(row)
            agg = totals.setdefault(res, [0, 0, 0])
            for i, v in enumerate((sc.predictions, sc.truths, sc.matched)):
                agg[i] += v
            print(row, flush=True)
    agg_all = [sum(v[i] for v in totals.values()) for i in range(3)]
    report = {"runtime": getattr(detector, "runtime", "torch"), "object_f1": {k: _prf(*v) for k, v in (totals | {"all": agg_all}).items()}, "per_raster": rows}
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["object_f1"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
