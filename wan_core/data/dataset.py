"""Training data: clips decoded at the target fps from a random window, resized and cropped, in a deterministic
order; or, under a MindSpeed-MM data.json, exactly as its dataset code reads them (mindspeed_clips.py).

Every sample is addressed by its *global position* p (0, 1, 2, ... over the whole run): the entry is
perm_epoch[p mod n] with perm_epoch a permutation drawn from (seed, epoch), and the sample's window start, noise,
timestep and dropouts are drawn from generators seeded by (seed, p). Nothing depends on a rank's RNG
or the number of ranks, so layouts agree, and resuming only needs the step.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from wan_core.data.mindspeed_clips import MindSpeedClipRules, log_selection
from wan_core.data.video import VideoInfo, probe_video, read_frames

log = logging.getLogger("wan22.data")


def sample_generator(seed: int, position: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + position) % (2**63 - 1))


def entry_order(n: int, seed: int, position: int) -> int:
    epoch, offset = divmod(position, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919 * epoch))
    return int(perm[offset])


def pick_caption(cap, seed: int, position: int) -> str:
    """The entry's caption; of a list (MindSpeed-MM picks one at random), the one drawn for (seed, position),
    so a resumed run reads the same caption."""
    if isinstance(cap, str):
        return cap
    g = torch.Generator().manual_seed((seed * 1_000_003 + position) * 31 + 17)  # a stream apart from the noise's
    return cap[int(torch.randint(len(cap), (1,), generator=g))]


def window_start(seed: int, position: int, last: int) -> int:
    """The first frame of the sample's window, uniform in [0, last], from a stream of its own."""
    if last <= 0:
        return 0
    g = torch.Generator().manual_seed((seed * 1_000_003 + position) * 31 + 23)
    return int(torch.randint(last + 1, (1,), generator=g))


@dataclasses.dataclass(frozen=True)
class ResolutionRule:
    """MindSpeed-MM's variable resolution: a clip keeps its aspect ratio, scaled down to at most max_hxw pixels
    (data_transform.maxhwresize), then floored to multiples of `stride` (calculate_centered_alignment), and is
    resized to cover that size and centre-cropped."""
    max_hxw: int
    stride: int

    def size(self, height: int, width: int) -> tuple[int, int]:
        if height * width > self.max_hxw:
            scale = math.sqrt(self.max_hxw / (height * width))
            height, width = int(height * scale), int(width * scale)
        return height // self.stride * self.stride, width // self.stride * self.stride


