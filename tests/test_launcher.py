"""The multi-node launcher against a scripted Kubernetes API (an in-process fake with watch events): a job that
succeeds; one that fails and a retry that starts a new attempt; SIGTERM from an eviction (job kept, re-attach) and
from the run being stopped (job deleted); pods that cannot start (FailedScheduling, ImagePullBackOff, Multi-Attach);
log rotation and a restarted container mid-stream; API 500s and an expired watch (410) mid-run."""
import io
import signal
import subprocess
import sys

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from components.k8s.deployment import Deployment
from components.k8s.launcher import (KINDS, MANIFESTS, LaunchSpec, Launcher, LogFollower, _validate_trainjob,
                                     job_name, job_state, pytorchjob_manifest, rbac_manifests, trainjob_manifest,
                                     volcano_manifest)
from wan_core.errors import UserError

SPEC = LaunchSpec("wan22-train-abc", ["wan22", "train", "--config", "/data/t.yaml"],
                  Deployment(profile="npu", image="reg/wan22:npu", image_pull_secret="regcred", namespace="ml",
                             devices_per_node=8, nnodes=2))
RUNNING = {"status": {"conditions": [{"type": "Created", "status": "True"}]}}
DONE = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
FAILED = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "JobSetFailed"}]}}
NODE0 = {"batch.kubernetes.io/job-completion-index": "0"}


def pod(name, phase="Running", labels=NODE0, waiting=None, conditions=(), exit_code=None):
    statuses = []
    if waiting:
        statuses.append({"name": "node", "state": {"waiting": {"reason": waiting[0], "message": waiting[1]}}})
    if exit_code is not None:
        statuses.append({"name": "node", "state": {"terminated": {"exitCode": exit_code}}})
    return {"metadata": {"name": name, "labels": dict(labels)},
            "status": {"phase": phase, "conditions": list(conditions), "containerStatuses": statuses}}


def stamped(second, text, nanos=0):
    return f"2026-11-30T10:00:{second:02d}.{nanos:09d}Z {text}"


class ScriptedApi:
    """The cluster as a script: each tick (one watch call) takes the next entry of `ticks`, a dict with the job
    object the watch reports (or an exception it raises), the pods, their events and node 0's log as the kubelet
    would serve it. Records every mutating call; a job that was never created is a 404."""

    def __init__(self, ticks, existing=None, workflow=None, this_pod=None):
        self.ticks, self.tick = list(ticks), -1
        self.jobs = dict(existing or {})  # name -> job object
        self.calls, self.workflow_obj, self.this_pod = [], workflow, this_pod

    def now(self):
        return self.ticks[min(self.tick, len(self.ticks) - 1)] if self.tick >= 0 else {}

    def create(self, kind, namespace, body):
        self.calls.append(("create", body["metadata"]["name"], body["metadata"].get("ownerReferences")))
        self.jobs[body["metadata"]["name"]] = RUNNING
        return body

    def get(self, kind, namespace, name):
        if name not in self.jobs:
            raise ApiException(status=404, reason="NotFound")
        return self.jobs[name]

    def delete(self, kind, namespace, name):
        self.calls.append(("delete", name))

    def watch(self, kind, namespace, name, resource_version, timeout_s):
        self.tick += 1
        step = self.now()
        if isinstance(step.get("job"), Exception):
            raise step["job"]
        job = {**step.get("job", RUNNING), "metadata": {"resourceVersion": str(self.tick)}}
        self.jobs[name] = job
        yield "MODIFIED", job

    def pods(self, namespace, selector):
        if isinstance(self.now().get("pods"), Exception):
            raise self.now()["pods"]
        return self.now().get("pods", [])

    def pod(self, namespace, name):
        if self.this_pod is None:
            raise OSError("not in a cluster")
        return self.this_pod

    def events(self, namespace, pod_name):
        return self.now().get("events", {}).get(pod_name, [])

    def log(self, namespace, pod_name, since_time=None, tail_lines=None, timestamps=False):
        if tail_lines is not None:
            self.calls.append(("tail", pod_name))
            return self.now().get("tails", {}).get(pod_name, "")
        lines = self.now().get("log", [])
        if since_time is not None:  # the kubelet's sinceTime is to the second: the last second's lines come again
            lines = [x for x in lines if x[:19] >= since_time.strftime("%Y-%m-%dT%H:%M:%S")]
        return "\n".join(lines)

    def workflow(self, namespace, name):
        return self.workflow_obj


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def launcher(api, kind="trainjob", startup=100.0, timeout=10_000.0):
    clock, out = Clock(), io.StringIO()
    run = Launcher(api, kind, startup_timeout_s=startup, timeout_s=timeout, tick_s=10, out=out, clock=clock,
                   sleep=clock.sleep)
    real_watch = api.watch

    def ticking_watch(*a):  # each watch call is one tick of the clock
        clock.t += 10
        yield from real_watch(*a)

    api.watch = ticking_watch
    return run, out


