"""`wan22 pipeline run` (what `make demo` and `make e2e` run): the whole wan22-full DAG under kfp.local on
tiny generated weights and data, with 2-process FSDP2 + CP=2 training, ending in mp4s and an HTML report.
Steps run as subprocesses, or with --containers each in the cpu image through kfp.local's DockerRunner."""
from __future__ import annotations

import contextlib
import datetime
import shutil
import time
import warnings
from pathlib import Path


def run_local(workdir: str | None = None, variant: str = "ti2v-5b", nproc: int = 2, cp: int = 2,
              iters: int = 6, containers: bool = False, image: str | None = None, cp_algo: str = "ulysses",
              ulysses_degree: int = 0, verbose: bool = False, overwrite: bool = False, pipeline: str = "full") -> Path:
    from kfp import local

    from pipelines.console import step_console
    from pipelines.report import write_run_report
    from wan_core.errors import UserError
    from wan_core.fsutil import check_output_dir, output_owner, write_marker
    from wan_core.k8s.deployment import Deployment
    from wan_core.model import variants

    if iters < 1 or nproc < 1 or cp < 1:
        raise UserError(f"--iters {iters}, --nproc {nproc}, --cp {cp}: each must be at least 1")
    _check_layout(variant, nproc, cp, cp_algo, ulysses_degree)

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
    size = 32
    if containers:
        from pipelines.containers import container_runner

        image = image or default_image()
        runner_context = container_runner(image, run_dir)
        deployment = Deployment(image=image)
    else:
        runner_context = contextlib.nullcontext(local.SubprocessRunner(use_venv=False))
        deployment = Deployment()
    how = f"in containers of {image}" if containers else "as subprocesses"
    layout = f"CP={cp} {cp_algo}" + (f" (Ulysses groups of {ulysses_degree})" if cp_algo == "usp" else "")
    if pipeline not in ("full", "lora"):
        raise UserError(f"--pipeline must be full or lora, got {pipeline!r}")
    print(f"[wan22] running wan22-{pipeline} under kfp.local {how}: {variant}, {nproc} processes, {layout}, "
          f"{iters} steps", flush=True)
    log_path = run_dir / "pipeline.log"
    print(f"[wan22] every step's full output: {log_path}{'' if verbose else ' (--verbose shows it here too)'}",
          flush=True)
    # kfp.local warns that our image is not a Python image when steps run as subprocesses; nothing to act on
    warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
    # display names are for the Kubeflow UI; kfp.local says it ignores them, for every task that has one
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    with runner_context as runner, step_console(log_path, verbose) as console, private_tmp(run_dir / "tmp"):
        # the run folder is the pipeline root: DockerRunner mounts only that, so inputs live under it
        local.init(runner=runner, pipeline_root=str(run_dir))
        try:
            _run(pipeline, deployment, base=str(base), data_txt=str(data / "data.txt"), workdir=str(run_dir / "work"),
                 prompts=str(prompts), images=images, variant=variant, iters=iters, nproc=nproc, cp=cp,
                 size=size, cp_algo=cp_algo, ulysses_degree=ulysses_degree)
        except RuntimeError:
            if console.step_failed() is None:
                raise
    if console.failed is not None:
        step, cause = console.failed
        raise UserError(f"step {step} failed: {cause} (its full output is in {log_path})")
    settings = {"pipeline": f"wan22-{pipeline}", "variant": variant, "steps ran": how,
                "training": f"{iters} steps, {nproc} processes, {layout}", "clip size": f"9 frames of {size}×{size}",
                "sampling": f"5 frames of {size}×{size}, 4 steps", "tiny": True}
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


def _check_layout(variant: str, nproc: int, cp: int, cp_algo: str, ulysses_degree: int) -> None:
    """The training layout against the tiny model, before anything is made or started."""
    from wan_core.model.config import WanConfig
    from wan_core.model.variants import get as get_variant
    from wan_core.parallel.mesh import ParallelDims

    dims = ParallelDims(nproc, cp, cp_algo, ulysses_degree or None)
    dims.validate(WanConfig.from_preset(get_variant(variant).tiny_preset).num_heads)


def default_image() -> str:
    """The tag images/build.sh gives the cpu image."""
    import wan_core

    return f"wan22:{wan_core.__version__}-cpu"


def _run(pipeline, deployment, base, data_txt, workdir, prompts, images, variant, iters, nproc, cp, size, cp_algo,
         ulysses_degree) -> None:
    from pipelines import full, lora

    build = {"full": full.build, "lora": lora.build}[pipeline]
    extra = {"lora_rank": 4, "lora_alpha": 8.0} if pipeline == "lora" else {}
    build(deployment, image_parameter=False)(
        base_model=base, data_txt=data_txt, workdir=workdir, prompts=prompts, images=images, variant=variant,
        iters=iters, save_interval=max(1, iters // 2), micro_batch_size=1, lr=1e-3 if pipeline == "full" else 3e-2,
        dtype="fp32", num_frames=9, height=size, width=size, fps=16.0, nnodes=1, devices_per_node=nproc, cp=cp,
        cp_algo=cp_algo, ulysses_degree=ulysses_degree, launcher="local", sample_frames=5, sample_height=size,
        sample_width=size, sample_steps=4, **extra)


