"""The feature-cache step: the run's training config with the pipeline's wiring, then wan_core's cache_features.
Nothing here imports kfp."""
from __future__ import annotations

from wan_core.errors import UserError


def cache_features_step(enabled: bool, document: str, overrides: list[str], base_model: str, manifest: str,
                        target: str) -> str:
    if not enabled:
        return ""
    from components.pretrain.step import trained_experts, wiring
    from wan_core.storage import is_url
    from wan_core.train.config import resolve_document
    from wan_core.train.features import cache_features

    if is_url(target):
        raise UserError(f"feature_cache writes its folder on the run's volume; the work folder {target} is on object "
                        "storage: run without feature_cache, or with a volume work folder")
    # the config's save_path is not written here (the schema needs one: the step's own folder), and the features
    # are the same for either A14B expert (one VAE, one text encoder): the first expert's config encodes them
    overrides = [*map(str, overrides)]
    expert = trained_experts(document, overrides)[0]
    cfg = resolve_document(document, [*overrides, *wiring(base_model, manifest, save_path=target, expert=expert)])
    cache_features(cfg, target, progress=False, overwrite=True)  # a retried step replaces its own output
    return target
