import json

import pytest
import yaml

from components.pretrain import pretrain
from wan_core.errors import UserError

DOCUMENT = yaml.safe_dump({"model": {"variant": "t2v-a14b"}, "data": {"num_frames": 9, "height": 32, "width": 32},
                           "train": {"iters": 2, "save_interval": 1, "lr": 1e-3}})


def params(tmp_path, ckpt, demo_dataset, train_set=(), **over):
    manifest = tmp_path / "manifest.json"
    from wan_core.data.manifest import validate_dataset

    manifest.write_text(json.dumps([r.entry for r in validate_dataset(demo_dataset / "data.txt")[0]]))
    p = dict(train_config=DOCUMENT, train_set=list(train_set), base_model=str(ckpt), expert="high",
             manifest=str(manifest), save_path="train", load_path="", devices_per_node=1, nnodes=1, launcher="local",
             workdir=str(tmp_path))
    p.update(over)
    return p


def test_trains_locally_and_reports(tmp_path, tiny_checkpoints, demo_dataset, artifact):
    curve, metrics = artifact("curve.html"), artifact("metrics")
    out = pretrain.python_func(**params(tmp_path, tiny_checkpoints["t2v-a14b"], demo_dataset,
                                        train_set=["train.grad_accum=2"]), curve=curve, metrics=metrics)
    assert out == str(tmp_path / "train")
    assert (tmp_path / "train" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert metrics.metrics["steps"] == 2 and metrics.metrics["final_loss"] > 0
    assert "<svg" in open(curve.path).read() and "polyline" in open(curve.path).read()
    # the one file every rank read: the document, the run's override and the task's wiring
    resolved = json.loads((tmp_path / "train" / "config.resolved.json").read_text())
    assert resolved["train"]["grad_accum"] == 2 and resolved["model"]["expert"] == "high"
    assert resolved["data"]["manifest"] == str(tmp_path / "manifest.json") and resolved["data"]["data_txt"] is None


def test_training_failure_fails_the_step(tmp_path, tiny_checkpoints, demo_dataset, artifact):
    p = params(tmp_path, tiny_checkpoints["t2v-a14b"], demo_dataset, load_path=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="training failed"):
        pretrain.python_func(**p, curve=artifact("c.html"), metrics=artifact("m"))


def test_impossible_layout_fails_in_the_step_before_any_job_is_submitted(tmp_path, tiny_checkpoints, demo_dataset,
                                                                         artifact, monkeypatch):
    """The cluster path: 1 node x 3 devices cannot hold CP=2; nothing reaches the Kubernetes API."""
    import components.k8s.launcher as launcher

    calls = []

    class Submitted(Exception):
        pass

    def cluster_api():
        calls.append("api")
        raise Submitted

    monkeypatch.setattr(launcher, "ClusterApi", cluster_api)
    p = params(tmp_path, tiny_checkpoints["t2v-a14b"], demo_dataset, train_set=["parallel.cp=2"],
               launcher="trainjob", devices_per_node=3, nnodes=1, profile="cuda")
    with pytest.raises(UserError, match=r"parallel.cp=2 must divide the number of processes 3 \(valid: 1, 3\)"):
        pretrain.python_func(**p, curve=artifact("c.html"), metrics=artifact("m"))
    assert calls == [] and not (tmp_path / "train").exists()
    # and the same layout on 2 x 3 processes passes the check and goes on to submit
    p.update(nnodes=2)
    with pytest.raises(Submitted):
        pretrain.python_func(**p, curve=artifact("c2.html"), metrics=artifact("m2"))
    assert calls == ["api"]


def test_sigterm_reaches_the_training_process():
    """The step's pod receiving SIGTERM passes it on, so training can write its checkpoint (it exits 143 then)."""
    import os
    import signal
    import sys
    import threading
    import time

    from components.pretrain.step import run_forwarding_sigterm

    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(43))\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    before = signal.getsignal(signal.SIGTERM)
    threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    started = time.time()
    assert run_forwarding_sigterm([sys.executable, "-c", child]) == 43
    assert time.time() - started < 30
    assert signal.getsignal(signal.SIGTERM) == before  # this process's own handling is back
