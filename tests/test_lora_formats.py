"""LoRA files from every common trainer sample what diffusers' `load_lora_weights` samples from the same file: diffusers
/ peft (per-module ranks and alphas, rsLoRA), ComfyUI / original Wan (lora_down / lora_up, per-module .alpha),
musubi-tuner / Kohya (lora_unet_...), diffusion_model.*.lora_A/B, and a folder holding one. The files are written
here in each trainer's own key names (from the diffusers transformer's module names, with the original Wan and musubi
names diffusers' converters expect), not by our writer. An exported ComfyUI file loads back to the same frames, and a
bad file gives one paragraph naming it with nothing written."""
import numpy as np
import pytest
import torch
from diffusers import WanPipeline
from safetensors.torch import load_file, save_file

from helpers.wan22_cli import run_wan22

# diffusers module -> original Wan module (what ComfyUI and the original Wan code name it)
ORIGINAL = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
            "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
            "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0",
            "ffn.net.2": "ffn.2"}


def reference_adapters(folder, slot, seed):
    """{diffusers module: (A, B, alpha)} on every block projection, with per-module ranks and alphas."""
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel.from_pretrained(folder / slot)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if len(parts) < 3 or parts[0] != "blocks" or ".".join(parts[2:]) not in ORIGINAL:
            continue
        rank = 2 if "ffn" in name else 4
        alpha = 3.0 if "attn2.to_k" in name else 8.0
        out_f, in_f = module.weight.shape
        out[name] = (torch.randn(rank, in_f, generator=g), torch.randn(out_f, rank, generator=g), alpha)
    return out


def write_peft(path, adapters, rslora=False):
    """diffusers' save_lora_weights with a peft LoraConfig: r 4, lora_alpha 8, the FFN at rank 2 and cross-attention
    k at alpha 3 through rank_pattern / alpha_pattern, as a peft-trained adapter saved for diffusers carries them."""
    layers = {}
    for name, (a, b, _) in adapters.items():
        layers[f"{name}.lora_A.weight"], layers[f"{name}.lora_B.weight"] = a, b
    config = {"r": 4, "lora_alpha": 8.0, "target_modules": ["to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2"],
              "rank_pattern": {"ffn.net.0.proj": 2, "ffn.net.2": 2}, "alpha_pattern": {"attn2.to_k": 3.0},
              "use_rslora": rslora, "lora_dropout": 0.0, "bias": "none"}
    WanPipeline.save_lora_weights(str(path.parent), transformer_lora_layers=layers, weight_name=path.name,
                                  transformer_lora_adapter_metadata=config)


def write_comfyui(path, adapters, down="lora_down", up="lora_up", alpha=True):
    tensors = {}
    for name, (a, b, al) in adapters.items():
        block, rest = name.split(".", 2)[1], ".".join(name.split(".")[2:])
        key = f"diffusion_model.blocks.{block}.{ORIGINAL[rest]}"
        tensors[f"{key}.{down}.weight"], tensors[f"{key}.{up}.weight"] = a, b
        if alpha:
            tensors[f"{key}.alpha"] = torch.tensor(al)
    save_file(tensors, str(path))


def write_musubi(path, adapters):
    tensors = {}
    for name, (a, b, al) in adapters.items():
        block, rest = name.split(".", 2)[1], ".".join(name.split(".")[2:])
        key = f"lora_unet_blocks_{block}_{ORIGINAL[rest].replace('.', '_')}"
        tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = a, b
        tensors[f"{key}.alpha"] = torch.tensor(al)
    save_file(tensors, str(path))


LAYOUTS = {
    "peft": lambda p, ad: write_peft(p, ad),
    "peft-rslora": lambda p, ad: write_peft(p, ad, rslora=True),
    "comfyui": lambda p, ad: write_comfyui(p, ad),
    "musubi": lambda p, ad: write_musubi(p, ad),
    "diffusion_model-lora_A": lambda p, ad: write_comfyui(p, ad, "lora_A", "lora_B", alpha=False),
}


def diffusers_frames(folder, lora, lora_2):
    pipe = WanPipeline.from_pretrained(folder)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
        pipe.load_lora_weights(str(lora_2), load_into_transformer_2=True, adapter_name="low")
    return pipe(prompt="a red ball", negative_prompt="", height=16, width=16, num_frames=5, num_inference_steps=3,
                guidance_scale=4.0, guidance_scale_2=3.0, output_type="np",
                generator=torch.Generator().manual_seed(3)).frames[0]


