"""The sky-to-task demo: sample county -> change detection -> drone evidence -> ledger -> packs.

It calls exactly the pipeline functions the individual commands call (``generate_county``,
``run_change`` + ``write_change``, ``generate_county_clip``, ``index_video``, ``triage``,
``export_packs``); nothing here is a special path.
Everything is written under one output folder, and a re-run resumes: the county and patch files
that already exist are reused, triage of the same inputs is a no-op in the ledger, and packs
already written are reported rather than rebuilt.

Layout of ``out_dir``::

    county/                 the generated sample county (tuban sample)
    patches/s2.geojson      change patches of the ~10 m pair (tuban change)
    patches/hr.geojson      change patches of the ~2 m pair
    drone/frames.geojson    georeferenced frames of the county's drone clip (tuban uav index)
    drone/frames/*.jpg      the sampled frames, attached to cases as evidence
    tuban.gpkg              the case ledger (tuban triage)
    packs/*.zip             one task pack per village grid cell (tuban tasks export)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuban.imagery.vector_io import read_vector

__all__ = ["DemoSettings", "DemoResult", "run_demo", "SCENES"]

#: Scenes of the sample county, coarse first: a finer scene's patches join the coarse cases.
SCENES = ("s2", "hr")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoSettings:
    """Options of the demo.

    Args:
        seed: sample county seed.
        workers: local worker processes for change detection.
        scenes: which sample scenes to run (``"s2"``, ``"hr"``).
        size_km: side of the sample county in km (None: the generator's default county).
        drone: fly the county's drone clip over its new ponds and attach frames as evidence.
    """

    seed: int = 0
    workers: int = 2
    scenes: tuple[str, ...] = SCENES
    size_km: float | None = None
    drone: bool = True

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        unknown = set(self.scenes) - set(SCENES)
        if unknown or not self.scenes:
            raise ValueError(f"scenes must be among {SCENES}, got {self.scenes}")


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced."""

    out_dir: Path
    county_dir: Path
    patch_files: dict[str, Path]
    patch_counts: dict[str, dict[str, int]]
    ledger: Path
    new_cases: int
    joined_cases: int
    frames_attached: int
    packs_dir: Path
    packs: tuple[Path, ...]
    reused: tuple[str, ...] = field(default=())


def run_demo(out_dir: str | Path, settings: DemoSettings = DemoSettings(),
             progress: Progress | None = None) -> DemoResult:
    """Run the whole sky-to-task loop on the sample county under ``out_dir``.

    Args:
        out_dir: folder for everything the demo writes (created if missing).
        settings: seed, workers, scenes.
        progress: optional ``callback(stage, done, total)``.

    Returns:
        Paths and counts of what was written (or reused on a re-run).
    """
    from tuban.pipelines.change import ChangeSettings, run_change
    from tuban.pipelines.change_output import write_change
    from tuban.pipelines.tasks_export import ExportSettings, export_packs
    from tuban.pipelines.triage import read_patches, triage
    from tuban.sample_data.county import CountyFiles, CountySpec, generate_county, read_manifest

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda stage, done, total: None)
    reused: list[str] = []

    county_dir = out_dir / "county"
    files = CountyFiles.under(county_dir)
    if files.manifest.is_file() and read_manifest(county_dir).get("seed") == settings.seed:
        reused.append("county")
    else:
        spec = CountySpec.of_size_km(settings.size_km) if settings.size_km else None
        files = generate_county(county_dir, settings.seed, overwrite=county_dir.exists(), spec=spec,
                                progress=lambda d, t: report("sample county", d, t))

    rasters = {"s2": (files.s2_before, files.s2_after), "hr": (files.hr_before, files.hr_after)}
    patch_files: dict[str, Path] = {}
    counts: dict[str, dict[str, int]] = {}
    for scene in settings.scenes:
        before, after = rasters[scene]
        path = out_dir / "patches" / f"{scene}.geojson"
        if path.is_file():
            reused.append(f"patches/{scene}")
        else:
            result = run_change([before], [after], ChangeSettings(workers=settings.workers),
                                progress=lambda d, t, s=scene: report(f"change {s}", d, t))
            write_change(result, path)
        patch_files[scene] = path
        gdf = read_vector(path)
        counts[scene] = gdf["kind"].value_counts().to_dict() if len(gdf) else {}

    frames = _drone_frames(out_dir, county_dir, settings, reused, report) if settings.drone else None

    ledger = out_dir / "tuban.gpkg"
    grids = read_vector(files.grids)
    new_cases = joined = attached = 0
    for i, scene in enumerate(settings.scenes):
        patches, _ = read_patches(patch_files[scene])
        before, after = rasters[scene]
        last = i == len(settings.scenes) - 1  # frames attach to the cases of every scene
        res = triage(ledger, patches, grids, rasters={"before": str(before), "after": str(after)},
                     frames=frames if last else None,
                     inputs={"patches": str(patch_files[scene]), "grids": str(files.grids)},
                     progress=lambda d, t, s=scene: report(f"triage {s}", d, t))
        new_cases += len(res.new_cases)
        joined += len(res.joined_cases)
        attached += res.frames_attached

    packs_dir = out_dir / "packs"
    written = export_packs(ledger, packs_dir, ExportSettings(),
                           progress=lambda d, t: report("task packs", d, t))
    packs = tuple(p.path for p in written) or tuple(sorted(packs_dir.glob("*.zip")))
    if not written and packs:
        reused.append("packs")
    return DemoResult(out_dir=out_dir, county_dir=county_dir, patch_files=patch_files,
                      patch_counts=counts, ledger=ledger, new_cases=new_cases, joined_cases=joined,
                      frames_attached=attached, packs_dir=packs_dir, packs=packs, reused=tuple(reused))


def _drone_frames(out_dir: Path, county_dir: Path, settings: DemoSettings, reused: list[str],
                  report: Progress):
    """The drone hop: render the county's clip if needed, georeference its frames (uav index)."""
    from tuban.imagery.telemetry import read_track
    from tuban.imagery.vector_io import write_geojson
    from tuban.pipelines.triage import read_frames
    from tuban.pipelines.uav_index import IndexSettings, index_video
    from tuban.sample_data.county_clip import generate_county_clip

    video, srt = county_dir / "uav" / "clip.mp4", county_dir / "uav" / "clip.SRT"
    if not (video.is_file() and srt.is_file()):
        report("drone clip", 0, 1)
        generate_county_clip(county_dir, settings.seed, overwrite=True)
    frames_path = out_dir / "drone" / "frames.geojson"
    if frames_path.is_file():
        reused.append("drone frames")
    else:
        result = index_video(video, read_track(srt), IndexSettings(every_s=1.0),
                             frames_dir=out_dir / "drone" / "frames", out_path=frames_path,
                             overwrite=True, progress=lambda d, t: report("uav index", d, t))
        write_geojson(result.frames, frames_path)
    return read_frames(frames_path)
