"""Pictures of what the shipped pond model finds, on synthetic and real imagery (docs/img/).

    nice -n 10 .venv/bin/python benchmarks/detect_pictures.py --real ../shared/data/real --out docs/img

For each raster: ``tuban detect`` with the default settings, then a PNG of the stretched RGB
(the image the model sees) with detections in red (score written beside) and, when a truth
file is given, truth ponds in green. Synthetic: an evaluation seed of the sample county (not
used in training). Real: NAIP prairie potholes (5 m, R,G,B,NIR) and DeepForest NEON tiles.
A JSON summary (counts, scores, areas) is written beside the pictures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def render(raster: Path, dets, truth, out_png: Path, max_px: int = 1400) -> None:
    """Draw detections (red) and truth (green) over the stretched RGB raster."""
    import cv2

    from tuban.imagery.slice_source import open_slice_source, resolve_rgb_bands
    from tuban.imagery.slicing import compute_stretch, to_uint8_rgb

    src = open_slice_source(raster)
    try:
        bands = resolve_rgb_bands(src.band_names, src.count, None, src.path)
        sample, valid = src.read_decimated(bands)
        stretch = compute_stretch(sample, valid)
        data, ok = src.read(bands, 0, 0, src.width, src.height)
        img = np.ascontiguousarray(to_uint8_rgb(data, stretch, ok)[..., ::-1])
        inv, crs = ~src.transform, src.crs
    finally:
        src.close()
    scale = min(1.0, max_px / max(img.shape[:2]))
    if scale < 1.0:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    thick = max(1, int(round(max(img.shape[:2]) / 700)))

    def draw(gdf, colour, with_score):
        for _, row in gdf.to_crs(crs).iterrows():
            ring = np.array(row.geometry.exterior.coords)
            px = np.array([inv * (x, y) for x, y in ring]) * scale
            cv2.polylines(img, [px.astype(np.int32)], True, colour, thick)
            if with_score:
                x, y = px[:, 0].min(), px[:, 1].min()
                cv2.putText(img, f"{row['score']:.2f}", (int(x), max(10, int(y) - 2)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.35 * thick, colour, 1, cv2.LINE_AA)

    if truth is not None:
        draw(truth, (0, 200, 0), False)
    draw(dets, (0, 0, 255), True)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), img)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pictures of pond detections")
    ap.add_argument("--real", type=Path, default=Path("../shared/data/real"))
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--county", type=Path, default=None, help="a generated evaluation county (else seed 203)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    import geopandas as gpd

    from tuban.models.yolo import YoloSettings, load_detector
    from tuban.pipelines.detect import DetectSettings, detect_raster
    from tuban.pipelines.evaluate import score_objects

    det = load_detector(args.model, YoloSettings(conf=0.25, threads=args.threads))
    summary = []
    jobs = []
    county = args.county
    if county is None:
        import tempfile

        from tuban.sample_data.county import generate_county

        county = generate_county(Path(tempfile.mkdtemp(prefix="tuban-pics-")) / "c", 203).root
    for res, flag in (("hr", "in_hr"), ("s2", "in_s2")):
        truth = gpd.read_file(county / "truth" / "ponds_after.geojson")
        jobs.append((county / res / "after.tif", truth[truth[flag].astype(bool)], f"synthetic_{res}_after"))
    for tif in sorted((args.real / "naip_potholes").glob("*.tif")):
        jobs.append((tif, None, f"naip_{tif.stem.split('_')[-1]}"))
    for tif in sorted((args.real / "deepforest").glob("*.tif")):
        jobs.append((tif, None, f"deepforest_{tif.stem[:8]}"))
    for raster, truth, name in jobs:
        gdf, stats = detect_raster(raster, det, DetectSettings())
        row = {"name": name, "raster": str(raster), "detections": len(gdf), "seconds": stats.wall_s,
               "median_score": round(float(gdf["score"].median()), 3) if len(gdf) else None,
               "median_area_m2": round(float(gdf["area_m2"].median()), 1) if len(gdf) else None}
        if truth is not None:
            row.update(score_objects(gdf, truth, iou_threshold=0.25).as_dict())
        summary.append(row)
        render(raster, gdf, truth, args.out / f"{name}.png")
        print(row, flush=True)
    (args.out / "detections_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
