"""`wan22 make-tiny-checkpoint`: a complete diffusers-format Wan2.2 pipeline folder at tiny size.

Same architecture family as the real variant (5B: 48-channel Wan2.2 VAE with patch size 2 and
`expand_timesteps`; A14B: two transformers and `boundary_ratio`; I2V: 36 input channels), random
weights, and an offline tokenizer, so tests and the demo never download anything.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from wan_core.fsutil import atomic_output_dir
from wan_core.model import variants
from wan_core.model.config import WanConfig

TINY_TEXT_LAYERS = 2
_WORDS = ("a an the of in on at with and is are to from over under near video scene shot camera slowly quickly "
          "red green blue yellow white black orange purple circle square triangle ball box shape shapes moving moves "
          "bouncing rotating sliding across left right up down background foreground small large bright dark cat dog "
          "person car tree sky water light").split()


def tiny_vae_config(kind: str, seed: int) -> dict:
    """A tiny `AutoencoderKLWan` config of the Wan2.1 (z=16, 8x) or Wan2.2 (z=48, 16x, patchified) family."""
    if kind == "wan2.1":
        return dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True])
    gen = torch.Generator().manual_seed(seed + 7)
    # The real 48 latent statistics are measured on real data; a random tiny VAE gets stand-in values.
    mean = (torch.randn(48, generator=gen) * 0.3).round(decimals=4).tolist()
    std = (0.5 + torch.rand(48, generator=gen)).round(decimals=4).tolist()
    return dict(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                temperal_downsample=[False, True, True], in_channels=12, out_channels=12, is_residual=True,
                patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16, latents_mean=mean, latents_std=std)


def tiny_tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -3.0 - i * 0.01) for i, w in enumerate(_WORDS)]
    vocab += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _random_init_(module: torch.nn.Module, gen: torch.Generator, std: float = 0.05) -> None:
    """Deterministic random weights from one generator (module construction order)."""
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def make_tiny_checkpoint(variant: str, out: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the tiny pipeline folder for `variant` to `out` (atomically). Returns the folder."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    spec = variants.get(variant)
    cfg = WanConfig.from_preset(spec.tiny_preset)
    gen = torch.Generator().manual_seed(seed)
    out = Path(out)
    with atomic_output_dir(out, "make-tiny-checkpoint", overwrite) as tmp:
        transformer_kwargs = {k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")}
        names = [variants.EXPERT_SLOT[e] for e in spec.experts]
        for name in names:
            model = WanTransformer3DModel(**transformer_kwargs)
            _random_init_(model, gen, std=0.1)
            model.save_pretrained(tmp / name, safe_serialization=True)

        vae = AutoencoderKLWan(**tiny_vae_config(spec.vae, seed))
        _random_init_(vae, gen, std=0.05)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)

        tokenizer = tiny_tokenizer()
        tokenizer.save_pretrained(tmp / "tokenizer")
        text_config = UMT5Config(vocab_size=len(tokenizer), d_model=cfg.text_dim, d_kv=16, d_ff=2 * cfg.text_dim,
                                 num_layers=TINY_TEXT_LAYERS, num_heads=cfg.text_dim // 16,
                                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                 feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0)
        torch.manual_seed(seed)  # transformers' own init, then our generator's weights
        text_encoder = UMT5EncoderModel(text_config)
        _random_init_(text_encoder, gen, std=0.2)
        text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)

        UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                flow_shift=spec.sampling.flow_shift, solver_order=2, solver_type="bh2",
                                final_sigmas_type="zero").save_pretrained(tmp / "scheduler")

        index = {
            "_class_name": spec.diffusers_pipeline,
            "_diffusers_version": "0.42.1",
            "boundary_ratio": spec.boundary_ratio,
            "expand_timesteps": spec.expand_timesteps,
            "scheduler": ["diffusers", "UniPCMultistepScheduler"],
            "text_encoder": ["transformers", "UMT5EncoderModel"],
            "tokenizer": ["transformers", "T5Tokenizer"],
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "transformer_2": ["diffusers", "WanTransformer3DModel"] if spec.two_experts else [None, None],
            "vae": ["diffusers", "AutoencoderKLWan"],
        }
        if spec.diffusers_pipeline == "WanImageToVideoPipeline":
            index.update(image_encoder=[None, None], image_processor=[None, None])
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "wan22_variant.json").write_text(json.dumps({"variant": variant, "tiny": True, "seed": seed}) + "\n")
    return out
