"""What the cluster's admission control checks beyond the CRD schemas, written out from the upstream sources so the
tests can run it on every object we emit. A schema cannot express these (webhooks and apiserver validation code);
a cluster would reject the object with the message each rule gives. Sources, at the commits the reviews read:

- Kubernetes apimachinery `pkg/util/validation/validation.go` (IsDNS1123Label/Subdomain, IsDNS1035Label,
  IsQualifiedName, IsValidLabelValue, IsDomainPrefixedPath) and `pkg/api/validation/objectmeta.go` (labels,
  annotations and their 256 KiB total); `pkg/apis/core/validation/validation.go` ValidatePodSpec (container and
  volume names, mounts naming volumes, env var names, extended resources with requests equal to limits).
- Kubeflow Trainer 8c0f505: `pkg/apis/trainer/v1alpha1/trainjob_types.go:36-37` (name: RFC 1035 label, <= 63),
  `:288` (numProcPerNode >= 1); `pkg/runtime/framework/plugins/jobset/jobset.go:175-206` (runtimePatches: manager
  a domain-prefixed path; patched replicated jobs and containers must exist in the runtime; no env on the node
  container); `pkg/runtime/framework/plugins/torch/torch.go:66-77` with `pkg/constants/constants.go:300` (the
  trainer's env must not set torchrun's reserved PET_* variables); the torch-distributed runtime's one replicated
  job and container are both named "node" (`manifests/base/runtimes/torch_distributed.yaml`).
- Training Operator v1.9.0 `pkg/webhooks/pytorch/pytorchjob_webhook.go:76-166`: name a DNS-1035 label; replica types
  Master and Worker only; every replica has containers with images, one named "pytorch"; Master replicas exactly 1,
  Worker at least 1; `pkg/common/util/webhooks.go:15` (runPolicy.managedBy).
- Volcano ed72c7c `pkg/webhooks/admission/jobs/validate/admit_job.go:120-377`: at least one task; unique task names;
  task minAvailable <= replicas; job minAvailable <= total replicas; policies' events and actions known; plugins
  known; the job name and every pod name `<job>-<task>-<index>` qualified names; each task template a valid pod.
"""
from __future__ import annotations

import json
import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
PATH_SEGMENT = re.compile(r"^[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
NATIVE_RESOURCES = {"cpu", "memory", "ephemeral-storage", "pods"}
TORCH_RESERVED_ENV = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
TORCH_DISTRIBUTED_RUNTIME = {"node": {"node"}}  # replicated job -> its containers
VOLCANO_EVENTS = {"*", "PodPending", "PodRunning", "PodFailed", "PodEvicted", "Unknown", "TaskCompleted",
                  "OutOfSync", "CommandIssued", "JobUpdated", "TaskFailed", "JobFailed"}
VOLCANO_ACTIONS = {"AbortJob", "RestartJob", "RestartTask", "RestartPod", "RestartPartition", "TerminateJob",
                   "CompleteJob", "ResumeJob", "SyncJob", "EnqueueJob", "SyncQueue", "OpenQueue", "CloseQueue"}
VOLCANO_PLUGINS = {"env", "svc", "ssh", "pytorch", "tensorflow", "mpi", "ray", "hcclrank"}


def dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(DNS1123_LABEL.match(value))


def qualified_name(value: str) -> bool:
    """apimachinery IsQualifiedName: [prefix/]name, prefix a DNS-1123 subdomain, name <= 63 characters."""
    prefix, _, name = value.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(QUALIFIED_NAME.match(name))


def label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(QUALIFIED_NAME.match(value)))


def domain_prefixed_path(value: str) -> bool:
    """apimachinery IsDomainPrefixedPath: "domain/path", domain a DNS-1123 subdomain, path not empty."""
    domain, sep, path = value.partition("/")
    return bool(sep) and len(domain) <= 253 and bool(DNS1123_SUBDOMAIN.match(domain)) and bool(PATH_SEGMENT.match(path))


def rfc1035_name(name: str, message: str) -> list[str]:
    """The name rule Trainer's CRD and the PyTorchJob webhook share: a DNS-1035 label of at most 63 characters."""
    return [] if len(name) <= 63 and DNS1035_LABEL.match(name) else [f"metadata.name {name!r} {message}"]


