"""Multi-node training from the pretrain step: a Kubeflow Trainer v2 TrainJob (default), a Training Operator
PyTorchJob, or a Volcano Job, each running `wan22 train` on every node (wan22 reads the launcher's variables and
starts torchrun itself).

The job's life follows the run, not the pod that submitted it:
- it is named from the run and step, with an attempt number: a retried step re-attaches to a running attempt,
  reuses a succeeded one, and starts the next attempt after a failed one (kept for its logs); training resumes
  from the last complete checkpoint on the volume;
- it is owned by the run's Argo Workflow, so deleting the run deletes it; stopping or terminating the run
  (SIGTERM while the workflow is shutting down) deletes it; a SIGTERM for any other reason (an eviction, a node
  drain) leaves it running for the retry to re-attach to.
Waiting watches the job (not polls) and looks at its pods on every tick: a pod that cannot start
(Unschedulable, an image that cannot be pulled, a volume that cannot be mounted, a crash loop) fails the step
after the start-up timeout with the cluster's own message. Node 0's log is followed by timestamp, so a rotated
log or a restarted container neither repeats nor skips lines; on failure the last lines of every failed pod are
printed. Transient API errors are retried with backoff. All Kubernetes calls go through ClusterApi, one small
class, so tests drive the launcher with a scripted API.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import signal
import sys
import time

from components.k8s.deployment import Deployment, pod_template, termination_grace_s
from components.k8s.manifests import k8s_name
from wan_core.errors import UserError

KINDS = {
    "trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"),
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    "volcano": ("batch.volcano.sh", "v1alpha1", "jobs", "Job"),
}
LAUNCHERS = ("local", *KINDS)  # local: torchrun in the pretrain step's own pod
# Trainer's webhook requires a domain-prefixed path for a runtime patch's manager (jobset.go, IsDomainPrefixedPath)
PATCH_MANAGER = "wan22.io/pretrain-launcher"
WORKFLOW = ("argoproj.io", "v1alpha1", "workflows", "Workflow")
MAX_ATTEMPTS = 20
FAILED_POD_LINES = 50
# waiting reasons that mean a pod will not start by itself
STUCK_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "CrashLoopBackOff")
STUCK_EVENTS = ("FailedScheduling", "FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox")


@dataclasses.dataclass(frozen=True)
class JobLimits:
    """How long a cluster job may take: to get every pod running, in all (the watcher deletes it after), and as the
    job's own activeDeadlineSeconds (the cluster stops it even without a watcher; 0: none)."""
    startup_timeout_s: int = 900
    timeout_s: int = 7 * 24 * 3600
    active_deadline_s: int = 0

    def __post_init__(self):
        for name in ("startup_timeout_s", "timeout_s"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1 second, got {getattr(self, name)}")
        if self.active_deadline_s < 0:
            raise UserError(f"active_deadline_s must not be negative (0: none), got {self.active_deadline_s}")


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """One training job: its name, the command every node runs, where it runs (image, volume, secrets, selectors,
    tolerations, accelerators, nodes and devices per node), its owner (the run's workflow) and its deadline."""
    name: str
    command: list[str]
    deployment: Deployment
    owner: dict | None = None  # an ownerReference
    active_deadline_s: int = 0  # 0: none
    grace_s: int = 60  # the training's train.stop_grace_s: SIGTERM to the checkpoint it writes

    @property
    def namespace(self) -> str:
        return self.deployment.namespace or "default"

    def attempt(self, n: int) -> "LaunchSpec":
        return dataclasses.replace(self, name=self.name if n == 0 else f"{self.name}-r{n}")


def job_name(run_id: str, step: str) -> str:
    """A stable name from the KFP run and task: a retried step finds its job again. Short enough that an attempt
    suffix and every pod name the controllers derive from it stay within 63 characters."""
    digest = hashlib.sha256(f"{run_id}/{step}".encode()).hexdigest()[:10]
    return k8s_name(f"wan22-{step}")[:28].rstrip("-") + f"-{digest}"


def check_launch(deployment: Deployment, launcher: str) -> None:
    """What a launcher cannot do with this deployment, refused before anything is submitted."""
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; choose {', '.join(LAUNCHERS)}")
    if launcher == "trainjob" and deployment.volcano_queue:
        raise UserError("volcano_queue: Trainer reads a Volcano queue only from a runtime with podGroupPolicy.volcano, "
                        "which torch-distributed has not; use launcher volcano (gang-scheduled in that queue) or "
                        "pytorchjob (its schedulingPolicy.queue), or leave volcano_queue empty")


def _metadata(spec: LaunchSpec) -> dict:
    meta = {"name": spec.name, "namespace": spec.namespace, "labels": {"app.kubernetes.io/name": "wan22"}}
    if spec.owner:
        meta["ownerReferences"] = [dict(spec.owner)]
    return meta


def _pod(spec: LaunchSpec, container_name: str, restart_policy: str = "Never") -> dict:
    d = spec.deployment
    template = pod_template(d, spec.command, d.devices_per_node, restart_policy, container_name)
    # Kubernetes sends SIGTERM, then SIGKILL after this: room for the step, the checkpoint and the exit
    template["spec"]["terminationGracePeriodSeconds"] = termination_grace_s(spec.grace_s)
    return template


def trainjob_manifest(spec: LaunchSpec) -> dict:
    """Trainer v2: the torch-distributed runtime; numProcPerNode explicit (Trainer counts only GPUs). The
    runtime patch carries what TrainJob's trainer block has no field for: pod metadata, volumes, selectors,
    secrets, the pod's security context."""
    d = spec.deployment
    check_launch(d, "trainjob")
    template = _pod(spec, "node")
    pod, container = template["spec"], template["spec"]["containers"][0]
    trainer = {"image": d.image, "command": spec.command, "numNodes": d.nnodes,
               "numProcPerNode": max(1, d.devices_per_node), "env": container["env"],
               "resourcesPerNode": container["resources"]}
    node_pod = {k: pod[k] for k in ("volumes", "nodeSelector", "tolerations", "imagePullSecrets", "serviceAccountName",
                                    "securityContext", "terminationGracePeriodSeconds") if k in pod}
    node_pod["containers"] = [{"name": "node", "volumeMounts": container["volumeMounts"],
                               "securityContext": container["securityContext"]}]
    manifest = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": _metadata(spec),
        "spec": {
            "runtimeRef": {"name": "torch-distributed"}, "trainer": trainer,
            "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
                "replicatedJobs": [{"name": "node", "template": {"spec": {"template": {
                    "metadata": template["metadata"], "spec": node_pod}}}}]}}}}],
        },
    }
    if spec.active_deadline_s:
        manifest["spec"]["activeDeadlineSeconds"] = spec.active_deadline_s
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
    d = spec.deployment
    template = _pod(spec, "pytorch", "OnFailure")
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if d.nnodes > 1:
        replicas["Worker"] = {"replicas": d.nnodes - 1, "restartPolicy": "Never", "template": template}
    run_policy = {"backoffLimit": 0, "cleanPodPolicy": "None"}
    if d.volcano_queue:  # the operator gang-schedules through Volcano when started with --gang-scheduler-name=volcano
        run_policy["schedulingPolicy"] = {"queue": d.volcano_queue, "minAvailable": d.nnodes}
    if spec.active_deadline_s:
        run_policy["activeDeadlineSeconds"] = spec.active_deadline_s
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": _metadata(spec),
            "spec": {"nprocPerNode": str(max(1, d.devices_per_node)), "pytorchReplicaSpecs": replicas,
                     "runPolicy": run_policy}}


