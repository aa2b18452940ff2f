"""One training step (forward + backward) of WanDiT vs diffusers' WanTransformer3DModel.

Same weights, same input, one process. Prints: time ratio (ours / diffusers), peak-memory ratio,
and achieved FLOP/s of each divided by a large fp32 matmul's FLOP/s measured in the same run.
FLOPs are counted once with torch.utils.flop_counter.FlopCounterMode on diffusers' step (the model's
own FLOPs) and used for both, so an implementation is not credited for extra work.

    python benchmarks/dit_step.py                       # CPU, fp32, mid-size config
    python benchmarks/dit_step.py --device cuda --dtype bf16 --geometry 5b-2block   # MFU on a GPU
Peak memory on CPU is the growth of the process's RSS high-water mark measured in a fresh
subprocess per implementation; on CUDA, torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

GEOMETRIES = {
    # dim 512, 8 heads, 4 layers; latent 7x24x32 -> 7*12*16 = 1344 tokens, text 512
    "mid": dict(dim=512, heads=8, layers=4, ffn=2048, in_ch=16, grid=(7, 24, 32), text_dim=4096),
    # 5B geometry (dim 3072, 24 heads, ffn 14336), 2 blocks; latent 13x30x52 -> 5070 tokens
    "5b-2block": dict(dim=3072, heads=24, layers=2, ffn=14336, in_ch=48, grid=(13, 30, 52), text_dim=4096),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def build(impl: str, geo: dict, dtype: torch.dtype, device: str):
    from diffusers import WanTransformer3DModel

    from wan_core.model import WanConfig, WanDiT
    from wan_core.weights.names import convert_key

    cfg = WanConfig(dim=geo["dim"], ffn_dim=geo["ffn"], num_layers=geo["layers"], num_heads=geo["heads"],
                    in_channels=geo["in_ch"], out_channels=geo["in_ch"], text_dim=geo["text_dim"])
    torch.manual_seed(0)
    ref = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})
    if impl == "diffusers":
        model = ref
    else:
        model = WanDiT(cfg)
        model.load_state_dict({convert_key(k, "diffusers", "mm"): v for k, v in ref.state_dict().items()})
        del ref
    if dtype != torch.float32:
        model.to(dtype)
    model.to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, geo["in_ch"], *geo["grid"], generator=gen).to(device, dtype)
    ctx = torch.randn(1, 512, geo["text_dim"], generator=gen).to(device, dtype)
    t = torch.tensor([500.0], device=device)
    if impl == "diffusers":
        step = lambda: model(x, t, ctx, return_dict=False)[0].float().square().mean().backward()  # noqa: E731
    else:
        step = lambda: model(x, t, ctx).float().square().mean().backward()  # noqa: E731
    return model, step


def register_cpu_attention_flops():
    """FlopCounterMode has no formula for SDPA's CPU flash kernel (it counts 0 FLOPs there); count it
    like SDPA elsewhere: forward 2 matmuls, backward 2x forward (the usual model-FLOPs convention,
    which does not credit the recomputation of the scores)."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    fwd, bwd = aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention_for_cpu_backward
    if fwd.default in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(fwd)
    def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @flop_counter.register_flop_formula(bwd)
    def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return 2 * flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def run_one(impl: str, geo_name: str, dtype_name: str, device: str, repeats: int) -> dict:
    """Measure one implementation (called in a fresh subprocess so peak memory is its own)."""
    import resource

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    geo = GEOMETRIES[geo_name]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model, step = build(impl, geo, dtype, device)
    params_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    step()
    model.zero_grad(set_to_none=False)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=False)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - params_rss) * 1024
    flops = None
    if impl == "diffusers":
        from torch.utils.flop_counter import FlopCounterMode

        register_cpu_attention_flops()
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    return {"impl": impl, "time_s": sorted(times)[len(times) // 2], "peak_bytes": peak, "flops": flops,
            "rss0": rss0}


def matmul_rate(device: str, dtype: torch.dtype, n: int = 4096) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    reps = 5 if device == "cpu" else 50
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--geometry", default="mid", choices=list(GEOMETRIES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.geometry, args.dtype, args.device, args.repeats)))
        return
    results = {}
    for impl in ("diffusers", "wan_core", "diffusers", "wan_core"):  # interleaved, best of two rounds
        out = subprocess.run([sys.executable, __file__, "--one", impl, "--device", args.device, "--dtype", args.dtype,
                              "--geometry", args.geometry, "--repeats", str(args.repeats)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        prev = results.get(impl)
        if prev is None or r["time_s"] < prev["time_s"]:
            r["flops"] = r["flops"] or (prev or {}).get("flops")
            results[impl] = r
    flops = results["diffusers"]["flops"]
    rate = matmul_rate(args.device, {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype])
    ours, theirs = results["wan_core"], results["diffusers"]
    print(f"geometry={args.geometry} device={args.device} dtype={args.dtype} threads={torch.get_num_threads()}")
    print(f"step FLOPs (FlopCounterMode on diffusers' step): {flops / 1e9:.1f} GFLOP")
    print(f"large matmul rate in this run: {rate / 1e9:.1f} GFLOP/s")
    for name, r in (("diffusers", theirs), ("wan_core", ours)):
        achieved = flops / r["time_s"]
        print(f"{name:10s} step {r['time_s'] * 1e3:9.1f} ms  peak {r['peak_bytes'] / 2**20:8.1f} MiB  "
              f"{achieved / 1e9:8.1f} GFLOP/s = {achieved / rate:.2f} of matmul rate")
    print(f"ratio wan_core/diffusers: time {ours['time_s'] / theirs['time_s']:.3f}  "
          f"peak memory {ours['peak_bytes'] / max(theirs['peak_bytes'], 1):.3f}")
    if args.device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak and args.dtype == "bf16":
            print(f"MFU ({name}, {peak:.0f} TFLOP/s dense bf16): wan_core {flops / ours['time_s'] / 1e12 / peak:.3f}"
                  f"  diffusers {flops / theirs['time_s'] / 1e12 / peak:.3f}")


if __name__ == "__main__":
    main()
