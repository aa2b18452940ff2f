"""Wan2.2 pre-training and sampling library (model, kernels, weights, data, training, sampling).

Nothing here imports kfp: `components/` adapts these functions to Kubeflow Pipelines.
"""
__version__ = "0.1.0"


def _without_absent_npus() -> None:
    """An image with torch_npu installed, on a pod without NPUs (the CPU-only steps of the npu image on a cluster):
    torch_npu cannot load there (no driver is mounted), yet torch would auto-load it at `import torch` and diffusers
    imports it whenever it is installed, so every step would fail before it starts. Before either is imported,
    mark it absent (`sys.modules[...] = None` is how Python spells "not installed") and switch torch's auto-loading
    off. With NPUs visible nothing changes; wan_core.device loads torch_npu itself and explains a failure."""
    import glob
    import importlib.util
    import os
    import sys

    if "torch_npu" in sys.modules or os.environ.get("ASCEND_VISIBLE_DEVICES") or glob.glob("/dev/davinci[0-9]*"):
        return
    if importlib.util.find_spec("torch_npu") is not None:
        sys.modules["torch_npu"] = None
        os.environ["TORCH_DEVICE_BACKEND_AUTOLOAD"] = "0"


_without_absent_npus()


def load_dit(path, dtype=None, device=None, shard_mesh=None):
    """Load a `WanDiT` from a diffusers transformer folder or an mm checkpoint folder (FSDP2-sharded over
    `shard_mesh` when given)."""
    from wan_core.weights.layouts import load_dit as _load_dit

    return _load_dit(path, dtype=dtype, device=device, shard_mesh=shard_mesh)


__all__ = ["load_dit", "__version__"]
