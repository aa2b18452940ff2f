"""Multi-node training from the pretrain step: a Kubeflow Trainer v2 TrainJob (default), a Training
Operator PyTorchJob, or a Volcano Job, each running `wan22 train` on every node (wan22 reads the
launcher's variables and starts torchrun itself).

The launcher names the job from the run (so a retried step reattaches instead of starting over),
waits with a real timeout, streams node-0 logs once its pod runs, raises on failure, and deletes the
job when the step is cancelled (SIGTERM). All Kubernetes calls go through ClusterApi, one small class,
so tests replay recorded responses instead of talking to a cluster.
"""
from __future__ import annotations

import dataclasses
import hashlib
import signal
import sys
import time

from wan_core.device import IMAGES, PROFILES
from wan_core.errors import UserError
from wan_core.k8s.manifests import _name, pod_spec

KINDS = {
    "trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"),
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    "volcano": ("batch.volcano.sh", "v1alpha1", "jobs", "Job"),
}


@dataclasses.dataclass
class LaunchSpec:
    name: str
    namespace: str
    image: str
    command: list[str]
    nnodes: int
    nproc_per_node: int
    profile: str = "cpu"
    pvc: str | None = "wan22-data"
    image_pull_secret: str | None = None
    storage_secret: str | None = None
    service_account: str = "wan22-launcher"
    volcano_queue: str | None = None


def job_name(run_id: str, step: str) -> str:
    """A stable name from the KFP run and task: a retried step finds its job again."""
    digest = hashlib.sha256(f"{run_id}/{step}".encode()).hexdigest()[:10]
    return _name(f"wan22-{step}")[:40] + f"-{digest}"


def _pod(spec: LaunchSpec, container_name: str) -> dict:
    from kubernetes import client

    pod = pod_spec(spec.command, spec.image, spec.profile, spec.nproc_per_node, spec.pvc,
                   image_pull_secret=spec.image_pull_secret, storage_secret=spec.storage_secret,
                   restart_policy="Never" if container_name != "pytorch" else "OnFailure",
                   container_name=container_name)
    return client.ApiClient().sanitize_for_serialization(pod)


def trainjob_manifest(spec: LaunchSpec) -> dict:
    """Trainer v2: the torch-distributed runtime; numProcPerNode explicit (Trainer counts only GPUs)."""
    pod = _pod(spec, "node")
    container = pod["containers"][0]
    resource = PROFILES[spec.profile]["resource"]
    manifest = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": {"app.kubernetes.io/name": "wan22"}},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {"image": spec.image, "command": spec.command, "numNodes": spec.nnodes,
                        "numProcPerNode": spec.nproc_per_node, "env": container.get("env", []),
                        "resourcesPerNode": container.get("resources") or ({"limits": {resource: spec.nproc_per_node}}
                                                                           if resource else None)},
            "runtimePatches": [{"manager": "wan22", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": "node", "template": {"spec": {"template": {"spec": {
                    "volumes": pod["volumes"], "nodeSelector": pod.get("nodeSelector"),
                    "tolerations": pod.get("tolerations"), "imagePullSecrets": pod.get("imagePullSecrets"),
                    "containers": [{"name": "node", "volumeMounts": container["volumeMounts"]}]}}}}}]}}}}],
        },
    }
    if spec.volcano_queue:
        manifest["metadata"]["annotations"] = {"scheduling.volcano.sh/queue-name": spec.volcano_queue}
    _validate_trainjob(manifest)
    return manifest


