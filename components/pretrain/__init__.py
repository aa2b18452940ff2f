"""The pretrain component (component.py) and the kfp-free code its body runs (step.py, curve.py): the body imports this
package inside the step, so the component is loaded, with kfp, only when asked for."""


def __getattr__(name):
    if name == "pretrain":
        from components.pretrain.component import pretrain

        return pretrain
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["pretrain"]
