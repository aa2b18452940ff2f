"""MindSpeed-MM's clips: what its OpensoraplanVideoProcessor and the Wan2.2 `train_pipeline` of its `data.json`
make of each clip (Ascend/MindSpeed-MM @57069cd, mindspeed_mm/data/data_utils/video_processor.py and
data_transform.py), so a MindSpeed-MM dataset config trains on the same tensors here.

- Selection (`select_valid_data`, from the annotations, before training): the resolution rule (`maxhwresize`, then
  floored to `hw_stride`; dropped below `min_hxw`, default max_hxw / 4, or outside the aspect threshold; with
  `force_resolution` the clip's own aspect against max_height / max_width), the temporal rule (frame indices at the
  frame interval, short clips dropped with probability `drop_short_ratio` from a generator seeded 42, the count cut
  to the largest 4k+1 not below `min_num_frames`), and the bucket rule (a size "FxHxW" kept only when at least
  4 x the global batch clips share it).
- Reading (`__call__`): a random window of `num_frames * frame_interval` indices starting in
  [0, n - window - 1] (TemporalRandomCrop), consecutive frames unless `auto_interval` (then fps / train_fps), the
  count cut as above; then ResizeVideo (short side to cover max_height x max_width, bilinear + antialias on the
  uint8 frames, so it rounds back to uint8), ToTensorVideo (/255), Normalize(0.5, 0.5), CenterCropResizeVideo
  (centre crop to max_height : max_width, bilinear + antialias resize to max_height x max_width).

The window start here is drawn from the run's seed and the sample's position (not Python's global `random`), so a
resumed run reads the same frames. Where MindSpeed-MM fails an assertion at read time (`force_resolution` with a
clip outside h/w in [8/16, 17/16]) and then trains on another random clip, the clip is dropped at selection instead.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("wan22.data")

# ResizeVideo(shortside) -> ToTensorVideo -> norm_fun -> CenterCropResizeVideo: the video pipeline of every Wan2.2
# data.json, the only one read here
WAN_PIPELINE = ("ResizeVideo", "ToTensorVideo", "norm_fun", "CenterCropResizeVideo")


@dataclasses.dataclass(frozen=True)
class MindSpeedClipRules:
    num_frames: int
    max_height: int
    max_width: int
    train_fps: float = 24.0
    auto_interval: bool = True  # MindSpeed-MM's constructor defaults; its Wan2.2 configs set false
    frame_interval: int = 1
    speed_factor: float = 1.0
    min_num_frames: int = 29
    drop_short_ratio: float = 1.0
    force_resolution: bool = True
    max_hxw: int | None = None
    min_hxw: int | None = None
    hw_stride: int = 32
    hw_aspect_thr: float = 1.5
    sp_size: int = 1  # the CP degree when truncate_t_by_sp: latent frames a multiple of it
    vae_stride_t: int = 4

    # -- frames ---------------------------------------------------------------------------------------------
    def interval(self, fps: float) -> float:
        if not self.auto_interval:
            return self.frame_interval
        return 1.0 if abs(fps - self.train_fps) < 0.1 else fps / self.train_fps

    def indices(self, total: int, fps: float) -> np.ndarray:
        """Frame indices of a clip of `total` frames at `fps` before the window (speed factor applied)."""
        idx = np.arange(0, total, self.interval(fps)).astype(int)
        idx = idx[idx < total]
        max_speed = len(idx) / self.num_frames
        if self.speed_factor > 1 and max_speed > 1:
            count = int(len(idx) / min(self.speed_factor, max_speed))
            idx = idx[np.linspace(0, len(idx) - 1, count, dtype=int)]
        return idx

    @property
    def window(self) -> int:
        return self.num_frames * self.frame_interval


    def closest_count(self, count: int) -> int:
        """find_closest_y: the largest y <= count, y >= min_num_frames, whose latent frame count (y - 1) / 4 + 1
        divides by sp_size; -1 when none."""
        for y in range(count, self.min_num_frames - 1, -1):
            if (y - 1) % self.vae_stride_t == 0 and ((y - 1) // self.vae_stride_t + 1) % self.sp_size == 0:
                return y
        return -1

    def frame_count(self, count: int) -> int:
        """Frames a clip of `count` indices gives (-1: too short to encode)."""
        return self.closest_count(min(self.window, count) if count > self.num_frames else count)

    def read_indices(self, total: int, fps: float, draw_start) -> list[int]:
        """The frames read; a long clip's window starts at draw_start(last), uniform in [0, last]
        (TemporalRandomCrop's range)."""
        idx = self.indices(total, fps)
        if len(idx) > self.num_frames:
            start = draw_start(max(0, len(idx) - self.window - 1))
            idx = idx[start:min(start + self.window, len(idx))]
        end = self.closest_count(len(idx))
        if end == -1:
            raise ValueError(f"too short: {total} frames give {len(idx)} at the frame interval, fewer than "
                             f"min_num_frames {self.min_num_frames}")
        return idx[:end].tolist()

    # -- size ---------------------------------------------------------------------------------------------------
    def bucket_size(self, height: int, width: int) -> tuple[int, int] | str:
        """(sample height, width) MindSpeed-MM labels a clip with, or why it drops the clip."""
        if self.force_resolution:
            aspect = self.max_height / self.max_width
            if not aspect / self.hw_aspect_thr <= height / width <= self.hw_aspect_thr * aspect:
                return f"aspect ratio h/w {height / width:.3g} outside [{aspect / self.hw_aspect_thr:.3g}, " \
                       f"{self.hw_aspect_thr * aspect:.3g}] (hw_aspect_thr)"
            if not 8 / 16 <= height / width <= 17 / 16:  # MindSpeed-MM's read-time assertion
                return f"aspect ratio h/w {height / width:.3g} outside [8/16, 17/16], which force_resolution " \
                       "accepts at read time"
            return self.max_height, self.max_width
        h, w = height, width
        if self.max_hxw is not None and h * w > self.max_hxw:  # maxhwresize
            scale = np.sqrt(self.max_hxw / (h * w))
            h, w = int(h * scale), int(w * scale)
        h, w = h // self.hw_stride * self.hw_stride, w // self.hw_stride * self.hw_stride
        min_hxw = self.min_hxw if self.min_hxw is not None else (self.max_hxw // 4 if self.max_hxw else None)
        if h <= 0 or w <= 0:
            return f"{height}x{width} comes out below one {self.hw_stride}-pixel cell"
        if min_hxw is not None and h * w < min_hxw:
            return f"{height}x{width} comes out at {h}x{w}, below min_hxw {min_hxw} pixels"
        if not 1 / self.hw_aspect_thr <= h / w <= self.hw_aspect_thr:
            return f"aspect ratio h/w {h / w:.3g} outside [1/{self.hw_aspect_thr:g}, {self.hw_aspect_thr:g}] " \
                   "(hw_aspect_thr)"
        return h, w

    def select(self, entries: list[dict], global_batch: int) -> tuple[list[dict], list[int], list[tuple[str, str]]]:
        """(kept entries, their frame counts, (path, reason) of each dropped one), as select_valid_data."""
        generator = torch.Generator().manual_seed(42)  # the processor's `seed` default; Wan2.2 configs set none
        kept, counts, labels, dropped = [], [], [], []
        for entry in entries:
            size = self.bucket_size(entry["resolution"]["height"], entry["resolution"]["width"])
            if isinstance(size, str):
                dropped.append((entry["path"], size))
                continue
            count = len(self.indices(int(entry["num_frames"]), float(entry["fps"])))
            if count < self.num_frames and torch.rand(1, generator=generator).item() < self.drop_short_ratio:
                dropped.append((entry["path"], f"shorter than num_frames {self.num_frames} (drop_short_ratio "
                                               f"{self.drop_short_ratio:g})"))
                continue
            count = self.frame_count(count)
            if count == -1:
                dropped.append((entry["path"], f"fewer than min_num_frames {self.min_num_frames} frames"))
                continue
            kept.append(entry)
            counts.append(count)
            labels.append((count, *size))
        sizes = Counter(labels)
        least = 4 * global_batch
        final = [(e, c) for e, c, label in zip(kept, counts, labels) if sizes[label] >= least]
        dropped += [(e["path"], f"its size {'x'.join(map(str, label))} is shared by {sizes[label]} clip(s), fewer "
                                f"than 4 x the global batch ({least})")
                    for e, label in zip(kept, labels) if sizes[label] < least]
        return [e for e, _ in final], [c for _, c in final], dropped

    # -- pixels ---------------------------------------------------------------------------------------------
    def transform(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> float [3, T, max_height, max_width] in [-1, 1], as the Wan2.2 train_pipeline."""
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # T C H W, uint8
        h, w = video.shape[-2:]
        th, tw = shortside_size(h, w, self.max_height, self.max_width)
        if (th, tw) != (h, w):  # on uint8: the result is rounded back to uint8, as there
            video = F.interpolate(video, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
        video = video.float() / 255.0
        video = (video - 0.5) / 0.5
        video = centre_crop_to_aspect(video, self.max_height, self.max_width)
        video = F.interpolate(video, size=(self.max_height, self.max_width), mode="bilinear", align_corners=False,
                              antialias=True)
        return video.permute(1, 0, 2, 3).contiguous()


def shortside_size(h: int, w: int, max_height: int, max_width: int) -> tuple[int, int]:
    """data_transform.shortsideresize (skip_low_resolution false)."""
    if h / w < max_height / max_width:
        return max_height, int(max_height / h * w)
    return int(max_width / w * h), max_width


def centre_crop_to_aspect(clip: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """data_transform.center_crop_th_tw (top_crop false)."""
    h, w = clip.shape[-2:]
    ratio = th / tw
    if h / w > ratio:
        new_h, new_w = int(w * ratio), w
    else:
        new_h, new_w = h, int(h / ratio)
    top, left = int(round((h - new_h) / 2.0)), int(round((w - new_w) / 2.0))
    return clip[..., top:top + new_h, left:left + new_w]


def log_selection(dropped: list[tuple[str, str]], kept: int) -> None:
    if dropped:
        log.warning("MindSpeed-MM's clip rules dropped %d of %d clip(s), as its dataset does; first: %s: %s",
                    len(dropped), len(dropped) + kept, *dropped[0])


def check_pipeline(pipeline, where: str) -> None:
    """Refuse a train_pipeline other than the Wan2.2 one (its steps and their settings)."""
    from wan_core.errors import UserError

    steps = pipeline.get("video") if isinstance(pipeline, dict) else None
    if steps is None:
        return  # none given: MindSpeed-MM's Wan2.2 pipeline is what is read
    kinds = tuple(s.get("trans_type") for s in steps if isinstance(s, dict))
    if kinds != WAN_PIPELINE:
        raise UserError(f"{where}.train_pipeline.video: {list(kinds)} is not supported; clips are read with "
                        f"MindSpeed-MM's Wan2.2 pipeline {list(WAN_PIPELINE)}")
    resize, _, norm, crop = (s.get("param", {}) for s in steps)
    expected = [(resize, "mode", "shortside"), (resize, "interpolation_mode", "bilinear"), (resize, "antialias", True),
                (resize, "align_corners", False), (norm, "mean", 0.5), (norm, "std", 0.5),
                (crop, "use_short_edge", False), (crop, "top_crop", False), (crop, "antialias", True),
                (crop, "align_corners", False), (crop, "interpolation_mode", "bilinear")]
    defaults = {"align_corners": False, "interpolation_mode": "bilinear", "use_short_edge": False, "top_crop": False}
    for params, key, want in expected:
        got = params.get(key, defaults.get(key))
        if got != want and not (isinstance(want, float) and isinstance(got, (int, float)) and math.isclose(got, want)):
            raise UserError(f"{where}.train_pipeline.video: {key} {got!r} is not supported (MindSpeed-MM's Wan2.2 "
                            f"pipeline has {want!r})")
