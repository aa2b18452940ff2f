"""Training that survives its users and its faults: a protected save folder, resume that honours what changed,
one-paragraph errors for truncated checkpoints, a full disk and mismatched weights, the misleading causes named."""
import errno
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from wan_core.errors import UserError
from helpers.wan22_cli import run_wan22

PARAGRAPH_LINES = 8  # a one-paragraph message wraps at 100 columns; a traceback is longer


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from wan_core.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("faults") / "demo", videos=4)


def write_yaml(folder, ckpt, demo, train_lines: str, save="save", variant="ti2v-5b", task="ti2v"):
    """A config written as a person writes it (numbers like 1e-3 stay as typed)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (f"model: {{from_pretrained: {ckpt}, variant: {variant}, task: {task}}}\n"
            f"save_path: {save}\n"
            f"data: {{data_txt: {demo / 'data.txt'}, num_frames: 9, height: 32, width: 32}}\n"
            f"train:\n" + "".join(f"  {line}\n" for line in train_lines.strip().splitlines()))
    (folder / "train.yaml").write_text(text)
    return folder / "train.yaml"


def run_cli(*args):
    return run_wan22(*args)


def train(config, *extra):
    return run_cli("train", "--config", config, *extra)


def metrics(save):
    return [json.loads(line) for line in (save / "metrics.jsonl").read_text().splitlines()]


def one_paragraph(r):
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    message = r.stderr.strip().split("\n\n")[-1]
    assert len(message.splitlines()) <= PARAGRAPH_LINES, r.stderr
    return " ".join(message.split())


def dcp_weights(folder):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = folder.parent / f"{folder.name}.pt"
    dcp_to_torch_save(str(folder), str(out))
    return torch.load(out, weights_only=True)["model"]


# -- 1. the save folder is protected -------------------------------------------------------------------------------
def test_save_path_is_protected(tmp_path, tiny_checkpoints, demo):
    config = write_yaml(tmp_path, tiny_checkpoints["ti2v-5b"], demo, "iters: 2\nsave_interval: 1\nkeep_last: 1\n"
                        "lr: 1e-3")
    save = tmp_path / "save"
    r = train(config)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in save.glob("iter_*")) == ["iter_0000002"]  # its own iteration 1 was pruned
    # a folder of the user's own, named like an iteration, survives pruning
    (save / "iter_0000001").mkdir()
    (save / "iter_0000001" / "notes.txt").write_text("mine")
    r = train(config, "--set", "train.iters=4")
    assert r.returncode == 0, r.stderr
    assert (save / "iter_0000001" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in save.glob("iter_*")) == ["iter_0000001", "iter_0000004"]
    # someone else's folder is refused before anything is written
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    r = train(config, "--set", f"save_path={other}")
    message = one_paragraph(r)
    assert str(other) in message and "not an output of wan22" in message and "another save_path" in message
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]
    # --overwrite starts afresh in its own folder, and still leaves the user's folder alone
    r = train(config, "--set", "train.iters=2", "--set", "train.save_interval=2", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert [m["step"] for m in metrics(save)] == [1, 2]
    assert (save / "iter_0000001" / "notes.txt").read_text() == "mine"
    message = one_paragraph(train(config, "--set", "train.iters=2", "--overwrite"))  # would save step 1 there
    assert "iter_0000001 is not a checkpoint this training wrote" in message
    assert (save / "iter_0000001" / "notes.txt").read_text() == "mine"
    # a brand-new folder of a run that fails before writing anything is not left behind
    r = train(config, "--set", f"save_path={tmp_path / 'fresh'}", "--set", "data.num_frames=10")
    assert r.returncode == 2 and not (tmp_path / "fresh").exists()


def test_mindspeed_checkpoint_folder_is_resumed_and_never_pruned(tmp_path, tiny_checkpoints, demo):
    from wan_core.mindspeed.pointer import write_pointer

    mm = tmp_path / "mm"
    r = run_cli("convert", "mm-to-dcp", "--source", str(tiny_checkpoints["ti2v-5b"] / "transformer"),
                "--output", str(mm))
    assert r.returncode == 0, r.stderr
    save = tmp_path / "mindspeed-save"  # MindSpeed-MM's --save folder: iter_0000100 and its pointer
    save.mkdir()
    (mm / "release").rename(save / "iter_0000100")
    write_pointer(save, 100)
    config = write_yaml(tmp_path, tiny_checkpoints["ti2v-5b"], demo, "iters: 102\nsave_interval: 1\nkeep_last: 1",
                        save=str(save))
    r = train(config)
    assert r.returncode == 0, r.stderr
    assert "MindSpeed-MM's iteration 100" in r.stderr and [m["step"] for m in metrics(save)] == [101, 102]
    assert sorted(p.name for p in save.glob("iter_*")) == ["iter_0000100", "iter_0000102"]
    # its pointer naming an iteration that is not there: named as such (not "interrupted while saving")
    write_pointer(save, 300)
    r = train(config, "--set", "train.iters=103")
    assert r.returncode == 0, r.stderr
    assert "names iter_0000300, which does not exist" in " ".join(r.stderr.split())
    assert "resuming from iter_0000102" in " ".join(r.stderr.split())


# -- 2. resume honours what changed --------------------------------------------------------------------------------
def test_yaml_numbers_as_people_write_them(tmp_path, tiny_checkpoints, demo):
    from wan_core.train.config import load_config

    config = write_yaml(tmp_path, tiny_checkpoints["ti2v-5b"], demo,
                        "lr: 1e-4\nmin_lr: 5e-6\nadam_eps: 1.0e-5\nweight_decay: 1E-2\niters: 1e3")
    cfg = load_config(config, ["train.adam_beta2=9.5e-1"])
    assert (cfg.train.lr, cfg.train.min_lr, cfg.train.adam_eps, cfg.train.weight_decay) == (1e-4, 5e-6, 1e-5, 1e-2)
    assert cfg.train.iters == 1000 and cfg.train.adam_beta2 == 0.95
    assert load_config(config, ["model.task=t2v"]).model.task == "t2v"  # words stay words


def reference_lr(step, lr, min_lr, warmup, iters, kind):
    """Megatron's schedule written out independently: linear warm-up, then the decay to min_lr at iters."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (iters - warmup))
    factor = {"constant": 1.0, "linear": 1 - progress, "cosine": (1 + math.cos(math.pi * progress)) / 2}[kind]
    return min_lr + (lr - min_lr) * factor


