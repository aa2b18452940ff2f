"""Context parallelism for the DiT's self-attention: Ulysses, Ring, and USP (Ulysses x Ring).

The sequence is padded to a multiple of CP and split into equal chunks (rank c of a CP group holds
tokens [c*Lc, (c+1)*Lc)); padded keys are masked; per-token timestep embeddings and RoPE tables are
split with the sequence; cross-attention stays local (the text context is on every rank); the
output is gathered before unpatchify. Communication uses only all_to_all_single (NCCL, HCCL and gloo
all have it), wrapped so autograd sends gradients back the same way.
- Ulysses: all-to-all from sequence-split to head-split, full attention on H/u heads, and back.
- Ring: K/V blocks travel around the ring; partial results merge by log-sum-exp (online softmax).
  Every rank does the same work per step (bidirectional attention needs no causal balancing).
- USP: Ulysses inside groups of `ulysses_degree` consecutive ranks, Ring across those groups.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from wan_core.model import kernels


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, out_splits, in_splits):
        ctx.group, ctx.out_splits, ctx.in_splits = group, out_splits, in_splits
        out = x.new_empty((sum(out_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        back = grad.new_empty((sum(ctx.in_splits), *grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), ctx.in_splits, ctx.out_splits, group=ctx.group)
        return back, None, None, None


def all_to_all(x: torch.Tensor, group, out_splits: list[int], in_splits: list[int]) -> torch.Tensor:
    """Differentiable all_to_all_single along dim 0 with explicit split sizes."""
    return _AllToAll.apply(x, group, out_splits, in_splits)


def all_gather(x: torch.Tensor, group, size: int) -> torch.Tensor:
    """Every rank's x (same shape on each) concatenated along dim 0 in rank order, through all_to_all_single
    (the one collective this module relies on; differentiable)."""
    n = x.shape[0]
    return all_to_all(x.repeat(size, *[1] * (x.dim() - 1)), group, [n] * size, [n] * size)


class ContextParallel:
    def __init__(self, dims, mesh):
        """`mesh`: ParallelDims.build_mesh()'s DeviceMesh, whose "cp", "ulysses" and "ring" views are my groups."""
        rank = dist.get_rank()
        self.algo = dims.cp_algo
        self.cp_group, self.u_group, self.r_group = (mesh[name].get_group() for name in ("cp", "ulysses", "ring"))
        cp_ranks, u_ranks, r_ranks = (dist.get_process_group_ranks(g) for g in (self.cp_group, self.u_group,
                                                                                 self.r_group))
        self.cp, self.cp_rank = len(cp_ranks), cp_ranks.index(rank)
        self.u, self.u_rank = len(u_ranks), u_ranks.index(rank)
        self.r, self.r_rank = len(r_ranks), r_ranks.index(rank)
        self._mask = None  # the padded global key mask of the current forward, [B, Lpad] or None

    # -- splitting and gathering the sequence ----------------------------------------------------------
    def padded_length(self, length: int) -> int:
        return math.ceil(length / self.cp) * self.cp

    def shard(self, x: torch.Tensor, length: int, dim: int = 1) -> torch.Tensor:
        """This rank's chunk of x along `dim` (zero-padded to a multiple of CP first)."""
        pad = self.padded_length(length) - length
        if pad:
            shape = list(x.shape)
            shape[dim] = pad
            x = torch.cat([x, x.new_zeros(shape)], dim=dim)
        return x.chunk(self.cp, dim=dim)[self.cp_rank]

    def gather(self, x: torch.Tensor, length: int, dim: int = 1) -> torch.Tensor:
        """The whole sequence from every rank's chunk (differentiable), padding dropped."""
        full = all_gather(x.movedim(dim, 0), self.cp_group, self.cp)
        return full[:length].movedim(0, dim)

    def begin(self, batch: int, length: int, device) -> None:
        """Set up the key mask for a forward over `length` real tokens (None when nothing is padded)."""
        lpad = self.padded_length(length)
        self._mask = None
        if lpad != length:
            self._mask = torch.zeros(batch, lpad, dtype=torch.bool, device=device)
            self._mask[:, :length] = True

    # -- attention ---------------------------------------------------------------------------------
    def attention(self, q, k, v):
        """Self-attention over the whole (padded) sequence for this rank's query chunk [B, Lc, H, D]."""
        mask = self._mask
        if self.u > 1:
            q, k, v = (self._seq_to_heads(t) for t in (q, k, v))
        if self.r > 1:
            chunk = q.shape[1]
            local_mask = None if mask is None else mask[:, self.r_rank * chunk:(self.r_rank + 1) * chunk]
            out = self._ring(q, k, v, local_mask)
        else:
            out = kernels.attention(q, k, v, mask)
        return self._heads_to_seq(out) if self.u > 1 else out

    def _seq_to_heads(self, x):
        """[B, Lc, H, D] sequence-split -> [B, u*Lc, H/u, D] head-split over the Ulysses group."""
        b, lc, h, d = x.shape
        send = x.view(b, lc, self.u, h // self.u, d).permute(2, 1, 0, 3, 4).reshape(self.u * lc, b, h // self.u, d)
        recv = all_to_all(send, self.u_group, [lc] * self.u, [lc] * self.u)
        return recv.view(self.u * lc, b, h // self.u, d).permute(1, 0, 2, 3)

    def _heads_to_seq(self, x):
        """Inverse of _seq_to_heads: [B, u*Lc, H/u, D] -> [B, Lc, H, D]."""
        b, l, hu, d = x.shape
        lc = l // self.u
        send = x.permute(1, 0, 2, 3).reshape(l, b, hu, d)  # chunks of the sequence go back to their owners
        recv = all_to_all(send, self.u_group, [lc] * self.u, [lc] * self.u)  # [u (head group), Lc, B, hu, D]
        return recv.view(self.u, lc, b, hu, d).permute(2, 1, 0, 3, 4).reshape(b, lc, self.u * hu, d)

    def _rotate(self, x, differentiable=True):
        """Send x to the next ring rank, receive the previous rank's."""
        n = x.shape[0]
        send_to, recv_from = (self.r_rank + 1) % self.r, (self.r_rank - 1) % self.r
        in_splits = [n if i == send_to else 0 for i in range(self.r)]
        out_splits = [n if i == recv_from else 0 for i in range(self.r)]
        if differentiable:
            return all_to_all(x, self.r_group, out_splits, in_splits)
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=self.r_group)
        return out

    def _ring(self, q, k, v, local_mask):
        kernel = fused_block_kernel(q, masked=local_mask is not None)
        if kernel is not None:
            return _RingFused.apply(q, k, v, local_mask, self, kernel)
        return self._ring_math(q, k, v, local_mask)

    def _ring_math(self, q, k, v, local_mask):
        """Ring attention with plain differentiable ops (any device; stores each block's scores)."""
        scale = 1.0 / math.sqrt(q.shape[-1])
        qf = q.float()
        out = lse = None
        kv = torch.cat([k, v], dim=-1).transpose(0, 1)  # [Lk, B, H, 2D]: split dim 0 for the collective
        mask = local_mask.transpose(0, 1).contiguous() if local_mask is not None else None
        for step in range(self.r):
            if step:
                kv = self._rotate(kv)
                if mask is not None:
                    mask = self._rotate(mask.to(torch.uint8), differentiable=False).bool()
            kb, vb = kv.transpose(0, 1).float().split(q.shape[-1], dim=-1)
            scores = torch.einsum("blhd,bkhd->bhlk", qf, kb) * scale
            if mask is not None:
                scores = scores.masked_fill(~mask.transpose(0, 1)[:, None, None, :], float("-inf"))
            block_lse = torch.logsumexp(scores, dim=-1)  # [B, H, Lq]
            safe = torch.where(torch.isfinite(block_lse), block_lse, torch.zeros_like(block_lse))
            block_out = torch.einsum("bhlk,bkhd->bhld", torch.exp(scores - safe[..., None]), vb)
            out, lse = _merge(out, lse, block_out, block_lse)
        return out.transpose(1, 2).to(q.dtype)  # [B, L, H, D]


def _merge(out, lse, block_out, block_lse):
    """Online-softmax merge of two partial attentions (out [B,H,L,D], lse [B,H,L] fp32; -inf = empty)."""
    if out is None:
        return block_out, block_lse
    new = torch.logaddexp(lse, block_lse)
    finite = torch.isfinite(new)
    ref = torch.where(finite, new, torch.zeros_like(new))
    w_old = torch.where(finite, torch.exp(lse - ref), torch.zeros_like(new))
    w_new = torch.where(finite, torch.exp(block_lse - ref), torch.zeros_like(new))
    return out * w_old[..., None] + block_out * w_new[..., None], new


class BlockKernel:
    """One K/V block of attention through a fused kernel that also returns the softmax log-sum-exp, and the
    kernel's backward given the *merged* output and log-sum-exp. Tensors are [B, H, L, D]; lse [B, H, L] fp32."""

    def forward(self, q, k, v, bias):
        raise NotImplementedError

    def backward(self, grad, q, k, v, out, lse, bias):
        raise NotImplementedError


class CpuFlashKernel(BlockKernel):
    """SDPA's fused flash kernel for CPU (any dtype; an additive key bias for padding)."""

    def forward(self, q, k, v, bias):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias)[:2]
        return out, lse.float()

    def backward(self, grad, q, k, v, out, lse, bias):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, q, k, v, out, lse, 0.0, False, attn_mask=bias)


