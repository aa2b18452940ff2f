"""wan22-sample: batch sampling from a diffusers-format folder."""
from kfp import dsl

from components.batch_sample import batch_sample
from components.k8s.deployment import Deployment
from pipelines import profiles
from pipelines.parameters import described


def build(deployment: Deployment = Deployment(), image_parameter: bool = True):
    d = profiles.run_defaults(deployment)

    def wan22_sample(model: str, prompts: str, output: str, images: str = "", frames: int = 0, height: int = 0,
                     width: int = 0, steps: int = 0, guidance: str = "", seed: int = 0, devices: int = 1,
                     cp: int = 1, cp_algo: str = "ulysses", ulysses_degree: int = 0, cfg_parallel: bool = False,
                     shard_weights: bool = False, offload: str = "auto", image: str = d["image"], pvc_name: str = d["pvc_name"],
                     accelerator_resource: str = d["accelerator_resource"], node_selector: dict = d["node_selector"],
                     tolerations: list = d["tolerations"]):
        s = batch_sample(model=model, prompts=prompts, output=output, images=images, frames=frames, height=height,
                         width=width, steps=steps, guidance=guidance, seed=seed, nproc=devices, cp=cp, cp_algo=cp_algo,
                         ulysses_degree=ulysses_degree, cfg_parallel=cfg_parallel, shard_weights=shard_weights,
                         offload=offload)
        profiles.apply(s, deployment, pvc_name, image if image_parameter else deployment.image, devices=devices,
                       node_selector=node_selector, tolerations=tolerations, accelerator_resource=accelerator_resource)

    return dsl.pipeline(name="wan22-sample", description="Batch sampling of Wan2.2 videos")(
        described("Batch sampling of Wan2.2 videos.", wan22_sample))
