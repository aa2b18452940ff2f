import torch
from safetensors.torch import load_file

import wan_core
from components.consolidate import consolidate
from wan_core.train.checkpoint import CheckpointManager


def test_consolidates_a_dcp_checkpoint(tmp_path, tiny_checkpoints):
    model = wan_core.load_dit(tiny_checkpoints["t2v-a14b"])
    opt = torch.optim.AdamW(model.parameters())
    CheckpointManager(tmp_path / "save", 1).save(3, model, opt, {"step": 3, "model_config": model.config.to_diffusers()})
    out = consolidate.python_func(save_path=str(tmp_path / "save"), target="mm", workdir=str(tmp_path))
    got = {}
    for f in (tmp_path / "mm" / "release").glob("*.safetensors"):
        got.update(load_file(f))
    assert out == str(tmp_path / "mm") and got.keys() == model.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