def volcano_manifest(spec: LaunchSpec) -> dict:
    """Volcano's pytorch plugin sets MASTER_ADDR/PORT, WORLD_SIZE (= pods) and RANK (= pod index); the job is
    gang-scheduled (minAvailable = every node) in its queue."""
    template = _pod(spec, "wan22")
    # Volcano sets no per-node process count: NPUS_PER_NODE (the MindSpeed-MM guide's name) tells wan22 train
    template["spec"]["containers"][0]["env"].append({"name": "NPUS_PER_NODE",
                                                     "value": str(max(1, spec.deployment.devices_per_node))})
    if spec.active_deadline_s:
        template["spec"]["activeDeadlineSeconds"] = spec.active_deadline_s
    tasks = [{"name": "master", "replicas": 1, "template": template, "policies": [
        {"event": "TaskCompleted", "action": "CompleteJob"}]}]
    nnodes = spec.deployment.nnodes
    if nnodes > 1:
        tasks.append({"name": "worker", "replicas": nnodes - 1, "template": template})
    return {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": _metadata(spec),
            "spec": {"schedulerName": "volcano", "minAvailable": nnodes, "queue": spec.deployment.volcano_queue or "default",
                     "maxRetry": 0, "plugins": {"pytorch": ["--master=master", "--worker=worker", "--port=23456"],
                                                "svc": [], "env": []},
                     "policies": [{"event": "PodFailed", "action": "AbortJob"}], "tasks": tasks}}


