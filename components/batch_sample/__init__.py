"""The batch_sample component (component.py) and the kfp-free code its body runs (step.py): the body imports this
package inside the step, so the component is loaded, with kfp, only when asked for."""


def __getattr__(name):
    if name == "batch_sample":
        from components.batch_sample.component import batch_sample

        return batch_sample
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["batch_sample"]