def _validate_trainjob(manifest: dict) -> None:
    """Check against the Trainer API's own models: a field they do not know is dropped on the way in."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    parsed = TrainerV1alpha1TrainJob.from_dict(manifest).to_dict()
    lost = _missing_paths(manifest, parsed)
    if lost:
        raise ValueError(f"TrainJob fields unknown to the Trainer API: {lost[:3]}")


def _missing_paths(a, b, path=""):
    if isinstance(a, dict):
        out = []
        for k, v in a.items():
            if v is None:
                continue
            if not isinstance(b, dict) or k not in b:
                out.append(f"{path}.{k}")
            else:
                out += _missing_paths(v, b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        return [p for x, y in zip(a, b) for p in _missing_paths(x, y, path + "[]")]
    return []


def pytorchjob_manifest(spec: LaunchSpec) -> dict:
    template = {"spec": _pod(spec, "pytorch")}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if spec.nnodes > 1:
        replicas["Worker"] = {"replicas": spec.nnodes - 1, "restartPolicy": "Never", "template": template}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": spec.name, "namespace": spec.namespace},
            "spec": {"nprocPerNode": str(spec.nproc_per_node), "pytorchReplicaSpecs": replicas,
                     "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"}}}


def volcano_manifest(spec: LaunchSpec) -> dict:
    """Volcano's pytorch plugin sets MASTER_ADDR/PORT, WORLD_SIZE (= pods) and RANK (= pod index)."""
    pod = _pod(spec, "wan22")
    tasks = [{"name": "master", "replicas": 1, "template": {"spec": pod}, "policies": [
        {"event": "TaskCompleted", "action": "CompleteJob"}]}]
    if spec.nnodes > 1:
        tasks.append({"name": "worker", "replicas": spec.nnodes - 1, "template": {"spec": pod}})
    return {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job",
            "metadata": {"name": spec.name, "namespace": spec.namespace},
            "spec": {"schedulerName": "volcano", "minAvailable": spec.nnodes, "queue": spec.volcano_queue or "default",
                     "maxRetry": 0, "plugins": {"pytorch": ["--master=master", "--worker=worker", "--port=23456"],
                                                "svc": [], "env": []},
                     "policies": [{"event": "PodFailed", "action": "AbortJob"}], "tasks": tasks}}


MANIFESTS = {"trainjob": trainjob_manifest, "pytorchjob": pytorchjob_manifest, "volcano": volcano_manifest}


def rbac_manifests(namespace: str, kind: str = "trainjob", service_account: str = "wan22-launcher") -> list[dict]:
    """What the launcher needs: create/watch/delete its job kind, read pods and their logs."""
    group, _, plural, _ = KINDS[kind]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": service_account, "namespace": namespace},
         "rules": [{"apiGroups": [group], "resources": [plural],
                    "verbs": ["create", "get", "list", "watch", "delete"]},
                   {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": service_account, "namespace": namespace},
         "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": service_account}},
    ]


class ClusterApi:
    """The only code that talks to the Kubernetes API (in-cluster or kubeconfig credentials)."""

    def __init__(self):
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.custom, self.core = client.CustomObjectsApi(), client.CoreV1Api()

    def create(self, kind, namespace, body):
        group, version, plural, _ = KINDS[kind]
        return self.custom.create_namespaced_custom_object(group, version, namespace, plural, body)

    def get(self, kind, namespace, name):
        group, version, plural, _ = KINDS[kind]
        return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)

    def delete(self, kind, namespace, name):
        group, version, plural, _ = KINDS[kind]
        return self.custom.delete_namespaced_custom_object(group, version, namespace, plural, name,
                                                           propagation_policy="Foreground")

    def pods(self, namespace, selector):
        return self.core.list_namespaced_pod(namespace, label_selector=selector).items

    def log(self, namespace, pod, since_seconds=None):
        return self.core.read_namespaced_pod_log(pod, namespace, since_seconds=since_seconds)


def job_state(kind: str, obj: dict) -> str:
    """running | succeeded | failed, from each kind's status."""
    status = obj.get("status") or {}
    if kind == "volcano":
        phase = (status.get("state") or {}).get("phase", "")
        return {"Completed": "succeeded", "Failed": "failed", "Aborted": "failed", "Terminated": "failed"}.get(
            phase, "running")
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") in ("Complete", "Succeeded"):
            return "succeeded"
        if cond.get("type") == "Failed":
            return "failed"
    return "running"


def _node0_selector(kind: str, name: str) -> str:
    return {"trainjob": f"jobset.sigs.k8s.io/jobset-name={name},batch.kubernetes.io/job-completion-index=0",
            "pytorchjob": f"training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master",
            "volcano": f"volcano.sh/job-name={name},volcano.sh/task-spec=master"}[kind]


