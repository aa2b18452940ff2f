"""Kubeflow Pipelines components: one folder per step, each a thin lightweight Python component whose body
calls the same wan_core function as the CLI (through the step's own `step.py` where the step has more to do
than one call). `k8s/` is the Kubernetes side the steps share: deployments, pod specs, profiles, the cluster
training launcher. Every task's image is set by the pipelines (pipelines/profiles.apply); the components'
own base image is only the default the compiled IR carries."""
from components.k8s.profiles import IMAGES

IMAGE = IMAGES["cpu"]


def under(workdir: str, path: str) -> str:
    """`path` inside the run's work folder when relative (pipelines cannot join strings at compile time)."""
    if not workdir or "://" in path or path.startswith("/"):
        return path
    return workdir.rstrip("/") + "/" + path


def lazy_component(package: str, name: str):
    """The `__getattr__` of a step package whose body code (step.py) is kfp-free: `package.name`, the component,
    is imported from package.component, with kfp, only when asked for (a step's body imports its package inside
    the container, where only the body runs)."""
    def __getattr__(attr):
        if attr == name:
            import importlib

            return getattr(importlib.import_module(f"{package}.component"), name)
        raise AttributeError(f"module {package!r} has no attribute {attr!r}")

    return __getattr__