MANIFESTS = {"trainjob": trainjob_manifest, "pytorchjob": pytorchjob_manifest, "volcano": volcano_manifest}


def rbac_manifests(namespace: str, kind: str = "trainjob", service_account: str = "wan22-launcher") -> list[dict]:
    """What the launcher needs: create/watch/delete its job kind, read pods, their logs and events, and read the
    run's workflow (to own the job and to tell a stopped run from an evicted pod)."""
    group, _, plural, _ = KINDS[kind]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": service_account, "namespace": namespace},
         "rules": [{"apiGroups": [group], "resources": [plural],
                    "verbs": ["create", "get", "list", "watch", "delete"]},
                   {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": [WORKFLOW[0]], "resources": [WORKFLOW[2]], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": service_account, "namespace": namespace},
         "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": service_account}},
    ]


class ClusterApi:
    """The only code that talks to the Kubernetes API (in-cluster or kubeconfig credentials). Objects come back as
    plain dicts, as the API serves them."""

    def __init__(self):
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.client = client
        self.custom, self.core = client.CustomObjectsApi(), client.CoreV1Api()

    def _plain(self, obj):
        return self.client.ApiClient().sanitize_for_serialization(obj)

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

    def watch(self, kind, namespace, name, resource_version, timeout_s):
        """(event type, object) for changes of one job, for at most timeout_s; ApiException 410 when
        resource_version is too old."""
        from kubernetes import watch

        group, version, plural, _ = KINDS[kind]
        stream = watch.Watch().stream(self.custom.list_namespaced_custom_object, group, version, namespace, plural,
                                      field_selector=f"metadata.name={name}", resource_version=resource_version,
                                      timeout_seconds=int(timeout_s))
        for event in stream:
            yield event["type"], event["object"]

    def pods(self, namespace, selector):
        return [self._plain(p) for p in self.core.list_namespaced_pod(namespace, label_selector=selector).items]

    def pod(self, namespace, name):
        return self._plain(self.core.read_namespaced_pod(name, namespace))

    def events(self, namespace, pod_name):
        items = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod_name}").items
        return [self._plain(e) for e in items]

    def log(self, namespace, pod, since_time=None, tail_lines=None, timestamps=False):
        kwargs = {"timestamps": timestamps}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        if since_time is not None:
            # the client takes no sinceTime: ask for the seconds since then, a little more (repeats are dropped)
            elapsed = (datetime.datetime.now(datetime.timezone.utc) - since_time).total_seconds()
            kwargs["since_seconds"] = max(1, int(elapsed) + 2)
        return self.core.read_namespaced_pod_log(pod, namespace, **kwargs)

    def workflow(self, namespace, name):
        group, version, plural, _ = WORKFLOW
        return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)


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


def _pods_selector(kind: str, name: str) -> str:
    return {"trainjob": f"jobset.sigs.k8s.io/jobset-name={name}",
            "pytorchjob": f"training.kubeflow.org/job-name={name}",
            "volcano": f"volcano.sh/job-name={name}"}[kind]


def _is_node0(kind: str, pod: dict) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return {"trainjob": labels.get("batch.kubernetes.io/job-completion-index") == "0",
            "pytorchjob": labels.get("training.kubeflow.org/replica-type") in ("master", "Master"),
            "volcano": labels.get("volcano.sh/task-spec") == "master"}[kind]


