"""Applying an accelerator profile and the shared volume to pipeline tasks (kfp-kubernetes).

The profiles themselves - resource names, NPU environment defaults and their ranges - live in
wan_core.device; this module only applies them to tasks."""
from __future__ import annotations

import dataclasses

from kfp import kubernetes

from wan_core.device import PROFILES, profile_env

DATA_MOUNT = "/data"


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Compile-time choices: which profile's env vars, how the data volume is attached, which secrets."""
    profile: str = "cpu"
    volume: str = "pvc"  # pvc (an existing claim named by a run parameter) | none
    storage_secret: str | None = None  # env vars (AWS_ACCESS_KEY_ID, ...) for fsspec object storage
    image_pull_secret: str | None = None


def apply(task, deployment: Deployment, pvc_name=None, node_selector=None, tolerations=None, devices=None,
          accelerator_resource=None, heavy: bool = False):
    """Volume, /dev/shm, env vars, secrets; for heavy (accelerator) steps also resources, node selector
    and tolerations - the last three as run parameters."""
    task.set_caching_options(False)  # steps write to the shared volume: never reuse a cached result
    if deployment.volume == "pvc" and pvc_name is not None:
        kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=DATA_MOUNT)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    for name, value in profile_env(deployment.profile).items():
        task.set_env_variable(name, value)
    task.set_env_variable("HF_HUB_OFFLINE", "1")
    if deployment.storage_secret:
        kubernetes.use_secret_as_env(task, secret_name=deployment.storage_secret, secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})
    if deployment.image_pull_secret:
        kubernetes.set_image_pull_secrets(task, [deployment.image_pull_secret])
    if heavy:
        if PROFILES[deployment.profile]["resource"] and accelerator_resource is not None:
            task.set_accelerator_type(accelerator_resource)
            task.set_accelerator_limit(devices)
        if node_selector is not None:
            kubernetes.add_node_selector_json(task, node_selector_json=node_selector)
        if tolerations is not None:
            kubernetes.add_toleration_json(task, toleration_json=tolerations)
    return task


def profile_defaults(profile: str) -> dict:
    p = PROFILES[profile]
    return {"accelerator_resource": p["resource"] or "", "node_selector": dict(p["node_selector"]),
            "tolerations": list(p["tolerations"])}
