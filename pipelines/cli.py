"""`wan22 pipeline compile|run` and `wan22 k8s job`: registered into the wan22 command through the
`wan22.commands` entry point, so wan_core never imports kfp."""
from __future__ import annotations

import sys
from pathlib import Path

from wan_core import __version__
from wan_core.cli import add_output_arg, int_range
from wan_core.errors import UserError
from wan_core.model.variants import VARIANTS


def builders():
    from pipelines import convert, full, lora, sample

    return {"wan22-full": full.build, "wan22-lora": lora.build, "wan22-sample": sample.build,
            "wan22-convert": convert.build}


def compile_all(out: str | Path, deployment) -> list[Path]:
    """Every pipeline as KFP IR (`NAME.yaml`) and as Kubernetes-native Pipeline/PipelineVersion manifests
    (`k8s/NAME.yaml`), with `deployment` applied; written to a temporary folder and moved in place."""
    import os
    import shutil
    import tempfile

    from kfp import compiler

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(dir=out, prefix=".compile-") as tmp:
        (Path(tmp) / "k8s").mkdir()
        for name, build in builders().items():
            func = build(deployment)
            compiler.Compiler().compile(func, str(Path(tmp) / f"{name}.yaml"))
            options = compiler.KubernetesManifestOptions(pipeline_name=name, pipeline_version_name=f"{name}-v{__version__.replace('.', '-')}",
                                                         include_pipeline_manifest=True)
            compiler.Compiler().compile(func, str(Path(tmp) / "k8s" / f"{name}.yaml"), kubernetes_manifest_format=True,
                                        kubernetes_manifest_options=options)
            written += [Path(f"{name}.yaml"), Path("k8s") / f"{name}.yaml"]
        (out / "k8s").mkdir(exist_ok=True)
        for rel in written:
            os.replace(Path(tmp) / rel, out / rel)
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / rel for rel in written]


def deployment_from_args(args):
    """The Deployment that the --profile/--image/--pvc/... options describe."""
    import json

    from components.k8s.deployment import Deployment

    selector = None
    if args.node_selector is not None:
        selector = {}
        for item in args.node_selector:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UserError(f"--node-selector {item!r}: expected KEY=VALUE")
            selector[key] = value
    tolerations = None
    if args.toleration is not None:
        tolerations = []
        for item in args.toleration:
            try:
                t = json.loads(item)
            except json.JSONDecodeError as exc:
                raise UserError(f"--toleration {item!r}: not JSON ({exc.msg})") from None
            if not isinstance(t, dict):
                raise UserError(f"--toleration {item!r}: expected a JSON object like "
                                '{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}')
            tolerations.append(t)
    return Deployment(profile=args.profile, image=args.image or "", image_pull_secret=args.image_pull_secret or "",
                      pvc=args.pvc, storage_secret=args.storage_secret or "", namespace=args.namespace or "",
                      service_account=args.service_account or "", node_selector=selector, tolerations=tolerations,
                      accelerator_resource=args.accelerator_resource, devices_per_node=args.devices_per_node,
                      nnodes=args.nnodes, volcano_queue=args.volcano_queue or "",
                      ascend_runtime=not args.no_ascend_runtime, supplemental_groups=tuple(args.supplemental_group or ()),
                      arch=args.arch or "")


def add_deployment_args(p, profile: str = "cpu", devices_per_node: int = 0) -> None:
    from components.k8s.profiles import IMAGES, PROFILES

    g = p.add_argument_group("deployment (where the pods run)")
    g.add_argument("--profile", default=profile, choices=list(PROFILES),
                   help=f"accelerator profile: resource name, env, node selector, tolerations (default: {profile})")
    g.add_argument("--image", help=f"container image (default: the profile's, e.g. {IMAGES['npu']})")
    g.add_argument("--image-pull-secret", help="Secret for pulling the image")
    g.add_argument("--pvc", default="wan22-data", help="claim mounted at /data; '' for none (default: wan22-data)")
    g.add_argument("--storage-secret", help="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for fsspec URLs")
    g.add_argument("--namespace", help="namespace of the training job (default: the submitting pod's)")
    g.add_argument("--service-account", help="service account of the training job's pods")
    g.add_argument("--node-selector", action="append", metavar="KEY=VALUE",
                   help="node selector entry, repeatable (default: the profile's)")
    g.add_argument("--toleration", action="append", metavar="JSON",
                   help="toleration as a JSON object, repeatable (default: the profile's)")
    g.add_argument("--accelerator-resource", help="extended resource name, '' for none (default: the profile's)")
    g.add_argument("--devices-per-node", type=int_range(0), default=devices_per_node,
                   help=f"accelerators (and training processes) per node (default: {devices_per_node})")
    g.add_argument("--nnodes", type=int_range(1), default=1, help="training nodes")
    g.add_argument("--volcano-queue", help="Volcano queue of the training job (launchers volcano and pytorchjob; "
                   "refused for trainjob, whose torch-distributed runtime reads no queue)")
    g.add_argument("--arch", choices=["amd64", "arm64"], help="the image's architecture: every pod is pinned to "
                   "kubernetes.io/arch nodes of it (e.g. arm64 for Kunpeng NPU nodes)")
    g.add_argument("--supplemental-group", type=int_range(0), action="append", metavar="GID",
                   help="extra group of every pod, repeatable (Ascend: the gid of HwHiAiUser, which CANN's files "
                   "belong to)")
    g.add_argument("--no-ascend-runtime", action="store_true",
                   help="npu nodes without Ascend Docker Runtime: pods mount the driver from the node and set "
                   "ASCEND_VISIBLE_DEVICES, as MindCluster's PyTorch job sample does")


