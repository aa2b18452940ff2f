"""wan22-lora: validate -> convert -> LoRA training (A14B: an adapter per expert) -> export each expert's adapters
as a LoRA file diffusers loads -> a merged pipeline -> samples without and with the adapters, side by side."""

from kfp import dsl

from components.compare_lora import compare_lora
from components.export_lora import export_lora
from components.merge_lora import merge_lora
from pipelines import profiles
from pipelines.full import train_expert, validate_and_convert
from wan_core.k8s.deployment import Deployment


def build(deployment: Deployment = Deployment(), image_parameter: bool = True):
    d = profiles.run_defaults(deployment)

    @dsl.pipeline(name="wan22-lora", description="Wan2.2 LoRA fine-tuning from raw data to a LoRA file and videos")
    def wan22_lora(
        base_model: str, data_txt: str, workdir: str, prompts: str,
        variant: str = "ti2v-5b", task: str = "", images: str = "",
        lora_rank: int = 16, lora_alpha: float = 16.0, lora_scale: float = 1.0,
        iters: int = 100, save_interval: int = 50, micro_batch_size: int = 1, lr: float = 1e-4, dtype: str = "bf16",
        num_frames: int = 49, height: int = 480, width: int = 832, fps: float = 16.0,
        nnodes: int = deployment.nnodes, devices_per_node: int = deployment.devices_per_node or 8, cp: int = 1,
        cp_algo: str = "ulysses", ulysses_degree: int = 0, launcher: str = "trainjob",
        sample_frames: int = 0, sample_height: int = 0, sample_width: int = 0, sample_steps: int = 0,
        image: str = d["image"], pvc_name: str = d["pvc_name"], namespace: str = d["namespace"],
        service_account: str = d["service_account"], accelerator_resource: str = d["accelerator_resource"],
        node_selector: dict = d["node_selector"], tolerations: list = d["tolerations"],
        volcano_queue: str = d["volcano_queue"],
    ):
        task_image = image if image_parameter else deployment.image
        valid, base_mm = validate_and_convert(deployment, task_image, pvc_name, data_txt, base_model, workdir)
        p = locals()

        def adapters(expert: str, load_subdir: str):
            e = export_lora(save_path=train_expert(p, deployment, task_image, expert, load_subdir, valid, base_mm,
                                                   lora_rank=lora_rank, lora_alpha=lora_alpha),
                            target="lora-" + (expert or "dit"), workdir=workdir)
            e.set_display_name(f"export LoRA {expert}".strip())
            profiles.apply(e, deployment, pvc_name, task_image)
            return e.output

        def finish(lora, lora_2=""):
            merged = merge_lora(base=base_model, lora=lora, lora_2=lora_2, scale=lora_scale, target="merged",
                                workdir=workdir)
            profiles.apply(merged, deployment, pvc_name, task_image)
            compared = compare_lora(model=base_model, lora=lora, lora_2=lora_2, prompts=prompts, images=images,
                                    output="compare", frames=sample_frames, height=sample_height,
                                    width=sample_width, steps=sample_steps, workdir=workdir)
            compared.set_display_name("sample without and with the adapter")
            profiles.apply(compared, deployment, pvc_name, task_image, devices=1, node_selector=node_selector,
                           tolerations=tolerations, accelerator_resource=accelerator_resource)

        with dsl.If(variant == "ti2v-5b", name="one-expert"):
            finish(adapters("", ""))
        with dsl.Else(name="two-experts"):
            finish(adapters("high", "transformer"), adapters("low", "transformer_2"))

    return wan22_lora
