"""Kubeflow Pipelines components: one folder per step, each a thin lightweight Python component whose body
calls the same wan_core function as the CLI. The image comes from $WAN22_IMAGE at import (compile) time."""
import os

from wan_core.k8s.profiles import IMAGES

IMAGE = os.environ.get("WAN22_IMAGE", IMAGES["cpu"])
