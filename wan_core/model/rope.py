"""3D RoPE tables for Wan (per-head t/h/w axes, interleaved pairs), cached per grid shape."""
from __future__ import annotations

import functools

import torch


def _axis_angles(dim: int, max_len: int, theta: float) -> torch.Tensor:
    # float64 like diffusers and official Wan, so the fp32 tables are correctly rounded
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
    return torch.outer(torch.arange(max_len, dtype=torch.float64), freqs)  # [max_len, dim/2]


@functools.lru_cache(maxsize=32)
def rope_tables(grid: tuple[int, int, int], axes: tuple[int, int, int], max_len: int = 1024,
                theta: float = 10000.0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [F*H*W, 1, head_dim] (fp32), tokens in (f, h, w) row-major order.

    Each angle is repeated for both members of its interleaved pair. Cached per (grid, axes, device):
    sampling calls the DiT with the same grid every step.
    """
    f, h, w = grid
    if max(grid) > max_len:
        raise ValueError(f"latent grid {grid} exceeds the RoPE table length {max_len}")
    parts = [_axis_angles(d, max_len, theta)[:n] for d, n in zip(axes, grid)]
    angles = torch.cat([
        parts[0][:, None, None, :].expand(f, h, w, -1),
        parts[1][None, :, None, :].expand(f, h, w, -1),
        parts[2][None, None, :, :].expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, 1, -1).repeat_interleave(2, dim=-1)
    return angles.cos().float().to(device), angles.sin().float().to(device)
