"""wan22-sample: batch sampling from a diffusers-format folder."""
from kfp import dsl

from components.batch_sample import batch_sample
from pipelines import profiles


def build(deployment: profiles.Deployment = profiles.Deployment()):
    d = profiles.profile_defaults(deployment.profile)

    @dsl.pipeline(name="wan22-sample", description="Batch sampling of Wan2.2 videos")
    def wan22_sample(model: str, prompts: str, output: str, images: str = "", frames: int = 0, height: int = 0,
                     width: int = 0, steps: int = 0, guidance: str = "", seed: int = 0, devices: int = 1,
                     pvc_name: str = "wan22-data", accelerator_resource: str = d["accelerator_resource"],
                     node_selector: dict = d["node_selector"], tolerations: list = d["tolerations"]):
        s = batch_sample(model=model, prompts=prompts, output=output, images=images, frames=frames, height=height,
                         width=width, steps=steps, guidance=guidance, seed=seed, nproc=devices)
        profiles.apply(s, deployment, pvc_name=pvc_name, node_selector=node_selector, tolerations=tolerations,
                       devices=devices, accelerator_resource=accelerator_resource, heavy=True)

    return wan22_sample
