"""`wan22 sample`: reading prompts/images/config, batching, writing outputs, and --nproc workers."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from wan_core.config_fields import int_var
from wan_core.errors import UserError
from wan_core.fsutil import atomic_output_dir, check_output_dir
from wan_core.sample.model_folder import WAN_NEGATIVE_PROMPT, read_model_folder



@dataclasses.dataclass
class SampleJob:
    model: str
    prompts: str
    output: str
    images: str | None = None
    negative_prompt: str | None = None
    size: tuple[int, int, int] | None = None
    steps: int | None = None
    guidance: list[float] | None = None
    flow_shift: float | None = None
    seed: int = 0
    batch_size: int = 1
    dtype: str | None = None
    transformer: str | None = None
    transformer_2: str | None = None
    offload: str = "auto"  # none | model | sequential | auto (the memory plan's choice for the device)
    nproc: int = 1
    cp: int = 1  # processes per video sharing its sequence (context parallelism)
    cp_algo: str = "ulysses"
    ulysses_degree: int | None = None
    cfg_parallel: bool = False  # the conditional and unconditional passes on two processes
    shard_weights: bool = False  # FSDP2-shard the DiT and the text encoder over the processes of one video
    device_memory_gb: float | None = None  # the plan's device memory (default: the device's own)
    save_array: bool = False
    overwrite: bool = False
    fps: int | None = None
    boundary_ratio: float | None = None  # None: the model folder's model_index.json
    scheduler_overrides: dict | None = None  # UniPC scheduler config keys (MindSpeed-MM's diffusion block)
    videos_per_prompt: int = 1  # MindSpeed-MM's num_inference_videos_per_sample: seeds seed+i for i in order
    image_paths_base: str | None = None  # relative image paths resolve here (default: the images file's folder)
    compile: str = "auto"  # regional compilation of the transformer blocks: auto (on CUDA) | on | off
    lora: str | None = None  # a LoRA file (diffusers format) for the (high-noise) transformer
    lora_2: str | None = None  # one for the low-noise transformer of A14B
    lora_scale: float = 1.0
    # "mindspeed" (an inference_model.json): MindSpeed-MM's inference_sora.py conventions, one noise stream seeded
    # once with every video drawing the next, its image resize, blank prompt lines kept; "diffusers" otherwise
    conventions: str = "diffusers"
    vae_dtype: str | None = None  # the VAE's dtype (MindSpeed-MM's ae.dtype); None: fp32, as diffusers keeps it

    @property
    def layout(self):
        from wan_core.sample.parallel import SampleLayout

        return SampleLayout(self.cp, self.cp_algo, self.ulysses_degree, self.cfg_parallel, self.shard_weights)


@dataclasses.dataclass(frozen=True)
class SampleWorker:
    """One process of a --nproc run: its prompts are group_index, group_index + groups, ...; `group` is its
    wan_core.sample.parallel.SampleGroup when processes share videos (only the group's first rank writes)."""
    local_rank: int
    group_index: int
    groups: int
    group: object | None = None

    @property
    def writes(self) -> bool:
        return self.group is None or self.group.writes


def read_lines(path: str, what: str, keep_blank: bool = False) -> list[str]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{what} file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{what} file {path}: not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if keep_blank or line.strip()]


def load_images(images_file: str, count: int, base: str | None = None) -> tuple[list, list[str]]:
    """(PIL images, their lines as written) for an images file with one path per prompt; relative lines resolve
    against `base`, by default the images file's folder."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    paths = read_lines(images_file, "images")
    if len(paths) != count:
        raise UserError(f"images file {images_file} has {len(paths)} non-blank lines, the prompts file has {count}: "
                        "give one image per prompt")
    base = Path(base) if base else Path(images_file).absolute().parent
    images = []
    for line_no, p in enumerate(paths, 1):
        path = Path(p) if Path(p).is_absolute() else base / p
        try:
            with Image.open(path) as im:  # upright as a camera's EXIF orientation says (diffusers' load_image)
                images.append(ImageOps.exif_transpose(im).convert("RGB"))
        except FileNotFoundError:
            raise UserError(f"images file {images_file}, line {line_no}: {path} does not exist") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"images file {images_file}, line {line_no}: {path} is not a readable image ({exc})") from None
    return images, paths


def from_mindspeed_config(path: str) -> SampleJob:
    """A SampleJob from MindSpeed-MM's inference_model.json (wan_core.mindspeed.configs maps its keys)."""
    from wan_core.mindspeed.configs import sampling_fields

    return SampleJob(**sampling_fields(path))


