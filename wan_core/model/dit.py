"""The Wan2.2 diffusion transformer (all three variants) with MindSpeed-MM ("mm") parameter names.

`WanDiT.forward` has the meaning of diffusers' `WanTransformer3DModel.forward(...)[0]`, including its
precision placement in bf16: fp32 sinusoid, time MLP, modulation, LayerNorms and RoPE tables; the
residual stream, matmuls and attention in the compute dtype (as diffusers' WanTransformer3DModel places them).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.utils.checkpoint
import torch.nn.functional as F

from wan_core.model import kernels
from wan_core.model.config import WanConfig
from wan_core.model.rope import RopeTables, rope_tables

# Parameters kept in fp32 when the model is cast to a low-precision dtype (diffusers' _keep_in_fp32_modules)
KEEP_IN_FP32 = ("time_embedding", "modulation", "norm3")


def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] -> [N, dim] fp32: [cos, sin] of t * 10000^(-k/half) (diffusers `Timesteps(flip_sin_to_cos=True,
    downscale_freq_shift=0)`)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return kernels.rms_norm(x, self.weight, self.eps)


class LayerNormFP32(nn.Module):
    """Affine LayerNorm computed in fp32 (the cross-attention norm, mm/official `norm3`)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x.float(), (x.shape[-1],), self.weight.float(), self.bias.float(), self.eps)


class Attention(nn.Module):
    """Self- or cross-attention with q/k RMSNorm across all heads; RoPE only when tables are given."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.context_parallel = None  # set on self-attention by WanDiT.enable_context_parallel
        self.proj_q, self.proj_k, self.proj_v, self.proj_out = (nn.Linear(dim, dim) for _ in range(4))
        self.q_norm, self.k_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def key_value(self, context):
        """(k, v) [B, S, H, D] of a context; sampling computes them once for all steps (same values)."""
        k = self.k_norm(self.proj_k(context)).unflatten(2, (self.num_heads, -1))
        return k, self.proj_v(context).unflatten(2, (self.num_heads, -1))

    def forward(self, x, context=None, rope=None, kv=None):
        q = self.q_norm(self.proj_q(x)).unflatten(2, (self.num_heads, -1))
        k, v = kv if kv is not None else self.key_value(x if context is None else context)
        if rope is not None:
            q, k = kernels.apply_rope(q, rope), kernels.apply_rope(k, rope)
        out = self.attend(q, k, v)
        return self.proj_out(out.flatten(2).type_as(q))

    def attend(self, q, k, v):
        """The one call into the attention kernel (or into context parallelism, which calls it)."""
        if self.context_parallel is not None:
            return self.context_parallel.attention(q, k, v)
        return kernels.attention(q, k, v)


def _layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps)


class WanBlock(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)
        self.self_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNormFP32(cfg.dim, cfg.eps)
        self.cross_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, cfg.dim))

    def forward(self, x, context, e0, rope, context_kv=None):
        # e0: [B, 6, C] or per-token [B, L, 6, C]; modulation math in fp32
        mod = (self.modulation + e0.float()) if e0.ndim == 3 else (self.modulation[None] + e0.float())
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = mod.unbind(-2)
        if e0.ndim == 3:
            shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = (
                m[:, None] for m in (shift_a, scale_a, gate_a, shift_f, scale_f, gate_f))
        h = (_layer_norm(x, self.eps) * (1 + scale_a) + shift_a).type_as(x)
        x = (x.float() + self.self_attn(h, rope=rope) * gate_a).type_as(x)
        x = x + self.cross_attn(self.norm3(x).type_as(x), context, kv=context_kv)
        h = (_layer_norm(x, self.eps) * (1 + scale_f) + shift_f).type_as(x)
        return (x.float() + self.ffn(h).float() * gate_f).type_as(x)


class Head(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.eps = cfg.eps
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)
        self.head = nn.Linear(cfg.dim, cfg.out_channels * math.prod(cfg.patch_size))

    def forward(self, x, e):
        # e: time embedding [B, C] or per-token [B, L, C] (before SiLU; not e0)
        shift, scale = (self.modulation[:, None] + e.float()[..., None, :] if e.ndim == 3
                        else self.modulation + e.float()[:, None]).unbind(-2)
        if e.ndim == 2:
            shift, scale = shift[:, None], scale[:, None]
        return self.head((_layer_norm(x, self.eps) * (1 + scale) + shift).type_as(x))


class TextEmbedding(nn.Module):
    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(text_dim, dim), nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


class PreparedContext(NamedTuple):
    context: torch.Tensor  # text embedding output [B, S, C]
    kv: list  # per block: cross-attention (k, v)


def parameter_shapes(cfg: WanConfig) -> dict[str, tuple[int, ...]]:
    """{mm name: shape} of WanDiT(cfg) without building it (building, even on the meta device, costs
    seconds on first use; conversion only needs the shapes). Tested equal to the module's state_dict."""
    c, f = cfg.dim, cfg.ffn_dim
    shapes = {"patch_embedding.weight": (c, cfg.in_channels, *cfg.patch_size), "patch_embedding.bias": (c,),
              "text_embedding.linear_1.weight": (c, cfg.text_dim), "text_embedding.linear_1.bias": (c,),
              "text_embedding.linear_2.weight": (c, c), "text_embedding.linear_2.bias": (c,),
              "time_embedding.0.weight": (c, cfg.freq_dim), "time_embedding.0.bias": (c,),
              "time_embedding.2.weight": (c, c), "time_embedding.2.bias": (c,),
              "time_projection.1.weight": (6 * c, c), "time_projection.1.bias": (6 * c,),
              "head.modulation": (1, 2, c),
              "head.head.weight": (cfg.out_channels * math.prod(cfg.patch_size), c),
              "head.head.bias": (cfg.out_channels * math.prod(cfg.patch_size),)}
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        shapes[p + "modulation"] = (1, 6, c)
        for attn in ("self_attn", "cross_attn"):
            for proj in ("proj_q", "proj_k", "proj_v", "proj_out"):
                shapes[f"{p}{attn}.{proj}.weight"], shapes[f"{p}{attn}.{proj}.bias"] = (c, c), (c,)
            shapes[f"{p}{attn}.q_norm.weight"] = shapes[f"{p}{attn}.k_norm.weight"] = (c,)
        shapes[p + "norm3.weight"] = shapes[p + "norm3.bias"] = (c,)
        shapes[p + "ffn.0.weight"], shapes[p + "ffn.0.bias"] = (f, c), (f,)
        shapes[p + "ffn.2.weight"], shapes[p + "ffn.2.bias"] = (c, f), (c,)
    return shapes


