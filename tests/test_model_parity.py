"""WanDiT against diffusers' WanTransformer3DModel with the same random weights."""
import pytest
import torch
from diffusers import WanTransformer3DModel

from wan_core.model import WanConfig, WanDiT
from wan_core.model.dit import KEEP_IN_FP32
from wan_core.weights.names import convert_key


def make_pair(preset: str, seed: int = 0):
    cfg = WanConfig.from_preset(preset)
    torch.manual_seed(seed)
    ref = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})
    with torch.no_grad():  # larger than default init so every path contributes visibly
        for p in ref.parameters():
            p.normal_(0, 0.3)
    ours = WanDiT(cfg)
    ours.load_state_dict({convert_key(k, "diffusers", "mm"): v for k, v in ref.state_dict().items()}, strict=True)
    return cfg, ref, ours


def inputs(cfg, per_token: bool, batch: int = 2, grid=(3, 8, 12), seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, *grid, generator=gen)
    ctx = torch.randn(batch, 512, cfg.text_dim, generator=gen)
    if per_token:  # 5B ti2v: first latent frame's tokens at t=0, the rest at t
        tokens_per_frame = (grid[1] // 2) * (grid[2] // 2)
        t = torch.tensor([937.0, 412.0])[:, None].expand(batch, grid[0] * tokens_per_frame).clone()
        t[:, :tokens_per_frame] = 0.0
    else:
        t = torch.tensor([999.0, 17.0])[:batch]
    return x, t, ctx


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("preset,per_token", [("tiny-t2v", False), ("tiny-i2v", False), ("tiny-ti2v", True),
                                              ("tiny-ti2v", False)])
def test_forward_and_gradients_match_diffusers_fp32(preset, per_token):
    cfg, ref, ours = make_pair(preset)
    x, t, ctx = inputs(cfg, per_token)
    expected = ref(x, t, ctx, return_dict=False)[0]
    got = ours(x, t, ctx)
    assert got.shape == expected.shape == (2, cfg.out_channels, 3, 8, 12)
    assert rel_err(got, expected) < 1e-5

    target = torch.randn_like(expected)
    ((expected - target) ** 2).mean().backward()
    ((got - target) ** 2).mean().backward()
    ref_params = dict(ref.named_parameters())
    for diffusers_name in ["patch_embedding.weight", "condition_embedder.time_embedder.linear_1.weight",
                           "blocks.0.attn1.to_q.weight", "blocks.1.attn2.norm_k.weight", "blocks.1.norm2.bias",
                           "blocks.0.scale_shift_table", "scale_shift_table", "proj_out.weight"]:
        g_ref = ref_params[diffusers_name].grad
        g_ours = ours.get_parameter(convert_key(diffusers_name, "diffusers", "mm")).grad
        assert g_ref is not None and g_ours is not None, diffusers_name
        assert rel_err(g_ours, g_ref) < 1e-5, diffusers_name


def test_per_token_timestep_equals_broadcast_when_uniform():
    """[B, L] timesteps with one value per sample must equal the [B] form (5B t2v case)."""
    cfg, _, ours = make_pair("tiny-ti2v")
    x, _, ctx = inputs(cfg, per_token=False)
    t = torch.tensor([600.0, 5.0])
    tokens = 3 * 4 * 6
    assert rel_err(ours(x, t[:, None].expand(2, tokens), ctx), ours(x, t, ctx)) < 1e-6


def test_first_frame_tokens_at_t0_change_output():
    """The per-token timestep is really used: zeroing frame-0 timesteps changes the output."""
    cfg, _, ours = make_pair("tiny-ti2v")
    x, t, ctx = inputs(cfg, per_token=True)
    uniform = t.clone()
    uniform[:, :24] = uniform[:, -1:]
    assert rel_err(ours(x, t, ctx), ours(x, uniform, ctx)) > 1e-3


# Documented in README (relative to the output scale). On CPU ours equals diffusers in bf16 bit for bit;
# the bound leaves room for kernel differences on other devices. bf16 vs fp32 measures about 1e-2.
BF16_VS_DIFFUSERS = 1e-2
BF16_VS_FP32 = 5e-2


@pytest.mark.parametrize("preset,per_token", [("tiny-t2v", False), ("tiny-ti2v", True)])
def test_bf16_follows_diffusers_precision_placement(preset, per_token):
    cfg, ref, ours = make_pair(preset)
    x, t, ctx = inputs(cfg, per_token)
    fp32_out = ours(x, t, ctx).detach()
    ref_bf16 = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})
    ref_bf16.load_state_dict(ref.state_dict())
    # diffusers keeps _keep_in_fp32_modules in fp32 when loading with torch_dtype; do the same by hand
    for name, p in ref_bf16.named_parameters():
        if not any(m in name.split(".") for m in WanTransformer3DModel._keep_in_fp32_modules):
            p.data = p.data.to(torch.bfloat16)
    ours.to_compute_dtype(torch.bfloat16)
    kept = {n for n, p in ours.named_parameters() if p.dtype == torch.float32}
    assert kept and all(any(part in KEEP_IN_FP32 for part in n.split(".")) for n in kept)
    expected = ref_bf16(x.bfloat16(), t, ctx.bfloat16(), return_dict=False)[0]
    got = ours(x.bfloat16(), t, ctx.bfloat16())
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    assert rel_err(got, expected) < BF16_VS_DIFFUSERS
    assert rel_err(got, fp32_out) < BF16_VS_FP32


def test_activation_checkpointing_gives_the_same_gradients():
    cfg, _, ours = make_pair("tiny-ti2v")
    x, t, ctx = inputs(cfg, per_token=True)
    ours(x, t, ctx).square().mean().backward()
    plain = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    ours.enable_activation_checkpointing()
    ours(x, t, ctx).square().mean().backward()
    for n, p in ours.named_parameters():
        assert torch.equal(p.grad, plain[n]), n


@pytest.mark.parametrize("latent", [(3, 2, 2), (3, 4, 6)], ids=["one-patch-grid", "larger-grid"])
def test_output_is_never_a_view(latent):
    """FSDP2 skips its backward hook when an in-place op hits a view output; the DiT returns fresh tensors
    (also for a 1x1 patch grid, where the unpatchify reshape alone would be a view)."""
    torch.manual_seed(0)
    cfg = WanConfig.from_preset("tiny-ti2v")
    model = WanDiT(cfg)
    t, h, w = latent
    out = model(torch.randn(1, cfg.in_channels, t, h, w), torch.tensor([500.0]), torch.randn(1, 7, cfg.text_dim))
    assert out.shape == (1, 48, t, h, w) and not out._is_view()
