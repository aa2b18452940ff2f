"""`wan22 consolidate` (DCP checkpoint -> one mm checkpoint) and `wan22 export` (mm -> a complete
diffusers pipeline folder).

Consolidation reads the DCP metadata and loads model tensors only - never the optimizer - one tensor
at a time, into the streaming safetensors writer (memory bounded by the largest tensor, whatever the
model or shard size) or MindSpeed-MM's `release/mp_rank_00/model_optim_rng.pt` (one torch.save, so not
bounded). It works on checkpoints of any world size or layout: DCP stores global shapes and chunks.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from wan_core.weights.checkpoint_layout import TRAINER_STATE, DcpModelReader, training_iteration, write_mm_release
from wan_core import device
from wan_core.errors import UserError
from wan_core.model.config import WanConfig
from wan_core.model.variants import EXPERT_SLOT, expert_slot
from wan_core.storage import output_dir
from wan_core.weights.layouts import infer_config
from wan_core.weights.safetensors_io import TensorMeta, parse_size

DTYPES = {"keep": None, **device.DTYPES}
BASE_PARTS = ("vae", "text_encoder", "tokenizer", "scheduler")


def _model_config(folder: Path, metas: dict) -> WanConfig:
    state_file = folder / TRAINER_STATE
    if state_file.is_file():
        try:
            cfg = json.loads(state_file.read_text()).get("model_config")
            if cfg:
                return WanConfig.from_diffusers(cfg)
        except (ValueError, TypeError):
            pass
    return infer_config(metas, "mm", str(folder))


def consolidate(source: str, target: str, iteration: str | int | None = None, fmt: str = "safetensors",
                dtype: str = "keep", max_shard_size: str = "5GB", progress: bool = True, overwrite: bool = False) -> Path:
    from tqdm import tqdm

    from wan_core.weights.layouts import check_architecture

    if fmt not in ("safetensors", "mm-pt"):
        raise UserError(f"--format must be safetensors or mm-pt, got {fmt!r}")
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be keep, bf16 or fp32, got {dtype!r}")
    folder = training_iteration(source, iteration)
    reader = DcpModelReader(folder)
    config = _model_config(folder, reader.metas)
    check_architecture(folder, config, {k: m.shape for k, m in reader.metas.items()})
    cast = DTYPES[dtype]
    metas = {k: m if cast is None or not m.dtype.is_floating_point else
             TensorMeta(cast, m.shape, int(torch.Size(m.shape).numel()) * cast.itemsize) for k, m in reader.metas.items()}

    def fetch(name):
        t = reader.read(name)
        return t.to(metas[name].dtype) if t.dtype != metas[name].dtype else t

    bar = tqdm(total=sum(m.nbytes for m in metas.values()), unit="B", unit_scale=True, desc="consolidate",
               disable=not progress, leave=False)
    try:
        with output_dir(target, "consolidate", overwrite) as tmp:
            write_mm_release(tmp, config, metas, fetch, fmt, parse_size(max_shard_size), bar.update)
    finally:
        bar.close()
    return Path(target)


def _link_or_copy_tree(src: Path, dst: Path) -> None:
    """Hard-link every file (copy across filesystems); never a symlink: exports are moved and uploaded."""
    for root, dirs, files in os.walk(src, followlinks=True):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            s, d = Path(root) / name, dst / rel / name
            real = s.resolve()
            try:
                os.link(real, d)
            except OSError:
                shutil.copy2(real, d)


def export(source: str, base: str, target: str, source_2: str | None = None, expert: str | None = None,
           max_shard_size: str = "5GB", progress: bool = True, overwrite: bool = False) -> Path:
    """mm checkpoint(s) -> a complete diffusers pipeline folder: the trained transformer(s) with the
    base folder's vae, text encoder, tokenizer, scheduler and model_index.json."""
    from wan_core.sample.model_folder import read_model_folder
    from wan_core.weights.convert import mm_to_hf
    from wan_core.weights.layouts import check_variant

    base_path = Path(base)
    folder = read_model_folder(base_path)  # checks it is a complete diffusers pipeline folder
    slot = expert_slot(expert, "--expert")
    if not folder.two_experts and (source_2 or expert):
        raise UserError(f"--base {base}: a one-expert model ({folder.variant}); --source-2 and --expert apply to "
                        "A14B's two experts only")
    slots = {slot: source}
    if source_2:
        slots[next(s for s in EXPERT_SLOT.values() if s != slot)] = source_2
    for flag, mm in (("--source", source), ("--source-2", source_2)):
        if mm:  # from the weights' headers, before anything is written
            check_variant(mm, folder.variant, flag, f"--base {base} is a pipeline of")
    with output_dir(target, "export", overwrite) as tmp:
        for slot, mm in slots.items():
            mm_to_hf(mm, str(tmp / slot), hf_dir=str(base_path / slot), max_shard_size=max_shard_size,
                     progress=progress, command=None)
        complete_pipeline(tmp, base_path, folder.two_experts, {"sources": slots})
    return Path(target)


