"""`wan22 train`: the training loop, in small overridable steps (torchtitan's shape).

One process, or one of several under torchrun: `Trainer` builds the rank layout (parallel/mesh.py),
shards the model with FSDP2 (parallel/fsdp.py) and splits sequences for context parallelism
(parallel/context_parallel.py) when the config asks for them. Data order,
noise and timesteps come from the seed and the global sample position (wan_core.data.dataset), so a
resumed run repeats exactly what an uninterrupted one would do.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from wan_core.config_fields import int_var
from wan_core.errors import UserError
from wan_core.model import variants
from wan_core.parallel.env import barrier, is_distributed, is_rank0
from wan_core.model.variants import EXPERT_SLOT
from wan_core.train import objective
from wan_core.train.checkpoint import CheckpointManager
from wan_core.progress import ProgressLines
from wan_core.train.config import TrainConfig, learning_rate, resume_changes
from wan_core.train.inputs import build_encoders, data_source

log = logging.getLogger("wan22.train")
METRICS = "metrics.jsonl"
# how gloo / NCCL / HCCL report that a peer process went away (the launcher then says which rank and why)
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
             "HCCL", "Socket Timeout")


class TrainingDiverged(UserError):
    pass


def megatron_line(step: int, iters: int, global_batch: int, last: dict) -> str:
    """Megatron's training_log line (the fields MindSpeed-MM's scripts and log parsers read)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f" [{stamp}] iteration {step:8d}/{iters:8d} | consumed samples: {step * global_batch:12d} | elapsed time "
            f"per iteration (ms): {last['step_time_s'] * 1000:.1f} | learning rate: {last['lr']:.6E} | global batch "
            f"size: {global_batch:5d} | loss: {last['loss']:.6E} | loss scale: 1.0 | grad norm: {last['grad_norm']:.3f} | "
            "number of skipped iterations:   0 | number of nan iterations:   0 |")


class TrainingStopped(UserError):
    """SIGTERM stopped the run after a step (and a checkpoint, when the grace period allowed one)."""
    exit_status = 143  # 128 + SIGTERM, as a process killed by it reports
    rank0_only = True  # every rank stops with it; one paragraph is enough


class StopRequest:
    """SIGTERM (Kubernetes evicting or draining the pod, torchrun passing it on) as a request: the loop finishes the
    step it is in, saves, and stops (torchrun kills the ranks after its shutdown timeout, set to the grace period)."""

    def __init__(self):
        self.at: float | None = None
        self.previous = None

    def __enter__(self):
        import signal

        self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        signal.signal(signal.SIGTERM, self.previous)

    def _handle(self, signum, frame):
        if self.at is None:  # torchrun sends it more than once; Ctrl-C (SIGINT) still stops at once
            self.at = time.monotonic()
            if is_rank0():
                print("SIGTERM: stopping after this step with a checkpoint", file=sys.stderr, flush=True)

    @property
    def requested(self) -> bool:
        return self.at is not None


def provenance(cfg: TrainConfig, manifest_digest: str | None) -> dict:
    import wan_core

    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(wan_core.__file__).parent, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": "wan22-kubeflow", "version": wan_core.__version__, "git_commit": commit,
            "config_hash": cfg.digest(), "data_manifest_hash": manifest_digest, "torch": torch.__version__}


