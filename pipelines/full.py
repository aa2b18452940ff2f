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
from wan_core.k8s.deployment import Deployment


def build(deployment: Deployment = Deployment(), image_parameter: bool = True):
    """`image_parameter`: the `image` run parameter sets every task's image (KFP on a cluster);
    kfp.local's DockerRunner cannot resolve a parameter there, so local runs fix deployment.image."""
    d = profiles.run_defaults(deployment)

    @dsl.pipeline(name="wan22-full", description="Wan2.2 pretraining from raw data to videos")
    def wan22_full(
        base_model: str, data_txt: str, workdir: str, prompts: str,
        variant: str = "ti2v-5b", task: str = "", images: str = "",
        iters: int = 100, save_interval: int = 50, micro_batch_size: int = 1, lr: float = 1e-5, dtype: str = "bf16",
        num_frames: int = 49, height: int = 480, width: int = 832, fps: float = 16.0,
        nnodes: int = deployment.nnodes, devices_per_node: int = deployment.devices_per_node or 8, cp: int = 1,
        cp_algo: str = "ulysses", ulysses_degree: int = 0, launcher: str = "trainjob",
        sample_frames: int = 0, sample_height: int = 0, sample_width: int = 0, sample_steps: int = 0,
        sample_devices: int = 1,
        image: str = d["image"], pvc_name: str = d["pvc_name"], namespace: str = d["namespace"],
        service_account: str = d["service_account"], accelerator_resource: str = d["accelerator_resource"],
        node_selector: dict = d["node_selector"], tolerations: list = d["tolerations"],
        volcano_queue: str = d["volcano_queue"],
    ):
        task_image = image if image_parameter else deployment.image
        placed = dict(node_selector=node_selector, tolerations=tolerations, accelerator_resource=accelerator_resource)
        valid, base_mm = validate_and_convert(deployment, task_image, pvc_name, data_txt, base_model, workdir)
        p = locals()

        def train(expert: str, load_subdir: str):
            c = consolidate(save_path=train_expert(p, deployment, task_image, expert, load_subdir, valid, base_mm),
                            target="mm-" + (expert or "dit"), workdir=workdir)
            c.set_display_name(f"consolidate {expert}".strip())
            profiles.apply(c, deployment, pvc_name, task_image)
            return c

        def sample(model):
            s = batch_sample(model=model, prompts=prompts, images=images, output="samples", workdir=workdir,
                             frames=sample_frames, height=sample_height, width=sample_width, steps=sample_steps,
                             nproc=sample_devices)
            profiles.apply(s, deployment, pvc_name, task_image, devices=sample_devices, **placed)

        with dsl.If(variant == "ti2v-5b", name="one-expert"):
            one = train("", "")
            exported = export_pipeline(source=one.output, base=base_model, target="exported", workdir=workdir)
            profiles.apply(exported, deployment, pvc_name, task_image)
            sample(exported.output)
        with dsl.Else(name="two-experts"):
            high = train("high", "transformer")
            low = train("low", "transformer_2")
            exported2 = export_pipeline(source=high.output, source_2=low.output, expert="high", base=base_model,
                                        target="exported", workdir=workdir)
            profiles.apply(exported2, deployment, pvc_name, task_image)
            sample(exported2.output)

    return wan22_full


def validate_and_convert(deployment: Deployment, task_image, pvc_name, data_txt, base_model, workdir):
    """The first two steps of every training pipeline: the dataset's manifest and the base in the mm layout."""
    valid = validate_dataset(data_txt=data_txt, manifest_out="manifest.json", workdir=workdir)
    profiles.apply(valid, deployment, pvc_name, task_image)
    base_mm = convert_weights(source=base_model, target="base-mm", workdir=workdir)
    profiles.apply(base_mm, deployment, pvc_name, task_image)
    return valid, base_mm


def train_expert(p: dict, deployment: Deployment, task_image, expert: str, load_subdir: str, valid, base_mm,
                 lora_rank=0, lora_alpha=0.0):
    """The pretrain task for one expert from a pipeline's parameters `p`: in the step's own pod (launcher
    "local", holding the accelerators) or submitted as a cluster job (a step that requests none). Returns the
    save_path output of whichever ran."""
    placed = dict(node_selector=p["node_selector"], tolerations=p["tolerations"],
                  accelerator_resource=p["accelerator_resource"])

    def pretrain_task():
        return pretrain(
            base_model=p["base_model"], variant=p["variant"], task=p["task"], expert=expert,
            manifest=valid.outputs["Output"], save_path="train-" + (expert or "dit"), load_path=base_mm.output,
            load_subdir=load_subdir, workdir=p["workdir"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            iters=p["iters"], save_interval=p["save_interval"], micro_batch_size=p["micro_batch_size"], lr=p["lr"],
            dtype=p["dtype"], num_frames=p["num_frames"], height=p["height"], width=p["width"], fps=p["fps"],
            cp=p["cp"], cp_algo=p["cp_algo"], ulysses_degree=p["ulysses_degree"], launcher=p["launcher"],
            profile=deployment.profile, image=p["image"], image_pull_secret=deployment.image_pull_secret,
            pvc_name=p["pvc_name"] if deployment.pvc else "", storage_secret=deployment.storage_secret,
            namespace=p["namespace"], service_account=p["service_account"], node_selector=p["node_selector"],
            tolerations=p["tolerations"], accelerator_resource=p["accelerator_resource"],
            devices_per_node=p["devices_per_node"], nnodes=p["nnodes"], volcano_queue=p["volcano_queue"],
            lora_rank=lora_rank, lora_alpha=lora_alpha)

    name = expert or "dit"
    with dsl.If(p["launcher"] == "local", name=f"train-here-{name}"):
        here = pretrain_task().set_display_name(f"{'LoRA ' if lora_rank else ''}pretrain {expert}".strip())
        profiles.apply(here, deployment, p["pvc_name"], task_image, devices=p["devices_per_node"], **placed)
    with dsl.Else(name=f"train-on-cluster-{name}"):
        submit = pretrain_task().set_display_name(f"pretrain {expert} (cluster job)".strip())
        profiles.apply(submit, deployment, p["pvc_name"], task_image)
    return dsl.OneOf(here.outputs["Output"], submit.outputs["Output"])
