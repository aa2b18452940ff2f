"""The validate_dataset component (component.py) and the kfp-free code its body runs (step.py): the body imports this
package inside the step, so the component is loaded, with kfp, only when asked for."""


def __getattr__(name):
    if name == "validate_dataset":
        from components.validate_dataset.component import validate_dataset

        return validate_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["validate_dataset"]
