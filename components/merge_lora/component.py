from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def merge_lora(base: str, lora: str, target: str, lora_2: str = "", scale: float = 1.0, layout: str = "pipeline",
               workdir: str = "") -> str:
    """base + scale * (alpha / r) * B @ A: a complete diffusers pipeline folder (or transformer checkpoints in the
    diffusers, mm or official layout); returns the target."""
    from wan_core.export import merge_lora as run
    from components import under

    return str(run(base, under(workdir, target), lora, lora_2 or None, scale, layout, overwrite=True))
