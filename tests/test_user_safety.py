"""Bad input as a new user gives it: every case ends with its exit status, one paragraph without a
traceback, and the file system as it was (the user's files intact, no partial outputs, nothing
hidden beside them)."""
import json
import os
from pathlib import Path

import pytest

from wan_core.fsutil import MARKER


@pytest.fixture
def wan22(capsys):
    """The wan22 command in this process: (exit status, stderr)."""
    from wan_core.cli import main

    def run(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse refusals
            code = exc.code
        raw = capsys.readouterr().err.strip()
        if code:  # one paragraph: no blank line, no traceback, no usage block
            assert "\n\n" not in raw and "Traceback" not in raw and "usage:" not in raw, raw
        return code, " ".join(raw.split())

    return run


def one_paragraph(err: str) -> bool:
    return err.startswith("error: ")


def siblings(folder: Path) -> list[str]:
    """What lies beside an output folder (temporary folders would show up here)."""
    return sorted(p.name for p in folder.parent.iterdir())


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\n")
    return path


def commands(tiny, prompts, target):
    """Each writing command with `target` as its output folder."""
    return {
        "make-tiny-checkpoint": ["make-tiny-checkpoint", "--variant", "ti2v-5b", "--out", target],
        "make-demo-dataset": ["make-demo-dataset", "--out", target, "--videos", "1"],
        "convert": ["convert", "hf-to-mm", "--source", tiny, "--target", target, "--quiet"],
        "sample": ["sample", "--model", tiny, "--prompts", prompts, "--size", "5", "32", "32", "--steps", "1",
                   "--output", target],
    }


@pytest.mark.parametrize("command", ["make-tiny-checkpoint", "make-demo-dataset", "convert", "sample"])
def test_a_users_folder_is_never_replaced(command, wan22, tmp_path, tiny_checkpoints, prompts):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep")
    before = siblings(target)
    code, err = wan22(*commands(tiny_checkpoints["ti2v-5b"], prompts, target)[command])
    assert code == 2 and one_paragraph(err) and "not an output of wan22" in err, err
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"] and (target / "notes.txt").read_text() == "keep"
    assert siblings(target) == before


@pytest.mark.parametrize("command", ["make-tiny-checkpoint", "make-demo-dataset", "convert", "sample"])
def test_a_file_where_a_folder_goes_is_refused(command, wan22, tmp_path, tiny_checkpoints, prompts):
    target = tmp_path / "a-file"
    target.write_text("keep")
    code, err = wan22(*commands(tiny_checkpoints["ti2v-5b"], prompts, target)[command])
    assert code == 2 and one_paragraph(err) and "exists and is not a folder" in err, err
    assert target.is_file() and target.read_text() == "keep"
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_overwrite_replaces_only_our_own_output(wan22, tmp_path, tiny_checkpoints):
    out = tmp_path / "demo"
    assert wan22("make-demo-dataset", "--out", out, "--videos", "2")[0] == 0
    assert json.loads((out / MARKER).read_text()) == {"command": "make-demo-dataset"}
    code, err = wan22("make-demo-dataset", "--out", out, "--videos", "1")
    assert code == 2 and "pass --overwrite" in err and len(list((out / "videos").iterdir())) == 2
    assert wan22("make-demo-dataset", "--out", out, "--videos", "1", "--overwrite")[0] == 0
    assert len(list((out / "videos").iterdir())) == 1  # replaced, not merged
    # another command's output is not "ours", even with --overwrite
    code, err = wan22("convert", "hf-to-mm", "--source", tiny_checkpoints["ti2v-5b"], "--target", out, "--overwrite")
    assert code == 2 and "an output of `wan22 make-demo-dataset`" in err
    assert siblings(out) == ["demo"]


def test_files_follow_the_umask(wan22, tmp_path):
    old = os.umask(0o022)
    try:
        assert wan22("make-tiny-checkpoint", "--variant", "ti2v-5b", "--out", tmp_path / "t")[0] == 0
    finally:
        os.umask(old)
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "t").rglob("*")}
    assert modes == {0o644, 0o755}, modes


def test_sample_set_appears_whole_or_not_at_all(wan22, tmp_path, tiny_checkpoints, monkeypatch):
    tiny = tiny_checkpoints["ti2v-5b"]
    two, one = tmp_path / "two.txt", tmp_path / "one.txt"
    two.write_text("a red circle\na blue square\n")
    one.write_text("a green triangle\n")
    out = tmp_path / "samples"
    common = ["--model", tiny, "--size", "5", "32", "32", "--steps", "1", "--output", out]
    assert wan22("sample", "--prompts", two, *common)[0] == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["0000.mp4", "0001.mp4"]
    # a new set replaces the old one whole: one prompt, one mp4
    assert wan22("sample", "--prompts", one, *common, "--overwrite")[0] == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["0000.mp4"]
    assert [s["prompt"] for s in json.loads((out / "samples.json").read_text())["samples"]] == ["a green triangle"]
    # Ctrl-C in the middle: the earlier set stays, no partial set, no temporary folder
    import wan_core.sample.outputs as outputs

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "save_sample", interrupted)
    code, err = wan22("sample", "--prompts", two, *common, "--overwrite")
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in out.glob("*.mp4")) == ["0000.mp4"] and siblings(out) == sorted(
        ["samples", "one.txt", "two.txt"])
    # a failure before any sampling leaves no folder at all
    code, err = wan22("sample", "--prompts", one, *common[:-1], tmp_path / "new", "--images", tmp_path / "none.txt")
    assert code == 2 and one_paragraph(err) and not (tmp_path / "new").exists()


