"""The multi-node launcher against recorded API responses: success, failure, timeout, cancel, reattach."""
import io
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from wan_core.errors import UserError
from components.k8s.deployment import Deployment
from components.k8s.launcher import (KINDS, LaunchSpec, Launcher, job_name, job_state, pytorchjob_manifest,
                                   rbac_manifests, trainjob_manifest, volcano_manifest, _validate_trainjob)

SPEC = LaunchSpec("wan22-train-abc", ["wan22", "train", "--config", "/data/t.yaml"],
                  Deployment(profile="npu", image="reg/wan22:npu", image_pull_secret="regcred", namespace="ml",
                             devices_per_node=8, nnodes=2))

# Recorded responses (trimmed to the fields the launcher reads)
TRAINJOB_RUNNING = {"status": {"conditions": [{"type": "Created", "status": "True"}]}}
TRAINJOB_DONE = {"status": {"conditions": [{"type": "Created", "status": "True"}, {"type": "Complete", "status": "True"}]}}
TRAINJOB_FAILED = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "JobSetFailed"}]}}


def pod(name, phase):
    return SimpleNamespace(metadata=SimpleNamespace(name=name), status=SimpleNamespace(phase=phase))


class RecordedApi:
    """Replays a list of job objects for get(), records every call."""

    def __init__(self, states, logs=None, create_conflict=False):
        self.states, self.logs, self.calls, self.create_conflict = list(states), list(logs or []), [], create_conflict

    def create(self, kind, namespace, body):
        self.calls.append(("create", kind, body["metadata"]["name"]))
        if self.create_conflict:
            raise ApiException(status=409, reason="AlreadyExists")
        return body

    def get(self, kind, namespace, name):
        self.calls.append(("get", kind, name))
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def delete(self, kind, namespace, name):
        self.calls.append(("delete", kind, name))

    def pods(self, namespace, selector):
        return [pod("node-0", "Running")] if self.logs else []

    def log(self, namespace, name, since_seconds=None):
        return self.logs.pop(0) if len(self.logs) > 1 else (self.logs[0] if self.logs else "")


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def launcher(api, kind="trainjob", timeout=1000.0):
    clock = Clock()
    out = io.StringIO()
    return Launcher(api, kind, poll_s=10, timeout_s=timeout, out=out, clock=clock, sleep=clock.sleep), out


def test_success_streams_node0_logs_once():
    api = RecordedApi([TRAINJOB_RUNNING, TRAINJOB_RUNNING, TRAINJOB_DONE],
                      logs=["step 1/3 loss 1.0", "step 1/3 loss 1.0\nstep 2/3 loss 0.9", "step 1/3 loss 1.0\n"
                            "step 2/3 loss 0.9\nstep 3/3 loss 0.8"])
    l, out = launcher(api)
    l.run(SPEC)
    text = out.getvalue()
    assert [x for x in text.splitlines() if x.startswith("step")] == ["step 1/3 loss 1.0", "step 2/3 loss 0.9",
                                                                       "step 3/3 loss 0.8"]
    assert "succeeded" in text and ("delete", "trainjob", SPEC.name) not in api.calls
    assert api.calls[0] == ("create", "trainjob", SPEC.name)


def test_failure_raises_and_keeps_the_job():
    api = RecordedApi([TRAINJOB_RUNNING, TRAINJOB_FAILED])
    l, _ = launcher(api)
    with pytest.raises(UserError, match="failed; its pods are kept"):
        l.run(SPEC)
    assert not any(c[0] == "delete" for c in api.calls)


def test_timeout_deletes_and_raises():
    api = RecordedApi([TRAINJOB_RUNNING])
    l, _ = launcher(api, timeout=35)
    with pytest.raises(UserError, match="did not finish within 35 s"):
        l.run(SPEC)
    assert api.calls[-1] == ("delete", "trainjob", SPEC.name)


