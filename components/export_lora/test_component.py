import torch

import wan_core
from components.export_lora import export_lora
from wan_core.train.config import LoraSettings
from wan_core.train.lora import add_lora, read_lora_file
from wan_core.train.checkpoint import CheckpointManager


def test_exports_the_adapters_of_a_lora_checkpoint(tmp_path, tiny_checkpoints):
    model = add_lora(wan_core.load_dit(tiny_checkpoints["t2v-a14b"] / "transformer"), LoraSettings(rank=2, alpha=4.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B" in name:
                p.normal_()  # as if trained
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    lora = {"rank": 2, "alpha": 4.0, "dropout": 0.0, "targets": ["proj_q", "ffn.0"]}
    CheckpointManager(tmp_path / "save", 1, trainable_only=True).save(
        2, model, opt, {"step": 2, "config": {"train": {"lora": lora}}})
    out = export_lora.python_func(save_path=str(tmp_path / "save"), target="lora", workdir=str(tmp_path))
    lora = read_lora_file(out)
    state = lora.state
    assert out == str(tmp_path / "lora" / "pytorch_lora_weights.safetensors")
    assert set(lora.scalings.values()) == {2.0} and {a.shape[0] for a, _ in lora.modules().values()} == {2}
    trained = dict(model.named_parameters())
    assert state and all(torch.equal(v, trained[k.replace(".weight", ".default.weight")]) for k, v in state.items())
