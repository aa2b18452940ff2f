"""The accelerator benchmark: Wan2.2 at real sizes, ours vs diffusers in one process, each line printed as soon
as it is measured (one short call on a lent H100/H200; also runs on an Ascend NPU, and reduced on CPU).

    python benchmarks/gpu.py                  # CUDA or NPU, bf16, full sizes (about 3-4 minutes on an H100)
    python benchmarks/gpu.py --reduced        # any device, small geometry (the test suite runs this on CPU)

Rows (time per call after warm-up, peak memory, MFU against the device's bf16 peak):
  (a) 5b forward / 5b train step (activation checkpointing) at 27,280 tokens (121x704x1280), full 30-layer 5B DiT;
  (b) a14b 2-block forward / train step: the A14B block geometry at the same sequence;
  (c) cfg sampling step: ours (CFG batched, context prepared once) vs diffusers' two transformer calls;
  (d) online encoding vs feature cache: a train step that first VAE-encodes its clip vs one that reads latents.
Model FLOPs: forward 2*params*tokens + 4*L^2*dim per layer (attention); a train step 3x the forward
(recomputation not credited). diffusers' model is built first; ours takes the same tensors (same weights).
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "910B": 313.0}
FULL = dict(dim=3072, heads=24, layers=30, ffn=14336, in_ch=48, grid=(31, 44, 80), text=512, vae_frames=121,
            vae_size=(704, 1280), a14b=dict(dim=5120, heads=40, layers=2, ffn=13824, in_ch=16))
REDUCED = dict(dim=128, heads=4, layers=2, ffn=256, in_ch=48, grid=(3, 8, 8), text=16, vae_frames=9,
               vae_size=(64, 64), a14b=dict(dim=160, heads=4, layers=2, ffn=320, in_ch=16))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "npu":
        return "Ascend " + torch.npu.get_device_name(device)  # type: ignore[attr-defined]
    return "CPU"


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def sync(device):
    if device.type != "cpu":
        getattr(torch, device.type).synchronize()


def reset_peak(device):
    if device.type != "cpu":
        getattr(torch, device.type).reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    if device.type == "cpu":
        return None
    return getattr(torch, device.type).max_memory_allocated(device) / 2**30


def timed(fn, device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def model_flops(params: int, tokens: int, dim: int, layers: int) -> float:
    return 2 * params * tokens + 4 * tokens**2 * dim * layers


def row(what, impl, seconds, gib, flops, peak, ref_seconds=None):
    mfu = f"{100 * flops / seconds / (peak * 1e12):.0f}%" if peak else "n/a"
    ratio = f"{seconds / ref_seconds:.2f}" if ref_seconds else ""
    mem = f"{gib:.1f}" if gib is not None else "n/a"
    print(f"| {what} | {impl} | {seconds:.3f} | {mem} | {mfu} | {ratio} |", flush=True)
    return gib


def plan_rows(cfg, tokens: int, dtype_bytes: int, measured: dict) -> None:
    """The memory plan's prediction for this benchmark's own setups (weights in the compute dtype, no optimizer:
    forward = weights + the inference live set; train step with checkpointing = weights + gradients + one block
    input per layer + one block's saved activations), next to the allocator's measured peak."""
    from wan_core.memory import inference_activation_bytes, train_activation_bytes

    from wan_core.model.dit import parameter_shapes

    params = sum(math.prod(shape) for shape in parameter_shapes(cfg).values())
    weights = params * dtype_bytes
    predicted = {
        "forward": weights + tokens * inference_activation_bytes(cfg.dim, cfg.ffn_dim, dtype_bytes),
        "train step": 2 * weights + cfg.num_layers * tokens * cfg.dim * dtype_bytes
        + train_activation_bytes(cfg.dim, cfg.ffn_dim, dtype_bytes, tokens)}
    for what, value in predicted.items():
        got = measured.get(what)
        ratio = f"{value / 2**30 / got:.2f}" if got else "n/a (no allocator on CPU)"
        shown = "n/a" if got is None else f"{got:.1f}"
        print(f"| memory plan: {what} | predicted {value / 2**30:.2f} GiB | | {shown} | | predicted / measured {ratio} |",
              flush=True)


def build_pair(geo: dict, dtype, device):
    """(diffusers model, our model) with the same weights; ours holds diffusers' tensors."""
    from diffusers import WanTransformer3DModel

    from wan_core.model import WanConfig, WanDiT
    from wan_core.weights.names import convert_key

    cfg = WanConfig(dim=geo["dim"], ffn_dim=geo["ffn"], num_layers=geo["layers"], num_heads=geo["heads"],
                    in_channels=geo["in_ch"], out_channels=geo["in_ch"])
    torch.manual_seed(0)
    with torch.device(device):
        ref = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})
    ref.to(dtype).eval()
    for name, module in ref.named_modules():  # diffusers' own precision placement (what torch_dtype= loading does)
        if any(keep in name.split(".") for keep in ref._keep_in_fp32_modules or []):
            module.float()
    with torch.device("meta"):
        ours = WanDiT(cfg)
    ours.load_state_dict({convert_key(k, "diffusers", "mm"): v for k, v in ref.state_dict().items()}, assign=True)
    ours.eval()
    return ref, ours, cfg