def test_cancel_deletes_the_job():
    api = RecordedApi([TRAINJOB_RUNNING])
    l, out = launcher(api)
    l.sleep = lambda s: signal.raise_signal(signal.SIGTERM)  # KFP terminates the step while it waits
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        l.run(SPEC)
    assert exc.value.code == 143 and api.calls[-1] == ("delete", "trainjob", SPEC.name)
    assert signal.getsignal(signal.SIGTERM) is previous  # the step's own handler is back


def test_retry_reattaches_to_the_existing_job():
    api = RecordedApi([TRAINJOB_DONE], create_conflict=True)
    l, out = launcher(api)
    l.run(SPEC)
    assert "reattaching" in out.getvalue() and [c[0] for c in api.calls][:2] == ["create", "get"]
    assert job_name("run-1", "train-high") == job_name("run-1", "train-high") != job_name("run-2", "train-high")


def test_states_of_each_kind():
    assert job_state("pytorchjob", {"status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}) == "succeeded"
    assert job_state("pytorchjob", {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "failed"
    assert job_state("volcano", {"status": {"state": {"phase": "Completed"}}}) == "succeeded"
    assert job_state("volcano", {"status": {"state": {"phase": "Aborted"}}}) == "failed"
    assert job_state("volcano", {"status": {"state": {"phase": "Running"}}}) == "running"
    assert job_state("trainjob", {}) == "running"


def deserialize(obj, kind):
    return client.ApiClient()._ApiClient__deserialize(obj, kind)


def test_manifests_are_valid():
    tj = trainjob_manifest(SPEC)
    trainer = tj["spec"]["trainer"]
    assert trainer["numProcPerNode"] == 8 and trainer["numNodes"] == 2  # explicit: Trainer counts only GPUs
    assert trainer["resourcesPerNode"]["limits"] == {"huawei.com/Ascend910": "8"}
    assert {e["name"] for e in trainer["env"]} >= {"HCCL_CONNECT_TIMEOUT", "PYTORCH_NPU_ALLOC_CONF"}
    patch = tj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod_patch = patch["template"]["spec"]["template"]["spec"]
    assert {v["name"] for v in pod_patch["volumes"]} == {"dshm", "data"} and pod_patch["imagePullSecrets"]
    bad = {**tj, "spec": {**tj["spec"], "trainer": {**trainer, "numProcsPerNode": 8}}}
    with pytest.raises(ValueError, match="unknown to the Trainer API"):
        _validate_trainjob(bad)
    pj = pytorchjob_manifest(SPEC)
    assert pj["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1 and pj["spec"]["nprocPerNode"] == "8"
    for replica in pj["spec"]["pytorchReplicaSpecs"].values():
        spec = deserialize(replica["template"]["spec"], "V1PodSpec")
        assert spec.containers[0].name == "pytorch" and spec.containers[0].command[:2] == ["wan22", "train"]
    vj = volcano_manifest(SPEC)
    assert vj["spec"]["minAvailable"] == 2 and "pytorch" in vj["spec"]["plugins"]
    for task in vj["spec"]["tasks"]:
        deserialize(task["template"]["spec"], "V1PodSpec")
    for kind in KINDS:
        docs = rbac_manifests("ml", kind)
        sa, role, binding = (deserialize(d, t) for d, t in zip(docs, ("V1ServiceAccount", "V1Role", "V1RoleBinding")))
        assert role.rules[0].api_groups == [KINDS[kind][0]] and "delete" in role.rules[0].verbs
        assert "pods/log" in role.rules[1].resources and binding.subjects[0].name == sa.metadata.name


def test_cli_prints_rbac_and_train_jobs():
    r = subprocess.run([sys.executable, "-m", "wan_core", "k8s", "rbac", "--namespace", "ml", "--launcher", "volcano"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and [d["kind"] for d in yaml.safe_load_all(r.stdout)] == ["ServiceAccount", "Role",
                                                                                     "RoleBinding"]
    r = subprocess.run([sys.executable, "-m", "wan_core", "k8s", "train-job", "--config", "/data/t.yaml", "--nnodes",
                        "2", "--launcher", "pytorchjob"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["kind"] == "PyTorchJob"