class CudaFlashKernel(BlockKernel):
    """SDPA's FlashAttention-2 kernel on CUDA (bf16/fp16, no mask): its logsumexp is [B, H, L] fp32."""

    def forward(self, q, k, v, bias):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False)[:2]
        return out, lse.float()

    def backward(self, grad, q, k, v, out, lse, bias):
        empty = torch.empty(0, device=q.device)
        seed_offset = torch.zeros(2, dtype=torch.int64, device=q.device)
        return torch.ops.aten._scaled_dot_product_flash_attention_backward(
            grad, q, k, v, out, lse, empty, empty, q.shape[2], k.shape[2], 0.0, False, seed_offset, seed_offset)[:3]


class NpuFusionKernel(BlockKernel):
    """torch_npu's npu_fusion_attention (BNSD): lse = softmax_max + log(softmax_sum); the backward takes the merged
    statistics as softmax_max = lse, softmax_sum = 1 (how MindSpeed's ring attention calls it). Not run here:
    no NPU is available to this project; it follows torch_npu's documented API."""

    def forward(self, q, k, v, bias):
        from wan_core.device import torch_npu

        res = torch_npu().npu_fusion_attention(q, k, v, q.shape[1], input_layout="BNSD",
                                               scale=1.0 / math.sqrt(q.shape[-1]), pre_tockens=2147483647,
                                               next_tockens=2147483647)
        out, softmax_max, softmax_sum = res[0], res[1], res[2]
        return out, (softmax_max[..., 0] + torch.log(softmax_sum[..., 0])).float()

    def backward(self, grad, q, k, v, out, lse, bias):
        from wan_core.device import torch_npu

        stats = lse[..., None].expand(*lse.shape, 8).contiguous()
        res = torch_npu().npu_fusion_attention_grad(
            q, k, v, grad, q.shape[1], "BNSD", softmax_max=stats, softmax_sum=torch.ones_like(stats),
            attention_in=out, scale_value=1.0 / math.sqrt(q.shape[-1]), pre_tockens=2147483647,
            next_tockens=2147483647)
        return res[0], res[1], res[2]


