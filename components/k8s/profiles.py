"""Accelerator profiles: what a pod of each kind needs on Kubernetes (resource name, environment, node
selector, tolerations, default image). Torch-free, so that the command line and the pipelines can read
them without importing torch; wan_core.device picks the device a process computes on."""
from __future__ import annotations

from wan_core import __version__
from wan_core.errors import UserError

# NPU variables and their documented ranges (MindSpeed-MM's Wan2.2 guide, "环境变量声明"). HCCL's
# connect timeout defaults to 600 s rather than 120 s: slow image pulls make ranks start apart.
NPU_ENV_DEFAULTS = {
    "HCCL_CONNECT_TIMEOUT": "600",
    "HCCL_EXEC_TIMEOUT": "1800",
    "PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True",
    "TASK_QUEUE_ENABLE": "2",
    "CPU_AFFINITY_CONF": "1",
    "MULTI_STREAM_MEMORY_REUSE": "2",
    "ACLNN_CACHE_LIMIT": "100000",
    "ASCEND_LAUNCH_BLOCKING": "0",
    "COMBINED_ENABLE": "1",
    # torch would load torch_npu at `import torch`, which fails on the CPU-only pods of a run (no driver there);
    # wan_core.device loads it where NPUs are visible
    "TORCH_DEVICE_BACKEND_AUTOLOAD": "0",
}
NPU_ENV_RANGES = {  # name: (allowed integer range) or allowed values
    "HCCL_CONNECT_TIMEOUT": range(120, 7201),
    "HCCL_EXEC_TIMEOUT": range(68, 17341),
    "TASK_QUEUE_ENABLE": {"0", "1", "2"},
    "CPU_AFFINITY_CONF": {"0", "1", "2"},
    "COMBINED_ENABLE": {"0", "1"},
    "ASCEND_LAUNCH_BLOCKING": {"0", "1"},
    "TORCH_DEVICE_BACKEND_AUTOLOAD": {"0", "1"},
}

PROFILES = {
    "npu": {"resource": "huawei.com/Ascend910", "env": NPU_ENV_DEFAULTS, "node_selector": {"accelerator": "huawei-Ascend910"},
            "tolerations": [{"key": "huawei.com/Ascend910", "operator": "Exists", "effect": "NoSchedule"}]},
    "cuda": {"resource": "nvidia.com/gpu", "env": {"NCCL_DEBUG": "WARN"}, "node_selector": {},
             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    "cpu": {"resource": None, "env": {}, "node_selector": {}, "tolerations": []},
}


# default container image per profile (images/<kind>/Dockerfile; override with --image or the `image` run parameter)
IMAGES = {kind: f"ghcr.io/wan22-kubeflow/wan22:{__version__}-{kind}" for kind in PROFILES}


def validate_npu_env(env: dict) -> list[str]:
    """Problems with NPU variables set in `env` (empty when all are in their documented ranges)."""
    problems = []
    for name, allowed in NPU_ENV_RANGES.items():
        value = env.get(name)
        if value is None:
            continue
        if isinstance(allowed, range):
            if not str(value).strip().isdigit() or int(value) not in allowed:
                problems.append(f"{name}={value!r} is outside the documented range [{allowed.start}, {allowed.stop - 1}]")
        elif str(value) not in allowed:
            problems.append(f"{name}={value!r} is not one of {', '.join(sorted(allowed))}")
    return problems


def profile_env(kind: str, overrides: dict | None = None) -> dict:
    """The environment of a profile with the user's overrides on top, validated."""
    if kind not in PROFILES:
        raise UserError(f"unknown accelerator profile {kind!r}; choose npu, cuda or cpu")
    env = {**PROFILES[kind]["env"], **(overrides or {})}
    problems = validate_npu_env(env) if kind == "npu" else []
    if problems:
        raise UserError("; ".join(problems))
    return env
