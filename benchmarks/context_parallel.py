"""Per-rank peak memory and step time: CP=1 vs CP=2 (Ulysses, Ring), one training step of a DiT whose
attention activations dominate (long sequence, small width).

Each configuration runs under `torchrun --standalone` in fresh processes; each rank uses
cores / ranks threads. Activation memory = how far the rank's RSS rises during a step above its RSS
just before it (VmHWM reset through /proc/self/clear_refs), after one warm-up step; max of 3 steps. Throughput per sample: CP=1 does the
sample on all cores in one process, CP=2 splits the same sample over two processes.

    python benchmarks/context_parallel.py [--tokens 6144]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def rank_main(args):
    import torch
    import torch.distributed as dist

    from wan_core.model import WanConfig, WanDiT
    from wan_core.parallel.context_parallel import ContextParallel
    from wan_core.parallel.mesh import ParallelDims

    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    torch.manual_seed(0)
    cfg = WanConfig(dim=128, ffn_dim=256, num_layers=2, num_heads=4, in_channels=16, out_channels=16, text_dim=64)
    model = WanDiT(cfg)
    if args.cp > 1:
        dims = ParallelDims(world, args.cp, args.algo)
        model.enable_context_parallel(ContextParallel(dims, dims.build_mesh()))
    side = int((args.tokens // 4) ** 0.5)  # 4 latent frames of side x side patches
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 4, 2 * side, 2 * side, generator=gen)
    ctx, t = torch.randn(1, 64, 64, generator=gen), torch.tensor([500.0])
    times, peaks = [], []
    for _ in range(4):  # the first step warms up (gradients, thread pools, communication buffers)
        dist.barrier()
        before = status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS
            f.write("5")
        t0 = time.perf_counter()
        model(x, t, ctx).square().mean().backward()
        times.append(time.perf_counter() - t0)
        peaks.append(status_kb("VmHWM") - before)
        model.zero_grad(set_to_none=False)
    times, peak = times[1:], max(peaks[1:])
    result = {"rank": rank, "step_s": sorted(times)[1], "act_kb": peak, "tokens": 4 * side * side}
    out = [None] * world
    dist.all_gather_object(out, result)
    if rank == 0:
        print("RESULT " + json.dumps(out))
    dist.destroy_process_group()


def run(cp, algo, tokens):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={max(cp, 1)}", __file__,
           "--rank-main", "--cp", str(cp), "--algo", algo, "--tokens", str(tokens)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    ranks = json.loads(line[len("RESULT "):])
    return max(r["step_s"] for r in ranks), max(r["act_kb"] for r in ranks), ranks[0]["tokens"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=6144)
    parser.add_argument("--cp", type=int, default=1)
    parser.add_argument("--algo", default="ulysses")
    parser.add_argument("--rank-main", action="store_true")
    args = parser.parse_args()
    if args.rank_main:
        return rank_main(args)
    base_t, base_m, tokens = run(1, "ulysses", args.tokens)
    print(f"DiT dim 128, 4 heads, 2 layers, {tokens} tokens, fp32, {os.cpu_count()} cores")
    print(f"CP=1            step {base_t:7.3f} s  per-rank activation peak {base_m / 1024:8.1f} MiB")
    for algo in ("ulysses", "ring"):
        t, m, _ = run(2, algo, args.tokens)
        print(f"CP=2 {algo:8s}   step {t:7.3f} s  per-rank activation peak {m / 1024:8.1f} MiB   "
              f"memory {m / base_m:.2f}x of CP=1, throughput per sample {base_t / t:.2f}x of CP=1")


if __name__ == "__main__":
    main()
