from components.compare_lora.component import compare_lora

__all__ = ["compare_lora"]
