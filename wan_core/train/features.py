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
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from wan_core.errors import UserError
from wan_core.fsutil import atomic_output_dir, check_output_dir
from wan_core.train.config import TrainConfig

MATCH_KEYS = ("variant", "task", "num_frames", "height", "width", "fps")


def cache_features(cfg: TrainConfig, out: str | Path, progress: bool = True, overwrite: bool = False) -> Path:
    from tqdm import tqdm

    from wan_core.data.dataset import VideoClipDataset
    from wan_core.device import default_device
    from wan_core.encoders import first_frame_condition
    from wan_core.train.trainer import build_encoders, data_source

    out = Path(out)
    check_output_dir(out, "cache-features", overwrite)  # before the encoders load
    if cfg.data.features:
        raise UserError("cache-features reads the dataset itself: give data.data_txt or data.manifest, not data.features")
    device = default_device()
    entries, digest, _ = data_source(cfg)
    text_encoder, vae = build_encoders(cfg, device)
    d = cfg.data
    dataset = VideoClipDataset(entries, d.num_frames, d.height, d.width, d.fps, cfg.train.seed)
    with atomic_output_dir(out, "cache-features", overwrite) as tmp:
        (tmp / "samples").mkdir()
        save_file({"text": text_encoder.encode([""])[0].contiguous().cpu()}, tmp / "empty_text.safetensors")
        kept = []
        for i in tqdm(range(len(entries)), desc="encoding", unit="clip", disable=not progress):
            try:
                video = dataset.load(i).unsqueeze(0).to(device)
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


class FeatureStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.meta = json.loads((self.folder / "features.json").read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"data.features {folder}: not a cache-features folder ({exc})") from None
        self.count = int(self.meta["entries"])
        self.empty_text = load_file(self.folder / "empty_text.safetensors")["text"]
        self.digest = self.meta.get("data_manifest_hash")

    def check_compatible(self, cfg: TrainConfig) -> None:
        wanted = {"variant": cfg.model.variant, "task": cfg.model.task, "num_frames": cfg.data.num_frames,
                  "height": cfg.data.height, "width": cfg.data.width, "fps": cfg.data.fps}
        wrong = [f"{k}: cache {self.meta.get(k)!r}, config {v!r}" for k, v in wanted.items() if self.meta.get(k) != v]
        if wrong:
            raise UserError(f"data.features {self.folder} was encoded for other settings ({'; '.join(wrong)}); "
                            "run wan22 cache-features again")

    def dataset(self, seed: int):
        return _FeatureDataset(self, seed)


class _FeatureDataset(torch.utils.data.Dataset):
    def __init__(self, store: FeatureStore, seed: int):
        self.store, self.seed = store, seed

    def __len__(self):
        return 2**62

    def __getitem__(self, position: int) -> dict:
        from wan_core.data.dataset import entry_order

        index = entry_order(self.store.count, self.seed, position)
        path = self.store.folder / "samples" / f"{index:06d}.safetensors"
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            caption = f.metadata().get("cap", "")
        return {"position": position, "entry": index, "caption": caption, **tensors}
