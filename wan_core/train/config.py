"""The training config, the one contract of a training run: a YAML or JSON document plus `--set a.b=c`
overrides, validated once by this schema (pydantic), then carried unchanged to every rank.

Every training knob lives here, once: its type, its default, its range and a one-line description (the
pipelines' and the docs' description of each knob is read from `Field(description=...)`). Relative paths in a
config file resolve against the file's folder; paths typed in an override against the working folder.
MindSpeed-MM's own files map onto the same keys (wan_core.mindspeed.configs). Torch-free.
"""
from __future__ import annotations

import hashlib
import json
import re
import typing
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wan_core.errors import UserError
from wan_core.model import variants
from wan_core.parallel.mesh import CP_ALGOS

# the attention q/k/v/o projections (self and cross) and both FFN projections of every block, as MindSpeed-MM
# and DiffSynth-Studio target them
DEFAULT_TARGETS = ("proj_q", "proj_k", "proj_v", "proj_out", "ffn.0", "ffn.2")
PATH_KEYS = {"model.from_pretrained", "save_path", "load_path", "data.data_txt", "data.manifest", "data.features",
             "train.lora.init"}


class Section(BaseModel):
    """A config section: unknown keys are errors, never silently dropped."""
    model_config = ConfigDict(extra="forbid")


class ModelSection(Section):
    from_pretrained: str = Field(description="the diffusers pipeline folder training starts from")
    variant: str = Field(description=f"one of {', '.join(variants.VARIANTS)}")
    task: str | None = Field(None, description="t2v | ti2v | i2v (default: the variant's first)")
    expert: str | None = Field(None, description="A14B: high | low, the expert this run trains")

    @model_validator(mode="after")
    def _known(self):
        spec = variants.get(self.variant, "config model.variant")
        self.task = spec.check_task(self.task, "config model.task")
        self.expert = spec.check_expert(self.expert, "config model.expert")
        return self


class MindSpeedClips(Section):
    """MindSpeed-MM's clip rules (its data.json preprocess_parameters, read by wan_core.data.mindspeed_clips): clips
    come out data.height x data.width (its max_height x max_width) with at most data.num_frames frames; data.fps
    is its train_fps. Defaults are its video processor's."""
    auto_interval: bool = Field(True, description="frame interval fps / train_fps (false: consecutive frames)")
    frame_interval: int = Field(1, ge=1, description="frame interval when auto_interval is false")
    speed_factor: float = Field(1.0, gt=0, description="above 1: long clips subsampled up to this factor")
    min_num_frames: int = Field(29, ge=1, description="clips giving fewer frames are dropped")
    drop_short_ratio: float = Field(1.0, ge=0, le=1, description="probability a clip shorter than num_frames is "
                                    "dropped (else it trains at its own 4k+1 length)")
    force_resolution: bool = Field(True, description="select by max_height : max_width aspect (false: by max_hxw)")
    max_hxw: int | None = Field(None, gt=0, description="selection: clip sizes scaled to at most this many pixels")
    min_hxw: int | None = Field(None, ge=0, description="selection: smaller clips dropped (default max_hxw / 4)")
    hw_stride: int = Field(32, ge=1, description="selection: sizes floored to multiples of this")
    hw_aspect_thr: float = Field(1.5, ge=0, description="selection: aspect-ratio threshold (0 means 1.5)")
    truncate_t_by_sp: bool = Field(True, description="latent frame counts a multiple of parallel.cp")


