"""LoRA adapters on the Wan2.2 DiT, built on peft: adding them for training, reading the files other tools write,
applying and merging them, and writing ours.

Training injects peft's LoRA layers into `WanDiT` (mm module names) with the base frozen. Files:
- read: any file (or a folder holding one) diffusers' `WanPipeline.load_lora_weights` reads: diffusers / peft
  (`transformer.<module>.lora_A/B.weight`, the peft LoraConfig in the "lora_adapter_metadata" with rank_pattern,
  alpha_pattern, use_rslora), ComfyUI / original Wan (`diffusion_model.blocks.0.self_attn.q.lora_down/up.weight`, a
  per-module `.alpha`), musubi-tuner / Kohya (`lora_unet_blocks_0_self_attn_q.lora_down.weight`) and
  `diffusion_model.*.lora_A/B`. diffusers' own `WanPipeline.lora_state_dict` converts them, and diffusers' own
  `_create_lora_config` gives the LoraConfig it would build; each module's scale then follows peft's rule (alpha /
  r, or alpha / sqrt(r) with rsLoRA, per-module ranks and alphas by peft's pattern match). What cannot be applied
  exactly (DoRA, LoKr, bias or full-weight diffs) is refused, never approximated;
- written: diffusers' format (by diffusers' own `save_lora_weights`, with the LoraConfig as metadata) or ComfyUI's
  (original Wan names, lora_down / lora_up and a per-module alpha).
A merged weight is W + scale * s_m * B @ A with s_m the module's scale.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re
from pathlib import Path

import torch

from wan_core.errors import UserError
from wan_core.train.config import LoraSettings
from wan_core.weights.names import convert_key

PREFIX = "transformer."
ADAPTER = "default"
LORA_FORMATS = ("diffusers", "comfyui")
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.default)?\.weight$")


@dataclasses.dataclass
class LoraFile:
    """Adapters as read from a file (or a training run): mm-named A [r, in] and B [out, r] per module, and each
    module's scale as diffusers would apply it."""
    path: str
    state: dict[str, torch.Tensor]  # "<mm module>.lora_A.weight" / ".lora_B.weight"
    scalings: dict[str, float]  # mm module -> s_m
    _pairs: dict = dataclasses.field(init=False, repr=False)

    def __post_init__(self):  # A and B checked to pair up once, when the adapters are read
        self._pairs = pairs(self.state, f"LoRA file {self.path}")

    @classmethod
    def of_settings(cls, path: str, state: dict[str, torch.Tensor], settings: LoraSettings) -> "LoraFile":
        return cls(path, state, {m: settings.scaling for m in pairs(state, f"LoRA adapters of {path}")})

    def modules(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return self._pairs


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


# -- diffusers' file --------------------------------------------------------------------------------------
def module_name(name: str, source: str, target: str) -> str:
    """A module's name in another naming scheme (mm, diffusers, official), by its weight's key."""
    return convert_key(name + ".weight", source, target)[: -len(".weight")]


def check_lora_format(fmt: str) -> None:
    if fmt not in LORA_FORMATS:
        raise UserError(f"LoRA format must be one of {', '.join(LORA_FORMATS)}, got {fmt!r}")


def write_lora(path: Path, lora: LoraFile, fmt: str = "diffusers") -> None:
    """`lora` as one safetensors file in diffusers' format (what load_lora_weights reads, written by diffusers' own
    save_lora_weights with the LoraConfig as metadata: per-module ranks and alphas as rank_pattern / alpha_pattern)
    or ComfyUI's (original Wan names, lora_down = A, lora_up = B, alpha = s_m * r_m per module)."""
    modules = lora.modules()
    if fmt == "comfyui":
        from safetensors.torch import save_file

        tensors = {}
        for module, (a, b) in modules.items():
            name = f"diffusion_model.{module_name(module, 'mm', 'official')}"
            tensors[f"{name}.lora_down.weight"] = a.detach().float().contiguous().cpu()
            tensors[f"{name}.lora_up.weight"] = b.detach().float().contiguous().cpu()
            tensors[f"{name}.alpha"] = torch.tensor(lora.scalings[module] * a.shape[0], dtype=torch.float32)
        save_file(tensors, str(path), metadata={"format": "pt"})
        return
    check_lora_format(fmt)
    from diffusers import WanPipeline

    layers, ranks, alphas = {}, {}, {}
    for module, (a, b) in modules.items():
        name = module_name(module, "mm", "diffusers")
        layers[f"{name}.lora_A.weight"] = a.detach().float().contiguous().cpu()
        layers[f"{name}.lora_B.weight"] = b.detach().float().contiguous().cpu()
        ranks[name], alphas[name] = a.shape[0], lora.scalings[module] * a.shape[0]
    r = collections.Counter(ranks.values()).most_common()[0][0]
    alpha = collections.Counter(alphas.values()).most_common()[0][0]
    config = {"r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none", "use_dora": False,
              "use_rslora": False, "target_modules": sorted(ranks),
              "rank_pattern": {f"^{re.escape(n)}": v for n, v in ranks.items() if v != r},
              "alpha_pattern": {f"^{re.escape(n)}": v for n, v in alphas.items() if v != alpha}}
    path = Path(path)
    WanPipeline.save_lora_weights(str(path.parent), transformer_lora_layers=layers, weight_name=path.name,
                                  transformer_lora_adapter_metadata=config)


def write_diffusers_lora(path: Path, state: dict[str, torch.Tensor], settings: LoraSettings) -> None:
    """A training run's adapters (one rank and alpha) as a diffusers-format file."""
    write_lora(path, LoraFile.of_settings(str(path), state, settings), "diffusers")


def lora_file_in(path: Path) -> Path:
    """The safetensors file a LoRA path names: the file, or in a folder diffusers' default name or its only
    .safetensors file (as load_lora_weights looks)."""
    if path.is_dir():
        default = path / "pytorch_lora_weights.safetensors"
        if default.is_file():
            return default
        found = sorted(p for p in path.glob("*.safetensors") if p.is_file())
        if len(found) != 1:
            held = ", ".join(p.name for p in found) or "no .safetensors file"
            raise UserError(f"LoRA folder {path}: expected pytorch_lora_weights.safetensors or exactly one "
                            f".safetensors file, found {held}; name the file itself")
        return found[0]
    if not path.exists():
        raise UserError(f"LoRA file {path}: no such file or folder")
    return path


def read_lora_file(path: str | Path) -> LoraFile:
    """The adapters of a LoRA file in any layout diffusers' Wan pipelines load (module docstring), read with
    diffusers' own converters, each module's scale as diffusers and peft would apply it. One paragraph naming the
    file for anything it cannot apply exactly."""
    from safetensors import safe_open

    file = lora_file_in(Path(path))
    try:
        with safe_open(str(file), framework="pt") as f:
            raw_keys = list(f.keys())
            diffs = {k: f.get_tensor(k) for k in raw_keys if k.endswith((".diff", ".diff_b"))}
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same answer
        raise UserError(f"LoRA file {file}: not a safetensors file ({type(exc).__name__})") from None
    if not raw_keys:
        raise UserError(f"LoRA file {file}: holds no tensors")
    # diffusers drops a norm's diff (zero in the files it has met); a non-zero one, or a weight / bias diff, would
    # change the model in a way no adapter carries: refused rather than dropped
    changed = sorted(k for k, v in diffs.items() if "norm" not in k or bool(v.abs().max() > 0))
    if changed:
        raise UserError(f"LoRA file {file}: holds full-weight differences ({changed[0]}"
                        f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}), which are not LoRA "
                        "adapters; refused rather than applied in part")
    state, config = _diffusers_view(file)
    if config.use_dora or any("lora_magnitude_vector" in k for k in state):
        raise UserError(f"LoRA file {file}: a DoRA adapter (weight-decomposed); only plain LoRA is applied here")
    extra = sorted(k for k in state if not _KEY.match(k))
    if extra:
        what = "a LoRA bias" if ".lora_B.bias" in extra[0] else "not a LoRA weight"
        raise UserError(f"LoRA file {file}: {extra[0]} is {what}; it cannot be applied exactly here, so the file is "
                        "refused rather than applied in part")
    from peft.utils.other import get_pattern_key

    mm_state, scalings = {}, {}
    for key, tensor in state.items():
        m = _KEY.match(key)
        try:
            module = module_name(m["module"], "diffusers", "mm")
        except Exception:  # noqa: BLE001 - the name in words
            raise UserError(f"LoRA file {file}: {m['module']} is not a Wan2.2 transformer module (a LoRA for another "
                            "model?)") from None
        mm_state[f"{module}.lora_{m['part']}.weight"] = tensor
        if m["part"] == "A":
            name = m["module"]
            r = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), name), config.r)
            alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), name), config.lora_alpha)
            if r != tensor.shape[0]:
                raise UserError(f"LoRA file {file}: module {name} has rank {tensor.shape[0]} in its tensors but "
                                f"{r} in its LoraConfig; the file is inconsistent")
            scalings[module] = alpha / math.sqrt(r) if config.use_rslora else alpha / r
    return LoraFile(str(file), mm_state, scalings)


