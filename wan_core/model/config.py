"""Architecture configuration of the Wan2.2 DiT, with the real and tiny presets."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from wan_core.model import variants


@dataclasses.dataclass(frozen=True)
class WanConfig:
    dim: int
    ffn_dim: int
    num_layers: int
    num_heads: int
    in_channels: int
    out_channels: int
    text_dim: int = 4096
    freq_dim: int = 256
    eps: float = 1e-6
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_max_seq_len: int = 1024
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        problems = []
        if self.dim % self.num_heads:
            problems.append(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        elif self.head_dim % 2 or (self.head_dim - 4 * (self.head_dim // 6)) % 2:
            problems.append(f"head_dim {self.head_dim} does not split into even RoPE axes")
        if not self.cross_attn_norm or self.qk_norm != "rms_norm_across_heads":
            problems.append("only cross_attn_norm=True with qk_norm='rms_norm_across_heads' (Wan2.2) is supported")
        if problems:
            raise ValueError("invalid Wan config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_axes(self) -> tuple[int, int, int]:
        """Real dims of the t/h/w RoPE axes per head (44/42/42 for head_dim 128)."""
        hw = 2 * (self.head_dim // 6)
        return self.head_dim - 2 * hw, hw, hw

    @property
    def model_type(self) -> str:
        """The official config's `model_type` (t2v for input widths no variant has)."""
        variant = variants.by_in_channels(self.in_channels)
        return variant.official_model_type if variant else "t2v"

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str) -> "WanConfig":
        try:
            return cls(**PRESETS[name])
        except KeyError:
            raise ValueError(f"unknown Wan preset {name!r}; choose one of {', '.join(PRESETS)}") from None

    # -- diffusers config.json -------------------------------------------------------------------
    @classmethod
    def from_diffusers(cls, config: dict[str, Any]) -> "WanConfig":
        if config.get("image_dim") or config.get("added_kv_proj_dim"):
            raise ValueError("Wan2.1 image cross-attention (image_dim / added_kv_proj_dim) is not part of Wan2.2")
        heads = int(config.get("num_attention_heads", 40))
        return cls(
            dim=heads * int(config.get("attention_head_dim", 128)),
            ffn_dim=int(config.get("ffn_dim", 13824)),
            num_layers=int(config.get("num_layers", 40)),
            num_heads=heads,
            in_channels=int(config.get("in_channels", 16)),
            out_channels=int(config.get("out_channels") or config.get("in_channels", 16)),
            text_dim=int(config.get("text_dim", 4096)),
            freq_dim=int(config.get("freq_dim", 256)),
            eps=float(config.get("eps", 1e-6)),
            patch_size=tuple(config.get("patch_size", (1, 2, 2))),
            rope_max_seq_len=int(config.get("rope_max_seq_len", 1024)),
            cross_attn_norm=bool(config.get("cross_attn_norm", True)),
            qk_norm=config.get("qk_norm", "rms_norm_across_heads"),
        )

    @classmethod
    def from_json_file(cls, path: str | Path) -> "WanConfig":
        return cls.from_any_json(json.loads(Path(path).read_text()))

    @classmethod
    def from_any_json(cls, config: dict[str, Any]) -> "WanConfig":
        """A diffusers transformer config.json or an official `WanModel` config.json."""
        if "dim" in config and "num_attention_heads" not in config:
            return cls.from_official(config)
        return cls.from_diffusers(config)

    # -- official Wan config.json (WanModel, ConfigMixin-serialised) -----------------------------------
    @classmethod
    def from_official(cls, config: dict[str, Any]) -> "WanConfig":
        return cls(dim=int(config["dim"]), ffn_dim=int(config["ffn_dim"]), num_layers=int(config["num_layers"]),
                   num_heads=int(config["num_heads"]), in_channels=int(config["in_dim"]),
                   out_channels=int(config["out_dim"]), freq_dim=int(config.get("freq_dim", 256)),
                   eps=float(config.get("eps", 1e-6)), text_dim=int(config.get("text_dim", 4096)))

    def to_official(self) -> dict[str, Any]:
        return {"_class_name": "WanModel", "_diffusers_version": "0.42.1", "model_type": self.model_type,
                "text_len": 512, "in_dim": self.in_channels, "dim": self.dim, "ffn_dim": self.ffn_dim,
                "freq_dim": self.freq_dim, "out_dim": self.out_channels, "num_heads": self.num_heads,
                "num_layers": self.num_layers, "eps": self.eps,
                # official WanModel does not save text_dim (always 4096); tiny models need it recorded
                **({} if self.text_dim == 4096 else {"text_dim": self.text_dim})}

    def to_diffusers(self) -> dict[str, Any]:
        return {
            "_class_name": "WanTransformer3DModel",
            "_diffusers_version": "0.42.1",
            "patch_size": list(self.patch_size),
            "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "cross_attn_norm": self.cross_attn_norm,
            "qk_norm": self.qk_norm,
            "eps": self.eps,
            "image_dim": None,
            "added_kv_proj_dim": None,
            "rope_max_seq_len": self.rope_max_seq_len,
            "pos_embed_seq_len": None,
        }


_TINY = dict(dim=32, ffn_dim=64, num_layers=2, num_heads=2, text_dim=32, freq_dim=32)

PRESETS: dict[str, dict[str, Any]] = {
    "ti2v-5b": dict(dim=3072, ffn_dim=14336, num_layers=30, num_heads=24, in_channels=48, out_channels=48),
    "t2v-a14b": dict(dim=5120, ffn_dim=13824, num_layers=40, num_heads=40, in_channels=16, out_channels=16),
    "i2v-a14b": dict(dim=5120, ffn_dim=13824, num_layers=40, num_heads=40, in_channels=36, out_channels=16),
    "tiny-ti2v": dict(_TINY, in_channels=48, out_channels=48),
    "tiny-t2v": dict(_TINY, in_channels=16, out_channels=16),
    "tiny-i2v": dict(_TINY, in_channels=36, out_channels=16),
}