def our_frames(tmp_path, folder, name, *lora_args):
    (tmp_path / "p.txt").write_text("a red ball\n")
    r = run_wan22("sample", "--model", folder, "--prompts", tmp_path / "p.txt", "--size", "5", "16", "16", "--steps",
                  "3", "--guidance", "4", "3", "--negative-prompt", "", "--seed", "3", "--save-array", "--output",
                  tmp_path / name, *lora_args)
    assert r.returncode == 0, r.stderr
    return np.load(tmp_path / name / "0000.npy")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_samples_what_diffusers_samples(tmp_path, tiny_checkpoints, layout):
    folder = tiny_checkpoints["t2v-a14b"]
    files = {}
    for slot, seed in (("transformer", 1), ("transformer_2", 2)):
        (tmp_path / slot).mkdir()
        files[slot] = tmp_path / slot / f"{layout}.safetensors"
        LAYOUTS[layout](files[slot], reference_adapters(folder, slot, seed))
    theirs = diffusers_frames(folder, files["transformer"], files["transformer_2"])
    # the folder form for the first expert (its one .safetensors file), the file for the second
    ours = our_frames(tmp_path, folder, "ours", "--lora", files["transformer"].parent, "--lora-2",
                      files["transformer_2"])
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.abs(theirs - diffusers_frames(folder, None, None)).max() > 1e-3  # the adapters matter
    if layout == "peft-rslora":  # merging applies the same per-module scales (alpha / sqrt(r))
        r = run_wan22("merge-lora", "--base", folder, "--lora", files["transformer"], "--lora-2",
                      files["transformer_2"], "--output", tmp_path / "merged")
        assert r.returncode == 0, r.stderr
        assert np.abs(our_frames(tmp_path, tmp_path / "merged", "s-merged") - theirs).max() <= 1e-4


def lora_run(tmp_path, folder):
    """A LoRA training checkpoint with trained-looking adapters (rank 2, alpha 6) on the high-noise expert."""
    import wan_core
    from wan_core.train.checkpoint import CheckpointManager
    from wan_core.train.config import LoraSettings
    from wan_core.train.lora import add_lora

    settings = LoraSettings(rank=2, alpha=6.0)
    model = add_lora(wan_core.load_dit(folder / "transformer"), settings)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.normal_(0, 0.3)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    CheckpointManager(tmp_path / "save", 1, trainable_only=True).save(
        1, model, opt, {"step": 1, "config": {"train": {"lora": settings.model_dump(mode="json")}}})
    return tmp_path / "save"


def test_exported_comfyui_file_loads_back_to_the_same_frames(tmp_path, tiny_checkpoints):
    from safetensors import safe_open

    folder = tiny_checkpoints["t2v-a14b"]
    save = lora_run(tmp_path, folder)
    for fmt in ("diffusers", "comfyui"):
        r = run_wan22("export-lora", "--source", save, "--format", fmt, "--output", tmp_path / fmt)
        assert r.returncode == 0, r.stderr
    comfy = tmp_path / "comfyui" / "wan22_lora_comfyui.safetensors"
    with safe_open(str(comfy), framework="pt") as f:
        keys = set(f.keys())
        alpha = f.get_tensor("diffusion_model.blocks.0.self_attn.q.alpha")
    assert "diffusion_model.blocks.1.ffn.2.lora_up.weight" in keys and float(alpha) == 6.0
    # one expert's adapters (the high-noise one); the low-noise expert samples as it is on both sides
    (tmp_path / "p.txt").write_text("a red ball\n")
    reference = WanPipeline.from_pretrained(folder)
    reference.load_lora_weights(str(tmp_path / "diffusers" / "pytorch_lora_weights.safetensors"))
    kw = dict(prompt="a red ball", negative_prompt="", height=16, width=16, num_frames=5, num_inference_steps=3,
              guidance_scale=4.0, guidance_scale_2=3.0, output_type="np")
    theirs = reference(**kw, generator=torch.Generator().manual_seed(3)).frames[0]
    comfy_in_diffusers = WanPipeline.from_pretrained(folder)
    comfy_in_diffusers.load_lora_weights(str(comfy))
    assert np.abs(comfy_in_diffusers(**kw, generator=torch.Generator().manual_seed(3)).frames[0] - theirs).max() <= 1e-4
    for name, lora in (("d", tmp_path / "diffusers"), ("c", comfy)):
        assert np.abs(our_frames(tmp_path, folder, name, "--lora", lora) - theirs).max() <= 1e-4