def fused_block_kernel(q: torch.Tensor, masked: bool) -> BlockKernel | None:
    """The fused per-block kernel for q's device, or None where only the plain path applies (CUDA/NPU with a
    padding mask, or CUDA in fp32, which FlashAttention does not take)."""
    if q.device.type == "cpu":
        return CpuFlashKernel()
    if masked:
        return None
    if q.device.type == "cuda" and q.dtype in (torch.bfloat16, torch.float16):
        return CudaFlashKernel()
    if q.device.type == "npu":
        return NpuFusionKernel()
    return None


class _RingFused(torch.autograd.Function):
    """Ring attention with a fused kernel per K/V block (O(L) memory, like CP=1).

    Forward: K/V blocks go around the ring; each block's (out, logsumexp) merges online. Backward: the
    blocks go around again with their dK/dV accumulators; the kernel's backward, given the *merged*
    out and logsumexp, yields exactly each block's share of the gradients; a last hop returns every
    block's dK/dV to its owner."""

    @staticmethod
    def forward(ctx, q, k, v, local_mask, cp, kernel):
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # [B, H, L, D]
        mask = local_mask
        out = lse = None
        kv = torch.stack([kt, vt])
        for step in range(cp.r):
            if step:
                kv = cp._rotate(kv.transpose(0, 3).contiguous(), differentiable=False).transpose(0, 3)
                if mask is not None:
                    mask = cp._rotate(mask.t().contiguous().to(torch.uint8), differentiable=False).t().bool()
            bias, empty = _key_bias(mask, qt)
            block_out, block_lse = kernel.forward(qt, kv[0].contiguous(), kv[1].contiguous(), bias)
            if empty is not None:
                block_lse = block_lse.masked_fill(empty[:, None, None], float("-inf"))
            out, lse = _merge(out, lse, block_out.float(), block_lse)
        out = out.to(q.dtype)
        ctx.save_for_backward(qt, kt, vt, out, lse, local_mask if local_mask is not None else torch.empty(0))
        ctx.cp, ctx.kernel, ctx.has_mask = cp, kernel, local_mask is not None
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad):
        qt, kt, vt, out, lse, mask = ctx.saved_tensors
        cp, kernel = ctx.cp, ctx.kernel
        mask = mask if ctx.has_mask else None
        g = grad.transpose(1, 2).contiguous()
        dq = torch.zeros_like(qt, dtype=torch.float32)
        kv = torch.stack([kt, vt])
        dkv = torch.zeros_like(kv, dtype=torch.float32)
        lse_kernel = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        for step in range(cp.r):
            if step:
                both = torch.cat([kv.float(), dkv]).transpose(0, 3).contiguous()
                both = cp._rotate(both, differentiable=False).transpose(0, 3)
                kv, dkv = both[:2].to(kt.dtype), both[2:].contiguous()
                if mask is not None:
                    mask = cp._rotate(mask.t().contiguous().to(torch.uint8), differentiable=False).t().bool()
            bias, _ = _key_bias(mask, qt)
            dq_i, dk_i, dv_i = kernel.backward(g, qt, kv[0].contiguous(), kv[1].contiguous(), out, lse_kernel, bias)
            dq += dq_i.float()
            dkv += torch.stack([dk_i, dv_i]).float()
        if cp.r > 1:  # the accumulators now sit one hop before their owners
            dkv = cp._rotate(dkv.transpose(0, 3).contiguous(), differentiable=False).transpose(0, 3)
        dk, dv = dkv[0], dkv[1]
        return (dq.to(qt.dtype).transpose(1, 2), dk.to(kt.dtype).transpose(1, 2), dv.to(vt.dtype).transpose(1, 2),
                None, None, None)


def _key_bias(mask, q):
    """Additive bias [B, 1, 1, Lk] for masked keys, and which batch rows have no key at all."""
    if mask is None:
        return None, None
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
    empty = ~mask.any(dim=1)
    return bias[:, None, None, :], (empty if bool(empty.any()) else None)
