"""Flow-matching training objective (DiffSynth-Studio's, which MindSpeed-MM's `WanFlowMatchScheduler` follows).

Default: 1000 training steps, shift 5, sigma from 1 to 0 with one extra step dropped:
sigma_i = 5 s / (1 + 4 s) with s = 1 - i/1000; t_i = 1000 sigma_i; x_t = (1 - sigma) x0 + sigma eps;
target = eps - x0; loss = mean((v - target)^2) * w_i with the bell-shaped weight w (zero at t = 1000,
mean 1). A14B experts train on index ranges of this grid (`Variant.index_ranges` in
wan_core.model.variants, or a config's timestep boundaries). A training config's `objective` section
(MindSpeed-MM's `diffusion` block) sets every number here.
"""
from __future__ import annotations

import dataclasses
import functools

import torch


@dataclasses.dataclass(frozen=True)
class FlowMatchSchedule:
    num_steps: int = 1000
    shift: float = 5.0
    sigma_min: float = 0.0
    sigma_max: float = 1.0
    extra_one_step: bool = True  # linspace over num_steps + 1 points, the last dropped
    grid_dtype: str = "float64"  # float32: MindSpeed-MM's WanFlowMatchScheduler, bit for bit

    def tables(self):
        """(sigmas, timesteps, weights), each [num_steps] in grid_dtype, index 0 = the noisiest."""
        return _tables(self)

    def index_range(self, min_boundary: float, max_boundary: float) -> tuple[int, int]:
        """[lo, hi) indices for timestep boundaries given as fractions of num_steps (MindSpeed-MM's rule)."""
        return int(min_boundary * self.num_steps), int(max_boundary * self.num_steps)


@functools.lru_cache(maxsize=8)
def _tables(s: FlowMatchSchedule):
    n = s.num_steps
    # the same operations in the same order as WanFlowMatchScheduler._set_timesteps, so float32 grids are its own
    start = s.sigma_min + (s.sigma_max - s.sigma_min)
    dtype = getattr(torch, s.grid_dtype)
    points = torch.linspace(start, s.sigma_min, n + 1 if s.extra_one_step else n, dtype=dtype)[:n]
    sigmas = s.shift * points / (1 + (s.shift - 1) * points)
    timesteps = sigmas * n
    y = torch.exp(-2 * ((timesteps - n / 2) / n) ** 2)
    weights = y - y.min()
    weights = weights * (n / weights.sum())
    return sigmas, timesteps, weights


DEFAULT_SCHEDULE = FlowMatchSchedule()


def schedule():
    """The default schedule's tables."""
    return DEFAULT_SCHEDULE.tables()


@torch.no_grad()
def noisy_input(x0: torch.Tensor, noise: torch.Tensor, index: torch.Tensor, sched: FlowMatchSchedule = DEFAULT_SCHEDULE):
    """x_t, target, t and weight for per-sample indices [B] (fp32 math)."""
    sigmas, timesteps, weights = sched.tables()
    sigma = sigmas[index].float().view(-1, *[1] * (x0.dim() - 1)).to(x0.device)
    x_t = (1 - sigma) * x0 + sigma * noise
    return x_t, noise - x0, timesteps[index].float().to(x0.device), weights[index].float().to(x0.device)
