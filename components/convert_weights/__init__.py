from components.convert_weights.component import convert_weights

__all__ = ["convert_weights"]