def _cmd_compile(args) -> int:
    deployment = deployment_from_args(args)
    for path in compile_all(args.out, deployment):
        print(path)
    return 0


def _cmd_run(args) -> int:
    from pipelines.local import run_local

    # the layout flags are shorthands for their training-config keys; --set comes after them and wins
    layout = [f"parallel.cp={args.cp}", f"parallel.cp_algo={args.cp_algo}"]
    if args.ulysses_degree:
        layout.append(f"parallel.ulysses_degree={args.ulysses_degree}")
    report = run_local(args.workdir, variant=args.variant, nproc=args.nproc, iters=args.iters,
                       overrides=[*layout, *args.set], containers=args.containers, image=args.image,
                       verbose=args.verbose, overwrite=args.overwrite, pipeline=args.pipeline, storage=args.storage,
                       feature_cache=args.feature_cache)
    print(f"pipeline finished; report: {report}")
    return 0


def _cmd_k8s_job(args) -> int:
    import yaml

    from wan_core.cli import build_parser
    from components.k8s.manifests import step_job

    # the step's own arguments are parsed now, as the pod would parse them: a typo fails here, not in the pod
    step_args = build_parser().parse_args([args.step, *args.passthrough])
    if getattr(step_args, "passthrough", None):
        raise UserError(f"wan22 {args.step} takes no arguments after --")
    manifest = step_job(args.step, args.passthrough, deployment_from_args(args), args.devices_per_node, name=args.name)
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0


def _cmd_k8s_rbac(args) -> int:
    import yaml

    from components.k8s.launcher import rbac_manifests

    sys.stdout.write(yaml.safe_dump_all(rbac_manifests(args.namespace, args.launcher, args.service_account),
                                        sort_keys=False))
    return 0


def _cmd_k8s_train_job(args) -> int:
    import yaml

    from components.k8s.launcher import MANIFESTS, LaunchSpec

    from components.k8s.launcher import train_command

    spec = LaunchSpec(args.name, train_command(args.config, args.max_restarts), deployment_from_args(args),
                      grace_s=args.stop_grace_s)
    sys.stdout.write(yaml.safe_dump(MANIFESTS[args.launcher](spec), sort_keys=False))
    return 0


