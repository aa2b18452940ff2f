"""wan22-full: plan (the training config validated once) -> validate dataset -> convert -> pretrain (A14B: the
high and low experts as two branches) -> consolidate -> export -> sample."""

from kfp import dsl

from components.batch_sample import batch_sample
from components.cache_features import cache_features
from components.consolidate import consolidate
from components.convert_weights import convert_weights
from components.export_pipeline import export_pipeline
from components.k8s.deployment import Deployment
from components.plan_training import plan_training
from components.pretrain import pretrain
from components.validate_dataset import validate_dataset
from pipelines import profiles
from pipelines.parameters import described
from wan_core.model.variants import EXPERT_SLOT

# the run's training config when the run gives none: the 5B model at the size it was released for (one line:
# the compiled IR's header comment breaks on a multi-line default)
TRAIN_CONFIG = ("{model: {variant: ti2v-5b}, data: {num_frames: 49, height: 480, width: 832, fps: 16}, "
                "train: {iters: 100, save_interval: 50, lr: 1.0e-5, dtype: bf16}}")


def build(deployment: Deployment = Deployment(), image_parameter: bool = True):
    """`image_parameter`: the `image` run parameter sets every task's image (KFP on a cluster);
    kfp.local's DockerRunner cannot resolve a parameter there, so local runs fix deployment.image."""
    d = profiles.run_defaults(deployment)

    def wan22_full(
        base_model: str, data_txt: str, workdir: str, prompts: str, images: str = "",
        train_config: str = TRAIN_CONFIG, train_set: list = [],
        nnodes: int = deployment.nnodes, devices_per_node: int = deployment.devices_per_node or 8,
        launcher: str = "trainjob", expert_schedule: str = "parallel", startup_timeout_s: int = 900,
        train_timeout_s: int = 604800, active_deadline_s: int = 0, max_restarts: int = 0,
        sample_frames: int = 0, sample_height: int = 0, sample_width: int = 0, sample_steps: int = 0,
        sample_devices: int = 1, sample_cp: int = 1, sample_cp_algo: str = "ulysses", sample_ulysses_degree: int = 0,
        sample_cfg_parallel: bool = False, sample_shard_weights: bool = False, sample_offload: str = "auto",
        feature_cache: bool = False,
        image: str = d["image"], pvc_name: str = d["pvc_name"], namespace: str = d["namespace"],
        service_account: str = d["service_account"], accelerator_resource: str = d["accelerator_resource"],
        node_selector: dict = d["node_selector"], tolerations: list = d["tolerations"],
        volcano_queue: str = d["volcano_queue"],
    ):
        run = TrainingRun(deployment, image if image_parameter else deployment.image, dict(locals()))
        experts = run.plan()

        def trained(expert: str, after=None):
            c = consolidate(save_path=run.train(expert, after=after), target="mm-" + (expert or "dit"),
                            workdir=workdir)
            c.set_display_name(f"consolidate {expert}".strip())
            return run.place(c)

        def sample(exported):
            run.place(exported)
            s = batch_sample(model=exported.output, prompts=prompts, images=images, output="samples",
                             workdir=workdir, frames=sample_frames, height=sample_height, width=sample_width,
                             steps=sample_steps, nproc=sample_devices, cp=sample_cp, cp_algo=sample_cp_algo,
                             ulysses_degree=sample_ulysses_degree, cfg_parallel=sample_cfg_parallel,
                             shard_weights=sample_shard_weights, offload=sample_offload)
            run.place(s, devices=sample_devices)

        with dsl.If(experts == 1, name="one-expert"):
            sample(export_pipeline(source=trained("").output, base=base_model, target="exported", workdir=workdir))
        with dsl.Else(name="two-experts"):
            high, low = run.experts(trained)
            sample(export_pipeline(source=high, source_2=low, expert="high", base=base_model, target="exported",
                                   workdir=workdir))

    return dsl.pipeline(name="wan22-full", description="Wan2.2 pretraining from raw data to videos")(
        described("Wan2.2 pretraining from raw data to videos.", wan22_full))


# the sampling step's layout parameters, which the plan step checks before training starts
SAMPLE_LAYOUT = ("sample_devices", "sample_cp", "sample_cp_algo", "sample_ulysses_degree", "sample_cfg_parallel",
                 "sample_shard_weights")


