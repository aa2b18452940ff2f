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
NON_ROOT_UID = 1000  # the images' user; also the fsGroup that makes a fresh volume writable for it
# what every pod we create carries: opt out of Istio's sidecar (it keeps torchrun's rendezvous from forming and a
# Job from completing in Kubeflow profile namespaces; kubeflow/trainer#2794), as label (Istio >= 1.10) and annotation
POD_LABELS = {"app.kubernetes.io/name": "wan22", "sidecar.istio.io/inject": "false"}
POD_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}
# CPU and memory every wan22 container asks for at least (never BestEffort, the first evicted); the steps that hold
# accelerators ask for more (TASK_REQUESTS in pipelines/profiles.py)
POD_REQUESTS = {"cpu": "1", "memory": "4Gi"}
# Ascend without Ascend Docker Runtime: the driver comes from the node (MindCluster's PyTorch job sample)
ASCEND_HOST_PATHS = {"ascend-driver": "/usr/local/Ascend/driver", "ascend-dcmi": "/usr/local/dcmi",
                     "npu-smi": "/usr/local/bin/npu-smi", "ascend-install-info": "/etc/ascend_install.info"}
# keys of the storage Secret passed to pods as env vars of the same name (s3fs / botocore read them); the endpoint
# (an S3-compatible store such as MinIO) and region are optional keys
STORAGE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
REQUIRED_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


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
    ascend_runtime: bool = True  # npu: Ascend Docker Runtime mounts the driver; False: pods mount it from the node
    supplemental_groups: tuple = ()  # e.g. the gid of HwHiAiUser on Ascend nodes, which CANN's files belong to
    arch: str = ""  # kubernetes.io/arch of the image (amd64, arm64); "" = any node

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
        if self.arch not in ("", "amd64", "arm64"):
            raise UserError(f"deployment arch={self.arch!r}: amd64, arm64 or empty (any node)")
        object.__setattr__(self, "supplemental_groups", tuple(self.supplemental_groups))
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
    """The profile's variables (validated), HF_HUB_OFFLINE, and the storage Secret's keys (an endpoint included,
    for S3-compatible stores such as MinIO)."""
    env = [{"name": k, "value": str(v)} for k, v in deployment.plain_env().items()]
    if deployment.storage_secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": deployment.storage_secret, "key": key,
                                                             "optional": key not in REQUIRED_SECRET_KEYS}}}
                for key in STORAGE_SECRET_KEYS]
    return env


GRACE_MARGIN_S = 30  # after training's checkpoint on SIGTERM: torchrun's shutdown and the process's exit


def termination_grace_s(stop_grace_s: int | None = None) -> int:
    """A training pod's terminationGracePeriodSeconds: Kubernetes sends SIGTERM, then SIGKILL after this long; the
    config's train.stop_grace_s (its default when None) for the step and its checkpoint, plus the margin."""
    if stop_grace_s is None:
        from wan_core.train.config import TrainSection

        stop_grace_s = TrainSection.model_fields["stop_grace_s"].default
    return stop_grace_s + GRACE_MARGIN_S


def pod_template(deployment: Deployment, command: list[str], devices: int = 0, restart_policy: str = "Never",
                 container_name: str = "wan22") -> dict:
    """The pod every wan22 step or training node runs in, as a plain dict (no null fields): metadata that opts out
    of sidecar injection, and `pod_spec`'s spec."""
    return {"metadata": {"labels": dict(POD_LABELS), "annotations": dict(POD_ANNOTATIONS)},
            "spec": pod_spec(deployment, command, devices, restart_policy, container_name)}


def pod_spec(deployment: Deployment, command: list[str], devices: int = 0, restart_policy: str = "Never",
             container_name: str = "wan22") -> dict:
    """The deployment's image, resources (CPU and memory requests, accelerators), node selector and architecture,
    tolerations, secrets, service account and env; the data volume at /data, writable by the non-root user through
    the pod's fsGroup; /dev/shm in memory; on Ascend without its container runtime, the node's driver. Checked with
    the Kubernetes client's models."""
    from kubernetes import client

    container = {"name": container_name, "image": deployment.image, "command": list(command), "env": pod_env(deployment),
                 "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                 "securityContext": {"runAsNonRoot": True, "runAsUser": NON_ROOT_UID,
                                     "allowPrivilegeEscalation": False}}
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    resources = deployment.resources(devices)
    container["resources"] = {"requests": {**POD_REQUESTS, **resources.get("requests", {})},
                              **({"limits": resources["limits"]} if "limits" in resources else {})}
    security = {"runAsNonRoot": True, "runAsUser": NON_ROOT_UID, "runAsGroup": NON_ROOT_UID}
    if deployment.pvc:
        container["volumeMounts"].append({"name": "data", "mountPath": DATA_MOUNT})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": deployment.pvc}})
        # a fresh volume's root is root-owned; the kubelet gives the pod's group write access once (not per start)
        security.update(fsGroup=NON_ROOT_UID, fsGroupChangePolicy="OnRootMismatch")
    if deployment.supplemental_groups:
        security["supplementalGroups"] = [int(g) for g in deployment.supplemental_groups]
    if deployment.profile == "npu" and devices and not deployment.ascend_runtime:
        for name, path in ASCEND_HOST_PATHS.items():
            volumes.append({"name": name, "hostPath": {"path": path}})
            container["volumeMounts"].append({"name": name, "mountPath": path, "readOnly": True})
        # the chips the device plugin gave this pod, as MindCluster's sample passes them
        container["env"].append({"name": "ASCEND_VISIBLE_DEVICES", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{deployment.accelerator_resource}']"}}})
    pod = {"containers": [container], "volumes": volumes, "restartPolicy": restart_policy, "securityContext": security}
    selector = dict(deployment.node_selector)
    if deployment.arch:
        selector["kubernetes.io/arch"] = deployment.arch
    if selector:
        pod["nodeSelector"] = selector
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
