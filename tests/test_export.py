"""Consolidation and export: exact weights (checked with torch's own DCP tools), loadable by diffusers."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from diffusers import WanPipeline

from conftest import read_safetensors
from wan_core.errors import UserError
from wan_core.export import consolidate, export
from wan_core.weights.names import convert_key

HELPERS = os.path.join(os.path.dirname(__file__), "helpers")


def torch_dcp_model(iter_dir, tmp_path):
    """The model weights of a DCP checkpoint according to torch's own converter (the reference)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp_path / f"{os.path.basename(iter_dir)}-ref.pt"
    dcp_to_torch_save(str(iter_dir), str(out))
    return torch.load(out, weights_only=True)["model"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_checkpoints):
    from wan_core.data.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("export")
    demo = make_demo_dataset(root / "demo", videos=2)
    cfg = {"model": {"from_pretrained": str(tiny_checkpoints["t2v-a14b"]), "variant": "t2v-a14b", "expert": "low"},
           "save_path": str(root / "save"),
           "data": {"data_txt": str(demo / "data.txt"), "num_frames": 9, "height": 32, "width": 32, "fps": 16},
           "train": {"iters": 4, "save_interval": 2, "lr": 1e-2, "seed": 1}}
    (root / "train.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "wan_core", "train", "--config", str(root / "train.yaml"),
                        "--nproc", "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return root


def test_consolidated_weights_equal_the_dcp_checkpoint(trained, tmp_path):
    ref = torch_dcp_model(trained / "save" / "iter_0000004", tmp_path)
    consolidate(str(trained / "save"), str(tmp_path / "mm"), max_shard_size="30KB", progress=False)
    got = read_safetensors(tmp_path / "mm" / "release")
    index = json.loads((tmp_path / "mm" / "release" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and set(index["weight_map"]) == set(got)
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    # an earlier iteration, MindSpeed-MM's format, a dtype cast
    consolidate(str(trained / "save"), str(tmp_path / "mmpt"), iteration=2, fmt="mm-pt", progress=False)
    ref2 = torch_dcp_model(trained / "save" / "iter_0000002", tmp_path)
    pt = torch.load(tmp_path / "mmpt" / "release" / "mp_rank_00" / "model_optim_rng.pt", weights_only=True)["model"]
    assert all(torch.equal(pt[k], ref2[k]) for k in ref2) and not all(torch.equal(pt[k], ref[k]) for k in ref)
    consolidate(str(trained / "save"), str(tmp_path / "bf16"), dtype="bf16", progress=False)
    half = read_safetensors(tmp_path / "bf16" / "release")
    assert all(half[k].dtype == torch.bfloat16 and torch.equal(half[k], ref[k].bfloat16()) for k in ref)


def test_export_loads_in_diffusers_and_samples(trained, tmp_path, tiny_checkpoints):
    base = tiny_checkpoints["t2v-a14b"]
    consolidate(str(trained / "save"), str(tmp_path / "mm"), progress=False)
    r = subprocess.run([sys.executable, "-m", "wan_core", "export", "--source", str(tmp_path / "mm"), "--expert", "low",
                        "--base", str(base), "--target", str(tmp_path / "pipe"), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    pipe_dir = tmp_path / "pipe"
    ref = torch_dcp_model(trained / "save" / "iter_0000004", tmp_path)
    low = read_safetensors(pipe_dir / "transformer_2")
    assert {convert_key(k, "diffusers", "mm"): v for k, v in low.items()}.keys() == ref.keys()
    assert all(torch.equal(low[convert_key(k, "mm", "diffusers")], v) for k, v in ref.items())
    # the untrained expert and the other parts come from the base, as files (hard links), not symlinks
    high = read_safetensors(pipe_dir / "transformer")
    assert all(torch.equal(high[k], v) for k, v in read_safetensors(base / "transformer").items())
    for root, dirs, files in os.walk(pipe_dir):
        assert not any(os.path.islink(os.path.join(root, f)) for f in files + dirs)
    assert (pipe_dir / "vae" / "config.json").is_file() and (pipe_dir / "tokenizer").is_dir()
    pipe = WanPipeline.from_pretrained(pipe_dir)
    frames = pipe(prompt="a red circle", height=16, width=16, num_frames=5, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 5, 16, 16, 3) and np.isfinite(frames).all()


def test_two_ranks_and_one_rank_consolidate_to_the_same_tensors(tmp_path, tiny_checkpoints):
    model = str(tiny_checkpoints["ti2v-5b"])
    script = os.path.join(HELPERS, "save_state.py")
    r1 = subprocess.run([sys.executable, script, model, str(tmp_path / "one")], capture_output=True, text=True,
                        timeout=300)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", script,
                         model, str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert len(list((tmp_path / "two" / "iter_0000007").glob("*.distcp"))) == 2
    consolidate(str(tmp_path / "one"), str(tmp_path / "c1"), progress=False)
    consolidate(str(tmp_path / "two"), str(tmp_path / "c2"), progress=False)
    a, b = read_safetensors(tmp_path / "c1" / "release"), read_safetensors(tmp_path / "c2" / "release")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = read_safetensors(tiny_checkpoints["ti2v-5b"] / "transformer")
    assert all(torch.equal(a[convert_key(k, "diffusers", "mm")], v) for k, v in base.items())


def test_bad_inputs(trained, tmp_path, tiny_checkpoints):
    import shutil

    cases = [(dict(source=str(tmp_path / "nope")), "no such training output"),
             (dict(source=str(trained / "save"), iteration=3), "no checkpoint for iteration 3 \\(have: iter_0000002, "
                                                                 "iter_0000004\\)"),
             (dict(source=str(trained / "save"), iteration="x"), "--iteration must be"),
             (dict(source=str(trained / "save"), fmt="npz"), "--format")]
    broken = tmp_path / "broken"
    shutil.copytree(trained / "save", broken)
    os.remove(broken / "iter_0000004" / ".metadata")
    cases.append((dict(source=str(broken)), "incomplete DCP checkpoint \\(no .metadata\\)"))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((dict(source=str(empty)), "no latest_checkpointed_iteration.txt"))
    for kwargs, message in cases:
        target = tmp_path / "out"
        with pytest.raises(UserError, match=message):
            consolidate(target=str(target), progress=False, **kwargs)
        assert not target.exists()
    with pytest.raises(UserError, match="not a diffusers pipeline folder"):
        export(str(trained / "save"), str(tmp_path), str(tmp_path / "x"), progress=False)
    with pytest.raises(UserError, match="one-expert model"):
        export(str(trained / "save"), str(tiny_checkpoints["ti2v-5b"]), str(tmp_path / "x"), expert="low",
               progress=False)
    consolidate(str(trained / "save"), str(tmp_path / "mm"), progress=False)
    with pytest.raises(UserError, match="holds t2v-a14b weights .* a pipeline of ti2v-5b"):  # t2v onto the 5B base
        export(str(tmp_path / "mm"), str(tiny_checkpoints["ti2v-5b"]), str(tmp_path / "x"), progress=False)
    assert not (tmp_path / "x").exists()