def stuck_reason(pod: dict, events: list[dict]) -> str | None:
    """Why a pod cannot start (the cluster's own words), or None while it may still start by itself."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            return f"Unschedulable: {cond.get('message', '')}".strip()
    for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return f"{waiting['reason']}: {waiting.get('message', '')}".strip()
    for event in sorted(events, key=lambda e: e.get("lastTimestamp") or ""):
        if event.get("type") == "Warning" and event.get("reason") in STUCK_EVENTS:
            return f"{event['reason']}: {event.get('message', '')}".strip()
    return None


def _timestamp(text: str) -> tuple[datetime.datetime, int] | None:
    """(time to the second, nanoseconds) of a kubelet log timestamp (RFC 3339 with up to 9 fractional digits)."""
    try:
        whole, _, frac = text.rstrip("Z").partition(".")
        base = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
        return base, int((frac + "000000000")[:9])
    except ValueError:
        return None


class LogFollower:
    """Node 0's log, line by line, once: kubelet timestamps say where the last read ended, so a reconnect after
    log rotation or a restarted container (a new pod name included) continues after the last printed line."""

    def __init__(self, out):
        self.out, self.last, self.at_last = out, None, set()

    def since(self) -> datetime.datetime | None:
        return None if self.last is None else self.last[0]

    def feed(self, text: str) -> int:
        printed = 0
        for line in (text or "").splitlines():
            stamp, _, message = line.partition(" ")
            when = _timestamp(stamp)
            if when is None:  # a line without a timestamp (a log source that adds none): print it as it comes
                when, message = self.last or (datetime.datetime.min.replace(tzinfo=datetime.timezone.utc), 0), line
            if self.last is not None and when < self.last:
                continue
            if when == self.last:
                if message in self.at_last:
                    continue
                self.at_last.add(message)
            else:
                self.last, self.at_last = when, {message}
            print(message, file=self.out)
            printed += 1
        self.out.flush()
        return printed


def transient(exc: Exception) -> bool:
    """An API error worth retrying: the server busy or restarting, the connection dropped."""
    status = getattr(exc, "status", None)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.startswith("urllib3")


class Launcher:
    def __init__(self, api, kind: str, startup_timeout_s: float = 900.0, timeout_s: float = 7 * 24 * 3600,
                 tick_s: float = 10.0, out=sys.stdout, clock=time.monotonic, sleep=time.sleep):
        if kind not in KINDS:
            raise UserError(f"unknown launcher {kind!r}; choose {', '.join(KINDS)} (or local)")
        self.api, self.kind, self.out = api, kind, out
        self.startup_timeout_s, self.timeout_s, self.tick_s = startup_timeout_s, timeout_s, tick_s
        self.clock, self.sleep = clock, sleep
        self.workflow = None  # (namespace, name) of the run's Argo workflow, when known

    def say(self, text: str) -> None:
        print(f"[launcher] {text}", file=self.out, flush=True)

    # -- API calls that survive transient errors ------------------------------------------------------------
    def call(self, what: str, fn, *args, **kwargs):
        delay = 1.0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - transient ones are retried, the rest raised
                if not transient(exc):
                    raise
                self.say(f"{what}: {type(exc).__name__} {getattr(exc, 'status', '') or ''}; retrying in {delay:.0f} s")
                self.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _exists(self, spec: LaunchSpec):
        from kubernetes.client.exceptions import ApiException

        try:
            return self.call("get", self.api.get, self.kind, spec.namespace, spec.name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # -- owning and stopping ------------------------------------------------------------------------------------
    def owner_of_this_pod(self, namespace: str) -> dict | None:
        """The Argo Workflow that runs this pod, as an ownerReference for the job (deleting the run deletes the
        job), or None outside a workflow (or in another namespace, where owners cannot reach)."""
        name = os.environ.get("HOSTNAME")
        if not name:
            return None
        try:
            pod = self.api.pod(namespace, name)
        except Exception:  # noqa: BLE001 - not in a cluster, or not allowed to read pods: no owner
            return None
        for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") == WORKFLOW[3]:
                self.workflow = (namespace, ref["name"])
                return {"apiVersion": ref.get("apiVersion", "argoproj.io/v1alpha1"), "kind": WORKFLOW[3],
                        "name": ref["name"], "uid": ref["uid"], "controller": False, "blockOwnerDeletion": False}
        return None

    def run_stopping(self) -> bool:
        """The run is being stopped or terminated (its workflow's spec.shutdown is set, or it is being deleted),
        as opposed to this pod alone being evicted."""
        if self.workflow is None:
            return False
        try:
            wf = self.api.workflow(*self.workflow)
        except Exception:  # noqa: BLE001 - cannot tell: keep the job (a retry re-attaches; deleting loses days)
            return False
        return bool((wf.get("spec") or {}).get("shutdown") or (wf.get("metadata") or {}).get("deletionTimestamp"))

    # -- the step -----------------------------------------------------------------------------------------------
    def submit(self, spec: LaunchSpec) -> LaunchSpec | None:
        """The attempt to follow: a running one (re-attached), a new one after failed ones (kept for their logs),
        or None when an attempt already succeeded."""
        for n in range(MAX_ATTEMPTS):
            attempt = spec.attempt(n)
            existing = self._exists(attempt)
            if existing is None:
                self.call("create", self.api.create, self.kind, attempt.namespace, MANIFESTS[self.kind](attempt))
                self.say(f"created {KINDS[self.kind][3]} {attempt.name}"
                         + (" (the earlier attempts failed and are kept for their logs; training resumes from the "
                            "last complete checkpoint)" if n else ""))
                return attempt
            state = job_state(self.kind, existing)
            if state == "succeeded":
                self.say(f"{attempt.name} already succeeded: reusing its result")
                return None
            if state == "running":
                self.say(f"{attempt.name} exists and runs: re-attaching")
                return attempt
        raise UserError(f"{spec.name}: {MAX_ATTEMPTS} attempts failed; delete them (kubectl -n {spec.namespace} "
                        f"delete {KINDS[self.kind][2]} -l app.kubernetes.io/name=wan22) to start over")

    def run(self, spec: LaunchSpec) -> None:
        """Submit (or re-attach), follow until the job ends; raise on failure, a stuck start or the timeout."""
        spec = dataclasses.replace(spec, owner=spec.owner or self.owner_of_this_pod(spec.namespace))
        attempt = self.submit(spec)
        if attempt is None:
            return
        previous = signal.getsignal(signal.SIGTERM)

        def stopped(signum, frame):
            if self.run_stopping():
                self.say(f"the run is being stopped: deleting {attempt.name}")
                self.api.delete(self.kind, attempt.namespace, attempt.name)
            else:
                self.say(f"this pod was stopped (an eviction or a node drain?): {attempt.name} keeps running, and "
                         "the step's retry re-attaches to it")
            raise SystemExit(143)

        try:
            signal.signal(signal.SIGTERM, stopped)
        except ValueError:  # not the main thread (tests): no handler, the job is left as on an eviction
            pass
        try:
            self.follow(attempt)
        finally:
            try:
                signal.signal(signal.SIGTERM, previous)
            except ValueError:
                pass

    def follow(self, spec: LaunchSpec) -> None:
        from kubernetes.client.exceptions import ApiException

        start, version, state, started = self.clock(), None, "running", False
        logs = LogFollower(self.out)
        while True:
            try:
                for _, obj in self.api.watch(self.kind, spec.namespace, spec.name, version, self.tick_s):
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    state = job_state(self.kind, obj)
                    if state != "running":
                        break
            except ApiException as exc:
                if exc.status == 410:  # our resource version expired: read the job anew and watch from there
                    obj = self.call("get", self.api.get, self.kind, spec.namespace, spec.name)
                    version, state = (obj.get("metadata") or {}).get("resourceVersion"), job_state(self.kind, obj)
                elif transient(exc):
                    self.say(f"watch: API error {exc.status}; retrying")
                    self.sleep(min(self.tick_s, 5.0))
                else:
                    raise
            except Exception as exc:  # noqa: BLE001
                if not transient(exc):
                    raise
                self.say(f"watch: {type(exc).__name__}; retrying")
                self.sleep(min(self.tick_s, 5.0))
            pods = self.call("list pods", self.api.pods, spec.namespace, _pods_selector(self.kind, spec.name))
            started = started or any((p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")
                                     for p in pods)
            self._stream_node0(spec, pods, logs)
            if state == "succeeded":
                self.say(f"{spec.name} succeeded")
                return
            if state == "failed":
                self._print_failed_pods(spec, pods)
                raise UserError(f"training job {self.kind}/{spec.name} failed; its pods are kept for debugging "
                                f"(kubectl -n {spec.namespace} describe {KINDS[self.kind][2]} {spec.name}); a retry "
                                "of this step starts a new attempt that resumes from the last checkpoint")
            waited = self.clock() - start
            if not started and waited > self.startup_timeout_s:
                reason = self._stuck(spec, pods)
                if reason is not None or not pods:
                    self.call("delete", self.api.delete, self.kind, spec.namespace, spec.name)
                    raise UserError(f"training job {spec.name} did not start within {self.startup_timeout_s:.0f} s: "
                                    f"{reason or 'no pod was created (is the job controller installed?)'}; deleted "
                                    "the job (it held nothing yet)")
            if waited > self.timeout_s:
                self.call("delete", self.api.delete, self.kind, spec.namespace, spec.name)
                raise UserError(f"training job {spec.name} did not finish within {self.timeout_s:.0f} s; deleted it")

    def _stuck(self, spec: LaunchSpec, pods: list[dict]) -> str | None:
        for pod in pods:
            name = pod["metadata"]["name"]
            events = self.call("list events", self.api.events, spec.namespace, name)
            reason = stuck_reason(pod, events)
            if reason:
                return f"pod {name}: {reason}"
        return None

    def _stream_node0(self, spec: LaunchSpec, pods: list[dict], logs: LogFollower) -> None:
        node0 = [p for p in pods if _is_node0(self.kind, p)
                 and (p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")]
        for pod in node0:
            text = self.call("read log", self.api.log, spec.namespace, pod["metadata"]["name"], since_time=logs.since(),
                             timestamps=True)
            logs.feed(text)

    def _print_failed_pods(self, spec: LaunchSpec, pods: list[dict]) -> None:
        for pod in pods:
            status = pod.get("status") or {}
            codes = [((c.get("state") or {}).get("terminated") or {}).get("exitCode")
                     for c in status.get("containerStatuses") or []]
            if status.get("phase") != "Failed" and not any(code for code in codes):
                continue
            name = pod["metadata"]["name"]
            self.say(f"last {FAILED_POD_LINES} lines of failed pod {name} (exit codes {codes}):")
            try:
                print(self.api.log(spec.namespace, name, tail_lines=FAILED_POD_LINES) or "", file=self.out)
            except Exception as exc:  # noqa: BLE001 - the failure itself is what the user must see
                self.say(f"(cannot read its log: {type(exc).__name__})")


def launch_training(deployment: Deployment, config_path, run_id: str, expert: str, launcher: str,
                    limits: JobLimits = JobLimits(), max_restarts: int = 0, grace_s: int = 60) -> None:
    """The pretrain step's cluster path: one job running `wan22 train --config ...` on every node, placed
    and sized by `deployment` (the pipeline run's settings)."""
    if not deployment.namespace:
        deployment = deployment.replace(namespace=_pod_namespace())
    # the KFP run's id names the job, so a retried step finds it
    spec = LaunchSpec(name=job_name(run_id or os.environ.get("HOSTNAME", "local"), "train-" + (expert or "dit")),
                      command=train_command(str(config_path), max_restarts), deployment=deployment,
                      active_deadline_s=limits.active_deadline_s, grace_s=grace_s)
    Launcher(ClusterApi(), launcher, startup_timeout_s=limits.startup_timeout_s, timeout_s=limits.timeout_s).run(spec)


def train_command(config_path: str, max_restarts: int = 0) -> list[str]:
    """What every training node runs (it starts torchrun from its launcher's variables)."""
    return ["wan22", "train", "--config", config_path, *(["--max-restarts", str(max_restarts)] if max_restarts else [])]


def _pod_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip()
    except OSError:
        return "default"
