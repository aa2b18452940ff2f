from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def cache_features(enabled: bool, train_config: str, train_set: list, base_model: str, manifest: str, target: str,
                   workdir: str = "") -> str:
    """wan22 cache-features for the run's training config and dataset manifest: VAE latents and text embeddings
    encoded once, so that training (every expert, every epoch) reads them instead of running the encoders.
    Returns the features folder, or "" when not `enabled` (the run trains from the clips)."""
    from components import under
    from components.cache_features.step import cache_features_step

    return cache_features_step(enabled, train_config, train_set, base_model, manifest, under(workdir, target))