def register(sub) -> None:
    from components.k8s.launcher import KINDS
    from components.k8s.manifests import STEPS
    from wan_core.parallel.mesh import CP_ALGO_NAMES

    p = sub.add_parser("pipeline", help="compile the Kubeflow pipelines, or run the whole DAG locally",
                       epilog="examples:\n  wan22 pipeline run\n  wan22 pipeline compile --output compiled")
    ps = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    c = ps.add_parser("compile", help="write every pipeline as KFP IR YAML and as Kubernetes-native manifests",
                      epilog="example:\n  wan22 pipeline compile --output compiled --profile npu "
                      f"--image registry.example/wan22:{__version__}-npu")
    add_output_arg(c, "out", ("--out",), "folder for NAME.yaml (KFP IR) and k8s/NAME.yaml")
    add_deployment_args(c, devices_per_node=8)
    c.set_defaults(func=_cmd_compile)
    r = ps.add_parser("run", help="run the full DAG on this machine with kfp.local (tiny weights and data)",
                      epilog="examples:\n  wan22 pipeline run\n  wan22 pipeline run --variant t2v-a14b --containers\n"
                      "  wan22 pipeline run --pipeline lora")
    r.add_argument("--local", action="store_true", help="accepted for compatibility: every run here is local")
    r.add_argument("--containers", action="store_true",
                   help="run each step in the cpu image with kfp.local's DockerRunner (Docker, or podman's "
                        "Docker-compatible socket via DOCKER_HOST) instead of subprocesses")
    r.add_argument("--image", help="image for --containers (default: wan22:<version>-cpu, as images/build.sh tags it)")
    r.add_argument("--pipeline", default="full", choices=["full", "lora"],
                   help="wan22-full (pretraining) or wan22-lora (LoRA fine-tuning); default: full")
    r.add_argument("--variant", default="ti2v-5b", choices=VARIANTS,
                   help="default: ti2v-5b")
    r.add_argument("--workdir", help="run folder (default: runs/<timestamp>)")
    r.add_argument("--nproc", type=int_range(1), default=2, help="training processes")
    r.add_argument("--cp", type=int_range(1), default=2, help="context-parallel degree")
    r.add_argument("--cp-algo", default="ulysses", choices=CP_ALGO_NAMES,
                   help="context-parallel algorithm (default: ulysses)")
    r.add_argument("--ulysses-degree", type=int_range(0), default=0,
                   help="Ulysses group size inside CP for usp (default: 0, i.e. not usp)")
    r.add_argument("--iters", type=int_range(1), default=6, help="training steps")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training-config key, as in wan22 train (repeatable), e.g. "
                   "--set train.activation_checkpointing=true --set train.grad_accum=2 --set data.num_workers=1")
    r.add_argument("--overwrite", action="store_true", help="replace an earlier run in --workdir")
    r.add_argument("--feature-cache", action="store_true",
                   help="wan22-full's feature_cache: encode the dataset once and train from that cache")
    r.add_argument("--storage", metavar="URL", help="keep the run's work folder in object storage (e.g. "
                   "s3://bucket/run; credentials and AWS_ENDPOINT_URL from the environment), as a cluster run on a "
                   "store does; copied back into the run folder for the report")
    r.add_argument("--verbose", action="store_true",
                   help="show every step's full output (kfp.local's executor logs, library warnings)")
    r.set_defaults(func=_cmd_run)

    k = sub.add_parser("k8s", help="Kubernetes manifests for kubectl users",
                       epilog="example:\n  wan22 k8s rbac --namespace ml | kubectl apply -f -")
    ks = k.add_subparsers(dest="k8s_command", required=True, metavar="KIND")
    j = ks.add_parser("job", help="print a batch/v1 Job running one wan22 step (kubectl apply -f -)")
    j.add_argument("step", choices=STEPS)
    j.epilog = ("the step's own arguments follow -- and are checked here.\nexample:\n  wan22 k8s job consolidate "
                "--profile npu -- --source /data/save --output /data/mm")
    j.add_argument("--name", help="the Job's name (default: wan22-STEP)")
    add_deployment_args(j)
    j.set_defaults(func=_cmd_k8s_job)
    rb = ks.add_parser("rbac", help="print the ServiceAccount, Role and RoleBinding the pretrain launcher needs",
                       epilog="example:\n  wan22 k8s rbac --namespace ml --launcher trainjob | kubectl apply -f -")
    rb.add_argument("--namespace", required=True, help="the namespace the pipeline's pods run in")
    rb.add_argument("--launcher", default="trainjob", choices=list(KINDS), help="the training job kind to allow")
    rb.add_argument("--service-account", default="wan22-launcher", help="the account the pretrain step runs as")
    rb.set_defaults(func=_cmd_k8s_rbac)
    tj = ks.add_parser("train-job", help="print the multi-node training job the pretrain step would submit",
                       epilog="example:\n  wan22 k8s train-job --config /data/train.yaml --nnodes 2 "
                       "--devices-per-node 8")
    tj.add_argument("--launcher", default="trainjob", choices=list(KINDS), help="the training job kind")
    tj.add_argument("--name", default="wan22-train", help="the job's name")
    tj.add_argument("--max-restarts", type=int, default=0, help="torchrun's restarts of the ranks on each node")
    tj.add_argument("--stop-grace-s", type=int, default=60, help="the config's train.stop_grace_s (the pods get "
                    "this plus 30 s to stop)")
    tj.add_argument("--config", required=True, help="training config path inside the pods (on the data volume)")
    add_deployment_args(tj, profile="npu", devices_per_node=8)
    tj.set_defaults(func=_cmd_k8s_train_job)
