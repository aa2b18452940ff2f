from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def cache_features(config: str, out: str) -> str:
    """wan22 cache-features: encode a dataset once (VAE latents + text embeddings); returns `out`."""
    from wan_core.train.config import load_config
    from wan_core.train.features import cache_features as run

    run(load_config(config), out, progress=False, overwrite=True)  # a retry replaces its own output
    return out
