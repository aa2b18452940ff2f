from components.cache_features.component import cache_features

__all__ = ["cache_features"]
