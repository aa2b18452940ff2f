"""validate-dataset at dataset scale: clips per second with --workers 1 against --workers 2 (and more where the
machine has the cores), on 720p clips.

A 33-frame 1280x720 H.264 clip is written once and hard-linked under N names (a probe reads every one as its own
file: the container, the stream and one decoded frame); each setting runs `wan22 validate-dataset` in a fresh
process, best of two.

    python benchmarks/validate_dataset.py [--clips 6000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def make_dataset(root: Path, clips: int) -> Path:
    from wan_core.data.demo import render_clip
    from wan_core.data.video import write_video

    videos = root / "videos"
    videos.mkdir(parents=True)
    frames, _ = render_clip(0, 33, 720, 1280)
    write_video(videos / "clip.mp4", frames, 16)
    entries = []
    for i in range(clips):
        os.link(videos / "clip.mp4", videos / f"{i:06d}.mp4")
        entries.append({"path": f"videos/{i:06d}.mp4", "cap": f"clip {i}", "num_frames": 33, "fps": 16,
                        "resolution": {"height": 720, "width": 1280}})
    (root / "data.json").write_text(json.dumps(entries))
    (root / "data.txt").write_text(f"{root},{root / 'data.json'}\n")
    return root / "data.txt"


def run(data_txt: Path, workers: int) -> float:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "wan_core", "validate-dataset", "--data-txt", str(data_txt),
                        "--workers", str(workers)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_txt = make_dataset(Path(tmp) / "ds", args.clips)
        counts = sorted({1, 2, *([os.cpu_count()] if (os.cpu_count() or 1) > 2 else [])})
        times = {w: min(run(data_txt, w) for _ in range(2)) for w in counts}
    print(f"{args.clips} clips of 33 frames at 1280x720, {os.cpu_count()} cores")
    print("| workers | seconds | clips/s | clips/s per worker | speed-up vs 1 |")
    print("|---|---|---|---|---|")
    for w, t in times.items():
        print(f"| {w} | {t:.1f} | {args.clips / t:.0f} | {args.clips / t / w:.0f} | {times[1] / t:.2f} |")


if __name__ == "__main__":
    main()
