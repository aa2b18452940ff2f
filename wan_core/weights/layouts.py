"""Checkpoint folders: recognising them and reading their DiT weights, one place for every layout.

Recognised (any local path or fsspec URL):
- a diffusers pipeline folder (`model_index.json`, `transformer/`, optional `transformer_2/`)
- a folder holding `transformer/` [+ `transformer_2/`] mm folders (what a whole-pipeline hf_to_mm writes)
- official Wan A14B: `high_noise_model/` + `low_noise_model/`
- a diffusers `transformer` folder or an official Wan folder: `diffusion_pytorch_model*.safetensors`
- an mm folder: `latest_checkpointed_iteration.txt` + `release/` or `iter_NNNNNNN/` holding sharded
  safetensors + index (this project) or `mp_rank_00/model_optim_rng.pt` (MindSpeed-MM)
Expert slots: `transformer` = high-noise expert, `transformer_2` = low-noise expert; "" = single DiT.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import torch

from wan_core.weights.checkpoint_layout import MM_INDEX, MM_PT, POINTER_FILE, RELEASE, DcpModelReader, mm_checkpoint_dir
from wan_core.errors import UserError
from wan_core.mindspeed.unpickler import load_model_tensors
from wan_core.model.config import PRESETS, WanConfig
from wan_core.model.variants import OFFICIAL_EXPERT_DIRS, expert_slot
from wan_core.storage import Location
from wan_core.weights.names import UnknownKeyError, convert_key, detect_layout
from wan_core.weights.safetensors_io import SafetensorsReader, TensorMeta

DIFFUSERS_INDEX = "diffusion_pytorch_model.safetensors.index.json"

log = logging.getLogger("wan22.weights")


@dataclasses.dataclass
class Checkpoint:
    """The weights of one DiT at a location, readable one tensor at a time."""

    source: str
    layout: str  # diffusers | official | mm
    config: WanConfig
    metas: dict[str, TensorMeta]  # source key -> meta
    _read: object  # callable(key) -> Tensor
    _copy: object = None  # callable(key, file): append the raw bytes (streamed sources only)

    def read(self, key: str) -> torch.Tensor:
        return self._read(key)

    def copy_bytes(self, key: str, out) -> None:
        """Append tensor `key`'s bytes to `out` without holding the tensor when the source allows it."""
        if self._copy is not None:
            self._copy(key, out)
        else:
            tensor = self.read(key)
            out.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)

    @property
    def total_bytes(self) -> int:
        return sum(m.nbytes for m in self.metas.values())

    def mm_names(self) -> dict[str, str]:
        """{source key: mm key}; raises UserError naming the first key that is not a Wan2.2 name."""
        try:
            return {k: convert_key(k, self.layout, "mm") for k in self.metas}
        except UnknownKeyError as exc:
            raise UserError(f"{self.source}: {exc.args[0]}") from None


# -- folder recognition ----------------------------------------------------------------------------
def find_checkpoints(source: str | Path) -> dict[str, Checkpoint]:
    """{expert slot: Checkpoint} for whatever `source` is (see the module docstring)."""
    loc = Location(source)
    if not loc.exists():
        raise UserError(f"{source}: no such file or folder")
    if not loc.is_dir():
        raise UserError(f"{source}: expected a checkpoint folder, found a file")
    if (loc / "transformer").is_dir():
        slots = {"transformer": open_checkpoint(loc / "transformer")}
        if (loc / "transformer_2").is_dir():
            slots["transformer_2"] = open_checkpoint(loc / "transformer_2")
        return slots
    if any((loc / d).is_dir() for d in OFFICIAL_EXPERT_DIRS.values()):
        missing = [d for d in OFFICIAL_EXPERT_DIRS.values() if not (loc / d).is_dir()]
        if missing:
            raise UserError(f"{source}: official A14B layout without {missing[0]}/")
        return {slot: open_checkpoint(loc / d) for slot, d in OFFICIAL_EXPERT_DIRS.items()}
    return {"": open_checkpoint(loc)}


def open_checkpoint(loc: Location) -> Checkpoint:
    if (loc / POINTER_FILE).is_file() or (loc / RELEASE).is_dir() or loc.glob("iter_*"):
        return _open_mm(loc)
    shards = loc.glob("*.safetensors")
    if shards:
        return _open_safetensors(loc, loc / DIFFUSERS_INDEX, shards, layout=None)
    raise UserError(f"{loc}: not a Wan checkpoint folder: no *.safetensors, no {POINTER_FILE}/release/iter_*, "
                    "no transformer/ or high_noise_model/ subfolder")


