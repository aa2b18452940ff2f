from kfp import dsl

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def cache_features(enabled: bool, train_config: str, train_set: list, base_model: str, manifest: str, target: str,
                   workdir: str = "", accelerator_resource: str = "") -> str:
    """wan22 cache-features for the run's training config and dataset manifest: VAE latents and text embeddings
    encoded once, so that training (every expert, every epoch) reads them instead of running the encoders.
    Returns the features folder, or "" when not `enabled` (the run trains from the clips).
    `accelerator_resource` is not read here: passing the run parameter in makes KFP's compiler hand it to the
    conditional branch this task runs in, where the task's accelerator request refers to it (the compiler does not
    carry a channel that only set_accelerator_type uses into a branch)."""
    from components import under
    from components.cache_features.step import cache_features_step

    return cache_features_step(enabled, train_config, train_set, base_model, manifest, under(workdir, target))
