"""`wan22 consolidate` (DCP checkpoint -> one mm checkpoint) and `wan22 export` (mm -> a complete
diffusers pipeline folder).

Consolidation reads the DCP metadata and loads model tensors only - never the optimizer - one tensor
at a time, into the streaming safetensors writer (memory bounded by the largest tensor, whatever the
model or shard size) or MindSpeed-MM's `release/mp_rank_00/model_optim_rng.pt` (one torch.save, so not
bounded). It works on checkpoints of any world size or layout: DCP stores global shapes and chunks.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from wan_core.errors import UserError
from wan_core.model.config import WanConfig
from wan_core.storage import output_dir
from wan_core.train.checkpoint import LATEST, STATE_FILE, check_complete, iteration_dir, latest_iteration
from wan_core.weights.layouts import ITERATION_FILE, MM_INDEX, MM_PT, infer_config
from wan_core.weights.safetensors_io import TensorMeta, parse_size, tensor_bytes_writer, write_sharded

DTYPES = {"keep": None, "bf16": torch.bfloat16, "fp32": torch.float32}
MODEL_PREFIX = "model."
BASE_PARTS = ("vae", "text_encoder", "tokenizer", "scheduler")


def _resolve_iteration(save_path: Path, iteration: str | int | None) -> Path:
    if not save_path.is_dir():
        raise UserError(f"--source {save_path}: no such training output folder")
    if iteration in (None, "latest"):
        iteration = latest_iteration(save_path)
        if iteration is None:
            raise UserError(f"--source {save_path}: no {LATEST} (no complete checkpoint yet); pass --iteration N")
    try:
        step = int(iteration)
    except ValueError:
        raise UserError(f"--iteration must be a number or 'latest', got {iteration!r}") from None
    folder = iteration_dir(save_path, step)
    if not folder.is_dir():
        have = sorted(p.name for p in save_path.glob("iter_*") if not p.name.endswith(".tmp"))
        raise UserError(f"--source {save_path}: no checkpoint for iteration {step} (have: {', '.join(have) or 'none'})")
    check_complete(folder)
    return folder


class DcpModelReader:
    """Model tensors of a DCP checkpoint, read one at a time (the optimizer state is never touched)."""

    def __init__(self, folder: Path):
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        self.folder = folder
        self.reader_cls = FileSystemReader
        try:
            metadata = FileSystemReader(str(folder)).read_metadata()
        except Exception as exc:
            raise UserError(f"{folder}: cannot read the DCP metadata ({type(exc).__name__}: {exc})") from None
        self.metas = {}
        for key, md in metadata.state_dict_metadata.items():
            if key.startswith(MODEL_PREFIX) and isinstance(md, TensorStorageMetadata):
                dtype = md.properties.dtype
                self.metas[key[len(MODEL_PREFIX):]] = TensorMeta(dtype, tuple(md.size),
                                                                 int(torch.Size(md.size).numel()) * dtype.itemsize)
        if not self.metas:
            raise UserError(f"{folder}: no model tensors in this DCP checkpoint")

    def read(self, name: str) -> torch.Tensor:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

        meta = self.metas[name]
        tensor = torch.empty(meta.shape, dtype=meta.dtype)
        state = {"model": {name: tensor}}
        dcp.load(state, storage_reader=self.reader_cls(str(self.folder)),
                 planner=DefaultLoadPlanner(allow_partial_load=True), no_dist=True)
        return state["model"][name]


def _model_config(folder: Path, metas: dict) -> WanConfig:
    state_file = folder / STATE_FILE
    if state_file.is_file():
        try:
            cfg = json.loads(state_file.read_text()).get("model_config")
            if cfg:
                return WanConfig.from_diffusers(cfg)
        except (ValueError, TypeError):
            pass
    return infer_config(metas, "mm", str(folder))


def consolidate(source: str, target: str, iteration: str | int | None = None, fmt: str = "safetensors",
                dtype: str = "keep", max_shard_size: str = "5GB", progress: bool = True, overwrite: bool = False) -> Path:
    from tqdm import tqdm

    from wan_core.weights.layouts import expected_mm_shapes

    if fmt not in ("safetensors", "mm-pt"):
        raise UserError(f"--format must be safetensors or mm-pt, got {fmt!r}")
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be keep, bf16 or fp32, got {dtype!r}")
    folder = _resolve_iteration(Path(source), iteration)
    reader = DcpModelReader(folder)
    config = _model_config(folder, reader.metas)
    expected = expected_mm_shapes(config)
    missing = sorted(set(expected) - set(reader.metas))
    extra = sorted(set(reader.metas) - set(expected))
    if missing or extra:
        raise UserError(f"{folder}: model tensors do not match the architecture ({len(missing)} missing, e.g. "
                        f"{missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})")
    cast = DTYPES[dtype]
    metas = {k: m if cast is None or not m.dtype.is_floating_point else
             TensorMeta(cast, m.shape, int(torch.Size(m.shape).numel()) * cast.itemsize) for k, m in reader.metas.items()}

    def fetch(name):
        t = reader.read(name)
        return t.to(metas[name].dtype) if t.dtype != metas[name].dtype else t

    bar = tqdm(total=sum(m.nbytes for m in metas.values()), unit="B", unit_scale=True, desc="consolidate",
               disable=not progress, leave=False)
    try:
        with output_dir(target, "consolidate", overwrite) as tmp:
            (tmp / "config.json").write_text(json.dumps(config.to_diffusers(), indent=2) + "\n")
            release = tmp / "release"
            release.mkdir()
            names = sorted(metas, key=_natural)
            if fmt == "mm-pt":
                (release / "mp_rank_00").mkdir()
                state = {}
                for n in names:
                    state[n] = fetch(n)
                    bar.update(metas[n].nbytes)
                torch.save({"model": state}, release / MM_PT)
            else:
                write_sharded(release, [(n, metas[n]) for n in names], tensor_bytes_writer(fetch, metas), "model",
                              MM_INDEX, parse_size(max_shard_size), progress=bar.update)
            (tmp / ITERATION_FILE).write_text("release\n")
    finally:
        bar.close()
    return Path(target)


def _natural(key: str):
    import re

    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def _link_or_copy_tree(src: Path, dst: Path) -> None:
    """Hard-link every file (copy across filesystems); never a symlink: exports are moved and uploaded."""
    for root, dirs, files in os.walk(src, followlinks=True):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            s, d = Path(root) / name, dst / rel / name
            real = s.resolve()
            try:
                os.link(real, d)
            except OSError:
                shutil.copy2(real, d)


def export(source: str, base: str, target: str, source_2: str | None = None, expert: str | None = None,
           max_shard_size: str = "5GB", progress: bool = True, overwrite: bool = False) -> Path:
    """mm checkpoint(s) -> a complete diffusers pipeline folder: the trained transformer(s) with the
    base folder's vae, text encoder, tokenizer, scheduler and model_index.json."""
    from wan_core.sample.variants import read_model_folder
    from wan_core.weights.convert import mm_to_hf

    base_path = Path(base)
    folder = read_model_folder(base_path)  # checks it is a complete diffusers pipeline folder
    if expert not in (None, "high", "low"):
        raise UserError(f"--expert must be high or low, got {expert!r}")
    if not folder.two_experts and (source_2 or expert):
        raise UserError(f"--base {base}: a one-expert model ({folder.variant}); --source-2 and --expert apply to "
                        "A14B's two experts only")
    expert = expert or "high"
    slots = {("transformer" if expert == "high" else "transformer_2"): source}
    if source_2:
        slots["transformer_2" if expert == "high" else "transformer"] = source_2
    with output_dir(target, "export", overwrite) as tmp:
        for slot, mm in slots.items():
            mm_to_hf(mm, str(tmp / slot), hf_dir=str(base_path / slot), max_shard_size=max_shard_size,
                     progress=progress, command=None)
        if folder.two_experts:
            for slot in ("transformer", "transformer_2"):
                if slot not in slots:  # the expert that was not trained comes from the base
                    _link_or_copy_tree(base_path / slot, tmp / slot)
        for part in BASE_PARTS:
            _link_or_copy_tree(base_path / part, tmp / part)
        shutil.copy2(base_path / "model_index.json", tmp / "model_index.json")
        (tmp / "wan22_export.json").write_text(json.dumps({"base": str(base_path.absolute()), "sources": slots},
                                                          indent=2) + "\n")
    return Path(target)
