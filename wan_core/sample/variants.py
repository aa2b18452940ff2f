"""Per-variant sampling facts (the defaults of the Wan2.2 diffusers pipelines and model cards) and reading
them off a model folder."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from wan_core.errors import UserError

# Wan's official negative prompt (shared_config.sample_neg_prompt), the default unless the user says otherwise.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclasses.dataclass(frozen=True)
class VariantDefaults:
    steps: int
    guidance: tuple[float, float | None]  # (high-noise / only expert, low-noise expert)
    size: tuple[int, int, int]  # frames, height, width
    fps: int


DEFAULTS = {
    "ti2v-5b": VariantDefaults(50, (5.0, None), (121, 704, 1280), 24),
    "t2v-a14b": VariantDefaults(40, (4.0, 3.0), (81, 480, 832), 16),
    "i2v-a14b": VariantDefaults(40, (3.5, 3.5), (81, 480, 832), 16),
}


@dataclasses.dataclass(frozen=True)
class ModelFolder:
    path: Path
    variant: str
    boundary_ratio: float | None
    expand_timesteps: bool
    two_experts: bool
    vae_spatial: int  # pixels per latent cell (8 Wan2.1 VAE, 16 Wan2.2 VAE)
    patch: int  # DiT spatial patch size

    @property
    def defaults(self) -> VariantDefaults:
        return DEFAULTS[self.variant]


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
    if index.get("expand_timesteps"):
        variant = "ti2v-5b"
    elif transformer_cfg.get("in_channels") == 36:
        variant = "i2v-a14b"
    else:
        variant = "t2v-a14b"
    if two and boundary is None:
        raise UserError(f"--model {path}: two transformers but no boundary_ratio in model_index.json")
    return ModelFolder(path, variant, boundary, bool(index.get("expand_timesteps")), two,
                       int(vae_cfg.get("scale_factor_spatial", 8)), int(transformer_cfg.get("patch_size", [1, 2, 2])[1]))
