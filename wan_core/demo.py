"""The local end-to-end run behind `make demo`, on tiny generated weights and data.

At this stage of the project it makes a tiny checkpoint and a demo dataset, loads the DiT from the
checkpoint and runs one forward pass on a clip's shape, checking it against diffusers' transformer.
Later stages grow this into the whole Kubeflow DAG under kfp.local.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def run_demo(workdir: str | Path, variant: str = "ti2v-5b") -> Path:
    from diffusers import WanTransformer3DModel

    import wan_core
    from wan_core.data.demo import make_demo_dataset
    from wan_core.tiny import make_tiny_checkpoint

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ckpt = make_tiny_checkpoint(variant, workdir / f"tiny-{variant}")
    data = make_demo_dataset(workdir / "dataset", videos=4)
    entries = json.loads((data / "data.json").read_text())

    dit = wan_core.load_dit(ckpt)
    cfg = dit.config
    ref = WanTransformer3DModel.from_pretrained(ckpt / "transformer")
    spatial = 16 if cfg.in_channels == 48 else 8
    frames = entries[0]["num_frames"]
    latent_shape = (1, cfg.in_channels, (frames - 1) // 4 + 1, entries[0]["resolution"]["height"] // spatial,
                    entries[0]["resolution"]["width"] // spatial)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(latent_shape, generator=gen)
    context = torch.randn(1, 512, cfg.text_dim, generator=gen)
    t = torch.tensor([500.0])
    with torch.no_grad():
        ours = dit(x, t, context)
        theirs = ref(x, t, context, return_dict=False)[0]
    rel = float((ours - theirs).abs().max() / theirs.abs().max())
    report = workdir / "report.md"
    report.write_text(
        f"# wan22 demo ({variant})\n\n"
        f"- tiny checkpoint: `{ckpt}`\n- demo dataset: `{data}` ({len(entries)} videos)\n"
        f"- DiT forward on latent {list(latent_shape)}: output {list(ours.shape)}\n"
        f"- max difference to diffusers' WanTransformer3DModel, relative to output scale: {rel:.2e}\n"
        f"- wall time: {time.perf_counter() - t0:.1f} s\n")
    if rel > 1e-5:
        raise RuntimeError(f"DiT output differs from diffusers by {rel:.2e} (relative)")
    print(report.read_text())
    return report