def _open_mm(loc: Location) -> Checkpoint:
    folder = mm_checkpoint_dir(loc)
    config = read_config(loc / "config.json") if (loc / "config.json").is_file() else None
    shards = folder.glob("*.safetensors")
    if shards:
        return _open_safetensors(folder, folder / MM_INDEX, shards, layout="mm", config=config, source=str(loc))
    if (folder / ".metadata").is_file():  # a DCP checkpoint (MindSpeed-MM's mm_to_dcp, `wan22 convert mm-to-dcp`)
        reader = DcpModelReader(folder)
        layout = _detect(reader.metas, str(loc))
        return Checkpoint(str(loc), layout, config or infer_config(reader.metas, layout, str(loc)), reader.metas,
                          reader.read)
    pt = folder / MM_PT
    if not pt.is_file():
        raise UserError(f"{folder}: none of *.safetensors, {MM_PT} or a DCP .metadata")
    state = load_model_tensors(pt)
    metas = {k: TensorMeta(v.dtype, tuple(v.shape), v.numel() * v.element_size()) for k, v in state.items()}
    layout = _detect(metas, str(loc))
    return Checkpoint(str(loc), layout, config or infer_config(metas, layout, str(loc)), metas, state.__getitem__)


def _open_safetensors(folder: Location, index: Location, shards: list[Location], layout: str | None,
                      config: WanConfig | None = None, source: str | None = None) -> Checkpoint:
    source = source or str(folder)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{index}: not a safetensors index ({exc})") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise UserError(f"{index} names shard(s) that do not exist: {', '.join(missing)}")
        shards = [folder / n for n in names]
    readers: dict[str, SafetensorsReader] = {}
    metas: dict[str, TensorMeta] = {}
    for shard in shards:
        reader = SafetensorsReader(shard)
        for key in reader.keys():
            if key in metas:
                raise UserError(f"{source}: tensor {key!r} appears in more than one shard")
            readers[key] = reader
            metas[key] = reader.meta(key)
    if index.is_file():
        stray = sorted(set(weight_map) ^ set(metas))
        if stray:
            raise UserError(f"{index} and its shards disagree about {len(stray)} tensor(s), e.g. {stray[0]!r}")
    layout = layout or _detect(metas, source)
    if config is None and (folder / "config.json").is_file():
        config = read_config(folder / "config.json")
    config = config or infer_config(metas, layout, source)
    return Checkpoint(source, layout, config, metas, lambda key: readers[key].read(key),
                      lambda key, out: readers[key].copy_to(key, out))


def _detect(metas, source: str) -> str:
    try:
        return detect_layout(metas)
    except UnknownKeyError as exc:
        raise UserError(f"{source}: {exc.args[0]}") from None


def read_config(path: Location) -> WanConfig:
    try:
        return WanConfig.from_any_json(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: not a Wan transformer config ({exc})") from None


def infer_config(metas: dict[str, TensorMeta], layout: str, source: str) -> WanConfig:
    """Architecture from tensor shapes, matched against the presets (for folders without config.json:
    MindSpeed-MM writes none). The head count is the one thing shapes cannot tell; the preset gives it."""
    def shape(mm_key):
        key = convert_key(mm_key, "mm", layout)
        if key not in metas and layout == "official" and "model." + key in metas:
            key = "model." + key
        if key not in metas:
            raise UserError(f"{source}: no config.json and no {key!r} tensor to infer the architecture from")
        return metas[key].shape

    dim, in_channels = shape("patch_embedding.weight")[:2]
    layers = 1 + max((int(m.group(1)) for k in metas for m in [re.search(r"blocks\.(\d+)\.", k)] if m), default=-1)
    found = dict(dim=dim, in_channels=in_channels, ffn_dim=shape("blocks.0.ffn.0.weight")[0], num_layers=layers,
                 text_dim=shape("text_embedding.linear_1.weight")[1], freq_dim=shape("time_embedding.0.weight")[1],
                 out_channels=shape("head.head.weight")[0] // 4)
    for name, preset in PRESETS.items():
        if preset["dim"] == dim and preset["ffn_dim"] == found["ffn_dim"]:
            return WanConfig(num_heads=preset["num_heads"], **found)
    raise UserError(f"{source}: no config.json, and its shapes (dim {dim}, ffn {found['ffn_dim']}) match no Wan2.2 "
                    "preset; add the diffusers transformer config.json beside the weights")


# -- validation against the architecture -----------------------------------------------------------
def check_architecture(source, config: WanConfig, have: dict[str, tuple[int, ...]]) -> None:
    """All-or-nothing: the mm-named tensor shapes `have` are exactly the architecture's (none missing, none left
    over, every shape right), or one UserError naming `source` and what differs."""
    from wan_core.model.dit import parameter_shapes

    expected = parameter_shapes(config)
    missing = sorted(set(expected) - set(have))
    extra = sorted(set(have) - set(expected))
    wrong = sorted(k for k in set(have) & set(expected) if tuple(have[k]) != tuple(expected[k]))
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} left over (e.g. {extra[0]})")
        if wrong:
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {wrong[0]}: {tuple(have[wrong[0]])}, "
                         f"expected {tuple(expected[wrong[0]])})")
        raise UserError(f"{source}: weights do not match the architecture (dim {config.dim}, "
                        f"{config.num_layers} layers, in_channels {config.in_channels}): "
                        + "; ".join(parts) + ". Is this the right variant?")