@pytest.mark.parametrize("args, names", [
    (["sample", "--steps", "0"], "--steps: 0 is out of range"),
    (["sample", "--steps", "-2"], "--steps: -2 is out of range"),
    (["sample", "--seed", "x"], "--seed: 'x' is not an integer"),
    (["train", "--nproc", "0"], "--nproc: 0 is out of range"),
    (["make-demo-dataset", "--out", "d", "--videos", "0"], "--videos: 0 is out of range"),
    (["k8s", "train-job", "--config", "c", "--nnodes", "0"], "--nnodes: 0 is out of range"),
    (["k8s", "job", "sample", "--devices-per-node", "-1"], "--devices-per-node: -1 is out of range"),
    (["pipeline", "run", "--iters", "0"], "--iters: 0 is out of range"),
    (["k8s", "job", "sample", "--", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
])
def test_bad_numbers_are_refused_before_any_work(args, names, wan22):
    code, err = wan22(*args)
    assert code == 2 and one_paragraph(err) and names in err, err


def test_pipeline_run_checks_its_layout_before_starting(wan22, tmp_path):
    code, err = wan22("pipeline", "run", "--workdir", tmp_path / "r", "--nproc", "2", "--cp", "3")
    assert code == 2 and one_paragraph(err) and "parallel.cp=3 must divide" in err
    code, err = wan22("pipeline", "run", "--workdir", tmp_path / "r", "--nproc", "4", "--cp", "4", "--cp-algo", "usp",
                      "--ulysses-degree", "3")
    assert code == 2 and "ulysses_degree=3 must divide" in err
    assert not (tmp_path / "r").exists()


def test_os_errors_are_one_paragraph(wan22, tmp_path, tiny_checkpoints, demo_dataset):
    code, err = wan22("make-demo-dataset", "--out", "/proc/wan22-demo")
    assert code == 2 and one_paragraph(err) and "cannot write /proc/wan22-demo" in err, err
    folder = tmp_path / "folder"
    folder.mkdir()
    code, err = wan22("validate-dataset", "--data-txt", demo_dataset / "data.txt", "--manifest-out", folder)
    assert code == 2 and one_paragraph(err) and "is a folder" in err, err
    afile = tmp_path / "afile"
    afile.write_text("keep")
    code, err = wan22("pipeline", "compile", "--out", afile)
    assert code == 2 and one_paragraph(err) and "exists and is not a folder" in err and afile.read_text() == "keep"
    code, err = wan22("convert", "hf-to-mm", "--source", tmp_path / "missing", "--target", tmp_path / "x")
    assert code == 2 and one_paragraph(err) and str(tmp_path / "missing") in err and "Errno" not in err


def test_mindspeed_configs_name_the_bad_field(wan22, tmp_path, tiny_checkpoints):
    inference = tmp_path / "inference_model.json"
    inference.write_text(json.dumps({"from_pretrained": str(tiny_checkpoints["ti2v-5b"]), "prompt": "p.txt",
                                     "save_path": "out", "pipeline_config": {"input_size": "5x32x32"}}))
    code, err = wan22("sample", "--config", inference)
    assert code == 2 and one_paragraph(err) and "pipeline_config.input_size must be a list" in err, err
    data, model = tmp_path / "data.json", tmp_path / "model.json"
    data.write_text(json.dumps({"dataset_param": 5}))
    model.write_text(json.dumps({"predictor": {"in_dim": 48}}))
    code, err = wan22("train", "--mm-data", data, "--mm-model", model)
    assert code == 2 and one_paragraph(err) and "dataset_param must be an object, got 5" in err, err


def test_export_refuses_an_expert_for_a_one_expert_model(wan22, tmp_path, tiny_checkpoints):
    tiny = tiny_checkpoints["ti2v-5b"]
    assert wan22("convert", "hf-to-mm", "--source", tiny, "--target", tmp_path / "mm", "--quiet")[0] == 0
    code, err = wan22("export", "--source", tmp_path / "mm" / "transformer", "--base", tiny, "--expert", "high",
                      "--target", tmp_path / "out")
    assert code == 2 and "apply to A14B's two experts only" in err and not (tmp_path / "out").exists()


def test_help_shows_defaults(capsys):
    from wan_core.cli import main

    for command in (["sample"], ["pipeline", "run"], ["consolidate"], ["make-demo-dataset"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: " in text
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED seed of the first prompt; prompt i uses seed + i;" in text and "(default: 0; with --config, " \
        "1234 as Megatron's)" in text
    assert "--nproc NPROC processes (one device each); same files as one process (default: 1)" in text
