from components.export_pipeline.component import export_pipeline

__all__ = ["export_pipeline"]