def inputs(geo, in_ch, dtype, device, batch=1):
    gen = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(batch, in_ch, *geo["grid"], generator=gen).to(device, dtype)
    ctx = torch.randn(batch, geo["text"], 4096, generator=gen).to(device, dtype)
    t = torch.full((batch,), 500.0, device=device)
    return x, t, ctx


def bench_stack(label, geo, in_ch, dtype, device, peak, args, compile_ours):
    ref, ours, cfg = build_pair(geo, dtype, device)
    params = sum(p.numel() for p in ours.parameters())
    grid = geo["grid"]
    tokens = grid[0] * (grid[1] // 2) * (grid[2] // 2)
    fwd_flops = model_flops(params, tokens, cfg.dim, cfg.num_layers)
    x, t, ctx = inputs(geo, in_ch, dtype, device)
    warm, iters = args.warmup, args.iters
    results = {}
    with torch.no_grad():
        reset_peak(device)
        results["diffusers"] = timed(lambda: ref(x, t, ctx, return_dict=False), device, warm, iters)
        row(f"{label} forward", "diffusers", results["diffusers"], peak_gib(device), fwd_flops, peak)
        reset_peak(device)
        s = timed(lambda: ours(x, t, ctx), device, warm, iters)
        measured = {"forward": row(f"{label} forward", "ours", s, peak_gib(device), fwd_flops, peak,
                                   results["diffusers"])}
    # a training step with activation checkpointing: the same loss on both
    for model in (ref, ours):
        model.train().requires_grad_(True)
    ref.enable_gradient_checkpointing()
    ours.enable_activation_checkpointing()

    def step(model, call):
        model.zero_grad(set_to_none=True)
        call().float().square().mean().backward()

    reset_peak(device)
    d = timed(lambda: step(ref, lambda: ref(x, t, ctx, return_dict=False)[0]), device, warm, iters)
    row(f"{label} train step", "diffusers", d, peak_gib(device), 3 * fwd_flops, peak)
    reset_peak(device)
    s = timed(lambda: step(ours, lambda: ours(x, t, ctx)), device, warm, iters)
    measured["train step"] = row(f"{label} train step", "ours", s, peak_gib(device), 3 * fwd_flops, peak, d)
    plan_rows(cfg, tokens, 4 if dtype == torch.float32 else 2, measured)
    if compile_ours:
        ours.compile_blocks()
        reset_peak(device)
        s = timed(lambda: step(ours, lambda: ours(x, t, ctx)), device, warm + 1, iters)
        row(f"{label} train step", "ours, compiled blocks", s, peak_gib(device), 3 * fwd_flops, peak, d)
        with torch.no_grad():
            s = timed(lambda: ours(x, t, ctx), device, warm, iters)
        row(f"{label} forward", "ours, compiled blocks", s, peak_gib(device), fwd_flops, peak, results["diffusers"])
    ref.zero_grad(set_to_none=True)
    ours.zero_grad(set_to_none=True)
    return ref, ours, fwd_flops


def bench_cfg_step(ref, ours, geo, dtype, device, peak, fwd_flops, args):
    """One denoising step with classifier-free guidance at the 5B geometry."""
    for model in (ref, ours):
        model.eval().requires_grad_(False)
    x, t, ctx = inputs(geo, geo["in_ch"], dtype, device)
    neg = ctx.flip(1)
    with torch.no_grad():
        def theirs():
            cond = ref(x, t, ctx, return_dict=False)[0]
            uncond = ref(x, t, neg, return_dict=False)[0]
            return uncond + 5.0 * (cond - uncond)

        d = timed(theirs, device, args.warmup, args.iters)
        row("cfg sampling step", "diffusers (two calls)", d, peak_gib(device), 2 * fwd_flops, peak)
        both = ours.prepare_context(torch.cat([ctx, neg]))

        def mine():
            cond, uncond = ours(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
            return uncond + 5.0 * (cond - uncond)

        s = timed(mine, device, args.warmup, args.iters)
        row("cfg sampling step", "ours (batched, context once)", s, peak_gib(device), 2 * fwd_flops, peak, d)


def bench_encoding(ours, geo, dtype, device, peak, fwd_flops, args):
    """A train step that VAE-encodes its clip first (online) vs one that reads cached latents."""
    from diffusers import AutoencoderKLWan

    from wan_core.tiny import tiny_vae_config

    if args.reduced:
        vae_cfg = tiny_vae_config("wan2.2", 0)
    else:  # the Wan2.2 VAE's architecture (random weights: the cost, not the values, is measured)
        vae_cfg = dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                       temperal_downsample=[False, True, True], in_channels=12, out_channels=12, is_residual=True,
                       patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16)
    with torch.device(device):
        vae = AutoencoderKLWan(**vae_cfg)
    vae.to(dtype).eval().requires_grad_(False)
    h, w = geo["vae_size"]
    clip = torch.rand(1, 3, geo["vae_frames"], h, w, device=device, dtype=dtype) * 2 - 1
    ours.train().requires_grad_(True)
    _, t, ctx = inputs(geo, geo["in_ch"], dtype, device)

    def train_on(latents):
        ours.zero_grad(set_to_none=True)
        ours(latents, t, ctx).float().square().mean().backward()

    with torch.no_grad():
        cached = vae.encode(clip).latent_dist.mode()
    s_cache = timed(lambda: train_on(cached), device, args.warmup, args.iters)
    row("feature cache train step", "ours", s_cache, peak_gib(device), 3 * fwd_flops, peak)

    def online():
        with torch.no_grad():
            latents = vae.encode(clip).latent_dist.mode()
        train_on(latents)

    s_online = timed(online, device, args.warmup, args.iters)
    row("online encoding train step", "ours", s_online, peak_gib(device), 3 * fwd_flops, peak, s_cache)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cuda, npu or cpu (default: the accelerator there is)")
    parser.add_argument("--reduced", action="store_true", help="small geometry: a check that everything runs")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, help="the device's bf16 peak, when not in the table")
    parser.add_argument("--only", choices=["5b", "a14b", "cfg", "encoding"], action="append",
                        help="run only these parts (repeatable)")
    args = parser.parse_args()
    from diffusers.utils import logging as diffusers_logging

    from wan_core.device import default_device

    diffusers_logging.set_verbosity_error()  # casting warnings: the placement above is diffusers' own

    device = torch.device(args.device) if args.device else default_device()
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    geo = REDUCED if args.reduced else FULL
    name = device_name(device)
    peak = peak_tflops(name, args.peak_tflops) if device.type != "cpu" else None
    parts = set(args.only or ["5b", "a14b", "cfg", "encoding"])
    print(f"device: {name}; dtype {dtype}; torch {torch.__version__}; geometry {'reduced' if args.reduced else 'full'}"
          f"; peak {peak or 'n/a'} TFLOP/s", flush=True)
    print("| what | implementation | s per call | peak GiB | MFU | ratio to the reference row above |\n"
          "|---|---|---|---|---|---|", flush=True)
    compile_ours = device.type == "cuda"
    ref = ours = None
    if parts & {"5b", "cfg", "encoding"}:
        ref, ours, fwd_flops = bench_stack("5b", geo, geo["in_ch"], dtype, device, peak, args, compile_ours)
        if "cfg" in parts:
            bench_cfg_step(ref, ours, geo, dtype, device, peak, fwd_flops, args)
        del ref
        gc.collect()
        if "encoding" in parts:
            bench_encoding(ours, geo, dtype, device, peak, fwd_flops, args)
        del ours
        gc.collect()
    if "a14b" in parts:
        a14b = dict(geo, **geo["a14b"])
        bench_stack("a14b 2-block", a14b, a14b["in_ch"], dtype, device, peak, args, compile_ours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