def complete_pipeline(folder: Path, base_path: Path, two_experts: bool, record: dict) -> None:
    """Make `folder`, holding the new transformer slot(s), a complete pipeline: the expert that was not replaced,
    the vae, text encoder, tokenizer and scheduler from the base, its model_index.json, and a provenance file."""
    if two_experts:
        for slot in EXPERT_SLOT.values():
            if not (folder / slot).exists():  # the expert that was not trained comes from the base
                _link_or_copy_tree(base_path / slot, folder / slot)
    for part in BASE_PARTS:
        _link_or_copy_tree(base_path / part, folder / part)
    shutil.copy2(base_path / "model_index.json", folder / "model_index.json")
    (folder / "wan22_export.json").write_text(json.dumps({"base": str(base_path.absolute()), **record},
                                                         indent=2) + "\n")


LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default name: load_lora_weights(folder) finds it
COMFYUI_LORA_FILE = "wan22_lora_comfyui.safetensors"  # for ComfyUI's models/loras; `--lora FOLDER` finds it too


def export_lora(source: str, target: str, iteration: str | int | None = None, overwrite: bool = False,
                fmt: str = "diffusers") -> Path:
    """A LoRA training checkpoint (DCP adapters) -> one LoRA file in diffusers' or ComfyUI's format. Returns the
    file."""
    from wan_core.train.config import LoraSettings, validated
    from wan_core.train.lora import LoraFile, adapter_state, check_lora_format, write_lora

    check_lora_format(fmt)  # before the checkpoint is read

    folder = training_iteration(source, iteration)
    reader = DcpModelReader(folder)
    state = adapter_state((name, reader.read(name)) for name in reader.metas if ".lora_" in name)
    if not state:
        raise UserError(f"--source {folder}: no LoRA adapters in this checkpoint (it is a full training run: use "
                        "wan22 consolidate)")
    try:
        lora = json.loads((folder / TRAINER_STATE).read_text())["config"]["train"]["lora"]
        settings = validated(LoraSettings, lora)
    except (OSError, ValueError, KeyError, TypeError, UserError) as exc:
        raise UserError(f"--source {folder}: cannot read the LoRA settings from {TRAINER_STATE} ({exc})") from None
    name = LORA_FILE if fmt == "diffusers" else COMFYUI_LORA_FILE
    with output_dir(target, "export-lora", overwrite) as tmp:
        write_lora(tmp / name, LoraFile.of_settings(name, state, settings), fmt)
    return Path(target) / name


MERGE_LAYOUTS = ("pipeline", "diffusers", "mm", "official")


def merge_lora(base: str, target: str, lora: str, lora_2: str | None = None, scale: float = 1.0,
               layout: str = "pipeline", overwrite: bool = False) -> Path:
    """base + scale * (alpha / r) * B @ A for each expert's LoRA file, written as a complete pipeline folder
    (layout 'pipeline', base must be one) or as transformer checkpoint(s) in the diffusers, mm or official layout."""
    from wan_core.train.lora import merged_weights, read_lora_file
    from wan_core.weights.convert import write_checkpoints
    from wan_core.weights.layouts import Checkpoint, find_checkpoints, validate_checkpoint
    from wan_core.weights.safetensors_io import TensorMeta as Meta

    if layout not in MERGE_LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(MERGE_LAYOUTS)}, got {layout!r}")
    pipeline = None
    if layout == "pipeline":
        from wan_core.sample.model_folder import read_model_folder

        pipeline = read_model_folder(base)
    slots = find_checkpoints(base)
    adapters = {"": lora, "transformer": lora, "transformer_2": lora_2}
    if lora_2 and "transformer_2" not in slots:
        raise UserError(f"--lora-2 given, but {base} has one transformer")
    plans = {}
    for slot, ckpt in slots.items():
        names = validate_checkpoint(ckpt)
        state = {mm: ckpt.read(src) for src, mm in names.items()}
        if adapters.get(slot):
            state = merged_weights(state, read_lora_file(adapters[slot]), scale)
        metas = {k: Meta(v.dtype, tuple(v.shape), v.numel() * v.element_size()) for k, v in state.items()}
        plans[slot] = (Checkpoint(f"{base} + LoRA", "mm", ckpt.config, metas, state.__getitem__), {k: k for k in state})
    with output_dir(target, "merge-lora", overwrite) as tmp:
        write_checkpoints(plans, tmp, "diffusers" if layout == "pipeline" else layout)
        if pipeline is not None:
            complete_pipeline(tmp, Path(base), pipeline.two_experts,
                              {"lora": str(Path(lora).absolute()), "lora_2": lora_2 and str(Path(lora_2).absolute()),
                               "scale": scale})
    return Path(target)