class WanDiT(nn.Module):
    def __init__(self, config: WanConfig):
        super().__init__()
        self.config = cfg = config
        self.patch_embedding = nn.Conv3d(cfg.in_channels, cfg.dim, cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = TextEmbedding(cfg.text_dim, cfg.dim)
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(WanBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.activation_checkpointing = False  # recompute each block's activations in backward
        self.context_parallel = None

    def enable_context_parallel(self, cp) -> None:
        """Split the sequence over a `wan_core.parallel.context_parallel.ContextParallel` group."""
        self.context_parallel = cp
        for block in self.blocks:
            block.self_attn.context_parallel = cp

    def enable_activation_checkpointing(self) -> None:
        """Recompute each block's activations during backward instead of storing them."""
        self.activation_checkpointing = True

    def compile_blocks(self, **options) -> None:
        """Regional compilation (diffusers' compile_repeated_blocks, torchtitan's per-block compile): each
        transformer block is compiled on its own; the blocks share one graph, so compiling costs one block's
        time, and the rest of the model (embeddings, head, context parallel collectives) stays eager."""
        for block in self.blocks:
            block.compile(**options)

    # -- dtype handling ----------------------------------------------------------------------------
    def to_compute_dtype(self, dtype: torch.dtype, frozen_only: bool = False) -> "WanDiT":
        """Cast to `dtype`, keeping time embedding, modulation tables and norm3 in fp32 (as diffusers
        does when loading with `torch_dtype`); `frozen_only` leaves trainable parameters (LoRA) as they are."""
        for name, param in self.named_parameters():
            if frozen_only and param.requires_grad:
                continue
            keep = any(part in KEEP_IN_FP32 for part in name.split("."))
            param.data = param.data.to(torch.float32 if keep else dtype)
        return self

    # -- forward -----------------------------------------------------------------------------------
    def time_embeddings(self, timestep: torch.Tensor, compute_dtype: torch.dtype):
        """timestep [B] or [B, L] -> (e [B(,L),C] in compute dtype, e0 [B(,L),6,C]).

        Per-token timesteps usually hold only a few distinct values (0 and t), so the MLP runs on the
        distinct values and the result is gathered back: same numbers, L times less work."""
        values, inverse = torch.unique(timestep.reshape(-1), return_inverse=True)
        sinus = timestep_sinusoid(values, self.config.freq_dim)
        te_dtype = self.time_embedding[0].weight.dtype
        e = self.time_embedding(sinus.to(te_dtype)).to(compute_dtype)
        e0 = self.time_projection(e).unflatten(-1, (6, -1))
        shape = timestep.shape
        return e[inverse].reshape(*shape, -1), e0[inverse].reshape(*shape, 6, -1)

    def prepare_context(self, encoder_hidden_states: torch.Tensor) -> "PreparedContext":
        """Text embedding and every block's cross-attention keys/values for a fixed text context, to pass
        as `encoder_hidden_states` on every sampling step instead of recomputing them (same numbers)."""
        dtype = self.patch_embedding.weight.dtype
        context = self.text_embedding(encoder_hidden_states.to(dtype))
        return PreparedContext(context, [block.cross_attn.key_value(context) for block in self.blocks])

    def _patches(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[B, Cin, T, H, W] -> [B, L, Cin*pt*ph*pw]: the conv's receptive fields, tokens in (f, h, w) order."""
        b, c, t, h, w = hidden_states.shape
        pt, ph, pw = self.config.patch_size
        x = hidden_states.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, (t // pt) * (h // ph) * (w // pw), -1)

    def _embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """The patch embedding (a stride = kernel Conv3d) as the matmul it is, on any subset of tokens."""
        conv = self.patch_embedding
        return F.linear(patches.to(conv.weight.dtype), conv.weight.flatten(1), conv.bias)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: "torch.Tensor | PreparedContext") -> torch.Tensor:
        cfg = self.config
        b, _, t, h, w = hidden_states.shape
        pt, ph, pw = cfg.patch_size
        grid = (t // pt, h // ph, w // pw)
        rope = rope_tables(grid, cfg.rope_axes, cfg.rope_max_seq_len, device=str(hidden_states.device))

        cp = self.context_parallel
        if cp is None:
            x = self.patch_embedding(hidden_states.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
            x = x.contiguous()
        else:  # embed only this rank's tokens: the full [B, L, C] never exists on a CP rank
            length = math.prod(grid)
            x = self._embed_patches(cp.shard(self._patches(hidden_states), length))
        dtype = x.dtype
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        tokens = grid[0] * grid[1] * grid[2]
        if timestep.ndim == 2 and timestep.shape[1] != tokens:
            raise ValueError(f"per-token timestep has {timestep.shape[1]} tokens, the latent has {tokens}")
        e, e0 = self.time_embeddings(timestep, dtype)
        if cp is not None:  # this rank's chunk of the sequence, with its RoPE and per-token embeddings
            cp.begin(b, length, x.device)
            rope = RopeTables(*(cp.shard(t, length, dim=0) for t in rope))
            if e0.ndim == 4:
                e, e0 = cp.shard(e, length), cp.shard(e0, length)
        if isinstance(encoder_hidden_states, PreparedContext):
            context, kvs = encoder_hidden_states.context, encoder_hidden_states.kv
        else:
            context, kvs = self.text_embedding(encoder_hidden_states.to(dtype)), [None] * len(self.blocks)

        for block, kv in zip(self.blocks, kvs):
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, context, e0, rope, kv, use_reentrant=False)
            else:
                x = block(x, context, e0, rope, context_kv=kv)

        x = self.head(x, e)
        if cp is not None:
            x = cp.gather(x, length)
        x = x.reshape(b, *grid, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = x.reshape(b, x.shape[1], t, h, w)  # a copy, except when the patch grid has size-1 axes
        # FSDP2 warns (rightly) that in-place ops on a view output would skip its backward hook: never return one
        return out.clone() if out._is_view() else out
