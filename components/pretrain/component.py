from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def pretrain(base_model: str, variant: str, task: str, expert: str, manifest: str, save_path: str, load_path: str,
             iters: int, save_interval: int, micro_batch_size: int, lr: float, dtype: str, num_frames: int,
             height: int, width: int, fps: float, cp: int, cp_algo: str, launcher: str,
             curve: Output[HTML], metrics: Output[Metrics], ulysses_degree: int = 0, load_subdir: str = "",
             workdir: str = "", run_id: str = "", profile: str = "cpu", image: str = "", image_pull_secret: str = "",
             pvc_name: str = "", storage_secret: str = "", namespace: str = "", service_account: str = "",
             node_selector: dict = {}, tolerations: list = [], accelerator_resource: str = "",
             devices_per_node: int = 1, nnodes: int = 1, volcano_queue: str = "", lora_rank: int = 0,
             lora_alpha: float = 0.0) -> str:
    """Train one DiT (or, with lora_rank > 0, LoRA adapters on it; alpha defaults to the rank): here with torchrun
    on `devices_per_node` processes (launcher "local"), or as a
    TrainJob / PyTorchJob / Volcano Job placed by the deployment fields (image, claim, secrets, selectors,
    tolerations, accelerators); returns the save_path holding the DCP checkpoints."""
    import os
    import pathlib

    from wan_core.k8s.deployment import Deployment
    from wan_core.pipeline_steps import pretrain_step, under

    deployment = Deployment(profile=profile, image=image, image_pull_secret=image_pull_secret, pvc=pvc_name,
                            storage_secret=storage_secret, namespace=namespace, service_account=service_account,
                            node_selector=node_selector, tolerations=tolerations,
                            accelerator_resource=accelerator_resource, devices_per_node=devices_per_node,
                            nnodes=nnodes, volcano_queue=volcano_queue)
    load_path = os.path.join(load_path, load_subdir) if load_path and load_subdir else load_path
    return pretrain_step(dict(base_model=base_model, variant=variant, task=task, expert=expert, manifest=manifest,
                              save_path=under(workdir, save_path), load_path=load_path, iters=iters,
                              save_interval=save_interval, micro_batch_size=micro_batch_size, lr=lr, dtype=dtype,
                              num_frames=num_frames, height=height, width=width, fps=fps, cp=cp, cp_algo=cp_algo,
                              ulysses_degree=ulysses_degree, launcher=launcher, run_id=run_id, lora_rank=lora_rank,
                              lora_alpha=lora_alpha),
                         deployment, pathlib.Path(curve.path), metrics.log_metric)
