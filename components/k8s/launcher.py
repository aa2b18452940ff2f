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

from wan_core.errors import UserError
from components.k8s.deployment import Deployment, pod_spec
from components.k8s.manifests import k8s_name

KINDS = {
    "trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"),
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    "volcano": ("batch.volcano.sh", "v1alpha1", "jobs", "Job"),
}


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """One training job: its name, the command every node runs, and where it runs (image, volume,
    secrets, selectors, tolerations, accelerators, nodes and devices per node)."""
    name: str
    command: list[str]
    deployment: Deployment

    @property
    def namespace(self) -> str:
        return self.deployment.namespace or "default"


def job_name(run_id: str, step: str) -> str:
    """A stable name from the KFP run and task: a retried step finds its job again."""
    digest = hashlib.sha256(f"{run_id}/{step}".encode()).hexdigest()[:10]
    return k8s_name(f"wan22-{step}")[:40].rstrip("-") + f"-{digest}"


def _metadata(spec: LaunchSpec) -> dict:
    return {"name": spec.name, "namespace": spec.namespace, "labels": {"app.kubernetes.io/name": "wan22"}}


def _pod(spec: LaunchSpec, container_name: str, restart_policy: str = "Never") -> dict:
    d = spec.deployment
    return pod_spec(d, spec.command, d.devices_per_node, restart_policy, container_name)


def trainjob_manifest(spec: LaunchSpec) -> dict:
    """Trainer v2: the torch-distributed runtime; numProcPerNode explicit (Trainer counts only GPUs). The
    runtime patch carries what TrainJob's trainer block has no field for: volumes, selectors, secrets."""
    d = spec.deployment
    pod = _pod(spec, "node")
    container = pod["containers"][0]
    trainer = {"image": d.image, "command": spec.command, "numNodes": d.nnodes,
               "numProcPerNode": max(1, d.devices_per_node), "env": container["env"]}
    if container.get("resources"):
        trainer["resourcesPerNode"] = container["resources"]
    node_pod = {k: pod[k] for k in ("volumes", "nodeSelector", "tolerations", "imagePullSecrets", "serviceAccountName")
                if k in pod}
    node_pod["containers"] = [{"name": "node", "volumeMounts": container["volumeMounts"],
                               "securityContext": container["securityContext"]}]
    manifest = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": _metadata(spec),
        "spec": {
            "runtimeRef": {"name": "torch-distributed"}, "trainer": trainer,
            "runtimePatches": [{"manager": "wan22", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": "node", "template": {"spec": {"template": {"spec": node_pod}}}}]}}}}],
        },
    }
    if d.volcano_queue:
        manifest["metadata"]["annotations"] = {"scheduling.volcano.sh/queue-name": d.volcano_queue}
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
    template = {"spec": _pod(spec, "pytorch", "OnFailure")}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if spec.deployment.nnodes > 1:
        replicas["Worker"] = {"replicas": spec.deployment.nnodes - 1, "restartPolicy": "Never", "template": template}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": _metadata(spec),
            "spec": {"nprocPerNode": str(max(1, spec.deployment.devices_per_node)), "pytorchReplicaSpecs": replicas,
                     "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"}}}


def volcano_manifest(spec: LaunchSpec) -> dict:
    """Volcano's pytorch plugin sets MASTER_ADDR/PORT, WORLD_SIZE (= pods) and RANK (= pod index)."""
    pod = _pod(spec, "wan22")
    # Volcano sets no per-node process count: NPUS_PER_NODE (the MindSpeed-MM guide's name) tells wan22 train
    pod["containers"][0]["env"].append({"name": "NPUS_PER_NODE", "value": str(max(1, spec.deployment.devices_per_node))})
    tasks = [{"name": "master", "replicas": 1, "template": {"spec": pod}, "policies": [
        {"event": "TaskCompleted", "action": "CompleteJob"}]}]
    nnodes = spec.deployment.nnodes
    if nnodes > 1:
        tasks.append({"name": "worker", "replicas": nnodes - 1, "template": {"spec": pod}})
    return {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": _metadata(spec),
            "spec": {"schedulerName": "volcano", "minAvailable": nnodes, "queue": spec.deployment.volcano_queue or "default",
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
        except ValueError:  # not the main thread (tests): no SIGTERM handler, so a cancelled step leaves the job
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


def launch_training(deployment: Deployment, config_path, run_id: str, expert: str, launcher: str) -> None:
    """The pretrain step's cluster path: one job running `wan22 train --config ...` on every node, placed
    and sized by `deployment` (the pipeline run's settings)."""
    import os

    if not deployment.namespace:
        deployment = deployment.replace(namespace=_pod_namespace())
    # the KFP run's id names the job, so a retried step reattaches to it
    spec = LaunchSpec(name=job_name(run_id or os.environ.get("HOSTNAME", "local"), "train-" + (expert or "dit")),
                      command=["wan22", "train", "--config", str(config_path)], deployment=deployment)
    Launcher(ClusterApi(), launcher, timeout_s=float(os.environ.get("WAN22_TRAIN_TIMEOUT_S", 7 * 24 * 3600))).run(spec)


def _pod_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip()
    except OSError:
        return "default"