class DataSection(Section):
    data_txt: str | None = Field(None, description="a data.txt listing data.json datasets")
    manifest: str | None = Field(None, description="a validate-dataset manifest")
    features: str | None = Field(None, description="a `wan22 cache-features` folder: train without the encoders")
    num_frames: int = Field(17, ge=1, description="frames per clip (4n+1)")
    height: int = Field(64, gt=0, description="clip height in pixels (a multiple of the variant's size multiple)")
    width: int = Field(64, gt=0, description="clip width in pixels")
    fps: float = Field(16.0, gt=0, description="frame rate clips are resampled to")
    caption_dropout: float = Field(0.0, ge=0, le=1, description="probability of training on an empty caption")
    first_frame_prob: float = Field(1.0, ge=0, le=1, description="TI2V: probability of a clean first frame")
    ti2v_loss: Literal["exclude_first_frame", "all_frames"] = Field(
        "exclude_first_frame", description="all_frames: MindSpeed-MM / DiffSynth v1")
    num_workers: int | None = Field(None, ge=0, description="loader processes (default: on accelerators only)")
    max_hxw: int | None = Field(None, description="variable resolution: at most this many pixels per frame, "
                                "aspect ratio kept (height/width unused)")
    hw_stride: int = Field(0, ge=0, description="variable resolution: sizes floored to multiples of this")
    mindspeed: MindSpeedClips | None = Field(None, description="set: read clips exactly as MindSpeed-MM's dataset "
                                             "code does (what --mm-data sets)")