def memory_plan(job: SampleJob, folder, size: tuple[int, int, int], guidance: float, device, profile=None):
    """(the sampling memory plan, the offload mode it runs with): --offload auto takes the least offloading that
    fits the device (none with --shard-weights, which offloading does not combine with)."""
    from wan_core.device import compute_dtype_name
    from wan_core.memory import Geometry, choose_offload, device_memory_bytes, plan_sampling

    frames, height, width = size
    # planning for a deployment profile's accelerator may happen on another machine (torch may not know "npu" here)
    accelerator = bool(profile) or device.type != "cpu"
    knobs = dict(frames=frames, height=height, width=width, batch=job.batch_size,
                 dtype=compute_dtype_name(job.dtype, accelerator), cp=job.cp,
                 group=job.layout.group_size, shard=job.shard_weights, cfg=guidance > 1.0, cfg_split=job.cfg_parallel,
                 accelerator=accelerator, nproc=job.nproc)
    device_bytes = device_memory_bytes(job.device_memory_gb, None if profile else device, profile)
    geometry = Geometry.of_folder(folder.path, folder.variant)
    offload = job.offload
    if offload == "auto":
        offload = "none" if job.shard_weights else choose_offload(geometry, device_bytes, **knobs)
    return plan_sampling(geometry, offload=offload, device_bytes=device_bytes, **knobs), offload


def run_sample(job: SampleJob, worker: SampleWorker | None = None, progress: bool = True) -> Path:
    """Sample every prompt of `job` (or, as a --nproc worker, its share). Returns the output."""
    from wan_core.sample.sampler import SampleSettings, check_size

    if worker is None:  # refuse a bad output path before loading anything
        check_output_dir(Path(job.output), "sample", job.overwrite)
    folder = read_model_folder(job.model)
    defaults = folder.defaults
    # MindSpeed-MM keeps a blank line as an empty prompt (a video all the same); ours skips it
    prompts = read_lines(job.prompts, "prompts", keep_blank=job.conventions == "mindspeed")
    if not any(prompts):
        raise UserError(f"prompts file {job.prompts} has no prompts")
    images, image_paths = load_images(job.images, len(prompts), job.image_paths_base) if job.images else ([None] * len(prompts),) * 2
    if job.videos_per_prompt < 1:
        raise UserError(f"videos per prompt must be at least 1, got {job.videos_per_prompt}")
    prompts, images, image_paths = ([x for x in items for _ in range(job.videos_per_prompt)]
                                    for items in (prompts, images, image_paths))
    if job.boundary_ratio is not None and not 0.0 < job.boundary_ratio < 1.0:
        raise UserError(f"boundary_ratio must be between 0 and 1, got {job.boundary_ratio}")
    task = folder.spec.sampling_task(bool(job.images))
    guidance = job.guidance or [g for g in defaults.guidance if g is not None]
    if len(guidance) == 2 and not folder.two_experts:
        raise UserError(f"--guidance takes one value for {folder.variant} (one expert); got {guidance}")
    if len(guidance) not in (1, 2):
        raise UserError(f"--guidance takes one or two values, got {guidance}")
    frames, height, width = job.size or defaults.size
    check_size(folder, frames, height, width)
    if job.nproc < 1 or job.batch_size < 1:
        raise UserError("--nproc and --batch-size must be at least 1")
    layout = job.layout
    layout.dims(job.nproc, folder.num_heads)  # the layout fits --nproc and the model's heads, before any load
    if job.cfg_parallel and guidance[0] <= 1.0:
        raise UserError(f"--cfg-parallel splits the guided passes, but guidance {guidance[0]} <= 1 turns guidance off: "
                        "drop --cfg-parallel or raise --guidance")
    settings = SampleSettings(frames=frames, height=height, width=width, steps=job.steps or defaults.steps,
                              guidance=guidance[0], guidance_2=guidance[1] if len(guidance) == 2 else None,
                              negative_prompt=WAN_NEGATIVE_PROMPT if job.negative_prompt is None else job.negative_prompt,
                              flow_shift=job.flow_shift, boundary_ratio=job.boundary_ratio,
                              scheduler_overrides=dict(job.scheduler_overrides or {}),
                              conventions=job.conventions)
    fps = job.fps or defaults.fps
    output = Path(job.output)
    plan = None
    if worker is None:  # the launching process checks the memory plan and settles --offload auto for every worker
        from wan_core.device import default_device

        plan, offload = memory_plan(job, folder, (frames, height, width), guidance[0], default_device(0))
        plan.check()
        job = dataclasses.replace(job, offload=offload)
    summary = {"model": str(Path(job.model).absolute()), "variant": folder.variant, "task": task,
               "size": [frames, height, width], "steps": settings.steps, "guidance": guidance,
               "flow_shift": job.flow_shift, "negative_prompt": settings.negative_prompt, "seed": job.seed,
               "conventions": job.conventions, "vae_dtype": job.vae_dtype or "fp32",
               "fps": fps, "dtype": job.dtype, "transformer": job.transformer, "transformer_2": job.transformer_2,
               "boundary_ratio": folder.boundary_ratio if job.boundary_ratio is None else job.boundary_ratio,
               "scheduler_overrides": job.scheduler_overrides or {}, "videos_per_prompt": job.videos_per_prompt,
               "compile": job.compile, "lora": job.lora, "lora_2": job.lora_2, "lora_scale": job.lora_scale,
               "nproc": job.nproc, "layout": dataclasses.asdict(layout), "offload": job.offload,
               "memory_plan_gb": None if plan is None else round(plan.peak / 1e9, 3)}

    title = f"wan22 samples: {folder.variant} {task}"
    if worker is not None:  # a --nproc worker: its share, into the parent's temporary folder
        _sample(job, folder, prompts, images, image_paths, settings, fps, output, worker, progress)
        return output
    # the whole set (mp4s, samples.json, preview.html) appears at once or not at all
    with atomic_output_dir(output, "sample", job.overwrite) as tmp:
        if job.nproc > 1:
            groups = _run_workers(dataclasses.replace(job, output=str(tmp)), len(prompts))
        else:
            groups = 1
            _sample(job, folder, prompts, images, image_paths, settings, fps, tmp, SampleWorker(0, 0, 1), progress)
        _merge(tmp, groups, summary, title)
    return output


