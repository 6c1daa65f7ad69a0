"""Video frames with OpenCV: probe, sample every N seconds, read as RGB, save JPEGs atomically.

Frame ``i`` of a video shows time ``i / fps`` on the video clock, the clock DJI SRT cue times
use, so telemetry is synchronised to frames through that time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuban import InputError
from tuban.imagery.vector_io import write_bytes_atomic

__all__ = ["VideoInfo", "probe_video", "sample_frame_indices", "iter_frames", "save_jpeg", "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".ts", ".mts")


@dataclass(frozen=True)
class VideoInfo:
    """What OpenCV reports about a video.

    Args:
        path: the file.
        frame_count: number of frames (container metadata; may be approximate).
        fps: frames per second.
        width_px, height_px: frame size.
    """

    path: Path
    frame_count: int
    fps: float
    width_px: int
    height_px: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Open a video and read its frame count, rate and size.

    Raises:
        InputError: missing file, not decodable, or no frames.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such video file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(path, "OpenCV cannot open this video (unknown container or codec)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if n <= 0 or w <= 0 or h <= 0:
            ok, frame = cap.read()
            if not ok:
                raise InputError(path, "video has no decodable frames")
            h, w = frame.shape[:2]
            n = max(n, 1)
    finally:
        cap.release()
    if not fps > 0 or not math.isfinite(fps):
        raise InputError(path, "video reports no frame rate")
    return VideoInfo(path=path, frame_count=n, fps=fps, width_px=w, height_px=h)


def sample_frame_indices(frame_count: int, fps: float, every_s: float) -> np.ndarray:
    """0-based frame indices one per ``every_s`` seconds, starting with frame 0.

    Example:
        >>> sample_frame_indices(100, 25.0, 1.0).tolist()
        [0, 25, 50, 75]
    """
    if every_s <= 0:
        raise ValueError(f"sampling interval must be positive, got {every_s}")
    if frame_count <= 0:
        return np.empty(0, dtype=np.int64)
    times = np.arange(0.0, frame_count / fps, every_s)
    idx = np.unique(np.minimum(np.rint(times * fps).astype(np.int64), frame_count - 1))
    return idx


def iter_frames(path: str | Path, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, RGB uint8 HxWx3)`` for the wanted frames, in increasing order.

    Frames are read sequentially (``grab`` skips without decoding to RGB), which is exact for
    every codec; long gaps are jumped with a seek. Frames the container cannot deliver stop
    the iteration early.
    """
    import cv2

    wanted = sorted({int(i) for i in indices if i >= 0})
    if not wanted:
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(path, "OpenCV cannot open this video")
    try:
        pos = 0
        for target in wanted:
            if target - pos > 300:  # a long gap: seek, then verify where we landed
                cap.set(cv2.CAP_PROP_POS_FRAMES, target)
                pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            while pos < target:
                if not cap.grab():
                    return
                pos += 1
            ok, frame = cap.read()
            if not ok:
                return
            pos += 1
            yield target, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def save_jpeg(path: str | Path, rgb: np.ndarray, *, quality: int = 90, overwrite: bool = False) -> Path:
    """Write an RGB frame as JPEG atomically (temp file + rename)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return write_bytes_atomic(path, buf.tobytes(), overwrite=overwrite)
