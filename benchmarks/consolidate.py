"""`wan22 consolidate` vs torch's `dcp_to_torch_save`: peak memory and time on the same DCP checkpoint.

The checkpoint holds a WanDiT (dim 1024, ffn 4096, 2 layers, fp32, ~45 M parameters) plus its AdamW
state (exp_avg, exp_avg_sq) - a few hundred MB - written by the trainer's CheckpointManager. Each tool
runs in a fresh subprocess; peak memory = growth of VmHWM over the call (after imports); each file
written goes to its own folder; best of 2 rounds.

    python benchmarks/consolidate.py
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CHILD = """
import json, sys, time
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
which, src, dst = sys.argv[1:4]
if which == "torch":
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
else:
    from wan_core.export import consolidate
    import wan_core.model.dit, tqdm
base = hwm()
t0 = time.perf_counter()
if which == "torch":
    dcp_to_torch_save(src + "/iter_0000001", dst + "/model.pt")
else:
    consolidate(src, dst, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_kb": hwm() - base}))
"""


def make_checkpoint(save: Path) -> int:
    import torch

    from wan_core.model import WanConfig, WanDiT
    from wan_core.train.checkpoint import CheckpointManager

    cfg = WanConfig(dim=1024, ffn_dim=4096, num_layers=2, num_heads=8, in_channels=16, out_channels=16)
    torch.manual_seed(0)
    model = WanDiT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    CheckpointManager(save, keep_last=1).save(1, model, opt, {"step": 1, "model_config": cfg.to_diffusers()})
    return sum(f.stat().st_size for f in (save / "iter_0000001").iterdir())


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size = make_checkpoint(tmp / "save")
        best = {}
        for r in range(2):
            for which in ("torch", "wan22"):
                dst = tmp / f"{which}-{r}"
                if which == "torch":
                    dst.mkdir()
                os.sync()
                out = subprocess.run([sys.executable, "-c", CHILD, which, str(tmp / "save"), str(dst)], check=True,
                                     capture_output=True, text=True).stdout
                res = json.loads(out.strip().splitlines()[-1])
                if which not in best or res["seconds"] < best[which]["seconds"]:
                    best[which] = {**res, "peak_kb": min(res["peak_kb"], best.get(which, res)["peak_kb"])}
                shutil.rmtree(dst)
    t, w = best["torch"], best["wan22"]
    print(f"DCP checkpoint (model + AdamW state): {size / 2**20:.0f} MiB")
    print(f"dcp_to_torch_save   {t['seconds']:6.2f} s  peak {t['peak_kb'] / 1024:7.1f} MiB")
    print(f"wan22 consolidate   {w['seconds']:6.2f} s  peak {w['peak_kb'] / 1024:7.1f} MiB")
    print(f"ratio wan22/torch: peak memory {w['peak_kb'] / t['peak_kb']:.3f}  time {w['seconds'] / t['seconds']:.3f}")


if __name__ == "__main__":
    main()
