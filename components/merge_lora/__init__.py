from components.merge_lora.component import merge_lora

__all__ = ["merge_lora"]
