"""hf -> mm conversion throughput vs plain file copy, and its peak memory at two model sizes.

A synthetic diffusers transformer with the real TI2V-5B tensor shapes (dim 3072, ffn 14336) but only
2 and 6 blocks, bf16, in 1 GB shards with an index, is converted with `wan22 convert hf-to-mm`'s code
in a fresh subprocess; the same shard files are copied with shutil.copyfile in the same run.
Throughput ratio = copy time / conversion time (same bytes); each timed phase starts after os.sync().
Peak RSS = growth of the subprocess's RSS high-water mark (VmHWM) during the conversion, above its
high-water mark after imports (the interpreter's baseline).

    python benchmarks/convert.py [--workdir DIR] [--blocks 2 6]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from wan_core.model.config import WanConfig  # noqa: E402
from wan_core.model.dit import parameter_shapes  # noqa: E402
from wan_core.weights.names import convert_key  # noqa: E402
from wan_core.weights.safetensors_io import TensorMeta, tensor_bytes_writer, write_sharded  # noqa: E402

CHILD = """
import json, resource, sys, time
from wan_core.weights.convert import hf_to_mm
import wan_core.model.dit, tqdm  # imported before timing: a fixed start-up cost, not throughput
def status_kb(field):  # VmHWM is reset on exec; ru_maxrss would carry the parent's peak over
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
base = status_kb("VmHWM")
t0 = time.perf_counter()
hf_to_mm(sys.argv[1], sys.argv[2], progress=False)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "base_kb": base, "peak_kb": status_kb("VmHWM")}))
"""


def make_synthetic(folder: Path, blocks: int) -> int:
    """Write a bf16 diffusers transformer folder with 5B shapes; returns its size in bytes."""
    cfg = WanConfig(**{**WanConfig.from_preset("ti2v-5b").__dict__, "num_layers": blocks})
    shapes = {convert_key(k, "mm", "diffusers"): s for k, s in parameter_shapes(cfg).items()}
    items = [(k, TensorMeta(torch.bfloat16, s, torch.Size(s).numel() * 2)) for k, s in sorted(shapes.items())]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_diffusers()))
    gen = torch.Generator().manual_seed(0)
    fetch = lambda k: torch.randn(shapes[k], generator=gen).to(torch.bfloat16)  # noqa: E731
    write_sharded(folder, items, tensor_bytes_writer(fetch, dict(items)), "diffusion_pytorch_model", "diffusion_pytorch_model.safetensors.index.json", 10**9)
    return sum(m.nbytes for _, m in items)


def timed_copy(src: Path, dst: Path) -> float:
    os.sync()  # start clean: dirty pages of the previous phase must not throttle this one
    dst.mkdir()
    t0 = time.perf_counter()
    for f in sorted(src.iterdir()):
        shutil.copyfile(f, dst / f.name)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--blocks", type=int, nargs="+", default=[2, 6])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="wan22-convert-bench-"))
    try:
        for blocks in args.blocks:
            src = work / f"hf-{blocks}"
            size = make_synthetic(src, blocks)
            best_copy = best_conv = float("inf")
            peak = base = 0
            for r in range(args.rounds):
                best_copy = min(best_copy, timed_copy(src, work / f"copy-{blocks}-{r}"))
                os.sync()
                out = subprocess.run([sys.executable, "-c", CHILD, str(src), str(work / f"mm-{blocks}-{r}")],
                                     check=True, capture_output=True, text=True).stdout
                res = json.loads(out.strip().splitlines()[-1])
                best_conv = min(best_conv, res["seconds"])
                peak, base = max(peak, res["peak_kb"]), res["base_kb"]
                shutil.rmtree(work / f"copy-{blocks}-{r}")
                shutil.rmtree(work / f"mm-{blocks}-{r}")
            print(f"{blocks} blocks, {size / 2**30:.2f} GiB bf16: copy {size / best_copy / 2**20:7.0f} MiB/s  "
                  f"hf_to_mm {size / best_conv / 2**20:7.0f} MiB/s  ratio {best_copy / best_conv:.2f} of copy  "
                  f"peak RSS above baseline {(peak - base) / 1024:.0f} MiB (baseline {base / 1024:.0f} MiB)")
            shutil.rmtree(src)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