def object_meta(meta: dict, where: str) -> list[str]:
    found = []
    for key, value in (meta.get("labels") or {}).items():
        if not qualified_name(key) or not label_value(str(value)):
            found.append(f"{where}.labels: {key}={value!r} is not a valid label")
    annotations = meta.get("annotations") or {}
    for key in annotations:
        if not qualified_name(key):
            found.append(f"{where}.annotations: {key!r} is not a qualified name")
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > 256 * 1024:
        found.append(f"{where}.annotations: more than 256 KiB")
    return found


def pod_spec(spec: dict, where: str) -> list[str]:
    """ValidatePodSpec's rules that a schema cannot express."""
    found = []
    volumes = [v.get("name", "") for v in spec.get("volumes") or []]
    if len(set(volumes)) != len(volumes) or not all(dns1123_label(v) for v in volumes):
        found.append(f"{where}.volumes: names must be unique DNS-1123 labels, got {volumes}")
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    names = [c.get("name", "") for c in containers]
    if len(set(names)) != len(names) or not all(dns1123_label(n) for n in names):
        found.append(f"{where}.containers: names must be unique DNS-1123 labels, got {names}")
    for c in containers:
        cw = f"{where}.containers[{c.get('name')}]"
        for mount in c.get("volumeMounts") or []:
            if mount.get("name") not in volumes:
                found.append(f"{cw}.volumeMounts: {mount.get('name')!r} names no volume")
        for env in c.get("env") or []:
            if not ENV_NAME.match(env.get("name", "")):
                found.append(f"{cw}.env: {env.get('name')!r} is not a valid variable name")
        resources = c.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        for name in set(limits) | set(requests):
            if name not in NATIVE_RESOURCES and "/" in name and name in requests and name in limits \
                    and str(requests[name]) != str(limits[name]):
                found.append(f"{cw}.resources: extended resource {name} needs requests equal to limits")
            if name not in NATIVE_RESOURCES and name in requests and name not in limits:
                found.append(f"{cw}.resources: extended resource {name} needs a limit")
    return found


def _pod_template(template: dict, where: str) -> list[str]:
    return object_meta(template.get("metadata") or {}, f"{where}.metadata") + pod_spec(template.get("spec") or {},
                                                                                       f"{where}.spec")


def trainjob(obj: dict) -> list[str]:
    found = rfc1035_name(obj["metadata"]["name"], "must be an RFC 1035 label of at most 63 characters")
    trainer = obj["spec"].get("trainer") or {}
    if trainer.get("numProcPerNode", 1) < 1:
        found.append("spec.trainer.numProcPerNode must be greater than or equal to 1")
    reserved = sorted({e["name"] for e in trainer.get("env") or []} & TORCH_RESERVED_ENV)
    if reserved:
        found.append(f"spec.trainer.env: must not have reserved envs, invalid envs configured: {reserved}")
    for i, patch in enumerate(obj["spec"].get("runtimePatches") or []):
        where = f"spec.runtimePatches[{i}]"
        if not domain_prefixed_path(patch.get("manager", "")):
            found.append(f"{where}.manager {patch.get('manager')!r}: must be a domain-prefixed path "
                         "(such as \"acme.io/foo\")")
        for job in (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}).get(
                "replicatedJobs") or []:
            containers = TORCH_DISTRIBUTED_RUNTIME.get(job["name"])
            if containers is None:
                found.append(f"{where}: must not have replicated job that doesn't exist in the runtime job template")
                continue
            pod = (((job.get("template") or {}).get("spec") or {}).get("template") or {})
            for c in (pod.get("spec") or {}).get("containers") or []:
                if c["name"] not in containers:
                    found.append(f"{where}: must not have container that doesn't exist in the runtime job {job['name']}")
                elif c.get("env"):
                    found.append(f"{where}: must not have envs for the node container")
            found += object_meta(pod.get("metadata") or {}, f"{where}.{job['name']}.metadata")
    return found


