"""`wan22 sample --config inference_model.json` makes MindSpeed-MM's videos. Its inference_sora.py differs from
diffusers' pipelines only in what these tests pin, each written out from its source (Ascend/MindSpeed-MM @57069cd):
- initial noise: one CPU generator seeded once from Megatron's --seed (1234 when the script passes none,
  inference_sora.py:41 -> wan_pipeline.py:81), every video taking the next draw (pipeline_base.prepare_latents:
  diffusers' randn_tensor with that generator);
- the conditioning image: load_image (EXIF orientation applied), torchvision's to_tensor ([0, 1]), v2.Resize to the
  video's size (bilinear with antialias on the tensor), Normalize(0.5, 0.5) (wan_pipeline.prepare_image_latents);
  the size: latent_h = round(sqrt(area * h / w) // vae_scale // patch * patch);
- prompts: every line of the file stripped, blank ones kept as empty prompts (sora_utils.load_prompts);
- the VAE in ae.dtype.
The reference frames are diffusers' pipelines given exactly those inputs (latents=, image= as a tensor)."""
import json
import math

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from helpers.wan22_cli import run_wan22
from wan_core.sample.model_folder import WAN_NEGATIVE_PROMPT

PROMPT_LINES = ["a red circle moving from left to right", "", "  a blue square bouncing  "]


def exif_rotated_image(path):
    """A 40x56 (h x w) image stored sideways with EXIF orientation 6: upright it is 56 high and 40 wide."""
    rng = np.random.default_rng(0)
    upright = (rng.random((56, 40, 3)) * 255).astype(np.uint8)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    stored.save(path, exif=exif, quality=100)
    return path


def mm_image_tensor(path, height, width):
    """diffusers' load_image (exif_transpose, RGB) -> to_tensor -> v2.Resize([h, w]) (bilinear, antialias)."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    pixels = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous().float().div(255)
    return torch.nn.functional.interpolate(pixels[None], size=[height, width], mode="bilinear", align_corners=False,
                                           antialias=True)


def mm_video_size(image_hw, height, width, vae_scale, patch=2):
    h, w = image_hw
    area, aspect = height * width, h / w
    latent_h = round(math.sqrt(area * aspect) // vae_scale // patch * patch)
    latent_w = round(math.sqrt(area / aspect) // vae_scale // patch * patch)
    return latent_h * vae_scale, latent_w * vae_scale


@pytest.mark.parametrize("variant,guidance", [("ti2v-5b", [5.0]), ("i2v-a14b", [3.5, 2.0]), ("t2v-a14b", [4.0, 3.0])])
def test_inference_config_makes_mindspeed_mms_frames(tmp_path, tiny_checkpoints, variant, guidance):
    folder = tiny_checkpoints[variant]
    with_image = variant != "t2v-a14b"
    size = 64 if variant == "ti2v-5b" else 32  # 5B: 16-pixel latents x patch 2; a 32 x 32 area would give width 0
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPT_LINES) + "\n")
    config = {"prompt": "prompts.txt", "save_path": "out/", "dtype": "fp32", "use_prompt_preprocess": False,
              "pipeline_config": {"input_size": [5, size, size]},
              "ae": {"from_pretrained": str(folder / "vae"), "dtype": "float32"},
              "tokenizer": {"from_pretrained": str(folder / "tokenizer")},
              "diffusion": {"model_id": "UniPCMultistepScheduler", "num_inference_steps": 3,
                            "guidance_scale": guidance if len(guidance) > 1 else guidance[0]}}
    if with_image:
        exif_rotated_image(tmp_path / "in.jpg")
        (tmp_path / "images.txt").write_text("in.jpg\n" * 3)
        config["image"] = "images.txt"
    if variant != "ti2v-5b":
        config["low_noise_predictor"] = str(folder / "transformer_2")
    (tmp_path / "inference_model.json").write_text(json.dumps(config))
    r = run_wan22("sample", "--config", "inference_model.json", "--save-array", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert [s["prompt"] for s in index["samples"]] == [p.strip() for p in PROMPT_LINES]  # the blank line kept
    assert [(s["seed"], s["noise_draw"]) for s in index["samples"]] == [(1234, 0), (1234, 1), (1234, 2)]

    pipe = (WanImageToVideoPipeline if with_image else WanPipeline).from_pretrained(folder)
    vae_scale = pipe.vae_scale_factor_spatial
    height, width = mm_video_size((56, 40), size, size, vae_scale) if with_image else (size, size)
    assert index["samples"][0]["size"] == [5, height, width]
    generator = torch.Generator().manual_seed(1234)  # the pipeline's one generator
    z = pipe.vae.config.z_dim
    shape = (1, z, 2, height // vae_scale, width // vae_scale)
    for i, prompt in enumerate(PROMPT_LINES):
        latents = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        kw = dict(prompt=prompt.strip(), negative_prompt=WAN_NEGATIVE_PROMPT, height=height, width=width,
                  num_frames=5, num_inference_steps=3, guidance_scale=guidance[0], output_type="np", latents=latents)
        if len(guidance) > 1:
            kw["guidance_scale_2"] = guidance[1]
        if with_image:
            kw["image"] = mm_image_tensor(tmp_path / "in.jpg", height, width)
        theirs = pipe(**kw).frames[0]
        ours = np.load(tmp_path / "out" / f"{i:04d}.npy")
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-4, (i, np.abs(ours - theirs).max())
    # the comparison can fail: the previous behaviour (seed + i per video, Lanczos resize) gives other frames
    (tmp_path / "filled.txt").write_text("\n".join(p or "x" for p in PROMPT_LINES) + "\n")
    r = run_wan22("sample", "--model", folder, "--prompts", "filled.txt", "--output", "ours", "--save-array",
                  "--steps", "3", "--size", "5", str(size), str(size), "--guidance", *map(str, guidance), "--seed", "1234",
                  *(["--images", "images.txt"] if with_image else []), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.abs(np.load(tmp_path / "ours" / "0002.npy") - np.load(tmp_path / "out" / "0002.npy")).max() > 1e-3


def test_seed_flag_and_vae_dtype(tmp_path, tiny_checkpoints):
    """--seed seeds the one stream (video i still takes draw i); ae.dtype is the VAE's dtype."""
    from wan_core.sample.run import from_mindspeed_config, stream_noise

    folder = tiny_checkpoints["t2v-a14b"]
    config = {"prompt": "p.txt", "save_path": "o/", "ae": {"from_pretrained": str(folder / "vae"), "dtype": "bf16"}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    job = from_mindspeed_config(str(tmp_path / "c.json"))
    assert (job.seed, job.conventions, job.vae_dtype) == (1234, "mindspeed", "bf16")
    shapes = [(1, 16, 2, 4, 4), (1, 16, 2, 4, 6), (1, 16, 2, 4, 4)]  # sizes may differ per video (image aspect)
    g = torch.Generator().manual_seed(7)
    reference = [randn_tensor(s, generator=g, device=torch.device("cpu"), dtype=torch.float32) for s in shapes]
    draws = stream_noise(7, shapes, {1, 2})  # a worker's share: the draws one process would have made
    assert set(draws) == {1, 2} and all(torch.equal(draws[i], reference[i]) for i in (1, 2))
    from wan_core.sample.sampler import WanSampler

    assert WanSampler(folder, vae_dtype=torch.bfloat16).vae.model.dtype == torch.bfloat16
