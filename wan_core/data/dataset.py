"""Training data: clips decoded at the target fps, resized and cropped, in a deterministic order.

Every sample is addressed by its *global position* p (0, 1, 2, ... over the whole run): the entry is
perm_epoch[p mod n] with perm_epoch a permutation drawn from (seed, epoch), and the sample's noise,
timestep and dropouts are drawn from a generator seeded by (seed, p). Nothing depends on a rank's RNG
or the number of ranks, so layouts agree, and resuming only needs the step.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from wan_core.data.video import VideoInfo, probe_video, read_frames

log = logging.getLogger("wan22.data")


def sample_generator(seed: int, position: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + position) % (2**63 - 1))


def entry_order(n: int, seed: int, position: int) -> int:
    epoch, offset = divmod(position, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919 * epoch))
    return int(perm[offset])


def frame_indices(info: VideoInfo, num_frames: int, fps: float) -> list[int] | None:
    """Source frames for `num_frames` frames at `fps`, from the start; None if the clip is too short."""
    step = info.fps / fps if info.fps > 0 else 1.0
    idx = [int(round(k * step)) for k in range(num_frames)]
    return idx if idx[-1] < info.num_frames else None


def resize_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float [3, F, height, width] in [-1, 1]: short side resized to cover, center crop."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    h, w = video.shape[2:]
    scale = max(height / h, width / w)
    nh, nw = max(height, math.ceil(h * scale)), max(width, math.ceil(w * scale))
    if (nh, nw) != (h, w):
        video = F.interpolate(video, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    video = video[:, :, top:top + height, left:left + width]
    return (video / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


class VideoClipDataset(torch.utils.data.Dataset):
    """Map-style over global positions; a bad clip is logged and replaced by the next entry (deterministic)."""

    def __init__(self, entries: list[dict], num_frames: int, height: int, width: int, fps: float, seed: int):
        self.entries, self.seed = entries, seed
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, fps

    def __len__(self):  # positions are unbounded; the sampler decides which are read
        return 2**62

    def load(self, entry_index: int) -> torch.Tensor:
        entry = self.entries[entry_index]
        info = probe_video(entry["path"])
        idx = frame_indices(info, self.num_frames, self.fps)
        if idx is None:
            raise ValueError(f"too short: {info.num_frames} frames at {info.fps} fps, need {self.num_frames} at "
                             f"{self.fps} fps")
        return resize_crop(read_frames(entry["path"], idx), self.height, self.width)

    def __getitem__(self, position: int) -> dict:
        n = len(self.entries)
        first = entry_order(n, self.seed, position)
        for attempt in range(n):
            index = (first + attempt) % n
            try:
                video = self.load(index)
                return {"position": position, "entry": index, "video": video, "caption": self.entries[index]["cap"]}
            except Exception as exc:  # a bad sample at run time is skipped, never fatal
                log.warning("skipping %s: %s", self.entries[index]["path"], exc)
        raise RuntimeError("no entry of the dataset could be loaded")


class PositionSampler(torch.utils.data.Sampler):
    """Global positions of this rank's micro-batches, from optimizer step `start_step` on.

    Step s covers positions [s*G, (s+1)*G), G = micro * dp * accum; micro-batch a of rank r takes
    s*G + (a*dp + r)*micro + [0, micro)."""

    def __init__(self, start_step: int, steps: int, micro: int, dp: int, accum: int, rank: int):
        self.start, self.steps, self.micro, self.dp, self.accum, self.rank = start_step, steps, micro, dp, accum, rank

    def __iter__(self):
        g = self.micro * self.dp * self.accum
        for s in range(self.start, self.steps):
            for a in range(self.accum):
                base = s * g + (a * self.dp + self.rank) * self.micro
                yield from range(base, base + self.micro)

    def __len__(self):
        return (self.steps - self.start) * self.accum * self.micro


def collate(items: list[dict]) -> dict:
    out = {"position": torch.tensor([i["position"] for i in items]), "caption": [i["caption"] for i in items],
           "entry": torch.tensor([i["entry"] for i in items])}
    for key in ("video", "latents", "condition"):
        if key in items[0]:
            out[key] = torch.stack([i[key] for i in items])
    if "text" in items[0]:
        out["text"] = torch.stack([i["text"] for i in items])
    return out
