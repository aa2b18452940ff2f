"""The pretrain component (component.py) and the kfp-free code its body runs (step.py, curve.py): the body imports this
package inside the step, so the component is loaded, with kfp, only when asked for."""
from components import lazy_component

__getattr__ = lazy_component(__name__, "pretrain")
__all__ = ["pretrain"]
