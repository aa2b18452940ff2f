from components.batch_sample.component import batch_sample

__all__ = ["batch_sample"]