def _sample(job, folder, prompts, images, image_paths, settings, fps, output: Path, worker: SampleWorker,
            progress) -> None:
    """Sample the worker's prompts (group_index, group_index + groups, ...) into `output`, with the seeds one
    process would use, and leave their records in .samples-GROUP.json for _merge."""
    from tqdm import tqdm

    from wan_core.device import DTYPES, compile_wanted, compute_dtype, default_device
    from wan_core.progress import ProgressLines
    from wan_core.sample.outputs import gif_data_uri, save_sample
    from wan_core.sample.sampler import SampleRequest, WanSampler, conditioning_size

    rank, world = worker.group_index, worker.groups
    device = default_device(worker.local_rank)
    dtype = compute_dtype(job.dtype, device)
    sampler = WanSampler(folder.path, job.transformer, job.transformer_2, dtype=dtype, device=device,
                         offload=job.offload,
                         compile_blocks=compile_wanted(job.compile, device), lora=job.lora, lora_2=job.lora_2,
                         lora_scale=job.lora_scale, group=worker.group,
                         vae_dtype=DTYPES[job.vae_dtype] if job.vae_dtype else torch.float32)
    # a progress bar on a terminal; off one (a pod's log), a line per denoising step or per 5% of all of this
    # worker's steps, whichever is rarer, from the first group's writer
    lines = not progress and worker.writes and rank == 0
    progress = progress and worker.writes
    mine = list(range(rank, len(prompts), world))
    records, previews = [], {}
    bar = tqdm(total=len(mine), desc=f"sampling{'' if world == 1 else f' [{rank}/{world}]'}", unit="video",
               disable=not progress, file=sys.stderr)
    multiple = folder.vae_spatial * folder.patch
    # an image keeps its aspect ratio: the video takes the image's shape at the requested area
    sizes = [(settings.height, settings.width) if image is None else
             conditioning_size(image.size, settings.height, settings.width, multiple) for image in images]
    noise = {}
    if job.conventions == "mindspeed" and mine:  # one stream: video i takes its i-th draw, whoever samples it
        shapes = [sampler.latent_shape(dataclasses.replace(settings, height=h, width=w))
                  for h, w in sizes[:max(mine) + 1]]
        noise = stream_noise(job.seed, shapes, set(mine))
    batches = []
    for i in mine:  # consecutive prompts of one size share a batch
        if batches and len(batches[-1]) < job.batch_size and sizes[batches[-1][0]] == sizes[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    log = ProgressLines(len(batches) * settings.steps) if lines else None
    for n, batch in enumerate(batches):
        height, width = sizes[batch[0]]
        batch_settings = dataclasses.replace(settings, height=height, width=width)
        requests = [SampleRequest(prompts[i], job.seed + i, images[i], noise.get(i)) for i in batch]
        steps = tqdm(total=settings.steps, desc="steps", leave=False, disable=not progress, file=sys.stderr)
        stamps = [time.perf_counter()]

        def on_step(*_):
            if device.type != "cpu":  # the step's kernels, not just their launch
                getattr(torch, device.type).synchronize()
            stamps.append(time.perf_counter())
            steps.update()
            if log is not None:
                log.update("sampling: step", extra=f", {'video' if job.batch_size == 1 else 'batch'} {n + 1}/{len(batches)}")

        videos = sampler(requests, batch_settings, on_step=on_step)
        steps.close()
        if videos is None:  # not this group's writer
            continue
        step_time = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
        for i, frames_i in zip(batch, videos):
            files = save_sample(output, i, frames_i, fps, job.save_array)
            seed = {"seed": job.seed, "noise_draw": i} if noise else {"seed": job.seed + i}
            records.append({"index": i, "prompt": prompts[i], "image": image_paths[i], **seed,
                            "size": [settings.frames, height, width], "step_time_s": round(step_time, 4), **files})
            previews[i] = gif_data_uri(frames_i)
        bar.update(len(batch))
    bar.close()
    if worker.writes:
        (output / f".samples-{rank}.json").write_text(json.dumps({"records": records, "previews": previews}))


def stream_noise(seed: int, shapes: list[tuple], wanted: set[int]) -> dict[int, torch.Tensor]:
    """MindSpeed-MM's initial noise: one CPU generator seeded once (its WanPipeline's `generator`, from Megatron's
    --seed), each video drawing the next fp32 normal tensor of its own latent shape; the draws of `wanted`."""
    generator = torch.Generator("cpu").manual_seed(seed)
    out = {}
    for i, shape in enumerate(shapes):
        draw = torch.randn(shape, generator=generator, dtype=torch.float32)
        if i in wanted:
            out[i] = draw
    return out


def _merge(output: Path, workers: int, summary: dict, title: str) -> None:
    """samples.json and preview.html from the workers' fragments (which are removed)."""
    from wan_core.sample.outputs import write_index, write_preview

    records, previews = [], {}
    for rank in range(workers):
        frag = output / f".samples-{rank}.json"
        data = json.loads(frag.read_text())
        records += data["records"]
        previews.update({int(k): v for k, v in data["previews"].items()})
        frag.unlink()
    times = [r["step_time_s"] for r in records if "step_time_s" in r]
    summary = {**summary, "mean_step_time_s": round(sum(times) / len(times), 4) if times else None}
    write_index(output, records, summary)
    write_preview(output, records, previews, title)


def _run_workers(job: SampleJob, count: int) -> int:
    """The --nproc processes (one device each): groups of cfg x cp processes, at most one group per prompt, each
    group sampling its share of the prompts. Returns how many groups ran."""
    from wan_core.device import accelerator_type
    from wan_core.parallel.launch import free_port

    layout = job.layout
    on_cpu = accelerator_type() == "cpu"
    groups = min(job.nproc // layout.group_size, count)
    workers = groups * layout.group_size
    spec = json.dumps({**dataclasses.asdict(job), "nproc": workers})
    threads = max(1, (os.cpu_count() or 1) // workers)
    port = free_port() if layout.needs_process_group else None
    procs = []
    for rank in range(workers):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), WAN22_SAMPLE_THREADS=str(threads))
        if layout.shard_weights and on_cpu:
            # each block's gathered weights are freed after its forward; glibc's adaptive mmap threshold would keep
            # them in the heap (the process grows by a model's worth): a fixed threshold gives them back at once
            env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
        if port is not None:  # torchrun's variables: the workers form one process group
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(workers), LOCAL_WORLD_SIZE=str(workers),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "wan_core.sample.run", spec, str(rank), str(workers)],
                                      env=env))
    try:
        failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    finally:  # an interrupt stops the workers too, before the temporary folder goes
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
    if failed:
        raise UserError(f"sampling worker(s) {failed} failed; see their messages above")
    return groups