class Launcher:
    def __init__(self, api, kind: str, poll_s: float = 10.0, timeout_s: float = 7 * 24 * 3600, out=sys.stdout,
                 clock=time.monotonic, sleep=time.sleep):
        if kind not in KINDS:
            raise UserError(f"unknown launcher {kind!r}; choose trainjob, pytorchjob or volcano (or local)")
        self.api, self.kind, self.poll_s, self.timeout_s, self.out = api, kind, poll_s, timeout_s, out
        self.clock, self.sleep = clock, sleep

    def submit(self, spec: LaunchSpec) -> dict:
        """Create the job, or reattach to the one a previous attempt of this step created."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.create(self.kind, spec.namespace, MANIFESTS[self.kind](spec))
        except ApiException as exc:
            if exc.status == 409:
                print(f"[launcher] {spec.name} exists: reattaching", file=self.out, flush=True)
                return self.api.get(self.kind, spec.namespace, spec.name)
            raise

    def run(self, spec: LaunchSpec) -> None:
        """Submit, wait, stream node-0 logs; raise on failure or timeout; delete the job if cancelled."""
        self.submit(spec)
        previous = signal.getsignal(signal.SIGTERM)

        def cancel(signum, frame):
            print(f"[launcher] cancelled: deleting {spec.name}", file=self.out, flush=True)
            self.api.delete(self.kind, spec.namespace, spec.name)
            raise SystemExit(143)

        try:
            signal.signal(signal.SIGTERM, cancel)
        except ValueError:  # not the main thread (tests): cancellation comes through cancel_on_signal
            pass
        try:
            self._wait(spec)
        finally:
            try:
                signal.signal(signal.SIGTERM, previous)
            except ValueError:
                pass

    def _wait(self, spec: LaunchSpec) -> None:
        start, shown = self.clock(), 0
        while True:
            state = job_state(self.kind, self.api.get(self.kind, spec.namespace, spec.name))
            shown = self._stream_logs(spec, shown)
            if state == "succeeded":
                print(f"[launcher] {spec.name} succeeded", file=self.out, flush=True)
                return
            if state == "failed":
                raise UserError(f"training job {self.kind}/{spec.name} failed; its pods are kept for debugging "
                                f"(kubectl -n {spec.namespace} describe {KINDS[self.kind][2]} {spec.name})")
            if self.clock() - start > self.timeout_s:
                self.api.delete(self.kind, spec.namespace, spec.name)
                raise UserError(f"training job {spec.name} did not finish within {self.timeout_s:.0f} s; deleted it")
            self.sleep(self.poll_s)

    def _stream_logs(self, spec: LaunchSpec, shown: int) -> int:
        """Print node-0's log lines not printed yet (once its pod runs)."""
        pods = [p for p in self.api.pods(spec.namespace, _node0_selector(self.kind, spec.name))
                if getattr(getattr(p, "status", None), "phase", None) in ("Running", "Succeeded", "Failed")]
        if not pods:
            return shown
        lines = (self.api.log(spec.namespace, pods[0].metadata.name) or "").splitlines()
        for line in lines[shown:]:
            print(line, file=self.out)
        return max(shown, len(lines))


def launch_training(params: dict, config_path) -> None:
    """The pretrain step's cluster path: one job running `wan22 train --config ...` on every node."""
    import os

    namespace = os.environ.get("WAN22_NAMESPACE") or _pod_namespace()
    # the KFP run's id names the job, so a retried step reattaches to it
    run_id = params.get("run_id") or os.environ.get("HOSTNAME", "local")
    spec = LaunchSpec(
        name=job_name(run_id, "train-" + (params.get("expert") or "dit")), namespace=namespace,
        image=params.get("image") or IMAGES.get(params.get("accelerator", "cpu"), IMAGES["cpu"]),
        command=["wan22", "train", "--config", str(config_path)], nnodes=int(params["nnodes"]),
        nproc_per_node=int(params["nproc"]), profile=params.get("accelerator", "cpu"),
        pvc=os.environ.get("WAN22_PVC", "wan22-data"), image_pull_secret=os.environ.get("WAN22_IMAGE_PULL_SECRET"),
        storage_secret=os.environ.get("WAN22_STORAGE_SECRET"), volcano_queue=os.environ.get("WAN22_VOLCANO_QUEUE"))
    Launcher(ClusterApi(), params["launcher"], timeout_s=float(os.environ.get("WAN22_TRAIN_TIMEOUT_S", 7 * 24 * 3600))
             ).run(spec)


def _pod_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip()
    except OSError:
        return "default"
