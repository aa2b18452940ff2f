"""MindSpeed-MM's config files as our documents: its dataset `data.json` + `pretrain_model*.json` as a training
config mapping (validated by wan_core.train.config like any other), its `inference_model.json` as the fields of a
sampling job. Relative paths resolve against the working folder, as MindSpeed-MM resolves them (its examples run
from its root). Reads fields through wan_core.config_fields, so a wrong type names its file and key."""
from __future__ import annotations

import json
from pathlib import Path

from wan_core.config_fields import get_field, get_int_list
from wan_core.errors import UserError
from wan_core.model import variants

# MindSpeed-MM's WanFlowMatchScheduler constructor defaults, which apply when its `diffusion` block leaves a key out
MM_SCHEDULER_DEFAULTS = {"num_train_timesteps": 1000, "shift": 3.0, "sigma_max": 1.0, "sigma_min": 0.003 / 1.002,
                         "extra_one_step": False, "min_timestep_boundary": 0.0, "max_timestep_boundary": 1.0}
# inference_model.json keys handled elsewhere or carrying no sampling setting
MM_DIFFUSION_HANDLED = {"model_id", "num_inference_steps", "guidance_scale", "flow_shift", "num_train_steps"}


def training_document(data_json, model_json, read) -> dict:
    """The training config mapping for MindSpeed-MM's two files (`read(path)` parses one into a dict)."""
    data_raw, model_raw = read(data_json), read(model_json)
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
    objective = _objective(diffusion, predictor, model_json)
    expert = None
    if spec.two_experts:
        expert = "high" if objective["min_timestep_boundary"] == 0.0 else "low"
    # MindSpeed-MM says task "i2v" for 5B first-frame training (model_type "ti2v")
    task = spec.mm_tasks.get(model_raw.get("task") or predictor.get("model_type"))
    where = f"{data_json}: preprocess_parameters"
    return {"model": {"from_pretrained": str(Path(pretrained).parent), "variant": spec.name, "task": task,
                      "expert": expert},
            "data": {"data_txt": _data_path(basic, data_json),
                     "num_frames": get_field(pre, "num_frames", int, where, 49),
                     "height": get_field(pre, "max_height", int, where, 480),
                     "width": get_field(pre, "max_width", int, where, 832),
                     "fps": float(get_field(pre, "train_fps", float, where, 16)),
                     # MindSpeed-MM drops captions with probability `cfg` (0.1 when absent) and, for TI2V, keeps the
                     # clean first frame inside the loss (its noise is the first frame's latent; target 0 there)
                     "caption_dropout": get_field(pre, "cfg", float, where, 0.1),
                     "ti2v_loss": "all_frames",
                     "mindspeed": _clip_rules(pre, where)},
            "objective": objective,
            "save_path": "save"}


# preprocess_parameters read into data.mindspeed (the rest of its keys map to data.* or change nothing here)
MM_CLIP_KEYS = {"auto_interval": bool, "frame_interval": int, "speed_factor": float, "min_num_frames": int,
                "drop_short_ratio": float, "force_resolution": bool, "max_hxw": int, "min_hxw": int, "hw_stride": int,
                "hw_aspect_thr": float, "truncate_t_by_sp": bool}


def _clip_rules(pre: dict, where: str) -> dict:
    """MindSpeed-MM's clip rules (wan_core.data.mindspeed_clips): its OpensoraplanVideoProcessor settings as given;
    left-out keys take that processor's defaults (the schema's)."""
    from wan_core.data.mindspeed_clips import check_pipeline

    kind = pre.get("video_processor_type", "OpensoraplanVideoProcessor")
    if kind != "OpensoraplanVideoProcessor":
        raise UserError(f"{where}.video_processor_type: {kind!r} is not supported (Wan2.2 reads clips with "
                        "'OpensoraplanVideoProcessor')")
    check_pipeline(pre.get("train_pipeline"), where)
    out = {}
    for key, kind in MM_CLIP_KEYS.items():
        value = get_field(pre, key, kind, where)
        if value is not None:
            out[key] = float(value) if kind is float else value
    return out


def _objective(diffusion: dict, predictor: dict, model_json) -> dict:
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
            "grid_dtype": "float32",  # torch.linspace in the default dtype
            "separated_timestep": bool(predictor.get("seperated_timestep", False))}


def _scheduler_overrides(diffusion: dict, src: str) -> dict:
    """UniPCMultistepScheduler settings from MindSpeed-MM's `diffusion` block (checked against its signature)."""
    import inspect

    from diffusers import UniPCMultistepScheduler

    model_id = diffusion.get("model_id", "UniPCMultistepScheduler")
    if model_id != "UniPCMultistepScheduler":
        raise UserError(f"{src}: diffusion.model_id {model_id!r} is not supported; Wan2.2 samples with "
                        "UniPCMultistepScheduler (the released pipelines' scheduler)")
    known = set(inspect.signature(UniPCMultistepScheduler.__init__).parameters) - {"self"}
    overrides = {k: v for k, v in diffusion.items() if k not in MM_DIFFUSION_HANDLED}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(f"{src}: diffusion.{unknown[0]} is not a setting of UniPCMultistepScheduler")
    if "num_train_steps" in diffusion:
        overrides["num_train_timesteps"] = get_field(diffusion, "num_train_steps", int, f"{src}: diffusion")
    return overrides


