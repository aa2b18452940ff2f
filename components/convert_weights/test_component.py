import torch
from safetensors.torch import load_file

from components.convert_weights import convert_weights


def test_round_trip_through_the_component(tmp_path, tiny_checkpoints):
    src = tiny_checkpoints["ti2v-5b"] / "transformer"
    mm = convert_weights.python_func(source=str(src), target="mm", workdir=str(tmp_path))
    back = convert_weights.python_func(source=mm, target=str(tmp_path / "hf"), direction="mm-to-hf", hf_dir=str(src))
    a = load_file(src / "diffusion_pytorch_model.safetensors")
    b = load_file(f"{back}/diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