def _diffusers_view(file: Path):
    """(diffusers-format state without the "transformer." prefix, the peft LoraConfig diffusers would build)."""
    from diffusers import WanPipeline
    from diffusers.utils.peft_utils import _create_lora_config

    try:
        state, metadata = WanPipeline.lora_state_dict(str(file), return_lora_metadata=True)
    except Exception as exc:  # noqa: BLE001 - diffusers' converters raise KeyError, ValueError, ...
        raise UserError(f"LoRA file {file}: not a Wan LoRA diffusers can read (its converter stopped at "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}); known "
                        "layouts: diffusers / peft, ComfyUI / original Wan, musubi-tuner / Kohya") from None
    if any(".lokr_" in k for k in state):
        raise UserError(f"LoRA file {file}: a LoKr adapter; only plain LoRA is applied here")
    other = sorted(k for k in state if not k.startswith(PREFIX))
    if other:
        raise UserError(f"LoRA file {file}: {other[0]} is not for the transformer (text encoder LoRAs are not "
                        "applied here)")
    state = {k[len(PREFIX):]: v for k, v in state.items()}
    if metadata is not None:
        metadata = {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)} or None
    ranks = {f"^{k}": v.shape[1] for k, v in state.items() if "lora_B" in k and v.ndim > 1}
    if not ranks:
        raise UserError(f"LoRA file {file}: no LoRA weights inside")
    try:
        config = _create_lora_config(state, None, metadata, ranks)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"LoRA file {file}: its LoraConfig metadata is not valid ({exc})") from None
    return state, config


