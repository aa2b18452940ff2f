"""The memory plan: its parts against independent counts (autograd's saved tensors, the built modules' parameters
and the optimizer's state), its refusals with the cheapest fitting change, and `wan22 plan` / the launch checks."""

import pytest
import torch

from wan_core.errors import UserError
from wan_core.memory import (GB, Geometry, inference_activation_bytes, plan_sampling, train_activation_bytes,
                             train_parts)
from wan_core.model import WanConfig, WanDiT
from wan_core.model.rope import rope_tables
from helpers.wan22_cli import run_wan22


def saved_bytes(dim, ffn, tokens, dtype):
    """What autograd keeps for one WanBlock's backward: unique storages seen by saved_tensors_hooks
    (parameters and the text context excluded)."""
    cfg = WanConfig(dim=dim, ffn_dim=ffn, num_layers=1, num_heads=2, in_channels=16, out_channels=16, text_dim=64)
    block = WanDiT(cfg).to_compute_dtype(dtype).blocks[0]
    x = torch.randn(1, tokens, dim, dtype=dtype, requires_grad=True)
    context = torch.randn(1, 512, dim, dtype=dtype)
    rope = rope_tables((1, 16, tokens // 16), cfg.rope_axes, cfg.rope_max_seq_len, device="cpu")
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x, context, torch.randn(1, 6, dim), rope)
    skip = {p.untyped_storage().data_ptr() for p in block.parameters()} | {context.untyped_storage().data_ptr()}
    return sum(n for ptr, n in seen.items() if ptr not in skip)


@pytest.mark.parametrize("dim, ffn, tokens, dtype", [(96, 384, 768, torch.float32), (160, 320, 512, torch.bfloat16),
                                                     (48, 512, 1024, torch.bfloat16), (256, 1024, 256, torch.float32),
                                                     (128, 512, 4096, torch.bfloat16)])
def test_training_activations_match_what_autograd_keeps(dim, ffn, tokens, dtype):
    d = 4 if dtype == torch.float32 else 2
    counted = saved_bytes(dim, ffn, tokens, dtype)
    predicted = train_activation_bytes(dim, ffn, d, tokens)
    assert abs(predicted - counted) <= 0.05 * counted, (predicted, counted)


def test_weights_and_optimizer_state_are_the_modules_own(tiny_checkpoints):
    import wan_core

    g = Geometry.of_folder(tiny_checkpoints["ti2v-5b"])
    model = wan_core.load_dit(tiny_checkpoints["ti2v-5b"] / "transformer")
    params = sum(p.numel() for p in model.parameters())
    assert g.dit_params == params
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 48, 1, 4, 4), torch.tensor([500.0]), torch.randn(1, 8, 32)).sum().backward()
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if t.dim())
    parts = train_parts(g, tokens=16, micro_batch=1, dtype="fp32", world=1, cp=1, checkpointing=False, lora_rank=None,
                        lora_targets=0, features=True)
    assert parts["weights"] == params * 4 and parts["gradients"] == params * 4 and parts["optimizer"] == state
    from transformers import UMT5EncoderModel

    text = UMT5EncoderModel.from_pretrained(tiny_checkpoints["ti2v-5b"] / "text_encoder")
    assert g.text_params == sum(p.numel() for p in text.parameters())


def test_sharding_cp_and_checkpointing_divide_what_they_should():
    g = Geometry.of_variant("t2v-a14b")
    base = dict(tokens=75600, micro_batch=1, dtype="bf16", world=8, cp=1, checkpointing=False, lora_rank=None,
                lora_targets=0, features=True)
    one = train_parts(g, **base)
    assert train_parts(g, **{**base, "world": 16})["optimizer"] == pytest.approx(one["optimizer"] / 2)
    assert train_parts(g, **{**base, "cp": 4})["activations"] == pytest.approx(one["activations"] / 4, rel=1e-2)
    ac = train_parts(g, **{**base, "checkpointing": True})["activations"]
    assert ac < one["activations"] / 5


def test_a14b_sampling_needs_offload_on_80gb_and_the_plan_says_so():
    g = Geometry.of_variant("t2v-a14b")
    size = dict(frames=81, height=720, width=1280, batch=1, dtype="bf16")
    plan = plan_sampling(g, **size, device_bytes=80 * GB)
    assert not plan.fits and plan.suggestion.startswith("--offload model")
    assert plan.parts["dit"] == pytest.approx(2 * g.dit_params * 2)  # both bf16 experts resident
    with pytest.raises(UserError, match="Cheapest change that fits: --offload model"):
        plan.check()
    assert plan_sampling(g, **size, offload="model", device_bytes=80 * GB).fits
    # on a 64 GB Ascend 910B the 5B model fits with everything resident
    assert plan_sampling(Geometry.of_variant("ti2v-5b"), frames=121, height=704, width=1280, batch=1, dtype="bf16",
                         device_bytes=64 * GB).fits
    per_token = inference_activation_bytes(g.dim, g.ffn, 2)
    cp2 = plan_sampling(g, **size, offload="model", cp=2, group=2, shard=True, nproc=2)
    assert cp2.parts["activations"] == pytest.approx(2 * 37800 * per_token)  # CFG batched, half the tokens


