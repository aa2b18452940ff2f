"""Where wan22 pods run on a cluster: one typed description shared by every pipeline task, every kubectl
Job and the training job that the pretrain step submits, so a setting given once reaches all of them.

`Deployment` holds plain values only. The Kubeflow side (pipelines/profiles.py) turns its fields into
kfp-kubernetes calls and run parameters; the pretrain step rebuilds it from those run parameters and
hands it to the launcher; `pod_spec` below turns it into a Kubernetes pod."""
from __future__ import annotations

import dataclasses

from components.k8s.profiles import IMAGES, PROFILES, profile_env
from wan_core.errors import UserError

DATA_MOUNT = "/data"
NON_ROOT_UID = 1000
# keys of the storage Secret passed to pods as env vars of the same name (fsspec's s3 reads them)
STORAGE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Cluster settings. Empty strings mean "not set"; None for node_selector, tolerations and
    accelerator_resource means "the profile's"."""
    profile: str = "cpu"
    image: str = ""  # "" = the profile's published image
    image_pull_secret: str = ""
    pvc: str = "wan22-data"  # claim mounted at /data; "" = no data volume
    storage_secret: str = ""  # Secret whose keys become env vars (AWS_ACCESS_KEY_ID, ...) for fsspec URLs
    namespace: str = ""  # "" = the namespace of the pod that submits (or "default")
    service_account: str = ""  # of the training job's pods; "" = the namespace's default
    node_selector: dict | None = None
    tolerations: list | None = None
    accelerator_resource: str | None = None  # e.g. huawei.com/Ascend910; "" = request no accelerators
    devices_per_node: int = 0
    nnodes: int = 1
    volcano_queue: str = ""

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise UserError(f"unknown accelerator profile {self.profile!r}; choose npu, cuda or cpu")
        p = PROFILES[self.profile]
        fill = {"image": self.image or IMAGES[self.profile],
                "node_selector": dict(p["node_selector"]) if self.node_selector is None else dict(self.node_selector),
                "tolerations": [dict(t) for t in (p["tolerations"] if self.tolerations is None else self.tolerations)],
                "accelerator_resource": (p["resource"] or "") if self.accelerator_resource is None
                else self.accelerator_resource}
        for name, value in fill.items():
            object.__setattr__(self, name, value)
        for name in ("devices_per_node", "nnodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "nnodes" else 0):
                raise UserError(f"deployment {name}={value!r}: must be an integer of at least "
                                f"{1 if name == 'nnodes' else 0}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.node_selector.items()):
            raise UserError(f"deployment node_selector {self.node_selector!r}: keys and values must be strings")
        for t in self.tolerations:
            unknown = set(t) - TOLERATION_KEYS
            if unknown:
                raise UserError(f"deployment toleration {t!r}: unknown keys {sorted(unknown)}; allowed: "
                                f"{', '.join(sorted(TOLERATION_KEYS))}")

    @property
    def world_size(self) -> int:
        """Training processes: one per device on every node (one on a node without accelerators)."""
        return self.nnodes * max(1, self.devices_per_node)

    def replace(self, **changes) -> "Deployment":
        return dataclasses.replace(self, **changes)

    def plain_env(self) -> dict[str, str]:
        """The variables every wan22 container gets, whatever runs it (a pipeline task, a Job, a training pod):
        the profile's (validated) and HF_HUB_OFFLINE. The storage Secret's keys come on top, from the Secret."""
        return {**profile_env(self.profile), "HF_HUB_OFFLINE": "1"}

    def resources(self, devices: int) -> dict:
        """Requests = limits for `devices` accelerators (none when the profile or count has none)."""
        if not self.accelerator_resource or not devices:
            return {}
        return {"limits": {self.accelerator_resource: str(devices)},
                "requests": {self.accelerator_resource: str(devices)}}


TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def pod_env(deployment: Deployment) -> list[dict]:
    """The profile's variables (validated), HF_HUB_OFFLINE, and the storage Secret's keys."""
    env = [{"name": k, "value": str(v)} for k, v in deployment.plain_env().items()]
    if deployment.storage_secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": deployment.storage_secret, "key": key}}}
                for key in STORAGE_SECRET_KEYS]
    return env


def pod_spec(deployment: Deployment, command: list[str], devices: int = 0, restart_policy: str = "Never",
             container_name: str = "wan22") -> dict:
    """The pod every wan22 step or training node runs in, as a plain dict (no null fields): the
    deployment's image, resources, node selector, tolerations, secrets, service account and env; the
    data volume at /data; /dev/shm in memory; a non-root user. Checked with the Kubernetes client models."""
    from kubernetes import client

    container = {"name": container_name, "image": deployment.image, "command": list(command), "env": pod_env(deployment),
                 "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                 "securityContext": {"runAsNonRoot": True, "runAsUser": NON_ROOT_UID,
                                     "allowPrivilegeEscalation": False}}
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    resources = deployment.resources(devices)
    if resources:
        container["resources"] = resources
    if deployment.pvc:
        container["volumeMounts"].append({"name": "data", "mountPath": DATA_MOUNT})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": deployment.pvc}})
    pod = {"containers": [container], "volumes": volumes, "restartPolicy": restart_policy}
    if deployment.node_selector:
        pod["nodeSelector"] = dict(deployment.node_selector)
    if deployment.tolerations:
        pod["tolerations"] = [dict(t) for t in deployment.tolerations]
    if deployment.image_pull_secret:
        pod["imagePullSecrets"] = [{"name": deployment.image_pull_secret}]
    if deployment.service_account:
        pod["serviceAccountName"] = deployment.service_account
    # the client's models reject misspelt fields and wrong types before anything is printed or submitted
    checked = client.ApiClient()._ApiClient__deserialize(pod, "V1PodSpec")
    if client.ApiClient().sanitize_for_serialization(checked) != pod:
        raise ValueError(f"pod spec fields unknown to the Kubernetes client: {pod}")
    return pod
