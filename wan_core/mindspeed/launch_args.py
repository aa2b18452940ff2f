"""MindSpeed-MM's launch-script arguments in our terms, so its scripts run with one word changed.

Its Wan2.2 scripts (`pretrain*.sh`, `finetune_lora_*.sh`, `inference.sh`) run
`torchrun $DISTRIBUTED_ARGS pretrain_sora.py $GPT_ARGS $MM_ARGS $OUTPUT_ARGS [$LORA_ARGS]`; here
`wan22 train $DISTRIBUTED_ARGS $GPT_ARGS ...` (and `wan22 sample` for inference_sora.py) takes the same arguments:
torchrun's (`--nproc_per_node` ...), Megatron's (`--micro-batch-size`, `--lr`, ...) and MindSpeed-MM's (`--mm-data`,
`--lora-r`, ...). `translate` rewrites them, once, in the launching process, into our own flags and `--set` config
overrides, so the ranks see one command line in one shape. Flags that change nothing here are accepted and listed
once; flags that would change the results in ways not supported here are refused in one paragraph.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from wan_core.errors import UserError

# flags that take no value and change nothing here, with why (listed once per run)
NO_VALUE_NOOPS = {
    "--no-gradient-accumulation-fusion": "a Megatron fusion", "--downcast-to-bf16": "an NPU cast option",
    "--use-fused-rmsnorm": "a kernel choice", "--untie-embeddings-and-output-weights": "no embeddings to tie",
    "--use-cpu-initialization": "weights are built on the host here anyway", "--use-torch-fsdp2": "FSDP2 is how "
    "every distributed run shards here", "--finetune": "load_path gives weights only, the count starts at 0",
    "--no-load-optim": "load_path gives weights only", "--no-load-rng": "no RNG state is saved",
    "--no-save-optim": "checkpoints keep the optimizer: resume needs it", "--no-save-rng": "no RNG state is saved",
    "--use-distributed-optimizer": "FSDP2 shards the optimizer state", "--use-flash-attn": "attention dispatch picks "
    "the kernel", "--sequence-parallel": "a tensor-parallel option (TP is 1)",
}
# flags that take a value and change nothing here
VALUE_NOOPS = {
    "--mm-tool": "MindSpeed-MM's tools.json (profiling, memory tools)", "--attention-mask-type": "no masks in Wan's "
    "attention", "--eval-interval": "no evaluation loop", "--eval-iters": "no evaluation loop",
    "--distributed-backend": "the backend follows the device", "--lora-register-forward-hook": "a Megatron hook "
    "for LoRA with recomputation", "--optimizer-selection": "AdamW, torch's fused kernel where the device has it",
}
# model-parallel degrees: only 1 is supported
MODEL_PARALLEL = {"--tensor-model-parallel-size": "tensor", "--pipeline-model-parallel-size": "pipeline",
                  "--virtual-pipeline-model-parallel-size": "virtual pipeline"}
# Megatron / MindSpeed-MM flags -> training config keys (value converter)
TRAIN_KEYS = {
    "--micro-batch-size": ("train.micro_batch_size", int), "--lr": ("train.lr", float),
    "--min-lr": ("train.min_lr", float), "--lr-warmup-iters": ("train.warmup", int),
    "--lr-warmup-init": ("train.warmup_init", float), "--weight-decay": ("train.weight_decay", float),
    "--clip-grad": ("train.clip_grad", float), "--adam-beta1": ("train.adam_beta1", float),
    "--adam-beta2": ("train.adam_beta2", float), "--adam-eps": ("train.adam_eps", float),
    "--train-iters": ("train.iters", int), "--seed": ("train.seed", int), "--num-workers": ("data.num_workers", int),
    "--save-interval": ("train.save_interval", int), "--log-interval": ("train.log_interval", int),
    "--context-parallel-size": ("parallel.cp", int), "--context-parallel-algo": ("parallel.cp_algo", str),
    "--ulysses-degree-in-cp": ("parallel.ulysses_degree", int), "--save": ("save_path", str),
    "--load": ("load_path", str), "--lora-r": ("train.lora.rank", int), "--lora-alpha": ("train.lora.alpha", float),
}
# for sampling (inference.sh): what maps onto `wan22 sample`'s own flags; its training flags change nothing
SAMPLE_FLAGS = {"--mm-model": "--config", "--load": "--transformer", "--micro-batch-size": "--batch-size",
                "--seed": "--seed", "--context-parallel-size": "--cp", "--context-parallel-algo": "--cp-algo",
                "--ulysses-degree-in-cp": "--ulysses-degree"}
SAMPLE_IGNORED = ("--global-batch-size", "--distributed-timeout-minutes", "--lr", "--min-lr", "--train-iters", "--weight-decay", "--clip-grad",
                  "--adam-beta1", "--adam-beta2", "--adam-eps", "--lr-decay-style", "--lr-warmup-iters",
                  "--lr-warmup-init", "--save", "--save-interval", "--log-interval", "--num-workers", "--mm-data",
                  "--ckpt-format", "--fsdp2-config-path")
# torchrun's DISTRIBUTED_ARGS (both spellings) -> ours
TORCHRUN = {"--nproc_per_node": "--nproc", "--nproc-per-node": "--nproc", "--node_rank": "--node-rank",
            "--nnodes": "--nnodes", "--master_addr": "master_addr", "--master-addr": "master_addr",
            "--master_port": "master_port", "--master-port": "master_port"}
LR_STYLES = {"constant": "constant", "linear": "linear", "cosine": "cosine"}
FSDP2_NOOPS = ("sub_modules_to_wrap", "reshard_after_forward", "reduce_dtype", "ignored_modules",
               "cast_forward_inputs", "num_to_forward_prefetch", "num_to_backward_prefetch", "sharding_size")


@dataclasses.dataclass
class Translation:
    argv: list[str]  # our own command line
    ignored: list[str]  # "--flag (why)" for each flag that changes nothing here

    def note(self) -> str | None:
        if not self.ignored:
            return None
        return "MindSpeed-MM / Megatron flags accepted that change nothing here: " + "; ".join(self.ignored)


def _known(command: str) -> set[str]:
    flags = set(NO_VALUE_NOOPS) | set(VALUE_NOOPS) | set(MODEL_PARALLEL) | set(TORCHRUN) | {"--bf16", "--fp16"}
    if command == "sample":
        return flags | set(SAMPLE_FLAGS) | set(SAMPLE_IGNORED)
    return flags | set(TRAIN_KEYS) | {"--global-batch-size", "--lr-decay-style", "--ckpt-format",
                                      "--fsdp2-config-path", "--lora-target-modules", "--distributed-timeout-minutes"}


def _takes_value(flag: str) -> bool:
    return flag not in NO_VALUE_NOOPS and flag not in ("--bf16", "--fp16")


def split(argv: list[str], command: str) -> tuple[list[str], list[tuple[str, str | None]]]:
    """(the arguments that are ours, the (flag, value) pairs that are MindSpeed-MM's / Megatron's / torchrun's)."""
    known, ours, theirs = _known(command), [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        if flag not in known:
            ours.append(arg)
            i += 1
            continue
        if not _takes_value(flag):
            theirs.append((flag, None))
            i += 1
        elif eq:
            theirs.append((flag, inline))
            i += 1
        else:
            if i + 1 >= len(argv):
                raise UserError(f"{flag}: expected a value after it")
            theirs.append((flag, argv[i + 1]))
            i += 2
    return ours, theirs


def _number(flag: str, value: str, kind):
    try:
        return kind(value)
    except ValueError:
        raise UserError(f"{flag} {value}: expected {'an integer' if kind is int else 'a number'}") from None


def translate(argv: list[str], env=None) -> Translation:
    """`argv` (a command and its arguments) with MindSpeed-MM's launch arguments rewritten into ours; `plan train`
    and `plan sample` take the same arguments as the commands they plan (less where the nodes meet)."""
    if len(argv) > 1 and argv[0] == "plan" and argv[1] in ("train", "sample"):
        inner = _translate(argv[1:], env, nodes_meet=False)  # a plan needs the layout, not the rendezvous
        return Translation(["plan", *inner.argv], inner.ignored)
    return _translate(argv, env, nodes_meet=True)


def _translate(argv: list[str], env, nodes_meet: bool) -> Translation:
    if not argv or argv[0] not in ("train", "sample"):
        return Translation(list(argv), [])
    command = argv[0]
    ours, theirs = split(argv[1:], command)
    if not theirs:
        return Translation(list(argv), [])
    env = os.environ if env is None else env
    values = dict(theirs)
    ignored, sets, flags = [], [], []
    for flag, value in theirs:  # refusals first: nothing else matters when one applies
        if flag in MODEL_PARALLEL and _number(flag, value, int) != 1:
            raise UserError(f"{flag} {value}: {MODEL_PARALLEL[flag]} model parallelism is not supported here; Wan2.2 "
                            "trains and samples with FSDP2 data parallelism plus context parallelism. Set it to 1 "
                            "(more processes shard the weights further; --context-parallel-size splits a long video)")
        if flag == "--fp16":
            raise UserError("--fp16: fp16 training is not supported here (no loss scaling); use --bf16 as MindSpeed-MM's "
                            "Wan2.2 scripts do, or leave it out for fp32")
    training_only = []  # for sample: the training flags inference.sh passes too
    for flag, value in theirs:
        if flag in TORCHRUN:
            target = TORCHRUN[flag]
            if command == "sample" and target == "--nnodes" or \
                    target == "--node-rank" and (command == "sample" or not nodes_meet):
                continue  # sample: one node (checked below); a plan: no rendezvous
            if not target.startswith("master"):
                flags += [target, value]
        elif command == "sample" and (flag in SAMPLE_IGNORED or flag in NO_VALUE_NOOPS and flag.startswith("--no-")):
            training_only.append(flag if value is None else f"{flag} {value}")
        elif flag in NO_VALUE_NOOPS:
            ignored.append(f"{flag} ({NO_VALUE_NOOPS[flag]})")
        elif flag in VALUE_NOOPS:
            if flag == "--optimizer-selection" and value not in ("fused_torch_adamw", "torch_adamw", "adamw"):
                raise UserError(f"--optimizer-selection {value}: training here uses AdamW (MindSpeed-MM's "
                                "fused_torch_adamw); other optimizers are not supported")
            ignored.append(f"{flag} {value} ({VALUE_NOOPS[flag]})")
        elif flag in MODEL_PARALLEL:
            ignored.append(f"{flag} 1")
        elif command == "sample":
            if flag in SAMPLE_FLAGS:
                flags += [SAMPLE_FLAGS[flag], value]
            else:  # --bf16
                ignored.append("--bf16 (sampling dtypes come from inference_model.json's dtype, as there)")
        else:
            sets += _train_setting(flag, value, values, ignored)
    if training_only:
        ignored.append(f"{', '.join(training_only)} (training settings: sampling ignores them, as inference_sora.py "
                       "does)")
    nnodes = int(values.get("--nnodes", "1") or 1)
    if command == "sample" and nnodes > 1:
        raise UserError(f"--nnodes {nnodes}: wan22 sample runs on one node (--nproc processes); start one sample "
                        "command per node with its own prompts file")
    if nnodes > 1 and nodes_meet:
        addr, port = values.get("--master_addr") or values.get("--master-addr"), \
            values.get("--master_port") or values.get("--master-port") or "29500"
        if addr:
            flags += ["--rdzv-endpoint", f"{addr}:{port}"]
    elif nnodes == 1 and any(f in values for f in ("--master_addr", "--master-addr", "--master_port",
                                                   "--master-port")):
        ignored.append("--master_addr / --master_port (one node: a free port is used)")
    if command == "train" and "--global-batch-size" in values:
        sets.append(f"train.grad_accum={_grad_accum(values, ours + flags, env)}")
    if command == "train" and any(f not in TORCHRUN for f, _ in theirs):
        sets.append("train.log_format=megatron")  # the scripts' `grep "elapsed time per iteration"` reads it
    out = [command, *flags]
    for item in sets:
        out += ["--set", item]
    return Translation(out + ours, ignored)  # the user's own --set come last: they win


def _train_setting(flag: str, value: str | None, values: dict, ignored: list[str]) -> list[str]:
    """The `--set` overrides for one training flag."""
    if flag in TRAIN_KEYS:
        key, kind = TRAIN_KEYS[flag]
        if kind is str:
            if key in ("save_path", "load_path"):
                return [f"{key}={_path(value)}"]
            return [f"{key}={value}"]
        if flag == "--clip-grad" and _number(flag, value, float) == 0:
            return ["train.clip_grad=0"]
        return [f"{key}={_number(flag, value, kind)}"]
    if flag == "--lora-target-modules":
        modules = [m.strip() for m in value.split(",") if m.strip()]
        if not modules:
            raise UserError("--lora-target-modules: expected module names separated by commas, e.g. "
                            "proj_q,proj_k,proj_v,proj_out,ffn.0,ffn.2")
        return [f"train.lora.targets=[{', '.join(modules)}]"]
    if flag == "--lr-decay-style":
        if value not in LR_STYLES:
            raise UserError(f"--lr-decay-style {value}: supported here are {', '.join(LR_STYLES)} (Megatron's "
                            "constant, linear and cosine decay from --lr to --min-lr at --train-iters)")
        return [f"train.lr_schedule={LR_STYLES[value]}"]
    if flag == "--ckpt-format":
        if value != "torch_dcp":
            raise UserError(f"--ckpt-format {value}: training checkpoints here are always torch_dcp (resumable at "
                            "any process layout); `wan22 consolidate` writes MindSpeed-MM's model_optim_rng.pt "
                            "layout from them. Pass --ckpt-format torch_dcp, as its Wan2.2 scripts do")
        ignored.append("--ckpt-format torch_dcp (the only format here)")
        return []
    if flag == "--bf16":
        return ["train.dtype=bf16"]
    if flag == "--distributed-timeout-minutes":
        return [f"parallel.timeout_s={round(_number(flag, value, float) * 60)}"]
    if flag == "--fsdp2-config-path":
        return _fsdp2_settings(value, ignored)
    if flag == "--global-batch-size":
        return []  # with the layout, after every flag is read
    raise AssertionError(flag)  # pragma: no cover - _known lists only the flags handled above


def _path(value: str) -> str:
    return value if "://" in value else str(Path(value).absolute())


def _fsdp2_settings(path: str, ignored: list[str]) -> list[str]:
    """MindSpeed-MM's fsdp2_config.yaml: param_dtype -> train.dtype, recompute_modules -> activation checkpointing;
    CPU offload is refused; the wrapping and prefetch settings are how FSDP2 runs here anyway."""
    import yaml

    from wan_core.mindspeed.configs import dtype_name

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"--fsdp2-config-path {path}: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - a YAML error in words
        raise UserError(f"--fsdp2-config-path {path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"--fsdp2-config-path {path}: expected a mapping")
    sets = []
    dtype = dtype_name(raw.get("param_dtype"), f"--fsdp2-config-path {path}: param_dtype")
    if dtype == "fp16":
        raise UserError(f"--fsdp2-config-path {path}: param_dtype fp16 is not supported for training (bf16 or fp32)")
    if dtype is not None:
        sets.append(f"train.dtype={dtype}")
    recompute = raw.get("recompute_modules") or []
    if recompute:
        if not all(str(m).startswith("predictor.blocks") for m in recompute):
            raise UserError(f"--fsdp2-config-path {path}: recompute_modules {recompute}: only the DiT blocks "
                            "(predictor.blocks.{*}) can be recomputed here")
        sets.append("train.activation_checkpointing=true")
    if raw.get("offload_to_cpu"):
        raise UserError(f"--fsdp2-config-path {path}: offload_to_cpu true is not supported for training here; set it "
                        "to false (wan22 plan train shows what fits)")
    unknown = sorted(set(raw) - {"param_dtype", "recompute_modules", "offload_to_cpu", *FSDP2_NOOPS})
    if unknown:
        raise UserError(f"--fsdp2-config-path {path}: {unknown[0]} is not a setting read here (known: param_dtype, "
                        f"recompute_modules, offload_to_cpu, {', '.join(FSDP2_NOOPS)})")
    ignored.append(f"--fsdp2-config-path's {', '.join(k for k in FSDP2_NOOPS if k in raw)} (FSDP2 wraps each block "
                   "and shards over every data-parallel rank here)")
    return sets


def _grad_accum(values: dict, argv: list[str], env) -> int:
    """Megatron's gradient accumulation: global batch / (micro batch x data-parallel size)."""
    from wan_core.parallel.launch import launch_plan

    gbs = _number("--global-batch-size", values["--global-batch-size"], int)
    mbs = _number("--micro-batch-size", values.get("--micro-batch-size", "1"), int)
    cp = _number("--context-parallel-size", values.get("--context-parallel-size", "1"), int)

    def flag(name):
        return int(argv[argv.index(name) + 1]) if name in argv else None

    if env.get("WORLD_SIZE") and env.get("RANK") is not None:
        world = int(env["WORLD_SIZE"])
    else:
        plan = launch_plan(flag("--nproc"), flag("--nnodes"), None, None, env)
        world = 1 if plan is None else plan[0] * plan[1]
    if world % cp:
        raise UserError(f"--context-parallel-size {cp} does not divide the {world} processes")
    dp = world // cp
    if gbs % (mbs * dp):
        raise UserError(f"--global-batch-size {gbs} is not a multiple of --micro-batch-size {mbs} x the data-parallel "
                        f"size {dp} ({world} processes / --context-parallel-size {cp}), as Megatron requires")
    return gbs // (mbs * dp)
