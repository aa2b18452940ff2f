"""Weight conversion between the diffusers, official Wan and mm layouts (pure renames, streamed).

`hf_to_mm` / `mm_to_hf` follow MindSpeed-MM's `WanConverter` semantics; the output folders are
those `wan22 convert --help` describes. Memory stays bounded by one tensor for safetensors output: tensors are read with
plain file reads and written by the streaming shard writer. `mm-pt` output is one `torch.save` of the
whole state dict (MindSpeed-MM's format), so it holds the model in memory.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


from wan_core.weights.checkpoint_layout import natural_key, write_mm_dcp, write_mm_release
from wan_core.errors import UserError
from wan_core.model.variants import OFFICIAL_EXPERT_DIRS
from wan_core.storage import Location, output_dir
from wan_core.weights.layouts import DIFFUSERS_INDEX, Checkpoint, find_checkpoints, read_config, validate_checkpoint
from wan_core.weights.names import convert_key
from wan_core.weights.safetensors_io import parse_size, write_sharded

FORMATS = ("safetensors", "mm-pt")
HF_LAYOUTS = ("diffusers", "official")
DEFAULT_MAX_SHARD = "5GB"


class _Progress:
    """Bytes-and-rate progress on stderr (tqdm), shared by every tensor of a conversion."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                        disable=not enabled, leave=False)

    def __call__(self, nbytes: int):
        self.bar.update(nbytes)

    def close(self):
        self.bar.close()


def _write_mm(ckpt: Checkpoint, names: dict[str, str], folder: Path, fmt: str, max_shard: int, progress) -> None:
    by_target = {mm: src for src, mm in names.items()}
    write_mm_release(folder, ckpt.config, {mm: ckpt.metas[src] for mm, src in by_target.items()},
                     lambda mm: ckpt.read(by_target[mm]), fmt, max_shard, progress,
                     write_bytes=lambda mm, f: ckpt.copy_bytes(by_target[mm], f))


def _write_hf(ckpt: Checkpoint, names: dict[str, str], folder: Path, layout: str, config_json: dict | None,
              max_shard: int, progress) -> None:
    if config_json is None:
        config_json = ckpt.config.to_official() if layout == "official" else ckpt.config.to_diffusers()
    (folder / "config.json").write_text(json.dumps(config_json, indent=2) + "\n")
    by_target = {convert_key(mm, "mm", layout): src for src, mm in names.items()}
    items = [(key, ckpt.metas[by_target[key]]) for key in sorted(by_target, key=natural_key)]
    write_sharded(folder, items, lambda key, f: ckpt.copy_bytes(by_target[key], f), "diffusion_pytorch_model",
                  DIFFUSERS_INDEX,
                  max_shard, single_file_name="diffusion_pytorch_model.safetensors", progress=progress)


def _hf_config_for(hf_dir: str | None, slot: str, ckpt: Checkpoint) -> dict | None:
    """config.json to copy from --hf-dir (a transformer folder, or a pipeline folder's slot), checked
    against the weights' architecture."""
    if hf_dir is None:
        return None
    loc = Location(hf_dir)
    candidates = [loc / slot / "config.json"] if slot else []
    candidates += [loc / "config.json", loc / "transformer" / "config.json"]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise UserError(f"--hf-dir {hf_dir}: no config.json (looked in {', '.join(str(c) for c in candidates)})")
    config = read_config(path)
    if config != ckpt.config:
        raise UserError(f"--hf-dir config {path} describes a different architecture (dim {config.dim}, "
                        f"{config.num_layers} layers, in_channels {config.in_channels}) than the weights in "
                        f"{ckpt.source} (dim {ckpt.config.dim}, {ckpt.config.num_layers} layers, in_channels "
                        f"{ckpt.config.in_channels})")
    return json.loads(path.read_text())


def convert(source: str, target: str, to: str, fmt: str = "safetensors", hf_dir: str | None = None,
            max_shard_size: str = DEFAULT_MAX_SHARD, progress: bool = True, overwrite: bool = False,
            command: str | None = "convert") -> list[str]:
    """Convert every DiT found at `source` to layout `to` ('mm', 'diffusers' or 'official') at `target`.

    Two-expert sources write TARGET/transformer (high-noise) and TARGET/transformer_2 (low-noise); the official
    layout names them high_noise_model/ and low_noise_model/, as the official Wan2.2 A14B release does.
    Everything is validated before the first byte is written; the target appears only when complete.
    Returns the expert slots written ("" for a single DiT)."""
    if to not in ("mm", "dcp", *HF_LAYOUTS):
        raise UserError(f"unknown target layout {to!r}")
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "mm-pt" and to != "mm":
        raise UserError("--format mm-pt applies to hf_to_mm only")
    max_shard = parse_size(max_shard_size)
    slots = find_checkpoints(source)
    plans = {slot: (ckpt, validate_checkpoint(ckpt)) for slot, ckpt in slots.items()}
    configs = {slot: _hf_config_for(hf_dir, slot, ckpt) for slot, (ckpt, _) in plans.items()} if to != "mm" else {}
    total = sum(ckpt.total_bytes for ckpt, _ in plans.values())
    bar = _Progress(total, {"mm": "hf_to_mm", "dcp": "mm_to_dcp"}.get(to, "mm_to_hf"), enabled=progress)
    try:
        with output_dir(target, command, overwrite) as tmp:
            write_checkpoints(plans, tmp, to, fmt, max_shard, configs, bar)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        bar.close()
    return [OFFICIAL_EXPERT_DIRS[s] if to == "official" and s else s for s in plans]


def write_checkpoints(plans: dict, folder: Path, to: str, fmt: str = "safetensors",
                      max_shard: int = parse_size(DEFAULT_MAX_SHARD), configs: dict | None = None,
                      progress=lambda nbytes: None) -> None:
    """Each {slot: (Checkpoint, {source key: mm key})} into `folder` (slot subfolders) in layout `to`."""
    for slot, (ckpt, names) in plans.items():
        out = folder / (OFFICIAL_EXPERT_DIRS[slot] if to == "official" and slot else slot)
        out.mkdir(exist_ok=True)
        if to == "mm":
            _write_mm(ckpt, names, out, fmt, max_shard, progress)
        elif to == "dcp":
            by_target = {mm: src for src, mm in names.items()}
            write_mm_dcp(out, ckpt.config, {mm: ckpt.metas[src] for mm, src in by_target.items()},
                         lambda mm: ckpt.read(by_target[mm]), progress)
        else:
            _write_hf(ckpt, names, out, to, (configs or {}).get(slot), max_shard, progress)


def mm_to_dcp(source: str, target: str, **kwargs) -> list[str]:
    """Any recognised checkpoint -> MindSpeed-MM's mm_to_dcp layout (release/ DCP), which training starts from."""
    return convert(source, target, "dcp", **kwargs)


def hf_to_mm(source: str, target: str, fmt: str = "safetensors", **kwargs) -> list[str]:
    return convert(source, target, "mm", fmt=fmt, **kwargs)


def mm_to_hf(source: str, target: str, hf_dir: str | None = None, layout: str = "diffusers", **kwargs) -> list[str]:
    if layout not in HF_LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(HF_LAYOUTS)}, got {layout!r}")
    return convert(source, target, layout, hf_dir=hf_dir, **kwargs)
