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
    from wan_core.data.manifest import validate_dataset, write_report
    from wan_core.fsutil import atomic_output_file

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
    with atomic_output_file(Path(manifest_out)) as f:
        json.dump(valid, f, indent=2, ensure_ascii=False)
    return manifest_out


def train_config(p: dict) -> dict:
    """A training config (PRODUCT.md §3.4 keys) from the pipeline's typed parameters."""
    return {
        "model": {"from_pretrained": p["base_model"], "variant": p["variant"], "task": p.get("task") or None,
                  "expert": p.get("expert") or None},
        "save_path": p["save_path"],
        "load_path": p.get("load_path") or None,
        "data": {"manifest": p["manifest"], "num_frames": p["num_frames"], "height": p["height"], "width": p["width"],
                 "fps": float(p["fps"])},
        "train": {"iters": p["iters"], "save_interval": p["save_interval"], "micro_batch_size": p["micro_batch_size"],
                  "lr": float(p["lr"]), "dtype": p["dtype"]},
        "parallel": {"cp": p["cp"], "cp_algo": p["cp_algo"], "ulysses_degree": int(p.get("ulysses_degree") or 0) or None},
    }


def training_curve_html(metrics_path: Path, title: str) -> str:
    """A self-contained HTML page with the loss curve as inline SVG (no plotting library needed)."""
    rows = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()] if metrics_path.is_file() else []
    if not rows:
        return f"<html><body><h3>{html.escape(title)}</h3><p>no metrics</p></body></html>"
    w, h, pad = 480, 200, 30
    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    lo, hi = min(losses), max(losses)
    span, xspan = (hi - lo) or 1.0, (max(steps) - min(steps)) or 1

    def xy(s, v):
        return (pad + (s - min(steps)) / xspan * (w - 2 * pad), h - pad - (v - lo) / span * (h - 2 * pad))

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, v) for s, v in zip(steps, losses)))
    last = rows[-1]
    return (f"<html><head><meta charset='utf-8'></head><body><h3>{html.escape(title)}</h3>"
            f"<svg width='{w}' height='{h}' xmlns='http://www.w3.org/2000/svg' style='border:1px solid #ccc'>"
            f"<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='{points}'/>"
            f"<text x='{pad}' y='15' font-size='11'>loss {hi:.4g}</text>"
            f"<text x='{pad}' y='{h - 8}' font-size='11'>loss {lo:.4g} · steps {min(steps)}-{max(steps)}</text></svg>"
            f"<p>last step {last['step']}: loss {last['loss']:.5f}, lr {last['lr']:.2e}, grad norm "
            f"{last['grad_norm']:.3f}, {last['samples_per_s']:.2f} samples/s</p></body></html>")


def pretrain_step(params: dict, deployment: "Deployment", curve_html: Path, log_metric: LogMetric) -> str:
    """Write the training config next to the checkpoints, then train: here with torchrun on
    deployment.devices_per_node processes, or as a cluster job placed by `deployment`."""
    save_path = Path(params["save_path"])
    save_path.mkdir(parents=True, exist_ok=True)
    config_path = save_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(train_config(params), sort_keys=False))
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
    rows = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
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
