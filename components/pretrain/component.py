from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def pretrain(base_model: str, variant: str, task: str, expert: str, manifest: str, save_path: str, load_path: str,
             iters: int, save_interval: int, micro_batch_size: int, lr: float, dtype: str, num_frames: int,
             height: int, width: int, fps: float, nproc: int, nnodes: int, cp: int, cp_algo: str, launcher: str,
             image: str, accelerator: str, curve: Output[HTML], metrics: Output[Metrics], load_subdir: str = "",
             workdir: str = "", run_id: str = "") -> str:
    """Train one DiT: locally with torchrun (launcher "local"), or as a TrainJob / PyTorchJob / Volcano Job
    on the cluster; returns the save_path holding the DCP checkpoints."""
    import pathlib

    import os

    from wan_core.pipeline_steps import pretrain_step, under

    save_path = under(workdir, save_path)
    load_path = os.path.join(load_path, load_subdir) if load_path and load_subdir else load_path

    return pretrain_step(dict(base_model=base_model, variant=variant, task=task, expert=expert, manifest=manifest,
                              save_path=save_path, load_path=load_path, iters=iters, save_interval=save_interval,
                              micro_batch_size=micro_batch_size, lr=lr, dtype=dtype, num_frames=num_frames,
                              height=height, width=width, fps=fps, nproc=nproc, nnodes=nnodes, cp=cp, cp_algo=cp_algo,
                              launcher=launcher, image=image, accelerator=accelerator, run_id=run_id),
                         pathlib.Path(curve.path), metrics.log_metric)
