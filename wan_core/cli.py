"""The `wan22` command line (also `python -m wan_core`).

Every command exits 0 on success and non-zero with a one-paragraph message (no traceback) on bad
input; set WAN22_DEBUG=1 to see tracebacks of unexpected errors.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
from pathlib import Path
import sys
import textwrap

from wan_core.errors import UserError, one_paragraph
from wan_core.model.variants import VARIANTS


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (when it has one worth showing)."""

    @staticmethod
    def _shows_default(action) -> bool:
        default = action.default
        return bool(action.option_strings) and not (default is None or default is False or default == argparse.SUPPRESS
                                                    or (isinstance(default, (list, tuple)) and not default))

    def _get_help_string(self, action):
        text = action.help or ""
        if self._shows_default(action) and "default" not in text:
            text += (" " if text else "") + "(default: %(default)s)"
        return text

    def _format_action_invocation(self, action):
        hidden = getattr(action, "hidden_aliases", ())
        if hidden:  # an old name that still works, not shown
            action = copy.copy(action)
            action.option_strings = [o for o in action.option_strings if o not in hidden]
        return super()._format_action_invocation(action)

    def _format_action(self, action):
        if not (action.help and action.help.strip()) and self._shows_default(action):
            action = copy.copy(action)  # argparse prints no help line for an option without help
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the formatter above; subcommands inherit the class, so they get it too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        if kwargs.get("description"):  # wrapped here; the epilog (examples) is printed as written
            kwargs["description"] = "\n\n".join(textwrap.fill(" ".join(part.split()), width=100)
                                                for part in kwargs["description"].split("\n\n"))
        super().__init__(*args, **kwargs)

    def error(self, message):
        """A bad argument: one paragraph naming it (argparse's own prints the usage block first)."""
        message = re.sub(r"(--output)(/--\w+)+", r"\1", message)  # not the hidden old names
        print(one_paragraph(f"error: {message} (see `{self.prog} --help`)"), file=sys.stderr)
        sys.exit(2)


def int_range(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high], refused at parse time with the range in the message."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {span}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(low: float, inclusive: bool = True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or value < low or (not inclusive and value == low):
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {'at least' if inclusive else 'above'} "
                                             f"{low}")
        return value

    parse.__name__ = "number"
    return parse


def add_output_arg(p, dest: str, aliases: tuple[str, ...], help: str) -> None:
    """--output, the one name for "where this command writes" everywhere, required; the names the commands had
    before (--out, --target) still work, hidden from --help."""
    action = p.add_argument("--output", *aliases, dest=dest, metavar="DIR", required=True, help=help)
    action.hidden_aliases = aliases