def test_training_starts_from_a_lora_file(tmp_path, tiny_checkpoints, demo_dataset):
    """train.lora.init: the adapted model at step 0 is the file's (its scale carried into B), whatever its layout."""
    import wan_core
    from wan_core.train.config import LoraSettings
    from wan_core.train.lora import add_lora, apply_lora, init_from_file, read_lora_file

    folder = tiny_checkpoints["t2v-a14b"]
    adapters = {k: v for k, v in reference_adapters(folder, "transformer", 4).items() if "ffn" not in k}  # rank 4
    write_comfyui(tmp_path / "c.safetensors", adapters)
    lora = read_lora_file(tmp_path / "c.safetensors")
    settings = LoraSettings(rank=4, alpha=16.0)
    trained = add_lora(wan_core.load_dit(folder / "transformer"), settings)
    init_from_file(trained, lora, settings)
    applied = apply_lora(wan_core.load_dit(folder / "transformer"), lora)
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    t, text = torch.tensor([500.0]), torch.randn(1, 8, trained.config.text_dim)
    with torch.no_grad():
        torch.testing.assert_close(trained(x, t, text), applied(x, t, text), rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="train.lora.rank is 2"):
        init_from_file(add_lora(wan_core.load_dit(folder / "transformer"), LoraSettings(rank=2)), lora,
                       LoraSettings(rank=2))
    # through the config: a path relative to the config file, one training step from the file's adapters
    import yaml

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.yaml").write_text(yaml.safe_dump({
        "model": {"from_pretrained": str(folder), "variant": "t2v-a14b", "expert": "high"}, "save_path": "save",
        "data": {"data_txt": str(demo_dataset / "data.txt"), "num_frames": 9, "height": 32, "width": 32},
        "train": {"iters": 1, "lora": {"rank": 4, "alpha": 16.0, "init": "../c.safetensors",
                                       "targets": ["proj_q", "proj_k", "proj_v", "proj_out"]}}}))
    r = run_wan22("train", "--config", tmp_path / "run" / "train.yaml")
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load((tmp_path / "run" / "save" / "config.resolved.json").read_text())
    assert resolved["train"]["lora"]["init"] == str(tmp_path / "c.safetensors")


def bad_files(tmp_path, folder):
    adapters = reference_adapters(folder, "transformer", 1)
    out = {}
    wrong = dict(adapters)
    name = "blocks.0.attn1.to_q"
    a, b, al = wrong[name]
    wrong[name] = (torch.randn(a.shape[0], a.shape[1] * 2), b, al)  # made for a wider model
    write_comfyui(tmp_path / "size.safetensors", wrong)
    out["size"] = (tmp_path / "size.safetensors", "made for another model size?")
    extra = dict(adapters)
    extra["blocks.7.attn1.to_q"] = tuple(t.clone() if torch.is_tensor(t) else t for t in adapters[name])  # no block 7 here
    write_peft(tmp_path / "blocks.safetensors", extra)
    out["blocks"] = (tmp_path / "blocks.safetensors", "is not in this model")
    (tmp_path / "text.safetensors").write_text("not tensors")
    out["text"] = (tmp_path / "text.safetensors", "not a safetensors file")
    (tmp_path / "two").mkdir()
    for n in ("x", "y"):
        write_comfyui(tmp_path / "two" / f"{n}.safetensors", adapters)
    out["two"] = (tmp_path / "two", "exactly one .safetensors file")
    write_comfyui(tmp_path / "diff.safetensors", adapters)
    tensors = load_file(tmp_path / "diff.safetensors")
    tensors["diffusion_model.blocks.0.norm3.diff"] = torch.ones(8)
    save_file(tensors, str(tmp_path / "diff.safetensors"))
    out["diff"] = (tmp_path / "diff.safetensors", "full-weight differences")
    musubi = tmp_path / "musubi.safetensors"
    write_musubi(musubi, {k: v for k, v in adapters.items() if k != "blocks.1.ffn.net.2"})
    out["musubi"] = (musubi, "not a Wan LoRA diffusers can read")
    dora = dict(adapters)
    write_peft(tmp_path / "dora.safetensors", dora)
    tensors = load_file(tmp_path / "dora.safetensors")
    tensors["transformer.blocks.0.attn1.to_q.lora_magnitude_vector"] = torch.ones(32)
    save_file(tensors, str(tmp_path / "dora.safetensors"))
    out["dora"] = (tmp_path / "dora.safetensors", "DoRA")
    return out


def test_bad_lora_files_are_one_paragraph_naming_them_and_nothing_is_written(tmp_path, tiny_checkpoints):
    folder = tiny_checkpoints["t2v-a14b"]
    (tmp_path / "p.txt").write_text("a red ball\n")
    for case, (path, words) in bad_files(tmp_path, folder).items():
        for command in (["sample", "--model", folder, "--prompts", tmp_path / "p.txt", "--size", "5", "16", "16",
                         "--steps", "1", "--lora", path, "--output", tmp_path / f"out-{case}"],
                        ["merge-lora", "--base", folder, "--lora", path, "--output", tmp_path / f"merged-{case}"]):
            r = run_wan22(*command)
            text = " ".join(r.stderr.split())
            assert r.returncode == 2 and words in text and str(path) in text, (case, r.stderr)
            assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1, (case, r.stderr)
        assert not (tmp_path / f"out-{case}").exists() and not (tmp_path / f"merged-{case}").exists()
