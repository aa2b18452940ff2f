"""The compare_lora component (component.py) and the kfp-free code its body runs (step.py): the body imports this
package inside the step, so the component is loaded, with kfp, only when asked for."""


def __getattr__(name):
    if name == "compare_lora":
        from components.compare_lora.component import compare_lora

        return compare_lora
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["compare_lora"]
