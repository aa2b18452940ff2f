from components.validate_dataset.component import validate_dataset

__all__ = ["validate_dataset"]
