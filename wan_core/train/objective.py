"""Flow-matching training objective (DiffSynth-Studio's, which MindSpeed-MM follows).

1000 training steps, shift 5: sigma_i = 5 s / (1 + 4 s) with s = 1 - i/1000; t_i = 1000 sigma_i;
x_t = (1 - sigma) x0 + sigma eps; target = eps - x0; loss = mean((v - target)^2) * w_i with the
bell-shaped weight w (zero at t = 1000, mean 1). A14B experts train on index ranges of this grid
(`Variant.index_ranges` in wan_core.model.variants).
"""
from __future__ import annotations

import functools

import torch

NUM_TRAIN_TIMESTEPS = 1000
SHIFT = 5.0

@functools.lru_cache(maxsize=4)
def schedule(num_steps: int = NUM_TRAIN_TIMESTEPS, shift: float = SHIFT):
    """(sigmas, timesteps, weights), each [num_steps] float64, index 0 = the noisiest."""
    s = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)[:-1]
    sigmas = shift * s / (1 + (shift - 1) * s)
    timesteps = sigmas * num_steps
    y = torch.exp(-2 * ((timesteps - num_steps / 2) / num_steps) ** 2)
    weights = y - y.min()
    weights = weights * (num_steps / weights.sum())
    return sigmas, timesteps, weights


@torch.no_grad()
def noisy_input(x0: torch.Tensor, noise: torch.Tensor, index: torch.Tensor):
    """x_t, target, t and weight for per-sample indices [B] (fp32 math)."""
    sigmas, timesteps, weights = schedule()
    sigma = sigmas[index].float().view(-1, *[1] * (x0.dim() - 1)).to(x0.device)
    x_t = (1 - sigma) * x0 + sigma * noise
    return x_t, noise - x0, timesteps[index].float().to(x0.device), weights[index].float().to(x0.device)
