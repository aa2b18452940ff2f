"""One video across processes: sampling step time with `--nproc 2 --cp 2` against one process, and peak RSS per
process with `--shard-weights` against one process, each process on one thread so that a process stands for a
device (this machine has 2 cores).

Step time: `wan22 sample` on a T2V-A14B-family folder whose transformers are dim 256 / 4 heads / 4 layers (as
benchmarks/sample.py), at two sizes (the mid one is the goal's), CFG on, `mean_step_time_s` of samples.json;
one process with OMP_NUM_THREADS=1 against `--nproc 2 --cp 2` (one thread each), Ulysses and Ring.
Memory: a folder whose transformers are dim 1536 / 12 heads / 16 layers (2.4 GB fp32 each, so weights dominate),
a short video; the largest RSS any process of the run reached (getrusage of the waited-for descendants), one
process against `--nproc 2 --cp 2 --shard-weights`.

    python benchmarks/sample_parallel.py [--steps 4] [--skip-memory]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

SIZES = {"small": (17, 256, 256), "mid": (33, 384, 384)}  # tokens 1280, 5184
STEP_GEOMETRY = dict(num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=4)
MEMORY_GEOMETRY = dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=6144, num_layers=16)


def make_checkpoint(folder: Path, geometry: dict) -> None:
    import torch
    from diffusers import WanTransformer3DModel

    from wan_core.tiny import make_tiny_checkpoint

    make_tiny_checkpoint("t2v-a14b", folder)
    for i, slot in enumerate(("transformer", "transformer_2")):
        cfg = json.loads((folder / slot / "config.json").read_text())
        cfg.update(geometry)
        torch.manual_seed(i)
        WanTransformer3DModel.from_config(cfg).save_pretrained(folder / slot, max_shard_size="20GB")


def sample(folder: Path, out: Path, size, steps: int, *extra: str) -> dict:
    """Run wan22 sample in a fresh process; (mean step time, the largest RSS of any process it started)."""
    prompts = out.parent / "prompts.txt"
    prompts.write_text("a red circle moving\n")
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "wan_core", "sample", "--model", str(folder),
           "--prompts", str(prompts), "--output", str(out), "--size", *map(str, size), "--steps", str(steps),
           "--overwrite", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    summary = json.loads((out / "samples.json").read_text())["settings"]
    return {"step_s": summary["mean_step_time_s"], "max_rss_mib": int(r.stdout.split()[-1]) / 1024}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_checkpoint(tmp / "step", STEP_GEOMETRY)
        print(f"step time, t2v-a14b family dim 256 / 4 layers, CFG on, {args.steps} steps, one thread per process")
        print("| size | tokens | 1 process | --nproc 2 --cp 2 ulysses | ratio | --cp 2 ring | ratio |")
        print("|---|---|---|---|---|---|---|")
        for name, size in SIZES.items():
            tokens = ((size[0] - 1) // 4 + 1) * (size[1] // 16) * (size[2] // 16)
            one = sample(tmp / "step", tmp / "one", size, args.steps)
            uly = sample(tmp / "step", tmp / "uly", size, args.steps, "--nproc", "2", "--cp", "2")
            ring = sample(tmp / "step", tmp / "ring", size, args.steps, "--nproc", "2", "--cp", "2", "--cp-algo", "ring")
            print(f"| {name} {'x'.join(map(str, size))} | {tokens} | {one['step_s']:.3f} s | {uly['step_s']:.3f} s | "
                  f"{uly['step_s'] / one['step_s']:.2f} | {ring['step_s']:.3f} s | {ring['step_s'] / one['step_s']:.2f} |",
                  flush=True)
        if args.skip_memory:
            return
        make_checkpoint(tmp / "big", MEMORY_GEOMETRY)
        size = (5, 128, 128)
        one = sample(tmp / "big", tmp / "m1", size, 2)
        sharded = sample(tmp / "big", tmp / "m2", size, 2, "--nproc", "2", "--cp", "2", "--shard-weights")
        print("\npeak RSS per process, two dim-1536 / 16-layer experts (2 x 2.4 GB fp32), 5x128x128, 2 steps")
        print(f"one process {one['max_rss_mib']:.0f} MiB; --nproc 2 --cp 2 --shard-weights: the largest process "
              f"{sharded['max_rss_mib']:.0f} MiB; ratio {sharded['max_rss_mib'] / one['max_rss_mib']:.2f}")


if __name__ == "__main__":
    main()
