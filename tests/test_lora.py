"""LoRA: training holds and saves only the adapters and resumes exactly; the exported file loads in diffusers and
samples what the merged model samples; merging equals W + scale * (alpha / r) * B @ A."""
import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import wan_core
from wan_core.train.config import DEFAULT_TARGETS, LoraSettings
from wan_core.train.lora import write_diffusers_lora
from wan_core.weights.names import convert_key
from helpers.wan22_cli import run_wan22

RANK, ALPHA = 4, 8.0


def wan22(*args, cwd=None):
    r = run_wan22(*args, cwd=cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def random_adapters(transformer_dir, seed):
    """Adapters with random A and B (a trained LoRA's B is not zero) on every default target."""
    model = wan_core.load_dit(transformer_dir)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in model.named_modules():
        if any(name.endswith("." + t) for t in DEFAULT_TARGETS):
            out_f, in_f = module.weight.shape
            state[f"{name}.lora_A.weight"] = torch.randn(RANK, in_f, generator=gen) * 0.3
            state[f"{name}.lora_B.weight"] = torch.randn(out_f, RANK, generator=gen) * 0.3
    return state


@pytest.fixture(scope="module")
def a14b_loras(tmp_path_factory, tiny_checkpoints):
    root = tmp_path_factory.mktemp("lora")
    base = tiny_checkpoints["t2v-a14b"]
    files = {}
    for slot, seed in (("transformer", 1), ("transformer_2", 2)):
        (root / slot).mkdir()
        files[slot] = root / slot / "pytorch_lora_weights.safetensors"
        write_diffusers_lora(files[slot], random_adapters(base / slot, seed), LoraSettings(rank=RANK, alpha=ALPHA))
    return root, base, files


def test_merge_equals_the_formula_in_every_layout(tmp_path, a14b_loras):
    root, base, files = a14b_loras
    wan22("merge-lora", "--base", str(base), "--lora", str(files["transformer"]), "--lora-2",
          str(files["transformer_2"]), "--scale", "0.5", "--layout", "mm", "--output", str(tmp_path / "mm"))
    for slot in ("transformer", "transformer_2"):
        lora = load_file(files[slot])
        original = load_file(base / slot / "diffusion_pytorch_model.safetensors")  # diffusers names
        merged = {}
        for f in (tmp_path / "mm" / slot / "release").glob("*.safetensors"):
            merged.update(load_file(f))
        changed = 0
        for key, w in original.items():
            module = key[: -len(".weight")]
            a, b = lora.get(f"transformer.{module}.lora_A.weight"), lora.get(f"transformer.{module}.lora_B.weight")
            want = w.double()
            if a is not None:
                want = want + 0.5 * (ALPHA / RANK) * (b.double() @ a.double())
                changed += 1
            got = merged[convert_key(key, "diffusers", "mm")].double()
            assert (got - want).abs().max() < 1e-5, key
        assert changed == 2 * 10  # 2 blocks x (q, k, v, o of self and of cross attention, 2 FFN projections)
    # the official and diffusers layouts hold the same tensors under their names
    for layout, folder in (("official", "high_noise_model"), ("diffusers", "transformer")):
        wan22("merge-lora", "--base", str(base), "--lora", str(files["transformer"]), "--lora-2",
              str(files["transformer_2"]), "--scale", "0.5", "--layout", layout, "--output", str(tmp_path / layout))
        other = load_file(tmp_path / layout / folder / "diffusion_pytorch_model.safetensors")
        mm = {}
        for f in (tmp_path / "mm" / "transformer" / "release").glob("*.safetensors"):
            mm.update(load_file(f))
        assert {convert_key(k, layout, "mm") for k in other} == set(mm)
        assert all(torch.equal(v, mm[convert_key(k, layout, "mm")]) for k, v in other.items())


def test_lora_file_loads_in_diffusers_and_samples_the_merged_frames(tmp_path, a14b_loras):
    from diffusers import WanPipeline

    root, base, files = a14b_loras
    wan22("merge-lora", "--base", str(base), "--lora", str(files["transformer"]), "--lora-2",
          str(files["transformer_2"]), "--output", str(tmp_path / "merged"))

    def frames(pipe):
        return pipe(prompt="a red ball", negative_prompt="", height=16, width=16, num_frames=5, num_inference_steps=4,
                    guidance_scale=4.0, guidance_scale_2=3.0, output_type="np",
                    generator=torch.Generator().manual_seed(3)).frames[0]

    with_lora = WanPipeline.from_pretrained(base)
    with_lora.load_lora_weights(files["transformer"].parent)
    with_lora.load_lora_weights(files["transformer_2"].parent, load_into_transformer_2=True, adapter_name="low")
    assert with_lora.transformer.peft_config["default_0"].lora_alpha == ALPHA  # rank/alpha read from the file
    theirs = frames(with_lora)
    merged = frames(WanPipeline.from_pretrained(tmp_path / "merged"))
    base_frames = frames(WanPipeline.from_pretrained(base))
    assert np.abs(theirs - merged).max() <= 1e-4
    assert np.abs(theirs - base_frames).max() > 1e-3  # the adapters change the video
    # wan22 sample applies the same files without merging, and samples what the merged pipeline samples
    (tmp_path / "p.txt").write_text("a red ball\n")
    common = ["--prompts", str(tmp_path / "p.txt"), "--size", "5", "16", "16", "--steps", "4", "--save-array"]
    wan22("sample", "--model", str(base), "--lora", str(files["transformer"]), "--lora-2", str(files["transformer_2"]),
          "--output", str(tmp_path / "s-lora"), *common)
    wan22("sample", "--model", str(tmp_path / "merged"), "--output", str(tmp_path / "s-merged"), *common)
    a, b = np.load(tmp_path / "s-lora" / "0000.npy"), np.load(tmp_path / "s-merged" / "0000.npy")
    assert np.abs(a - b).max() <= 1e-4


def test_lora_training_saves_only_adapters_resumes_exactly_and_exports(tmp_path, tiny_checkpoints):
    from torch.distributed.checkpoint import FileSystemReader

    from wan_core.data.demo import make_demo_dataset

    demo = make_demo_dataset(tmp_path / "demo", videos=2)
    base = tiny_checkpoints["ti2v-5b"]
    configs = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        configs[name] = tmp_path / name / "train.yaml"
        configs[name].write_text(yaml.safe_dump({
            "model": {"from_pretrained": str(base), "variant": "ti2v-5b", "task": "ti2v"}, "save_path": "save",
            "data": {"data_txt": str(demo / "data.txt"), "num_frames": 9, "height": 32, "width": 32, "fps": 16},
            "train": {"iters": 4, "save_interval": 2, "lr": 3e-2, "seed": 3,
                      "lora": {"rank": RANK, "alpha": ALPHA, "targets": ["proj_q", "proj_v", "ffn.0"]}}}))
    wan22("train", "--config", str(configs["a"]))
    # run b with activation checkpointing: the recomputed forward gives the same numbers with adapters too
    wan22("train", "--config", str(configs["b"]), "--set", "train.iters=2", "--set", "train.activation_checkpointing=true")
    wan22("train", "--config", str(configs["b"]), "--set", "train.activation_checkpointing=true")
    losses = [[json.loads(x)["loss"] for x in (tmp_path / n / "save" / "metrics.jsonl").read_text().splitlines()]
              for n in ("a", "b")]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    metadata = FileSystemReader(str(tmp_path / "a" / "save" / "iter_0000004")).read_metadata()
    model_keys = [k for k in metadata.state_dict_metadata if k.startswith("model.")]
    assert model_keys and all(".lora_" in k for k in model_keys)  # the frozen base is never saved
    assert len(model_keys) == 2 * 5 * 2  # 2 blocks x (q, v of self and cross attention, ffn.0) x (A, B)
    wan22("export-lora", "--source", str(tmp_path / "a" / "save"), "--output", str(tmp_path / "exported"))
    exported = load_file(tmp_path / "exported" / "pytorch_lora_weights.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "exported" / "pytorch_lora_weights.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert meta["transformer.r"] == RANK and meta["transformer.lora_alpha"] == ALPHA
    assert "transformer.blocks.0.attn1.to_q.lora_B.weight" in exported and "transformer.blocks.1.ffn.net.0.proj.lora_A.weight" in exported
    trained_b = exported["transformer.blocks.0.attn1.to_q.lora_B.weight"]
    assert trained_b.abs().max() > 0  # B starts at zero; training moved it
