"""One video across processes: context parallelism (Ulysses, Ring, USP), CFG-parallel and sharded weights give
the frames one process gives (fp32, gloo on CPU), for every sampling task; offloading changes no frame."""
import json
import subprocess
import sys

import numpy as np
import pytest

from wan_core.errors import UserError
from wan_core.sample.sampler import SampleRequest, SampleSettings, WanSampler
from tests.test_sample import make_image

PROMPTS = ["a red circle moving from left to right", "a blue square bouncing"]

# task: (variant, with image, pixel size, layouts run against the one-process frames); together the layouts
# cover Ulysses, Ring and USP, CFG-parallel, sharded weights, several groups sharing the prompts, and mixes
LAYOUTS = {
    "ti2v-5b/t2v": ("ti2v-5b", False, 32, [["--nproc", "4", "--cp", "2", "--cfg-parallel", "--shard-weights"],
                                           # MindSpeed-MM's inference.sh words (checked against its script below)
                                           ["--nproc", "2", "--context-parallel-size", "2",
                                            "--context-parallel-algo", "ulysses_cp_algo"]]),
    "ti2v-5b/ti2v": ("ti2v-5b", True, 32, [["--nproc", "4", "--cp", "2", "--cp-algo", "ring"]]),
    "t2v-a14b": ("t2v-a14b", False, 16, [["--nproc", "4", "--cp", "4", "--cp-algo", "usp", "--ulysses-degree", "2"]]),
    "i2v-a14b": ("i2v-a14b", True, 16, [["--nproc", "2", "--cfg-parallel", "--shard-weights"],
                                        ["--nproc", "2", "--cp", "2", "--cp-algo", "ulysses_cp_algo"]]),
}


def sample_cli(folder, tmp_path, name, with_image, size, *extra):
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    args = ["--model", str(folder), "--prompts", str(tmp_path / "prompts.txt"), "--size", "5", str(size), str(size),
            "--steps", "3", "--seed", "11", "--save-array", "--output", str(tmp_path / name)]
    if with_image:
        for i in range(len(PROMPTS)):
            make_image(i, (size + 8, size)).save(tmp_path / f"img{i}.png")
        (tmp_path / "images.txt").write_text("img0.png\nimg1.png\n")
        args += ["--images", str(tmp_path / "images.txt")]
    r = subprocess.run([sys.executable, "-m", "wan_core", "sample", *args, *extra], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return np.stack([np.load(tmp_path / name / f"{i:04d}.npy") for i in range(len(PROMPTS))])


@pytest.mark.parametrize("task", list(LAYOUTS))
def test_layouts_give_the_one_process_frames(tiny_checkpoints, tmp_path, task):
    variant, with_image, size, layouts = LAYOUTS[task]
    reference = sample_cli(tiny_checkpoints[variant], tmp_path, "one", with_image, size)
    for i, layout in enumerate(layouts):
        frames = sample_cli(tiny_checkpoints[variant], tmp_path, f"layout{i}", with_image, size, *layout)
        assert np.abs(frames - reference).max() <= 1e-4, layout
        summary = json.loads((tmp_path / f"layout{i}" / "samples.json").read_text())
        assert [s["index"] for s in summary["samples"]] == [0, 1] and summary["settings"]["nproc"] == int(layout[1])


def test_sharded_weights_divide_each_process_share(tiny_checkpoints):
    """--shard-weights is real sharding: each of 2 ranks holds about half of every model's parameters."""
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "tests/helpers/sharded_sampler.py", str(tiny_checkpoints["t2v-a14b"])],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for part in ("dit", "text"):
        shares = [rank[part] for rank in out["ranks"]]
        assert sum(shares) <= out["full"][part] * 1.01 and max(shares) <= out["full"][part] * 0.55, (part, out)


