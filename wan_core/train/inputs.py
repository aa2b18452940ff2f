"""What a training config trains on: the dataset entries (from data.txt or a manifest) or a feature
cache written by `wan22 cache-features` (features.py), and the frozen encoders. Used by the trainer and
by cache-features, so neither imports the other."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from wan_core.errors import UserError
from wan_core.train.config import TrainConfig

log = logging.getLogger("wan22.train")


def data_source(cfg: TrainConfig):
    """(entries, manifest hash, feature store): what the config trains on."""
    from wan_core.data.manifest import load_manifest, manifest_hash, validate_dataset

    d = cfg.data
    if d.features:
        store = FeatureStore(d.features)
        store.check_compatible(cfg)
        return None, store.digest, store
    if d.manifest:
        entries = load_manifest(d.manifest)
    else:
        results, _ = validate_dataset(d.data_txt)
        entries = [r.entry for r in results if r.reason is None]
        bad = len(results) - len(entries)
        if bad:
            log.warning("%d invalid dataset entries skipped (run wan22 validate-dataset for the report)", bad)
        if not entries:
            raise UserError(f"data.data_txt {d.data_txt}: no valid entries")
    return entries, manifest_hash(entries), None


def build_encoders(cfg: TrainConfig, device):
    """The frozen text encoder and VAE of the config's pipeline folder."""
    from wan_core.encoders import TextEncoder, VideoVAE

    folder = cfg.model.from_pretrained
    text = TextEncoder(folder, dtype=torch.float32, device=device)
    vae = VideoVAE(folder, dtype=torch.float32, device=device)
    for m in (text.model, vae.model):
        m.requires_grad_(False)
    return text, vae


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


def clip_dataset(cfg: TrainConfig, entries: list[dict], global_batch: int = 1):
    """The clips a config trains on (fixed size, our variable resolution, or MindSpeed-MM's rules, whose bucket rule
    needs the global batch), for the trainer and cache-features."""
    import math

    from wan_core.data.dataset import ResolutionRule, VideoClipDataset
    from wan_core.model import variants

    d = cfg.data
    rule = None
    if d.max_hxw is not None:
        multiple = variants.get(cfg.model.variant).size_multiple
        stride = math.lcm(d.hw_stride or multiple, multiple)
        rule = ResolutionRule(d.max_hxw, stride)
        small = [e["path"] for e in entries if 0 in rule.size(e["resolution"]["height"], e["resolution"]["width"])]
        if small:
            raise UserError(f"data.max_hxw {d.max_hxw}: {len(small)} clip(s) come out smaller than one "
                            f"{stride}-pixel cell (first: {small[0]}); raise max_hxw or drop them")
    mindspeed = None
    if d.mindspeed is not None:
        from wan_core.data.mindspeed_clips import MindSpeedClipRules

        m = d.mindspeed
        mindspeed = MindSpeedClipRules(
            num_frames=d.num_frames, max_height=d.height, max_width=d.width, train_fps=d.fps,
            auto_interval=m.auto_interval, frame_interval=m.frame_interval, speed_factor=m.speed_factor,
            min_num_frames=m.min_num_frames, drop_short_ratio=m.drop_short_ratio, force_resolution=m.force_resolution,
            max_hxw=m.max_hxw, min_hxw=m.min_hxw, hw_stride=m.hw_stride, hw_aspect_thr=m.hw_aspect_thr or 1.5,
            sp_size=cfg.parallel.cp if m.truncate_t_by_sp else 1,
            vae_stride_t=variants.get(cfg.model.variant).vae_temporal)
    t = cfg.train
    return VideoClipDataset(entries, d.num_frames, d.height, d.width, d.fps, t.seed, rule, t.micro_batch_size,
                            mindspeed, global_batch)
