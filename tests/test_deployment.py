"""Cluster settings reach every pod: each pipeline compiled for each profile, its tasks resolved as KFP
would resolve them for a run, and the training job that the pretrain step submits built by running the
component itself against a recording API. Every manifest the project emits validates against the
upstream CRDs (../shared/k8s-crds) or the Kubernetes OpenAPI schemas, with no null fields."""
import json
import re
from pathlib import Path

import pytest
import yaml

from helpers.k8s_schemas import assert_valid, problems
from wan_core.errors import UserError
from components.k8s.deployment import STORAGE_SECRET_KEYS, Deployment
from components.k8s.launcher import KINDS
from components.k8s.profiles import PROFILES
PLACEHOLDER = re.compile(r"^\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}$")


def given(profile):
    """Distinctive settings, none equal to a profile default."""
    return Deployment(profile=profile, image=f"registry.example/team/wan22:{profile}-7", image_pull_secret="regcred",
                      pvc="team-data", storage_secret="s3-creds", namespace="ml-team", service_account="trainer-sa",
                      node_selector={"pool": f"{profile}-pool", "zone": "b"},
                      tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
                      accelerator_resource="" if profile == "cpu" else f"example.com/{profile}-card",
                      devices_per_node=4, nnodes=3, volcano_queue="research")


# run arguments that differ from the compiled defaults: a run can move without recompiling
RUN_OVERRIDES = {"image": "registry.example/team/wan22:hotfix", "pvc_name": "other-data",
                 "node_selector": {"pool": "spare"}, "devices_per_node": 2}


@pytest.fixture(scope="module", params=PROFILES)
def compiled(request, tmp_path_factory):
    from pipelines.cli import compile_all

    deployment = given(request.param)
    out = tmp_path_factory.mktemp(f"compiled-{request.param}")
    compile_all(out, deployment)
    return deployment, out


def load(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def resolve_tasks(spec, arguments):
    """[(task name, component, {input: value}, {enclosing DAG's input: value})] for every container task,
    sub-DAGs included, resolved from the run's arguments the way the KFP driver does (outputs of other
    tasks are left as '<output>'). Platform settings refer to the enclosing DAG's inputs."""
    root_inputs = spec["root"]["inputDefinitions"]["parameters"]
    values = {name: arguments.get(name, p.get("defaultValue")) for name, p in root_inputs.items()}
    found = []

    def walk(dag, scope):
        for name, task in dag["tasks"].items():
            inputs = {}
            for key, src in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in src:
                    inputs[key] = scope[src["componentInputParameter"]]
                elif "runtimeValue" in src:
                    inputs[key] = src["runtimeValue"]["constant"]
                else:
                    inputs[key] = "<output>"
            comp = spec["components"][task["componentRef"]["name"]]
            if "dag" in comp:
                walk(comp["dag"], inputs)
            else:
                found.append((name, comp, inputs, scope))

    walk(spec["root"]["dag"], values)
    return found


def component_args(comp, inputs):
    """A task's resolved inputs as its component function takes them (the KFP executor casts JSON numbers
    to the declared type)."""
    types = {k: p["parameterType"] for k, p in comp["inputDefinitions"]["parameters"].items()}
    return {k: int(v) if types[k] == "NUMBER_INTEGER" else v for k, v in inputs.items() if k in types}


def placeholder(value, inputs):
    m = PLACEHOLDER.match(str(value))
    return inputs[m.group(1)] if m else value


def param(ref, inputs):
    """A kfp-kubernetes parameter reference (componentInputParameter or runtimeValue) resolved."""
    if "componentInputParameter" in ref:
        return inputs[ref["componentInputParameter"]]
    return ref["runtimeValue"]["constant"]


HEAVY_WHEN_LOCAL = ("pretrain", "batch-sample", "compare-lora", "cache-features")


def pipeline_names():
    from pipelines.cli import builders

    return list(builders())


@pytest.mark.parametrize("name", pipeline_names())
@pytest.mark.parametrize("override", [False, True], ids=["compiled-defaults", "run-overrides"])
def test_settings_reach_every_task(compiled, name, override):
    deployment, out = compiled
    spec, platform = load(out / f"{name}.yaml")
    roots = spec["root"]["inputDefinitions"]["parameters"]
    arguments = {k: v for k, v in RUN_OVERRIDES.items() if override and k in roots}
    expect = lambda key, default: arguments.get(key, default)  # noqa: E731
    image, pvc = expect("image", deployment.image), expect("pvc_name", deployment.pvc)
    selector = expect("node_selector", deployment.node_selector)
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = resolve_tasks(spec, arguments)
    assert tasks
    accelerated = 0
    for task, comp, inputs, scope in tasks:
        label = comp["executorLabel"]
        container, pod = executors[label]["container"], k8s[label]
        assert placeholder(container["image"], inputs) == image, task
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert env["HF_HUB_OFFLINE"] == "1" and (deployment.profile != "npu" or env["HCCL_CONNECT_TIMEOUT"] == "600")
        assert [param(m["pvcNameParameter"], scope) for m in pod["pvcMount"]] == [pvc], task
        assert pod["pvcMount"][0]["mountPath"] == "/data"
        # the keys s3fs needs, then the optional endpoint (MinIO) and region, which a Secret may leave out
        assert [(s["secretName"], sorted(k["envVar"] for k in s["keyToEnv"]), bool(s.get("optional")))
                for s in pod["secretAsEnv"]] == \
            [(deployment.storage_secret, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], False),
             (deployment.storage_secret, ["AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"], True)]
        # never BestEffort (the first pods evicted): every task asks for CPU and memory
        assert {"cpuRequest", "memoryRequest"} <= set(container.get("resources", {})), task
        assert [s["secretName"] for s in pod["imagePullSecret"]] == [deployment.image_pull_secret]
        resources = container.get("resources", {})
        if "nodeSelector" in pod:  # a task placed on accelerator nodes
            accelerated += 1
            assert any(task.startswith(h) for h in HEAVY_WHEN_LOCAL), task
            assert param(pod["nodeSelector"]["nodeSelectorJson"], scope) == selector, task
            assert [param(t["tolerationJson"], scope) for t in pod["tolerations"]] == [deployment.tolerations]
            if deployment.accelerator_resource:
                count = (1 if task.startswith(("compare", "cache-features")) else
                         inputs["pipelinechannel--devices" if name == "wan22-sample" else
                                "pipelinechannel--sample_devices" if task.startswith("batch") else
                                "pipelinechannel--devices_per_node"])
                assert placeholder(resources["accelerator"]["resourceType"], inputs) == deployment.accelerator_resource
                assert int(placeholder(resources["accelerator"]["resourceCount"], inputs)) == count
                if task.startswith("pretrain"):
                    assert count == expect("devices_per_node", deployment.devices_per_node)
            else:
                assert "accelerator" not in resources
        else:
            assert "accelerator" not in resources and "tolerations" not in pod, task
    if name == "wan22-convert":
        assert accelerated == 0
    else:
        assert accelerated >= 1


