"""Kernels with one dispatch point each: attention, RMSNorm, RoPE.

Every fast path has a plain reference implementation (`*_reference`) that the tests compare against.
The choice of kernel is a fixed rule of device, dtype and shape - never a timing taken at run time -
so the same inputs always take the same path and give the same numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wan_core.device import torch_npu

# -- attention ---------------------------------------------------------------------------------
# The CPU rule was measured once while developing (benchmarks/attention_cpu.py, results in
# benchmarks/README.md): on fp32 forward+backward SDPA's fused CPU kernel beat a plain matmul-softmax
# path and a blocked matmul path with recomputation at every shape tried, from tiny (L=64, D=16) to
# Wan-sized (L=2048, 24 heads, D=128), so CPU always takes SDPA. Nothing is timed at run time.


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bidirectional attention. q: [B, Lq, H, D]; k, v: [B, Lk, H, D]; kv_mask: [B, Lk] bool (True = attend).

    Returns [B, Lq, H, D] in q's dtype. Scale is 1/sqrt(D).
    """
    if q.device.type == "npu":
        return _attention_npu(q, k, v, kv_mask)
    mask = None if kv_mask is None else kv_mask[:, None, None, :]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if q.device.type == "cuda":
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(cuda_sdpa_priority(), set_priority=True):  # the first that takes the inputs runs
            return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask).transpose(1, 2)
    return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask).transpose(1, 2)


def cuda_sdpa_priority():
    """SDPA's CUDA backends, fastest first as measured on an H100 at Wan's shape [1, 24, 27280, 128] bf16:
    cuDNN 631 TFLOP/s forward (577 forward+backward), flash 373 (337), memory-efficient 185."""
    from torch.nn.attention import SDPBackend

    return [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention_math(q, k, v, kv_mask=None):
    """softmax(q kᵀ/√D) v with plain matmuls in the input dtype (the CPU alternative that was measured)."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    scores = qt @ kt.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if kv_mask is not None:
        scores = scores.masked_fill(~kv_mask[:, None, None, :], float("-inf"))
    return (scores.softmax(-1) @ vt).transpose(1, 2)


def attention_reference(q, k, v, kv_mask=None):
    """The ground truth for tests: the math path in float64."""
    return attention_math(q.double(), k.double(), v.double(), kv_mask).to(q.dtype)


def _attention_npu(q, k, v, kv_mask):
    npu = torch_npu()
    mask = None
    if kv_mask is not None:  # npu_fusion_attention masks where the mask is True (the opposite of SDPA)
        mask = (~kv_mask)[:, None, None, :].expand(-1, 1, q.shape[1], -1).contiguous()
    return npu.npu_fusion_attention(
        q, k, v, q.shape[2], input_layout="BSND", atten_mask=mask, scale=1.0 / math.sqrt(q.shape[-1]),
        pre_tockens=2147483647, next_tockens=2147483647,
    )[0]


# -- RMSNorm -----------------------------------------------------------------------------------
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim with a learnable weight (torch.nn.RMSNorm semantics, as diffusers)."""
    if x.device.type == "npu":
        return torch_npu().npu_rms_norm(x, weight, epsilon=eps)[0]
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def rms_norm_reference(x, weight, eps):
    xd = x.double()
    return (xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps) * weight.double()).to(x.dtype)


# -- RoPE --------------------------------------------------------------------------------------
def apply_rope(x: torch.Tensor, tables) -> torch.Tensor:
    """Rotate interleaved pairs (x[2j], x[2j+1]) of x [B, L, H, D] by the angles of `tables`
    (`wan_core.model.rope.RopeTables`). Math in fp32, result in x's dtype."""
    if x.device.type == "npu":  # Wan's RoPE is pairwise-interleaved, not rotate-half
        cos, sin = tables.cos.to(x.dtype)[None], tables.sin.to(x.dtype)[None]
        return torch_npu().npu_rotary_mul(x, cos, sin, rotary_mode="interleave")
    # one complex multiply: the same fp32 products as diffusers' real form, in one kernel (~6x faster on CPU)
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * tables.phase).flatten(-2).to(x.dtype)


def apply_rope_real(x, cos, sin):
    """diffusers' real-arithmetic form: out[2j] = x1 cos - x2 sin, out[2j+1] = x1 sin + x2 cos."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2).to(x.dtype)


def apply_rope_reference(x, tables):
    """The complex-multiply form of official Wan, in float64 from the cos/sin tables."""
    angles = torch.atan2(tables.sin[..., 0::2].double(), tables.cos[..., 0::2].double())
    rotated = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous()) * torch.polar(
        torch.ones_like(angles), angles)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)
