"""Peak memory and time of a LoRA training step vs a full training step of the same DiT (one process).

Each mode runs in a fresh subprocess: build the model, then forward + backward + AdamW step, three times. Peak
memory = the growth of the process's RSS high-water mark from just before the model is built, with glibc told
to return freed memory at once (MALLOC_TRIM_THRESHOLD_=0, MALLOC_ARENA_MAX=2) so it follows live tensors (on CUDA:
torch.cuda.max_memory_allocated), so weights, gradients, optimizer moments and activations all count. The
full step trains every parameter in fp32 with fp32 moments; the LoRA step freezes the base (kept in bf16 with
--base-bf16, as `train.dtype: bf16` keeps it) and trains rank-r adapters on the default targets.

    python benchmarks/lora_step.py                       # CPU, geometry mid, rank 16
    python benchmarks/lora_step.py --device cuda --geometry 5b --checkpointing   # the 5B at 27,280 tokens
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

GEOMETRIES = {
    # the same "mid" geometry as benchmarks/dit_step.py: dim 512, 8 heads, 4 layers, 1344 video tokens
    "mid": dict(dim=512, heads=8, layers=4, ffn=2048, in_ch=16, grid=(7, 24, 32), text=512),
    "5b": dict(dim=3072, heads=24, layers=30, ffn=14336, in_ch=48, grid=(31, 44, 80), text=512),
}


def run_one(mode: str, geo_name: str, device: str, rank: int, base_bf16: bool, checkpointing: bool) -> dict:
    import peft  # noqa: F401  (imported before the baseline in both modes: a fixed start-up cost, not the step's)

    from wan_core.train.config import LoraSettings
    from wan_core.train.lora import add_lora
    from wan_core.model import WanConfig, WanDiT

    geo = GEOMETRIES[geo_name]
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, geo["in_ch"], *geo["grid"], generator=gen).to(dev)
    ctx = torch.randn(1, geo["text"], 4096, generator=gen).to(dev)
    t = torch.tensor([500.0], device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cfg = WanConfig(dim=geo["dim"], ffn_dim=geo["ffn"], num_layers=geo["layers"], num_heads=geo["heads"],
                    in_channels=geo["in_ch"], out_channels=geo["in_ch"])
    with torch.device(dev):
        model = WanDiT(cfg)
    if mode == "lora":
        add_lora(model, LoraSettings(rank=rank, alpha=float(rank)))
        if base_bf16:
            model.to_compute_dtype(torch.bfloat16, frozen_only=True)
    if checkpointing:
        model.enable_activation_checkpointing()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mode == "lora" and base_bf16):
            loss = model(x, t, ctx).float().square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - before if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    return {"mode": mode, "peak_bytes": peak, "time_s": sorted(times)[1],
            "trainable": sum(p.numel() for p in trainable), "params": sum(p.numel() for p in model.parameters())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometry", default="mid", choices=list(GEOMETRIES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--base-bf16", action="store_true", help="keep the frozen base in bf16 (train.dtype: bf16)")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing in both modes")
    parser.add_argument("--one", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.geometry, args.device, args.rank, args.base_bf16, args.checkpointing)))
        return 0
    results = {}
    for mode in ("full", "lora"):
        cmd = [sys.executable, __file__, "--one", mode, "--geometry", args.geometry, "--device", args.device,
               "--rank", str(args.rank)] + (["--base-bf16"] if args.base_bf16 else []) + \
              (["--checkpointing"] if args.checkpointing else [])
        # glibc returns freed memory at once and keeps two arenas: the RSS high-water mark then follows the live
        # tensors instead of whatever the allocator kept cached (without this the two modes differ by chance)
        env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_ARENA_MAX": "2"}
        r = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        results[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    full, lora = results["full"], results["lora"]
    print(f"geometry {args.geometry}, device {args.device}, rank {args.rank}, base "
          f"{'bf16' if args.base_bf16 else 'fp32'}, checkpointing {args.checkpointing}")
    print("| step | trainable parameters | peak memory | step time |\n|---|---|---|---|")
    for r in (full, lora):
        print(f"| {r['mode']} | {r['trainable']:,} of {r['params']:,} | {r['peak_bytes'] / 2**20:.0f} MiB | "
              f"{r['time_s'] * 1000:.0f} ms |")
    print(f"| ratio lora / full | | **{lora['peak_bytes'] / full['peak_bytes']:.2f}** | "
          f"{lora['time_s'] / full['time_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
