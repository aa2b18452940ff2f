"""Wan2.2 pre-training and sampling library (model, kernels, weights, data, training, sampling).

Nothing here imports kfp: `components/` adapts these functions to Kubeflow Pipelines.
"""
__version__ = "0.1.0"


def load_dit(path, dtype=None, device=None):
    """Load a `WanDiT` from a diffusers transformer folder or an mm checkpoint folder."""
    from wan_core.weights.layouts import load_dit as _load_dit

    return _load_dit(path, dtype=dtype, device=device)


__all__ = ["load_dit", "__version__"]