def pairs(state: dict[str, torch.Tensor], where: str = "LoRA") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A, B)}; refuses a state whose A and B do not pair up."""
    modules = {k.rsplit(".lora_", 1)[0] for k in state}
    out = {}
    for module in sorted(modules):
        a, b = state.get(f"{module}.lora_A.weight"), state.get(f"{module}.lora_B.weight")
        if a is None or b is None or a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            shapes = ", ".join(f"{p} {list(t.shape)}" for p, t in (("lora_A", a), ("lora_B", b)) if t is not None)
            raise UserError(f"{where}: module {module} needs lora_A [r, in] and lora_B [out, r] of one rank, has "
                            f"{shapes or 'neither'}")
        out[module] = (a, b)
    return out


def _model_shapes(model, lora: LoraFile) -> dict[str, tuple[int, ...]]:
    """[out, in] of each module of `model` the adapters name (absent ones left out)."""
    named = dict(model.named_modules())
    return {m: tuple(named[m].weight.shape) for m in lora.modules() if hasattr(named.get(m), "weight")}


def check_adapter_shapes(lora: LoraFile, weight_shapes: dict[str, tuple[int, ...]]) -> None:
    """Each adapted module exists in the model with the adapters' shapes, else one paragraph naming the file, the
    module and both shapes."""
    for module, (a, b) in lora.modules().items():
        shape = weight_shapes.get(module)
        if shape is None:
            raise UserError(f"LoRA file {lora.path}: module {module_name(module, 'mm', 'diffusers')} ({module}) is not in this model "
                            "(made for another model size or variant?)")
        if tuple(shape) != (b.shape[0], a.shape[1]):
            raise UserError(f"LoRA file {lora.path}: module {module_name(module, 'mm', 'diffusers')} ({module}) is [out {shape[0]}, "
                            f"in {shape[1]}] in this model, but the file's lora_A is {list(a.shape)} and lora_B "
                            f"{list(b.shape)} (for [out {b.shape[0]}, in {a.shape[1]}]): made for another model size?")


# -- applying and merging -----------------------------------------------------------------------------------
def apply_lora(model, lora: LoraFile, scale: float = 1.0):
    """Adapters on `model` without touching its weights: out = W x + scale * s_m * B A x, module by module."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    modules = lora.modules()
    check_adapter_shapes(lora, _model_shapes(model, lora))
    ranks = {m: a.shape[0] for m, (a, _) in modules.items()}
    r = collections.Counter(ranks.values()).most_common()[0][0]
    config = LoraConfig(r=r, lora_alpha=r, target_modules=sorted(modules),
                        rank_pattern={f"^{re.escape(m)}": v for m, v in ranks.items() if v != r})
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    set_peft_model_state_dict(model, lora.state, adapter_name=ADAPTER)
    loaded = dict(model.named_modules())
    for module in modules:
        loaded[module].scaling[ADAPTER] = scale * lora.scalings[module]
    dtype = next(p for n, p in model.named_parameters() if ".lora_" not in n).dtype
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.data = param.data.to(dtype)
        param.requires_grad_(False)
    return model


