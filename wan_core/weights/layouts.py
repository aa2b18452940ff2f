"""Recognising and reading checkpoint folders: diffusers `transformer` folders (and, with the
conversion work, mm folders). One place knows where the files of each layout live."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from wan_core.errors import UserError
from wan_core.model.config import WanConfig
from wan_core.weights.names import UnknownKeyError, convert_key, detect_layout


def safetensors_files(folder: Path, index_name: str) -> list[Path]:
    """Shard files of a folder: those named by its index when there is one, else every *.safetensors."""
    index = folder / index_name
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as exc:
            raise UserError(f"{index}: not a safetensors index ({exc})") from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UserError(f"{index} names shard(s) that do not exist: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder}: no *.safetensors files")
    return files


def read_diffusers_transformer(folder: Path) -> tuple[WanConfig, dict[str, torch.Tensor]]:
    """config and state dict (diffusers names) of a diffusers `transformer` folder."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserError(f"{folder}: not a diffusers transformer folder (no config.json)")
    try:
        config = WanConfig.from_json_file(config_path)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{config_path}: {exc}") from None
    state = {}
    for shard in safetensors_files(folder, "diffusion_pytorch_model.safetensors.index.json"):
        with safe_open(shard, framework="pt") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    return config, state


def to_mm_names(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    layout = detect_layout(state)
    try:
        return {convert_key(k, layout, "mm"): v for k, v in state.items()}
    except UnknownKeyError as exc:
        raise UserError(f"{source}: {exc.args[0]}") from None


def load_dit(path, dtype: torch.dtype | None = None, device=None):
    """Load a `WanDiT` from a diffusers `transformer` folder (or a pipeline folder's `transformer`)."""
    from wan_core.model.dit import WanDiT

    folder = Path(path)
    if not folder.exists():
        raise UserError(f"{folder}: no such checkpoint folder")
    if (folder / "model_index.json").is_file() and (folder / "transformer").is_dir():
        folder = folder / "transformer"
    config, state = read_diffusers_transformer(folder)
    state = to_mm_names(state, str(folder))
    with torch.device("meta"):
        model = WanDiT(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise UserError(f"{folder}: weights do not match the architecture in its config.json: " + "; ".join(parts))
    model.load_state_dict(state, assign=True, strict=True)
    if dtype is not None and dtype != torch.float32:
        model.to_compute_dtype(dtype)
    elif dtype == torch.float32:
        model.float()
    if device is not None:
        model.to(device)
    return model
