"""Video files: decode with decord where installed (x86), PyAV otherwise; encode mp4 with PyAV."""
from __future__ import annotations

import dataclasses
import importlib.util
from fractions import Fraction
from pathlib import Path

import numpy as np

from wan_core.fsutil import atomic_output_file


def default_backend() -> str:
    return "decord" if importlib.util.find_spec("decord") is not None else "pyav"


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


def probe_video(path: str | Path, backend: str | None = None) -> VideoInfo:
    """Frame count, fps and size from the container/stream headers (no full decode)."""
    backend = backend or default_backend()
    if backend == "decord":
        import decord

        reader = decord.VideoReader(str(path), num_threads=1)
        h, w = reader[0].shape[:2] if len(reader) else (0, 0)
        return VideoInfo(len(reader), float(reader.get_avg_fps()), int(h), int(w))
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
        rate = stream.average_rate or stream.guessed_rate or 0
        return VideoInfo(int(frames), float(rate), int(stream.codec_context.height), int(stream.codec_context.width))


def read_frames(path: str | Path, indices: list[int] | None = None, backend: str | None = None) -> np.ndarray:
    """uint8 frames [T, H, W, 3] (RGB) at `indices` (all frames when None)."""
    backend = backend or default_backend()
    if backend == "decord":
        import decord

        reader = decord.VideoReader(str(path), num_threads=1)
        idx = list(range(len(reader))) if indices is None else list(indices)
        return reader.get_batch(idx).asnumpy()
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    stacked = np.stack(frames)
    return stacked if indices is None else stacked[list(indices)]


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write uint8 frames [T, H, W, 3] as H.264 mp4 (MPEG-4 Part 2 where libx264 is missing), atomically."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    path = Path(path)
    with atomic_output_file(path, "wb") as f:
        with av.open(f, mode="w", format="mp4") as container:
            try:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.options = {"crf": "18", "preset": "veryfast"}
            except Exception:  # pragma: no cover - depends on the FFmpeg build
                stream = container.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1001))
            stream.height, stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
            stream.pix_fmt = "yuv420p"
            for frame in frames[:, : stream.height, : stream.width]:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
