"""Predicted peak device memory per process, before anything launches: `wan22 plan`, and the check `wan22 train`,
`wan22 sample`, `wan22 pipeline run` and the pretrain step make before they load weights or submit a job.

A plan adds up what one process holds at its busiest moment:
- weights: the DiT parameter count from its config (exact), the text encoder's and VAE's from their safetensors
  headers (exact; a table when the files cannot be read), in the dtype they are held in, divided by the processes
  that shard them (training's FSDP over every process; sampling's --shard-weights over a video's group);
- training state: fp32 gradients and AdamW's two moments of the trainable parameters, sharded like the weights,
  and FSDP's gathered copies of the blocks being computed (two: the current one and the one prefetched);
- activations per token and block: what autograd keeps in training, counted with saved_tensors_hooks over
  `WanBlock` (C x (9.5 d + 54) + 2 F d bytes per token, d = compute dtype bytes, and 3 x 512 x C x d per sample
  for the text keys and values; tests/test_memory_plan.py recounts it at other shapes), and with online encoding
  the VAE encoder's work on the micro-batch's clips (per pixel and base channel, measured on the CPU); times the
  layers, or one block input per layer plus one block when checkpointing; at inference the live set of the FFN, the largest moment of a block (d (3 C + 2 F) + 16 C bytes), checked against measured
  peaks in benchmarks/memory_plan.py; tokens are the sequence divided by the CP degree;
- sampling phases: encoding (text encoder), denoising (DiT), decoding (VAE, tiled above 512 pixels, its working
  memory per pixel and channel measured on the CPU); the peak is the largest phase given what the offload mode
  leaves resident.
A run is refused when the peak passes 92% of the device (the runtime, the allocator's fragmentation and the
collectives' buffers take the rest), with the numbers and the cheapest change that would fit.
"""
from __future__ import annotations

import dataclasses
import json
import math

from wan_core.errors import UserError

GB = 1e9
USABLE = 0.92  # of the device's memory
# device memory by name (vendor figures), and which device each deployment profile means by default
DEVICE_MEMORY_GB = {"ascend-910b": 64, "h100": 80, "h200": 141, "a100-80gb": 80}
PROFILE_DEVICE = {"npu": "ascend-910b", "cuda": "h100"}
DTYPE_BYTES = {"fp32": 4, "bf16": 2}
TEXT_TOKENS = 512
OFFLOAD_ORDER = ("none", "model", "sequential")  # least to most offloading (wan_core.sample.offload's modes)
# when safetensors headers cannot be read (a remote folder): parameters of the released encoders
TEXT_ENCODER_PARAMS = 5.68e9  # UMT5-XXL encoder
VAE_PARAMS = {"wan2.1": 127e6, "wan2.2": 705e6}
VAE_TILE = 256  # pixels: diffusers' tile_sample_min_height/width
# the VAE decoder's working memory per pixel of a (tile of a) frame and per channel of its base width, in bytes:
# measured on this CPU (benchmarks/memory_plan.py: 140 fp32 values for Wan2.1's VAE, 66 for Wan2.2's, which decodes
# at half resolution and unpatchifies); it does not grow with the frame count (the decoder works a chunk at a time)
VAE_DECODE_BYTES = {"wan2.1": 140 * 4, "wan2.2": 66 * 4}
# the encoder's, per pixel of a whole (untiled) training clip's frame and per channel of its base width (the same
# measurement): training encodes clips online unless it reads a feature cache
VAE_ENCODE_BYTES = {"wan2.1": 545, "wan2.2": 210}


def train_activation_bytes(dim: int, ffn: int, dtype_bytes: int, tokens: int) -> float:
    """Bytes autograd keeps for one WanBlock in training, for one sample of `tokens` video tokens: per token, and
    the cross-attention's keys and values of the 512 text tokens per sample."""
    return tokens * (dim * (9.5 * dtype_bytes + 54) + 2 * ffn * dtype_bytes) + 3 * TEXT_TOKENS * dim * dtype_bytes


def inference_activation_bytes(dim: int, ffn: int, dtype_bytes: int) -> float:
    """Bytes live per token at a block's busiest moment without autograd (the FFN)."""
    return dtype_bytes * (3 * dim + 2 * ffn) + 16 * dim


