"""Reading a diffusers pipeline folder for sampling: which variant it is and what its configs say."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from wan_core.errors import UserError
from wan_core.model import variants
from wan_core.model.variants import SamplingDefaults, Variant

# Wan's official negative prompt (shared_config.sample_neg_prompt), the default unless the user says otherwise.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclasses.dataclass(frozen=True)
class ModelFolder:
    path: Path
    spec: Variant
    boundary_ratio: float | None
    expand_timesteps: bool
    two_experts: bool
    vae_spatial: int  # pixels per latent cell (8 Wan2.1 VAE, 16 Wan2.2 VAE)
    patch: int  # DiT spatial patch size
    num_heads: int  # the DiT's attention heads (Ulysses splits them)

    @property
    def variant(self) -> str:
        return self.spec.name

    @property
    def defaults(self) -> SamplingDefaults:
        return self.spec.sampling


def read_model_folder(path: str | Path) -> ModelFolder:
    path = Path(path)
    index_path = path / "model_index.json"
    if not index_path.is_file():
        raise UserError(f"--model {path}: not a diffusers pipeline folder (no model_index.json)")
    missing = [d for d in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler") if not (path / d).is_dir()]
    if missing:
        raise UserError(f"--model {path}: missing {', '.join(missing)}/ (a complete diffusers pipeline folder is needed)")
    try:
        index = json.loads(index_path.read_text())
        transformer_cfg = json.loads((path / "transformer" / "config.json").read_text())
        vae_cfg = json.loads((path / "vae" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--model {path}: cannot read model_index.json / transformer/config.json ({exc})") from None
    boundary = index.get("boundary_ratio")
    two = bool(index.get("transformer_2") and index["transformer_2"][0])
    spec = variants.recognise_pipeline(index, transformer_cfg)
    if two and boundary is None:
        raise UserError(f"--model {path}: two transformers but no boundary_ratio in model_index.json")
    return ModelFolder(path, spec, boundary, bool(index.get("expand_timesteps")), two,
                       int(vae_cfg.get("scale_factor_spatial", 8)), int(transformer_cfg.get("patch_size", [1, 2, 2])[1]),
                       int(transformer_cfg.get("num_attention_heads", 1)))