class RecordingApi:
    """Stands in for the cluster: records the jobs the launcher creates and reports each complete."""

    def __init__(self):
        self.created = []

    def create(self, kind, namespace, body):
        self.created.append((kind, namespace, body))
        return body

    def get(self, kind, namespace, name):
        from kubernetes.client.exceptions import ApiException

        if name not in {body["metadata"]["name"] for _, _, body in self.created}:
            raise ApiException(status=404, reason="NotFound")
        return self.done(kind)

    @staticmethod
    def done(kind):
        return ({"status": {"state": {"phase": "Completed"}}} if kind == "volcano" else
                {"status": {"conditions": [{"type": "Complete", "status": "True"}]}})

    def watch(self, kind, namespace, name, resource_version, timeout_s):
        yield "MODIFIED", self.done(kind)

    def delete(self, *a):
        raise AssertionError("nothing should be deleted")

    def pod(self, namespace, name):
        raise OSError("not in a cluster")

    def pods(self, namespace, selector):
        return []

    def log(self, *a, **k):
        return ""


@pytest.mark.parametrize("launcher", list(KINDS))
def test_submitted_training_job_carries_the_run_settings(compiled, launcher, tmp_path, monkeypatch, artifact,
                                                         tiny_checkpoints):
    """The pretrain step that submits a cluster job, run from its compiled inputs, submits exactly the
    deployment's image, claim, secrets, selectors, tolerations and resources - and requests nothing itself."""
    from components.pretrain import pretrain
    from components.k8s import launcher as launcher_module
    from wan_core.fsutil import write_marker

    deployment, out = compiled
    spec, platform = load(out / "wan22-full.yaml")
    api = RecordingApi()
    monkeypatch.setattr(launcher_module, "ClusterApi", lambda: api)
    monkeypatch.setattr(launcher_module, "_pod_namespace", lambda: "from-pod")
    executors = spec["deploymentSpec"]["executors"]
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # the pretrain tasks of the "train on the cluster" branches: not placed on accelerator nodes
    run = {"launcher": launcher, "base_model": str(tiny_checkpoints["ti2v-5b"]), "data_txt": "/data/d/data.txt"}
    submitters = [(t, c, i) for t, c, i, _ in resolve_tasks(spec, run)
                  if t.startswith("pretrain") and "nodeSelector" not in placed[c["executorLabel"]]]
    # one expert: dit; two experts at once: high, low; one after the other: high, low
    assert len(submitters) == 5
    for task, comp, inputs in submitters:
        assert "accelerator" not in executors[comp["executorLabel"]]["container"].get("resources", {})
        args = component_args(comp, inputs)
        save = tmp_path / task
        save.mkdir()
        write_marker(save, "train")  # what the cluster job leaves: a training folder with its metrics
        (save / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5, "lr": 1e-5, "grad_norm": 1.0,
                                                        "samples_per_s": 1.0}) + "\n")
        args.update(manifest=str(tmp_path / "manifest.json"), load_path="/data/base-mm", save_path=str(save),
                    workdir="", run_id="run-42")
        if args["expert"]:  # the two-expert branch runs for the A14B variants only
            args.update(train_set=["model.variant=t2v-a14b"], base_model=str(tiny_checkpoints["t2v-a14b"]))
        if launcher == "trainjob":  # torch-distributed reads no queue: the step refuses one before submitting
            with pytest.raises(UserError, match="volcano_queue"):
                pretrain.python_func(**args, curve=artifact(f"{task}-q.html"), metrics=artifact(f"{task}-q"))
            args["volcano_queue"] = ""
        pretrain.python_func(**args, curve=artifact(f"{task}.html"), metrics=artifact(f"{task}-m"))
    # a run takes one branch; here all five ran, and the second of each expert found the first's succeeded job
    assert len(api.created) == 3 and len({body["metadata"]["name"] for _, _, body in api.created}) == 3
    for kind, namespace, body in api.created:
        assert kind == launcher and namespace == deployment.namespace == body["metadata"]["namespace"]
        assert_valid(body, f"{launcher} for {deployment.profile}")
        for pod in job_pods(launcher, body):
            assert pod["image"] == deployment.image and pod["command"][:2] == ["wan22", "train"]
            assert pod["claim"] == deployment.pvc and pod["pull_secrets"] == [deployment.image_pull_secret]
            assert pod["node_selector"] == deployment.node_selector and pod["tolerations"] == deployment.tolerations
            assert pod["service_account"] == deployment.service_account
            secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in pod["env"]
                          if "secretKeyRef" in e.get("valueFrom", {})}
            assert secret_env == {k: deployment.storage_secret for k in STORAGE_SECRET_KEYS}
            want = {deployment.accelerator_resource: str(deployment.devices_per_node)} \
                if deployment.accelerator_resource else None
            assert pod["limits"] == want
            assert_runs_in_a_profile_namespace(pod)
        assert job_size(launcher, body) == (deployment.nnodes, deployment.devices_per_node)


