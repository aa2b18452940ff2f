from components.export_lora.component import export_lora

__all__ = ["export_lora"]
