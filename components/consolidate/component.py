from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def consolidate(save_path: str, target: str, iteration: str = "latest", fmt: str = "safetensors",
                dtype: str = "keep", workdir: str = "") -> str:
    """DCP training checkpoint -> one mm checkpoint (model tensors only, streamed); returns the target."""
    from wan_core.export import consolidate as run
    from components import under

    target = under(workdir, target)

    run(save_path, target, iteration, fmt, dtype, progress=False, overwrite=True)  # a retry replaces its own output
    return target