def _progress(args) -> bool:
    """Progress bars only on a terminal, and not with --quiet."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def add_overwrite_arg(p) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier output of this command at the target (any other non-empty folder "
                   "is never replaced)")


def _cmd_make_tiny_checkpoint(args) -> int:
    from wan_core.tiny import make_tiny_checkpoint

    out = make_tiny_checkpoint(args.variant, args.out, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote tiny {args.variant} pipeline folder to {out}")
    return 0


def _cmd_make_demo_dataset(args) -> int:
    from wan_core.data.demo import make_demo_dataset

    if args.videos < 1:
        raise UserError(f"--videos must be at least 1, got {args.videos}")
    out = make_demo_dataset(args.out, videos=args.videos, overwrite=args.overwrite)
    print(f"wrote {args.videos} demo videos, {out / 'data.json'} and {out / 'data.txt'}")
    return 0


def _cmd_convert(args) -> int:
    from wan_core.weights import convert

    if args.direction == "hf-to-mm":
        slots = convert.hf_to_mm(args.source, args.target, fmt=args.format, max_shard_size=args.max_shard_size,
                                 progress=_progress(args), overwrite=args.overwrite)
    elif args.direction == "mm-to-dcp":
        slots = convert.mm_to_dcp(args.source, args.target, progress=_progress(args), overwrite=args.overwrite)
    else:
        slots = convert.mm_to_hf(args.source, args.target, hf_dir=args.hf_dir, layout=args.layout,
                                 max_shard_size=args.max_shard_size, progress=_progress(args),
                                 overwrite=args.overwrite)
    written = ", ".join(f"{args.target}/{s}" for s in slots) if slots != [""] else args.target
    print(f"{args.direction}: wrote {written}")
    return 0


def _add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert transformer weights between diffusers / official Wan and mm layouts",
                       description="Pure renames, streamed tensor by tensor (peak memory bounded by one tensor) "
                       "into sharded safetensors. Sources are recognised automatically: diffusers pipeline or "
                       "transformer folders, official Wan folders (high_noise_model/ + low_noise_model/ for A14B), "
                       "mm folders (this project's or MindSpeed-MM's release/ or iter_*/ model_optim_rng.pt). "
                       "Source and target may be local paths or fsspec URLs.")
    conv = p.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    for name, text in (("hf-to-mm", "diffusers or official Wan -> mm folder"),
                       ("mm-to-hf", "mm folder -> diffusers transformer folder (or official Wan names)"),
                       ("mm-to-dcp", "any checkpoint -> MindSpeed-MM's mm_to_dcp layout: release/ holding one DCP "
                                     "checkpoint of model.<mm key> tensors (training's load_path starts from it)")):
        q = conv.add_parser(name, help=text, description=text)
        q.add_argument("--source", required=True, help="the checkpoint folder to convert (a transformer folder, a "
                       "pipeline folder, or an mm folder)")
        add_output_arg(q, "target", ("--target",), "output folder")
        if name != "mm-to-dcp":
            q.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "hf-to-mm":
            q.add_argument("--format", default="safetensors", choices=["safetensors", "mm-pt"],
                           help="safetensors (default, streamed) or mm-pt: MindSpeed-MM's "
                           "release/mp_rank_00/model_optim_rng.pt, one torch.save of the whole model, so it is "
                           "NOT memory-bounded (needs RAM for the whole model)")
        elif name == "mm-to-hf":
            q.add_argument("--hf-dir", help="original diffusers transformer (or pipeline) folder whose config.json "
                           "is copied; without it config.json is rebuilt from the mm folder's")
            q.add_argument("--layout", default="diffusers", choices=["diffusers", "official"],
                           help="official writes official Wan names (what DiffSynth and ComfyUI load), A14B experts "
                           "in high_noise_model/ and low_noise_model/")
        add_overwrite_arg(q)
        q.set_defaults(func=_cmd_convert)


def _sample_job(args, need=("model", "prompts", "output")):
    from wan_core.sample.run import SampleJob, from_mindspeed_config

    if args.config:
        job = from_mindspeed_config(args.config)
        for key in ("model", "prompts", "output", "images", "steps", "guidance", "flow_shift", "dtype", "size",
                    "transformer", "transformer_2", "negative_prompt", "compile", "lora", "lora_2", "lora_scale"):
            if getattr(args, key) is not None:  # the command line wins over the file
                setattr(job, key, tuple(getattr(args, key)) if key == "size" else getattr(args, key))
        if args.images is not None:  # our own images file: its lines are relative to it
            job.image_paths_base = None
        if args.seed is not None:  # else MindSpeed-MM's: Megatron's --seed default
            job.seed = args.seed
        job.batch_size, job.nproc, job.save_array = args.batch_size, args.nproc, args.save_array
        if args.offload is not None:
            job.offload = args.offload
    else:
        missing = [f"--{k}" for k in need if getattr(args, k) is None]
        if missing:
            raise UserError(f"wan22 sample needs {', '.join(missing)} (or --config inference_model.json)")
        job = SampleJob(model=args.model, prompts=args.prompts, output=args.output, images=args.images,
                        negative_prompt=args.negative_prompt, size=tuple(args.size) if args.size else None,
                        steps=args.steps, guidance=args.guidance, flow_shift=args.flow_shift, seed=args.seed or 0,
                        batch_size=args.batch_size, dtype=args.dtype, transformer=args.transformer,
                        transformer_2=args.transformer_2, offload=args.offload or "auto", nproc=args.nproc, save_array=args.save_array, compile=args.compile or "auto",
                        lora=args.lora, lora_2=args.lora_2,
                        lora_scale=1.0 if args.lora_scale is None else args.lora_scale)
    job.overwrite = args.overwrite
    job.cp, job.cp_algo, job.ulysses_degree = args.cp, args.cp_algo, args.ulysses_degree
    job.cfg_parallel, job.shard_weights, job.device_memory_gb = args.cfg_parallel, args.shard_weights, args.device_memory_gb
    return job


def _cmd_sample(args) -> int:
    from wan_core.sample.run import run_sample

    out = run_sample(_sample_job(args), progress=_progress(args))
    print(f"wrote samples, samples.json and preview.html to {out}")
    return 0


def _add_sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="batch-sample videos from a diffusers-format Wan2.2 folder",
                       description="One NNNN.mp4 per prompt (prompt i uses seed + i), samples.json and "
                       "preview.html; the same frames as diffusers' WanPipeline / WanImageToVideoPipeline for the "
                       "same weights, seed and settings.")
    _add_sample_args(p)
    p.set_defaults(func=_cmd_sample)


def _add_sample_args(p) -> None:
    from wan_core.memory import OFFLOAD_ORDER

    p.add_argument("--config", help="MindSpeed-MM inference_model.json (from_pretrained, save_path, input_size, "
                   "low_noise_predictor, prompt/image files); command-line options override it")
    p.add_argument("--model", help="diffusers-format pipeline folder")
    p.add_argument("--prompts", help="text file, one prompt a line (blank lines ignored)")
    p.add_argument("--images", help="text file, one image path a line (relative to the file), one per prompt")
    p.add_argument("--negative-prompt", help="default: Wan's official negative prompt; \"\" for none")
    p.add_argument("--size", type=int_range(1), nargs=3, metavar=("T", "H", "W"),
                   help="frames (4n+1), height, width (default: the variant's)")
    p.add_argument("--steps", type=int_range(1), help="denoising steps (default: the variant's, e.g. 50 for 5B)")
    p.add_argument("--guidance", type=float_range(0.0), nargs="+", metavar="G",
                   help="G [G2]: high-noise expert's scale [low-noise expert's]; default per variant")
    p.add_argument("--flow-shift", type=float_range(0.0, inclusive=False),
                   help="default: the checkpoint's scheduler config")
    p.add_argument("--seed", type=int_range(0), help="seed of the first prompt; prompt i uses seed + i; with --config "
                   "inference_model.json, MindSpeed-MM's one noise stream is seeded once and video i takes its i-th "
                   "draw (default: 0; with --config, 1234 as Megatron's)")
    p.add_argument("--batch-size", type=int_range(1), default=1, help="prompts per forward pass")
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="default fp32 on CPU, bf16 on accelerators")
    p.add_argument("--compile", choices=["auto", "on", "off"],
                   help="compile each transformer block (auto: on CUDA, where it was measured faster)")
    p.add_argument("--lora", help="a LoRA file, or a folder holding one, in any layout diffusers' Wan pipelines load "
                   "(diffusers / peft, ComfyUI / original Wan, musubi-tuner / Kohya) applied to the "
                   "transformer (A14B: the high-noise expert) without merging it into the weights")
    p.add_argument("--lora-2", help="a LoRA file for A14B's low-noise expert")
    p.add_argument("--lora-scale", type=float_range(0.0), help="multiplies the adapters' alpha/r (default: 1)")
    p.add_argument("--transformer", help="replace the (high-noise) transformer: an mm or diffusers checkpoint")
    p.add_argument("--transformer-2", help="replace the low-noise transformer (A14B)")
    p.add_argument("--offload", choices=["auto", *OFFLOAD_ORDER],
                   help="where weights wait between uses: none (all on the device), model (one component on the "
                   "device at a time: text encoder, active expert, VAE), sequential (also the DiT's blocks one at a "
                   "time); default auto: none when the memory plan says it fits the device, else the least offload "
                   "that fits. MindSpeed-MM's cpu_offload is model")
    p.add_argument("--offload-inactive-expert", dest="offload", action="store_const", const="model",
                   help=argparse.SUPPRESS)  # the flag before --offload: the same as --offload model
    p.add_argument("--nproc", type=int_range(1), default=1,
                   help="processes (one device each); same files as one process")
    p.add_argument("--cp", "--context-parallel-size", dest="cp", type=int_range(1), default=1,
                   help="processes that make each video together, its sequence split between them (context "
                   "parallelism; MindSpeed-MM's --context-parallel-size); --nproc / (cp x cfg) groups share the prompts")
    p.add_argument("--cp-algo", "--context-parallel-algo", dest="cp_algo", default="ulysses",
                   help="ulysses | ring | usp (or MindSpeed-MM's ulysses_cp_algo, megatron_cp_algo, hybrid_cp_algo)")
    p.add_argument("--ulysses-degree", "--ulysses-degree-in-cp", dest="ulysses_degree", type=int_range(1),
                   help="usp: Ulysses group size inside each CP group (MindSpeed-MM's --ulysses-degree-in-cp)")
    p.add_argument("--cfg-parallel", action="store_true",
                   help="run the conditional and unconditional passes on two processes (doubles the group)")
    p.add_argument("--shard-weights", action="store_true",
                   help="FSDP2-shard the DiT and the text encoder over each video's processes (Wan's --dit_fsdp "
                   "--t5_fsdp): per-device weights divided by the group size")
    p.add_argument("--device-memory-gb", type=float_range(0.0, inclusive=False),
                   help="device memory the plan checks against (default: the device's own; none on CPU)")
    p.add_argument("--output", help="output folder (required unless --config gives save_path)")
    p.add_argument("--save-array", action="store_true", help="also write NNNN.npy float32 [T,H,W,3] in [0,1]")
    add_overwrite_arg(p)


def _cmd_validate_dataset(args) -> int:
    from wan_core.data.manifest import default_workers, validate_dataset, write_manifest, write_report
    try:
        results, thumbnails = validate_dataset(args.data_txt, workers=args.workers or default_workers())
    except UserError as exc:  # data.txt itself unreadable: exit 2 (1 means some entries are invalid)
        print(one_paragraph(f"error: {exc}"), file=sys.stderr)
        return 2
    valid = [r.entry for r in results if r.reason is None]
    bad = [r for r in results if r.reason is not None]
    for r in bad:
        where = r.dataset if r.index is None else f"{r.dataset} entry {r.index + 1} ({r.path})"  # 1-based
        print(f"invalid: {where}: {r.reason}", file=sys.stderr)
    if args.report_dir:
        print(f"report: {write_report(Path(args.report_dir), args.data_txt, results, thumbnails, args.overwrite)}")
    if args.manifest_out:
        write_manifest(args.manifest_out, valid)
    print(f"{len(results)} entries: {len(valid)} valid, {len(bad)} invalid")
    return 1 if bad and not args.allow_invalid else 0


def _train_config(args):
    from wan_core.train.config import from_mindspeed, load_config

    if args.mm_data or args.mm_model:
        if not (args.mm_data and args.mm_model) or args.config:
            raise UserError("MindSpeed-MM configs need both --mm-data and --mm-model (and no --config)")
        return from_mindspeed(args.mm_data, args.mm_model, args.set)
    if not args.config:
        raise UserError("give --config FILE (or MindSpeed-MM's --mm-data data.json --mm-model pretrain_model.json)")
    return load_config(args.config, args.set)


def _cmd_train(args) -> int:
    from wan_core.device import default_device
    from wan_core.parallel.env import process_env
    from wan_core.parallel.launch import launch_plan
    from wan_core.train.checkpoint import claim_save_path, release_save_path
    from wan_core.train.plan import preflight

    cfg = _train_config(args)  # checked before any process starts
    plan = launch_plan(args.nproc, args.nnodes, args.node_rank, args.rdzv_endpoint)
    launching = plan is not None or process_env() is None  # the launching process checks; the ranks it starts do not
    if plan is None and launching and args.max_restarts:
        plan = (1, 1, 0, None)  # restarts are torchrun's: one process under it
    claimed = None
    if launching:
        preflight(cfg, plan[0] * plan[1] if plan else 1, default_device())  # nproc x nnodes
        claimed = claim_save_path(cfg.save_path, args.overwrite)
    try:
        return _train(args, cfg, plan)
    except BaseException:
        if claimed == "new":  # a run that failed before writing anything leaves no folder behind
            release_save_path(cfg.save_path)
        raise


def _train(args, cfg, plan) -> int:
    from wan_core.parallel.env import is_rank0, process_env
    from wan_core.parallel.launch import describe_failure, run_torchrun
    from wan_core.storage import is_url
    from wan_core.train.checkpoint import resume_description
    from wan_core.train.trainer import TrainingStopped, run_training

    if plan is None and args.overwrite and process_env() is not None:
        raise UserError("--overwrite is done once, by the process that starts the ranks: run `wan22 train --nproc N "
                        "--overwrite` rather than torchrun by hand, or empty the save_path first")
    if plan is not None:
        # the ranks read the same config file and --set list
        log_dir = None if is_url(cfg.save_path) else Path(cfg.save_path) / "logs"
        result = run_torchrun(args.argv, plan, args.max_restarts, log_dir, cfg.train.stop_grace_s + 15)
        if result.status == 0:
            return 0
        if result.terminated:
            raise TrainingStopped(f"stopped by SIGTERM; run the same command again to resume from "
                                  f"{resume_description(cfg.save_path)}")
        raise UserError(describe_failure(result, resume_description(cfg.save_path)))
    # --resume-from names where the first start resumes; a rank torchrun restarts resumes from the newest checkpoint
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    last = run_training(cfg, None if restarted else args.resume_from)
    if is_rank0():  # once, not once per rank
        print(f"training finished at step {last.get('step')}; checkpoints in {cfg.save_path}")
    return 0


def _cmd_plan(args) -> int:
    """Print the memory plan; exit 2 with one paragraph when it does not fit."""
    from wan_core.device import default_device

    device = None if args.profile else default_device()
    if args.plan_what == "train":
        from wan_core.train.plan import preflight

        cfg = _train_config(args)
        if args.device_memory_gb:
            cfg = cfg.model_copy(update={"parallel": cfg.parallel.model_copy(update={"device_memory_gb":
                                                                                      args.device_memory_gb})})
        plan = preflight(cfg, args.nproc * args.nnodes, device, args.profile)
    else:
        from wan_core.sample.model_folder import read_model_folder
        from wan_core.sample.run import memory_plan

        job = _sample_job(args, need=("model",))
        folder = read_model_folder(job.model)
        size = job.size or folder.defaults.size
        guidance = (job.guidance or [g for g in folder.defaults.guidance if g is not None])[0]
        job.layout.dims(job.nproc, folder.num_heads)
        plan, offload = memory_plan(job, folder, size, guidance, device or default_device(), args.profile)
        print(f"offload: {offload}")
        plan.check()
    print(plan.summary())
    return 0


def _cmd_cache_features(args) -> int:
    from wan_core.train.features import cache_features

    out = cache_features(_train_config(args), args.out, progress=_progress(args), overwrite=args.overwrite)
    print(f"wrote features to {out}")
    return 0


def _add_train_args(p) -> None:
    p.add_argument("--config", help="training config (YAML or JSON; every key: docs/training-config.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. "
                   "--set train.iters=100 (repeatable)")
    p.add_argument("--mm-data", help="MindSpeed-MM dataset config (data.json with dataset_param); relative paths in "
                   "MindSpeed-MM's files resolve against the working folder, as in MindSpeed-MM")
    p.add_argument("--mm-model", help="MindSpeed-MM pretrain_model*.json")


def _cmd_consolidate(args) -> int:
    from wan_core.export import consolidate

    out = consolidate(args.source, args.target, args.iteration, args.format, args.dtype, args.max_shard_size,
                      progress=_progress(args), overwrite=args.overwrite)
    print(f"consolidated into {out}")
    return 0


def _cmd_export(args) -> int:
    from wan_core.export import export

    out = export(args.source, args.base, args.target, args.source_2, args.expert, args.max_shard_size,
                 progress=_progress(args), overwrite=args.overwrite)
    print(f"exported a diffusers pipeline folder to {out}")
    return 0


def _cmd_export_lora(args) -> int:
    from wan_core.export import export_lora

    out = export_lora(args.source, args.target, args.iteration, overwrite=args.overwrite, fmt=args.format)
    print(f"wrote the LoRA file {out} (diffusers format: WanPipeline.load_lora_weights loads it)")
    return 0


def _cmd_merge_lora(args) -> int:
    from wan_core.export import merge_lora

    out = merge_lora(args.base, args.target, args.lora, args.lora_2, args.scale, args.layout,
                     overwrite=args.overwrite)
    print(f"wrote the merged {args.layout} checkpoint to {out}")
    return 0


def _add_lora_parsers(sub) -> None:
    p = sub.add_parser("export-lora", help="LoRA training checkpoint -> a LoRA file diffusers or ComfyUI loads",
                       description="Reads the adapters of a LoRA training run's DCP checkpoint (never the base) and "
                       "writes one LoRA file: --format diffusers (default) OUTPUT/pytorch_lora_weights.safetensors "
                       "with rank and alpha in its metadata, which WanPipeline.load_lora_weights(OUTPUT) loads (A14B "
                       "low-noise expert: load_into_transformer_2=True); --format comfyui "
                       "OUTPUT/wan22_lora_comfyui.safetensors in the original Wan names with lora_down / lora_up and "
                       "a per-module alpha, which ComfyUI's LoRA loaders read. One file per expert: export each "
                       "expert's run.")
    p.add_argument("--source", required=True, help="the LoRA training run's save_path")
    p.add_argument("--format", default="diffusers", choices=["diffusers", "comfyui"],
                   help="the file's layout")
    p.add_argument("--iteration", default="latest", help="iteration number, or latest")
    add_output_arg(p, "target", ("--target",), "output folder")
    add_overwrite_arg(p)
    p.set_defaults(func=_cmd_export_lora)

    p = sub.add_parser("merge-lora", help="base + LoRA -> a merged checkpoint (pipeline, diffusers, mm, official)",
                       description="Writes W + scale * (alpha / r) * B @ A for every adapted module (rsLoRA: alpha / "
                       "sqrt(r); per-module ranks and alphas as the file says). Layout "
                       "pipeline (default) writes a complete diffusers pipeline folder from a base pipeline folder; "
                       "diffusers / mm / official write transformer checkpoint(s) in that layout.")
    p.add_argument("--base", required=True, help="the base: a diffusers pipeline folder or any checkpoint folder")
    p.add_argument("--lora", required=True, help="LoRA file or folder for the transformer (A14B: the high-noise "
                   "expert), in any layout sample --lora reads")
    p.add_argument("--lora-2", help="LoRA file for A14B's low-noise expert")
    p.add_argument("--scale", type=float_range(0.0), default=1.0, help="multiplies alpha/r")
    p.add_argument("--layout", default="pipeline", choices=["pipeline", "diffusers", "mm", "official"],
                   help="what to write: a whole pipeline folder, or the transformer(s) alone in one layout")
    add_output_arg(p, "target", ("--target",), "output folder")
    add_overwrite_arg(p)
    p.set_defaults(func=_cmd_merge_lora)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="wan22", description="Pre-train and sample Wan2.2 video diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-tiny-checkpoint", help="write a tiny random diffusers-format Wan2.2 pipeline folder",
                       description="Write a complete diffusers-format pipeline folder (model_index.json, "
                       "transformer[_2], vae, text_encoder, tokenizer, scheduler) of the variant's architecture "
                       "family at tiny size with random weights. Used by the demo and tests; nothing is downloaded.")
    p.add_argument("--variant", required=True, choices=VARIANTS, help="the architecture family to imitate")
    add_output_arg(p, "out", ("--out",), "output folder")
    p.add_argument("--seed", type=int_range(0), default=0, help="seed of the random weights")
    add_overwrite_arg(p)
    p.set_defaults(func=_cmd_make_tiny_checkpoint)

    p = sub.add_parser("make-demo-dataset", help="write small synthetic videos as a MindSpeed-MM Wan2.2 dataset (data.json + data.txt)",
                       description="Write OUT/videos/*.mp4 (moving shapes), OUT/data.json and OUT/data.txt.")
    add_output_arg(p, "out", ("--out",), "output folder")
    p.add_argument("--videos", type=int_range(1), default=4, help="number of clips")
    add_overwrite_arg(p)
    p.set_defaults(func=_cmd_make_demo_dataset)

    _add_convert_parser(sub)
    p = sub.add_parser("train", help="train one DiT (one process, or several under torchrun)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in the save_path of an earlier run (its checkpoints and metrics are removed); "
                   "without it that run is resumed")
    p.add_argument("--resume-from", type=int_range(0), metavar="N",
                   help="resume from iteration N (default: the newest complete checkpoint)")
    p.add_argument("--max-restarts", type=int_range(0), default=0, metavar="N",
                   help="restart the ranks up to N times when one dies (torchrun's elastic restarts); each restart "
                   "resumes from the last checkpoint")
    _add_train_args(p)
    p.add_argument("--nproc", type=int_range(1), help="processes on this node (one device each); starts torchrun itself "
                   "(default: $NPUS_PER_NODE or the launcher's PET_NPROC_PER_NODE)")
    p.add_argument("--nnodes", type=int_range(1), help="nodes (default: the launcher's variables, $NNODES, or 1)")
    p.add_argument("--node-rank", type=int_range(0), help="this node's index")
    p.add_argument("--rdzv-endpoint", help="HOST:PORT of node 0 for multi-node runs")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("plan", help="predict peak device memory per process for a training or sampling run, and "
                       "refuse one that cannot fit (train, sample and the pipelines check the same before launch)")
    plans = p.add_subparsers(dest="plan_what", required=True, metavar="WHAT")
    for name, text in (("train", "a training config (the same arguments as wan22 train)"),
                       ("sample", "a sampling run (the same arguments as wan22 sample; --prompts/--output optional)")):
        q = plans.add_parser(name, help=text, description=f"The memory plan of {text}.")
        if name == "train":
            _add_train_args(q)
            q.add_argument("--nproc", type=int_range(1), default=1, help="processes per node")
            q.add_argument("--nnodes", type=int_range(1), default=1, help="nodes")
            q.add_argument("--device-memory-gb", type=float_range(0.0, inclusive=False),
                           help="device memory to check against (default: the device's own; none on CPU)")
        else:
            _add_sample_args(q)
        q.add_argument("--profile", choices=["npu", "cuda"], help="check against a deployment profile's device "
                       "(npu: Ascend 910B 64 GB, cuda: H100 80 GB) instead of this machine's")
        q.set_defaults(func=_cmd_plan)
    p = sub.add_parser("consolidate", help="DCP training checkpoint -> one mm checkpoint (model weights only)",
                       description="Reads model tensors only (never the optimizer), one at a time; safetensors "
                       "output is streamed, so memory is bounded by the largest tensor. --format mm-pt writes "
                       "MindSpeed-MM's release/mp_rank_00/model_optim_rng.pt with one torch.save (NOT memory-bounded).")
    p.add_argument("--source", required=True, help="the training save_path")
    p.add_argument("--iteration", default="latest", help="N or latest (default)")
    add_output_arg(p, "target", ("--target",), "output folder")
    p.add_argument("--format", default="safetensors", choices=["safetensors", "mm-pt"],
                   help="sharded safetensors, or MindSpeed-MM's one-file torch.save")
    p.add_argument("--dtype", default="keep", choices=["keep", "bf16", "fp32"],
                   help="the weights' dtype in the output (keep: as trained)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_arg(p)
    p.set_defaults(func=_cmd_consolidate)
    p = sub.add_parser("export", help="mm checkpoint(s) -> a complete diffusers pipeline folder")
    p.add_argument("--source", required=True, help="mm folder of the trained transformer")
    p.add_argument("--source-2", help="mm folder of the other A14B expert (else the base's is used)")
    p.add_argument("--expert", choices=["high", "low"],
                   help="which expert --source is (A14B only; default: high)")
    p.add_argument("--base", required=True, help="the diffusers pipeline folder training started from")
    add_output_arg(p, "target", ("--target",), "output folder")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_arg(p)
    p.set_defaults(func=_cmd_export)

    _add_lora_parsers(sub)
    p = sub.add_parser("cache-features", help="encode a dataset once (VAE latents + text embeddings)")
    _add_train_args(p)
    add_output_arg(p, "out", ("--out",), "output folder")
    add_overwrite_arg(p)
    p.set_defaults(func=_cmd_cache_features)
    p = sub.add_parser("validate-dataset", help="check a data.txt dataset list; write a report and a manifest",
                       description="Checks every data.json entry (schema, path inside its folder, file decodes, "
                       "frames/fps/resolution match, caption, duplicates). Exit 0: all valid; 1: some invalid "
                       "(0 with --allow-invalid); 2: data.txt unreadable.")
    p.add_argument("--data-txt", required=True, help="the data.txt listing the datasets (lines `folder,data.json`)")
    p.add_argument("--report-dir", help="folder for report.md, report.html and thumbnails/")
    p.add_argument("--manifest-out", help="JSON file listing the valid entries (what training reads)")
    p.add_argument("--allow-invalid", action="store_true", help="exit 0 even when some entries are invalid")
    p.add_argument("--workers", type=int_range(0), default=0,
                   help="processes probing the videos (0: one per CPU this process may use); the report is "
                   "the same, in entry order, whatever the number")
    add_overwrite_arg(p)
    p.set_defaults(func=_cmd_validate_dataset)
    _add_sample_parser(sub)

    _add_plugin_commands(sub)
    describe_commands(parser)
    return parser


EXAMPLES = {  # shown under each command's --help; tests run them against tiny weights
    "wan22 make-tiny-checkpoint": "wan22 make-tiny-checkpoint --variant ti2v-5b --output tiny-5b",
    "wan22 make-demo-dataset": "wan22 make-demo-dataset --output demo-data --videos 4",
    "wan22 convert": "wan22 convert hf-to-mm --source tiny-5b --output mm-5b",
    "wan22 convert hf-to-mm": "wan22 convert hf-to-mm --source tiny-5b --output mm-5b",
    "wan22 convert mm-to-hf": "wan22 convert mm-to-hf --source mm-5b/transformer --output hf-5b "
                              "--hf-dir tiny-5b/transformer",
    "wan22 sample": "wan22 sample --model tiny-5b --prompts prompts.txt --size 5 32 32 --steps 4 --output samples",
    "wan22 train": "wan22 train --config docs/examples/5B/ti2v/train_tiny.yaml --set train.iters=50",
    "wan22 consolidate": "wan22 consolidate --source save --output mm-trained",
    "wan22 export": "wan22 export --source mm-trained --base tiny-5b --output exported",
    "wan22 convert mm-to-dcp": "wan22 convert mm-to-dcp --source mm-5b/transformer --output dcp-5b",
    "wan22 export-lora": "wan22 export-lora --source save-lora --output lora",
    "wan22 merge-lora": "wan22 merge-lora --base tiny-5b --lora lora/pytorch_lora_weights.safetensors "
                        "--output merged",
    "wan22 cache-features": "wan22 cache-features --config docs/examples/5B/ti2v/train_tiny.yaml --output features",
    "wan22 validate-dataset": "wan22 validate-dataset --data-txt demo-data/data.txt --report-dir report "
                              "--manifest-out manifest.json",
    "mm-convert": "mm-convert WanConverter hf_to_mm --cfg.source_path tiny-5b/transformer --cfg.target_path mm-5b",
}


def describe_commands(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command gets a description (its one-line help when it has none) and its example."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, sub in action.choices.items():
            if not sub.description and helps.get(name):
                sub.description = helps[name] + "."
            describe_commands(sub)
    if not parser.epilog and parser.prog in EXAMPLES:
        parser.epilog = "example:\n  " + EXAMPLES[parser.prog]


def _add_plugin_commands(sub) -> None:
    """Commands other packages register under the `wan22.commands` entry point (the Kubeflow side adds
    `pipeline` and `k8s`), so that wan_core itself never imports kfp."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="wan22.commands"):
        try:
            ep.load()(sub)
        except ImportError:  # pragma: no cover - an optional plugin that is not installed
            continue


