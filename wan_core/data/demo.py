"""`wan22 make-demo-dataset`: small synthetic videos of moving shapes in MindSpeed-MM's Wan2.2 dataset format (data.json + data.txt).

    OUT/videos/video0001.mp4 ...
    OUT/data.json   [{"path", "cap", "num_frames", "fps", "resolution": {"height", "width"}}, ...]
    OUT/data.txt    "<OUT>,<OUT>/data.json"  (one dataset per line: folder, data.json)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wan_core.data.video import write_video
from wan_core.errors import UserError
from wan_core.fsutil import atomic_output_dir

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (235, 220, 40),
          "white": (240, 240, 240), "orange": (245, 140, 20)}
SHAPES = ("circle", "square")
DIRECTIONS = {"left to right": (1, 0), "right to left": (-1, 0), "top to bottom": (0, 1), "bottom to top": (0, -1)}

DEMO_FRAMES, DEMO_FPS, DEMO_HEIGHT, DEMO_WIDTH = 33, 16, 64, 64


def render_clip(index: int, frames: int = DEMO_FRAMES, height: int = DEMO_HEIGHT, width: int = DEMO_WIDTH):
    """(uint8 frames [T, H, W, 3], caption) for clip `index`: one shape crossing a dark background."""
    rng = np.random.default_rng(index)
    color_name = list(COLORS)[index % len(COLORS)]
    shape = SHAPES[(index // len(COLORS)) % len(SHAPES)]
    direction = list(DIRECTIONS)[(index // 2) % len(DIRECTIONS)]
    dx, dy = DIRECTIONS[direction]
    radius = int(min(height, width) * rng.uniform(0.12, 0.2))
    yy, xx = np.mgrid[0:height, 0:width]
    background = (np.array([20, 24, 40]) + rng.integers(0, 20, 3)).astype(np.uint8)
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        p = t / max(frames - 1, 1)
        cx = width / 2 + dx * (p - 0.5) * (width - 2 * radius)
        cy = height / 2 + dy * (p - 0.5) * (height - 2 * radius)
        inside = ((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2) if shape == "circle" else (
            (abs(xx - cx) <= radius) & (abs(yy - cy) <= radius))
        video[t] = background
        video[t][inside] = COLORS[color_name]
    return video, f"A {color_name} {shape} moving from {direction} across a dark background."


def make_demo_dataset(out: str | Path, videos: int = 4, frames: int = DEMO_FRAMES, fps: int = DEMO_FPS,
                      height: int = DEMO_HEIGHT, width: int = DEMO_WIDTH, overwrite: bool = False) -> Path:
    out = Path(out).absolute()
    if videos < 1:
        raise UserError(f"--videos {videos}: must be at least 1")
    if "," in str(out):
        raise UserError(f"--output {out}: data.txt lists a dataset as `folder,data.json`, so its path cannot contain "
                        "a comma (MindSpeed-MM reads it the same way); choose a path without one")
    with atomic_output_dir(out, "make-demo-dataset", overwrite) as tmp:
        (tmp / "videos").mkdir()
        entries = []
        for i in range(videos):
            clip, caption = render_clip(i, frames, height, width)
            name = f"videos/video{i + 1:04d}.mp4"
            write_video(tmp / name, clip, fps)
            entries.append({"path": name, "cap": caption, "num_frames": frames, "fps": fps,
                            "resolution": {"height": height, "width": width}})
        (tmp / "data.json").write_text(json.dumps(entries, indent=4) + "\n")
        (tmp / "data.txt").write_text(f"{out},{out / 'data.json'}\n")
    return out