def sampling_fields(path: str) -> dict:
    """The fields of a sampling job (wan_core.sample.run.SampleJob) from MindSpeed-MM's inference_model.json."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--config {path}: cannot read JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"--config {path}: expected a JSON object at the top level")
    src = f"--config {path}"

    def resolve(p):
        return None if p is None else str(Path(p).absolute())

    model = get_field(cfg, "from_pretrained", str, src)
    if model is None:
        for key in ("tokenizer", "text_encoder", "ae"):
            sub = get_field(cfg, f"{key}.from_pretrained", str, src)
            if sub:
                model = str(Path(resolve(sub)).parent)
                break
    if model is None or not get_field(cfg, "prompt", str, src) or not get_field(cfg, "save_path", str, src):
        raise UserError(f"--config {path}: needs from_pretrained (or ae/tokenizer/text_encoder.from_pretrained), "
                        "prompt (a prompts file) and save_path")
    if get_field(cfg, "use_prompt_preprocess", bool, src, False):
        raise UserError(f"{src}: use_prompt_preprocess true is not supported (prompts are encoded as written); "
                        "set it to false, as MindSpeed-MM's Wan2.2 examples do")
    size = get_int_list(cfg, "pipeline_config.input_size", 3, src) or get_int_list(cfg, "input_size", 3, src)
    if size:  # every Wan2.2 VAE has the same temporal stride: the file's own size is named, not --size
        from wan_core.model import variants

        problem = next(iter(variants.REGISTRY.values())).frames_problem(size[0])
        if problem:
            raise UserError(f"{src}: pipeline_config.input_size {list(size)}: {problem}")
    guidance = get_field(cfg, "diffusion.guidance_scale", (float, list), src)
    if isinstance(guidance, list) and not all(isinstance(g, (int, float)) for g in guidance):
        raise UserError(f"{src}: diffusion.guidance_scale must be a number or a list of numbers, got {guidance!r}")
    fps = get_field(cfg, "fps", int, src)
    frame_interval = get_field(cfg, "frame_interval", int, src, 1)
    if frame_interval < 1:
        raise UserError(f"{src}: frame_interval must be at least 1, got {frame_interval}")
    predictor = get_field(cfg, "predictor.from_pretrained", str, src)
    return dict(
        model=resolve(model), prompts=resolve(cfg["prompt"]), output=resolve(cfg["save_path"]),
        images=resolve(cfg.get("image")), size=tuple(size) if size else None,
        steps=get_field(cfg, "diffusion.num_inference_steps", int, src),
        guidance=None if guidance is None else [float(g) for g in (guidance if isinstance(guidance, list) else [guidance])],
        flow_shift=get_field(cfg, "diffusion.flow_shift", float, src), dtype=get_field(cfg, "dtype", str, src),
        fps=None if fps is None else max(1, fps // frame_interval),  # MindSpeed-MM saves at fps // frame_interval
        transformer=resolve(predictor), transformer_2=resolve(get_field(cfg, "low_noise_predictor", str, src)),
        # inference_sora.py seeds its one generator with Megatron's --seed (default 1234), not a key of this file
        seed=1234, conventions="mindspeed", vae_dtype=dtype_name(get_field(cfg, "ae.dtype", str, src), f"{src}: ae.dtype"),
        negative_prompt=get_field(cfg, "negative_prompt", str, src),
        # MindSpeed-MM's cpu_offload swaps its modules to the host between uses: our "model" offload
        offload="model" if get_field(cfg, "pipeline_config.cpu_offload", bool, src, False) else "auto",
        boundary_ratio=get_field(cfg, "boundary_ratio", float, src),
        scheduler_overrides=_scheduler_overrides(get_field(cfg, "diffusion", dict, src, {}), src),
        videos_per_prompt=get_field(cfg, "num_inference_videos_per_sample", int, src, 1),
        image_paths_base=str(Path.cwd()))  # MindSpeed-MM opens the listed images from the working folder


def dtype_name(name: str | None, where: str) -> str | None:
    """MindSpeed-MM's dtype names (its get_dtype's, and its FSDP2 config's) as ours."""
    if name is None:
        return None
    names = {"bf16": "bf16", "bfloat16": "bf16", "fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16"}
    if name not in names:
        raise UserError(f"{where}: {name!r} is not a dtype (bf16, fp16 or fp32)")
    return names[name]


def _data_path(basic: dict, data_json) -> str:
    """dataset_param.basic_parameters.data_path: the data.txt listing the datasets (MindSpeed-MM needs it too)."""
    value = get_field(basic, "data_path", str, f"{data_json}: dataset_param.basic_parameters")
    if not value:
        raise UserError(f"{data_json}: dataset_param.basic_parameters.data_path is missing; it names the data.txt "
                        "that lists the datasets (lines `folder,data.json`), e.g. \"./examples/wan2.2/data.txt\"")
    return value
