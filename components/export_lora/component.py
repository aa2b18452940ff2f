from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_lora(save_path: str, target: str, iteration: str = "latest", workdir: str = "") -> str:
    """The adapters of a LoRA training run's DCP checkpoint -> TARGET/pytorch_lora_weights.safetensors in diffusers'
    format (rank and alpha in its metadata); returns the file."""
    from wan_core.export import export_lora as run
    from components import under

    return str(run(save_path, under(workdir, target), iteration, overwrite=True))  # a retry replaces its own output
