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