def test_usp_runs_from_the_pipeline(tmp_path, monkeypatch, artifact, tiny_checkpoints, demo_dataset):
    """The local-training pretrain task of the compiled wan22-full, run with cp_algo=usp and a Ulysses
    degree as run arguments, trains with that layout (4 processes: Ulysses 2 x Ring 2). Its losses equal
    one process's: tests/test_parallel.py."""
    from components.pretrain import pretrain
    from pipelines.cli import compile_all
    from wan_core.data.manifest import validate_dataset

    compile_all(tmp_path / "compiled", Deployment())
    spec, platform = load(tmp_path / "compiled" / "wan22-full.yaml")
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    arguments = {"launcher": "local", "devices_per_node": 4, "base_model": str(tiny_checkpoints["ti2v-5b"]),
                 "train_set": ["parallel.cp=4", "parallel.cp_algo=usp", "parallel.ulysses_degree=2", "train.iters=2",
                               "train.save_interval=2", "data.num_frames=9", "data.height=32", "data.width=32",
                               "train.dtype=fp32"]}
    (task, comp, inputs, _), = [t for t in resolve_tasks(spec, arguments)
                                if t[0] == "pretrain" and "nodeSelector" in placed[t[1]["executorLabel"]]]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([r.entry for r in validate_dataset(demo_dataset / "data.txt")[0]]))
    args = component_args(comp, inputs)
    # outputs of earlier tasks: the manifest, no base conversion, no feature cache (feature_cache is off)
    args.update(manifest=str(manifest), load_path="", workdir=str(tmp_path / "work"), run_id="run-usp", features="")
    metrics = artifact("m")
    save = pretrain.python_func(**args, curve=artifact("c.html"), metrics=metrics)
    resolved = json.loads((Path(save) / "config.resolved.json").read_text())["parallel"]
    assert (resolved["cp"], resolved["cp_algo"], resolved["ulysses_degree"]) == (4, "usp", 2)
    assert metrics.metrics["steps"] == 2


