"""3D RoPE tables for Wan (per-head t/h/w axes, interleaved pairs), cached per grid shape."""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch


class RopeTables(NamedTuple):
    """Per-token RoPE tables, all with tokens in dim 0 (so context parallelism can slice them alike).

    cos, sin: [L, 1, head_dim] fp32, each angle repeated for both members of its pair (the layout
    `npu_rotary_mul` takes); phase: [L, 1, head_dim/2] complex64 e^{i angle} (the CPU/CUDA path)."""

    cos: torch.Tensor
    sin: torch.Tensor
    phase: torch.Tensor


def _axis_angles(dim: int, max_len: int, theta: float) -> torch.Tensor:
    # float64 like diffusers and official Wan, so the fp32 tables are correctly rounded
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
    return torch.outer(torch.arange(max_len, dtype=torch.float64), freqs)  # [max_len, dim/2]


@functools.lru_cache(maxsize=32)
def rope_tables(grid: tuple[int, int, int], axes: tuple[int, int, int], max_len: int = 1024,
                theta: float = 10000.0, device: str = "cpu") -> RopeTables:
    """Tables for a latent grid of (F, H, W) patches, tokens in (f, h, w) row-major order.

    Cached per (grid, axes, device): sampling calls the DiT with the same grid every step.
    """
    f, h, w = grid
    if max(grid) > max_len:
        raise ValueError(f"latent grid {grid} exceeds the RoPE table length {max_len}")
    parts = [_axis_angles(d, max_len, theta)[:n] for d, n in zip(axes, grid)]
    angles = torch.cat([
        parts[0][:, None, None, :].expand(f, h, w, -1),
        parts[1][None, :, None, :].expand(f, h, w, -1),
        parts[2][None, None, :, :].expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, 1, -1)
    phase = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)
    pairs = angles.repeat_interleave(2, dim=-1)
    return RopeTables(pairs.cos().float().to(device), pairs.sin().float().to(device), phase.to(device))
