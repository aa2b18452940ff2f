"""The frozen encoders shared by training and sampling: UMT5 text encoder and the Wan VAE.

Text: prompts cleaned like diffusers/official Wan (ftfy, html unescape, whitespace), 512 tokens,
embeddings trimmed to the true length and zero-padded to 512 (no cross-attention mask downstream).
VAE: diffusers' AutoencoderKLWan; latents normalised as z = (mu - mean) / std, decoded as
decode(z * std + mean) (the VAE config's latents_mean / latents_std, as diffusers' pipelines use them).
"""
from __future__ import annotations

import html
import re
from pathlib import Path

import torch

TEXT_LEN = 512


def clean_prompt(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # pragma: no cover - ftfy is a dependency
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class TextEncoder:
    def __init__(self, model_dir: str | Path, dtype: torch.dtype = torch.float32, device="cpu", place=None,
                 shard_mesh=None):
        """Encodes on `device`; the weights start on `place` (default `device`; sampling's offload keeps them on
        the host until they are used); `shard_mesh` FSDP2-shards the encoder's blocks over it."""
        from transformers import AutoTokenizer, UMT5EncoderModel

        model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir / "tokenizer")
        self.model = UMT5EncoderModel.from_pretrained(model_dir / "text_encoder", dtype=dtype).eval()
        if shard_mesh is not None:
            from wan_core.parallel.fsdp import shard_for_inference

            shard_for_inference(self.model.to(device), self.model.encoder.block, shard_mesh)
        else:
            self.model.to(device if place is None else place)
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, prompts: list[str], dtype: torch.dtype | None = None) -> torch.Tensor:
        """[N, 512, text_dim] embeddings, zero past each prompt's true token count."""
        tokens = self.tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=TEXT_LEN,
                                truncation=True, add_special_tokens=True, return_attention_mask=True,
                                return_tensors="pt")
        mask = tokens.attention_mask.to(self.device)
        hidden = self.model(tokens.input_ids.to(self.device), mask).last_hidden_state
        hidden = hidden.to(dtype or hidden.dtype)
        lengths = mask.gt(0).sum(dim=1)
        keep = torch.arange(TEXT_LEN, device=hidden.device)[None, :] < lengths[:, None]
        return hidden * keep[..., None].to(hidden.dtype)


class VideoVAE:
    def __init__(self, model_dir: str | Path, dtype: torch.dtype = torch.float32, device="cpu", place=None):
        """Runs on `device`; the weights start on `place` (default `device`)."""
        from diffusers import AutoencoderKLWan

        self.model = AutoencoderKLWan.from_pretrained(Path(model_dir) / "vae", torch_dtype=dtype).eval()
        self.model.to(device if place is None else place)
        cfg = self.model.config
        self.z_dim = cfg.z_dim
        self.spatial = cfg.scale_factor_spatial
        self.temporal = cfg.scale_factor_temporal
        self.mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.dtype = dtype
        self.device = torch.device(device)

    def enable_tiling(self, enabled: bool = True) -> None:
        (self.model.enable_tiling if enabled else self.model.disable_tiling)()

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, F, H, W] in [-1, 1] -> normalised latents [B, z, 1+(F-1)/4, H/s, W/s] (fp32)."""
        mu = self.model.encode(video.to(self.device, self.dtype)).latent_dist.mode()
        return (mu.float() - self.mean.to(mu.device)) * (1.0 / self.std.to(mu.device))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents -> video [B, 3, F, H, W] in [-1, 1] (VAE dtype)."""
        z = latents.to(self.device, self.dtype)
        z = z / (1.0 / self.std.to(z.device, z.dtype)) + self.mean.to(z.device, z.dtype)
        return self.model.decode(z, return_dict=False)[0]


def first_frame_condition(vae: VideoVAE, first_frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """I2V-A14B conditioning y = [mask(4) | VAE(first frame + zero frames)(z)] of shape [B, 4+z, T, h, w]
    (diffusers' WanImageToVideoPipeline.prepare_latents).
    first_frames: [B, 3, H, W] in [-1, 1]."""
    b, _, h, w = first_frames.shape
    video = torch.cat([first_frames.unsqueeze(2), first_frames.new_zeros(b, 3, num_frames - 1, h, w)], dim=2)
    latent = vae.encode(video)
    lh, lw = latent.shape[3:]
    mask = torch.zeros(b, 1, num_frames, lh, lw, device=latent.device)
    mask[:, :, 0] = 1
    mask = torch.cat([mask[:, :, :1].repeat_interleave(vae.temporal, dim=2), mask[:, :, 1:]], dim=2)
    mask = mask.view(b, -1, vae.temporal, lh, lw).transpose(1, 2)
    return torch.cat([mask, latent], dim=1)


def first_frame_timesteps(t: torch.Tensor, latent_shape, patch: int, keep) -> torch.Tensor:
    """Per-token timesteps [B, T*h*w/p^2]: t everywhere, 0 on latent frame 0's tokens where `keep` [B] is true."""
    b, _, frames, h, w = latent_shape
    frame_tokens = (h // patch) * (w // patch)
    keep = torch.as_tensor(keep, dtype=torch.bool, device=t.device)
    timestep = t.float().reshape(-1, 1).expand(b, frames * frame_tokens).clone()
    timestep[:, :frame_tokens] = torch.where(keep[:, None], 0.0, timestep[:, :frame_tokens])
    return timestep


def clean_first_frame(latents: torch.Tensor, first_frame: torch.Tensor, t: torch.Tensor, keep, patch: int):
    """TI2V-5B first-frame conditioning (diffusers' `expand_timesteps`), shared by training and sampling:
    where `keep` [B] is true, latent frame 0 is the clean first-frame latent and its tokens get timestep 0.
    latents [B, z, T, h, w]; first_frame [B, z, >=1, h, w]; t [B]. Returns (x, per-token timesteps)."""
    keep_mask = torch.as_tensor(keep, dtype=torch.bool, device=latents.device).view(-1, 1, 1, 1, 1)
    x = latents.clone()
    x[:, :, :1] = torch.where(keep_mask, first_frame[:, :, :1].to(x.dtype), latents[:, :, :1])
    return x, first_frame_timesteps(t.to(latents.device), latents.shape, patch, keep)
