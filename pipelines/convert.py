"""wan22-convert: weight conversion (hf_to_mm / mm_to_hf) as a one-step pipeline."""
from kfp import dsl

from components.convert_weights import convert_weights
from components.k8s.deployment import Deployment
from pipelines import profiles
from pipelines.parameters import described


def build(deployment: Deployment = Deployment(), image_parameter: bool = True):
    d = profiles.run_defaults(deployment)

    def wan22_convert(source: str, target: str, direction: str = "hf-to-mm", fmt: str = "safetensors",
                      hf_dir: str = "", layout: str = "diffusers", image: str = d["image"],
                      pvc_name: str = d["pvc_name"]):
        c = convert_weights(source=source, target=target, direction=direction, fmt=fmt, hf_dir=hf_dir, layout=layout)
        profiles.apply(c, deployment, pvc_name, image if image_parameter else deployment.image)

    return dsl.pipeline(name="wan22-convert", description="Wan2.2 weight conversion")(
        described("Wan2.2 weight conversion.", wan22_convert))
