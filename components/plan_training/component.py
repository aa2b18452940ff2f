from kfp import dsl
from kfp.dsl import Markdown, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def plan_training(train_config: str, train_set: list, base_model: str, data_txt: str, nnodes: int,
                  devices_per_node: int, resolved: Output[Markdown], workdir: str = "", sample_devices: int = 1,
                  sample_cp: int = 1, sample_cp_algo: str = "ulysses", sample_ulysses_degree: int = 0,
                  sample_cfg_parallel: bool = False, sample_shard_weights: bool = False,
                  lora_format: str = "") -> int:
    """The first step of a training pipeline: validate the training config (a YAML/JSON document or its path,
    plus `a.b=c` overrides) for every expert the run trains, and its parallel layout on nnodes x
    devices_per_node processes, before any data is read or weights converted. The resolved configs are the
    step's Markdown artifact. The sample_* layout is the sampling step's, and lora_format the LoRA export's (empty:
    no export), checked here too so that a bad one fails before training, not after.
    Returns the number of experts (1 or 2), which picks the pipeline's branch."""
    import pathlib

    from components.k8s.deployment import Deployment
    from components.pretrain.step import plan_step

    return plan_step(train_config, train_set, base_model, data_txt, workdir,
                     Deployment(nnodes=nnodes, devices_per_node=devices_per_node), pathlib.Path(resolved.path),
                     dict(devices=sample_devices, cp=sample_cp, cp_algo=sample_cp_algo,
                          ulysses_degree=sample_ulysses_degree or None, cfg_parallel=sample_cfg_parallel,
                          shard_weights=sample_shard_weights), lora_format or None)