def init_from_file(model, lora: LoraFile, settings: LoraSettings) -> None:
    """Training starts from a LoRA file's adapters: A as read, B scaled by s_file / s_config so the adapted model is
    the file's; every module of the file must be one the config adapts, at the config's rank."""
    check_adapter_shapes(lora, _model_shapes(model, lora))
    named = dict(model.named_modules())
    for module, (a, b) in lora.modules().items():
        layer = named[module]
        if not hasattr(layer, "lora_A") or ADAPTER not in layer.lora_A:
            raise UserError(f"train.lora.init {lora.path}: module {module} is not among train.lora.targets "
                            f"{list(settings.targets)}; add it there")
        if a.shape[0] != settings.rank:
            raise UserError(f"train.lora.init {lora.path}: module {module} has rank {a.shape[0]}, the config's "
                            f"train.lora.rank is {settings.rank}; set it to the file's")
        with torch.no_grad():
            layer.lora_A[ADAPTER].weight.copy_(a)
            layer.lora_B[ADAPTER].weight.copy_(b.float() * (lora.scalings[module] / settings.scaling))


def merged_weights(base: dict[str, torch.Tensor], lora: LoraFile, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """base (mm names) with W + scale * s_m * B @ A for every adapted module (fp32 math, base dtype)."""
    check_adapter_shapes(lora, {k[: -len(".weight")]: tuple(v.shape) for k, v in base.items() if k.endswith(".weight")})
    out = dict(base)
    for module, (a, b) in lora.modules().items():
        key = f"{module}.weight"
        w = base[key]
        out[key] = (w.float() + scale * lora.scalings[module] * (b.float() @ a.float())).to(w.dtype)
    return out
