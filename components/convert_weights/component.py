from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def convert_weights(source: str, target: str, direction: str = "hf-to-mm", fmt: str = "safetensors",
                    hf_dir: str = "", layout: str = "diffusers", workdir: str = "") -> str:
    """wan22 convert hf-to-mm / mm-to-hf between paths or fsspec URLs; returns the target. A retried step
    replaces its own earlier output (never another folder)."""
    from components import under
    from wan_core.weights import convert

    target = under(workdir, target)

    if direction == "hf-to-mm":
        convert.hf_to_mm(source, target, fmt=fmt, progress=False, overwrite=True)
    else:
        convert.mm_to_hf(source, target, hf_dir=hf_dir or None, layout=layout, progress=False, overwrite=True)
    return target
