"""The layout check every launch makes first: a training config's parallel layout on the processes the run will
really have (nodes x devices per node; locally --nproc), against the model's attention heads, before any process,
pod or job starts. `wan22 train`, `wan22 pipeline run` and the pretrain step (before it trains here or submits a
cluster job) all call `parallel_layout`; the trainer re-makes the same ParallelDims from its process group."""
from __future__ import annotations

import json

from wan_core.errors import UserError
from wan_core.model.variants import expert_slot
from wan_core.parallel.mesh import ParallelDims
from wan_core.storage import Location
from wan_core.train.config import TrainConfig


def model_heads(cfg: TrainConfig) -> int:
    """The attention heads of the DiT this config trains: the base's transformer config.json for its expert, else
    the load_path checkpoint's config.json."""
    places = [Location(cfg.model.from_pretrained) / expert_slot(cfg.model.expert) / "config.json"]
    if cfg.load_path:
        places.append(Location(cfg.load_path) / "config.json")
    for place in places:
        try:
            return int(json.loads(place.read_text())["num_attention_heads"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    raise UserError(f"cannot read the model's attention heads from {' or '.join(map(str, places))}: the parallel "
                    "layout cannot be checked before launch (is model.from_pretrained a diffusers pipeline folder?)")


def parallel_layout(cfg: TrainConfig, world_size: int) -> ParallelDims:
    """The run's ParallelDims on `world_size` processes, validated (a UserError names the valid choices)."""
    return ParallelDims.of(cfg.parallel, world_size, model_heads(cfg))


def preflight(cfg: TrainConfig, world_size: int, device=None, profile: str | None = None):
    """Everything checked before a training launches: the layout, then the memory plan against the device's memory
    (parallel.device_memory_gb, else the visible device's, else the deployment profile's). Returns the plan."""
    from wan_core.memory import device_memory_bytes, plan_training

    parallel_layout(cfg, world_size)
    plan = plan_training(cfg, world_size, device_memory_bytes(cfg.parallel.device_memory_gb, device, profile))
    plan.check()
    return plan
