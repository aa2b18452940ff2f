"""The bodies of the Kubeflow components: each calls the same wan_core code as the CLI and turns the
result into the small things the Kubeflow UI renders (metrics, Markdown/HTML with inline media).
Nothing here imports kfp; components/ hands in plain paths and a `log_metric(name, value)` callable."""
from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import yaml

from wan_core.errors import UserError

if TYPE_CHECKING:
    from wan_core.k8s.deployment import Deployment

LogMetric = Callable[[str, float], None]


def under(workdir: str, path: str) -> str:
    """`path` inside the run's work folder when relative (pipelines cannot join strings at compile time)."""
    if not workdir or "://" in path or path.startswith("/"):
        return path
    return workdir.rstrip("/") + "/" + path


def validate_dataset_step(data_txt: str, manifest_out: str, report_md: Path, report_html: Path,
                          log_metric: LogMetric, allow_invalid: bool = False) -> str:
    from wan_core.data.manifest import validate_dataset, write_manifest, write_report
    results, thumbnails = validate_dataset(data_txt)
    valid = [r.entry for r in results if r.reason is None]
    folder = Path(manifest_out).parent / "validation-report"
    write_report(folder, data_txt, results, thumbnails, overwrite=True)  # a retried step replaces its own report
    report_md.write_text((folder / "report.md").read_text())
    report_html.write_text((folder / "report.html").read_text())
    log_metric("entries", len(results))
    log_metric("valid", len(valid))
    log_metric("invalid", len(results) - len(valid))
    bad = [r for r in results if r.reason is not None]
    if bad and not allow_invalid:
        raise UserError(f"{len(bad)} invalid dataset entries (first: {bad[0].path}: {bad[0].reason}); fix them or "
                        "set allow_invalid")
    if not valid:
        raise UserError(f"{data_txt}: no valid entries")
    write_manifest(manifest_out, valid)
    return manifest_out


def train_config(p: dict) -> dict:
    """The training config from the pipeline's typed parameters, built as a `TrainConfig` (the one schema:
    a field the trainer does not have cannot be set here)."""
    from wan_core.train.config import (DataSection, LoraSection, ModelSection, ParallelSection, TrainConfig,
                                       TrainSection)

    return TrainConfig(
        model=ModelSection(from_pretrained=p["base_model"], variant=p["variant"], task=p.get("task") or None,
                           expert=p.get("expert") or None),
        save_path=p["save_path"],
        load_path=p.get("load_path") or None,
        data=DataSection(manifest=p["manifest"], num_frames=p["num_frames"], height=p["height"], width=p["width"],
                         fps=float(p["fps"])),
        train=TrainSection(iters=p["iters"], save_interval=p["save_interval"], micro_batch_size=p["micro_batch_size"],
                           lr=float(p["lr"]), dtype=p["dtype"],
                           lora=LoraSection(rank=int(p["lora_rank"]), alpha=float(p.get("lora_alpha") or p["lora_rank"]))
                           if p.get("lora_rank") else None),
        parallel=ParallelSection(cp=p["cp"], cp_algo=p["cp_algo"], ulysses_degree=int(p.get("ulysses_degree") or 0)
                                 or None),
    ).to_dict()


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    import math

    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count - 1)
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def loss_curve_svg(rows: list[dict], width: int = 520, height: int = 240) -> str:
    """The loss per step as an SVG line chart with labelled axes and ticks (no plotting library needed)."""
    left, right, top, bottom = 58, 14, 12, 42
    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    xt, yt = nice_ticks(min(steps), max(steps)), nice_ticks(min(losses), max(losses))
    x0, x1, y0, y1 = min(xt[0], min(steps)), max(xt[-1], max(steps)), min(yt[0], min(losses)), max(yt[-1], max(losses))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def x(v):
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def y(v):
        return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f"<svg class='curve' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
             "xmlns='http://www.w3.org/2000/svg' role='img' aria-label='training loss per step'>",
             f"<line x1='{left}' y1='{height - bottom}' x2='{width - right}' y2='{height - bottom}' stroke='#333'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{height - bottom}' stroke='#333'/>"]
    for v in xt:
        if x0 <= v <= x1:
            parts.append(f"<line x1='{x(v):.1f}' y1='{height - bottom}' x2='{x(v):.1f}' y2='{height - bottom + 4}' "
                         f"stroke='#333'/><text x='{x(v):.1f}' y='{height - bottom + 16}' font-size='11' "
                         f"text-anchor='middle'>{v:g}</text>")
    for v in yt:
        if y0 <= v <= y1:
            parts.append(f"<line x1='{left - 4}' y1='{y(v):.1f}' x2='{width - right}' y2='{y(v):.1f}' stroke='#ddd'/>"
                         f"<text x='{left - 6}' y='{y(v) + 4:.1f}' font-size='11' text-anchor='end'>{v:.4g}</text>")
    points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, losses))
    parts += [f"<polyline fill='none' stroke='#1f77b4' stroke-width='2' points='{points}'/>",
              *(f"<circle cx='{x(s):.1f}' cy='{y(v):.1f}' r='2.5' fill='#1f77b4'/>" for s, v in zip(steps, losses)),
              f"<text x='{(left + width - right) / 2:.0f}' y='{height - 6}' font-size='12' text-anchor='middle'>"
              "training step</text>",
              f"<text x='14' y='{(top + height - bottom) / 2:.0f}' font-size='12' text-anchor='middle' "
              f"transform='rotate(-90 14 {(top + height - bottom) / 2:.0f})'>loss</text></svg>"]
    return "".join(parts)


