from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def pretrain(train_config: str, train_set: list, base_model: str, manifest: str, save_path: str, load_path: str,
             launcher: str, curve: Output[HTML], metrics: Output[Metrics], expert: str = "", load_subdir: str = "",
             workdir: str = "", run_id: str = "", profile: str = "cpu", image: str = "", image_pull_secret: str = "",
             pvc_name: str = "", storage_secret: str = "", namespace: str = "", service_account: str = "",
             node_selector: dict = {}, tolerations: list = [], accelerator_resource: str = "",
             devices_per_node: int = 1, nnodes: int = 1, volcano_queue: str = "", ascend_runtime: bool = True,
             supplemental_groups: list = [], arch: str = "", startup_timeout_s: int = 900,
             train_timeout_s: int = 604800, active_deadline_s: int = 0, features: str = "",
             max_restarts: int = 0) -> str:
    """Train one DiT (or LoRA adapters on it, when the config has train.lora) from the run's training config
    (`train_config`, a document or its path, plus the `train_set` overrides) with this task's wiring on top:
    here with torchrun on `devices_per_node` processes (launcher "local"), or as a TrainJob / PyTorchJob /
    Volcano Job placed by the deployment fields, watched with the start-up and overall timeouts (seconds). The
    layout is checked on nnodes x devices_per_node processes before anything starts. `features`: a cache_features
    folder to train from instead of the manifest's clips. `max_restarts`: torchrun's elastic restarts of the ranks,
    each resuming from the last checkpoint. Returns the save_path holding the DCP checkpoints."""
    import os
    import pathlib

    from components import under
    from components.k8s.deployment import Deployment
    from components.k8s.launcher import JobLimits
    from components.pretrain.step import pretrain_step, wiring

    deployment = Deployment(profile=profile, image=image, image_pull_secret=image_pull_secret, pvc=pvc_name,
                            storage_secret=storage_secret, namespace=namespace, service_account=service_account,
                            node_selector=node_selector, tolerations=tolerations,
                            accelerator_resource=accelerator_resource, devices_per_node=devices_per_node,
                            nnodes=nnodes, volcano_queue=volcano_queue, ascend_runtime=ascend_runtime,
                            supplemental_groups=tuple(supplemental_groups), arch=arch)
    load_path = os.path.join(load_path, load_subdir) if load_path and load_subdir else load_path
    overrides = [*train_set, *wiring(base_model, manifest, under(workdir, save_path), load_path, expert, features)]
    limits = JobLimits(startup_timeout_s, train_timeout_s, active_deadline_s)
    return pretrain_step(train_config, overrides, deployment, launcher, run_id, pathlib.Path(curve.path),
                         metrics.log_metric, limits, max_restarts)