def pytorchjob(obj: dict) -> list[str]:
    found = rfc1035_name(obj["metadata"]["name"], "should match a DNS-1035 label")
    specs = obj["spec"].get("pytorchReplicaSpecs") or {}
    if not specs:
        found.append("spec.pytorchReplicaSpecs: must be required")
    for kind, spec in specs.items():
        if kind not in ("Master", "Worker"):
            found.append(f"spec.pytorchReplicaSpecs[{kind}]: not supported")
        containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
        if not containers or any(not c.get("image") for c in containers):
            found.append(f"spec.pytorchReplicaSpecs[{kind}].template.spec.containers: must be specified with images")
        if not any(c.get("name") == "pytorch" for c in containers):
            found.append(f"spec.pytorchReplicaSpecs[{kind}]: must have at least one container with name pytorch")
        if kind == "Master" and spec.get("replicas") != 1:
            found.append("spec.pytorchReplicaSpecs[Master].replicas: must be 1")
        if kind == "Worker" and spec.get("replicas", 1) < 1:
            found.append("spec.pytorchReplicaSpecs[Worker].replicas: must be at least 1")
        found += _pod_template(spec.get("template") or {}, f"spec.pytorchReplicaSpecs[{kind}].template")
    managed = (obj["spec"].get("runPolicy") or {}).get("managedBy")
    if managed is not None and managed not in ("kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"):
        found.append(f"spec.runPolicy.managedBy {managed!r}: not supported")
    return found


def volcano_job(obj: dict) -> list[str]:
    found = []
    name, spec = obj["metadata"]["name"], obj["spec"]
    tasks = spec.get("tasks") or []
    if not tasks:
        return ["No task specified in job spec"]
    if not qualified_name(name):
        found.append(f"create job with name {name} validate failed")
    seen = set()
    for index, task in enumerate(tasks):
        if task["name"] in seen:
            found.append(f"duplicated task name {task['name']}")
        seen.add(task["name"])
        if task.get("minAvailable", 0) > task.get("replicas", 0):
            found.append(f"'minAvailable' is greater than 'replicas' in task: {task['name']}")
        for r in range(task.get("replicas", 0)):
            if not qualified_name(f"{name}-{task['name']}-{r}"):
                found.append(f"create pod with name {name}-{task['name']}-{r} validate failed")
        for policy in task.get("policies") or []:
            found += _volcano_policy(policy, f"spec.tasks[{index}].policies")
        found += _pod_template(task.get("template") or {}, f"spec.task[{index}].template")
    if sum(t.get("replicas", 0) for t in tasks) < spec.get("minAvailable", 0):
        found.append("job 'minAvailable' should not be greater than total replicas in tasks")
    for policy in spec.get("policies") or []:
        found += _volcano_policy(policy, "spec.policies")
    found += [f"unable to find job plugin: {p}" for p in (spec.get("plugins") or {}) if p not in VOLCANO_PLUGINS]
    return found


def _volcano_policy(policy: dict, where: str) -> list[str]:
    events = policy.get("events") or ([policy["event"]] if "event" in policy else [])
    bad = [e for e in events if e not in VOLCANO_EVENTS]
    if policy.get("action") and policy["action"] not in VOLCANO_ACTIONS:
        bad.append(policy["action"])
    return [f"{where}: invalid policy {json.dumps(policy)}"] if bad else []


def batch_job(obj: dict) -> list[str]:
    found = []
    name = obj["metadata"]["name"]
    if not dns1123_label(name):  # the job controller puts the name in every pod's job-name label
        found.append(f"metadata.name {name!r} must be a DNS-1123 label (the pods' job-name label)")
    return found + _pod_template(obj["spec"]["template"], "spec.template")


def admission_problems(obj: dict) -> list[str]:
    """Everything the cluster's admission would refuse in one object we emit."""
    found = object_meta(obj.get("metadata") or {}, "metadata")
    kind = (obj.get("apiVersion"), obj.get("kind"))
    if kind == ("trainer.kubeflow.org/v1alpha1", "TrainJob"):
        found += trainjob(obj)
    elif kind == ("kubeflow.org/v1", "PyTorchJob"):
        found += pytorchjob(obj)
    elif kind == ("batch.volcano.sh/v1alpha1", "Job"):
        found += volcano_job(obj)
    elif kind == ("batch/v1", "Job"):
        found += batch_job(obj)
    return found