def test_resume_applies_changed_settings_and_refuses_what_cannot_change(tmp_path, tiny_checkpoints, demo):
    config = write_yaml(tmp_path, tiny_checkpoints["ti2v-5b"], demo,
                        "iters: 4\nsave_interval: 2\nlr: 1e-3\nwarmup: 2\nlr_schedule: linear\nmin_lr: 1e-4")
    save = tmp_path / "save"
    r = train(config)
    assert r.returncode == 0, r.stderr
    assert [m["lr"] for m in metrics(save)] == pytest.approx(
        [reference_lr(s, 1e-3, 1e-4, 2, 4, "linear") for s in range(4)], rel=1e-12)
    # new schedule settings apply from the next step, and the run says what changed
    r = train(config, "--set", "train.iters=8", "--set", "train.lr=5e-4", "--set", "train.lr_schedule=cosine",
              "--set", "train.adam_beta1=0.8")
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stderr.split())
    assert "train.lr 0.001 -> 0.0005" in said and "train.lr_schedule linear -> cosine" in said
    assert "train.iters 4 -> 8" in said and "train.adam_beta1 0.9 -> 0.8" in said
    rows = metrics(save)
    assert [m["step"] for m in rows] == list(range(1, 9))
    assert [m["lr"] for m in rows[4:]] == pytest.approx(
        [reference_lr(s, 5e-4, 1e-4, 2, 8, "cosine") for s in range(4, 8)], rel=1e-12)
    # the optimizer itself uses the new value: with lr 0 the weights stay exactly those of the checkpoint
    before = dcp_weights(save / "iter_0000008")
    r = train(config, "--set", "train.iters=10", "--set", "train.lr=0", "--set", "train.lr_schedule=constant",
              "--set", "train.save_interval=1")
    assert r.returncode == 0, r.stderr
    after = dcp_weights(save / "iter_0000010")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # what a checkpoint cannot continue under is refused, naming old and new
    message = one_paragraph(train(config, "--set", "train.iters=12", "--set", "model.task=t2v"))
    assert "model.task 'ti2v' -> 't2v'" in message and "own save_path" in message
    message = one_paragraph(train(config, "--set", "train.lora.rank=4", "--set", "train.iters=12"))
    assert "train.lora" in message
    # fewer iterations than the checkpoint: not a silent success
    message = one_paragraph(train(config, "--set", "train.iters=3"))
    assert "past train.iters 3" in message and "--overwrite" in message