def _worker_main(job: SampleJob, rank: int, world: int) -> None:
    """One --nproc process: join the group (when the layout needs one), then sample this worker's share."""
    layout = job.layout
    if not layout.needs_process_group:
        run_sample(job, worker=SampleWorker(rank, rank, world), progress=False)
        return
    import torch.distributed as dist

    from wan_core.parallel.env import init_distributed
    from wan_core.sample.parallel import SampleGroup

    init_distributed()
    try:
        group = SampleGroup(layout, read_model_folder(job.model).num_heads)
        run_sample(job, worker=SampleWorker(rank, group.group_index, group.groups, group), progress=False)
        dist.barrier()  # no rank leaves while another still talks to it
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # a --nproc worker: python -m wan_core.sample.run JOB_JSON RANK WORLD
    from wan_core.errors import one_paragraph

    threads = int_var(os.environ, "WAN22_SAMPLE_THREADS")
    if threads:
        torch.set_num_threads(threads)
    job_dict = json.loads(sys.argv[1])
    if job_dict.get("size"):
        job_dict["size"] = tuple(job_dict["size"])
    try:
        _worker_main(SampleJob(**job_dict), int(sys.argv[2]), int(sys.argv[3]))
    except UserError as exc:
        print(one_paragraph(f"error: {exc}"), file=sys.stderr)
        sys.exit(2)
