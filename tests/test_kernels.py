"""Each kernel's dispatched path against its reference implementation."""
import pytest
import torch

from wan_core.model import kernels
from wan_core.model.rope import rope_tables


def test_attention_matches_reference_with_and_without_key_mask():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 37, 3, 16, generator=gen)
    k, v = torch.randn(2, 41, 3, 16, generator=gen), torch.randn(2, 41, 3, 16, generator=gen)
    torch.testing.assert_close(kernels.attention(q, k, v), kernels.attention_reference(q, k, v), rtol=1e-5, atol=1e-5)
    mask = torch.ones(2, 41, dtype=torch.bool)
    mask[0, 30:] = False
    masked = kernels.attention(q, k, v, mask)
    torch.testing.assert_close(masked, kernels.attention_reference(q, k, v, mask), rtol=1e-5, atol=1e-5)
    # masking the padded keys is the same as leaving them out
    torch.testing.assert_close(masked[:1], kernels.attention(q[:1], k[:1, :30], v[:1, :30]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernels.attention_math(q, k, v, mask), masked, rtol=1e-5, atol=1e-5)


def test_rms_norm_matches_reference():
    x = torch.randn(2, 5, 32) * 3
    w = torch.randn(32)
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-6), kernels.rms_norm_reference(x, w, 1e-6))


def test_rope_matches_complex_reference_and_is_interleaved():
    tables = rope_tables((3, 4, 5), (8, 4, 4))
    assert tables.cos.shape == (60, 1, 16) and tables.cos.dtype == torch.float32
    assert tables.phase.shape == (60, 1, 8)
    x = torch.randn(2, 60, 3, 16)
    expected = kernels.apply_rope_reference(x, tables)
    torch.testing.assert_close(kernels.apply_rope(x, tables), expected)
    torch.testing.assert_close(kernels.apply_rope_real(x, tables.cos, tables.sin), expected)  # the NPU table layout
    # rotation by pairs (2j, 2j+1) preserves each pair's norm; rotate-half would not
    out = kernels.apply_rope(x, tables)
    pair_norm = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(x))


def test_rope_table_angles_follow_the_formula():
    """Token (f, h, w) gets angle pos * 10000^(-2j/D_axis) on each axis (Wan's 3D RoPE, as diffusers computes it)."""
    axes = (44, 42, 42)
    cos, sin, _ = rope_tables((2, 3, 4), axes)
    f, h, w = 1, 2, 3
    token = (f * 3 + h) * 4 + w
    angles = []
    for pos, d in zip((f, h, w), axes):
        angles += [pos / 10000 ** (2 * j / d) for j in range(d // 2)]
    expected = torch.tensor(angles, dtype=torch.float64).repeat_interleave(2)
    torch.testing.assert_close(cos[token, 0].double(), expected.cos(), atol=1e-6, rtol=0)
    torch.testing.assert_close(sin[token, 0].double(), expected.sin(), atol=1e-6, rtol=0)


def blockwise_attention(q, k, v, kernel, blocks):
    """Ring attention's arithmetic on one device: K/V in `blocks` pieces, each through the fused kernel, merged
    by log-sum-exp; the backward gives the kernel the merged output and log-sum-exp (what each ring rank does)."""
    from wan_core.parallel.context_parallel import _merge

    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    kb, vb = kt.chunk(blocks, dim=2), vt.chunk(blocks, dim=2)
    out = lse = None
    for kc, vc in zip(kb, vb):
        o, l = kernel.forward(qt, kc.contiguous(), vc.contiguous(), None)
        out, lse = _merge(out, lse, o.float(), l)
    return out.to(q.dtype), lse, (qt, kb, vb)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_ring_block_kernel_equals_reference(device):
    """The fused per-block kernel of ring attention (CPU: SDPA's CPU flash kernel; CUDA: FlashAttention-2 via
    SDPA's op) against the float64 reference, forward and all three gradients."""
    from wan_core.parallel.context_parallel import fused_block_kernel

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    tol = 1e-5 if device == "cpu" else 2e-2
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 96, 4, 32, device=device).to(dtype) for _ in range(3))
    g = torch.randn(2, 96, 4, 32, device=device).to(dtype)
    kernel = fused_block_kernel(q, masked=False)
    assert type(kernel).__name__ == {"cpu": "CpuFlashKernel", "cuda": "CudaFlashKernel"}[device]
    out, lse, (qt, kb, vb) = blockwise_attention(q, k, v, kernel, blocks=3)
    qr, kr, vr = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = kernels.attention_reference(qr, kr, vr)
    (ref * g.double()).sum().backward()
    assert (out.transpose(1, 2).double() - ref).abs().max() < tol
    gt = g.transpose(1, 2).contiguous()
    grads = [kernel.backward(gt, qt, kc.contiguous(), vc.contiguous(), out, lse, None) for kc, vc in zip(kb, vb)]
    dq = sum(d[0].float() for d in grads).transpose(1, 2)
    dk = torch.cat([d[1] for d in grads], dim=2).transpose(1, 2)
    dv = torch.cat([d[2] for d in grads], dim=2).transpose(1, 2)
    for got, want in ((dq, qr.grad), (dk, kr.grad), (dv, vr.grad)):
        assert (got.double() - want).abs().max() < tol * 10
