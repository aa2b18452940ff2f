from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_pipeline(source: str, base: str, target: str, source_2: str = "", expert: str = "",
                    workdir: str = "") -> str:
    """mm checkpoint(s) -> a complete diffusers pipeline folder (base's vae, text encoder, tokenizer,
    scheduler); returns the target."""
    from wan_core.export import export
    from components import under

    target = under(workdir, target)

    export(source, base, target, source_2 or None, expert or None, progress=False, overwrite=True)  # a retry replaces its own
    return target
