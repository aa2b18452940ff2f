"""Sampling: frames equal to diffusers' pipelines, expert switching, outputs and bad inputs."""
import json
import os

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline
from PIL import Image

from wan_core.errors import UserError
from wan_core.sample.run import SampleJob, run_sample
from wan_core.sample.sampler import SampleRequest, SampleSettings, WanSampler
from helpers.wan22_cli import run_wan22

PROMPTS = [("a red circle moving from left to right", 11), ("a blue square bouncing", 12)]


def make_image(seed=0, size=(40, 56)):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8))


CASES = {  # name: (variant, with image, pixel size, guidance (G, G2))
    "t2v-a14b": ("t2v-a14b", False, 16, (4.0, 3.0)),
    "i2v-a14b": ("i2v-a14b", True, 16, (3.5, 2.0)),
    "ti2v-5b/t2v": ("ti2v-5b", False, 32, (5.0, None)),
    "ti2v-5b/ti2v": ("ti2v-5b", True, 32, (5.0, None)),
}


def diffusers_frames(folder, with_image, size, guidance, steps, negative):
    pipe = (WanImageToVideoPipeline if with_image else WanPipeline).from_pretrained(folder)
    out = []
    for prompt, seed in PROMPTS:
        kw = dict(prompt=prompt, negative_prompt=negative, height=size, width=size, num_frames=5,
                  num_inference_steps=steps, guidance_scale=guidance[0], output_type="np",
                  generator=torch.Generator().manual_seed(seed))
        if guidance[1] is not None:
            kw["guidance_scale_2"] = guidance[1]
        if with_image:
            kw["image"] = make_image()
        out.append(pipe(**kw).frames[0])
    return np.stack(out)


@pytest.mark.parametrize("case", list(CASES))
def test_frames_equal_diffusers(tiny_checkpoints, case):
    variant, with_image, size, guidance = CASES[case]
    folder = tiny_checkpoints[variant]
    settings = SampleSettings(frames=5, height=size, width=size, steps=6, guidance=guidance[0], guidance_2=guidance[1],
                              negative_prompt="blurry, static")
    sampler = WanSampler(folder)
    image = make_image() if with_image else None
    ours = sampler([SampleRequest(p, s, image) for p, s in PROMPTS], settings)
    theirs = diffusers_frames(folder, with_image, size, guidance, 6, "blurry, static")
    assert ours.shape == theirs.shape == (2, 5, size, size, 3) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-4
    # the comparison can fail: another seed, or another guidance, gives visibly different frames
    other = sampler([SampleRequest(PROMPTS[0][0], 99, image)], settings)
    assert np.abs(other[0] - ours[0]).max() > 1e-3
    if with_image and variant == "ti2v-5b":  # the first frame is the image's (same for any seed)
        assert np.abs(other[0, 0] - ours[0, 0]).max() < np.abs(other[0, 1:] - ours[0, 1:]).max()


@pytest.mark.parametrize("variant,boundary", [("t2v-a14b", 875.0), ("i2v-a14b", 900.0)])
def test_expert_switch_at_boundary(tiny_checkpoints, variant, boundary):
    folder = tiny_checkpoints[variant]
    steps = 12
    scheduler = UniPCMultistepScheduler.from_pretrained(folder / "scheduler")
    scheduler.set_timesteps(steps)
    expected = [0 if t >= boundary else 1 for t in scheduler.timesteps.tolist()]
    assert 0 < sum(expected) < steps  # both experts take part at this step count
    sampler = WanSampler(folder)
    seen = []
    settings = SampleSettings(frames=5, height=16, width=16, steps=steps, guidance=4.0, guidance_2=3.0,
                              negative_prompt="")
    image = make_image() if variant == "i2v-a14b" else None
    sampler.denoise([SampleRequest("a dog", 0, image)], settings, on_step=lambda i, t, e: seen.append((t, e)))
    assert [e for _, e in seen] == expected
    assert [t for t, _ in seen] == [int(t) for t in scheduler.timesteps]
    # a larger flow shift keeps more steps at high noise
    shifted = []
    sampler.denoise([SampleRequest("a dog", 0, image)], dataclass_replace(settings, flow_shift=12.0),
                    on_step=lambda i, t, e: shifted.append(e))
    assert shifted.count(0) > expected.count(0)


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def cli(*args, cwd=None):
    return run_wan22("sample", *args, cwd=cwd)