def job_pods(kind, body):
    """What each kind's pods get, read from the manifest in that kind's own layout."""
    if kind == "trainjob":
        trainer = body["spec"]["trainer"]
        node = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
        template = node["template"]["spec"]["template"]
        pod = template["spec"]
        return [dict(image=trainer["image"], command=trainer["command"], env=trainer["env"],
                     claim=next(v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                                if "persistentVolumeClaim" in v),
                     pull_secrets=[s["name"] for s in pod["imagePullSecrets"]], node_selector=pod["nodeSelector"],
                     tolerations=pod["tolerations"], service_account=pod["serviceAccountName"],
                     limits=trainer.get("resourcesPerNode", {}).get("limits"),
                     requests=trainer["resourcesPerNode"]["requests"], metadata=template["metadata"],
                     security=pod["securityContext"])]
    if kind == "pytorchjob":
        templates = [r["template"] for r in body["spec"]["pytorchReplicaSpecs"].values()]
    else:
        templates = [t["template"] for t in body["spec"]["tasks"]]
    return [dict(image=p["containers"][0]["image"], command=p["containers"][0]["command"], env=p["containers"][0]["env"],
                 claim=next(v["persistentVolumeClaim"]["claimName"] for v in p["volumes"] if "persistentVolumeClaim" in v),
                 pull_secrets=[s["name"] for s in p["imagePullSecrets"]], node_selector=p["nodeSelector"],
                 tolerations=p["tolerations"], service_account=p["serviceAccountName"],
                 limits=p["containers"][0].get("resources", {}).get("limits"),
                 requests=p["containers"][0]["resources"]["requests"], metadata=t["metadata"],
                 security=p["securityContext"])
            for t in templates for p in [t["spec"]]]


def assert_runs_in_a_profile_namespace(pod):
    """No Istio sidecar (it keeps rendezvous from forming and Jobs from completing), the data volume writable by
    the non-root user (fsGroup), and CPU and memory requests (never BestEffort)."""
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pod["security"]["fsGroup"] == 1000 and pod["security"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert {"cpu", "memory"} <= set(pod["requests"])


def job_size(kind, body):
    if kind == "trainjob":
        return body["spec"]["trainer"]["numNodes"], body["spec"]["trainer"]["numProcPerNode"]
    if kind == "pytorchjob":
        replicas = body["spec"]["pytorchReplicaSpecs"]
        return sum(r["replicas"] for r in replicas.values()), int(body["spec"]["nprocPerNode"])
    env = {e["name"]: e.get("value") for e in body["spec"]["tasks"][0]["template"]["spec"]["containers"][0]["env"]}
    return sum(t["replicas"] for t in body["spec"]["tasks"]), int(env["NPUS_PER_NODE"])


def test_compiled_kubernetes_manifests_validate(compiled):
    _, out = compiled
    for name in pipeline_names():
        docs = load(out / "k8s" / f"{name}.yaml")
        assert {d["kind"] for d in docs} == {"Pipeline", "PipelineVersion"}
        for doc in docs:
            assert_valid(doc, f"k8s/{name}.yaml {doc['kind']}")


@pytest.fixture
def run_cli(capsys):
    """The wan22 command in this process (a subprocess per call costs seconds of imports)."""
    from wan_core.cli import main

    def run(*args):
        assert main(list(args)) == 0
        return list(yaml.safe_load_all(capsys.readouterr().out))

    return run


@pytest.mark.parametrize("profile", PROFILES)
def test_cli_manifests_validate(profile, run_cli):
    common = ["--profile", profile, "--image", "reg.example/wan22:1", "--namespace", "ml", "--image-pull-secret",
              "regcred", "--storage-secret", "s3", "--node-selector", "pool=a", "--devices-per-node", "2"]
    for step, args in (("validate-dataset", ["--data-txt", "/data/d/data.txt"]), ("train", ["--config", "/data/t.yaml"]),
                       ("sample", ["--model", "/data/m", "--prompts", "/data/p.txt", "--output", "/data/o"])):
        (job,) = run_cli("k8s", "job", step, *common, "--", *args)
        assert_valid(job, f"k8s job {step}")
        template = job["spec"]["template"]
        assert_runs_in_a_profile_namespace(dict(metadata=template["metadata"], security=template["spec"]["securityContext"],
                                                requests=template["spec"]["containers"][0]["resources"]["requests"]))
        assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "a"}
        # training's pod waits for the checkpoint it writes on SIGTERM: train.stop_grace_s (60) plus 30 s
        assert template["spec"].get("terminationGracePeriodSeconds") == (90 if step == "train" else None)
    for launcher in KINDS:
        (job,) = run_cli("k8s", "train-job", "--launcher", launcher, "--config", "/data/t.yaml", "--nnodes", "2",
                         "--stop-grace-s", "120", "--max-restarts", "3", *common)
        assert_valid(job, f"k8s train-job {launcher}")
        text = yaml.safe_dump(job)
        assert text.count("terminationGracePeriodSeconds: 150") >= 1 and "--max-restarts" in text
        for doc in run_cli("k8s", "rbac", "--namespace", "ml", "--launcher", launcher):
            assert_valid(doc, f"rbac {doc['kind']}")


