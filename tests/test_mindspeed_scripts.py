"""MindSpeed-MM's own launch scripts (../shared/mindspeed-mm-wan2.2-configs, from its examples/wan2.2) run here with
one word changed: `torchrun $DISTRIBUTED_ARGS pretrain_sora.py` -> `wan22 train $DISTRIBUTED_ARGS` (and
`inference_sora.py` -> `wan22 sample`). They run from a MindSpeed-MM-style root holding tiny weights at the paths
the scripts and configs name, sized for this machine the way a user would: one device (NPUS_PER_NODE=1), two
iterations, a placeholder SAVE_PATH filled in, the data/inference configs scaled down to tiny clips and frames.

One script runs end to end through bash and the real `wan22` command (its `tee`, `grep "elapsed time per
iteration"` and summary included); the others run through bash with a `wan22` on PATH that records the command
line bash built, which then runs in this process (the same entry point, without seconds of start-up per script)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.wan22_cli import run_wan22

SHARED = Path(__file__).parent.parent.parent / "shared" / "mindspeed-mm-wan2.2-configs"
TRAIN_SCRIPTS = ["5B/t2v/pretrain.sh", "5B/ti2v/pretrain.sh", "A14B/t2v/pretrain_high.sh", "A14B/t2v/pretrain_low.sh",
                 "A14B/t2v/finetune_lora_high.sh", "A14B/t2v/finetune_lora_low.sh", "A14B/i2v/pretrain_high.sh",
                 "A14B/i2v/pretrain_low.sh"]
INFERENCE_SCRIPTS = ["5B/t2v/inference.sh", "5B/ti2v/inference.sh", "A14B/t2v/inference.sh", "A14B/i2v/inference.sh"]
WEIGHTS = {"Wan2.2-TI2V-5B-Diffusers": "ti2v-5b", "Wan2.2-T2V-A14B-Diffusers": "t2v-a14b",
           "Wan2.2-I2V-A14B-Diffusers": "i2v-a14b", "weights/Wan-AI/Wan2.2-T2V-A14B-Diffusers": "t2v-a14b",
           "weights/Wan-AI/Wan2.2-I2V-A14B-Diffusers": "i2v-a14b",
           "weights/Wan-AI/Wan2.2-I2V-A14B-480P-Diffusers": "i2v-a14b"}


@pytest.fixture(scope="module")
def mm_root(tmp_path_factory, tiny_checkpoints):
    """examples/wan2.2 as shipped, tiny weights where the scripts look, a 4-clip dataset, configs scaled down."""
    from wan_core.data.demo import make_demo_dataset
    from wan_core.weights.convert import hf_to_mm

    root = tmp_path_factory.mktemp("MindSpeed-MM")
    shutil.copytree(SHARED, root / "examples" / "wan2.2")
    for name, variant in WEIGHTS.items():
        folder = root / name
        folder.mkdir(parents=True)
        for item in Path(tiny_checkpoints[variant]).iterdir():  # linked file by file: mm_convert is written beside
            (folder / item.name).symlink_to(item)
    hf_to_mm(str(root / "Wan2.2-TI2V-5B-Diffusers" / "transformer"), str(root / "Wan2.2-TI2V-5B-Diffusers" / "mm_convert"),
             fmt="mm-pt", progress=False)  # what the 5B scripts' LOAD_PATH names ("ensure the wandit weight be converted")
    demo = make_demo_dataset(root / "dataset", videos=4)  # MindSpeed-MM keeps a size only when 4 x GBS clips share it
    (root / "examples" / "wan2.2" / "data.txt").write_text(f"{demo},{demo / 'data.json'}\n")
    for data_json in (root / "examples" / "wan2.2").glob("*/*/data.json"):
        raw = json.loads(data_json.read_text())
        raw["dataset_param"]["preprocess_parameters"].update(num_frames=9, max_height=32, max_width=32, max_hxw=1024)
        data_json.write_text(json.dumps(raw, indent=2))
    for inference_json in (root / "examples" / "wan2.2").glob("*/*/inference_model.json"):
        raw = json.loads(inference_json.read_text())
        raw["pipeline_config"]["input_size"] = [5, 32, 32]
        raw["diffusion"]["num_inference_steps"] = 2
        for key in ("dtype",):
            raw[key] = "fp32"
        for part in ("ae", "text_encoder", "predictor"):
            raw[part]["dtype"] = "fp32" if "dtype" in raw[part] else raw[part].get("dtype")
        if str(raw.get("low_noise_predictor", "")).startswith("/weights"):  # the A14B t2v example's absolute path
            raw["low_noise_predictor"] = "." + raw["low_noise_predictor"]
        inference_json.write_text(json.dumps(raw, indent=2))
    shim = root / "shim"
    shim.mkdir()
    (shim / "wan22").write_text('#!/bin/sh\nprintf "%s\\0" "$@" > "$WAN22_ARGV"\n')
    (shim / "wan22").chmod(0o755)
    return root


def adapt(root: Path, script: str, real: bool = False) -> Path:
    """The script with the one substitution, sized for this machine."""
    text = (root / "examples" / "wan2.2" / script).read_text()
    text, n = re.subn(r"torchrun \$DISTRIBUTED_ARGS (pretrain|inference)_sora\.py",
                      lambda m: "wan22 " + ("train" if m.group(1) == "pretrain" else "sample") + " $DISTRIBUTED_ARGS",
                      text)
    assert n == 1, script
    text = re.sub(r"NPUS_PER_NODE=\d+", "NPUS_PER_NODE=1", text)
    text = text.replace("--train-iters 5000", "--train-iters 2")
    text = re.sub(r'SAVE_PATH="path to save your (\w+) noise expert wandit weight"', r'SAVE_PATH="save_\1"', text)
    if "SAVE_PATH=" in text:
        text = re.sub(r'SAVE_PATH="([^"]*)"', lambda m: f'SAVE_PATH="{m.group(1)}_{script.replace("/", "_")[:-3]}"',
                      text)
    out = root / f"run_{script.replace('/', '_')}"
    out.write_text(text)
    return out


def bash(root: Path, script: Path, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(["bash", str(script)], cwd=root, env=env, capture_output=True, text=True, timeout=600)


def recorded(root, script):
    argv_file = root / "argv"
    r = bash(root, adapt(root, script), {"PATH": f"{root / 'shim'}:{os.environ['PATH']}", "WAN22_ARGV": str(argv_file)})
    argv = argv_file.read_text().split("\0")[:-1]
    argv_file.unlink()
    return r, argv


def test_a_pretrain_script_runs_end_to_end_with_its_log_summary(mm_root):
    """5B TI2V pretrain.sh through bash and the real command: two iterations, Megatron's log lines in its tee'd log,
    and its own summary line reads a number from them."""
    script = adapt(mm_root, "5B/ti2v/pretrain.sh")
    bin_dir = Path(sys.executable).parent  # where `wan22` is installed
    r = bash(mm_root, script, {"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert "iteration        2/       2" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]
    summary = re.search(r"Elapsed Time Per iteration: ([0-9.]+), Average Samples per Second: ([0-9.]+)", r.stdout)
    assert summary and float(summary.group(1)) > 0, r.stdout[-2000:]
    save = mm_root / "wandit_weight_save_5B_ti2v_pretrain"
    assert (save / "latest_checkpointed_iteration.txt").read_text() == "2"
    state = json.loads((save / "iter_0000002" / "trainer_state.json").read_text())["config"]
    assert state["train"]["dtype"] == "bf16" and state["train"]["activation_checkpointing"]  # from fsdp2_config.yaml
    assert state["train"]["lr"] == 1e-5 and state["train"]["weight_decay"] == 0.01 and state["train"]["iters"] == 2
    assert state["data"]["mindspeed"]["auto_interval"] is False and state["objective"]["grid_dtype"] == "float32"
    assert "change nothing here" in r.stdout and "--use-fused-rmsnorm" in r.stdout  # 2>&1 | tee


@pytest.mark.parametrize("script", [s for s in TRAIN_SCRIPTS if s != "5B/ti2v/pretrain.sh"])
def test_each_training_script_runs_with_one_word_changed(mm_root, script):
    r, argv = recorded(mm_root, script)
    assert argv[0] == "train" and "--mm-data" in argv and "--lr" in argv, (r.stderr, argv)
    result = run_wan22(*argv, cwd=mm_root)
    assert result.returncode == 0, result.stderr[-3000:]
    save = Path(argv[argv.index("--save") + 1])
    save = save if save.is_absolute() else mm_root / save
    assert (save / "latest_checkpointed_iteration.txt").read_text() == "2"
    config = json.loads((save / "config.resolved.json").read_text())
    assert config["model"]["expert"] == ("high" if "high" in script else "low" if "low" in script else None)
    if "lora" in script:  # --lora-r 32 --lora-alpha 32 --lora-target-modules proj_q,...,ffn.2
        assert config["train"]["lora"] == {"rank": 32, "alpha": 32.0, "dropout": 0.0, "init": None,
                                           "targets": ["proj_q", "proj_k", "proj_v", "proj_out", "ffn.0", "ffn.2"]}
        assert config["train"]["lr"] == 1e-4 and config["parallel"]["timeout_s"] == 1200
    assert "elapsed time per iteration (ms):" in result.stdout


def test_plan_takes_a_scripts_arguments(mm_root):
    """`wan22 plan train` / `plan sample` with the command line a script builds: the memory plan, nothing trained."""
    for script, what in (("A14B/t2v/pretrain_high.sh", "train"), ("5B/ti2v/inference.sh", "sample")):
        _, argv = recorded(mm_root, script)
        r = run_wan22("plan", *argv, cwd=mm_root)
        assert r.returncode == 0 and "GB" in r.stdout, r.stderr[-2000:]
        assert argv[0] == what


@pytest.mark.parametrize("script", INFERENCE_SCRIPTS)
def test_each_inference_script_runs_with_one_word_changed(mm_root, script):
    r, argv = recorded(mm_root, script)
    assert argv[0] == "sample" and "--mm-model" in argv and "--load" in argv, (r.stderr, argv)
    result = run_wan22(*argv, cwd=mm_root)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((mm_root / argv[argv.index("--mm-model") + 1]).read_text())
    out = mm_root / config["save_path"]
    index = json.loads((out / "samples.json").read_text())
    assert index["samples"][0]["seed"] == 1234 and (out / "0000.mp4").is_file()  # Megatron's --seed default
    assert index["settings"]["transformer"].rstrip("/").endswith(("transformer", "mm_convert"))  # its --load
    if "image" in config:  # the image list's paths are against the working folder, as MindSpeed-MM opens them
        assert index["samples"][0]["image"] == "examples/wan2.2/i2v_input.jpg"
    if script.startswith("A14B/i2v"):
        assert index["settings"]["boundary_ratio"] == 0.875  # the example's, not the folder's 0.9


def test_refused_and_translated_flags(mm_root):
    """Model parallelism > 1 and fp16 are refused in one paragraph; --global-batch-size becomes gradient
    accumulation over the data-parallel size."""
    from wan_core.mindspeed.launch_args import translate

    for flags, words in [(["--tensor-model-parallel-size", "2"], "tensor model parallelism is not supported"),
                         (["--pipeline-model-parallel-size", "4"], "pipeline model parallelism"),
                         (["--fp16"], "fp16 training is not supported"),
                         (["--ckpt-format", "torch"], "always torch_dcp"),
                         (["--lr-decay-style", "WSD"], "supported here are constant, linear, cosine"),
                         (["--nproc_per_node", "3", "--global-batch-size", "4"], "not a multiple")]:
        r = run_wan22("train", *flags, cwd=mm_root)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    t = translate(["train", "--nproc_per_node", "4", "--context-parallel-size", "2", "--micro-batch-size", "2",
                   "--global-batch-size", "16"], env={})
    assert t.argv[t.argv.index("train.grad_accum=4") - 1] == "--set"  # 16 / (2 x 4 / 2)
    assert t.argv[1:3] == ["--nproc", "4"]
    t = translate(["train", "--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port", "6000",
                   "--lr", "1e-4", "--set", "train.lr=2e-4"], env={})
    assert "--rdzv-endpoint" in t.argv and "10.0.0.1:6000" in t.argv and t.argv[-1] == "train.lr=2e-4"  # ours win
