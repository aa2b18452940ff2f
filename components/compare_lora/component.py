from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def compare_lora(model: str, lora: str, prompts: str, output: str, preview: Output[HTML], metrics: Output[Metrics],
                 lora_2: str = "", images: str = "", frames: int = 0, height: int = 0, width: int = 0,
                 steps: int = 0, seed: int = 0, workdir: str = "") -> str:
    """Samples every prompt without and with the LoRA adapters (same seeds), under OUTPUT/base and OUTPUT/lora;
    the HTML preview shows each pair side by side. Returns the output folder."""
    import pathlib

    from components import under
    from components.compare_lora.step import compare_lora_step

    return compare_lora_step(model, lora, lora_2, prompts, under(workdir, output), images, (frames, height, width),
                             steps, seed, pathlib.Path(preview.path), metrics.log_metric)