def printed_lines(out):
    return [x for x in out.getvalue().splitlines() if not x.startswith("[launcher]")]


def test_success_follows_node0_once_across_rotation_and_a_restart():
    """The kubelet serves the whole log, then (after rotation) only the newest part, then a new container's log
    after a restart; every line is printed once, in order."""
    lines = [stamped(1, "step 1/4"), stamped(2, "step 2/4")]
    ticks = [{"pods": [pod("n0")], "log": lines},
             {"pods": [pod("n0")], "log": lines + [stamped(2, "step 2/4 done", 5), stamped(3, "step 3/4")]},
             {"pods": [pod("n0")], "log": [stamped(3, "step 3/4")]},  # rotated: the older lines are gone
             {"pods": [pod("n0-restarted")], "log": [stamped(5, "resumed at step 3"), stamped(6, "step 4/4")],
              "job": DONE}]
    api = ScriptedApi(ticks)
    run, out = launcher(api)
    run.run(SPEC)
    assert printed_lines(out) == ["step 1/4", "step 2/4", "step 2/4 done", "step 3/4", "resumed at step 3", "step 4/4"]
    assert api.calls[0][:2] == ("create", SPEC.name) and not any(c[0] == "delete" for c in api.calls)
    assert "succeeded" in out.getvalue()


def test_failure_prints_failed_pods_then_a_retry_starts_a_new_attempt():
    failed = [pod("n0", "Failed", exit_code=1), pod("n1", "Failed", labels={}, exit_code=137), pod("n2", "Running", {})]
    api = ScriptedApi([{"pods": failed, "job": FAILED, "tails": {"n0": "Traceback\nRuntimeError: boom",
                                                                 "n1": "killed"}}])
    run, out = launcher(api)
    with pytest.raises(UserError, match="failed; its pods are kept.*a retry of this step starts a new attempt"):
        run.run(SPEC)
    assert ("tail", "n0") in api.calls and ("tail", "n1") in api.calls and ("tail", "n2") not in api.calls
    assert "RuntimeError: boom" in out.getvalue() and "exit codes [137]" in out.getvalue()
    assert not any(c[0] == "delete" for c in api.calls)  # kept for its logs
    # the step's retry: the failed attempt stays, a new one is created and followed (it resumes from the volume)
    retry = ScriptedApi([{"pods": [pod("n0")], "job": DONE}], existing={SPEC.name: FAILED})
    run, out = launcher(retry)
    run.run(SPEC)
    assert [c[:2] for c in retry.calls] == [("create", f"{SPEC.name}-r1")]
    # and a retry after a success reuses it
    again = ScriptedApi([], existing={SPEC.name: FAILED, f"{SPEC.name}-r1": DONE})
    run, out = launcher(again)
    run.run(SPEC)
    assert again.calls == [] and "already succeeded: reusing" in out.getvalue()
    assert job_name("run-1", "train-high") == job_name("run-1", "train-high") != job_name("run-2", "train-high")
    assert len(job_name("r" * 40, "train-high") + "-r19-worker-127") <= 63


