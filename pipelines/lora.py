"""wan22-lora: plan -> validate -> convert -> LoRA training (A14B: an adapter per expert) -> export each expert's
adapters as a LoRA file diffusers (or ComfyUI) loads -> a merged pipeline -> samples without and with the adapters, side by side."""

from kfp import dsl

from components.compare_lora import compare_lora
from components.export_lora import export_lora
from components.k8s.deployment import Deployment
from components.merge_lora import merge_lora
from pipelines import profiles
from pipelines.full import TrainingRun
from pipelines.parameters import described

# LoRA fine-tuning of the 5B model at its release size; train.lora switches training to adapters
TRAIN_CONFIG = ("{model: {variant: ti2v-5b}, data: {num_frames: 49, height: 480, width: 832, fps: 16}, "
                "train: {iters: 100, save_interval: 50, lr: 1.0e-4, dtype: bf16, lora: {rank: 16, alpha: 16}}}")


def build(deployment: Deployment = Deployment(), image_parameter: bool = True):
    d = profiles.run_defaults(deployment)

    def wan22_lora(
        base_model: str, data_txt: str, workdir: str, prompts: str, images: str = "",
        train_config: str = TRAIN_CONFIG, train_set: list = [], lora_scale: float = 1.0, lora_format: str = "diffusers",
        nnodes: int = deployment.nnodes, devices_per_node: int = deployment.devices_per_node or 8,
        launcher: str = "trainjob", expert_schedule: str = "parallel", startup_timeout_s: int = 900,
        train_timeout_s: int = 604800, active_deadline_s: int = 0, max_restarts: int = 0,
        sample_frames: int = 0, sample_height: int = 0, sample_width: int = 0, sample_steps: int = 0,
        image: str = d["image"], pvc_name: str = d["pvc_name"], namespace: str = d["namespace"],
        service_account: str = d["service_account"], accelerator_resource: str = d["accelerator_resource"],
        node_selector: dict = d["node_selector"], tolerations: list = d["tolerations"],
        volcano_queue: str = d["volcano_queue"],
    ):
        run = TrainingRun(deployment, image if image_parameter else deployment.image, dict(locals()))
        experts = run.plan()

        def adapters(expert: str, after=None):
            e = export_lora(save_path=run.train(expert, what="LoRA training", after=after),
                            target="lora-" + (expert or "dit"), workdir=workdir, lora_format=lora_format)
            e.set_display_name(f"export LoRA {expert}".strip())
            return run.place(e)

        def finish(lora, lora_2=""):
            run.place(merge_lora(base=base_model, lora=lora, lora_2=lora_2, scale=lora_scale, target="merged",
                                 workdir=workdir))
            compared = compare_lora(model=base_model, lora=lora, lora_2=lora_2, prompts=prompts, images=images,
                                    output="compare", frames=sample_frames, height=sample_height,
                                    width=sample_width, steps=sample_steps, workdir=workdir)
            run.place(compared.set_display_name("sample without and with the adapter"), devices=1)

        with dsl.If(experts == 1, name="one-expert"):
            finish(adapters("").output)
        with dsl.Else(name="two-experts"):
            finish(*run.experts(adapters))

    return dsl.pipeline(name="wan22-lora", description="Wan2.2 LoRA fine-tuning from raw data to a LoRA file and "
                        "videos")(described("Wan2.2 LoRA fine-tuning from raw data to a LoRA file and videos.",
                                            wan22_lora))
