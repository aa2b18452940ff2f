"""Batch sampling for every Wan2.2 task, numerically the same as diffusers' pipelines.

Same initial noise as diffusers (CPU generator per prompt, seed + index, fp32, diffusers' latent
shape), diffusers' UniPCMultistepScheduler from the checkpoint's scheduler config, experts switched at
boundary_ratio x 1000 with one guidance scale each. Less work than diffusers: the conditional and
unconditional passes run as one batched forward, text embeddings are computed once per distinct
prompt (and once for the negative prompt), RoPE tables are cached per shape, and only the active
expert needs to be on the accelerator.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from wan_core.encoders import TextEncoder, VideoVAE, clean_first_frame, first_frame_condition
from wan_core.errors import UserError
from wan_core.sample.model_folder import ModelFolder, read_model_folder

VAE_TILING_MIN_SIDE = 512  # pixels: larger frames decode in tiles (bounded memory)


def batch_guidance_passes(device: torch.device) -> bool:
    """Run the conditional and unconditional passes as one batch of 2B on accelerators (fuller kernels,
    half the launches). On CPU a batch of 2B takes as long as two passes of B (measured,
    benchmarks/README.md) and holds twice the activations, so CPU runs them one after the other."""
    return device.type != "cpu"


@dataclasses.dataclass
class SampleRequest:
    prompt: str
    seed: int
    image: object | None = None  # PIL image or None
    noise: torch.Tensor | None = None  # the initial noise when drawn elsewhere (MindSpeed-MM's one stream)


@dataclasses.dataclass
class SampleSettings:
    frames: int
    height: int
    width: int
    steps: int
    guidance: float
    guidance_2: float | None
    negative_prompt: str
    flow_shift: float | None = None
    boundary_ratio: float | None = None  # None: the model folder's
    scheduler_overrides: dict = dataclasses.field(default_factory=dict)  # UniPC config keys (MindSpeed-MM's diffusion)
    conventions: str = "diffusers"  # mindspeed: the conditioning image resized as MindSpeed-MM's WanPipeline does


def conditioning_size(image_size: tuple[int, int], height: int, width: int, multiple: int) -> tuple[int, int]:
    """(height, width) of a video conditioned on an image of (w, h) pixels: the image's aspect ratio at the area
    height x width, floored to multiples of `multiple` (MindSpeed-MM's WanPipeline.prepare_image_latents;
    diffusers' Wan I2V example computes the same)."""
    w, h = image_size
    area, aspect = height * width, h / w
    out_h = int(math.sqrt(area * aspect) // multiple * multiple)
    out_w = int(math.sqrt(area / aspect) // multiple * multiple)
    return max(out_h, multiple), max(out_w, multiple)


def mindspeed_image_pixels(image, height: int, width: int) -> torch.Tensor:
    """[1, 3, height, width] in [-1, 1] as MindSpeed-MM's WanPipeline.prepare_image_latents makes them: the image as
    a [0, 1] tensor (torchvision's to_tensor), resized with bilinear + antialias (v2.Resize on a tensor), then
    Normalize(0.5, 0.5). diffusers' VideoProcessor resizes the PIL image with Lanczos instead."""
    import numpy as np

    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
    pixels = pixels.float().div(255).unsqueeze(0)
    pixels = torch.nn.functional.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False,
                                             antialias=True)
    return (pixels - 0.5) / 0.5


def check_size(folder: ModelFolder, frames: int, height: int, width: int) -> None:
    spatial, patch = folder.vae_spatial, folder.patch
    multiple = spatial * patch
    problems = []
    if folder.spec.frames_problem(frames):
        problems.append(folder.spec.frames_problem(frames))
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % multiple:
            problems.append(f"{name} must be a positive multiple of {multiple} for {folder.variant} "
                            f"(VAE stride {spatial} x patch {patch}), got {value}")
    if problems:
        raise UserError("bad --size: " + "; ".join(problems))


class WanSampler:
    def __init__(self, model_dir: str | Path, transformer: str | None = None, transformer_2: str | None = None,
                 dtype: torch.dtype = torch.float32, device="cpu", offload: str = "none",
                 compile_blocks: bool = False, lora: str | None = None, lora_2: str | None = None,
                 lora_scale: float = 1.0, group=None, vae_dtype: torch.dtype = torch.float32):
        """`offload`: none | model | sequential (wan_core.sample.offload); `group`: this process's
        wan_core.sample.parallel.SampleGroup when several processes make each video; `vae_dtype`: fp32 as diffusers'
        pipelines keep the VAE, or MindSpeed-MM's ae.dtype."""
        from diffusers import UniPCMultistepScheduler

        import wan_core
        from wan_core.sample.offload import Offloader

        self.folder = read_model_folder(model_dir)
        self.device = torch.device(device)
        self.dtype = dtype
        self.group = group
        shard = group.shard_mesh if group is not None else None
        if shard is not None and offload != "none":
            raise UserError("--shard-weights and --offload cannot be combined: sharding already divides the weights "
                            "over the group's devices; choose one")
        if shard is not None and (lora or lora_2):
            raise UserError("--shard-weights does not take --lora/--lora-2: merge the LoRA first (wan22 merge-lora) "
                            "and sample the merged folder with --shard-weights")
        self.offloader = Offloader(offload, self.device)
        home = self.offloader.initial
        if transformer_2 and not self.folder.two_experts:
            raise UserError(f"--transformer-2 given, but {self.folder.path} is a one-expert model ({self.folder.variant})")
        sources = [transformer or self.folder.path / "transformer"]
        if self.folder.two_experts:
            sources.append(transformer_2 or self.folder.path / "transformer_2")
        self.experts = [wan_core.load_dit(source, dtype=dtype, device=self.device if shard is not None else home,
                                          shard_mesh=shard).eval() for source in sources]
        if lora_2 and not self.folder.two_experts:
            raise UserError(f"--lora-2 given, but {self.folder.path} is a one-expert model ({self.folder.variant})")
        for expert, adapter in zip(self.experts, (lora, lora_2)):
            if adapter:  # applied, not merged: the stored weights stay as they are
                from wan_core.train.lora import apply_lora, read_lora_file

                apply_lora(expert, read_lora_file(adapter), scale=lora_scale)
        for i, expert in enumerate(self.experts):  # one copy of each expert, for every batch this sampler runs
            expert.requires_grad_(False)
            if group is not None and group.context_parallel is not None:
                expert.enable_context_parallel(group.context_parallel)
            if compile_blocks:
                expert.compile_blocks()
            self.offloader.add(f"expert{i}", expert, blocks=expert.blocks)
        if self.experts[0].config.in_channels != self.experts[-1].config.in_channels:
            raise UserError("the two transformers have different input channels; they are not one model's experts")
        self.text = TextEncoder(self.folder.path, dtype=dtype, device=self.device, place=home, shard_mesh=shard)
        self.vae = VideoVAE(self.folder.path, dtype=vae_dtype, device=self.device, place=home)
        if shard is None:
            self.offloader.add("text_encoder", self.text.model)
        self.offloader.add("vae", self.vae.model)
        self.scheduler_config = UniPCMultistepScheduler.load_config(self.folder.path / "scheduler")
        self._text_cache: dict[str, torch.Tensor] = {}

    # -- pieces ------------------------------------------------------------------------------------
    @property
    def patch(self) -> int:
        return self.experts[0].config.patch_size[1]

    def check(self, settings: SampleSettings) -> None:
        check_size(self.folder, settings.frames, settings.height, settings.width)
        if settings.guidance_2 is not None and not self.folder.two_experts:
            raise UserError(f"--guidance takes one value for {self.folder.variant} (one expert); got two")

    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings for prompts, each distinct prompt encoded once per sampler."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if new:
            if self.group is None or self.group.shard_mesh is None:
                self.offloader.use("text_encoder")
            for p, emb in zip(new, self.text.encode(new, dtype=self.dtype)):
                self._text_cache[p] = emb
        return torch.stack([self._text_cache[p] for p in prompts])

    def make_scheduler(self, settings: SampleSettings):
        from diffusers import UniPCMultistepScheduler

        overrides = {} if settings.flow_shift is None else {"flow_shift": settings.flow_shift}
        scheduler = UniPCMultistepScheduler.from_config(self.scheduler_config, **{**settings.scheduler_overrides,
                                                                                 **overrides})
        scheduler.set_timesteps(settings.steps, device=self.device)
        return scheduler

    def latent_shape(self, settings: SampleSettings) -> tuple[int, ...]:
        return (1, self.vae.z_dim, (settings.frames - 1) // self.vae.temporal + 1,
                settings.height // self.vae.spatial, settings.width // self.vae.spatial)

    def initial_noise(self, requests: list[SampleRequest], settings: SampleSettings) -> torch.Tensor:
        """diffusers' randn_tensor with a CPU generator per prompt, fp32 (or each request's own noise)."""
        shape = self.latent_shape(settings)
        return torch.cat([r.noise.reshape(shape) if r.noise is not None else
                          torch.randn(shape, generator=torch.Generator("cpu").manual_seed(r.seed), dtype=torch.float32)
                          for r in requests]).to(self.device)

    def image_condition(self, images: list, settings: SampleSettings) -> torch.Tensor:
        """ti2v-5b: the first frame's normalised latent [B, z, 1, h, w]; i2v-a14b: [mask(4) | latent(16)]
        of the image followed by zero frames [B, 20, T, h, w] (diffusers' prepare_latents)."""
        if settings.conventions == "mindspeed":
            pixels = torch.cat([mindspeed_image_pixels(img, settings.height, settings.width) for img in images])
        else:
            from diffusers.video_processor import VideoProcessor

            processor = VideoProcessor(vae_scale_factor=self.vae.spatial)
            pixels = torch.cat([processor.preprocess(img, height=settings.height, width=settings.width)
                                for img in images])
        pixels = pixels.to(self.device, torch.float32)
        self.offloader.use("vae")
        if self.folder.expand_timesteps:
            return self.vae.encode(pixels.unsqueeze(2))
        return first_frame_condition(self.vae, pixels, settings.frames)

    def _expert_for(self, t: torch.Tensor, settings: SampleSettings):
        boundary = self.folder.boundary_ratio if settings.boundary_ratio is None else settings.boundary_ratio
        if boundary is None or len(self.experts) == 1:
            return 0, settings.guidance
        high = t >= boundary * self.scheduler_config.get("num_train_timesteps", 1000)
        g2 = settings.guidance if settings.guidance_2 is None else settings.guidance_2
        return (0, settings.guidance) if high else (1, g2)


    # -- the loop ----------------------------------------------------------------------------------
    @torch.no_grad()
    def denoise(self, requests: list[SampleRequest], settings: SampleSettings, on_step=None) -> torch.Tensor:
        """Final normalised latents [B, z, T, h, w] for a batch of requests (same settings)."""
        b = len(requests)
        latents = self.initial_noise(requests, settings)
        cfg = settings.guidance > 1.0  # as diffusers: guidance on when the first scale is above 1
        group = self.group
        split = cfg and group is not None and group.cfg_split  # CFG-parallel: one pass per rank of the pair
        positive = self.text_embeddings([r.prompt for r in requests])
        negative = self.text_embeddings([settings.negative_prompt] * b) if cfg else None
        if split:  # this rank's pass: the pair's first rank the conditional one, its second the unconditional
            positive, negative = (positive if group.cfg_rank == 0 else negative), None
        batched = cfg and not split and batch_guidance_passes(self.device)
        if batched:
            positive, negative = torch.cat([positive, negative]), None
        # text embedding and cross-attention K/V of each expert, once per batch instead of once per step
        # (sharded or streamed blocks hold their weights only inside their forward, which then computes them)
        prepared: dict[int, tuple] = {}
        prepare = (group is None or group.shard_mesh is None) and self.offloader.mode != "sequential"

        def contexts(index):
            if index not in prepared:
                expert = self.experts[index]
                prepared[index] = tuple(c if c is None or not prepare else expert.prepare_context(c)
                                        for c in (positive, negative))
            return prepared[index]
        condition, clean_first = None, False
        has_images = [r.image is not None for r in requests]
        if any(has_images):
            if not all(has_images):
                raise UserError("a batch mixes prompts with and without images")
            condition = self.image_condition([r.image for r in requests], settings)
            clean_first = self.folder.expand_timesteps
        else:
            self.folder.spec.sampling_task(has_images=False)  # refuses a variant that needs an image
        scheduler = self.make_scheduler(settings)
        for step, t in enumerate(scheduler.timesteps):
            index, guidance = self._expert_for(t, settings)
            self.offloader.use(f"expert{index}")
            if clean_first:  # 5B ti2v: clean first frame, per-token timestep 0 there
                x, timestep = clean_first_frame(latents, condition, t.expand(b), [True] * b, self.patch)
            elif condition is not None:  # A14B i2v: channel concat
                x = torch.cat([latents, condition], dim=1)
                timestep = t.expand(b)
            else:
                x, timestep = latents, t.expand(b)
            x = x.to(self.dtype)
            expert, (pos_ctx, neg_ctx) = self.experts[index], contexts(index)
            if split:
                cond, uncond = group.gather_guidance(expert(x, timestep, pos_ctx))
            elif batched:  # conditional and unconditional passes in one batched forward
                cond, uncond = expert(torch.cat([x, x]), torch.cat([timestep, timestep]), pos_ctx).chunk(2)
            else:
                cond = expert(x, timestep, pos_ctx)
                uncond = expert(x, timestep, neg_ctx) if cfg else None
            pred = uncond + guidance * (cond - uncond) if cfg else cond
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
            if on_step:
                on_step(step, int(t), index)
        if clean_first:
            latents = clean_first_frame(latents, condition, t.expand(b), [True] * b, self.patch)[0]
        return latents

    def decode(self, latents: torch.Tensor, settings: SampleSettings) -> np.ndarray:
        """float32 frames [B, T, H, W, 3] in [0, 1]."""
        self.vae.enable_tiling(max(settings.height, settings.width) > VAE_TILING_MIN_SIDE)
        self.offloader.use("vae")
        video = self.vae.decode(latents)
        return (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).cpu().numpy()

    def __call__(self, requests: list[SampleRequest], settings: SampleSettings, on_step=None) -> np.ndarray | None:
        """The frames; None on a rank of a group that does not write (its group's first rank decodes)."""
        self.check(settings)
        latents = self.denoise(requests, settings, on_step)
        if self.group is not None and not self.group.writes:
            return None
        return self.decode(latents, settings)