@functools.lru_cache(maxsize=4)
def grouped_order(sizes: tuple, micro: int, seed: int, epoch: int) -> tuple[int, ...]:
    """One epoch's entry order in which every aligned run of `micro` entries has one size: entries are grouped
    by size in the epoch's permutation order, each group padded to a multiple of `micro` with its own first
    entries, and the chunks shuffled. Its length is the same every epoch."""
    perm = torch.randperm(len(sizes), generator=torch.Generator().manual_seed(seed + 7919 * epoch)).tolist()
    groups: dict[tuple, list[int]] = {}
    for i in perm:
        groups.setdefault(sizes[i], []).append(i)
    chunks = []
    for key in sorted(groups):
        members = groups[key]
        padded = [members[k % len(members)] for k in range(-(-len(members) // micro) * micro)]
        chunks += [padded[k:k + micro] for k in range(0, len(padded), micro)]
    shuffle = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(seed + 7919 * epoch + 1)).tolist()
    return tuple(i for c in shuffle for i in chunks[c])


def frame_indices(info: VideoInfo, num_frames: int, fps: float, start: int | None = 0) -> list[int] | None:
    """Source frames for `num_frames` frames at `fps` from frame `start` (None: the last start that fits); None if
    the clip is too short."""
    step = info.fps / fps if info.fps > 0 else 1.0
    offsets = [int(round(k * step)) for k in range(num_frames)]
    last = info.num_frames - 1 - offsets[-1]  # the latest start that still fits
    if last < 0:
        return None
    start = last if start is None else start
    return [start + o for o in offsets] if start <= last else None


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
    """Map-style over global positions; a bad clip is logged and replaced by the next entry (deterministic).
    Each clip has a shape (frames, height, width): fixed, or its own under a ResolutionRule (our aspect-preserving
    buckets) or MindSpeed-MM's rules (its frame counts); the `micro` positions of a micro-batch share one.
    MindSpeed-MM's rules first select the clips as its dataset does (`global_batch` feeds its bucket rule)."""

    def __init__(self, entries: list[dict], num_frames: int, height: int, width: int, fps: float, seed: int,
                 resolution: ResolutionRule | None = None, micro: int = 1,
                 mindspeed: MindSpeedClipRules | None = None, global_batch: int = 1):
        self.seed, self.mindspeed = seed, mindspeed
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, fps
        self.resolution, self.micro = resolution, micro
        if mindspeed is not None:
            kept, counts, dropped = mindspeed.select(entries, global_batch)
            log_selection(dropped, len(kept))
            if not kept:
                from wan_core.errors import UserError

                raise UserError(f"MindSpeed-MM's clip rules keep none of the {len(entries)} clip(s) (first: "
                                f"{dropped[0][0]}: {dropped[0][1]}); relax data.mindspeed or add clips")
            self.entries = kept
            self.sizes = tuple((c, height, width) for c in counts)
        else:
            self.entries = entries
            self.sizes = tuple((num_frames, *self.target_size(e)) for e in entries)
        # clips of several shapes: each micro-batch is drawn from one shape (grouped_order)
        self.grouped = resolution is not None or len(set(self.sizes)) > 1

    def target_size(self, entry: dict) -> tuple[int, int]:
        if self.resolution is None:
            return self.height, self.width
        return self.resolution.size(entry["resolution"]["height"], entry["resolution"]["width"])

    def __len__(self):  # positions are unbounded; the sampler decides which are read
        return 2**62

    def load(self, entry_index: int, position: int) -> torch.Tensor:
        """The clip of entry `entry_index` as the sample at `position` reads it (its window start)."""
        entry = self.entries[entry_index]
        info = probe_video(entry["path"])
        frames, height, width = self.sizes[entry_index]
        if self.mindspeed is not None:
            rules = self.mindspeed
            total = min(int(entry["num_frames"]), info.num_frames)  # its annotation, as there, within the file
            fps = info.fps if info.fps > 0 else 30.0
            idx = rules.read_indices(total, fps, lambda last: window_start(self.seed, position, last))
            if len(idx) != frames:
                raise ValueError(f"{len(idx)} frames read, {frames} expected from its annotation")
            return rules.transform(read_frames(entry["path"], idx))
        first = frame_indices(info, frames, self.fps, start=None)  # the latest window that fits
        if first is None:
            raise ValueError(f"too short: {info.num_frames} frames at {info.fps} fps, need {frames} at "
                             f"{self.fps} fps")
        idx = frame_indices(info, frames, self.fps, window_start(self.seed, position, first[0]))
        return resize_crop(read_frames(entry["path"], idx), height, width)

    def entry_at(self, position: int) -> int:
        if not self.grouped:
            return entry_order(len(self.entries), self.seed, position)
        length = len(grouped_order(self.sizes, self.micro, self.seed, 0))
        epoch, offset = divmod(position, length)
        return grouped_order(self.sizes, self.micro, self.seed, epoch)[offset]

    def __getitem__(self, position: int) -> dict:
        n = len(self.entries)
        first = self.entry_at(position)
        # a replacement has the same size, so the micro-batch keeps one shape
        candidates = [(first + k) % n for k in range(n) if self.sizes[(first + k) % n] == self.sizes[first]]
        for index in candidates:
            try:
                video = self.load(index, position)
                caption = pick_caption(self.entries[index]["cap"], self.seed, position)
                return {"position": position, "entry": index, "video": video, "caption": caption}
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
