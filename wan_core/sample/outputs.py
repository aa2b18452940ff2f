"""What sampling leaves behind: NNNN.mp4 (+ NNNN.npy), samples.json and a small HTML preview."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from wan_core.data.video import write_video
from wan_core.fsutil import atomic_output_file

PREVIEW_MAX_SIDE = 160
PREVIEW_MAX_FRAMES = 16


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_sample(output: Path, index: int, frames: np.ndarray, fps: int, save_array: bool) -> dict:
    """Write NNNN.mp4 (and NNNN.npy: float32 [T, H, W, 3] in [0, 1]); returns the file names."""
    stem = f"{index:04d}"
    write_video(output / f"{stem}.mp4", to_uint8(frames), fps)
    files = {"video": f"{stem}.mp4"}
    if save_array:
        with atomic_output_file(output / f"{stem}.npy", "wb") as f:
            np.save(f, frames.astype(np.float32))
        files["array"] = f"{stem}.npy"
    return files


def gif_data_uri(frames: np.ndarray) -> str:
    """A small animated GIF of a clip as a data: URI (inline, so the preview is one self-contained file)."""
    from PIL import Image

    clip = to_uint8(frames)
    step = max(1, len(clip) // PREVIEW_MAX_FRAMES)
    images = [Image.fromarray(f) for f in clip[::step]]
    scale = PREVIEW_MAX_SIDE / max(images[0].size)
    if scale < 1:
        size = (max(1, round(images[0].width * scale)), max(1, round(images[0].height * scale)))
        images = [im.resize(size) for im in images]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=125, loop=0)
    return "data:image/gif;base64," + base64.b64encode(buf.getvalue()).decode()


def write_index(output: Path, records: list[dict], settings: dict) -> None:
    records = sorted(records, key=lambda r: r["index"])
    with atomic_output_file(output / "samples.json") as f:
        json.dump({"settings": settings, "samples": records}, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_preview(output: Path, records: list[dict], previews: dict[int, str], title: str) -> Path:
    cards = []
    for r in sorted(records, key=lambda r: r["index"]):
        img = previews.get(r["index"], "")
        cards.append(
            f'<figure><img src="{img}" alt="sample {r["index"]:04d}"><figcaption><b>{html.escape(r["prompt"])}'
            f'</b><br>seed {r["seed"]} · <a href="{html.escape(r["video"], quote=True)}">{html.escape(r["video"])}</a>'
            '</figcaption></figure>')
    # the clips are upscaled without smoothing: tiny samples stay readable pixels, not blur
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
            "body{font-family:system-ui,sans-serif}figure{display:inline-block;width:200px;margin:6px;"
            "vertical-align:top}img{width:192px;image-rendering:pixelated;background:#000}figcaption{font-size:12px}"
            "</style></head><body><h3>"
            + html.escape(title) + "</h3>" + "".join(cards) + "</body></html>\n")
    path = output / "preview.html"
    with atomic_output_file(path) as f:
        f.write(page)
    return path
