"""Under a MindSpeed-MM data.json the clips are MindSpeed-MM's, clip for clip. The reference below is MindSpeed-MM's
own code written out from its source (Ascend/MindSpeed-MM @57069cd), not ours:
- mindspeed_mm/data/data_utils/video_processor.py: OpensoraplanVideoProcessor.__call__ (frame indices, the
  TemporalRandomCrop window, find_closest_y) and select_valid_data (_process_resolution, _process_video_temporal,
  _apply_final_filters);
- mindspeed_mm/data/data_utils/data_transform.py: ResizeVideo (shortsideresize), ToTensorVideo, Normalize,
  CenterCropResizeVideo (center_crop_th_tw), resize, maxhwresize, calculate_centered_alignment, TemporalRandomCrop.
Clips are real files of several aspect ratios, frame rates and lengths; the window start is pinned to ours."""
import json
import os

import numpy as np
import pytest
import torch

from wan_core.data.dataset import VideoClipDataset, window_start
from wan_core.data.mindspeed_clips import MindSpeedClipRules
from wan_core.data.video import probe_video, read_frames, write_video
from wan_core.errors import UserError
from wan_core.train.config import from_mindspeed

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "mindspeed-mm-wan2.2-configs")
PRE = {"num_frames": 17, "min_num_frames": 1, "frame_interval": 1, "auto_interval": False, "max_height": 32,
       "max_width": 64, "max_hxw": 2048, "train_fps": 24, "speed_factor": 1.0, "drop_short_ratio": 0.0,
       "hw_stride": 8, "force_resolution": False, "hw_aspect_thr": 5.0}


# -- MindSpeed-MM, written out ------------------------------------------------------------------------------
def mm_shortsideresize(h, w, size):
    if h / w < size[0] / size[1]:
        w = int(size[0] / h * w)
        h = size[0]
    else:
        h = int(size[1] / w * h)
        w = size[1]
    return h, w


def mm_center_crop_th_tw(clip, th, tw):
    h, w = clip.size(-2), clip.size(-1)
    tr = th / tw
    if h / w > tr:
        new_h, new_w = int(w * tr), w
    else:
        new_h, new_w = h, int(h / tr)
    i, j = int(round((h - new_h) / 2.0)), int(round((w - new_w) / 2.0))
    return clip[..., i:i + new_h, j:j + new_w]


def mm_video_transforms(video, max_height, max_width):
    """ResizeVideo(shortside, bilinear, antialias) -> ToTensorVideo -> norm_fun(0.5, 0.5) ->
    CenterCropResizeVideo(antialias) on T C H W uint8."""
    h, w = video.shape[-2:]
    tr_h, tr_w = mm_shortsideresize(h, w, (max_height, max_width))
    if not (h == tr_h and w == tr_w):
        video = torch.nn.functional.interpolate(video, size=(tr_h, tr_w), mode="bilinear", align_corners=False,
                                                antialias=True)
    video = video.float() / 255.0
    video = (video - torch.tensor(0.5)) / torch.tensor(0.5)
    video = mm_center_crop_th_tw(video, max_height, max_width)
    return torch.nn.functional.interpolate(video, size=(max_height, max_width), mode="bilinear",
                                           align_corners=False, antialias=True)


