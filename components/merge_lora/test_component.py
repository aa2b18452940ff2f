import torch
from safetensors.torch import load_file

import wan_core
from components.merge_lora import merge_lora
from wan_core.train.config import LoraSettings
from wan_core.train.lora import write_diffusers_lora


def test_merges_into_a_pipeline_folder(tmp_path, tiny_checkpoints):
    base = tiny_checkpoints["ti2v-5b"]
    model = wan_core.load_dit(base / "transformer")
    w = model.blocks[0].self_attn.proj_q.weight.detach()
    a, b = torch.randn(2, w.shape[1]), torch.randn(w.shape[0], 2)
    write_diffusers_lora(tmp_path / "lora.safetensors", {"blocks.0.self_attn.proj_q.lora_A.weight": a,
                                                         "blocks.0.self_attn.proj_q.lora_B.weight": b},
                         LoraSettings(rank=2, alpha=1.0, targets=("proj_q",)))
    out = merge_lora.python_func(base=str(base), lora=str(tmp_path / "lora.safetensors"), target="merged", scale=2.0,
                                 workdir=str(tmp_path))
    merged = load_file(tmp_path / "merged" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert out == str(tmp_path / "merged") and (tmp_path / "merged" / "model_index.json").is_file()
    expected = w.double() + 2.0 * (1.0 / 2) * (b.double() @ a.double())
    assert (merged["blocks.0.attn1.to_q.weight"].double() - expected).abs().max() < 1e-5
