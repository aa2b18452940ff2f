"""Kubernetes manifests for single steps (`wan22 k8s job STEP`), built with the official client models
so field names and types are checked, then serialised to plain dicts for YAML."""
from __future__ import annotations

import re

from kubernetes import client

from wan_core.device import PROFILES, profile_env
from wan_core.errors import UserError

STEPS = ("validate-dataset", "convert", "train", "consolidate", "export", "sample")
DATA_MOUNT = "/data"
NON_ROOT_UID = 1000


def _name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:52]
    if not name:
        raise UserError(f"cannot make a Kubernetes name from {text!r}")
    return name


def pod_spec(command: list[str], image: str, profile: str = "cpu", devices: int = 0, pvc: str | None = "wan22-data",
             env: dict | None = None, image_pull_secret: str | None = None, storage_secret: str | None = None,
             restart_policy: str = "Never", container_name: str = "wan22") -> client.V1PodSpec:
    """The pod every wan22 step runs in: the profile's resources, node selector, tolerations and env; the
    data volume at /data; /dev/shm in memory; a non-root user."""
    p = PROFILES.get(profile)
    if p is None:
        raise UserError(f"unknown profile {profile!r}; choose npu, cuda or cpu")
    resources = None
    if p["resource"] and devices:
        resources = client.V1ResourceRequirements(limits={p["resource"]: str(devices)},
                                                  requests={p["resource"]: str(devices)})
    envs = [client.V1EnvVar(name=k, value=str(v)) for k, v in {**profile_env(profile, env), "HF_HUB_OFFLINE": "1"}.items()]
    env_from = [client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name=storage_secret))] if storage_secret else None
    mounts = [client.V1VolumeMount(name="dshm", mount_path="/dev/shm")]
    volumes = [client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory"))]
    if pvc:
        mounts.append(client.V1VolumeMount(name="data", mount_path=DATA_MOUNT))
        volumes.append(client.V1Volume(name="data", persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
            claim_name=pvc)))
    container = client.V1Container(
        name=container_name, image=image, command=command, env=envs, env_from=env_from, resources=resources,
        volume_mounts=mounts,
        security_context=client.V1SecurityContext(run_as_non_root=True, run_as_user=NON_ROOT_UID,
                                                  allow_privilege_escalation=False))
    return client.V1PodSpec(
        containers=[container], volumes=volumes, restart_policy=restart_policy,
        node_selector=dict(p["node_selector"]) or None,
        tolerations=[client.V1Toleration(**t) for t in p["tolerations"]] or None,
        image_pull_secrets=[client.V1LocalObjectReference(name=image_pull_secret)] if image_pull_secret else None)


def step_job(step: str, args: list[str], image: str, profile: str = "cpu", devices: int = 0,
             pvc: str | None = "wan22-data", name: str | None = None, namespace: str | None = None, **kw) -> dict:
    """A batch/v1 Job running `wan22 STEP ARGS...` once (no retries: a failed step should be looked at)."""
    if step not in STEPS:
        raise UserError(f"unknown step {step!r}; choose one of {', '.join(STEPS)}")
    command = ["wan22", step, *args]
    job = client.V1Job(
        api_version="batch/v1", kind="Job",
        metadata=client.V1ObjectMeta(name=_name(name or f"wan22-{step}"), namespace=namespace,
                                     labels={"app.kubernetes.io/name": "wan22", "wan22/step": step}),
        spec=client.V1JobSpec(backoff_limit=0, ttl_seconds_after_finished=86400,
                              template=client.V1PodTemplateSpec(
                                  metadata=client.V1ObjectMeta(labels={"wan22/step": step}),
                                  spec=pod_spec(command, image, profile, devices, pvc, **kw))))
    return client.ApiClient().sanitize_for_serialization(job)
