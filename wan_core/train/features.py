"""`wan22 cache-features`: encode a dataset once (VAE latents, text embeddings, I2V condition) so
training skips the encoders. Layout of OUT:

    features.json           what was encoded (model folder, variant, task, frames, size, fps, entries hash)
    empty_text.safetensors  the empty prompt's embedding (caption dropout)
    samples/000000.safetensors ...  one per dataset entry: latents, text, [condition]
Entries are encoded one at a time, exactly as online training encodes a micro-batch of 1.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from wan_core.errors import UserError
from wan_core.fsutil import atomic_output_dir, check_output_dir
from wan_core.train.config import TrainConfig


def cache_features(cfg: TrainConfig, out: str | Path, progress: bool = True, overwrite: bool = False) -> Path:
    from tqdm import tqdm

    from wan_core.device import default_device
    from wan_core.encoders import first_frame_condition
    from wan_core.train.inputs import build_encoders, clip_dataset, data_source

    out = Path(out)
    check_output_dir(out, "cache-features", overwrite)  # before the encoders load
    if cfg.data.features:
        raise UserError("cache-features reads the dataset itself: give data.data_txt or data.manifest, not data.features")
    device = default_device()
    entries, digest, _ = data_source(cfg)
    several = next((e["path"] for e in entries if not isinstance(e["cap"], str)), None)
    if several:
        raise UserError(f"cache-features encodes one caption per clip; {several} has a list of captions (train "
                        "from the clips instead: the trainer picks one per sample)")
    text_encoder, vae = build_encoders(cfg, device)
    d = cfg.data
    dataset = clip_dataset(cfg, entries, cfg.train.micro_batch_size * cfg.train.grad_accum)  # one process
    with atomic_output_dir(out, "cache-features", overwrite) as tmp:
        (tmp / "samples").mkdir()
        save_file({"text": text_encoder.encode([""])[0].contiguous().cpu()}, tmp / "empty_text.safetensors")
        kept = []
        entries = dataset.entries  # what the clip rules kept
        for i in tqdm(range(len(entries)), desc="encoding", unit="clip", disable=not progress):
            try:  # one window per clip: the one the sample at position i would read
                video = dataset.load(i, i).unsqueeze(0).to(device)
            except Exception as exc:
                print(f"skipping {entries[i]['path']}: {exc}")
                continue
            tensors = {"latents": vae.encode(video)[0], "text": text_encoder.encode([entries[i]["cap"]])[0]}
            if cfg.model.task == "i2v":
                tensors["condition"] = first_frame_condition(vae, video[:, :, 0], video.shape[2])[0]
            save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, tmp / "samples" / f"{len(kept):06d}.safetensors",
                      metadata={"path": entries[i]["path"], "cap": entries[i]["cap"]})
            kept.append(entries[i])
        if not kept:
            raise UserError("no entry could be encoded")
        meta = {"model": cfg.model.from_pretrained, "variant": cfg.model.variant, "task": cfg.model.task,
                "num_frames": d.num_frames, "height": d.height, "width": d.width, "fps": d.fps,
                "entries": len(kept), "data_manifest_hash": digest}
        (tmp / "features.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
