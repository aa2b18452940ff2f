"""LoRA adapters on the Wan2.2 DiT, built on peft: adding them for training, their files, applying and merging.

Training injects peft's LoRA layers into `WanDiT` (mm module names) with the base frozen. Files:
- the project's adapter state: {"blocks.N.self_attn.proj_q.lora_A.weight": A [r, in], "...lora_B.weight": B [out, r]}
  (mm names), the scale alpha / r;
- diffusers' LoRA file (what `WanPipeline.load_lora_weights` loads): the same tensors under
  "transformer.<diffusers module>.lora_A/B.weight", with the peft LoraConfig (r, lora_alpha, target_modules)
  in the safetensors metadata under "lora_adapter_metadata", as diffusers' save_lora_weights writes it.
A merged weight is W + scale * (alpha / r) * B @ A.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from wan_core.errors import UserError
from wan_core.train.config import LoraSettings
from wan_core.weights.names import convert_key

METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
PREFIX = "transformer."
ADAPTER = "default"
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.default)?\.weight$")


def add_lora(model, settings: LoraSettings):
    """Inject trainable LoRA layers into `model` (a WanDiT) in place; every other parameter is frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.targets))
    try:
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    except ValueError as exc:  # peft: a target matched no module
        raise UserError(f"lora.targets {list(settings.targets)}: {str(exc).splitlines()[0]}") from None
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    return model


def adapter_state(named_tensors) -> dict[str, torch.Tensor]:
    """{"<module>.lora_A.weight" / "lora_B.weight": tensor} from (name, tensor) pairs of a model or a checkpoint
    (peft's ".default" adapter name dropped); everything that is not an adapter weight is left out."""
    out = {}
    for name, tensor in named_tensors:
        m = _KEY.match(name)
        if m:
            out[f"{m['module']}.lora_{m['part']}.weight"] = tensor
    return out


def pairs(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A, B)}; refuses a state whose A and B do not pair up."""
    modules = {k.rsplit(".lora_", 1)[0] for k in state}
    out = {}
    for module in sorted(modules):
        a, b = state.get(f"{module}.lora_A.weight"), state.get(f"{module}.lora_B.weight")
        if a is None or b is None or a.shape[0] != b.shape[1]:
            raise UserError(f"LoRA weights of {module}: need lora_A [r, in] and lora_B [out, r] of one rank")
        out[module] = (a, b)
    return out


# -- diffusers' file --------------------------------------------------------------------------------------
def diffusers_module(mm_module: str) -> str:
    return convert_key(mm_module + ".weight", "mm", "diffusers")[: -len(".weight")]


def mm_module(diffusers_name: str) -> str:
    return convert_key(diffusers_name + ".weight", "diffusers", "mm")[: -len(".weight")]


def write_diffusers_lora(path: Path, state: dict[str, torch.Tensor], settings: LoraSettings) -> None:
    """One safetensors file diffusers' Wan pipelines load with load_lora_weights, written by diffusers' own
    `save_lora_weights` with the peft LoraConfig (r, lora_alpha, target_modules) as adapter metadata."""
    from diffusers import WanPipeline

    modules = pairs(state)
    layers = {}
    for module, (a, b) in modules.items():
        name = diffusers_module(module)
        layers[f"{name}.lora_A.weight"] = a.detach().float().contiguous().cpu()
        layers[f"{name}.lora_B.weight"] = b.detach().float().contiguous().cpu()
    config = {"r": settings.rank, "lora_alpha": settings.alpha, "lora_dropout": settings.dropout, "bias": "none",
              "target_modules": sorted(diffusers_module(m) for m in modules), "use_dora": False, "use_rslora": False}
    path = Path(path)
    WanPipeline.save_lora_weights(str(path.parent), transformer_lora_layers=layers, weight_name=path.name,
                                  transformer_lora_adapter_metadata=config)


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], LoraSettings]:
    """(mm-named adapter state, settings) of a diffusers-format LoRA file (ours, or any with the same keys)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = {k: f.get_tensor(k) for k in f.keys()}
            metadata = f.metadata() or {}
    except FileNotFoundError:
        raise UserError(f"LoRA file {path}: no such file") from None
    except Exception as exc:
        raise UserError(f"LoRA file {path}: not a safetensors file ({type(exc).__name__})") from None
    state = {}
    for key, tensor in raw.items():
        m = _KEY.match(key[len(PREFIX):] if key.startswith(PREFIX) else key)
        if not m:
            raise UserError(f"LoRA file {path}: {key} is not a LoRA weight in diffusers' format "
                            "(transformer.<module>.lora_A.weight / lora_B.weight)")
        try:
            module = mm_module(m["module"])
        except Exception:
            raise UserError(f"LoRA file {path}: {m['module']} is not a Wan2.2 transformer module") from None
        state[f"{module}.lora_{m['part']}.weight"] = tensor
    modules = pairs(state)
    if not modules:
        raise UserError(f"LoRA file {path}: no LoRA weights inside")
    rank = next(iter(modules.values()))[0].shape[0]
    config = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}
    alpha = float(config.get(f"{PREFIX}lora_alpha", rank))  # diffusers' default without metadata: alpha = r
    settings = LoraSettings(rank=int(config.get(f"{PREFIX}r", rank)), alpha=alpha, targets=tuple(sorted(modules)))
    return state, settings


# -- applying and merging -----------------------------------------------------------------------------------
def apply_lora(model, state: dict[str, torch.Tensor], settings: LoraSettings, scale: float = 1.0):
    """Adapters on `model` without touching its weights: out = W x + scale * (alpha / r) * B A x."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    modules = pairs(state)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=sorted(modules))
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    loaded = dict(model.named_modules())
    for module in modules:
        loaded[module].scaling[ADAPTER] = scale * settings.scaling
    dtype = next(p for n, p in model.named_parameters() if ".lora_" not in n).dtype
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.data = param.data.to(dtype)
        param.requires_grad_(False)
    return model


def merged_weights(base: dict[str, torch.Tensor], state: dict[str, torch.Tensor], settings: LoraSettings,
                   scale: float = 1.0) -> dict[str, torch.Tensor]:
    """base (mm names) with W + scale * (alpha / r) * B @ A for every adapted module (fp32 math, base dtype)."""
    out = dict(base)
    for module, (a, b) in pairs(state).items():
        key = f"{module}.weight"
        if key not in base:
            raise UserError(f"LoRA module {module} is not in the base model")
        w = base[key]
        out[key] = (w.float() + scale * settings.scaling * (b.float() @ a.float())).to(w.dtype)
    return out