class Trainer:
    def __init__(self, cfg: TrainConfig, device: torch.device | None = None, resume_from: int | None = None):
        from wan_core.device import compute_dtype, default_device
        from wan_core.parallel.mesh import ParallelDims

        self.cfg = cfg
        self.stop = StopRequest()
        self.last_save_s: float | None = None
        world = torch.distributed.get_world_size() if is_distributed() else 1
        self.dims = ParallelDims.of(cfg.parallel, world)  # the real world (a torchrun started by hand included)
        from wan_core.storage import is_url
        from wan_core.train.checkpoint import RemoteMirror, staging_dir

        self.device = device or default_device()
        # an fsspec save_path: every rank writes its checkpoint shards there; rank 0's own files (metrics, TensorBoard,
        # the resolved config) are staged locally and uploaded with each checkpoint
        self.mirror = None
        if is_url(cfg.save_path):
            self.save_path = staging_dir(cfg.save_path)
            self.mirror = RemoteMirror(cfg.save_path, self.save_path)
        else:
            self.save_path = Path(cfg.save_path)
        rank = torch.distributed.get_rank() if is_distributed() else 0
        self.dp_rank, self.dp_size = rank // self.dims.cp, self.dims.dp
        self.compute_dtype = compute_dtype(cfg.train.dtype, self.device)
        self.variant = variants.get(cfg.model.variant)
        o = cfg.objective
        self.schedule = objective.FlowMatchSchedule(o.num_train_timesteps, o.shift, o.sigma_min, o.sigma_max,
                                                    o.extra_one_step, o.grid_dtype)
        if o.min_timestep_boundary is None and o.max_timestep_boundary is None:
            self.lo, self.hi = self.variant.index_range(cfg.model.expert)
            self.lo, self.hi = self.lo * o.num_train_timesteps // 1000, self.hi * o.num_train_timesteps // 1000
        else:
            self.lo, self.hi = self.schedule.index_range(o.min_timestep_boundary or 0.0,
                                                         1.0 if o.max_timestep_boundary is None else
                                                         o.max_timestep_boundary)
        self.checkpoints = CheckpointManager(self.save_path, cfg.train.keep_last, self.mirror,
                                             trainable_only=cfg.train.lora is not None,
                                             remote=cfg.save_path if self.mirror is not None else None)
        self.claim_save_path()
        # where this run continues from, checked before any weight loads: the iteration, its trainer state (None for
        # a MindSpeed-MM checkpoint, whose weights become the initial ones), and what the config changed since
        self.resume_step = self.checkpoints.resume_point(resume_from, warn=self.say)
        self.saved_state = self.read_saved_state()
        self.changes = resume_changes(self.saved_state["config"], cfg) if self.saved_state else []
        self.entries, self.manifest_digest, self.features = self.build_data_source()
        self.model = self.build_model()
        # LoRA: only the adapters are trainable, so only they (and their moments) are in the optimizer
        t = cfg.train
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                           lr=learning_rate(t, 0), betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
                                           weight_decay=t.weight_decay)
        self.step = 0
        self.encoders = None

    def say(self, message: str) -> None:
        if is_rank0():
            print(message, file=sys.stderr, flush=True)

    def claim_save_path(self) -> None:
        """Rank 0 checks (and marks) the save folder; every rank stops with its verdict (no rank waits alone)."""
        from wan_core.train.checkpoint import claim_save_path

        problem = None
        if is_rank0():
            try:
                claim_save_path(self.cfg.save_path)
            except UserError as exc:
                problem = str(exc)
        if is_distributed():
            box = [problem]
            torch.distributed.broadcast_object_list(box, src=0)
            problem = box[0]
        if problem:
            raise UserError(problem)

    def read_saved_state(self) -> dict | None:
        """The resume point's trainer_state.json, or None (a fresh run, or a MindSpeed-MM iteration)."""
        from wan_core.weights.checkpoint_layout import TRAINER_STATE, iteration_dir

        if self.resume_step is None:
            return None
        path = iteration_dir(self.checkpoints.root, self.resume_step) / TRAINER_STATE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from None

    # -- building blocks ---------------------------------------------------------------------------
    def build_data_source(self):
        return data_source(self.cfg)

    def build_encoders(self):
        return build_encoders(self.cfg, self.device)

    def build_model(self):
        import wan_core
        from wan_core.device import compile_wanted
        from wan_core.model.dit import WanDiT

        from wan_core.weights.layouts import VariantMismatch, check_variant

        cfg = self.cfg
        source = cfg.load_path or str(Path(cfg.model.from_pretrained) / EXPERT_SLOT[cfg.model.expert or "high"])
        what = "load_path" if cfg.load_path else "model.from_pretrained"
        if self.resume_step is not None and self.saved_state is None:  # a MindSpeed-MM iteration: its weights
            source, what = str(self.checkpoints.root), "save_path"
            self.say(f"warning: {source} holds MindSpeed-MM's iteration {self.resume_step}: training continues from "
                     "its weights with a fresh optimizer state")
        try:
            check_variant(source, cfg.model.variant, what)  # from the headers, before any tensor loads
            model = wan_core.load_dit(source, dtype=torch.float32)
        except VariantMismatch:
            raise
        except UserError as exc:
            if not cfg.allow_random_init:
                raise UserError(f"cannot load the initial weights ({exc}). Fix load_path / model.from_pretrained, or "
                                "set allow_random_init: true to train from random weights on purpose") from None
            from wan_core.model.config import WanConfig

            config_path = Path(cfg.model.from_pretrained) / "transformer" / "config.json"
            if not config_path.is_file():
                raise UserError(f"allow_random_init needs the architecture: {config_path} is missing") from None
            log.warning("training from random weights (allow_random_init): %s", exc)
            torch.manual_seed(cfg.train.seed)  # initial weights depend on the seed only
            model = WanDiT(WanConfig.from_json_file(config_path))
        if cfg.train.lora is not None:
            from wan_core.train.lora import add_lora, init_from_file, read_lora_file

            torch.manual_seed(cfg.train.seed)  # the same initial adapters on every rank
            add_lora(model, cfg.train.lora)
            if cfg.train.lora.init:  # a resumed run's checkpoint replaces these when it loads
                init_from_file(model, read_lora_file(cfg.train.lora.init), cfg.train.lora)
            if cfg.train.dtype == "bf16" and not is_distributed():
                # the frozen base is kept in bf16 (FSDP keeps one storage dtype per block and casts for compute)
                model.to_compute_dtype(torch.bfloat16, frozen_only=True)
        model = model.to(self.device).train()
        if is_distributed():  # FSDP2 over dp x cp, then context parallelism (the same weights on every rank)
            from wan_core.parallel.fsdp import parallelize
            from wan_core.parallel.mesh import ParallelDims

            self.dims = ParallelDims.of(cfg.parallel, self.dims.world_size, model.config.num_heads)
            return parallelize(model, self.dims, self.dims.build_mesh(), cfg.train.dtype,
                               cfg.train.activation_checkpointing,
                               compile_blocks=compile_wanted(cfg.train.compile, self.device))
        if cfg.train.activation_checkpointing:
            model.enable_activation_checkpointing()
        if compile_wanted(cfg.train.compile, self.device):
            model.compile_blocks()
        return model

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over every data-parallel rank."""
        t = self.cfg.train
        return t.micro_batch_size * self.dp_size * t.grad_accum

    def dataset(self):
        """What the positions index: the feature cache, or the clips (MindSpeed-MM's rules need the global batch)."""
        from wan_core.train.inputs import clip_dataset

        if self.features:
            return self.features.dataset(self.cfg.train.seed)
        return clip_dataset(self.cfg, self.entries, self.global_batch)

    def build_loader(self, start_step: int):
        from wan_core.data.dataset import PositionSampler, collate
        from wan_core.device import loader_workers

        t, d = self.cfg.train, self.cfg.data
        dataset = self.dataset()
        sampler = PositionSampler(start_step, t.iters, t.micro_batch_size, self.dp_size, t.grad_accum, self.dp_rank)
        workers = loader_workers(d.num_workers, self.device)
        accelerator = self.device.type != "cpu"
        return torch.utils.data.DataLoader(dataset, batch_size=t.micro_batch_size, sampler=sampler,
                                           num_workers=workers, collate_fn=collate, pin_memory=accelerator,
                                           prefetch_factor=2 if workers else None, persistent_workers=False)

    # -- one micro-batch ---------------------------------------------------------------------------
    def per_sample_draws(self, batch: dict, latent_shape) -> dict:
        """Timestep index, noise and dropouts of each sample, from (seed, global position) only."""
        from wan_core.data.dataset import sample_generator

        idx, noise, drop, first = [], [], [], []
        for p in batch["position"].tolist():
            g = sample_generator(self.cfg.train.seed, p)
            idx.append(int(torch.randint(self.lo, self.hi, (1,), generator=g)))
            noise.append(torch.randn(latent_shape, generator=g))
            drop.append(float(torch.rand(1, generator=g)) < self.cfg.data.caption_dropout)
            first.append(float(torch.rand(1, generator=g)) < self.cfg.data.first_frame_prob)
        if self.cfg.objective.timestep_draw == "per_batch":  # the micro-batch's first draw for all its samples
            idx = idx[:1] * len(idx)
        return {"index": torch.tensor(idx), "noise": torch.stack(noise).to(self.device), "drop": drop, "first": first}

    def encode(self, batch: dict, drop: list[bool]):
        """(x0 latents, text context, i2v condition or None) for a batch (cached features or online)."""
        if "latents" in batch:
            empty = self.features.empty_text
            text = torch.stack([empty if dr else t for t, dr in zip(batch["text"], drop)])
            cond = batch.get("condition")
            return (batch["latents"].to(self.device), text.to(self.device),
                    None if cond is None else cond.to(self.device))
        if self.encoders is None:
            self.encoders = self.build_encoders()
        text_encoder, vae = self.encoders
        video = batch["video"].to(self.device)
        x0 = vae.encode(video)
        text = text_encoder.encode(["" if dr else c for c, dr in zip(batch["caption"], drop)])
        cond = None
        if self.cfg.model.task == "i2v":
            from wan_core.encoders import first_frame_condition

            cond = first_frame_condition(vae, video[:, :, 0], video.shape[2])
        return x0, text, cond

    def loss(self, batch: dict) -> torch.Tensor:
        cfg = self.cfg
        draws = None
        with torch.no_grad():
            if "latents" in batch:
                shape = batch["latents"].shape[1:]
            else:  # the batch's own size: with variable resolution each micro-batch has its own
                shape = self.variant.latent_shape(*batch["video"].shape[2:])
            draws = self.per_sample_draws(batch, shape)
            x0, text, cond = self.encode(batch, draws["drop"])
            noise = draws["noise"]
            if cfg.model.task == "ti2v" and cfg.data.ti2v_loss == "all_frames":
                # MindSpeed-MM / DiffSynth v1: the first frame's noise is its clean latent (target there ~ 0)
                first = torch.tensor(draws["first"], device=self.device).view(-1, 1, 1, 1)
                noise = noise.clone()
                noise[:, :, 0] = torch.where(first, x0[:, :, 0], noise[:, :, 0])
            x_t, target, t, weight = objective.noisy_input(x0, noise, draws["index"], self.schedule)
            timestep = t
            loss_mask = torch.ones_like(x0[:, :1])
            if cfg.model.task == "ti2v":
                from wan_core.encoders import clean_first_frame

                x_t, timestep = clean_first_frame(x_t, x0, t, draws["first"], self.variant.patch)
                if cfg.data.ti2v_loss == "exclude_first_frame":
                    for b, use_first in enumerate(draws["first"]):
                        if use_first:
                            loss_mask[b, :, 0] = 0.0
            if cfg.objective.separated_timestep:  # MindSpeed-MM's 5B: frame-0 tokens at t = 0 in every task
                from wan_core.encoders import first_frame_timesteps

                timestep = first_frame_timesteps(t, x0.shape, self.variant.patch, [True] * x0.shape[0])
            model_in = x_t if cond is None else torch.cat([x_t, cond], dim=1)
        autocast = self.compute_dtype == torch.bfloat16 and not is_distributed()  # FSDP casts parameters itself
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            pred = self.model(model_in, timestep, text)
        se = (pred.float() - target.float()) ** 2 * loss_mask
        per_sample = se.flatten(1).sum(1) / (loss_mask.flatten(1).sum(1) * se.shape[1])
        return (per_sample * weight).mean()

    @torch.no_grad()
    def evaluate(self, positions: list[int]) -> float:
        """Mean loss over fixed global positions (same draws every call): a noise-free progress measure."""
        from wan_core.data.dataset import collate

        dataset = self.dataset()
        was_training = self.model.training
        self.model.eval()
        losses = [float(self.loss(collate([dataset[p]]))) for p in positions]
        self.model.train(was_training)
        return sum(losses) / len(losses)

    # -- one optimizer step ------------------------------------------------------------------------
    def train_step(self, micro_batches: list[dict]) -> dict:
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for batch in micro_batches:  # no host sync between micro-batches: the loss stays on the device
            loss = self.loss(batch) / len(micro_batches)
            loss.backward()
            total = total + loss.detach().double()
        total = float(total)  # the step's one sync (the divergence check needs it)
        clip = self.cfg.train.clip_grad
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        stop = self.stop.requested
        if is_distributed():  # the mean over data-parallel groups (CP ranks of a group hold the same loss); and
            # whether any rank received SIGTERM, so that all stop after the same step
            t = torch.tensor([total, float(stop)], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            total, stop = float(t[0]) / torch.distributed.get_world_size(), bool(t[1] > 0)
        if stop:
            self.stop.at = self.stop.at or time.monotonic()  # another rank received it: stop with it
        if not math.isfinite(total) or not math.isfinite(float(grad_norm)):
            raise TrainingDiverged(f"step {self.step + 1}: loss {total} / grad norm {float(grad_norm)} is not finite; "
                                   f"stopping (last checkpoint: {self.checkpoints.latest()}). Lower train.lr or check "
                                   "the data")
        lr = learning_rate(self.cfg.train, self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        samples = sum(len(b["position"]) for b in micro_batches) * self.dp_size
        elapsed = time.perf_counter() - t0
        return {"step": self.step + 1, "loss": total, "lr": lr, "grad_norm": float(grad_norm),
                "samples_per_s": samples / elapsed, "step_time_s": elapsed}

    # -- state ---------------------------------------------------------------------------------------
    def trainer_state(self) -> dict:
        model_config = getattr(self.model, "config", None)
        return {"step": self.step, "model_config": model_config.to_diffusers() if model_config else None,
                "sampler_position": self.step * self.global_batch,
                "provenance": provenance(self.cfg, self.manifest_digest),
                "config": self.cfg.to_dict()}

    def save(self) -> None:
        started = time.monotonic()
        self.checkpoints.save(self.step, self.model, self.optimizer, self.trainer_state())
        self.last_save_s = time.monotonic() - started

    def resume(self) -> None:
        if self.resume_step is None:
            return
        if self.saved_state is None:  # MindSpeed-MM's iteration: its weights are loaded, the count continues
            self.step = self.resume_step
            return
        self.checkpoints.load(self.resume_step, self.model, self.optimizer)
        t = self.cfg.train
        for group in self.optimizer.param_groups:  # the config's settings, not the checkpoint's
            group.update(betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps, weight_decay=t.weight_decay)
        self.step = self.saved_state["step"]
        # a person should know a run continued, from where, and what changed
        changed = f"; changed since then: {', '.join(self.changes)}" if self.changes else ""
        self.say(f"resumed from {self.save_path} at step {self.step} (iter_{self.step:07d}){changed}")

    def truncate_metrics(self) -> None:
        """After a resume, drop metrics lines past the restored step so each step appears once."""
        path = self.save_path / METRICS
        if not is_rank0() or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.step]
        path.write_text("".join(line + "\n" for line in kept))

    # -- the loop ------------------------------------------------------------------------------------
    def train(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        rank0 = is_rank0()
        if rank0:
            self.save_path.mkdir(parents=True, exist_ok=True)
            if self.mirror is not None:
                self.mirror.pull()
        barrier()
        self.resume()
        if self.step > cfg.train.iters:
            raise UserError(f"{self.save_path} holds a checkpoint at step {self.step}, past train.iters "
                            f"{cfg.train.iters}: raise train.iters above {self.step} to continue that run, or pass "
                            "--overwrite (or another save_path) to start afresh")
        if self.step == cfg.train.iters:
            self.say(f"nothing to do: the checkpoint in {self.save_path} is already at train.iters ({self.step})")
            return {"step": self.step}
        self.truncate_metrics()
        writer = metrics_file = None
        if rank0:  # rank 0 writes the metrics, TensorBoard events and the resolved config
            (self.save_path / "config.resolved.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            writer = SummaryWriter(str(self.save_path / "tensorboard"), purge_step=self.step + 1)
            metrics_file = open(self.save_path / METRICS, "a")
        loader = iter(self.build_loader(self.step))
        last = {}
        progress = ProgressLines(cfg.train.iters, start=self.step)
        on_terminal = sys.stderr.isatty()
        try:
            with self.stop:
                while self.step < cfg.train.iters:
                    micro = [next(loader) for _ in range(cfg.train.grad_accum)]
                    last = self.train_step(micro)
                    self.step += 1
                    if rank0:
                        metrics_file.write(json.dumps(last) + "\n")
                        metrics_file.flush()
                        for key in ("loss", "lr", "grad_norm", "samples_per_s"):
                            writer.add_scalar(f"train/{key}", last[key], self.step)
                    if cfg.train.log_format == "megatron":
                        if rank0 and self.step % cfg.train.log_interval == 0:
                            print(megatron_line(self.step, cfg.train.iters, self.global_batch, last), flush=True)
                    # a terminal: every log_interval steps; a log (a pod's): every step or 5%, whichever is rarer
                    elif rank0 and (self.step == cfg.train.iters or (self.step % cfg.train.log_interval == 0
                                                                      if on_terminal else progress.due(self.step))):
                        print(f"step {self.step}/{cfg.train.iters} loss {last['loss']:.5f} lr {last['lr']:.2e} "
                              f"grad_norm {last['grad_norm']:.3f} {last['samples_per_s']:.2f} samples/s, "
                              f"{progress.timing(self.step)}", file=sys.stderr, flush=True)
                    saved = self.step % cfg.train.save_interval == 0 or self.step == cfg.train.iters
                    if saved:
                        self.save()
                    if self.stop.requested and self.step < cfg.train.iters:
                        self.stop_now(saved)
        finally:
            if rank0:
                metrics_file.close()
                writer.close()
        if rank0 and self.mirror is not None:
            self.mirror.push(files=("metrics.jsonl", "config.resolved.json", "tensorboard"))
        return last

    def stop_now(self, saved: bool) -> None:
        """After SIGTERM: a checkpoint of this step when the grace period still has room for one (the last save's
        duration tells), then TrainingStopped saying where the next run resumes."""
        grace = self.cfg.train.stop_grace_s
        elapsed = time.monotonic() - self.stop.at
        if not saved and (self.last_save_s is None or elapsed + self.last_save_s <= grace):
            self.save()
            saved = True
        where = self.checkpoints.latest()
        resume = f"iter_{where:07d}" if where is not None else "the start (no checkpoint yet)"
        note = "" if saved else (f" (no time left in train.stop_grace_s = {grace} s for a checkpoint of step "
                                 f"{self.step})")
        raise TrainingStopped(f"stopped by SIGTERM after step {self.step}{note}; run the same command again to resume "
                              f"from {resume} in {self.cfg.save_path}")


def run_training(cfg: TrainConfig, resume_from: int | None = None) -> dict:
    from wan_core.parallel.env import device_for, init_distributed

    torch.manual_seed(cfg.train.seed)
    threads = int_var(os.environ, "WAN22_TORCH_THREADS")
    if threads:
        torch.set_num_threads(threads)
    penv = init_distributed(cfg.parallel.timeout_s)
    try:
        return Trainer(cfg, device=device_for(penv), resume_from=resume_from).train()
    except RuntimeError as exc:
        if penv is None or not any(m in str(exc) for m in PEER_LOST):
            raise
        raise UserError(f"rank {penv.rank}: another rank stopped in the middle of a step (the collective failed: "
                        f"{str(exc).split('. ')[0].split('] ')[-1]})") from None
    finally:
        if is_distributed():
            torch.distributed.destroy_process_group()
