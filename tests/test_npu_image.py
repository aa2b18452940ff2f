"""The npu image's CPU-only steps (validate, convert, consolidate, export and the pretrain submitter run on pods
that request no NPU, so no driver is mounted) with the real torch_npu wheel installed beside the project, as in
the image. Without care, `import torch` auto-loads torch_npu and diffusers imports it, and both fail there
(`Failed to load the backend extension: torch_npu`, vllm-ascend#1440). The wheel comes from `make test`
(.venv/wheels); it is installed into a folder on PYTHONPATH for these processes only."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.k8s.profiles import NPU_ENV_DEFAULTS

WHEELS = Path(sys.prefix) / "wheels"  # the venv's own folder


@pytest.fixture(scope="module")
def npu_site(tmp_path_factory):
    wheels = sorted(WHEELS.glob("torch_npu-2.13.0-*.whl"))
    assert wheels, f"no torch_npu wheel in {WHEELS}: `make test` downloads it (pip download torch_npu==2.13.0)"
    site = tmp_path_factory.mktemp("npu-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
                    str(wheels[-1])], check=True, capture_output=True, timeout=600)
    return site


def run(site, *args, extra=None, cwd=None):
    # the pod's environment: the npu profile's variables, no NPU visible, torch_npu importable
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND") and k != "TORCH_DEVICE_BACKEND_AUTOLOAD"}
    env.update(NPU_ENV_DEFAULTS, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", **(extra or {}))
    return subprocess.run([sys.executable, "-m", "wan_core", *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd)


def test_the_wheel_really_breaks_a_plain_import(npu_site):
    """What the image's pods would hit without the fix: torch's auto-loading of the installed backend fails."""
    env = {**os.environ, "PYTHONPATH": str(npu_site)}
    env.pop("TORCH_DEVICE_BACKEND_AUTOLOAD", None)
    r = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0 and "torch_npu" in r.stderr


def test_cpu_steps_run_beside_torch_npu(npu_site, tmp_path):
    r = run(npu_site, "make-tiny-checkpoint", "--variant", "ti2v-5b", "--output", str(tmp_path / "tiny"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(npu_site, "convert", "hf-to-mm", "--source", str(tmp_path / "tiny"), "--output", str(tmp_path / "mm"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(npu_site, "make-demo-dataset", "--output", str(tmp_path / "data"), "--videos", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(npu_site, "validate-dataset", "--data-txt", str(tmp_path / "data" / "data.txt"))
    assert r.returncode == 0, r.stderr[-2000:]
    # even without the image's TORCH_DEVICE_BACKEND_AUTOLOAD=0 (a kubectl user's own pod spec, say)
    r = run(npu_site, "convert", "mm-to-hf", "--source", str(tmp_path / "mm" / "transformer"), "--output",
            str(tmp_path / "hf"), extra={"TORCH_DEVICE_BACKEND_AUTOLOAD": "1"})
    assert r.returncode == 0, r.stderr[-2000:]


def test_visible_npus_without_a_driver_are_one_paragraph(npu_site, tmp_path):
    r = run(npu_site, "make-tiny-checkpoint", "--variant", "ti2v-5b", "--output", str(tmp_path / "tiny"))
    assert r.returncode == 0, r.stderr[-2000:]
    (tmp_path / "p.txt").write_text("a red circle\n")
    r = run(npu_site, "sample", "--model", str(tmp_path / "tiny"), "--prompts", str(tmp_path / "p.txt"), "--output",
            str(tmp_path / "out"), extra={"ASCEND_VISIBLE_DEVICES": "0"})
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "NPUs are visible here but torch_npu cannot load" in r.stderr and "Ascend driver" in r.stderr
    assert not (tmp_path / "out").exists()
