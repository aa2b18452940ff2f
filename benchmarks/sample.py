"""Sampling step time and peak memory: wan_core's sampler vs diffusers' WanPipeline, same checkpoint.

A "tiny but not trivial" T2V-A14B-family pipeline folder (tiny text encoder and VAE from
`wan22 make-tiny-checkpoint`, transformers replaced by dim 256 / 4 heads / 4 layers / ffn 1024 ones)
samples 17 frames at 256x256 (1280 video tokens) with classifier-free guidance on, each
implementation in a fresh subprocess. Step time = median interval between step callbacks; peak
memory = growth of the process's VmHWM during the call.

    python benchmarks/sample.py [--steps 8]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

GEOMETRY = dict(num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=4)
SIZE = (17, 256, 256)


def make_checkpoint(folder: Path) -> None:
    from diffusers import WanTransformer3DModel

    from wan_core.tiny import make_tiny_checkpoint

    make_tiny_checkpoint("t2v-a14b", folder)
    for i, slot in enumerate(("transformer", "transformer_2")):
        cfg = json.loads((folder / slot / "config.json").read_text())
        cfg.update(GEOMETRY)
        import torch

        torch.manual_seed(i)
        WanTransformer3DModel.from_config(cfg).save_pretrained(folder / slot)


def status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def run_one(impl: str, folder: str, steps: int) -> dict:
    import torch

    stamps = []
    frames, height, width = SIZE
    if impl == "diffusers":
        from diffusers import WanPipeline

        pipe = WanPipeline.from_pretrained(folder)
        base = status_kb("VmHWM")
        t0 = time.perf_counter()
        pipe(prompt="a red circle", negative_prompt="blurry", height=height, width=width, num_frames=frames,
             num_inference_steps=steps, guidance_scale=4.0, guidance_scale_2=3.0, output_type="np",
             generator=torch.Generator().manual_seed(0),
             callback_on_step_end=lambda p, i, t, kw: (stamps.append(time.perf_counter()), kw)[1])
    else:
        from wan_core.sample.sampler import SampleRequest, SampleSettings, WanSampler

        sampler = WanSampler(folder)
        base = status_kb("VmHWM")
        t0 = time.perf_counter()
        sampler([SampleRequest("a red circle", 0)],
                SampleSettings(frames, height, width, steps, 4.0, 3.0, "blurry"),
                on_step=lambda *a: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    intervals = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    return {"step_s": intervals[len(intervals) // 2], "total_s": total, "peak_kb": status_kb("VmHWM") - base}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.steps)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        make_checkpoint(folder)
        results = {}
        for impl in ("diffusers", "wan_core", "diffusers", "wan_core"):
            out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--one", impl, str(folder)],
                                 check=True, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if impl not in results or r["step_s"] < results[impl]["step_s"]:
                results[impl] = r
    ours, theirs = results["wan_core"], results["diffusers"]
    print(f"t2v-a14b family, dim 256, 4 layers, {SIZE[0]}x{SIZE[1]}x{SIZE[2]} (1280 tokens), CFG on, {args.steps} steps")
    for name, r in (("diffusers", theirs), ("wan_core", ours)):
        print(f"{name:10s} step {r['step_s'] * 1e3:8.1f} ms  whole call {r['total_s']:6.2f} s  "
              f"peak memory growth {r['peak_kb'] / 1024:7.1f} MiB")
    print(f"ratio wan_core/diffusers: step time {ours['step_s'] / theirs['step_s']:.3f}  "
          f"peak memory {ours['peak_kb'] / max(theirs['peak_kb'], 1):.3f}")


if __name__ == "__main__":
    main()
