"""`wan22 pipeline run --local` (what `make demo` runs): the whole wan22-full DAG under kfp.local on tiny
generated weights and data, with 2-process FSDP2 + CP=2 training, ending in mp4s and an HTML report."""
from __future__ import annotations

import datetime
import html
import json
import time
from pathlib import Path


def run_local(workdir: str | None = None, variant: str = "ti2v-5b", nproc: int = 2, cp: int = 2,
              iters: int = 6) -> Path:
    from kfp import local

    from pipelines import full
    from wan_core.data.demo import make_demo_dataset
    from wan_core.tiny import make_tiny_checkpoint

    run_dir = Path(workdir or Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print(f"[wan22] run folder: {run_dir}", flush=True)
    print("[wan22] making a tiny checkpoint and a demo dataset", flush=True)
    base = make_tiny_checkpoint(variant, run_dir / "inputs" / f"tiny-{variant}")
    data = make_demo_dataset(run_dir / "inputs" / "dataset", videos=4)
    prompts = run_dir / "inputs" / "prompts.txt"
    prompts.write_text("A red circle moving from left to right across a dark background.\n"
                       "A blue square moving from top to bottom across a dark background.\n")
    images = ""
    if variant == "i2v-a14b":  # i2v samples from a first frame: take the demo clips' first frames
        import numpy as np
        from PIL import Image

        from wan_core.data.video import read_frames

        lines = []
        for i in range(2):
            frame = read_frames(data / "videos" / f"video{i + 1:04d}.mp4", [0])[0]
            Image.fromarray(np.asarray(frame)).save(run_dir / "inputs" / f"image{i}.png")
            lines.append(f"image{i}.png")
        (run_dir / "inputs" / "images.txt").write_text("\n".join(lines) + "\n")
        images = str(run_dir / "inputs" / "images.txt")
    size = 32
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / "kfp"))
    print(f"[wan22] running wan22-full under kfp.local: {variant}, {nproc} processes, CP={cp}, {iters} steps",
          flush=True)
    full.build()(base_model=str(base), data_txt=str(data / "data.txt"), workdir=str(run_dir / "work"),
                 prompts=str(prompts), images=images, variant=variant, iters=iters, save_interval=max(1, iters // 2),
                 micro_batch_size=1, lr=1e-3, dtype="fp32", num_frames=9, height=size, width=size, fps=16.0,
                 nnodes=1, devices_per_node=nproc, cp=cp, cp_algo="ulysses", launcher="local", sample_frames=5,
                 sample_height=size, sample_width=size, sample_steps=4)
    return write_run_report(run_dir, variant, time.time() - started)


def write_run_report(run_dir: Path, variant: str, seconds: float) -> Path:
    from wan_core.pipeline_steps import training_curve_html

    work = run_dir / "work"
    parts = [f"<h2>wan22-full, {html.escape(variant)}, local run</h2><p>{seconds:.0f} s on this machine; "
             f"run folder <code>{html.escape(str(run_dir))}</code></p>"]
    val = work / "validation-report" / "report.html"
    if val.is_file():
        parts.append("<h3>1. dataset validation</h3>" + _body(val.read_text()))
    for metrics in sorted(work.glob("train-*/metrics.jsonl")):
        parts.append(f"<h3>2. training ({metrics.parent.name})</h3>" +
                     _body(training_curve_html(metrics, metrics.parent.name)))
    exported = work / "exported"
    if exported.is_dir():
        parts.append(f"<h3>3. exported diffusers folder</h3><p><code>{html.escape(str(exported))}</code>: "
                     + ", ".join(sorted(p.name for p in exported.iterdir())) + "</p>")
    samples = work / "samples"
    if (samples / "preview.html").is_file():
        index = json.loads((samples / "samples.json").read_text())
        files = ", ".join(s["video"] for s in index["samples"])
        parts.append(f"<h3>4. samples</h3><p>{files} in <code>{html.escape(str(samples))}</code></p>"
                     + _body((samples / "preview.html").read_text()))
    report = run_dir / "report.html"
    report.write_text("<!doctype html><html><head><meta charset='utf-8'><title>wan22 run</title></head><body>"
                      + "".join(parts) + "</body></html>\n")
    return report


def _body(page: str) -> str:
    start, end = page.find("<body>"), page.rfind("</body>")
    return page[start + 6:end] if start >= 0 and end > start else page
