"""The memory plan against measured peaks on this CPU, at the benchmark geometries.

Each case runs in a fresh process: RSS is read after the imports and the inputs exist (the baseline), the
process's RSS high-water mark is reset (/proc/self/clear_refs), then the model is built and the work done; the
measured peak is VmHWM minus the baseline, what the plan predicts (a device holds no interpreter or libraries).
glibc's mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_) so that freed tensors leave the process as they leave a
device allocator.
Cases: an AdamW training step of the DiT at benchmarks/dit_step.py's mid geometry (dim 512, 8 heads, 4 layers,
1344 tokens, text 512 x 4096; its features come precomputed, so no encoders) in fp32, with and without
activation checkpointing, at micro-batch 1 and 4; and a sampling call (benchmarks/sample.py's T2V-A14B-family
folder, dim 256 / 4 layers, 17x256x256, CFG on) with everything resident (offload none).

    python benchmarks/memory_plan.py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MID = dict(dim=512, heads=8, layers=4, ffn=2048, in_ch=16, grid=(7, 24, 32), text_dim=4096)


def rss_kb(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def train_case(checkpointing: bool, batch: int) -> dict:
    import torch

    from wan_core.memory import Geometry, train_parts
    from wan_core.model import WanConfig, WanDiT, variants

    torch.set_num_threads(2)
    g = MID
    cfg = WanConfig(dim=g["dim"], ffn_dim=g["ffn"], num_layers=g["layers"], num_heads=g["heads"],
                    in_channels=g["in_ch"], out_channels=g["in_ch"], text_dim=g["text_dim"])
    t, h, w = g["grid"]
    x = torch.randn(batch, g["in_ch"], t, 2 * h, 2 * w)
    context = torch.randn(batch, 512, g["text_dim"])
    timestep = torch.full((batch,), 500.0)
    base = rss_kb()
    reset_peak()
    model = WanDiT(cfg)
    if checkpointing:
        model.enable_activation_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for _ in range(2):  # the second step has the optimizer's moments from the first
        model(x, timestep, context).float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    measured = (rss_kb("VmHWM") - base) * 1024
    geometry = Geometry.of_config(cfg, variants.get("t2v-a14b"), 0, 0)
    parts = train_parts(geometry, tokens=t * h * w, micro_batch=batch, dtype="fp32", world=1, cp=1,
                        checkpointing=checkpointing, lora_rank=None, lora_targets=0, features=True)
    return {"case": f"train fp32, micro-batch {batch}{', checkpointing' if checkpointing else ''}",
            "predicted": sum(parts.values()), "measured": measured}


def sample_case(folder: str) -> dict:
    import torch

    from wan_core.memory import Geometry, plan_sampling
    from wan_core.sample.sampler import SampleRequest, SampleSettings, WanSampler

    torch.set_num_threads(2)
    frames, height, width = 17, 256, 256
    # the libraries the sampler imports on first use are the interpreter's, not the device's: import them first
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler  # noqa: F401
    from transformers import AutoTokenizer, UMT5EncoderModel  # noqa: F401
    base = rss_kb()
    reset_peak()
    sampler = WanSampler(folder)
    sampler([SampleRequest("a red circle", 0)], SampleSettings(frames, height, width, 2, 4.0, 3.0, "blurry"))
    measured = (rss_kb("VmHWM") - base) * 1024
    plan = plan_sampling(Geometry.of_folder(folder), frames=frames, height=height, width=width, batch=1,
                         dtype="fp32", accelerator=False)
    return {"case": "sample fp32, 17x256x256, CFG on, offload none", "predicted": plan.peak, "measured": measured}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, *rest = args.one
        result = (train_case(rest[0] == "ac", int(rest[1])) if kind == "train" else sample_case(rest[0]))
        print(json.dumps(result))
        return
    from benchmarks.sample import make_checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        make_checkpoint(folder)
        cases = [["train", "no", "1"], ["train", "ac", "1"], ["train", "no", "4"], ["train", "ac", "4"],
                 ["sample", str(folder)]]
        for case in cases:
            # a fixed mmap threshold: freed tensors leave the process at once, as a device allocator frees them
            # (glibc's adaptive threshold otherwise keeps freed buffers in the heap and the high-water mark grows)
            env = dict(os.environ, HF_HUB_OFFLINE="1", MALLOC_MMAP_THRESHOLD_="131072")
            out = subprocess.run([sys.executable, __file__, "--one", *case], capture_output=True, text=True, env=env,
                                 check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| case | predicted | measured | predicted / measured |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['predicted'] / 2**20:.0f} MiB | {r['measured'] / 2**20:.0f} MiB | "
              f"{r['predicted'] / r['measured']:.2f} |")


if __name__ == "__main__":
    main()
