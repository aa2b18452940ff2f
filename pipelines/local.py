"""`wan22 pipeline run` (what `make demo` and `make e2e` run): the whole wan22-full (or wan22-lora) DAG under kfp.local on
tiny generated weights and data, with 2-process FSDP2 + CP=2 training, ending in mp4s and an HTML report.
Steps run as subprocesses, or with --containers each in the cpu image through kfp.local's DockerRunner."""
from __future__ import annotations

import contextlib
import datetime
import shutil
import time
import warnings
from pathlib import Path

SIZE = 32  # clips and samples of a local run: SIZE x SIZE pixels


def local_document(pipeline: str, variant: str, iters: int) -> str:
    """The training config of a local run: the variant at tiny size, a learning rate that moves tiny weights."""
    import yaml

    train = {"iters": iters, "save_interval": max(1, iters // 2), "micro_batch_size": 1, "dtype": "fp32",
             "lr": 1e-3 if pipeline == "full" else 3e-2}
    if pipeline == "lora":
        train["lora"] = {"rank": 4, "alpha": 8.0}
    return yaml.safe_dump({"model": {"variant": variant}, "data": {"num_frames": 9, "height": SIZE, "width": SIZE,
                                                                   "fps": 16.0}, "train": train}, sort_keys=False)


def run_local(workdir: str | None = None, variant: str = "ti2v-5b", nproc: int = 2, iters: int = 6,
              overrides: list[str] | None = None, containers: bool = False, image: str | None = None,
              verbose: bool = False, overwrite: bool = False, pipeline: str = "full", storage: str | None = None,
              feature_cache: bool = False) -> Path:
    """`overrides`: `--set a.b=c` items on top of the local training config (parallel.cp, ... among them).
    `feature_cache`: wan22-full encodes the dataset once and trains from that cache.
    `storage`: an fsspec URL (s3://bucket/prefix) for the run's work folder instead of RUN_DIR/work, as a cluster run
    on object storage has it; it is copied back into RUN_DIR/work afterwards for the report."""
    from kfp import local

    from pipelines import full, lora
    from pipelines.console import step_console
    from pipelines.report import write_run_report
    from wan_core.errors import UserError
    from wan_core.fsutil import check_output_dir, output_owner, write_marker
    from components.k8s.deployment import Deployment
    from wan_core.model import variants

    if pipeline not in ("full", "lora"):
        raise UserError(f"--pipeline must be full or lora, got {pipeline!r}")
    if feature_cache and (pipeline != "full" or storage):
        raise UserError("--feature-cache is a wan22-full run parameter on a volume work folder (not with --pipeline "
                        "lora or --storage)")
    if iters < 1 or nproc < 1:
        raise UserError(f"--iters {iters}, --nproc {nproc}: each must be at least 1")
    document, overrides = local_document(pipeline, variant, iters), list(overrides or [])
    dims = _check_layout(document, overrides, variant, nproc)  # before anything is made or started

    from wan_core.data.demo import make_demo_dataset
    from wan_core.tiny import make_tiny_checkpoint

    run_dir = Path(workdir or Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")).absolute()
    check_output_dir(run_dir, "pipeline run", overwrite)  # a new or empty folder, or an earlier run with --overwrite
    if run_dir.is_dir() and output_owner(run_dir) == "pipeline run":
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_marker(run_dir, "pipeline run")
    started = time.time()
    print(f"[wan22] run folder: {run_dir}", flush=True)
    print("[wan22] making a tiny checkpoint and a demo dataset", flush=True)
    base = make_tiny_checkpoint(variant, run_dir / "inputs" / f"tiny-{variant}")
    data = make_demo_dataset(run_dir / "inputs" / "dataset", videos=4)
    prompts = run_dir / "inputs" / "prompts.txt"
    prompts.write_text("A red circle moving from left to right across a dark background.\n"
                       "A blue square moving from top to bottom across a dark background.\n")
    images = ""
    if variants.get(variant).image_required:  # sample from a first frame: take the demo clips' first frames
        import numpy as np
        from PIL import Image

        from wan_core.data.video import read_frames

        lines = []
        for i in range(2):
            frame = read_frames(data / "videos" / f"video{i + 1:04d}.mp4", [0])[0]
            Image.fromarray(np.asarray(frame)).save(run_dir / "inputs" / f"image{i}.png")
            lines.append(f"image{i}.png")
        (run_dir / "inputs" / "images.txt").write_text("\n".join(lines) + "\n")
        images = str(run_dir / "inputs" / "images.txt")
    if containers:
        from pipelines.containers import container_runner

        image = image or default_image()
        runner_context = container_runner(image, run_dir)
        deployment = Deployment(image=image)
    else:
        runner_context = contextlib.nullcontext(local.SubprocessRunner(use_venv=False))
        deployment = Deployment()
    how = f"in containers of {image}" if containers else "as subprocesses"
    layout = f"CP={dims.cp} {dims.cp_algo}" + (f" (Ulysses groups of {dims.ulysses})" if dims.cp_algo == "usp" else "")
    print(f"[wan22] running wan22-{pipeline} under kfp.local {how}: {variant}, {nproc} processes, {layout}, "
          f"{iters} steps", flush=True)
    log_path = run_dir / "pipeline.log"
    print(f"[wan22] every step's full output: {log_path}{'' if verbose else ' (--verbose shows it here too)'}",
          flush=True)
    # kfp.local warns that our image is not a Python image when steps run as subprocesses; nothing to act on
    warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
    # display names are for the Kubeflow UI; kfp.local says it ignores them, for every task that has one
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    work = storage.rstrip("/") if storage else str(run_dir / "work")
    with runner_context as runner, step_console(log_path, verbose) as console, private_tmp(run_dir / "tmp"):
        # the run folder is the pipeline root: DockerRunner mounts only that, so inputs live under it
        local.init(runner=runner, pipeline_root=str(run_dir))
        try:
            build = {"full": full.build, "lora": lora.build}[pipeline]
            # wan22-full samples each video on 2 processes sharing its sequence (context parallelism)
            sample_layout = ({"sample_devices": 2, "sample_cp": 2, "feature_cache": feature_cache}
                             if pipeline == "full" else {})
            build(deployment, image_parameter=False)(
                base_model=str(base), data_txt=str(data / "data.txt"), workdir=work,
                prompts=str(prompts), images=images, train_config=document, train_set=overrides, nnodes=1,
                devices_per_node=nproc, launcher="local", sample_frames=5, sample_height=SIZE, sample_width=SIZE,
                sample_steps=4, **sample_layout)
        except RuntimeError:
            if console.step_failed() is None:
                raise
    if console.failed is not None:
        step, cause = console.failed
        raise UserError(f"step {step} failed: {cause} (its full output is in {log_path})")
    if storage:  # the report reads the work folder locally
        from wan_core.storage import Location

        store = Location(work)
        store.fs.get(store.path + "/", str(run_dir / "work") + "/", recursive=True)
    settings = {"pipeline": f"wan22-{pipeline}", "variant": variant, "steps ran": how,
                "training": f"{iters} steps, {nproc} processes, {layout}"
                            + (", from a feature cache" if feature_cache else ""), "clip size": f"9 frames of {SIZE}×{SIZE}",
                "sampling": f"5 frames of {SIZE}×{SIZE}, 4 steps" + (", each video on 2 processes (--cp 2)"
                                                                    if pipeline == "full" else ""), "tiny": True}
    return write_run_report(run_dir, settings, console.timings, time.time() - started)


@contextlib.contextmanager
def private_tmp(folder: Path):
    """TMPDIR for the run's processes, removed afterwards: kfp.local's lightweight components write their
    source to `mktemp -d` folders that nobody deletes, and torchrun keeps its own there."""
    import os
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # re-read on next use
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old
        tempfile.tempdir = None
        shutil.rmtree(folder, ignore_errors=True)


def _check_layout(document: str, overrides: list[str], variant: str, nproc: int):
    """The training config and its layout on `nproc` processes of the tiny model, before anything is made."""
    from wan_core.model.config import WanConfig
    from wan_core.model.variants import get as get_variant
    from wan_core.parallel.mesh import ParallelDims
    from wan_core.train.config import resolve_document

    # the checkpoint and data do not exist yet; the pipeline's own wiring replaces these placeholders
    spec = get_variant(variant)
    cfg = resolve_document(document, [*overrides, "model.from_pretrained=base", "save_path=save",
                                      "data.data_txt=data.txt", f"model.expert={spec.experts[0] if spec.two_experts else 'null'}"])
    return ParallelDims.of(cfg.parallel, nproc, WanConfig.from_preset(spec.tiny_preset).num_heads)


def default_image() -> str:
    """The tag images/build.sh gives the cpu image."""
    import wan_core

    return f"wan22:{wan_core.__version__}-cpu"