class TrainingRun:
    """The steps every training pipeline shares, from the pipeline's run parameters `p`: the plan, the dataset
    manifest and the base in the mm layout (made once), and one pretrain task per expert."""

    def __init__(self, deployment: Deployment, task_image, p: dict):
        self.deployment, self.image, self.p = deployment, task_image, p
        self.valid = self.base_mm = None
        self.features = ""

    def place(self, task, devices=None, submits_job: bool = False):
        """The deployment on a task; with `devices`, also the accelerator request and the run's placement."""
        p = self.p
        placed = {} if devices is None else dict(devices=devices, node_selector=p["node_selector"],
                                                  tolerations=p["tolerations"],
                                                  accelerator_resource=p["accelerator_resource"])
        return profiles.apply(task, self.deployment, p["pvc_name"], self.image, submits_job=submits_job, **placed)

    def plan(self):
        """The first step: the training config validated for every expert on nnodes x devices_per_node processes;
        its output (the number of experts) picks the pipeline's branch. Then the dataset and the base."""
        p = self.p
        plan = self.place(plan_training(train_config=p["train_config"], train_set=p["train_set"],
                                        base_model=p["base_model"], data_txt=p["data_txt"], nnodes=p["nnodes"],
                                        devices_per_node=p["devices_per_node"], workdir=p["workdir"],
                                        **{k: p[k] for k in (*SAMPLE_LAYOUT, "lora_format") if k in p}))
        self.valid = self.place(validate_dataset(data_txt=p["data_txt"], manifest_out="manifest.json",
                                                 workdir=p["workdir"]).after(plan))
        self.base_mm = self.place(convert_weights(source=p["base_model"], target="base-mm",
                                                  workdir=p["workdir"]).after(plan))
        if "feature_cache" in p:  # the dataset encoded once, on one accelerator, when the run asks for it
            self.features = self.feature_cache()
        return plan.outputs["Output"]

    def feature_cache(self):
        p = self.p

        def cache(enabled: bool):
            return cache_features(enabled=enabled, train_config=p["train_config"], train_set=p["train_set"],
                                  base_model=p["base_model"], manifest=self.valid.outputs["Output"],
                                  target="features", workdir=p["workdir"],
                                  accelerator_resource=p["accelerator_resource"] if enabled else "")
        with dsl.If(p["feature_cache"] == True, name="cache-features"):  # noqa: E712 (a pipeline condition)
            on = self.place(cache(True).set_display_name("cache features"), devices=1)
        with dsl.Else(name="train-from-clips"):
            off = self.place(cache(False).set_display_name("no feature cache"))
        return dsl.OneOf(on.output, off.output)

    def experts(self, trained):
        """The A14B pair's two results, `trained(expert, after)` each (a task): at the same time (twice the nodes),
        or one after the other on the same nodes (run parameter expert_schedule "sequential")."""
        with dsl.If(self.p["expert_schedule"] == "sequential", name="one-expert-after-the-other"):
            first = trained(next(iter(EXPERT_SLOT)))
            in_turn = [first, trained(list(EXPERT_SLOT)[1], after=first)]
        with dsl.Else(name="both-experts-at-once"):
            at_once = [trained(expert) for expert in EXPERT_SLOT]
        return [dsl.OneOf(a.output, b.output) for a, b in zip(in_turn, at_once)]

    def train(self, expert: str, what: str = "pretrain", after=None):
        """The pretrain task for one expert (after the task `after`, when given): in the step's own pod (launcher
        "local", holding the accelerators) or submitted as a cluster job (a step that requests none). Returns the
        save_path output of whichever ran."""
        p, name = self.p, expert or "dit"

        def pretrain_task():
            task = pretrain(
                train_config=p["train_config"], train_set=p["train_set"], base_model=p["base_model"], expert=expert,
                manifest=self.valid.outputs["Output"], save_path="train-" + name, load_path=self.base_mm.output,
                load_subdir=EXPERT_SLOT[expert] if expert else "", workdir=p["workdir"],
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, launcher=p["launcher"], profile=self.deployment.profile,
                image=p["image"], image_pull_secret=self.deployment.image_pull_secret,
                pvc_name=p["pvc_name"] if self.deployment.pvc else "", storage_secret=self.deployment.storage_secret,
                namespace=p["namespace"], service_account=p["service_account"], node_selector=p["node_selector"],
                tolerations=p["tolerations"], accelerator_resource=p["accelerator_resource"],
                devices_per_node=p["devices_per_node"], nnodes=p["nnodes"], volcano_queue=p["volcano_queue"],
                ascend_runtime=self.deployment.ascend_runtime,
                supplemental_groups=list(self.deployment.supplemental_groups), arch=self.deployment.arch,
                startup_timeout_s=p["startup_timeout_s"], train_timeout_s=p["train_timeout_s"],
                active_deadline_s=p["active_deadline_s"], features=self.features, max_restarts=p["max_restarts"])
            return task.after(after) if after is not None else task

        with dsl.If(p["launcher"] == "local", name=f"train-here-{name}"):
            here = self.place(pretrain_task().set_display_name(f"{what} {expert}".strip()),
                              devices=p["devices_per_node"])
        with dsl.Else(name=f"train-on-cluster-{name}"):
            submit = self.place(pretrain_task().set_display_name(f"{what} {expert} (cluster job)".strip()),
                                submits_job=True)
        return dsl.OneOf(here.outputs["Output"], submit.outputs["Output"])
