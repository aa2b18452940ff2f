from wan_core.model.config import PRESETS, VARIANTS, WanConfig
from wan_core.model.dit import WanDiT

__all__ = ["PRESETS", "VARIANTS", "WanConfig", "WanDiT"]
