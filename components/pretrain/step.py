"""The pretrain step: the run's training config (one document plus `a.b=c` overrides) with the pipeline's
wiring on top, validated once and checked against the deployment's real world size before anything launches;
then written beside the checkpoints as the one file every rank reads, and trained here (torchrun on this
pod's devices) or as a cluster job. Nothing here imports kfp."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import yaml

from components.k8s.deployment import Deployment
from components.pretrain.curve import read_metrics, training_curve_html
from wan_core.errors import UserError
from wan_core.storage import Location
from wan_core.train.config import TrainConfig, resolve_document
from wan_core.train.plan import preflight

CONFIG_NAME = "train.yaml"


def wiring(base_model: str, manifest: str = "", save_path: str = "", load_path: str = "", expert: str = "",
           features: str = "") -> list[str]:
    """The overrides a pipeline adds to the user's: where the base, the data (the manifest, or the feature cache
    made from it) and the checkpoints are, and which expert this task trains. They come after the user's, so the
    pipeline's paths win."""
    out = [f"model.from_pretrained={base_model}", f"model.expert={expert or 'null'}"]
    if features:
        out += ["data.data_txt=null", "data.manifest=null", f"data.features={features}"]
    elif manifest:
        out += ["data.data_txt=null", "data.features=null", f"data.manifest={manifest}"]
    if save_path:
        out.append(f"save_path={save_path}")
    if load_path:
        out.append(f"load_path={load_path}")
    return out


def planned_config(document: str, overrides: list[str], deployment: Deployment) -> TrainConfig:
    """The config the run trains with, its layout checked on deployment.world_size processes and its memory plan
    on the profile's devices."""
    cfg = resolve_document(document, [str(o) for o in overrides])
    preflight(cfg, deployment.world_size, profile=deployment.profile)
    return cfg


def pretrain_step(document: str, overrides: list[str], deployment: Deployment, launcher: str, run_id: str,
                  curve_html: Path, log_metric: Callable[[str, float], None], limits=None, max_restarts: int = 0) -> str:
    """`limits`: a components.k8s.launcher.JobLimits for a cluster job (the defaults when None); `max_restarts`:
    torchrun's restarts of the ranks (each resumes from the last checkpoint)."""
    from wan_core.train.checkpoint import claim_save_path
    from components.k8s.launcher import check_launch

    check_launch(deployment, launcher)
    cfg = planned_config(document, overrides, deployment)
    save_path = Location(cfg.save_path)  # a folder on the volume or an object-store URL, never through Path()
    claim_save_path(cfg.save_path)  # before the config goes in: a folder of someone else's files is refused
    config_path = save_path / CONFIG_NAME
    config_path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if launcher == "local":
        cmd = [sys.executable, "-m", "wan_core", "train", "--config", str(config_path)]
        if max_restarts:
            cmd += ["--max-restarts", str(max_restarts)]
        if deployment.devices_per_node > 1:
            cmd += ["--nproc", str(deployment.devices_per_node)]
        status = run_forwarding_sigterm(cmd)
        if status:
            raise UserError(f"training failed (exit status {status})")
    else:
        from components.k8s.launcher import JobLimits, launch_training

        launch_training(deployment, config_path, run_id, cfg.model.expert or "", launcher, limits or JobLimits(),
                        max_restarts=max_restarts, grace_s=cfg.train.stop_grace_s)
    metrics_path = save_path / "metrics.jsonl"
    curve_html.write_text(training_curve_html(metrics_path, f"training {cfg.model.variant} "
                                                            f"{cfg.model.expert or ''}".strip()))
    rows = read_metrics(metrics_path)
    if rows:
        log_metric("final_loss", rows[-1]["loss"])
        log_metric("steps", rows[-1]["step"])
        log_metric("samples_per_s", sum(r["samples_per_s"] for r in rows[1:] or rows) / len(rows[1:] or rows))
    return cfg.save_path


def trained_experts(document: str, overrides: list[str]) -> list[str]:
    """The experts a run of this config trains: ["high", "low"] for A14B, [""] (the one DiT) for 5B."""
    from wan_core.model import variants
    from wan_core.train.config import apply_overrides, document_mapping

    raw = apply_overrides(document_mapping(document), [str(o) for o in overrides])
    spec = variants.get(str((raw.get("model") or {}).get("variant")), "train_config model.variant")
    return list(spec.experts) if spec.two_experts else [""]


def plan_step(document: str, overrides: list[str], base_model: str, data_txt: str, workdir: str,
              deployment: Deployment, report_md: Path, sample_layout: dict | None = None,
              lora_format: str | None = None) -> int:
    """The first step that sees the training config: validate it, with the pipeline's wiring, for every expert
    the run will train, and its layout on the deployment, before any data is read or weights converted.
    Writes the resolved config(s) as the step's Markdown artifact; returns the number of experts (1 or 2)."""
    if lora_format is not None:  # the export's format, long before the export runs
        from wan_core.train.lora import check_lora_format

        check_lora_format(lora_format)
    experts = trained_experts(document, overrides)
    sections = []
    for expert in experts:
        save = f"{workdir.rstrip('/')}/train-{expert or 'dit'}"
        cfg = planned_config(document, [*overrides, *wiring(base_model, save_path=save, expert=expert),
                                        "data.manifest=null", "data.features=null", f"data.data_txt={data_txt}"],
                             deployment)
        sections.append(f"### {expert or 'the DiT'}\n\n```yaml\n{yaml.safe_dump(cfg.to_dict(), sort_keys=False)}```\n")
    if sample_layout:  # the sampling step's layout on its devices, long before it runs
        from wan_core.sample.parallel import SampleLayout
        from wan_core.train.plan import model_heads

        layout = dict(sample_layout)
        devices = layout.pop("devices")
        SampleLayout(**layout).dims(devices, model_heads(cfg))
    report_md.write_text(f"## Training config ({deployment.world_size} processes)\n\n" + "\n".join(sections))
    return len(experts)


def run_forwarding_sigterm(cmd: list[str]) -> int:
    """Run `cmd`; a SIGTERM this step's pod receives (the run stopped, the node drained) goes on to it, so training
    writes its checkpoint before the pod goes."""
    import signal

    proc = subprocess.Popen(cmd)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