def mm_find_closest_y(x, min_num_frames, vae_stride_t=4, model_ds_t=1):
    if x < min_num_frames:
        return -1
    for y in range(x, min_num_frames - 1, -1):
        if (y - 1) % vae_stride_t == 0 and ((y - 1) // vae_stride_t + 1) % model_ds_t == 0:
            return y
    return -1


def mm_call(path, total_frames, pre, begin_index):
    """OpensoraplanVideoProcessor.__call__ with TemporalRandomCrop's draw replaced by `begin_index`."""
    fps = probe_video(path).fps
    if pre["auto_interval"]:
        frame_interval = 1.0 if abs(fps - pre["train_fps"]) < 0.1 else fps / pre["train_fps"]
    else:
        frame_interval = pre["frame_interval"]
    frame_indices = np.arange(0, total_frames, frame_interval).astype(int)
    frame_indices = frame_indices[frame_indices < total_frames]
    size = pre["num_frames"] * pre["frame_interval"]
    if len(frame_indices) > pre["num_frames"]:
        rand_end = max(0, len(frame_indices) - size - 1)
        assert 0 <= begin_index <= rand_end
        frame_indices = frame_indices[begin_index:min(begin_index + size, len(frame_indices))]
    end_frame_idx = mm_find_closest_y(len(frame_indices), pre["min_num_frames"])
    frame_indices = frame_indices[:end_frame_idx]
    video = torch.from_numpy(read_frames(path)[frame_indices]).permute(0, 3, 1, 2)  # decord's get_batch: T C H W
    return mm_video_transforms(video, pre["max_height"], pre["max_width"]).permute(1, 0, 2, 3)


def mm_select_valid_data(samples, pre, global_batch_size):
    """select_valid_data: resolution, temporal (drop_short_ratio draws from Generator(42)), final bucket filter."""
    from collections import Counter

    generator = torch.Generator().manual_seed(42)
    max_hxw = pre.get("max_hxw")
    min_hxw = max_hxw // 4
    thr = pre["hw_aspect_thr"]
    valid, sizes = [], []
    for sample in samples:
        height, width = sample["resolution"]["height"], sample["resolution"]["width"]
        if not pre["force_resolution"]:
            if height * width > max_hxw:
                scale = np.sqrt(max_hxw / (height * width))
                tr_h, tr_w = int(height * scale), int(width * scale)
            else:
                tr_h, tr_w = height, width
            sample_h, sample_w = tr_h // pre["hw_stride"] * pre["hw_stride"], tr_w // pre["hw_stride"] * pre["hw_stride"]
            if sample_h <= 0 or sample_w <= 0 or sample_h * sample_w < min_hxw:
                continue
            if not (sample_h / sample_w <= thr and sample_h / sample_w >= 1 / thr):
                continue
        else:
            aspect = pre["max_height"] / pre["max_width"]
            if not (height / width <= thr * aspect and height / width >= 1 / thr * aspect):
                continue
            sample_h, sample_w = pre["max_height"], pre["max_width"]
        num_frames = sample["num_frames"]
        frame_indices = np.arange(0, num_frames, 1.0).astype(int)
        if len(frame_indices) < pre["num_frames"] and torch.rand(1, generator=generator).item() < pre["drop_short_ratio"]:
            continue
        if len(frame_indices) > pre["num_frames"]:
            frame_indices = frame_indices[:pre["num_frames"]]  # the window's length (its start does not matter)
        end = mm_find_closest_y(len(frame_indices), pre["min_num_frames"])
        if end == -1:
            continue
        valid.append(sample)
        sizes.append(f"{end}x{sample_h}x{sample_w}")
    counter = Counter(sizes)
    return [(s, int(z.split("x")[0])) for s, z in zip(valid, sizes) if counter[z] >= 4 * global_batch_size]


# -- the clips ----------------------------------------------------------------------------------------------
CLIPS = [  # (height, width, fps, frames): landscape, portrait, wide, short, very short, tiny, other rates
    (48, 96, 16, 40), (96, 64, 24, 30), (32, 128, 30, 25), (48, 96, 16, 12), (48, 96, 24, 3), (8, 32, 16, 20),
    (48, 96, 24, 21), (64, 64, 16, 18)]  # widths that are multiples of 32: decord misreads some others


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    entries = []
    for i, (h, w, fps, n) in enumerate(CLIPS):
        base = rng.integers(0, 256, (1, h // 4 + 1, w // 4 + 1, 3)).repeat(4, 1).repeat(4, 2)[:, :h, :w]
        frames = np.clip(base + rng.integers(-40, 40, (n, h, w, 3)), 0, 255).astype(np.uint8)  # textured, moving
        path = folder / f"c{i}.mp4"
        write_video(path, frames, fps)
        entries.append({"path": str(path), "cap": f"clip {i}", "num_frames": n, "fps": fps,
                        "resolution": {"height": h, "width": w}})
    return entries


def rules(pre=PRE, **extra):
    keys = ("auto_interval", "frame_interval", "speed_factor", "min_num_frames", "drop_short_ratio",
            "force_resolution", "max_hxw", "hw_stride", "hw_aspect_thr")
    return MindSpeedClipRules(num_frames=pre["num_frames"], max_height=pre["max_height"], max_width=pre["max_width"],
                              train_fps=pre["train_fps"], **{k: pre[k] for k in keys}, **extra)


def test_clip_tensors_equal_mindspeed_mms(clips):
    """Every kept clip at several positions (several window starts): max_height x max_width whatever the clip's
    aspect ratio, consecutive frames at the file's own rate, short clips at their own 4k+1 length, the first resize
    on uint8; equal to MindSpeed-MM's within one 8-bit code (bit for bit here)."""
    dataset = VideoClipDataset(clips * 4, 17, 32, 64, 24, seed=3, micro=1, mindspeed=rules(), global_batch=1)
    kept = [e["path"] for e in dataset.entries]
    assert str(clips[5]["path"]) not in kept  # 8x32: below max_hxw / 4 pixels after the stride: dropped
    starts = set()
    for index, entry in enumerate(dataset.entries[:len(set(kept))]):
        for position in range(6):
            count = entry["num_frames"]
            last = max(0, count - 17 - 1) if count > 17 else 0
            start = window_start(3, position, last)
            starts.add((index, start))
            ours = dataset.load(index, position)
            reference = mm_call(entry["path"], entry["num_frames"], PRE, start)
            assert ours.shape == reference.shape and ours.shape[2:] == (32, 64)
            assert float((ours - reference).abs().max()) <= 2 / 255 + 1e-6
    shapes = {e["path"]: dataset.sizes[i][0] for i, e in enumerate(dataset.entries)}
    assert shapes[clips[0]["path"]] == 17 and shapes[clips[3]["path"]] == 9 and shapes[clips[4]["path"]] == 1
    assert len({s for i, s in starts if dataset.entries[i]["path"] == clips[0]["path"]}) > 1  # not always frame 0


def test_auto_interval_and_frame_interval_follow_mindspeed_mm(clips):
    pre = dict(PRE, auto_interval=True, train_fps=8)  # 16 / 24 / 30 fps clips read every 2nd / 3rd / 3.75th frame
    dataset = VideoClipDataset(clips * 4, 17, 32, 64, 8, seed=1, mindspeed=rules(pre), global_batch=1)
    for index, entry in enumerate(dataset.entries[:len({e["path"] for e in dataset.entries})]):
        fps = probe_video(entry["path"]).fps
        count = len([i for i in np.arange(0, entry["num_frames"], fps / 8).astype(int) if i < entry["num_frames"]])
        start = window_start(1, 0, max(0, count - 17 - 1) if count > 17 else 0)
        assert float((dataset.load(index, 0) - mm_call(entry["path"], entry["num_frames"], pre, start)).abs().max()) \
            <= 2 / 255 + 1e-6


@pytest.mark.parametrize("pre,global_batch", [(PRE, 1), (dict(PRE, drop_short_ratio=1.0), 1),
                                              (dict(PRE, min_num_frames=13), 1), (PRE, 2),
                                              (dict(PRE, force_resolution=True, hw_aspect_thr=1.2), 1)])
def test_selection_equals_mindspeed_mms(clips, pre, global_batch):
    """Which clips are kept, and at how many frames: small-area and off-aspect clips dropped, short ones kept or
    dropped by drop_short_ratio, counts cut to 4k+1 >= min_num_frames, buckets under 4 x the global batch dropped."""
    many = [dict(e, path=f"{e['path']}#{k}") for k in range(4) for e in clips]  # 4 of each size, 8 for two sizes
    ours = MindSpeedClipRules.select(rules(pre), many, global_batch)
    reference = mm_select_valid_data(many, pre, global_batch)
    assert [e["path"] for e in ours[0]] == [s["path"] for s, _ in reference]
    assert ours[1] == [n for _, n in reference]
    assert ours[2]  # something is dropped in every case, and said


def test_force_resolution_drops_portrait_clips_mindspeed_mm_cannot_read(clips):
    """force_resolution: MindSpeed-MM's read-time assertion (h/w within [8/16, 17/16]) fails on a portrait clip and it
    trains on another random clip instead; here the clip is dropped at selection, named in the log."""
    pre = dict(PRE, force_resolution=True, hw_aspect_thr=5.0)
    many = [dict(e, path=f"{e['path']}#{k}") for k in range(4) for e in clips]
    kept, _, dropped = rules(pre).select(many, 1)
    assert kept and not any(e["path"].startswith(clips[1]["path"] + "#") for e in kept)  # 96x64
    assert any(path.startswith(clips[1]["path"] + "#") and "17/16" in why for path, why in dropped)


def test_our_own_clips_start_at_a_random_frame_and_resume_exactly(clips):
    """Our pipeline (no MindSpeed-MM config): a seeded random window start per sample position, the same on every
    read, and every start in range."""
    dataset = VideoClipDataset(clips[:1], 9, 32, 32, 16, seed=0)
    frames = read_frames(clips[0]["path"])
    starts = []
    for position in range(12):
        video = dataset.load(0, position)
        again = dataset.load(0, position)
        assert torch.equal(video, again)
        start = window_start(0, position, 40 - 9)
        reference = torch.from_numpy(frames[start:start + 9]).permute(3, 0, 1, 2).float()
        reference = torch.nn.functional.interpolate(reference.permute(1, 0, 2, 3), size=(32, 64), mode="bilinear",
                                                    antialias=True, align_corners=False)[..., 16:48]
        assert float((video - (reference.permute(1, 0, 2, 3) / 127.5 - 1)).abs().max()) < 1e-5
        starts.append(start)
    assert len(set(starts)) > 3 and min(starts) >= 0 and max(starts) <= 31


def test_data_json_maps_to_mindspeed_rules(tmp_path, monkeypatch):
    """Each shared data.json reads into data.mindspeed with its own values; another video pipeline is refused."""
    monkeypatch.chdir(tmp_path)
    for folder in ("5B/t2v", "5B/ti2v", "A14B/t2v", "A14B/i2v"):
        model = "pretrain_model.json" if folder.startswith("5B") else "pretrain_model_high.json"
        cfg = from_mindspeed(os.path.join(SHARED, folder, "data.json"), os.path.join(SHARED, folder, model),
                             ["save_path=s"])
        m, d = cfg.data.mindspeed, cfg.data
        assert (d.height, d.width, d.num_frames, d.fps, d.max_hxw) == (480, 832, 49, 24, None)
        assert (m.auto_interval, m.min_num_frames, m.drop_short_ratio, m.force_resolution, m.max_hxw, m.hw_stride,
                m.hw_aspect_thr, m.truncate_t_by_sp) == (False, 1, 0.0, False, 399360, 8, 5.0, False)
    raw = json.loads(open(os.path.join(SHARED, "5B/t2v/data.json")).read())
    raw["dataset_param"]["preprocess_parameters"]["train_pipeline"]["video"][0]["param"]["mode"] = "longside"
    (tmp_path / "data.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="mode 'longside' is not supported"):
        from_mindspeed(tmp_path / "data.json", os.path.join(SHARED, "5B/t2v/pretrain_model.json"), ["save_path=s"])
