import json

import pytest

from components.pretrain import pretrain
from wan_core.errors import UserError


def params(tmp_path, ckpt, demo_dataset, **over):
    manifest = tmp_path / "manifest.json"
    from wan_core.data.manifest import validate_dataset

    manifest.write_text(json.dumps([r.entry for r in validate_dataset(demo_dataset / "data.txt")[0]]))
    p = dict(base_model=str(ckpt), variant="t2v-a14b", task="", expert="high", manifest=str(manifest),
             save_path="train", load_path="", iters=2, save_interval=1, micro_batch_size=1, lr=1e-3, dtype="fp32",
             num_frames=9, height=32, width=32, fps=16.0, devices_per_node=1, nnodes=1, cp=1, cp_algo="ulysses",
             launcher="local", workdir=str(tmp_path))
    p.update(over)
    return p


def test_trains_locally_and_reports(tmp_path, tiny_checkpoints, demo_dataset, artifact):
    curve, metrics = artifact("curve.html"), artifact("metrics")
    out = pretrain.python_func(**params(tmp_path, tiny_checkpoints["t2v-a14b"], demo_dataset), curve=curve,
                               metrics=metrics)
    assert out == str(tmp_path / "train")
    assert (tmp_path / "train" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert metrics.metrics["steps"] == 2 and metrics.metrics["final_loss"] > 0
    assert "<svg" in open(curve.path).read() and "polyline" in open(curve.path).read()


def test_training_failure_fails_the_step(tmp_path, tiny_checkpoints, demo_dataset, artifact):
    p = params(tmp_path, tiny_checkpoints["t2v-a14b"], demo_dataset, load_path=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="training failed"):
        pretrain.python_func(**p, curve=artifact("c.html"), metrics=artifact("m"))
