"""Docs that run: the README's walk-through, exactly as written, in a copy of the checkout's docs/, and
every example config in docs/examples/ loaded and checked as the train command would."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_walkthrough() -> list[str]:
    """The lines of the first bash block under '## Commands'."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Commands"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    """Each line in a fresh folder holding the checkout's docs/ (what a fresh clone has); `.venv/bin/` is
    this test's environment. A plain `.venv/bin/wan22 ARGS` / `mm-convert ARGS` line runs the entry point's own
    function in this process (what the script calls, without seconds of imports per line); any other line runs in
    bash."""
    import shlex

    from wan_core.cli import main, mm_convert_main

    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    bin_dir = Path(sys.executable).parent
    (tmp_path / ".venv").symlink_to(bin_dir.parent)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines = readme_walkthrough()
    assert len(lines) >= 12 and any(" train " in x for x in lines) and any(" sample " in x for x in lines)
    entry_points = {".venv/bin/wan22": main, ".venv/bin/mm-convert": mm_convert_main}
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[0] in entry_points and not set("|<>;&$`") & set(line.split("#")[0]):
            try:
                status = entry_points[words[0]](words[1:])
            except SystemExit as exc:  # --help
                status = exc.code
            out = capsys.readouterr()
            assert status in (0, None), f"{line}\n{out.out[-2000:]}\n{out.err[-2000:]}"
            continue
        r = subprocess.run(["bash", "-ec", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{line}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    tiny = tmp_path / "tiny"
    metrics = (tiny / "save" / "ti2v-5b-ti2v" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 6  # 4 steps, then resumed for steps 5 and 6
    assert (tiny / "samples" / "0000.mp4").is_file() and (tiny / "exported" / "model_index.json").is_file()
    assert (tiny / "mm-a14b" / "transformer_2").is_dir() and (tiny / "compiled" / "k8s" / "wan22-full.yaml").is_file()


@pytest.mark.parametrize("config", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "examples").rglob("*.yaml")))
def test_example_configs_load(config):
    """Every example is a valid config; the tiny ones point at the folders their header tells you to make."""
    from wan_core.train.config import load_config

    cfg = load_config(ROOT / config)
    # what the path says the file is (docs/examples/<5B|A14B>/<task>/<train|lora>[_tiny][_high|_low].yaml)
    _, _, size, task, name = Path(config).with_suffix("").parts
    expected_variant = {"5B": "ti2v-5b", "A14B": f"{task}-a14b"}[size]
    expected_expert = next((e for e in ("high", "low") if name.endswith("_" + e)), None)
    assert (cfg.model.variant, cfg.model.task, cfg.model.expert) == (expected_variant, task, expected_expert), config
    assert (cfg.train.lora is not None) == name.startswith("lora"), config
    if "tiny" in Path(config).name:
        header = (ROOT / config).read_text().splitlines()[0]
        assert "make-tiny-checkpoint" in header and "--output tiny/" in header
        assert Path(cfg.model.from_pretrained) == ROOT / "tiny" / f"tiny-{cfg.model.variant}"
        assert Path(cfg.data.data_txt) == ROOT / "tiny" / "dataset" / "data.txt"
        assert Path(cfg.save_path).parent == ROOT / "tiny" / "save"
