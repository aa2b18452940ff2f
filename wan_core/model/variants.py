"""Every fact about each Wan2.2 variant, in one registry: the rest of the library asks here.

Sources: the configs of the Wan2.2 diffusers pipelines and model cards (sampling defaults, boundary,
scheduler shift), DiffSynth-Studio / MindSpeed-MM (training timestep ranges of the A14B experts on the
shift-5 grid of 1000 steps) and the official Wan2.2 code (VAE strides, patch size).
Adding a variant means one `Variant` entry below plus its tests. Torch-free: the CLI imports it for --help.
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping

from wan_core.errors import UserError

# The expert slot of a pipeline folder (diffusers' names) for each expert name.
EXPERT_SLOT = MappingProxyType({"high": "transformer", "low": "transformer_2"})
# The official Wan2.2 A14B release's folder for each expert slot.
OFFICIAL_EXPERT_DIRS = MappingProxyType({"transformer": "high_noise_model", "transformer_2": "low_noise_model"})
# Tasks whose conditioning is an image (the first frame).
IMAGE_TASKS = ("ti2v", "i2v")


@dataclasses.dataclass(frozen=True)
class SamplingDefaults:
    steps: int
    guidance: tuple[float, float | None]  # (high-noise / only expert, low-noise expert)
    size: tuple[int, int, int]  # frames, height, width
    fps: int
    flow_shift: float  # the scheduler's shift in the released pipeline


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    preset: str  # WanConfig preset of the released model
    tiny_preset: str  # the tiny preset of the same architecture family (tests, demo)
    in_channels: int  # DiT input channels: how a checkpoint or a MindSpeed-MM predictor.in_dim is recognised
    official_model_type: str  # `model_type` in the official WanModel config.json
    tasks: tuple[str, ...]  # what it trains on; the first is the default
    mm_tasks: Mapping[str, str]  # MindSpeed-MM's task / model_type names -> ours
    vae: str  # "wan2.1" (z 16, 8x spatial) or "wan2.2" (z 48, 16x spatial, patchified)
    latent_channels: int
    vae_spatial: int  # pixels per latent cell
    experts: tuple[str, ...]  # ("high",) for one DiT; ("high", "low") for the A14B expert pair
    boundary_ratio: float | None  # sampling: t >= boundary * 1000 uses the high-noise expert
    index_ranges: Mapping[str, tuple[int, int]]  # training: [lo, hi) timestep indices per expert (0 = t 1000)
    sampling: SamplingDefaults
    diffusers_pipeline: str
    expand_timesteps: bool  # per-token timesteps (5B: a clean first frame at t = 0)
    vae_temporal: int = 4  # frames per latent frame after the first
    patch: int = 2  # DiT spatial patch size

    @property
    def two_experts(self) -> bool:
        return len(self.experts) == 2

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (VAE stride x patch)."""
        return self.vae_spatial * self.patch

    @property
    def image_required(self) -> bool:
        """Every task of the variant is conditioned on an image (I2V)."""
        return all(t in IMAGE_TASKS for t in self.tasks)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """[z, T, h, w] of a clip's latents."""
        return (self.latent_channels, (num_frames - 1) // self.vae_temporal + 1, height // self.vae_spatial,
                width // self.vae_spatial)

    def frames_problem(self, frames: int) -> str | None:
        """Why `frames` is not a clip length the VAE encodes (1 + a multiple of its temporal stride), or None."""
        stride = self.vae_temporal
        if frames >= 1 and (frames - 1) % stride == 0:
            return None
        below = max(1, (frames - 1) // stride * stride + 1)
        return f"frames must be {stride}n+1 (e.g. {below} or {below + stride}), got {frames}"

    def check_frames(self, frames: int, what: str = "frames") -> None:
        problem = self.frames_problem(frames)
        if problem:
            raise UserError(f"{what}: {problem}")

    def index_range(self, expert: str | None) -> tuple[int, int]:
        return self.index_ranges[expert or self.experts[0]]

    def check_expert(self, expert: str | None, what: str = "expert") -> str | None:
        """`expert` when it names an expert of this variant (required for the A14B pair)."""
        if self.two_experts and expert not in self.experts:
            raise UserError(f"{what}: required for {self.name}: 'high' or 'low' (got {expert!r})")
        if not self.two_experts and expert not in (None, self.experts[0]):
            raise UserError(f"{what}: {self.name} has one expert; leave it out")
        return expert

    def check_task(self, task: str | None, what: str = "task") -> str:
        task = task or self.tasks[0]
        if task not in self.tasks:
            raise UserError(f"{what}: {task!r} is not a task of {self.name} ({', '.join(self.tasks)})")
        return task

    def sampling_task(self, has_images: bool) -> str:
        """The task a sampling request runs: image-conditioned when images are given."""
        image_tasks = [t for t in self.tasks if t in IMAGE_TASKS]
        if has_images and image_tasks:
            return image_tasks[0]
        if not has_images and self.image_required:
            raise UserError(f"{self.name} needs an image for every prompt: give --images FILE")
        return self.tasks[0]


_A14B_SAMPLING_SIZE = (81, 480, 832)

REGISTRY: Mapping[str, Variant] = MappingProxyType({v.name: v for v in (
    Variant("ti2v-5b", preset="ti2v-5b", tiny_preset="tiny-ti2v", in_channels=48, official_model_type="ti2v",
            tasks=("t2v", "ti2v"), mm_tasks={"i2v": "ti2v", "ti2v": "ti2v", "t2v": "t2v"},
            vae="wan2.2", latent_channels=48, vae_spatial=16, experts=("high",), boundary_ratio=None,
            index_ranges={"high": (0, 1000)},
            sampling=SamplingDefaults(50, (5.0, None), (121, 704, 1280), 24, 5.0),
            diffusers_pipeline="WanPipeline", expand_timesteps=True),
    Variant("t2v-a14b", preset="t2v-a14b", tiny_preset="tiny-t2v", in_channels=16, official_model_type="t2v",
            tasks=("t2v",), mm_tasks={"t2v": "t2v"},
            vae="wan2.1", latent_channels=16, vae_spatial=8, experts=("high", "low"), boundary_ratio=0.875,
            index_ranges={"high": (0, 417), "low": (417, 1000)},
            sampling=SamplingDefaults(40, (4.0, 3.0), _A14B_SAMPLING_SIZE, 16, 3.0),
            diffusers_pipeline="WanPipeline", expand_timesteps=False),
    Variant("i2v-a14b", preset="i2v-a14b", tiny_preset="tiny-i2v", in_channels=36, official_model_type="i2v",
            tasks=("i2v",), mm_tasks={"i2v": "i2v", "wan2.2-i2v": "i2v"},
            vae="wan2.1", latent_channels=16, vae_spatial=8, experts=("high", "low"), boundary_ratio=0.9,
            index_ranges={"high": (0, 358), "low": (358, 1000)},
            sampling=SamplingDefaults(40, (3.5, 3.5), _A14B_SAMPLING_SIZE, 16, 3.0),
            diffusers_pipeline="WanImageToVideoPipeline", expand_timesteps=False),
)})

VARIANTS = tuple(REGISTRY)


def expert_slot(expert: str | None, what: str = "expert") -> str:
    """The pipeline-folder slot of an expert: 'high' (or None) -> transformer, 'low' -> transformer_2."""
    if expert not in (None, *EXPERT_SLOT):
        raise UserError(f"{what} must be 'high' or 'low', got {expert!r}")
    return EXPERT_SLOT[expert or "high"]


def get(name: str, what: str = "variant") -> Variant:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"{what}: {name!r} is not one of {', '.join(VARIANTS)}") from None


def by_in_channels(in_channels: int) -> Variant | None:
    """The variant whose DiT takes `in_channels` inputs (each variant's is distinct)."""
    return next((v for v in REGISTRY.values() if v.in_channels == in_channels), None)


def recognise_pipeline(index: dict, transformer_config: dict) -> Variant:
    """The variant of a diffusers pipeline folder, from model_index.json and transformer/config.json."""
    if index.get("expand_timesteps"):
        return next(v for v in REGISTRY.values() if v.expand_timesteps)
    found = by_in_channels(int(transformer_config.get("in_channels", 16)))
    return found if found is not None and not found.expand_timesteps else REGISTRY["t2v-a14b"]