def cli(*argv):
    return run_wan22(*argv)


def test_plan_and_sample_refuse_a_run_that_does_not_fit(tiny_checkpoints, tmp_path):
    model = str(tiny_checkpoints["t2v-a14b"])
    r = cli("plan", "sample", "--model", model, "--size", "81", "720", "1280", "--offload", "none",
            "--device-memory-gb", "0.05")
    assert r.returncode == 2 and "does not fit the device" in r.stderr and "Traceback" not in r.stderr
    ok = cli("plan", "sample", "--model", model, "--size", "5", "32", "32")
    assert ok.returncode == 0 and "peak" in ok.stdout and "offload: none" in ok.stdout
    (tmp_path / "p.txt").write_text("x\n")
    r = cli("sample", "--model", model, "--prompts", str(tmp_path / "p.txt"), "--output", str(tmp_path / "out"),
            "--size", "81", "720", "1280", "--device-memory-gb", "0.001")
    assert r.returncode == 2 and "does not fit the device" in r.stderr and not (tmp_path / "out").exists()


def test_offload_auto_picks_the_least_that_fits(tiny_checkpoints, tmp_path):
    from wan_core.sample.model_folder import read_model_folder
    from wan_core.sample.run import SampleJob, memory_plan

    folder = read_model_folder(tiny_checkpoints["t2v-a14b"])
    job = SampleJob(model=str(folder.path), prompts="p", output="o", batch_size=64)
    size = (81, 256, 256)
    plans = {mode: memory_plan(SampleJob(**{**job.__dict__, "offload": mode}), folder, size, 4.0,
                               torch.device("cpu"))[0].peak for mode in ("none", "model")}
    between = (plans["none"] + plans["model"]) / 2 / GB / 0.92
    _, chosen = memory_plan(SampleJob(**{**job.__dict__, "device_memory_gb": between}), folder, size, 4.0,
                            torch.device("cpu"))
    assert plans["model"] < plans["none"] and chosen == "model"
    _, chosen = memory_plan(job, folder, size, 4.0, torch.device("cpu"))
    assert chosen == "none"


def test_train_refuses_before_launch_with_the_cheapest_change(tiny_checkpoints, tmp_path, demo_dataset):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"model: {{variant: ti2v-5b, from_pretrained: {tiny_checkpoints['ti2v-5b']}}}\n"
                   f"data: {{data_txt: {demo_dataset / 'data.txt'}, num_frames: 17, height: 64, width: 64}}\n"
                   f"save_path: {tmp_path / 'save'}\n")
    # 64 clips encoded at once by the VAE dominate: the feature cache is what fits
    r = cli("plan", "train", "--config", str(cfg), "--set", "train.micro_batch_size=64", "--device-memory-gb", "0.1")
    text = " ".join(r.stderr.split())
    assert r.returncode == 2 and "vae encoding" in text and "Cheapest change that fits: cache the features" in text, text
    # from features, the activations dominate: checkpointing is what fits
    r = cli("plan", "train", "--config", str(cfg), "--set", "train.micro_batch_size=64", "--set", "data.data_txt=null",
            "--set", f"data.features={tmp_path / 'features'}", "--device-memory-gb", "0.025")
    text = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Cheapest change that fits: set train.activation_checkpointing=true" in text, text
    r = cli("train", "--config", str(cfg), "--set", "train.micro_batch_size=64", "--set",
            "parallel.device_memory_gb=0.025")
    assert r.returncode == 2 and "does not fit the device" in r.stderr and not (tmp_path / "save").exists()


def test_online_encoding_counts_the_vae_on_whole_clips():
    g = Geometry.of_variant("ti2v-5b")
    base = dict(tokens=g.tokens(121, 704, 1280), micro_batch=1, dtype="bf16", world=8, cp=1, checkpointing=True,
                lora_rank=None, lora_targets=0, clip=(121, 704, 1280))
    online, cached = train_parts(g, **base, features=False), train_parts(g, **base, features=True)
    assert "vae encoding" not in cached and online["vae encoding"] > 704 * 1280 * 160 * 200