def test_evicted_submitter_keeps_the_job_and_its_retry_reattaches(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "wan22-full-abc-pretrain-1234")  # a pod's HOSTNAME is its name
    api = ScriptedApi([{"pods": [pod("n0")]}] * 3, workflow={"spec": {}, "metadata": {}},
                      this_pod={"metadata": {"ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1",
                                                                  "kind": "Workflow", "name": "run-wf",
                                                                  "uid": "u-1"}]}})
    run, out = launcher(api)
    previous = signal.getsignal(signal.SIGTERM)
    run.sleep = lambda s: None
    real = run.follow

    def evicted(spec):
        signal.raise_signal(signal.SIGTERM)  # the node is drained while the step waits
        real(spec)

    run.follow = evicted
    with pytest.raises(SystemExit) as exc:
        run.run(SPEC)
    assert exc.value.code == 143 and not any(c[0] == "delete" for c in api.calls)
    assert "keeps running" in out.getvalue() and signal.getsignal(signal.SIGTERM) is previous
    # the job is owned by the run's workflow: deleting the run deletes it
    (owner,) = api.calls[0][2]
    assert owner == {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "run-wf", "uid": "u-1",
                     "controller": False, "blockOwnerDeletion": False}
    # the retried step finds it running and follows it to the end
    retry = ScriptedApi([{"pods": [pod("n0")], "log": [stamped(1, "step 9/9")], "job": DONE}],
                        existing={SPEC.name: RUNNING})
    run, out = launcher(retry)
    run.run(SPEC)
    assert retry.calls == [] and "re-attaching" in out.getvalue() and printed_lines(out) == ["step 9/9"]


def test_stopping_the_run_deletes_the_job(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "wan22-full-abc-pretrain-1234")
    api = ScriptedApi([{"pods": [pod("n0")]}], workflow={"spec": {"shutdown": "Terminate"}, "metadata": {}},
                      this_pod={"metadata": {"ownerReferences": [{"kind": "Workflow", "name": "wf", "uid": "u"}]}})
    run, out = launcher(api)
    run.follow = lambda spec: signal.raise_signal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        run.run(SPEC)
    assert api.calls[-1] == ("delete", SPEC.name) and "the run is being stopped" in out.getvalue()


