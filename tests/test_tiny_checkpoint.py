"""`make-tiny-checkpoint` output loads in diffusers and samples; load_dit reads it; the CLI behaves."""
import json

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel
from PIL import Image

import wan_core
from wan_core.errors import UserError
from wan_core.model.variants import VARIANTS
from helpers.wan22_cli import run_wan22


@pytest.mark.parametrize("variant", VARIANTS)
def test_diffusers_loads_and_samples_two_steps(tiny_checkpoints, variant):
    folder = tiny_checkpoints[variant]
    index = json.loads((folder / "model_index.json").read_text())
    if variant == "i2v-a14b":
        pipe = WanImageToVideoPipeline.from_pretrained(folder)
        assert pipe.transformer.config.in_channels == 36 and index["boundary_ratio"] == 0.9
        extra = {"image": Image.fromarray(np.full((16, 16, 3), 128, np.uint8))}
    else:
        pipe = WanPipeline.from_pretrained(folder)
        extra = {}
    if variant == "ti2v-5b":
        assert index["expand_timesteps"] is True and pipe.transformer_2 is None
        assert pipe.vae.config.z_dim == 48 and pipe.vae.config.patch_size == 2 and pipe.vae_scale_factor_spatial == 16
        size = 32
    else:
        assert pipe.transformer_2 is not None and pipe.vae.config.z_dim == 16
        assert index["boundary_ratio"] == (0.875 if variant == "t2v-a14b" else 0.9)
        size = 16
    frames = pipe(prompt="a red circle moving", negative_prompt="", height=size, width=size, num_frames=5,
                  num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0), **extra).frames
    assert frames.shape == (1, 5, size, size, 3) and np.isfinite(frames).all()
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_tokenizer_is_offline_and_tokenizes(tiny_checkpoints):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoints["t2v-a14b"] / "tokenizer")
    ids = tok("a red circle moving slowly", padding="max_length", max_length=512, truncation=True,
              add_special_tokens=True).input_ids
    assert len(ids) == 512 and tok.eos_token_id in ids and ids[-1] == tok.pad_token_id
    assert tok.unk_token_id not in ids[: ids.index(tok.eos_token_id)]


def test_seed_makes_it_deterministic(tmp_path, tiny_checkpoints):
    from safetensors.torch import load_file

    from wan_core.tiny import make_tiny_checkpoint

    again = make_tiny_checkpoint("ti2v-5b", tmp_path / "again", seed=1)
    other = make_tiny_checkpoint("ti2v-5b", tmp_path / "other", seed=2)
    name = "transformer/diffusion_pytorch_model.safetensors"
    a, b, c = (load_file(p / name) for p in (tiny_checkpoints["ti2v-5b"], again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["proj_out.weight"], c["proj_out.weight"])


@pytest.mark.parametrize("variant", ["ti2v-5b", "i2v-a14b"])
def test_load_dit_matches_diffusers_transformer(tiny_checkpoints, variant):
    folder = tiny_checkpoints[variant]
    ours = wan_core.load_dit(folder)  # a pipeline folder means its `transformer`
    ref = WanTransformer3DModel.from_pretrained(folder / "transformer")
    cfg = ours.config
    x = torch.randn(1, cfg.in_channels, 2, 4, 6)
    t, ctx = torch.tensor([321.0]), torch.randn(1, 512, cfg.text_dim)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t, ctx), ref(x, t, ctx, return_dict=False)[0], rtol=1e-5, atol=1e-6)
    bf16 = wan_core.load_dit(folder / "transformer", dtype=torch.bfloat16)
    assert bf16.blocks[0].self_attn.proj_q.weight.dtype == torch.bfloat16
    assert bf16.blocks[0].modulation.dtype == torch.float32 and bf16.time_embedding[0].weight.dtype == torch.float32


def test_load_dit_rejects_bad_folders(tmp_path, tiny_checkpoints):
    with pytest.raises(UserError, match="no such file or folder"):
        wan_core.load_dit(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a Wan checkpoint folder"):
        wan_core.load_dit(tmp_path / "empty")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoints["t2v-a14b"] / "transformer", broken)
    config = json.loads((broken / "config.json").read_text())
    config["num_layers"] = 3
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="missing"):
        wan_core.load_dit(broken)


def run_cli(*args):
    return run_wan22(*args)


def test_cli_make_tiny_checkpoint_and_errors(tmp_path):
    result = run_cli("make-tiny-checkpoint", "--variant", "t2v-a14b", "--out", str(tmp_path / "ckpt"), "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ckpt" / "transformer_2" / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    bad = run_cli("make-tiny-checkpoint", "--variant", "t2v-1b", "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("make-demo-dataset", "--out", str(tmp_path / "d"), "--videos", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("error: argument --videos: 0 is out of range: must be at "
                                                         "least 1") and "Traceback" not in bad.stderr
    assert not (tmp_path / "d").exists()
    assert run_cli("--help").returncode == 0
