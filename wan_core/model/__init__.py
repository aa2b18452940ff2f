"""The Wan2.2 DiT: its architecture config, variant registry, kernels and the model.

`WanDiT` is imported on first use so that the torch-free parts (config, variants) load without torch.
"""
from wan_core.model.config import PRESETS, WanConfig
from wan_core.model.variants import VARIANTS

__all__ = ["PRESETS", "VARIANTS", "WanConfig", "WanDiT"]


def __getattr__(name):
    if name == "WanDiT":
        from wan_core.model.dit import WanDiT

        return WanDiT
    raise AttributeError(f"module 'wan_core.model' has no attribute {name!r}")