def test_validation_can_fail():
    """The checks reject what a cluster would reject: unknown fields, wrong types, nulls, bad names."""
    from components.k8s.launcher import LaunchSpec, pytorchjob_manifest, trainjob_manifest, volcano_manifest
    from components.k8s.manifests import step_job

    spec = LaunchSpec("wan22-train-x", ["wan22", "train"], given("npu").replace(volcano_queue=""))
    tj = trainjob_manifest(spec)
    assert not problems(tj)
    tj["spec"]["trainer"]["numProcsPerNode"] = 8
    assert any("numProcsPerNode" in p for p in problems(tj))
    # the admission rules beyond the schema (helpers/admission.py), each as the cluster would refuse it
    tj = trainjob_manifest(spec)
    tj["spec"]["runtimePatches"][0]["manager"] = "wan22"
    assert any("domain-prefixed path" in p for p in problems(tj))
    tj = trainjob_manifest(spec)
    tj["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "2"})
    assert any("reserved envs" in p for p in problems(tj))
    tj = trainjob_manifest(spec)
    tj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["name"] = "trainer"
    assert any("doesn't exist in the runtime" in p for p in problems(tj))
    pj = pytorchjob_manifest(spec)
    assert not problems(pj)
    pj["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    assert any("Master].replicas: must be 1" in p for p in problems(pj))
    pj = pytorchjob_manifest(spec)
    pj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"] = "trainer"
    assert any("container with name pytorch" in p for p in problems(pj))
    vj = volcano_manifest(spec)
    assert not problems(vj)
    vj["spec"]["minAvailable"] = "two"
    assert any("minAvailable" in p for p in problems(vj))
    vj = volcano_manifest(spec)
    vj["spec"]["minAvailable"] = 9
    assert any("should not be greater than total replicas" in p for p in problems(vj))
    vj = volcano_manifest(spec)
    vj["spec"]["policies"][0]["action"] = "Explode"
    assert any("invalid policy" in p for p in problems(vj))
    vj = volcano_manifest(spec)
    vj["spec"]["tasks"][0]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] = "nowhere"
    assert any("names no volume" in p for p in problems(vj))
    job = step_job("train", [], given("cuda"), 1)
    job["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert problems(job)
    job = step_job("train", [], given("cuda"), 1)
    job["metadata"]["labels"]["x"] = None
    assert problems(job) == ["null at .metadata.labels.x"]
    job = step_job("train", [], given("cuda"), 1, name="Bad_Name")
    assert not problems(job)  # names are normalised ...
    job["metadata"]["name"] = "Bad_Name"
    assert problems(job)  # ... and a bad one is caught


def test_bad_deployments_are_refused():
    with pytest.raises(UserError, match="nnodes"):
        Deployment(nnodes=0)
    with pytest.raises(UserError, match="devices_per_node"):
        Deployment(devices_per_node=-1)
    with pytest.raises(UserError, match="unknown keys"):
        Deployment(tolerations=[{"key": "a", "efect": "NoSchedule"}])
    with pytest.raises(UserError, match="profile"):
        Deployment(profile="tpu")
    assert Deployment(profile="npu").accelerator_resource == "huawei.com/Ascend910"
    assert Deployment(profile="npu", accelerator_resource="").resources(8) == {}
