"""Device, dtype and backend selection: the one place that knows about NPU / CUDA / CPU.

`torch_npu` is optional; it is imported only when installed and NPUs are visible, and only here (`wan_core`'s
package import marks it absent on a pod without NPUs, so torch and diffusers do not load it there either).
"""
from __future__ import annotations

import functools
import importlib.util

import torch


@functools.lru_cache(maxsize=1)
def torch_npu():
    """The `torch_npu` module when installed and an NPU is visible, else None (wan_core's import marked it absent on
    a pod without NPUs). A torch_npu that cannot load where NPUs are visible is one paragraph, not a traceback."""
    import sys

    if sys.modules.get("torch_npu", False) is None or importlib.util.find_spec("torch_npu") is None:
        return None
    try:
        import torch_npu as module  # noqa: F401  (registers the "npu" device with torch)
    except Exception as exc:  # noqa: BLE001 - a missing driver library shows up as OSError, ImportError, RuntimeError
        from wan_core.errors import UserError, plain_text

        raise UserError(f"NPUs are visible here but torch_npu cannot load ({plain_text(exc).splitlines()[0]}); is the "
                        "Ascend driver mounted into this pod (Ascend Docker Runtime on the node, or deploy with "
                        "--no-ascend-runtime so the pod mounts it) and is CANN's environment set?") from None
    try:
        return module if torch.npu.is_available() else None  # type: ignore[attr-defined]
    except Exception:  # a broken driver must not break CPU runs
        return None


def accelerator_type() -> str:
    """`npu`, `cuda` or `cpu`: the accelerator this process should use."""
    if torch_npu() is not None:
        return "npu"
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def default_device(local_rank: int = 0) -> torch.device:
    """The device this process computes on: accelerator number `local_rank` (its index on this node), or
    the CPU. Training ranks, sampling workers and single processes all ask here."""
    kind = accelerator_type()
    return torch.device("cpu") if kind == "cpu" else torch.device(kind, local_rank)


def distributed_backend(kind: str | None = None) -> str:
    """Collective backend for an accelerator type: hccl (NPU), nccl (CUDA), gloo (CPU)."""
    return {"npu": "hccl", "cuda": "nccl", "cpu": "gloo"}[kind or accelerator_type()]


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype_name(name: str | None, accelerator: bool) -> str:
    """The compute dtype a config or command names; None means the device's default: fp32 on the CPU
    (exact, comparable with references), bf16 on accelerators (what Wan2.2 is trained and served in)."""
    return name or ("bf16" if accelerator else "fp32")


def compute_dtype(name: str | None, device: torch.device) -> torch.dtype:
    return DTYPES[compute_dtype_name(name, device.type != "cpu")]


def compile_wanted(setting: str, device: torch.device) -> bool:
    """Whether to compile the transformer blocks: 'on', 'off', or 'auto' = on CUDA (measured on an H100: a
    5B-geometry block stack from 56% to 65% MFU). NPU graphs need torchair, which this project does not
    set up, so auto leaves NPU and CPU eager."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"compile must be auto, on or off, got {setting!r}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def loader_workers(setting: int | None, device: torch.device) -> int:
    """Data-loader worker processes: the config's number, else none on the CPU (decoding would take cores from
    the step) and up to 4 per process on accelerators, so decoding and the VAE's input overlap the step."""
    if setting is not None:
        return setting
    if device.type == "cpu":
        return 0
    import os

    from wan_core.config_fields import int_var

    local = int_var(os.environ, "LOCAL_WORLD_SIZE", 1) or 1
    return max(1, min(4, (os.cpu_count() or 2) // local - 1))