def read_metrics(metrics_path: Path) -> list[dict]:
    if not metrics_path.is_file():
        return []
    return [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]


def training_curve_html(metrics_path: Path, title: str) -> str:
    """A self-contained HTML page with the loss curve (the pretrain step's artifact in the Kubeflow UI)."""
    rows = read_metrics(metrics_path)
    if not rows:
        return f"<html><body><h3>{html.escape(title)}</h3><p>no metrics</p></body></html>"
    last = rows[-1]
    return (f"<html><head><meta charset='utf-8'></head><body><h3>{html.escape(title)}</h3>{loss_curve_svg(rows)}"
            f"<p>last step {last['step']}: loss {last['loss']:.5f}, lr {last['lr']:.2e}, grad norm "
            f"{last['grad_norm']:.3f}, {last['samples_per_s']:.2f} samples/s</p></body></html>")


def pretrain_step(params: dict, deployment: "Deployment", curve_html: Path, log_metric: LogMetric) -> str:
    """Write the training config next to the checkpoints, then train: here with torchrun on
    deployment.devices_per_node processes, or as a cluster job placed by `deployment`."""
    save_path = Path(params["save_path"])
    save_path.mkdir(parents=True, exist_ok=True)
    config_path = save_path / "train.yaml"
    # through TrainConfig, the one schema: a parameter the trainer does not know fails here, before launch
    from wan_core.train.config import config_from_dict

    cfg = config_from_dict(train_config(params), save_path)
    config_path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    launcher = params.get("launcher", "local")
    if launcher == "local":
        cmd = [sys.executable, "-m", "wan_core", "train", "--config", str(config_path)]
        if deployment.devices_per_node > 1:
            cmd += ["--nproc", str(deployment.devices_per_node)]
        status = subprocess.call(cmd)
        if status:
            raise UserError(f"training failed (exit status {status})")
    else:
        from wan_core.k8s.launcher import launch_training

        launch_training(deployment, config_path, params.get("run_id", ""), params.get("expert", ""), launcher)
    metrics_path = save_path / "metrics.jsonl"
    curve_html.write_text(training_curve_html(metrics_path, f"training {params['variant']} "
                                                            f"{params.get('expert') or ''}".strip()))
    rows = read_metrics(metrics_path)
    if rows:
        log_metric("final_loss", rows[-1]["loss"])
        log_metric("steps", rows[-1]["step"])
        log_metric("samples_per_s", sum(r["samples_per_s"] for r in rows[1:] or rows) / len(rows[1:] or rows))
    return str(save_path)


def sample_step(model: str, prompts: str, output: str, images: str, size: tuple[int, int, int], steps: int,
                guidance: str, seed: int, nproc: int, preview_html: Path, log_metric: LogMetric) -> str:
    from wan_core.sample.run import SampleJob, run_sample

    job = SampleJob(model=model, prompts=prompts, output=output, images=images or None,
                    size=tuple(size) if all(size) else None, steps=steps or None,
                    guidance=[float(g) for g in guidance.split()] if guidance else None, seed=seed, nproc=nproc,
                    overwrite=True)  # a retried step replaces its own earlier samples
    out = run_sample(job, progress=False)
    preview_html.write_text((out / "preview.html").read_text())
    index = json.loads((out / "samples.json").read_text())
    log_metric("videos", len(index["samples"]))
    return str(out)


def compare_lora_step(model: str, lora: str, lora_2: str, prompts: str, output: str, images: str,
                      size: tuple[int, int, int], steps: int, seed: int, preview_html: Path,
                      log_metric: LogMetric) -> str:
    """Every prompt sampled without and with the adapters (same seeds) into OUTPUT/base and OUTPUT/lora, and one
    HTML page with each pair side by side (the clips inline, so the Kubeflow UI plays them)."""
    import base64

    from wan_core.sample.run import SampleJob, run_sample
    from wan_core.storage import output_dir

    common = dict(model=model, prompts=prompts, images=images or None, size=tuple(size) if all(size) else None,
                  steps=steps or None, seed=seed, overwrite=True)
    with output_dir(output, "compare-lora", overwrite=True) as tmp:
        run_sample(SampleJob(output=str(tmp / "base"), **common), progress=False)
        run_sample(SampleJob(output=str(tmp / "lora"), lora=lora, lora_2=lora_2 or None, **common), progress=False)
        samples = {kind: json.loads((tmp / kind / "samples.json").read_text())["samples"] for kind in ("base", "lora")}

        def clip(kind: str, record: dict) -> str:
            data = (tmp / kind / record["video"]).read_bytes()
            src = ("data:video/mp4;base64," + base64.b64encode(data).decode() if len(data) < 4 * 2**20
                   else f"{kind}/{record['video']}")
            return (f"<figure><video src='{src}' autoplay loop muted playsinline width='256'></video>"
                    f"<figcaption>{'without' if kind == 'base' else 'with'} the adapter</figcaption></figure>")

        rows = "".join(f"<h4>{html.escape(a['prompt'])} (seed {a['seed']})</h4><div>{clip('base', a)}{clip('lora', b)}"
                       "</div>" for a, b in zip(samples["base"], samples["lora"]))
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>LoRA: with and without</title><style>"
                "body{font-family:system-ui,sans-serif}figure{display:inline-block;margin:6px;text-align:center}"
                "video{image-rendering:pixelated}</style></head><body><h3>Samples without and with the LoRA adapter"
                f"</h3>{rows}</body></html>\n")
        (tmp / "compare.html").write_text(page)
    preview_html.write_text(page)
    log_metric("prompts", len(samples["base"]))
    return output