def device_memory_bytes(override_gb: float | None = None, device=None, profile: str | None = None) -> float | None:
    """The memory a process's device has: an explicit value wins, then the device itself (CUDA/NPU), then the
    deployment profile's device; None on the CPU (no limit is checked there)."""
    if override_gb:
        return override_gb * GB
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        import torch

        return float(getattr(torch, device.type).get_device_properties(device).total_memory)
    if profile in PROFILE_DEVICE:
        return DEVICE_MEMORY_GB[PROFILE_DEVICE[profile]] * GB
    return None


def safetensors_params(folder) -> int | None:
    """Parameter count of every *.safetensors file in `folder` (a path or URL), from their headers only."""
    from wan_core.storage import Location
    from wan_core.weights.safetensors_io import SafetensorsReader

    where = Location(str(folder))
    try:
        readers = [SafetensorsReader(f) for f in where.glob("*.safetensors")]
    except (OSError, UserError):
        return None
    return sum(math.prod(e.meta.shape) for r in readers for e in r.entries.values()) or None


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What the memory depends on in the model: its DiT shape and the encoders' sizes."""
    dim: int
    ffn: int
    layers: int
    block_params: int
    root_params: int  # embeddings, time MLPs, head
    experts: int
    text_params: float
    vae_params: float
    variant: object  # wan_core.model.variants.Variant
    vae_base_dim: int = 96  # the VAE decoder's base width (decoder_base_dim, else base_dim)
    vae_encoder_dim: int = 96  # the VAE encoder's base width (base_dim)

    @property
    def dit_params(self) -> int:
        return self.root_params + self.layers * self.block_params

    def tokens(self, frames: int, height: int, width: int) -> int:
        _, t, h, w = self.variant.latent_shape(frames, height, width)
        return t * (h // self.variant.patch) * (w // self.variant.patch)

    @classmethod
    def of_config(cls, config, variant, text_params: float, vae_params: float, vae_base_dim: int | None = None,
                  vae_encoder_dim: int | None = None) -> "Geometry":
        from wan_core.model.dit import parameter_shapes

        shapes = parameter_shapes(config)
        block = sum(math.prod(s) for k, s in shapes.items() if k.startswith("blocks.0."))
        root = sum(math.prod(s) for k, s in shapes.items() if not k.startswith("blocks."))
        return cls(config.dim, config.ffn_dim, config.num_layers, block, root, len(variant.experts), text_params,
                   vae_params, variant, vae_base_dim or (256 if variant.vae == "wan2.2" else 96),
                   vae_encoder_dim or (160 if variant.vae == "wan2.2" else 96))

    @classmethod
    def of_variant(cls, name: str) -> "Geometry":
        """The released model's geometry (no weights needed)."""
        from wan_core.model import variants
        from wan_core.model.config import WanConfig

        variant = variants.get(name)
        return cls.of_config(WanConfig.from_preset(variant.preset), variant, TEXT_ENCODER_PARAMS,
                             VAE_PARAMS[variant.vae])

    @classmethod
    def of_folder(cls, folder, variant_name: str | None = None) -> "Geometry":
        """From a diffusers pipeline folder (its transformer config, and the encoders' headers when readable)."""
        from wan_core.model import variants
        from wan_core.model.config import WanConfig
        from wan_core.storage import Location

        folder = Location(str(folder))
        try:
            raw = json.loads((folder / "transformer" / "config.json").read_text())
            config = WanConfig.from_any_json(raw)
            variant = (variants.recognise_pipeline(json.loads((folder / "model_index.json").read_text()), raw)
                       if variant_name is None else variants.get(variant_name))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"memory plan: cannot read the model at {folder} ({exc}); a diffusers pipeline folder "
                            "is needed") from None
        try:
            vae_config = json.loads((folder / "vae" / "config.json").read_text())
            base_dim = int(vae_config.get("decoder_base_dim") or vae_config.get("base_dim") or 0) or None
            encoder_dim = int(vae_config.get("base_dim") or 0) or None
        except (OSError, ValueError, TypeError):
            base_dim = encoder_dim = None
        return cls.of_config(config, variant, safetensors_params(folder / "text_encoder") or TEXT_ENCODER_PARAMS,
                             safetensors_params(folder / "vae") or VAE_PARAMS[variant.vae], base_dim, encoder_dim)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    what: str  # "train" | "sample"
    parts: dict  # name -> bytes at the peak
    device_bytes: float | None
    suggestion: str | None = None

    @property
    def peak(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.device_bytes is None or self.peak <= USABLE * self.device_bytes

    def summary(self) -> str:
        parts = ", ".join(f"{name} {value / GB:.3g}" for name, value in self.parts.items() if value)
        limit = ("no device limit known (CPU)" if self.device_bytes is None else
                 f"device {self.device_bytes / GB:.3g} GB, {USABLE:.0%} usable = {USABLE * self.device_bytes / GB:.3g} GB")
        return f"{self.what} memory plan: peak {self.peak / GB:.3g} GB per process ({parts}); {limit}"

    def check(self) -> None:
        """Refuse, in one paragraph, a run that cannot fit."""
        if self.fits:
            return
        fix = self.suggestion or "no single change makes it fit: combine them, or use a larger device"
        raise UserError(f"this run does not fit the device: {self.summary()}. Cheapest change that fits: {fix} "
                        "(or give the device's real memory with --device-memory-gb if it differs)")


# -- training -------------------------------------------------------------------------------------------
def train_parts(g: Geometry, *, tokens: int, micro_batch: int, dtype: str, world: int, cp: int,
                checkpointing: bool, lora_rank: int | None, lora_targets: int, features: bool,
                clip: tuple[int, int, int] = (0, 0, 0)) -> dict:
    """`clip`: (frames, height, width) of a training clip, for the VAE's work when it encodes online."""
    d = DTYPE_BYTES[dtype]
    local_tokens = math.ceil(tokens / cp)
    if lora_rank:  # adapters on `lora_targets` linears per block, each r x (in + out)
        trainable = g.layers * lora_targets * lora_rank * 2 * g.dim
        base = g.dit_params * (4 if world > 1 else d) / world  # FSDP keeps fp32 storage; one process keeps bf16
    else:
        trainable = g.dit_params
        base = 4 * g.dit_params / world
    parts = {"weights": base + (4 * trainable / world if lora_rank else 0),
             "gradients": 4 * trainable / world, "optimizer": 8 * trainable / world}
    if world > 1:  # FSDP's gathered blocks (current + prefetched) and their unreduced fp32 gradients
        block_trainable = lora_targets * lora_rank * 2 * g.dim if lora_rank else g.block_params
        parts["gathered blocks"] = 2 * g.block_params * d + g.root_params * d
        parts["gathered gradients"] = 2 * block_trainable * 4
    block = train_activation_bytes(g.dim, g.ffn, d, local_tokens)
    per_layer = local_tokens * g.dim * d if checkpointing else block  # checkpointing keeps each block's input
    parts["activations"] = micro_batch * (g.layers * per_layer + (block if checkpointing else 0))
    if not features:  # online encoding: both encoders on the device, and the VAE's work on the micro-batch's clips
        frames, height, width = clip
        parts["encoders"] = g.text_params * d + g.vae_params * 4
        parts["vae encoding"] = micro_batch * (VAE_ENCODE_BYTES[g.variant.vae] * height * width * g.vae_encoder_dim
                                               + frames * height * width * 3 * 4)
    return parts


def plan_training(cfg, world: int, device_bytes: float | None, geometry: Geometry | None = None) -> MemoryPlan:
    """The plan for a TrainConfig on `world` processes, with the cheapest change that fits when it does not."""
    g = geometry or Geometry.of_folder(cfg.model.from_pretrained, cfg.model.variant)
    data = cfg.data
    area = max(data.height * data.width, data.max_hxw or 0)
    side = math.isqrt(area)
    knobs = dict(tokens=g.tokens(data.num_frames, side, side), clip=(data.num_frames, side, side),
                 micro_batch=cfg.train.micro_batch_size,
                 dtype=cfg.train.dtype, world=world, cp=cfg.parallel.cp, checkpointing=cfg.train.activation_checkpointing,
                 lora_rank=cfg.train.lora.rank if cfg.train.lora else None,
                 lora_targets=len(cfg.train.lora.targets) if cfg.train.lora else 0,
                 features=bool(data.features))
    plan = MemoryPlan("train", train_parts(g, **knobs), device_bytes)
    if plan.fits:
        return plan
    changes = []
    if not knobs["checkpointing"]:
        changes.append(("set train.activation_checkpointing=true", {"checkpointing": True}))
    for cp in (c for c in (2, 4, 8, 16) if c > knobs["cp"] and world % c == 0):
        changes.append((f"set parallel.cp={cp}", {"cp": cp}))
    if not knobs["features"]:
        changes.append(("cache the features first (wan22 cache-features; data.features)", {"features": True}))
    if knobs["dtype"] == "fp32":
        changes.append(("set train.dtype=bf16", {"dtype": "bf16"}))
    return dataclasses.replace(plan, suggestion=_first_fit(g, knobs, changes, device_bytes, train_parts))


# -- sampling -------------------------------------------------------------------------------------------
def sample_parts(g: Geometry, *, frames: int, height: int, width: int, batch: int, dtype: str, cp: int, group: int,
                 shard: bool, offload: str, cfg: bool, cfg_split: bool, accelerator: bool) -> dict:
    """Bytes at the largest of the three phases (encode, denoise, decode), by what they are."""
    d = DTYPE_BYTES[dtype]
    tokens = g.tokens(frames, height, width)
    div = group if shard else 1
    expert = g.dit_params * d / div
    text, vae = g.text_params * d / div, g.vae_params * 4
    passes = 2 if cfg and not cfg_split and accelerator else 1  # CFG batched into one forward on accelerators
    live = batch * passes * math.ceil(tokens / cp) * inference_activation_bytes(g.dim, g.ffn, d)
    contexts = g.experts * (2 if cfg else 1) * batch * g.layers * 2 * TEXT_TOKENS * g.dim * d  # prepared K/V
    tiled = max(height, width) > 512
    tile_area = VAE_TILE * VAE_TILE if tiled else height * width
    # the decoded video lives 4 times at the end: the decoder's chunks, their concatenation, and the two
    # temporaries of the conversion to [0, 1]
    video = frames * height * width * 3 * 4
    decode_ws = batch * (VAE_DECODE_BYTES[g.variant.vae] * tile_area * g.vae_base_dim + 4 * video)
    if offload == "none":
        resident = {"dit": g.experts * expert, "text encoder": text, "vae": vae}
        phases = [dict(resident), {**resident, "activations": live, "contexts": contexts},
                  {**resident, "vae workspace": decode_ws}]
    else:
        dit = expert if offload == "model" else (g.root_params + 2 * g.block_params) * d
        phases = [{"text encoder": text}, {"dit": dit, "activations": live, "contexts": contexts},
                  {"vae": vae, "vae workspace": decode_ws}]
    if shard:
        phases[1]["gathered blocks"] = 2 * g.block_params * d
    return max(phases, key=lambda p: sum(p.values()))


def plan_sampling(g: Geometry, *, frames: int, height: int, width: int, batch: int, dtype: str, cp: int = 1,
                  group: int = 1, shard: bool = False, offload: str = "none", cfg: bool = True,
                  cfg_split: bool = False, accelerator: bool = True, device_bytes: float | None = None,
                  nproc: int = 1) -> MemoryPlan:
    knobs = dict(frames=frames, height=height, width=width, batch=batch, dtype=dtype, cp=cp,
                 group=group, shard=shard, offload=offload, cfg=cfg, cfg_split=cfg_split, accelerator=accelerator)
    plan = MemoryPlan("sample", sample_parts(g, **knobs), device_bytes)
    if plan.fits:
        return plan
    changes = [(f"--offload {mode}", {"offload": mode}) for mode in OFFLOAD_ORDER[OFFLOAD_ORDER.index(offload) + 1:]]
    for k in (2, 4, 8):
        if nproc % (k * (2 if cfg_split else 1)) == 0 and k > cp:
            changes.append((f"--cp {k} --shard-weights", {"cp": k, "group": k * (2 if cfg_split else 1),
                                                           "shard": True, "offload": "none"}))
    return dataclasses.replace(plan, suggestion=_first_fit(g, knobs, changes, device_bytes, sample_parts))


def choose_offload(g: Geometry, device_bytes: float | None, nproc: int = 1, **knobs) -> str:
    """--offload auto: the least offloading whose plan fits the device (none on the CPU)."""
    for mode in OFFLOAD_ORDER:
        if MemoryPlan("sample", sample_parts(g, offload=mode, **knobs), device_bytes).fits:
            return mode
    return OFFLOAD_ORDER[-1]


def _first_fit(g, knobs, changes, device_bytes, parts_fn) -> str | None:
    for text, change in changes:
        plan = MemoryPlan("", parts_fn(g, **{**knobs, **change}), device_bytes)
        if plan.fits:
            return f"{text} (peak {plan.peak / GB:.2f} GB)"
    return None