def test_cli_outputs_numbering_seeds_and_nproc(tmp_path, tiny_checkpoints):
    prompts = write_lines(tmp_path / "prompts.txt", ["a red circle", "", "  ", "a green ball", "a white box"])
    common = ["--model", str(tiny_checkpoints["ti2v-5b"]), "--prompts", prompts, "--size", "5", "32", "32",
              "--steps", "3", "--seed", "40", "--save-array", "--negative-prompt", ""]
    r = cli(*common, "--output", str(tmp_path / "one"), "--batch-size", "2")
    assert r.returncode == 0, r.stderr
    # off a terminal: a progress line per denoising step (fewer than 20 in all), with elapsed and remaining time
    lines = [line for line in r.stderr.splitlines() if line.startswith("sampling: step")]
    assert [line.split()[2] for line in lines] == [f"{s}/6" for s in range(1, 7)], r.stderr
    assert "batch 2/2" in lines[-1] and all("elapsed" in line and "remaining ~" in line for line in lines)
    index = json.loads((tmp_path / "one" / "samples.json").read_text())
    assert [s["index"] for s in index["samples"]] == [0, 1, 2]
    assert [s["seed"] for s in index["samples"]] == [40, 41, 42]
    assert [s["prompt"] for s in index["samples"]] == ["a red circle", "a green ball", "a white box"]
    assert index["settings"]["guidance"] == [5.0] and index["settings"]["fps"] == 24
    arrays = [np.load(tmp_path / "one" / f"{i:04d}.npy") for i in range(3)]
    assert all(a.shape == (5, 32, 32, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1 for a in arrays)
    from wan_core.data.video import probe_video

    info = probe_video(tmp_path / "one" / "0002.mp4", backend="pyav")
    assert (info.num_frames, info.height, info.width, round(info.fps)) == (5, 32, 32, 24)
    assert "data:image/gif;base64," in (tmp_path / "one" / "preview.html").read_text()
    # the same files from 2 processes
    r = cli(*common, "--output", str(tmp_path / "two"), "--nproc", "2")
    assert r.returncode == 0, r.stderr
    for i in range(3):
        assert np.abs(np.load(tmp_path / "two" / f"{i:04d}.npy") - arrays[i]).max() < 1e-5
    untimed = [[{k: v for k, v in s.items() if k != "step_time_s"} for s in samples]  # timing is per run
               for samples in (json.loads((tmp_path / "two" / "samples.json").read_text())["samples"], index["samples"])]
    assert untimed[0] == untimed[1]
    # a single prompt sampled alone with seed 42 gives file 0002's frames: seeds are seed + index
    r = cli("--model", str(tiny_checkpoints["ti2v-5b"]), "--prompts", write_lines(tmp_path / "p1.txt", ["a white box"]),
            "--size", "5", "32", "32", "--steps", "3", "--seed", "42", "--save-array", "--negative-prompt", "",
            "--output", str(tmp_path / "alone"))
    assert r.returncode == 0, r.stderr
    assert np.abs(np.load(tmp_path / "alone" / "0000.npy") - arrays[2]).max() < 1e-5


def test_replacing_transformers_with_mm_checkpoints(tmp_path, tiny_checkpoints):
    from wan_core.weights.convert import hf_to_mm

    folder = tiny_checkpoints["t2v-a14b"]
    hf_to_mm(str(folder), str(tmp_path / "mm"), progress=False)
    prompts = write_lines(tmp_path / "p.txt", ["a cat"])
    base = dict(model=str(folder), prompts=prompts, size=(5, 16, 16), steps=3, save_array=True, negative_prompt="x")
    run_sample(SampleJob(output=str(tmp_path / "a"), **base), progress=False)
    run_sample(SampleJob(output=str(tmp_path / "b"), transformer=str(tmp_path / "mm" / "transformer"),
                         transformer_2=str(tmp_path / "mm" / "transformer_2"), **base), progress=False)
    assert np.array_equal(np.load(tmp_path / "a" / "0000.npy"), np.load(tmp_path / "b" / "0000.npy"))
    # swapping the experts changes the video: the replacement is really used
    run_sample(SampleJob(output=str(tmp_path / "c"), transformer=str(tmp_path / "mm" / "transformer_2"),
                         transformer_2=str(tmp_path / "mm" / "transformer"), **base), progress=False)
    assert np.abs(np.load(tmp_path / "a" / "0000.npy") - np.load(tmp_path / "c" / "0000.npy")).max() > 1e-3


def test_mindspeed_inference_config(tmp_path, tiny_checkpoints):
    """MindSpeed-MM's inference_model.json: paths against the working folder, and every sampling key honoured."""
    folder = tiny_checkpoints["i2v-a14b"]
    make_image(size=(32, 96)).save(tmp_path / "input.jpg")  # a wide image: the video keeps its aspect ratio
    write_lines(tmp_path / "prompts.txt", ["a cat on a sofa"])
    write_lines(tmp_path / "images.txt", ["input.jpg"])
    config = {"prompt": "prompts.txt", "image": "images.txt", "save_path": "samples/", "dtype": "fp32",
              "pipeline_config": {"input_size": [5, 32, 32], "cpu_offload": True}, "boundary_ratio": 0.95,
              "fps": 16, "frame_interval": 2, "num_inference_videos_per_sample": 2, "use_prompt_preprocess": False,
              "ae": {"from_pretrained": str(folder / "vae")}, "tokenizer": {"from_pretrained": str(folder / "tokenizer")},
              "low_noise_predictor": str(folder / "transformer_2"),
              "diffusion": {"model_id": "UniPCMultistepScheduler", "num_inference_steps": 3,
                            "guidance_scale": [4.0, 3.0], "flow_shift": 3.0, "solver_order": 1, "num_train_steps": 1000,
                            "prediction_type": "flow_prediction", "use_flow_sigmas": True}}
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "inference_model.json").write_text(json.dumps(config))
    r = cli("--config", "conf/inference_model.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "samples" / "samples.json").read_text())  # not under conf/
    settings = index["settings"]
    assert settings["size"] == [5, 32, 32] and settings["guidance"] == [4.0, 3.0] and settings["steps"] == 3
    assert settings["fps"] == 8 and settings["boundary_ratio"] == 0.95 and settings["videos_per_prompt"] == 2
    assert settings["scheduler_overrides"]["solver_order"] == 1
    assert settings["mean_step_time_s"] > 0 and all(s["step_time_s"] > 0 for s in index["samples"])
    # MindSpeed-MM's one noise stream (Megatron's --seed 1234), each video its next draw
    assert [(s["prompt"], s["seed"], s["noise_draw"], s["size"]) for s in index["samples"]] == [
        ("a cat on a sofa", 1234, 0, [5, 16, 48]), ("a cat on a sofa", 1234, 1, [5, 16, 48])]
    assert index["samples"][0]["image"] == "input.jpg" and (tmp_path / "samples" / "0001.mp4").is_file()
    for bad, message in [({"use_prompt_preprocess": True}, "use_prompt_preprocess"),
                         ({"diffusion": {"model_id": "DDIMScheduler"}}, "DDIMScheduler"),
                         ({"diffusion": {"solver_oder": 2}}, "solver_oder")]:
        (tmp_path / "bad.json").write_text(json.dumps({**config, **bad, "save_path": "bad/"}))
        r = cli("--config", "bad.json", cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and not (tmp_path / "bad").exists(), r.stderr


def test_boundary_ratio_setting_moves_the_expert_switch(tiny_checkpoints):
    sampler = WanSampler(tiny_checkpoints["t2v-a14b"])
    settings = SampleSettings(frames=5, height=16, width=16, steps=3, guidance=4.0, guidance_2=3.0, negative_prompt="")
    t = torch.tensor(700.0)
    assert sampler._expert_for(t, settings)[0] == 1  # the folder's 0.875: t 700 is the low-noise expert's
    assert sampler._expert_for(t, dataclass_replace(settings, boundary_ratio=0.5))[0] == 0


def test_bad_inputs(tmp_path, tiny_checkpoints):
    prompts = write_lines(tmp_path / "p.txt", ["one", "two"])
    i2v = str(tiny_checkpoints["i2v-a14b"])
    cases = [
        (["--model", i2v, "--prompts", prompts], "needs .*--output|--images"),
        (["--model", i2v, "--prompts", prompts, "--output", "o"], "--images"),
        (["--model", i2v, "--prompts", prompts, "--images", write_lines(tmp_path / "i1.txt", ["a.png"]), "--output", "o"],
         "has 1 non-blank lines, the prompts file has 2"),
        (["--model", i2v, "--prompts", prompts, "--images", write_lines(tmp_path / "i2.txt", ["a.png", "b.png"]),
          "--output", "o"], "line 1: .*a.png does not exist"),
        (["--model", str(tiny_checkpoints["t2v-a14b"]), "--prompts", prompts, "--size", "8", "16", "16", "--output", "o"],
         "frames must be 4n\\+1"),
        (["--model", str(tiny_checkpoints["ti2v-5b"]), "--prompts", prompts, "--size", "5", "48", "32", "--output", "o"],
         "multiple of 32"),
        (["--model", str(tiny_checkpoints["ti2v-5b"]), "--prompts", prompts, "--guidance", "4", "3", "--output", "o"],
         "one value for ti2v-5b"),
        (["--model", str(tmp_path), "--prompts", prompts, "--output", "o"], "no model_index.json"),
        (["--model", str(tiny_checkpoints["t2v-a14b"]), "--prompts", str(tmp_path / "none.txt"), "--output", "o"],
         "prompts file"),
        (["--model", str(tiny_checkpoints["t2v-a14b"]), "--prompts", prompts, "--transformer", str(tmp_path),
          "--size", "5", "16", "16", "--output", "o"], "not a Wan checkpoint folder"),
    ]
    import re

    for args, message in cases:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert re.search(message, " ".join(r.stderr.split())), (message, r.stderr)
        assert "Traceback" not in r.stderr
    with pytest.raises(UserError, match="i2v-a14b needs an image"):
        WanSampler(i2v).denoise([SampleRequest("x", 0)], SampleSettings(5, 16, 16, 2, 3.5, None, ""))


def test_batched_guidance_path_equals_diffusers(tiny_checkpoints, monkeypatch):
    """The accelerator path (cond + uncond as one batch of 2B) gives the same frames."""
    import wan_core.sample.sampler as sampler_module

    monkeypatch.setattr(sampler_module, "batch_guidance_passes", lambda device: True)
    variant, with_image, size, guidance = CASES["i2v-a14b"]
    settings = SampleSettings(frames=5, height=size, width=size, steps=6, guidance=guidance[0], guidance_2=guidance[1],
                              negative_prompt="blurry, static")
    ours = WanSampler(tiny_checkpoints[variant])([SampleRequest(p, s, make_image()) for p, s in PROMPTS], settings)
    theirs = diffusers_frames(tiny_checkpoints[variant], with_image, size, guidance, 6, "blurry, static")
    assert np.abs(ours - theirs).max() <= 1e-4


def test_large_frames_decode_in_tiles(tiny_checkpoints):
    """Above VAE_TILING_MIN_SIDE the VAE decodes in tiles (bounded memory), close to the whole-frame decode."""
    from wan_core.sample.sampler import VAE_TILING_MIN_SIDE

    sampler = WanSampler(tiny_checkpoints["t2v-a14b"])
    side = VAE_TILING_MIN_SIDE + 64
    latents = torch.randn(1, 16, 2, side // 8, side // 8, generator=torch.Generator().manual_seed(0))
    settings = SampleSettings(5, side, side, 1, 1.0, None, "")
    tiled = sampler.decode(latents, settings)
    assert sampler.vae.model.use_tiling and tiled.shape == (1, 5, side, side, 3)
    sampler.vae.enable_tiling(False)
    whole = (sampler.vae.decode(latents).float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()
    assert np.abs(tiled - whole).mean() < 0.02
    small = SampleSettings(5, 64, 64, 1, 1.0, None, "")
    sampler.decode(latents[..., :8, :8], small)
    assert not sampler.vae.model.use_tiling
