"""Training I: objective tables, config, loss decrease, exact resume, crash recovery, feature cache."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from wan_core.errors import UserError
from wan_core.model import variants
from wan_core.train import objective
from wan_core.train.config import from_mindspeed, load_config

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "mindspeed-mm-wan2.2-configs")


def test_schedule_tables_follow_the_reference_formulas():
    sigmas, timesteps, weights = objective.schedule()
    # independent computation in numpy, straight from the flow-matching formulas
    i = np.arange(1000)
    s = 1 - i / 1000
    sig = 5 * s / (1 + 4 * s)
    t = 1000 * sig
    y = np.exp(-2 * ((t - 500) / 1000) ** 2)
    w = (y - y.min())
    w = w * 1000 / w.sum()
    np.testing.assert_allclose(sigmas.numpy(), sig, rtol=0, atol=1e-12)
    np.testing.assert_allclose(timesteps.numpy(), t, rtol=0, atol=1e-9)
    np.testing.assert_allclose(weights.numpy(), w, rtol=0, atol=1e-12)
    assert sigmas[0] == 1.0 and abs(float(sigmas[999]) - 0.00498) < 1e-5
    assert weights[0] == 0.0 and abs(float(weights.mean()) - 1.0) < 1e-12
    assert abs(float(weights.max()) - 2.076) < 2e-3  # at t = 500
    assert abs(float(timesteps[416]) - 875.30) < 0.01 and abs(float(timesteps[417]) - 874.85) < 0.01
    assert abs(float(timesteps[357]) - 900.06) < 0.01 and abs(float(timesteps[358]) - 899.66) < 0.01
    j875 = int(np.argmin(np.abs(t - 875)))
    assert abs(float(weights[j875]) - 0.78) < 0.01
    assert variants.get("t2v-a14b").index_range("high") == (0, 417) and variants.get("i2v-a14b").index_range("low") == (358, 1000)
    x0, noise = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    x_t, target, tt, ww = objective.noisy_input(x0, noise, torch.tensor([0, 999]))
    torch.testing.assert_close(x_t[0], noise[0])  # sigma 1 at index 0
    torch.testing.assert_close(target, noise - x0)
    assert tt[0] == 1000.0 and ww[0] == 0.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from wan_core.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("data") / "demo", videos=4)


def write_config(tmp_path, ckpt, demo, variant, task=None, expert=None, **train):
    cfg = {"model": {"from_pretrained": str(ckpt), "variant": variant, "task": task, "expert": expert},
           "save_path": "save", "data": {"data_txt": str(demo / "data.txt"), "num_frames": 9,
                                         "height": 32, "width": 32, "fps": 16},
           "train": {"iters": 6, "save_interval": 3, "lr": 1e-3, "seed": 5, **train}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_validation_and_overrides(tmp_path, tiny_checkpoints, demo):
    path = write_config(tmp_path, tiny_checkpoints["t2v-a14b"], demo, "t2v-a14b", expert="high")
    cfg = load_config(path, ["train.iters=12", "parallel.cp_algo=megatron_cp_algo", "data.caption_dropout=0.1"])
    assert cfg.train.iters == 12 and cfg.parallel.cp_algo == "ring" and cfg.data.caption_dropout == 0.1
    assert cfg.save_path == str(tmp_path / "save") and cfg.model.task == "t2v"
    bad = [(["model.expert=null"], "model.expert: required"), (["train.lr=fast"], "train.lr: expected a number"),
           (["data.num_frames=10"], "4n\\+1"), (["data.height=40"], "multiple of 16"),
           (["train.typo=1"], "train.typo: unknown key"), (["model.task=i2v"], "not a task of t2v-a14b"),
           (["data.caption_dropout=2"], "in \\[0, 1\\]"), (["parallel.cp_algo=magic"], "cp_algo"),
           (["train.dtype=fp16"], "train.dtype"), (["data.manifest=x.json"], "exactly one of")]
    for overrides, message in bad:
        with pytest.raises(UserError, match=message):
            load_config(path, overrides)


def test_mindspeed_configs_map_onto_ours():
    data = os.path.join(SHARED, "A14B", "t2v", "data.json")
    high = from_mindspeed(data, os.path.join(SHARED, "A14B", "t2v", "pretrain_model_high.json"), ["save_path=/tmp/x"])
    low = from_mindspeed(data, os.path.join(SHARED, "A14B", "t2v", "pretrain_model_low.json"), ["save_path=/tmp/x"])
    assert (high.model.variant, high.model.expert, low.model.expert) == ("t2v-a14b", "high", "low")
    assert (high.data.num_frames, high.data.height, high.data.width) == (49, 480, 832)
    five = from_mindspeed(os.path.join(SHARED, "5B", "ti2v", "data.json"),
                          os.path.join(SHARED, "5B", "ti2v", "pretrain_model.json"), ["save_path=/tmp/x"])
    assert five.model.variant == "ti2v-5b" and five.model.task == "ti2v"
    i2v = from_mindspeed(os.path.join(SHARED, "A14B", "i2v", "data.json"),
                         os.path.join(SHARED, "A14B", "i2v", "pretrain_model_low.json"), ["save_path=/tmp/x"])
    assert i2v.model.variant == "i2v-a14b" and i2v.model.task == "i2v" and i2v.model.expert == "low"


def cli_train(config, *extra, env=None):
    """`wan22 train`: in this process (the command's own function, without seconds of imports per run), or as a
    subprocess when it needs its own environment."""
    if env is not None:
        return subprocess.run([sys.executable, "-m", "wan_core", "train", "--config", str(config), *extra],
                              capture_output=True, text=True, timeout=600, env=env)
    from helpers.wan22_cli import run_wan22

    return run_wan22("train", "--config", config, *extra)


def metrics(save):
    return [json.loads(line) for line in (save / "metrics.jsonl").read_text().splitlines()]


def final_weights(save):
    import wan_core.train.checkpoint as ck
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    step = ck.latest_iteration(save)
    out = save.parent / f"weights-{save.name}.pt"
    dcp_to_torch_save(str(ck.iteration_dir(save, step)), str(out))
    return step, torch.load(out, weights_only=True)["model"]


@pytest.mark.parametrize("variant,task,expert", [("ti2v-5b", "ti2v", None), ("ti2v-5b", "t2v", None),
                                                 ("t2v-a14b", "t2v", "low"), ("i2v-a14b", "i2v", "high")])
def test_loss_decreases(tmp_path, tiny_checkpoints, demo, variant, task, expert):
    from wan_core.train.trainer import Trainer

    cfg = load_config(write_config(tmp_path, tiny_checkpoints[variant], demo, variant, task, expert, iters=60,
                                   save_interval=100, lr=3e-3))
    trainer = Trainer(cfg)
    probe = list(range(10**6, 10**6 + 6))
    before = trainer.evaluate(probe)
    trainer.train()
    after = trainer.evaluate(probe)
    print(variant, task, expert, "eval loss before", before, "after", after)
    assert after < 0.9 * before, (before, after)
    assert [m["step"] for m in metrics(tmp_path / "save")] == list(range(1, 61))
    assert (tmp_path / "save" / "latest_checkpointed_iteration.txt").read_text().strip() == "60"


def test_resume_is_bit_exact(tmp_path, tiny_checkpoints, demo):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    ca = write_config(a, tiny_checkpoints["ti2v-5b"], demo, "ti2v-5b", "ti2v", save_interval=3)
    cb = write_config(b, tiny_checkpoints["ti2v-5b"], demo, "ti2v-5b", "ti2v", save_interval=3)
    r = cli_train(ca, "--set", "train.iters=6")
    assert r.returncode == 0, r.stderr
    r = cli_train(cb, "--set", "train.iters=3")
    assert r.returncode == 0, r.stderr
    r = cli_train(cb, "--set", "train.iters=6")
    assert r.returncode == 0, r.stderr
    ma, mb = metrics(a / "save"), metrics(b / "save")
    assert [m["step"] for m in mb] == list(range(1, 7))
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]
    assert [m["grad_norm"] for m in ma] == [m["grad_norm"] for m in mb]
    sa, wa = final_weights(a / "save")
    sb, wb = final_weights(b / "save")
    assert sa == sb == 6 and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def wait_for_lines(path, n, proc, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def test_sigkill_during_training_and_during_save_resume(tmp_path, tiny_checkpoints, demo):
    ref_dir, kill_dir, save_kill_dir = tmp_path / "ref", tmp_path / "kill", tmp_path / "savekill"
    term_dir = tmp_path / "term"
    for d in (ref_dir, kill_dir, save_kill_dir, term_dir):
        d.mkdir()
        write_config(d, tiny_checkpoints["t2v-a14b"], demo, "t2v-a14b", expert="high", iters=30, save_interval=10)
    r = cli_train(ref_dir / "train.yaml")
    assert r.returncode == 0
    # off a terminal: a line every step or 5% (here 2 steps), with elapsed and remaining time
    lines = [line for line in r.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == [f"{s}/30" for s in range(2, 31, 2)]
    assert all(", elapsed " in line and ", remaining ~" in line for line in lines)
    # SIGTERM (a pod evicted): the step finishes, a checkpoint of it is written, the message says how to resume
    proc = subprocess.Popen([sys.executable, "-m", "wan_core", "train", "--config", str(term_dir / "train.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_for_lines(term_dir / "save" / "metrics.jsonl", 13, proc), "training ended before SIGTERM"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    stopped = int((term_dir / "save" / "latest_checkpointed_iteration.txt").read_text())
    assert proc.returncode == 143 and 13 <= stopped < 30, err
    said = " ".join(err.split())
    assert f"stopped by SIGTERM after step {stopped}" in said and f"resume from iter_{stopped:07d}" in said
    assert len(metrics(term_dir / "save")) == stopped and "Traceback" not in err
    # killed with SIGKILL while training
    proc = subprocess.Popen([sys.executable, "-m", "wan_core", "train", "--config", str(kill_dir / "train.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for_lines(kill_dir / "save" / "metrics.jsonl", 15, proc), "training ended before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (kill_dir / "save" / "latest_checkpointed_iteration.txt").read_text().strip() in ("10", "20")
    # killed with SIGKILL inside a checkpoint save (after the DCP files, before the rename and pointer)
    script = (
        "import os, signal, sys\n"
        "import wan_core.train.checkpoint as ck\n"
        "orig, calls = ck.dcp.save, []\n"
        "def save(*a, **k):\n"
        "    calls.append(1)\n"
        "    out = orig(*a, **k)\n"
        "    if len(calls) == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return out\n"
        "ck.dcp.save = save\n"
        "from wan_core.cli import main\n"
        f"sys.exit(main(['train', '--config', {str(save_kill_dir / 'train.yaml')!r}]))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL
    assert (save_kill_dir / "save" / "latest_checkpointed_iteration.txt").read_text().strip() == "10"
    assert (save_kill_dir / "save" / "iter_0000020.tmp").is_dir()  # the half-written one
    for d in (kill_dir, save_kill_dir, term_dir):
        r = cli_train(d / "train.yaml")
        assert r.returncode == 0, r.stderr
        assert [m["step"] for m in metrics(d / "save")] == list(range(1, 31))
        assert [m["loss"] for m in metrics(d / "save")] == [m["loss"] for m in metrics(ref_dir / "save")]
        step, w = final_weights(d / "save")
        _, w_ref = final_weights(ref_dir / "save")
        assert step == 30 and all(torch.equal(w[k], w_ref[k]) for k in w_ref)
        assert not list((d / "save").glob("iter_*.tmp"))
        kept = sorted(p.name for p in (d / "save").glob("iter_*"))
        assert kept == (["iter_0000020", "iter_0000030"] if d is not term_dir or stopped < 20 else
                        [f"iter_{stopped:07d}", "iter_0000030"])  # keep_last = 2


def test_feature_cache_gives_the_same_loss(tmp_path, tiny_checkpoints, demo):
    online, cached = tmp_path / "online", tmp_path / "cached"
    online.mkdir(), cached.mkdir()
    cfg_online = write_config(online, tiny_checkpoints["i2v-a14b"], demo, "i2v-a14b", expert="low", iters=4)
    r = subprocess.run([sys.executable, "-m", "wan_core", "cache-features", "--config", str(cfg_online), "--out",
                        str(tmp_path / "features")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "features" / "samples").iterdir())) == 4
    raw = yaml.safe_load(cfg_online.read_text())
    raw["data"] = {**raw["data"], "data_txt": None, "features": str(tmp_path / "features")}
    (cached / "train.yaml").write_text(yaml.safe_dump(raw))
    assert cli_train(cfg_online, "--set", "data.caption_dropout=0.5").returncode == 0
    r = cli_train(cached / "train.yaml", "--set", "data.caption_dropout=0.5")
    assert r.returncode == 0, r.stderr
    lo, lc = metrics(online / "save"), metrics(cached / "save")
    assert len(lo) == len(lc) == 4
    for a, b in zip(lo, lc):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5, abs_tol=1e-7), (a, b)


def test_random_init_needs_consent(tmp_path, tiny_checkpoints, demo):
    path = write_config(tmp_path, tiny_checkpoints["t2v-a14b"], demo, "t2v-a14b", expert="high", iters=1)
    r = cli_train(path, "--set", f"load_path={tmp_path / 'missing'}")
    assert r.returncode == 2 and "allow_random_init" in r.stderr and "Traceback" not in r.stderr
    r = cli_train(path, "--set", f"load_path={tmp_path / 'missing'}", "--set", "allow_random_init=true")
    assert r.returncode == 0, r.stderr


def test_workers_bf16_provenance_and_tensorboard(tmp_path, tiny_checkpoints, demo):
    base = tmp_path / "w0"
    base.mkdir()
    path = write_config(base, tiny_checkpoints["t2v-a14b"], demo, "t2v-a14b", expert="high", iters=3)
    assert cli_train(path, env=dict(os.environ)).returncode == 0  # compared bit for bit with a subprocess below
    workers = tmp_path / "w2"
    workers.mkdir()
    path2 = write_config(workers, tiny_checkpoints["t2v-a14b"], demo, "t2v-a14b", expert="high", iters=3, )
    r = cli_train(path2, "--set", "data.num_workers=2", env=dict(os.environ))  # loader processes: its own process
    assert r.returncode == 0, r.stderr
    assert [m["loss"] for m in metrics(base / "save")] == [m["loss"] for m in metrics(workers / "save")]
    state = json.loads((base / "save" / "iter_0000003" / "trainer_state.json").read_text())
    prov = state["provenance"]
    assert prov["version"] and len(prov["config_hash"]) == 16 and len(prov["data_manifest_hash"]) == 16
    assert state["sampler_position"] == 3 and state["step"] == 3
    assert list((base / "save" / "tensorboard").glob("events.out.tfevents.*"))
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    r = cli_train(write_config(bf16, tiny_checkpoints["ti2v-5b"], demo, "ti2v-5b", "ti2v", iters=2,
                               dtype="bf16"))
    assert r.returncode == 0, r.stderr
    losses = [m["loss"] for m in metrics(bf16 / "save")]
    assert all(math.isfinite(x) for x in losses)


def test_divergence_stops_clearly(tmp_path, tiny_checkpoints, demo, monkeypatch):
    from wan_core.train.trainer import Trainer, TrainingDiverged

    cfg = load_config(write_config(tmp_path, tiny_checkpoints["t2v-a14b"], demo, "t2v-a14b", expert="high", iters=3))
    trainer = Trainer(cfg)
    monkeypatch.setattr(trainer, "loss", lambda batch: trainer.model.head.head.weight.sum() * float("nan"))
    with pytest.raises(TrainingDiverged, match="step 1: loss nan.*not finite"):
        trainer.train()


def test_bad_clip_at_run_time_is_skipped(tmp_path, demo, caplog):
    from wan_core.data.dataset import VideoClipDataset, entry_order
    from wan_core.data.manifest import validate_dataset

    entries = [r.entry for r in validate_dataset(demo / "data.txt")[0]]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    entries = [dict(entries[0], path=str(broken))] + entries[1:]
    dataset = VideoClipDataset(entries, 9, 32, 32, 16, seed=0)
    position = next(p for p in range(100) if entry_order(len(entries), 0, p) == 0)
    with caplog.at_level("WARNING"):
        item = dataset[position]
    assert item["entry"] == 1 and item["video"].shape == (3, 9, 32, 32)
    assert "skipping" in caplog.text and "broken.mp4" in caplog.text
    assert -1.0 <= float(item["video"].min()) and float(item["video"].max()) <= 1.0


def test_fsspec_save_path_and_resume_from_it(tmp_path, tiny_checkpoints, demo, monkeypatch):
    """A save_path URL (here fsspec's in-memory filesystem) receives complete checkpoints, pointer last,
    and a new trainer with an empty staging folder resumes from it."""
    import fsspec

    from wan_core.train.trainer import Trainer

    monkeypatch.setenv("WAN22_STAGING_DIR", str(tmp_path / "staging"))
    path = write_config(tmp_path, tiny_checkpoints["t2v-a14b"], demo, "t2v-a14b", expert="high", iters=4,
                        save_interval=2)
    fs = fsspec.filesystem("memory")
    url = f"memory://runs/{tmp_path.name}"
    Trainer(load_config(path, [f"save_path={url}", "train.iters=2"])).train()
    root = f"/runs/{tmp_path.name}"
    assert fs.cat_file(f"{root}/latest_checkpointed_iteration.txt").decode().strip() == "2"
    assert fs.exists(f"{root}/iter_0000002/.metadata") and fs.exists(f"{root}/metrics.jsonl")
    import shutil

    shutil.rmtree(tmp_path / "staging")  # a new pod: nothing local
    Trainer(load_config(path, [f"save_path={url}"])).train()
    assert fs.cat_file(f"{root}/latest_checkpointed_iteration.txt").decode().strip() == "4"
    lines = fs.cat_file(f"{root}/metrics.jsonl").decode().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]
    # the same run locally gives the same losses
    Trainer(load_config(path)).train()
    assert [json.loads(x)["loss"] for x in lines] == [m["loss"] for m in metrics(tmp_path / "save")]


def test_variable_resolution_and_caption_lists_train_and_resume_exactly(tmp_path, tiny_checkpoints):
    """MindSpeed-MM's dataset forms: clips of three aspect ratios at max_hxw (each keeps its shape, every
    micro-batch has one size), a list of captions (one drawn per sample), an absolute path; resume is exact."""
    from wan_core.data.dataset import VideoClipDataset, collate
    from wan_core.data.demo import render_clip
    from wan_core.data.video import write_video
    from wan_core.train.inputs import clip_dataset

    ds = tmp_path / "mixed"
    (ds / "videos").mkdir(parents=True)
    entries = []
    for i, (h, w) in enumerate([(32, 32), (32, 64), (64, 32), (32, 32), (32, 64), (64, 32)]):
        frames, cap = render_clip(i, 9, h, w)
        write_video(ds / "videos" / f"c{i}.mp4", frames, 16)
        path = str(ds / "videos" / f"c{i}.mp4") if i == 5 else f"videos/c{i}.mp4"
        entries.append({"path": path, "cap": [cap, f"clip {i}"] if i == 1 else cap, "num_frames": 9, "fps": 16,
                        "resolution": {"height": h, "width": w}})
    (ds / "data.json").write_text(json.dumps(entries))
    (tmp_path / "data.txt").write_text("mixed,mixed/data.json\n")
    overrides = ["data.max_hxw=1024", "train.micro_batch_size=2", "data.caption_dropout=0.0"]
    runs = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        runs[name] = write_config(tmp_path / name, tiny_checkpoints["t2v-a14b"], tmp_path, "t2v-a14b", expert="high",
                                  save_interval=1)
        cfg = yaml.safe_load(runs[name].read_text())
        cfg["data"]["data_txt"] = str(tmp_path / "data.txt")
        runs[name].write_text(yaml.safe_dump(cfg))
    cfg = load_config(runs["a"], overrides)
    dataset = clip_dataset(cfg, [dict(e, path=str(ds / "videos" / f"c{i}.mp4")) for i, e in enumerate(entries)])
    assert isinstance(dataset, VideoClipDataset)
    assert {s[1:] for s in dataset.sizes} == {(32, 32), (16, 32), (32, 16)}  # 32x64 at 1024 px: 22x45 -> 16x32
    shapes = set()
    for step in range(6):
        batch = collate([dataset[2 * step], dataset[2 * step + 1]])  # one micro-batch: one size
        shapes.add(tuple(batch["video"].shape[3:]))
    assert shapes == {(32, 32), (16, 32), (32, 16)}
    picks = {dataset[p]["caption"] for p in range(40) if dataset[p]["entry"] == 1}
    assert len(picks) == 2 and dataset[7]["caption"] == dataset[7]["caption"]  # both captions, same per position
    r = cli_train(runs["a"], "--set", "train.iters=2", *sum((["--set", o] for o in overrides), []))
    assert r.returncode == 0, r.stderr
    r = cli_train(runs["b"], "--set", "train.iters=1", *sum((["--set", o] for o in overrides), []))
    assert r.returncode == 0, r.stderr
    r = cli_train(runs["b"], "--set", "train.iters=2", *sum((["--set", o] for o in overrides), []))
    assert r.returncode == 0, r.stderr
    ma, mb = metrics(tmp_path / "a" / "save"), metrics(tmp_path / "b" / "save")
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb] and len(ma) == 2
    sa, wa = final_weights(tmp_path / "a" / "save")
    sb, wb = final_weights(tmp_path / "b" / "save")
    assert sa == sb == 2 and all(torch.equal(wa[k], wb[k]) for k in wa)
