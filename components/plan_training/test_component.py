import pytest
import yaml

from components.plan_training import plan_training
from wan_core.errors import UserError

DOCUMENT = yaml.safe_dump({"model": {"variant": "t2v-a14b"}, "data": {"num_frames": 9, "height": 32, "width": 32},
                           "train": {"iters": 2, "save_interval": 1, "lr": 1e-3}})


def test_plan_validates_every_expert_and_counts_them(tmp_path, tiny_checkpoints, demo_dataset, artifact):
    report = artifact("resolved.md")
    base = str(tiny_checkpoints["t2v-a14b"])
    data_txt = str(demo_dataset / "data.txt")
    assert plan_training.python_func(train_config=DOCUMENT, train_set=[], base_model=base, data_txt=data_txt,
                                     nnodes=1, devices_per_node=2, resolved=report, workdir=str(tmp_path)) == 2
    text = open(report.path).read()
    assert "expert: high" in text and "expert: low" in text and "(2 processes)" in text
    five = str(tiny_checkpoints["ti2v-5b"])
    assert plan_training.python_func(train_config=DOCUMENT, train_set=["model.variant=ti2v-5b"], base_model=five,
                                     data_txt=data_txt, nnodes=1, devices_per_node=1, resolved=artifact("r2.md"),
                                     workdir=str(tmp_path)) == 1
    with pytest.raises(UserError, match="train.grad_accum: expected an integer"):
        plan_training.python_func(train_config=DOCUMENT, train_set=["train.grad_accum=two"], base_model=base,
                                  data_txt=data_txt, nnodes=1, devices_per_node=1, resolved=artifact("r3.md"),
                                  workdir=str(tmp_path))


def test_plan_refuses_a_layout_the_deployment_cannot_hold(tmp_path, tiny_checkpoints, demo_dataset, artifact):
    """Tiny A14B has 2 attention heads: Ulysses over 4 processes cannot split them; ring can."""
    common = dict(train_config=DOCUMENT, base_model=str(tiny_checkpoints["t2v-a14b"]),
                  data_txt=str(demo_dataset / "data.txt"), nnodes=2, devices_per_node=2, workdir=str(tmp_path))
    with pytest.raises(UserError, match="2 attention heads must divide by the Ulysses degree"):
        plan_training.python_func(train_set=["parallel.cp=4"], resolved=artifact("a.md"), **common)
    assert plan_training.python_func(train_set=["parallel.cp=4", "parallel.cp_algo=ring"], resolved=artifact("b.md"),
                                     **common) == 2


def test_plan_refuses_a_sampling_layout_before_training(tmp_path, tiny_checkpoints, demo_dataset, artifact):
    common = dict(train_config=DOCUMENT, train_set=[], base_model=str(tiny_checkpoints["t2v-a14b"]),
                  data_txt=str(demo_dataset / "data.txt"), nnodes=1, devices_per_node=1, workdir=str(tmp_path))
    with pytest.raises(UserError, match="--cp=2 must divide the number of processes 3"):
        plan_training.python_func(resolved=artifact("a.md"), sample_devices=3, sample_cp=2, **common)
    with pytest.raises(UserError, match="LoRA format must be one of diffusers, comfyui, got 'kohya'"):
        plan_training.python_func(resolved=artifact("c.md"), lora_format="kohya", **common)
    assert plan_training.python_func(resolved=artifact("b.md"), sample_devices=4, sample_cp=2, lora_format="comfyui",
                                     sample_cfg_parallel=True, **common) == 2
