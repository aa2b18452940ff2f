"""`wan22 pipeline compile|run` and `wan22 k8s job`: registered into the wan22 command through the
`wan22.commands` entry point, so wan_core never imports kfp."""
from __future__ import annotations

import sys
from pathlib import Path

PIPELINES = ("wan22-full", "wan22-sample", "wan22-convert")


def builders():
    from pipelines import convert, full, sample

    return {"wan22-full": full.build, "wan22-sample": sample.build, "wan22-convert": convert.build}


def compile_all(out: str | Path, profile: str = "cpu", volume: str = "pvc", storage_secret: str | None = None,
                image_pull_secret: str | None = None) -> list[Path]:
    from kfp import compiler

    from pipelines.profiles import Deployment

    out = Path(out)
    (out / "k8s").mkdir(parents=True, exist_ok=True)
    deployment = Deployment(profile, volume, storage_secret, image_pull_secret)
    written = []
    for name, build in builders().items():
        func = build(deployment)
        compiler.Compiler().compile(func, str(out / f"{name}.yaml"))
        options = compiler.KubernetesManifestOptions(pipeline_name=name, pipeline_version_name=f"{name}-v0-1-0",
                                                     include_pipeline_manifest=True)
        compiler.Compiler().compile(func, str(out / "k8s" / f"{name}.yaml"), kubernetes_manifest_format=True,
                                    kubernetes_manifest_options=options)
        written += [out / f"{name}.yaml", out / "k8s" / f"{name}.yaml"]
    return written


def _cmd_compile(args) -> int:
    import os

    from wan_core.device import IMAGES

    # read by components/ when they are first imported, which happens below
    os.environ["WAN22_IMAGE"] = args.image or os.environ.get("WAN22_IMAGE") or IMAGES[args.profile]
    for path in compile_all(args.out, args.profile, args.volume, args.storage_secret, args.image_pull_secret):
        print(path)
    return 0


def _cmd_run(args) -> int:
    from pipelines.local import run_local

    if not args.local:
        from wan_core.errors import UserError

        raise UserError("only --local runs start from here; compile with `wan22 pipeline compile` and submit the YAML "
                        "with the kfp client or the Kubeflow UI (see README)")
    report = run_local(args.workdir, variant=args.variant, nproc=args.nproc, cp=args.cp, iters=args.iters)
    print(f"pipeline finished; report: {report}")
    return 0


def _cmd_k8s_job(args) -> int:
    import yaml

    from wan_core.k8s.manifests import step_job

    from wan_core.device import IMAGES

    manifest = step_job(args.step, args.passthrough, args.image or IMAGES[args.profile], args.profile, args.devices, args.pvc or None,
                        name=args.name, namespace=args.namespace, image_pull_secret=args.image_pull_secret,
                        storage_secret=args.storage_secret)
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0


def _cmd_k8s_rbac(args) -> int:
    import yaml

    from wan_core.k8s.launcher import rbac_manifests

    sys.stdout.write(yaml.safe_dump_all(rbac_manifests(args.namespace, args.launcher, args.service_account),
                                        sort_keys=False))
    return 0


def _cmd_k8s_train_job(args) -> int:
    import yaml

    from wan_core.device import IMAGES
    from wan_core.k8s.launcher import MANIFESTS, LaunchSpec

    spec = LaunchSpec(args.name, args.namespace, args.image or IMAGES[args.profile],
                      ["wan22", "train", "--config", args.config], args.nnodes, args.nproc, args.profile, args.pvc or None,
                      volcano_queue=args.volcano_queue)
    sys.stdout.write(yaml.safe_dump(MANIFESTS[args.launcher](spec), sort_keys=False))
    return 0


def register(sub) -> None:
    from wan_core.device import IMAGES

    p = sub.add_parser("pipeline", help="compile the Kubeflow pipelines, or run the whole DAG locally")
    ps = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    c = ps.add_parser("compile", help="write every pipeline as KFP IR YAML and as Kubernetes-native manifests")
    c.add_argument("--out", required=True)
    c.add_argument("--profile", default="cpu", choices=["npu", "cuda", "cpu"])
    c.add_argument("--volume", default="pvc", choices=["pvc", "none"])
    c.add_argument("--image", help="container image of every step (default: the profile's, "
                   f"e.g. {IMAGES['npu']})")
    c.add_argument("--storage-secret", help="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for fsspec URLs")
    c.add_argument("--image-pull-secret")
    c.set_defaults(func=_cmd_compile)
    r = ps.add_parser("run", help="run the full DAG on this machine with kfp.local (tiny weights and data)")
    r.add_argument("--local", action="store_true", required=True)
    r.add_argument("--variant", default="ti2v-5b", choices=["ti2v-5b", "t2v-a14b", "i2v-a14b"])
    r.add_argument("--workdir", help="run folder (default runs/<timestamp>)")
    r.add_argument("--nproc", type=int, default=2)
    r.add_argument("--cp", type=int, default=2)
    r.add_argument("--iters", type=int, default=6)
    r.set_defaults(func=_cmd_run)

    k = sub.add_parser("k8s", help="Kubernetes manifests for kubectl users")
    ks = k.add_subparsers(dest="k8s_command", required=True, metavar="KIND")
    j = ks.add_parser("job", help="print a batch/v1 Job running one wan22 step (kubectl apply -f -)")
    j.add_argument("step", choices=["validate-dataset", "convert", "train", "consolidate", "export", "sample"])
    j.epilog = "the step's own arguments follow --, e.g. wan22 k8s job consolidate -- --source /data/save ..."
    j.add_argument("--image", help="default: the profile's image")
    j.add_argument("--profile", default="cpu", choices=["npu", "cuda", "cpu"])
    j.add_argument("--devices", type=int, default=0)
    j.add_argument("--pvc", default="wan22-data", help="claim mounted at /data ('' for none)")
    j.add_argument("--name")
    j.add_argument("--namespace")
    j.add_argument("--image-pull-secret")
    j.add_argument("--storage-secret")
    j.set_defaults(func=_cmd_k8s_job)
    rb = ks.add_parser("rbac", help="print the ServiceAccount, Role and RoleBinding the pretrain launcher needs")
    rb.add_argument("--namespace", required=True)
    rb.add_argument("--launcher", default="trainjob", choices=["trainjob", "pytorchjob", "volcano"])
    rb.add_argument("--service-account", default="wan22-launcher")
    rb.set_defaults(func=_cmd_k8s_rbac)
    tj = ks.add_parser("train-job", help="print the multi-node training job the pretrain step would submit")
    tj.add_argument("--launcher", default="trainjob", choices=["trainjob", "pytorchjob", "volcano"])
    tj.add_argument("--name", default="wan22-train")
    tj.add_argument("--namespace", default="default")
    tj.add_argument("--config", required=True, help="training config path inside the pods (on the data volume)")
    tj.add_argument("--nnodes", type=int, default=1)
    tj.add_argument("--nproc", type=int, default=8)
    tj.add_argument("--profile", default="npu", choices=["npu", "cuda", "cpu"])
    tj.add_argument("--image")
    tj.add_argument("--pvc", default="wan22-data")
    tj.add_argument("--volcano-queue")
    tj.set_defaults(func=_cmd_k8s_train_job)
