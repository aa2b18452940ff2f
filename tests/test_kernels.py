"""Each kernel's dispatched path against its reference implementation."""
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
