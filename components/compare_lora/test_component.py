import torch

import wan_core
from components.compare_lora import compare_lora
from wan_core.train.config import LoraSettings
from wan_core.train.lora import write_diffusers_lora


def test_samples_without_and_with_the_adapter(tmp_path, tiny_checkpoints, artifact):
    base = tiny_checkpoints["ti2v-5b"]
    w = wan_core.load_dit(base / "transformer").blocks[0].ffn[0].weight
    write_diffusers_lora(tmp_path / "lora.safetensors", {"blocks.0.ffn.0.lora_A.weight": torch.randn(2, w.shape[1]),
                                                         "blocks.0.ffn.0.lora_B.weight": torch.randn(w.shape[0], 2)},
                         LoraSettings(rank=2, alpha=2.0, targets=("ffn.0",)))
    (tmp_path / "prompts.txt").write_text("a red circle\n")
    preview, metrics = artifact("preview.html"), artifact("metrics")
    out = compare_lora.python_func(model=str(base), lora=str(tmp_path / "lora.safetensors"),
                                   prompts=str(tmp_path / "prompts.txt"), output="compare", workdir=str(tmp_path),
                                   preview=preview, metrics=metrics, frames=5, height=32, width=32, steps=2)
    page = open(preview.path).read()
    assert out == str(tmp_path / "compare") and metrics.metrics == {"prompts": 1}
    assert page.count("<video") == 2 and "without the adapter" in page and "with the adapter" in page
    a, b = ((tmp_path / "compare" / kind / "0000.mp4").read_bytes() for kind in ("base", "lora"))
    assert a != b  # the adapter changes the video
