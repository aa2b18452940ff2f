"""The accelerator paths that can be checked on CPU: regional compilation gives the same numbers as eager, the
device rules for compilation and loader workers, and the GPU benchmark's reduced form."""
import os
import subprocess
import sys

import pytest
import torch

from wan_core.device import compile_wanted, loader_workers
from wan_core.model import WanConfig, WanDiT


def test_compiled_blocks_equal_eager_forward_and_backward():
    torch.manual_seed(0)
    eager = WanDiT(WanConfig.from_preset("tiny-ti2v"))
    compiled = WanDiT(WanConfig.from_preset("tiny-ti2v"))
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks()  # inductor on CPU, as CUDA would use it
    x = torch.randn(1, 48, 3, 8, 8)
    t = torch.tensor([700.0])
    text = torch.randn(1, 7, 32)
    outs, grads = [], []
    for model in (eager, compiled):
        out = model(x, t, text)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in compiled.blocks)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5)


def test_device_rules():
    import types

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    npu = types.SimpleNamespace(type="npu")  # torch.device("npu") exists only with torch_npu installed
    assert [compile_wanted("auto", d) for d in (cpu, cuda, npu)] == [False, True, False]
    assert compile_wanted("on", cpu) and not compile_wanted("off", cuda)
    with pytest.raises(ValueError):
        compile_wanted("yes", cpu)
    assert loader_workers(None, cpu) == 0 and loader_workers(3, cpu) == 3


@pytest.mark.parametrize("cores, per_node, workers", [(16, 2, 4), (12, 4, 2), (8, 4, 1), (4, 8, 1), (64, 8, 4)])
def test_loader_workers_share_the_node(cores, per_node, workers, monkeypatch):
    """On accelerators each process gets its share of the node's cores less one for the step, 1 to 4 workers."""
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(per_node))
    assert loader_workers(None, torch.device("cuda", 0)) == workers


@pytest.mark.benchmark
def test_gpu_benchmark_runs_reduced_on_cpu():
    """benchmarks/gpu.py end to end at a reduced geometry (the same code the H100 run takes)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "gpu.py"), "--reduced"], capture_output=True,
                       text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("|")]
    for what in ("5b forward", "5b train step", "a14b 2-block forward", "cfg sampling step", "online encoding",
                 "feature cache"):
        assert any(what in line for line in lines), (what, r.stdout)