# -- 4. real faults in one paragraph -------------------------------------------------------------------------------
def test_truncated_and_empty_shards(tmp_path, tiny_checkpoints, demo):
    ref = write_yaml(tmp_path / "ref", tiny_checkpoints["ti2v-5b"], demo, "iters: 6\nsave_interval: 2\nlr: 1e-3")
    config = write_yaml(tmp_path / "run", tiny_checkpoints["ti2v-5b"], demo, "iters: 4\nsave_interval: 2\nlr: 1e-3")
    assert train(ref).returncode == 0
    assert train(config).returncode == 0
    save = tmp_path / "run" / "save"
    shard = next((save / "iter_0000004").glob("*.distcp"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # a copy that stopped half-way
    message = one_paragraph(run_cli("consolidate", "--source", str(save), "--output", str(tmp_path / "mm")))
    assert str(shard) in message and "truncated" in message and "iter_0000002" in message
    assert not (tmp_path / "mm").exists()
    message = one_paragraph(train(config, "--set", "train.iters=6", "--resume-from", "4"))
    assert str(shard) in message and "iter_0000002" in message
    r = train(config, "--set", "train.iters=6")  # the last complete checkpoint, with a warning
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stderr.split())
    assert "warning" in said and str(shard) in said and "resuming from iter_0000002" in said
    assert [m["loss"] for m in metrics(save)] == [m["loss"] for m in metrics(tmp_path / "ref" / "save")]
    shard = next((save / "iter_0000006").glob("*.distcp"))
    shard.write_bytes(b"")
    message = one_paragraph(run_cli("consolidate", "--source", str(save), "--output", str(tmp_path / "mm")))
    assert f"{shard}: empty" in message and "iter_0000004" in message


def test_full_disk_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import torch.distributed.checkpoint.filesystem as fs

    from wan_core.train.checkpoint import CheckpointManager, CheckpointSaveError
    from wan_core.weights.checkpoint_layout import verify_iteration

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    manager = CheckpointManager(tmp_path / "save", keep_last=2)
    manager.save(1, model, optimizer, {"step": 1})
    real = fs._write_item

    def full(*args, **kwargs):
        real(*args, **kwargs)  # some bytes reach the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fs, "_write_item", full)
    with pytest.raises(CheckpointSaveError) as info:
        manager.save(2, model, optimizer, {"step": 2})
    message = str(info.value)
    assert "no space left on the device" in message and "iter_0000002" in message
    assert "iter_0000001 is intact" in message
    assert sorted(p.name for p in (tmp_path / "save").iterdir() if p.name.startswith("iter_")) == ["iter_0000001"]
    assert (tmp_path / "save" / "latest_checkpointed_iteration.txt").read_text() == "1"
    verify_iteration(tmp_path / "save" / "iter_0000001")


def test_other_variants_weights_are_refused_before_loading(tmp_path, tiny_checkpoints, demo, monkeypatch):
    import wan_core
    from wan_core.export import export
    from wan_core.train.config import load_config
    from wan_core.train.trainer import Trainer
    from wan_core.weights.layouts import VariantMismatch

    config = write_yaml(tmp_path, tiny_checkpoints["ti2v-5b"], demo, "iters: 2",
                        save=str(tmp_path / "save"))
    cfg = load_config(config, [f"load_path={tiny_checkpoints['t2v-a14b']}"])

    def never(*a, **k):
        raise AssertionError("weights were loaded before the check")

    monkeypatch.setattr(wan_core, "load_dit", never)
    with pytest.raises(VariantMismatch) as info:
        Trainer(cfg)
    message = str(info.value)
    assert "holds t2v-a14b weights" in message and "model.variant is ti2v-5b" in message
    monkeypatch.undo()
    r = train(config, "--set", f"load_path={tiny_checkpoints['t2v-a14b']}", "--set", f"save_path={tmp_path / 'cli'}")
    assert "t2v-a14b" in one_paragraph(r) and not (tmp_path / "cli").exists()
    # 5B weights exported onto an A14B base: both named, nothing written
    mm = tmp_path / "mm5b"
    assert run_cli("convert", "hf-to-mm", "--source", str(tiny_checkpoints["ti2v-5b"]), "--output",
                   str(mm)).returncode == 0
    with pytest.raises(UserError, match="holds ti2v-5b weights .* a pipeline of t2v-a14b"):
        export(str(mm), str(tiny_checkpoints["t2v-a14b"]), str(tmp_path / "exported"), progress=False)
    assert not (tmp_path / "exported").exists()


def test_misleading_causes_name_the_real_one(tmp_path, tiny_checkpoints):
    from wan_core.data.demo import make_demo_dataset
    from wan_core.data.manifest import validate_dataset
    from wan_core.train.config import from_mindspeed

    shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "mindspeed-mm-wan2.2-configs", "5B",
                          "ti2v")
    data = json.load(open(os.path.join(shared, "data.json")))
    del data["dataset_param"]["basic_parameters"]["data_path"]
    (tmp_path / "data.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="data.json: dataset_param.basic_parameters.data_path is missing"):
        from_mindspeed(tmp_path / "data.json", os.path.join(shared, "pretrain_model.json"), ["save_path=x"])
    inference = json.load(open(os.path.join(shared, "inference_model.json")))
    inference["pipeline_config"]["input_size"] = [6, 64, 64]
    (tmp_path / "inference.json").write_text(json.dumps(inference))
    message = one_paragraph(run_cli("sample", "--config", str(tmp_path / "inference.json"), "--model",
                                    str(tiny_checkpoints["ti2v-5b"]), "--output", str(tmp_path / "o")))
    assert "inference.json: pipeline_config.input_size [6, 64, 64]: frames must be 4n+1" in message
    assert "--size" not in message
    with pytest.raises(UserError, match="cannot contain a comma"):
        make_demo_dataset(tmp_path / "a,b" / "demo", videos=1)
    assert not (tmp_path / "a,b").exists()
    (tmp_path / "data.txt").write_text(f"{tmp_path}/a,b,{tmp_path}/a,b/data.json\n")
    with pytest.raises(UserError, match="line 1: 4 comma-separated fields"):
        validate_dataset(tmp_path / "data.txt")


# -- 3. SIGTERM and stale temporaries elsewhere --------------------------------------------------------------------
def test_sample_treats_sigterm_as_ctrl_c(tmp_path, tiny_checkpoints):
    import signal

    (tmp_path / "p.txt").write_text("a cat\n")
    proc = subprocess.Popen([sys.executable, "-m", "wan_core", "sample", "--model", str(tiny_checkpoints["ti2v-5b"]),
                             "--prompts", str(tmp_path / "p.txt"), "--size", "5", "32", "32", "--steps", "1000",
                             "--output", str(tmp_path / "out")], stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # inside the denoising loop (its progress lines), with a temporary folder written
        seen.append(line)
        if line.startswith("sampling: step"):
            break
    assert list(tmp_path.glob(".out.tmp-*")), seen
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "SIGTERM" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]  # no output, no hidden temporary folder


def test_stale_temporary_siblings_are_removed(tmp_path):
    import socket

    from wan_core.fsutil import WRITER, atomic_output_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live = tmp_path / ".out.tmp-killed", tmp_path / ".out.tmp-running"
    for folder, pid in ((stale, dead.pid), (live, os.getpid())):
        folder.mkdir()
        (folder / "0000.mp4").write_text("half a video")
        (folder / WRITER).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with atomic_output_dir(tmp_path / "out", "sample") as tmp:
        (tmp / "x").write_text("done")
    assert not stale.exists() and live.is_dir()  # a running writer's folder is left alone
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".wan22-output.json", "x"]


# -- 7. help that matches the parser -------------------------------------------------------------------------------
def test_help_matches_the_parser():
    import argparse
    import re
    import tomllib

    from wan_core.cli import build_mm_convert_parser, build_parser

    def walk(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    for top in (build_parser(), build_mm_convert_parser()):
        for parser in walk(top):
            text = parser.format_help()
            assert "(default: [])" not in text and not re.search(r"\(default [^:]", text), parser.prog
            usage = " ".join(parser.format_usage().split())
            for action in parser._actions:
                if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
                    continue
                assert (action.help or "").strip(), f"{parser.prog} {action.option_strings[0]} has no help"
                if action.required:  # shown as required: no brackets around it in the usage line
                    assert not re.search(rf"\[{action.option_strings[0]}[ \]]", usage), (parser.prog, usage)
    usage = " ".join(build_parser()._subparsers._group_actions[0].choices["consolidate"].format_usage().split())
    assert "--output DIR" in usage and "[--output" not in usage and "--target" not in usage
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert isinstance(project["license"], str)  # an SPDX expression: setuptools deprecates the table form