class LoraSettings(Section):
    """LoRA fine-tuning (wan_core.train.lora): only the adapters train; the base stays frozen. The same class
    describes an adapter file's settings."""
    rank: int = Field(16, ge=1, description="adapter rank r")
    alpha: float = Field(16.0, gt=0, description="scale numerator: the update is (alpha / r) B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    targets: tuple[str, ...] = Field(DEFAULT_TARGETS, min_length=1, description="module names to adapt")
    init: str | None = Field(None, description="a LoRA file (any layout sample --lora reads) the adapters start from "
                             "instead of B = 0; its modules must be among the targets, at this rank")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class TrainSection(Section):
    iters: int = Field(10, ge=1, description="optimizer steps in all (a resumed run continues up to it)")
    save_interval: int = Field(100, ge=1, description="steps between checkpoints")
    seed: int = Field(1234, description="data order, noise and timesteps derive from it")
    lr: float = Field(1e-5, ge=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay")
    clip_grad: float = Field(1.0, ge=0, description="gradient-norm clip (0: none)")
    warmup: int = Field(0, ge=0, description="linear learning-rate warm-up steps")
    warmup_init: float | None = Field(None, ge=0, description="set: the warm-up rises from this at step 0 to lr at "
                                      "step `warmup` (Megatron's --lr-warmup-init); unset: the first step uses "
                                      "lr / warmup")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="after the warm-up: constant, or a linear / cosine decay from lr to min_lr at iters "
        "(Megatron's lr-decay-style)")
    min_lr: float = Field(0.0, ge=0, description="where the linear / cosine decay ends")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    micro_batch_size: int = Field(1, ge=1, description="clips per process per forward pass")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    dtype: Literal["fp32", "bf16"] = Field("fp32", description="compute dtype (master weights stay fp32)")
    activation_checkpointing: bool = Field(False, description="recompute each block in the backward pass")
    compile: Literal["auto", "on", "off"] = Field("auto", description="regional compilation (auto: on CUDA)")
    lora: LoraSettings | None = Field(None, description="set: train LoRA adapters instead of the whole DiT")
    keep_last: int = Field(2, ge=1, description="checkpoints kept")
    log_interval: int = Field(1, ge=1, description="steps between log lines on a terminal (off a terminal: every "
                              "step or every 5%, whichever is rarer)")
    log_format: Literal["wan22", "megatron"] = Field(
        "wan22", description="megatron: Megatron's per-iteration line every log_interval steps (what MindSpeed-MM's "
        "scripts grep for)")
    stop_grace_s: int = Field(60, ge=1, description="on SIGTERM (eviction, node drain): seconds to finish the step "
                              "and save a checkpoint; the Kubernetes manifests give the pod this plus a margin")

    @field_validator("compile", mode="before")
    @classmethod
    def _on_off(cls, value):
        """YAML 1.1 reads an unquoted on / off as true / false."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


# optimizer and schedule settings a resumed run takes from its config (the checkpoint's are replaced, and the
# changes are listed); the settings a checkpoint cannot be continued under are refused (RESUME_FIXED)
RESUME_CHANGEABLE = ("train.lr", "train.min_lr", "train.warmup", "train.warmup_init", "train.lr_schedule",
                     "train.adam_beta1", "train.adam_beta2", "train.adam_eps", "train.weight_decay", "train.clip_grad",
                     "train.iters")
RESUME_FIXED = ("model.variant", "model.task", "model.expert", "train.lora.targets", "train.lora.rank")


def learning_rate(train: "TrainSection", step: int) -> float:
    """The learning rate of optimizer step `step` (0-based): a linear warm-up to lr, then constant or a
    linear / cosine decay to min_lr at iters (Megatron's schedule). A function of the config and the step only, so a
    resumed run follows the config it is given."""
    import math

    if train.warmup and train.warmup_init is not None and step <= train.warmup:  # Megatron's warm-up
        return train.warmup_init + (train.lr - train.warmup_init) * step / train.warmup
    if train.warmup and step < train.warmup:
        return train.lr * (step + 1) / train.warmup
    if train.lr_schedule == "constant":
        return train.lr
    progress = min(1.0, (step - train.warmup) / max(1, train.iters - train.warmup))
    factor = 1.0 - progress if train.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return train.min_lr + (train.lr - train.min_lr) * factor


def _dotted(document: dict, key: str):
    value = document
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def resume_changes(saved: dict, cfg: "TrainConfig") -> list[str]:
    """What a resumed run's config changes against its checkpoint's (`saved`, that run's config as a mapping): the
    optimizer and schedule settings as "key old -> new" (they apply from the next step); a UserError for the settings
    a checkpoint cannot continue under (another variant, task or expert, LoRA on or off, other LoRA targets/rank)."""
    new = cfg.to_dict()
    if (saved.get("train", {}).get("lora") is None) != (cfg.train.lora is None):
        was = "LoRA adapters" if cfg.train.lora is None else "the whole DiT"
        raise UserError(f"the checkpoint being resumed trained {was}; train.lora cannot change on resume: restore "
                        "it, or give this run its own save_path")
    fixed = [key for key in RESUME_FIXED if _dotted(saved, key) != _dotted(new, key)]
    if fixed:
        listed = ", ".join(f"{k} {_dotted(saved, k)!r} -> {_dotted(new, k)!r}" for k in fixed)
        raise UserError(f"the checkpoint being resumed was trained with other settings that cannot change on resume "
                        f"({listed}); restore them, or give this run its own save_path")
    return [f"{key} {_dotted(saved, key)} -> {_dotted(new, key)}" for key in RESUME_CHANGEABLE
            if _dotted(saved, key) is not None and _dotted(saved, key) != _dotted(new, key)]


class ParallelSection(Section):
    cp: int = Field(1, ge=1, description="context-parallel degree: processes sharing one video's sequence")
    cp_algo: str = Field("ulysses", description="ulysses | ring | usp (or MindSpeed-MM's names)")
    ulysses_degree: int | None = Field(None, ge=1, description="usp: Ulysses group size inside each CP group")
    timeout_s: int = Field(600, ge=1, description="collective timeout in seconds")
    device_memory_gb: float | None = Field(None, gt=0, description="device memory the memory plan checks against "
                                           "(default: the device's own, or the deployment profile's)")

    @field_validator("cp_algo")
    @classmethod
    def _algo(cls, value: str) -> str:
        if value not in CP_ALGOS:
            raise UserError(f"config parallel.cp_algo: one of ulysses, ring, usp (or MindSpeed-MM's "
                            f"ulysses_cp_algo, megatron_cp_algo, hybrid_cp_algo), got {value!r}")
        return CP_ALGOS[value]


class ObjectiveSection(Section):
    """The flow-matching objective (MindSpeed-MM's `diffusion` block and `seperated_timestep` map here)."""
    num_train_timesteps: int = Field(1000, ge=2, description="timestep grid size")
    shift: float = Field(5.0, gt=0, description="sigma shift")
    sigma_min: float = Field(0.0, description="smallest sigma")
    sigma_max: float = Field(1.0, description="largest sigma")
    extra_one_step: bool = Field(True, description="one more grid point, then dropped (diffusers' grid)")
    min_timestep_boundary: float | None = Field(None, description="train on indices from int(min * N) "
                                                "(default: the variant's expert range)")
    max_timestep_boundary: float | None = Field(None, description="... up to int(max * N), exclusive")
    timestep_draw: Literal["per_sample", "per_batch"] = Field("per_sample", description="per_batch: MindSpeed-MM")
    separated_timestep: bool = Field(False, description="5B t2v: frame-0 tokens at t = 0 (MindSpeed-MM)")
    grid_dtype: Literal["float64", "float32"] = Field(
        "float64", description="dtype the sigma / timestep / weight grids are built in (float32: MindSpeed-MM's, bit "
        "for bit)")

    @model_validator(mode="after")
    def _ranges(self):
        if not 0.0 <= self.sigma_min < self.sigma_max <= 1.0:
            raise UserError(f"config objective.sigma_min / sigma_max: need 0 <= sigma_min < sigma_max <= 1, got "
                            f"{self.sigma_min} and {self.sigma_max}")
        if (self.min_timestep_boundary, self.max_timestep_boundary) != (None, None):
            lo, hi = self.boundaries()
            if not 0.0 <= lo < hi <= 1.0 or int(lo * self.num_train_timesteps) >= int(hi * self.num_train_timesteps):
                raise UserError(f"config objective.min/max_timestep_boundary: need 0 <= min < max <= 1 with at least "
                                f"one training step between them, got {lo} and {hi}")
        return self

    def boundaries(self) -> tuple[float, float]:
        return (self.min_timestep_boundary or 0.0,
                1.0 if self.max_timestep_boundary is None else self.max_timestep_boundary)


class TrainConfig(Section):
    model: ModelSection
    save_path: str = Field(description="checkpoints, metrics and the resolved config")
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    parallel: ParallelSection = Field(default_factory=ParallelSection)
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)
    load_path: str | None = Field(None, description="initial weights (default: the base's transformer)")
    allow_random_init: bool = Field(False, description="train from random weights when none load")

    @model_validator(mode="after")
    def _across_sections(self):
        spec = variants.get(self.model.variant)
        d = self.data
        if sum(x is not None for x in (d.data_txt, d.manifest, d.features)) != 1:
            raise UserError("config data: give exactly one of data.data_txt, data.manifest, data.features")
        spec.check_frames(d.num_frames, "config data.num_frames")
        multiple = spec.size_multiple
        if d.mindspeed is not None and d.max_hxw is not None:
            raise UserError("config data.max_hxw: our aspect-preserving buckets and MindSpeed-MM's clip rules "
                            "(data.mindspeed, which has its own max_hxw) exclude each other; keep one")
        if d.max_hxw is not None:
            if d.max_hxw < multiple * multiple:
                raise UserError(f"config data.max_hxw: must be at least {multiple * multiple} ({multiple}x{multiple}) "
                                f"for {spec.name}, got {d.max_hxw}")
            if d.features is not None:
                raise UserError("config data.max_hxw: variable resolution trains from the clips; a feature cache "
                                "holds one size (leave out data.features or data.max_hxw)")
        for name in ("height", "width"):
            if getattr(d, name) % multiple:
                raise UserError(f"config data.{name}: must be a positive multiple of {multiple} for {spec.name}, "
                                f"got {getattr(d, name)}")
        if self.objective.separated_timestep and not spec.expand_timesteps:
            raise UserError(f"config objective.separated_timestep: {spec.name} takes one timestep per sample; only "
                            "variants with per-token timesteps (ti2v-5b) can give frame 0 its own")
        if self.parallel.cp_algo == "usp" and self.parallel.cp > 1 and not self.parallel.ulysses_degree:
            raise UserError("config parallel.ulysses_degree: usp needs the Ulysses group size inside each CP group")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# -- pydantic's errors in our words -------------------------------------------------------------------------
_EXPECTED = {"int_parsing": "expected an integer", "int_from_float": "expected an integer",
             "int_type": "expected an integer", "float_parsing": "expected a number", "float_type": "expected a number",
             "bool_parsing": "expected true/false", "bool_type": "expected true/false",
             "string_type": "expected a string", "model_type": "expected a mapping", "dict_type": "expected a mapping"}


def _section_of(annotation) -> type[BaseModel] | None:
    return next((a for a in (annotation, *getattr(annotation, "__args__", ())) if isinstance(a, type)
                 and issubclass(a, BaseModel)), None)


def _range_words(field) -> str:
    """A field's numeric bounds in words: "must be in [0, 1]", "must be at least 1", "must not be negative"."""
    bounds = {type(m).__name__: m for m in field.metadata}
    lo = bounds.get("Ge") or bounds.get("Gt")
    hi = bounds.get("Le") or bounds.get("Lt")
    low = None if lo is None else getattr(lo, "ge", getattr(lo, "gt", None))
    high = None if hi is None else getattr(hi, "le", getattr(hi, "lt", None))
    if lo is not None and hi is not None:
        return f"must be in {'[' if 'Ge' in bounds else '('}{low:g}, {high:g}{']' if 'Le' in bounds else ')'}"
    if lo is not None:
        if low == 0:
            return "must not be negative" if "Ge" in bounds else "must be positive"
        return f"must be at least {low:g}" if "Ge" in bounds else f"must be above {low:g}"
    if hi is not None:
        return f"must be at most {high:g}" if "Le" in bounds else f"must be below {high:g}"
    return ""


def _in_words(exc: ValidationError, model: type[BaseModel]) -> UserError:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "file"
    kind = err["type"]
    parent, field = model, None  # the section holding the key, and the key's field
    for part in loc:
        field = parent.model_fields.get(part)
        if field is None:
            break
        parent = _section_of(field.annotation) or parent
    if kind == "extra_forbidden":
        return UserError(f"config {key}: unknown key (known: {', '.join(sorted(parent.model_fields))})")
    if kind == "missing":
        return UserError(f"config {key}: required")
    if kind in _EXPECTED:
        return UserError(f"config {key}: {_EXPECTED[kind]}, got {err['input']!r}")
    bounds = _range_words(field) if field is not None else ""
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and bounds:
        return UserError(f"config {key}: {bounds}, got {err['input']!r}")
    return UserError(f"config {key}: {err['msg'][0].lower()}{err['msg'][1:]}, got {err['input']!r}")


def validated(model: type[BaseModel], raw):
    """`model` built from `raw`, or a UserError naming the first bad key."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _in_words(exc, model) from None


# -- documents and overrides --------------------------------------------------------------------------------
class _ConfigLoader(yaml.SafeLoader):
    """YAML as people write numbers: PyYAML follows YAML 1.1, where `1e-4` (no dot) and `5e-6` are strings;
    YAML 1.2 and every JSON reader take them as numbers, and so do we."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$"
               r"|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def yaml_load(text: str):
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: plain data only


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
            node[parts[-1]] = yaml_load(value) if value.strip() else ""
        except yaml.YAMLError:
            node[parts[-1]] = value
        if key.strip() in PATH_KEYS and isinstance(node[parts[-1]], str):
            # a path typed on the command line is relative to the working directory, not to the config file
            node[parts[-1]] = _absolute(node[parts[-1]])
    return raw


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
    if cfg.train.lora is not None:
        cfg.train.lora.init = fix(cfg.train.lora.init)


def config_from_dict(raw: dict, base: Path) -> TrainConfig:
    cfg = validated(TrainConfig, raw)
    _resolve_paths(cfg, base)
    return cfg


def parse_document(text: str, where: str, json_only: bool = False) -> dict:
    """A config document's mapping (YAML is a superset of JSON)."""
    try:
        raw = json.loads(text) if json_only else yaml_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UserError(f"config {where}: not valid {'JSON' if json_only else 'YAML'} ({exc})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise UserError(f"config {where}: expected a mapping at the top level")
    return raw


def read_config_file(path: str | Path) -> dict:
    """A config file's mapping: a local path, or an fsspec URL (the file a run on object storage writes for its
    ranks)."""
    if "://" in str(path):
        from wan_core.storage import Location

        try:
            text = Location(str(path)).read_text()
        except (OSError, ImportError) as exc:
            raise UserError(f"config {path}: cannot read it ({exc})") from None
        return parse_document(text, str(path), json_only=str(path).endswith(".json"))
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"config {path}: {exc.strerror}") from None
    return parse_document(text, str(path), json_only=path.suffix == ".json")


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    raw = read_config_file(path)
    if "dataset_param" in raw or "predictor" in raw:
        raise UserError(f"config {path}: this is a MindSpeed-MM file; pass it as --mm-data / --mm-model")
    return config_from_dict(apply_overrides(raw, overrides or []), Path(path).absolute().parent)


def _is_path(document: str) -> bool:
    text = document.strip()
    return bool(text) and "\n" not in text and ": " not in text and text.endswith((".yaml", ".yml", ".json"))


def document_mapping(document: str) -> dict:
    """A config document given as text, or as the path of a file holding it (either fits in one run
    parameter), as a mapping (paths inside not yet resolved)."""
    return read_config_file(document.strip()) if _is_path(document) else parse_document(document, "document")


def resolve_document(document: str, overrides: list[str] | None = None) -> TrainConfig:
    """The config from a document (text or a file's path) plus overrides. Relative paths resolve against the
    file's folder, or the working folder for text."""
    if _is_path(document):
        return load_config(document.strip(), overrides)
    raw = apply_overrides(parse_document(document, "document"), overrides or [])
    return config_from_dict(raw, Path.cwd())


def from_mindspeed(data_json: str | Path, model_json: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """MindSpeed-MM's dataset config + pretrain_model*.json as a TrainConfig (save_path and train.* come from
    --set, as MindSpeed-MM's shell scripts pass them)."""
    from wan_core.mindspeed.configs import training_document

    raw = apply_overrides(training_document(data_json, model_json, read_config_file), overrides or [])
    return config_from_dict(raw, Path.cwd())  # MindSpeed-MM resolves its relative paths against the working folder


# -- the reference of every key ------------------------------------------------------------------------------
def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every key of the schema, sections expanded in order
    (docs/training-config.md is this table; a test keeps it so)."""
    model = model or TrainConfig
    rows = []
    for name, field in model.model_fields.items():
        key = prefix + name
        section = _section_of(field.annotation)
        if section is not None:
            if field.default is None:  # an optional section: null, or a mapping of its keys
                rows.append((key, "section or null", "null", field.description or section.__doc__.splitlines()[0]))
            rows += config_keys(section, key + ".")
            continue
        if typing.get_origin(field.annotation) is Literal:
            kind = " or ".join(typing.get_args(field.annotation))
        else:
            kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        value = field.get_default(call_default_factory=True)
        default = "required" if field.is_required() else json.dumps(list(value) if isinstance(value, tuple) else value)
        bounds = _range_words(field)
        rows.append((key, kind, default, (field.description or "") + (f" ({bounds})" if bounds else "")))
    return rows


def config_reference() -> str:
    """docs/training-config.md: every key, its type, default and meaning."""
    lines = ["# Training config reference", "",
             "Every key of a training config (`wan22 train --config FILE --set KEY=VALUE`, the pipelines' "
             "`train_config` and `train_set` run parameters). Generated from `wan_core/train/config.py`, the one "
             "schema; `tests/test_docs.py` checks this page against it.", "",
             "| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, text in config_keys():
        lines.append(f"| `{key}` | {kind.replace('|', 'or')} | `{default}` | {text.replace('|', 'or')} |")
    return "\n".join(lines) + "\n"