def run(argv, parser: argparse.ArgumentParser) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not sys.stderr.isatty():  # progress bars of the libraries we call only on a terminal
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    passthrough = []
    if "--" in argv:  # everything after `--` is handed on untouched (e.g. a step's own arguments)
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    try:  # MindSpeed-MM's launch-script arguments, rewritten once into ours (the ranks get the rewritten line)
        from wan_core.mindspeed.launch_args import translate

        translation = translate(argv)
    except UserError as exc:
        print(one_paragraph(f"error: {exc}"), file=sys.stderr)
        return 2
    argv = translation.argv
    if translation.note():
        print(one_paragraph(translation.note()), file=sys.stderr)
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    args.argv = argv  # the command line without the passthrough part (train re-launches itself with it)
    terminated, restore = _sigterm_interrupts()
    try:
        return args.func(args)
    except UserError as exc:
        status = getattr(exc, "exit_status", 2)
        if getattr(exc, "rank0_only", False) and os.environ.get("RANK", "0") != "0":
            return status
        print(one_paragraph(f"{'' if status == 143 else 'error: '}{exc}"), file=sys.stderr)
        return status
    except KeyboardInterrupt:
        signal_name = "SIGTERM" if terminated() else "interrupted"
        print(one_paragraph(f"{signal_name}: stopped; {_after_interrupt(args)}"), file=sys.stderr)
        return 143 if terminated() else 130
    except OSError as exc:  # files and folders the user named: the path and the reason, in words
        from wan_core.fsutil import os_reason

        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f) or "a file"
        print(one_paragraph(f"error: {where}: {os_reason(exc)}"), file=sys.stderr)
        return 2
    except Exception as exc:  # an unexpected failure still gets one readable paragraph
        if os.environ.get("WAN22_DEBUG"):
            raise
        print(one_paragraph(f"error: {type(exc).__name__}: {exc} (set WAN22_DEBUG=1 for a traceback)"),
              file=sys.stderr)
        return 1
    finally:
        restore()


