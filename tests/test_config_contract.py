"""The training config as the run's one contract: one schema validates a document plus `a.b=c` overrides once,
the same document reaches every rank, every knob is reachable without code changes, and adding a knob is one
edit (the recipe in docs/architecture.md)."""
import json
from pathlib import Path

import pytest
import yaml
from pydantic import Field, create_model

from components.k8s.deployment import Deployment
from components.pretrain.step import planned_config, wiring
from wan_core.errors import UserError
from wan_core.train import config as config_module
from wan_core.train.config import LoraSettings, TrainSection, config_reference, load_config, resolve_document

ROOT = Path(__file__).resolve().parents[1]


def document(**train) -> str:
    return yaml.safe_dump({"model": {"variant": "ti2v-5b"}, "data": {"num_frames": 9, "height": 32, "width": 32},
                           "train": {"iters": 2, **train}})


def test_every_training_knob_is_reachable_from_overrides(tiny_checkpoints, tmp_path):
    overrides = ["train.activation_checkpointing=true", "train.grad_accum=2", "train.warmup=5", "train.compile=off",
                 "data.num_workers=1", "objective.shift=3.0", "parallel.cp=2", "train.lora.rank=8",
                 *wiring(str(tiny_checkpoints["ti2v-5b"]), "m.json", str(tmp_path / "save"))]
    cfg = planned_config(document(), overrides, Deployment(devices_per_node=2))
    assert (cfg.train.activation_checkpointing, cfg.train.grad_accum, cfg.train.warmup, cfg.train.compile) == \
        (True, 2, 5, "off")
    assert (cfg.data.num_workers, cfg.objective.shift, cfg.parallel.cp) == (1, 3.0, 2)
    # one class for LoRA, one default for alpha: a section given only a rank keeps alpha's default
    assert isinstance(cfg.train.lora, LoraSettings) and (cfg.train.lora.rank, cfg.train.lora.alpha) == (8, 16.0)
    assert TrainSection.model_fields["lora"].annotation == LoraSettings | None


def test_yaml_numbers_users_write_are_numbers(tiny_checkpoints, tmp_path):
    """YAML 1.1 reads `1e-4` as a string; the schema reads it as the number it is."""
    path = tmp_path / "train.yaml"
    path.write_text(f"model: {{from_pretrained: {tiny_checkpoints['ti2v-5b']}, variant: ti2v-5b}}\n"
                    "save_path: s\ndata: {data_txt: d.txt, num_frames: 9, height: 32, width: 32}\n"
                    "train: {lr: 1e-4, weight_decay: 1e-2}\n")
    cfg = load_config(path)
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.weight_decay == pytest.approx(1e-2)


def test_document_as_text_or_path_and_refusals(tmp_path):
    text = yaml.safe_dump({**yaml.safe_load(document()), "model": {"from_pretrained": "base", "variant": "ti2v-5b"},
                           "save_path": "s", "data": {"data_txt": "d.txt", "num_frames": 9, "height": 32, "width": 32}})
    path = tmp_path / "run.yaml"
    path.write_text(text)
    from_text, from_path = resolve_document(text), resolve_document(str(path), ["train.iters=7"])
    assert from_text.train.iters == 2 and from_path.train.iters == 7
    assert from_path.save_path == str(tmp_path / "s") and from_text.save_path == str(Path.cwd() / "s")
    for overrides, words in ((["train.grad_accum=0"], "train.grad_accum: must be at least 1, got 0"),
                             (["train.lora.dropout=1"], r"train.lora.dropout: must be in \[0, 1\), got 1"),
                             (["train.lora.rnak=4"], "train.lora.rnak: unknown key"),
                             (["parallel.ulysses_degree=2", "parallel.cp_algo=usp", "parallel.cp=4"], None)):
        if words is None:
            assert resolve_document(text, overrides).parallel.ulysses_degree == 2
            continue
        with pytest.raises(UserError, match=words):
            resolve_document(text, overrides)


def test_adding_a_knob_is_one_edit(tiny_checkpoints, tmp_path, monkeypatch):
    """The add-a-training-knob recipe: one Field in wan_core/train/config.py. Here that edit is made in memory
    (a section with one more field); with nothing else changed, the knob is set by a run's overrides, checked by the
    schema, written to the file every rank reads, read back there, and listed in the reference."""
    patched_train = create_model("TrainSection", __base__=TrainSection,
                                 dummy_knob=(int, Field(0, ge=0, description="a knob added by the recipe's test")))
    patched = create_model("TrainConfig", __base__=config_module.TrainConfig,
                           train=(patched_train, Field(default_factory=patched_train)))
    monkeypatch.setattr(config_module, "TrainConfig", patched)
    base = str(tiny_checkpoints["ti2v-5b"])
    cfg = planned_config(document(), ["train.dummy_knob=3", *wiring(base, "m.json", str(tmp_path / "save"))],
                         Deployment())
    assert cfg.train.dummy_knob == 3
    with pytest.raises(UserError, match="train.dummy_knob: must not be negative"):
        planned_config(document(), ["train.dummy_knob=-1", *wiring(base, "m.json", "s")], Deployment())
    rank_file = tmp_path / "train.yaml"  # what the pretrain step writes and every rank loads
    rank_file.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(rank_file).train.dummy_knob == 3
    assert "| `train.dummy_knob` | int | `0` | a knob added by the recipe's test (must not be negative) |" in \
        config_reference()


def test_the_reference_page_is_the_schema():
    assert (ROOT / "docs" / "training-config.md").read_text() == config_reference(), \
        "regenerate: python -c 'from wan_core.train.config import config_reference; print(config_reference(), end=\"\")'" \
        " > docs/training-config.md"


def test_the_pretrain_step_writes_the_document_every_rank_reads(tiny_checkpoints, tmp_path, artifact, monkeypatch):
    """The step writes one resolved file and starts `wan22 train --config` on it; the ranks read nothing else."""
    from components.pretrain import step

    started = []
    monkeypatch.setattr(step, "run_forwarding_sigterm", lambda cmd: started.append(cmd) or 0)
    save = tmp_path / "save"
    out = step.pretrain_step(document(), ["train.grad_accum=2", *wiring(str(tiny_checkpoints["ti2v-5b"]), "m.json",
                                                                       str(save))],
                             Deployment(devices_per_node=2), "local", "run", tmp_path / "c.html", lambda *a: None)
    (cmd,) = started
    assert out == str(save) and cmd[-4:] == ["--config", str(save / "train.yaml"), "--nproc", "2"]
    written = yaml.safe_load((save / "train.yaml").read_text())
    assert written == load_config(save / "train.yaml").to_dict() and written["train"]["grad_accum"] == 2
    assert json.dumps(written)  # plain data: the same on every rank, whatever reads it