@pytest.mark.parametrize("argv, message", [
    (["--nproc", "3", "--cp", "2"], "--cp=2 must divide the number of processes 3 (valid: 1, 3)"),
    (["--nproc", "2", "--cp", "2", "--cfg-parallel"], "--cfg-parallel) = 4 processes per video must divide"),
    (["--nproc", "4", "--cp", "4", "--cp-algo", "usp", "--ulysses-degree", "3"], "--ulysses-degree=3 must divide --cp=4"),
    (["--nproc", "4", "--cp", "4"], "--cp=4: the model's 2 attention heads must divide by the Ulysses degree"),
    (["--nproc", "2", "--cp", "2", "--cp-algo", "zigzag"], "--cp-algo: one of ulysses, ring, usp"),
    (["--nproc", "2", "--cfg-parallel", "--guidance", "1"], "--cfg-parallel splits the guided passes"),
    (["--nproc", "2", "--shard-weights"], "with --cp 1 and no --cfg-parallel that is one process"),
])
def test_bad_layouts_are_one_paragraph_before_loading(tiny_checkpoints, tmp_path, argv, message):
    (tmp_path / "p.txt").write_text("x\n")
    r = subprocess.run([sys.executable, "-m", "wan_core", "sample", "--model", str(tiny_checkpoints["ti2v-5b"]),
                        "--prompts", str(tmp_path / "p.txt"), "--output", str(tmp_path / "out"), *argv],
                       capture_output=True, text=True)
    assert r.returncode == 2 and message in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant", ["t2v-a14b", "ti2v-5b"])
def test_offload_modes_give_the_same_frames_and_keep_one_component_resident(tiny_checkpoints, variant):
    """On this CPU the device is the host, so the moves change nothing physically; what is checked is the
    schedule (which component is brought in when, each evicting the last) and that frames are unchanged."""
    settings = SampleSettings(5, 32, 32, 4, 4.0, 3.0 if variant == "t2v-a14b" else None, "blurry")
    requests = [SampleRequest(PROMPTS[0], 3)]
    frames, moves = {}, {}
    for mode in ("none", "model", "sequential"):
        sampler = WanSampler(tiny_checkpoints[variant], offload=mode)
        frames[mode] = sampler(requests, settings)
        moves[mode] = (sampler.offloader.moves, sampler.offloader.block_moves)
    assert np.abs(frames["model"] - frames["none"]).max() <= 1e-5
    assert np.abs(frames["sequential"] - frames["none"]).max() <= 1e-5
    assert moves["none"] == ([], 0)
    experts = ["expert0", "expert1"] if variant == "t2v-a14b" else ["expert0"]
    expected = [("text_encoder", "device"), ("text_encoder", "home")]
    for i, name in enumerate(experts):
        expected += [(name, "device")] + ([(name, "home")] if i < len(experts) - 1 else [])
    expected += [(experts[-1], "home"), ("vae", "device")]
    for mode in ("model", "sequential"):
        assert moves[mode][0] == expected, (mode, moves[mode][0])
    layers = len(sampler.experts[0].blocks)
    assert moves["model"][1] == 0 and moves["sequential"][1] == 4 * 2 * layers  # 4 steps x (cond, uncond) x blocks


def test_offload_flag_maps_to_model_and_refuses_sharding(tiny_checkpoints):
    from wan_core.cli import build_parser

    args = build_parser().parse_args(["sample", "--offload-inactive-expert", "--model", "m"])
    assert args.offload == "model"
    with pytest.raises(UserError, match="--shard-weights and --offload cannot be combined"):
        WanSampler(tiny_checkpoints["ti2v-5b"], offload="model", group=type("G", (), {"shard_mesh": object()})())


def test_mindspeed_inference_sh_uses_the_cp_words_we_accept():
    """MindSpeed-MM's inference.sh passes --context-parallel-size CP --context-parallel-algo ulysses_cp_algo: the words
    the ti2v-5b/t2v layout above runs with (and gets the one-process frames)."""
    import re
    from pathlib import Path

    for script in (Path(__file__).parents[2] / "shared/mindspeed-mm-wan2.2-configs").glob("*/*/inference.sh"):
        text = script.read_text()
        assert "--context-parallel-size ${CP}" in text, script
        assert re.search(r"--context-parallel-algo (\S+)", text).group(1) == "ulysses_cp_algo", script