@pytest.mark.parametrize("stuck, words", [
    (dict(pods=[pod("n0", "Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                   "message": "0/4 nodes are available: 4 Insufficient huawei.com/Ascend910."}])]),
     "Unschedulable: 0/4 nodes are available: 4 Insufficient huawei.com/Ascend910"),
    (dict(pods=[pod("n0", "Pending", waiting=("ImagePullBackOff", 'Back-off pulling image "reg/wan22:npu"'))]),
     'ImagePullBackOff: Back-off pulling image "reg/wan22:npu"'),
    (dict(pods=[pod("n0", "Pending")], events={"n0": [{"type": "Warning", "reason": "FailedAttachVolume",
                                                       "message": 'Multi-Attach error for volume "pvc-1" Volume is '
                                                                  "already used by pod(s) n1"}]}),
     "FailedAttachVolume: Multi-Attach error"),
])
def test_a_pod_that_cannot_start_fails_the_step_after_the_startup_timeout(stuck, words):
    api = ScriptedApi([stuck] * 30)
    run, out = launcher(api, startup=100)
    with pytest.raises(UserError, match=f"did not start within 100 s: pod n0: {words}"):
        run.run(SPEC)
    assert api.calls[-1] == ("delete", SPEC.name) and api.tick < 15  # within the start-up timeout, not days later


def test_api_errors_and_an_expired_watch_do_not_end_the_step():
    lines = [stamped(1, "step 1/2"), stamped(2, "step 2/2")]
    ticks = [{"pods": [pod("n0")], "log": lines[:1]},
             {"job": ApiException(status=500, reason="Internal Server Error")},
             {"job": ApiException(status=410, reason="Gone")},
             {"pods": ApiException(status=503, reason="Unavailable"), "log": lines},
             {"pods": [pod("n0")], "log": lines, "job": DONE}]
    api = ScriptedApi(ticks)
    run, out = launcher(api)
    # the pod list fails once (503) and answers on the launcher's retry
    state = {"failed": False}

    def pods_once(namespace, selector):
        if isinstance(api.now().get("pods"), Exception) and not state["failed"]:
            state["failed"] = True
            raise api.now()["pods"]
        return [pod("n0")]

    api.pods = pods_once
    run.run(SPEC)
    assert printed_lines(out) == ["step 1/2", "step 2/2"] and "succeeded" in out.getvalue()
    assert "API error 500" in out.getvalue() and "list pods: ApiException 503; retrying" in out.getvalue()


def test_overall_timeout_deletes_and_raises():
    api = ScriptedApi([{"pods": [pod("n0")]}] * 50)
    run, _ = launcher(api, timeout=35)
    with pytest.raises(UserError, match="did not finish within 35 s"):
        run.run(SPEC)
    assert api.calls[-1] == ("delete", SPEC.name)


def test_log_follower_drops_only_repeats():
    out = io.StringIO()
    follow = LogFollower(out)
    assert follow.feed("\n".join([stamped(1, "a"), stamped(1, "b", 7)])) == 2
    assert follow.feed("\n".join([stamped(1, "a"), stamped(1, "b", 7), stamped(1, "c", 7), stamped(2, "d")])) == 2
    assert out.getvalue().splitlines() == ["a", "b", "c", "d"]


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
    assert tj["spec"]["runtimePatches"][0]["manager"] == "wan22.io/pretrain-launcher"
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
    # SIGTERM, then the grace period: train.stop_grace_s for the step and its checkpoint, plus a margin
    graces = [pod_patch["terminationGracePeriodSeconds"], *(r["template"]["spec"]["terminationGracePeriodSeconds"]
              for r in pj["spec"]["pytorchReplicaSpecs"].values()),
              *(t["template"]["spec"]["terminationGracePeriodSeconds"] for t in vj["spec"]["tasks"])]
    assert graces == [SPEC.grace_s + 30] * len(graces) and SPEC.grace_s == 60
    for task in vj["spec"]["tasks"]:
        deserialize(task["template"]["spec"], "V1PodSpec")
    for kind in KINDS:
        docs = rbac_manifests("ml", kind)
        sa, role, binding = (deserialize(d, t) for d, t in zip(docs, ("V1ServiceAccount", "V1Role", "V1RoleBinding")))
        assert role.rules[0].api_groups == [KINDS[kind][0]] and "watch" in role.rules[0].verbs
        assert "events" in role.rules[1].resources and role.rules[2].resources == ["workflows"]
        assert binding.subjects[0].name == sa.metadata.name


def test_deadlines_queues_and_gangs():
    deadline = LaunchSpec(SPEC.name, SPEC.command, SPEC.deployment.replace(volcano_queue="research"),
                          active_deadline_s=3600)
    assert pytorchjob_manifest(deadline)["spec"]["runPolicy"]["activeDeadlineSeconds"] == 3600
    assert pytorchjob_manifest(deadline)["spec"]["runPolicy"]["schedulingPolicy"] == {"queue": "research",
                                                                                        "minAvailable": 2}
    vj = volcano_manifest(deadline)
    assert vj["spec"]["queue"] == "research" and vj["spec"]["minAvailable"] == 2
    assert all(t["template"]["spec"]["activeDeadlineSeconds"] == 3600 for t in vj["spec"]["tasks"])
    with pytest.raises(UserError, match="torch-distributed has not"):
        trainjob_manifest(deadline)
    plain = LaunchSpec(SPEC.name, SPEC.command, SPEC.deployment, active_deadline_s=3600)
    assert trainjob_manifest(plain)["spec"]["activeDeadlineSeconds"] == 3600
    assert set(MANIFESTS) == set(KINDS)


def test_cli_prints_rbac_and_train_jobs():
    r = subprocess.run([sys.executable, "-m", "wan_core", "k8s", "rbac", "--namespace", "ml", "--launcher", "volcano"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and [d["kind"] for d in yaml.safe_load_all(r.stdout)] == ["ServiceAccount", "Role",
                                                                                     "RoleBinding"]
    r = subprocess.run([sys.executable, "-m", "wan_core", "k8s", "train-job", "--config", "/data/t.yaml", "--nnodes",
                        "2", "--launcher", "pytorchjob"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["kind"] == "PyTorchJob"
