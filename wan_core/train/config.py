"""The training config: one typed file (YAML or JSON), validated up front, `--set a.b=c` overrides.

MindSpeed-MM's own files (dataset config `data.json` + `pretrain_model*.json`) map onto the same keys.
Relative paths in the project's own files resolve against the config file's folder; in MindSpeed-MM's
files against the working folder, as MindSpeed-MM resolves them (its examples run from its root).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path


import yaml

from wan_core.config_fields import get_field
from wan_core.errors import UserError
from wan_core.model import variants
CP_ALGOS = {"ulysses": "ulysses", "ring": "ring", "usp": "usp", "ulysses_cp_algo": "ulysses",
            "megatron_cp_algo": "ring", "hybrid_cp_algo": "usp"}


@dataclasses.dataclass
class ModelSection:
    from_pretrained: str
    variant: str
    task: str | None = None
    expert: str | None = None  # high | low (A14B)


@dataclasses.dataclass
class DataSection:
    data_txt: str | None = None
    manifest: str | None = None
    features: str | None = None  # a `wan22 cache-features` folder: train without running the encoders
    num_frames: int = 17
    height: int = 64
    width: int = 64
    fps: float = 16.0
    caption_dropout: float = 0.0
    first_frame_prob: float = 1.0
    ti2v_loss: str = "exclude_first_frame"  # or "all_frames" (MindSpeed-MM / DiffSynth v1)
    num_workers: int | None = None  # None: background decoding workers on accelerators, none on the CPU
    # variable resolution (MindSpeed-MM's max_hxw): each clip keeps its aspect ratio at most max_hxw pixels,
    # sizes floored to multiples of hw_stride (raised to the variant's VAE x patch multiple); height/width unused
    max_hxw: int | None = None
    hw_stride: int = 0


@dataclasses.dataclass
class LoraSection:
    """LoRA fine-tuning (wan_core.lora): only the adapters train; the base stays frozen."""
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = dataclasses.field(default_factory=lambda: ["proj_q", "proj_k", "proj_v", "proj_out",
                                                                    "ffn.0", "ffn.2"])


@dataclasses.dataclass
class TrainSection:
    iters: int = 10
    save_interval: int = 100
    seed: int = 1234
    lr: float = 1e-5
    weight_decay: float = 1e-2
    clip_grad: float = 1.0
    warmup: int = 0
    micro_batch_size: int = 1
    grad_accum: int = 1
    dtype: str = "fp32"
    activation_checkpointing: bool = False
    compile: str = "auto"  # regional compilation of the transformer blocks: auto (on CUDA) | on | off
    lora: LoraSection | None = None  # set: train LoRA adapters instead of the whole DiT
    keep_last: int = 2
    log_interval: int = 1


@dataclasses.dataclass
class ParallelSection:
    cp: int = 1
    cp_algo: str = "ulysses"
    ulysses_degree: int | None = None
    timeout_s: int = 600


@dataclasses.dataclass
class ObjectiveSection:
    """The flow-matching objective (MindSpeed-MM's `diffusion` block and `seperated_timestep` map here)."""
    num_train_timesteps: int = 1000
    shift: float = 5.0
    sigma_min: float = 0.0
    sigma_max: float = 1.0
    extra_one_step: bool = True
    # train on indices [int(min * N), int(max * N)); None: the variant's expert range
    min_timestep_boundary: float | None = None
    max_timestep_boundary: float | None = None
    timestep_draw: str = "per_sample"  # or "per_batch": one timestep per micro-batch (MindSpeed-MM)
    separated_timestep: bool = False  # 5B t2v: frame-0 tokens at t = 0 though frame 0 is noisy (MindSpeed-MM)


@dataclasses.dataclass
class TrainConfig:
    model: ModelSection
    save_path: str
    data: DataSection = dataclasses.field(default_factory=DataSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    parallel: ParallelSection = dataclasses.field(default_factory=ParallelSection)
    objective: ObjectiveSection = dataclasses.field(default_factory=ObjectiveSection)
    load_path: str | None = None
    allow_random_init: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# -- building from a dict, field by field ------------------------------------------------------------
def _coerce(value, annotation, where: str):
    args = typing.get_args(annotation)
    if args and type(None) in args:  # Optional[X]
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config {where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"config {where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"config {where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise UserError(f"config {where}: expected a string, got {value!r}")
    return value


def _build(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise UserError(f"config {where or 'file'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"config {where + '.' if where else ''}{unknown[0]}: unknown key (known: "
                        f"{', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"config {key}: required")
            continue
        hint = hints[name]
        optional_section = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw[name], key)
        elif optional_section is not None:  # an optional section: null, or a mapping ({} = its defaults)
            kwargs[name] = None if raw[name] is None else _build(optional_section, raw[name], key)
        else:
            kwargs[name] = _coerce(raw[name], hint, key)
    return cls(**kwargs)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`a.b=c` assignments; values parsed as YAML scalars (numbers, true/false, null, strings)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            node[parts[-1]] = value
        if key.strip() in PATH_KEYS and isinstance(node[parts[-1]], str):
            # a path typed on the command line is relative to the working directory, not to the config file
            node[parts[-1]] = _absolute(node[parts[-1]])
    return raw


PATH_KEYS = {"model.from_pretrained", "save_path", "load_path", "data.data_txt", "data.manifest", "data.features"}


def _absolute(path: str) -> str:
    return path if not path or "://" in path else str(Path(path).absolute())


def _resolve_paths(cfg: TrainConfig, base: Path) -> None:
    def fix(p):
        if p is None or "://" in p or Path(p).is_absolute():
            return p
        return str((base / p).resolve())

    cfg.model.from_pretrained = fix(cfg.model.from_pretrained)
    cfg.save_path = fix(cfg.save_path)
    cfg.load_path = fix(cfg.load_path)
    cfg.data.data_txt, cfg.data.manifest, cfg.data.features = (fix(cfg.data.data_txt), fix(cfg.data.manifest),
                                                               fix(cfg.data.features))


def validate(cfg: TrainConfig) -> TrainConfig:
    m, d, t, p = cfg.model, cfg.data, cfg.train, cfg.parallel
    spec = variants.get(m.variant, "config model.variant")
    m.task = spec.check_task(m.task, "config model.task")
    m.expert = spec.check_expert(m.expert, "config model.expert")
    if sum(x is not None for x in (d.data_txt, d.manifest, d.features)) != 1:
        raise UserError("config data: give exactly one of data.data_txt, data.manifest, data.features")
    if d.num_frames < 1 or (d.num_frames - 1) % 4:
        raise UserError(f"config data.num_frames: must be 4n+1, got {d.num_frames}")
    multiple = spec.size_multiple
    if d.max_hxw is not None:
        if d.max_hxw < multiple * multiple:
            raise UserError(f"config data.max_hxw: must be at least {multiple * multiple} ({multiple}x{multiple}) for "
                            f"{m.variant}, got {d.max_hxw}")
        if d.hw_stride < 0:
            raise UserError(f"config data.hw_stride: must not be negative, got {d.hw_stride}")
        if d.features is not None:
            raise UserError("config data.max_hxw: variable resolution trains from the clips; a feature cache holds "
                            "one size (leave out data.features or data.max_hxw)")
    for name in ("height", "width"):
        if getattr(d, name) <= 0 or getattr(d, name) % multiple:
            raise UserError(f"config data.{name}: must be a positive multiple of {multiple} for {m.variant}, "
                            f"got {getattr(d, name)}")
    for name in ("caption_dropout", "first_frame_prob"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            raise UserError(f"config data.{name}: must be in [0, 1], got {getattr(d, name)}")
    if d.num_workers is not None and d.num_workers < 0:
        raise UserError(f"config data.num_workers: must not be negative, got {d.num_workers}")
    if d.fps <= 0:
        raise UserError(f"config data.fps: must be positive, got {d.fps}")
    if d.ti2v_loss not in ("exclude_first_frame", "all_frames"):
        raise UserError(f"config data.ti2v_loss: 'exclude_first_frame' or 'all_frames', got {d.ti2v_loss!r}")
    for name in ("iters", "save_interval", "micro_batch_size", "grad_accum", "keep_last", "log_interval"):
        if getattr(t, name) < 1:
            raise UserError(f"config train.{name}: must be at least 1, got {getattr(t, name)}")
    for name in ("lr", "weight_decay", "clip_grad", "warmup"):
        if getattr(t, name) < 0:
            raise UserError(f"config train.{name}: must not be negative, got {getattr(t, name)}")
    if t.lora is not None:
        from wan_core.lora import LoraSettings

        if not isinstance(t.lora.targets, list) or not all(isinstance(x, str) for x in t.lora.targets):
            raise UserError(f"config train.lora.targets: a list of module names, got {t.lora.targets!r}")
        LoraSettings(t.lora.rank, t.lora.alpha, t.lora.dropout, tuple(t.lora.targets)).check("config train.lora")
    if t.compile not in ("auto", "on", "off"):
        raise UserError(f"config train.compile: 'auto', 'on' or 'off', got {t.compile!r}")
    if t.dtype not in ("fp32", "bf16"):
        raise UserError(f"config train.dtype: 'fp32' or 'bf16', got {t.dtype!r}")
    _validate_objective(cfg.objective, spec)
    if p.cp_algo not in CP_ALGOS:
        raise UserError(f"config parallel.cp_algo: one of ulysses, ring, usp (or MindSpeed-MM's "
                        f"ulysses_cp_algo, megatron_cp_algo, hybrid_cp_algo), got {p.cp_algo!r}")
    p.cp_algo = CP_ALGOS[p.cp_algo]
    if p.cp < 1:
        raise UserError(f"config parallel.cp: must be at least 1, got {p.cp}")
    return cfg


def _validate_objective(o: ObjectiveSection, spec) -> None:
    if o.num_train_timesteps < 2:
        raise UserError(f"config objective.num_train_timesteps: must be at least 2, got {o.num_train_timesteps}")
    if o.shift <= 0:
        raise UserError(f"config objective.shift: must be positive, got {o.shift}")
    if not 0.0 <= o.sigma_min < o.sigma_max <= 1.0:
        raise UserError(f"config objective.sigma_min / sigma_max: need 0 <= sigma_min < sigma_max <= 1, got "
                        f"{o.sigma_min} and {o.sigma_max}")
    bounds = (o.min_timestep_boundary, o.max_timestep_boundary)
    if bounds != (None, None):
        lo = 0.0 if o.min_timestep_boundary is None else o.min_timestep_boundary
        hi = 1.0 if o.max_timestep_boundary is None else o.max_timestep_boundary
        if not 0.0 <= lo < hi <= 1.0 or int(lo * o.num_train_timesteps) >= int(hi * o.num_train_timesteps):
            raise UserError(f"config objective.min/max_timestep_boundary: need 0 <= min < max <= 1 with at least "
                            f"one training step between them, got {lo} and {hi}")
    if o.timestep_draw not in ("per_sample", "per_batch"):
        raise UserError(f"config objective.timestep_draw: 'per_sample' or 'per_batch', got {o.timestep_draw!r}")
    if o.separated_timestep and not spec.expand_timesteps:
        raise UserError(f"config objective.separated_timestep: {spec.name} takes one timestep per sample; only "
                        "variants with per-token timesteps (ti2v-5b) can give frame 0 its own")


def config_from_dict(raw: dict, base: Path) -> TrainConfig:
    cfg = _build(TrainConfig, raw, "")
    _resolve_paths(cfg, base)
    return validate(cfg)


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"config {path}: {exc.strerror}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UserError(f"config {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({exc})") from None
    return raw if raw is not None else {}


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    raw = read_config_file(path)
    if not isinstance(raw, dict):
        raise UserError(f"config {path}: expected a mapping at the top level")
    if "dataset_param" in raw or "predictor" in raw:
        raise UserError(f"config {path}: this is a MindSpeed-MM file; pass it as --mm-data / --mm-model")
    return config_from_dict(apply_overrides(raw, overrides or []), Path(path).absolute().parent)


# -- MindSpeed-MM's files ---------------------------------------------------------------------------
def from_mindspeed(data_json: str | Path, model_json: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Map MindSpeed-MM's dataset config + pretrain_model*.json onto a TrainConfig (save_path and
    train.* come from --set, as MindSpeed-MM's shell scripts pass them)."""
    data_raw, model_raw = read_config_file(data_json), read_config_file(model_json)
    dp = get_field(data_raw, "dataset_param", dict, data_json)
    predictor = get_field(model_raw, "predictor", dict, model_json)
    if dp is None or predictor is None:
        raise UserError(f"{data_json} / {model_json}: expected MindSpeed-MM's dataset_param and predictor sections")
    basic = get_field(dp, "basic_parameters", dict, f"{data_json}: dataset_param", {})
    pre = get_field(dp, "preprocess_parameters", dict, f"{data_json}: dataset_param", {})
    in_dim = get_field(predictor, "in_dim", int, f"{model_json}: predictor")
    spec = variants.by_in_channels(in_dim)
    if spec is None:
        known = ", ".join(f"{v.in_channels} ({v.name})" for v in variants.REGISTRY.values())
        raise UserError(f"{model_json}: predictor.in_dim {in_dim} is not a Wan2.2 variant ({known})")
    pretrained = (get_field(model_raw, "ae.from_pretrained", str, model_json)
                  or get_field(data_raw, "tokenizer_config.from_pretrained", str, data_json)
                  or get_field(dp, "tokenizer_config.from_pretrained", str, f"{data_json}: dataset_param"))
    if not pretrained:
        raise UserError(f"{model_json}: no ae.from_pretrained to find the diffusers folder")
    diffusion = get_field(model_raw, "diffusion", dict, model_json, {})
    objective = _mm_objective(diffusion, predictor, model_json)
    expert = None
    if spec.two_experts:
        expert = "high" if objective["min_timestep_boundary"] == 0.0 else "low"
    # MindSpeed-MM says task "i2v" for 5B first-frame training (model_type "ti2v")
    task = spec.mm_tasks.get(model_raw.get("task") or predictor.get("model_type"))
    raw = {"model": {"from_pretrained": str(Path(pretrained).parent), "variant": spec.name, "task": task,
                     "expert": expert},
           "data": {"data_txt": get_field(basic, "data_path", str, f"{data_json}: basic_parameters"),
                    "num_frames": get_field(pre, "num_frames", int, f"{data_json}: preprocess_parameters", 49),
                    "height": get_field(pre, "max_height", int, f"{data_json}: preprocess_parameters", 480),
                    "width": get_field(pre, "max_width", int, f"{data_json}: preprocess_parameters", 832),
                    "fps": float(get_field(pre, "train_fps", float, f"{data_json}: preprocess_parameters", 16)),
                    # MindSpeed-MM drops captions with probability `cfg` (0.1 when absent) and, for TI2V, keeps the
                    # clean first frame inside the loss (its noise is the first frame's latent; target 0 there)
                    "caption_dropout": get_field(pre, "cfg", float, f"{data_json}: preprocess_parameters", 0.1),
                    "ti2v_loss": "all_frames",
                    **_mm_resolution(pre, f"{data_json}: preprocess_parameters")},
           "objective": objective,
           "save_path": "save"}
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, Path.cwd())  # MindSpeed-MM resolves its relative paths against the working folder


def _mm_resolution(pre: dict, where: str) -> dict:
    """MindSpeed-MM trains at a variable resolution unless force_resolution is set (then max_height x max_width)."""
    if get_field(pre, "force_resolution", bool, where, False):
        return {}
    max_hxw = get_field(pre, "max_hxw", int, where)
    if max_hxw is None:
        return {}
    return {"max_hxw": max_hxw, "hw_stride": get_field(pre, "hw_stride", int, where, 0)}


# MindSpeed-MM's WanFlowMatchScheduler constructor defaults, which apply when its `diffusion` block leaves a key out
MM_SCHEDULER_DEFAULTS = {"num_train_timesteps": 1000, "shift": 3.0, "sigma_max": 1.0, "sigma_min": 0.003 / 1.002,
                         "extra_one_step": False, "min_timestep_boundary": 0.0, "max_timestep_boundary": 1.0}


def _mm_objective(diffusion: dict, predictor: dict, model_json) -> dict:
    """The `objective` section for MindSpeed-MM's `diffusion` block: its values, else its scheduler's defaults."""
    where = f"{model_json}: diffusion"
    model_id = diffusion.get("model_id", "wan_flow_match_scheduler")
    if model_id != "wan_flow_match_scheduler":
        raise UserError(f"{where}.model_id: {model_id!r} is not supported for Wan2.2 training (only "
                        "'wan_flow_match_scheduler')")
    for key in ("inverse_timesteps", "reverse_sigmas"):
        if diffusion.get(key):
            raise UserError(f"{where}.{key}: true is not supported (Wan2.2 trains with sigma falling from 1)")
    out = {}
    for key, default in MM_SCHEDULER_DEFAULTS.items():
        kind = bool if isinstance(default, bool) else int if key == "num_train_timesteps" else float
        value = get_field(diffusion, key, kind, where, default)
        out[key] = float(value) if kind is float else value
    return {**out, "timestep_draw": "per_batch",  # q_sample draws one timestep index per batch
            "separated_timestep": bool(predictor.get("seperated_timestep", False))}
