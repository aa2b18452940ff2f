"""The cache_features component (component.py) and the kfp-free code its body runs (step.py): the body imports this
package inside the step, so the component is loaded, with kfp, only when asked for."""


def __getattr__(name):
    if name == "cache_features":
        from components.cache_features.component import cache_features

        return cache_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["cache_features"]