def _sigterm_interrupts():
    """SIGTERM (a pod evicted, a node drained, `kill`) is handled as Ctrl-C is: the command stops, its temporary
    output is removed, and nothing half-written is left. Returns a function telling whether it came, and one
    putting the previous handler back (a command run in-process leaves its caller's handling as it was)."""
    import signal
    import threading

    came = []

    def handle(signum, frame):
        came.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return (lambda: False), (lambda: None)
    previous = signal.signal(signal.SIGTERM, handle)
    return (lambda: bool(came)), (lambda: signal.signal(signal.SIGTERM, previous))


def _after_interrupt(args) -> str:
    """What an interrupted command leaves and how to go on."""
    if getattr(args, "command", None) == "train":
        try:
            from wan_core.train.checkpoint import resume_description

            cfg = _train_config(args)
            return f"run the same command again to resume from {resume_description(cfg.save_path)}"
        except Exception:  # noqa: BLE001 - the hint must not hide the interrupt
            return "run the same command again to resume from the last checkpoint"
    return "nothing was written (outputs appear only when complete); run the same command again"


def main(argv=None) -> int:
    return run(argv, build_parser())


def build_mm_convert_parser() -> argparse.ArgumentParser:
    """MindSpeed-MM's syntax: mm-convert WanConverter hf_to_mm|mm_to_hf|mm_to_dcp --cfg.source_path X
    --cfg.target_path Y"""
    parser = ArgumentParser(prog="mm-convert", description="MindSpeed-MM-compatible weight conversion "
                                     "(WanConverter). hf_to_mm writes MindSpeed-MM's mm-pt layout unless "
                                     "--cfg.format safetensors is given.")
    parser.add_argument("converter", choices=["WanConverter"])
    parser.add_argument("method", choices=["hf_to_mm", "mm_to_hf", "mm_to_dcp"])
    parser.add_argument("--cfg.source_path", dest="source", required=True, help="the checkpoint to convert")
    parser.add_argument("--cfg.target_path", dest="target", required=True, help="the output folder")
    parser.add_argument("--cfg.hf_path", "--cfg.hf_dir", dest="hf_dir",
                        help="mm_to_hf: the original diffusers transformer folder whose config.json is copied")
    parser.add_argument("--cfg.format", dest="format", choices=["mm-pt", "safetensors"], default="mm-pt",
                        help="hf_to_mm: MindSpeed-MM's one-file torch.save, or sharded safetensors")
    parser.add_argument("--cfg.layout", dest="layout", choices=["diffusers", "official"], default="diffusers",
                        help="mm_to_hf: diffusers' key names or the official Wan release's")
    parser.add_argument("--cfg.max_shard_size", dest="max_shard_size", default="5GB",
                        help="largest safetensors shard")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def call(args):
        args.direction = args.method.replace("_", "-")
        if args.method != "mm_to_hf" and args.hf_dir:
            raise UserError("--cfg.hf_path is for mm_to_hf")
        return _cmd_convert(args)

    add_overwrite_arg(parser)
    parser.set_defaults(func=call)
    describe_commands(parser)
    return parser


def mm_convert_main(argv=None) -> int:
    return run(argv, build_mm_convert_parser())


if __name__ == "__main__":
    sys.exit(main())