def validate_checkpoint(ckpt: Checkpoint) -> dict[str, str]:
    """All-or-nothing check before anything is written: every key maps, none missing or left over, every
    shape matches the architecture. Returns {source key: mm key}."""
    names = ckpt.mm_names()
    check_architecture(ckpt.source, ckpt.config, {mm: ckpt.metas[src].shape for src, mm in names.items()})
    return names


def describe_architecture(config: WanConfig) -> str:
    """"the ti2v-5b architecture (dim 3072, 30 layers, in_channels 48)", or the numbers for other sizes."""
    from dataclasses import asdict

    numbers = f"dim {config.dim}, {config.num_layers} layers, in_channels {config.in_channels}"
    fields = asdict(config)
    name = next((n for n, p in PRESETS.items() if all(fields.get(k) == v for k, v in p.items())), None)
    return f"the {name} architecture ({numbers})" if name else numbers


class VariantMismatch(UserError):
    """Weights of one variant given where another's are expected."""


def check_variant(path, variant: str, what: str, against: str = "the config's model.variant is") -> None:
    """Before any tensor loads: the weights at `path` (their safetensors headers, DCP metadata or config.json) are
    `variant`'s (its DiT input channels tell the variants apart). `what` names the config key that gave `path`."""
    from wan_core.model import variants

    slots = find_checkpoints(path)
    ckpt = slots.get("") or slots.get("transformer") or next(iter(slots.values()))
    found = variants.by_in_channels(ckpt.config.in_channels)
    if found is None or found.name != variant:
        holds = f"{found.name} weights" if found else "weights of no Wan2.2 variant"
        raise VariantMismatch(f"{what} {path} holds {holds} ({describe_architecture(ckpt.config)}), but {against} "
                        f"{variant}; give {variant} weights, or the {found.name if found else 'matching'} "
                        f"{'model' if 'config' not in against else 'variant'} those weights are for")


# -- loading a model -------------------------------------------------------------------------------
def load_dit(path, dtype: torch.dtype | None = None, device=None, expert: str | None = None, shard_mesh=None):
    """A `WanDiT` from any recognised folder; for two-expert folders pick `expert` ('high' / 'low').
    `shard_mesh` (a 1-D DeviceMesh): FSDP2-shard the model over it while loading, so a process only ever holds
    its shard plus one full tensor at a time (sampling's --shard-weights)."""
    from wan_core.model.dit import WanDiT

    slots = find_checkpoints(path)
    if "" in slots:
        ckpt = slots[""]
    else:  # pipeline-like folder: `transformer` (the high-noise expert of A14B) unless told otherwise
        slot = expert_slot(expert)
        if slot not in slots:
            raise UserError(f"{path}: no {expert!r} expert here (it holds {', '.join(slots)})")
        ckpt = slots[slot]
    names = validate_checkpoint(ckpt)
    with torch.device("meta"):
        model = WanDiT(ckpt.config)
    if shard_mesh is not None:
        return _load_sharded(model, ckpt, {mm: src for src, mm in names.items()}, dtype, device, shard_mesh)
    model.load_state_dict({mm: ckpt.read(src) for src, mm in names.items()}, assign=True, strict=True)
    if dtype is not None:
        model.to_compute_dtype(dtype)
    if device is not None:
        model.to(device)
    return model


def _load_sharded(model, ckpt: Checkpoint, sources: dict[str, str], dtype, device, mesh):
    """Shard the meta model, allocate only the shards, then fill them one source tensor at a time."""
    from torch.distributed.tensor import distribute_tensor

    from wan_core.parallel.fsdp import shard_for_inference

    if dtype is not None:
        model.to_compute_dtype(dtype)  # meta parameters take their final dtypes (some stay fp32)
    shard_for_inference(model, model.blocks, mesh)
    model.to_empty(device=device or "cpu")
    with torch.no_grad():
        for name, param in model.named_parameters():
            full = ckpt.read(sources[name]).to(param.dtype)
            # every rank reads the same file: each keeps its own slice, no communication
            param.to_local().copy_(distribute_tensor(full, param.device_mesh, param.placements,
                                                     src_data_rank=None).to_local())
            del full
    return model
