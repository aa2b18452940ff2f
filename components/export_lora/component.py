from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_lora(save_path: str, target: str, iteration: str = "latest", workdir: str = "",
                lora_format: str = "diffusers") -> str:
    """The adapters of a LoRA training run's DCP checkpoint -> one LoRA file under TARGET: diffusers' format
    (pytorch_lora_weights.safetensors, rank and alpha in its metadata) or ComfyUI's (lora_format "comfyui");
    returns the file."""
    from wan_core.export import export_lora as run
    from components import under

    # a retry replaces its own output
    return str(run(save_path, under(workdir, target), iteration, overwrite=True, fmt=lora_format))
