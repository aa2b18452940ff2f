from components.consolidate.component import consolidate

__all__ = ["consolidate"]
