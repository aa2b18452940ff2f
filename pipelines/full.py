"""wan22-full: validate -> convert -> pretrain (A14B: high and low experts as two branches) ->
consolidate -> export -> sample."""

from kfp import dsl

from components.batch_sample import batch_sample
from components.consolidate import consolidate
from components.convert_weights import convert_weights
from components.export_pipeline import export_pipeline
from components.pretrain import pretrain
from components.validate_dataset import validate_dataset
from pipelines import profiles


def build(deployment: profiles.Deployment = profiles.Deployment()):
    d = profiles.profile_defaults(deployment.profile)

    @dsl.pipeline(name="wan22-full", description="Wan2.2 pretraining from raw data to videos")
    def wan22_full(
        base_model: str, data_txt: str, workdir: str, prompts: str,
        variant: str = "ti2v-5b", task: str = "", images: str = "",
        iters: int = 100, save_interval: int = 50, micro_batch_size: int = 1, lr: float = 1e-5, dtype: str = "bf16",
        num_frames: int = 49, height: int = 480, width: int = 832, fps: float = 16.0,
        nnodes: int = 1, devices_per_node: int = 8, cp: int = 1, cp_algo: str = "ulysses", launcher: str = "trainjob",
        sample_frames: int = 0, sample_height: int = 0, sample_width: int = 0, sample_steps: int = 0,
        image: str = "", pvc_name: str = "wan22-data", accelerator_resource: str = d["accelerator_resource"],
        node_selector: dict = d["node_selector"], tolerations: list = d["tolerations"],
    ):
        heavy = dict(pvc_name=pvc_name, node_selector=node_selector, tolerations=tolerations, devices=devices_per_node,
                     accelerator_resource=accelerator_resource, heavy=True)
        light = dict(pvc_name=pvc_name)
        valid = validate_dataset(data_txt=data_txt, manifest_out="manifest.json", workdir=workdir)
        profiles.apply(valid, deployment, **light)
        base_mm = convert_weights(source=base_model, target="base-mm", workdir=workdir)
        profiles.apply(base_mm, deployment, **light)

        def train(expert: str, load_subdir: str):
            t = pretrain(base_model=base_model, variant=variant, task=task, expert=expert,
                         manifest=valid.outputs["Output"], save_path="train-" + (expert or "dit"), load_path=base_mm.output,
                         load_subdir=load_subdir, workdir=workdir, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                         iters=iters, save_interval=save_interval, micro_batch_size=micro_batch_size, lr=lr,
                         dtype=dtype, num_frames=num_frames, height=height, width=width, fps=fps,
                         nproc=devices_per_node, nnodes=nnodes, cp=cp, cp_algo=cp_algo, launcher=launcher,
                         image=image, accelerator=deployment.profile)
            t.set_display_name(f"pretrain {expert}")
            profiles.apply(t, deployment, **heavy)
            c = consolidate(save_path=t.outputs["Output"], target="mm-" + (expert or "dit"), workdir=workdir)
            c.set_display_name(f"consolidate {expert}")
            profiles.apply(c, deployment, **light)
            return c

        def sample(model):
            s = batch_sample(model=model, prompts=prompts, images=images, output="samples", workdir=workdir,
                             frames=sample_frames, height=sample_height, width=sample_width, steps=sample_steps,
                             nproc=1)
            profiles.apply(s, deployment, **heavy)

        with dsl.If(variant == "ti2v-5b", name="one-expert"):
            one = train("", "")
            exported = export_pipeline(source=one.output, base=base_model, target="exported", workdir=workdir)
            profiles.apply(exported, deployment, **light)
            sample(exported.output)
        with dsl.Else(name="two-experts"):
            high = train("high", "transformer")
            low = train("low", "transformer_2")
            exported2 = export_pipeline(source=high.output, source_2=low.output, expert="high", base=base_model,
                                        target="exported", workdir=workdir)
            profiles.apply(exported2, deployment, **light)
            sample(exported2.output)

    return wan22_full
