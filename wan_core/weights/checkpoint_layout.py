"""Where checkpoints live on disk, in one place: the Megatron / MindSpeed-MM folder convention shared by
training (DCP iterations), conversion and consolidation (mm `release/` folders).

    FOLDER/latest_checkpointed_iteration.txt    the pointer: `release` or an iteration number, written last
    FOLDER/release/  or  FOLDER/iter_0000010/   the checkpoint the pointer names
        model.safetensors.index.json + model-*.safetensors   this project's mm format (streamed)
        mp_rank_00/model_optim_rng.pt                        MindSpeed-MM's format (one torch.save)
        .metadata + __*_*.distcp + trainer_state.json        a training iteration (DCP, any world size)

The pointer is written without a newline, as Megatron writes it: MindSpeed-MM's `load_from_mm` compares
the file's first line to "release" without stripping it. Readers accept either.
Folders may be local paths or `wan_core.storage.Location`s (the read side works on both).
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Callable

import torch

from wan_core.errors import UserError
from wan_core.fsutil import atomic_output_file
from wan_core.mindspeed.pointer import POINTER_FILE, RELEASE, parse_pointer, read_pointer, write_pointer
from wan_core.weights.safetensors_io import TensorMeta, tensor_bytes_writer, write_sharded

MM_INDEX = "model.safetensors.index.json"
MM_PT = "mp_rank_00/model_optim_rng.pt"
TRAINER_STATE = "trainer_state.json"  # beside a training iteration's DCP files
ITERATION_NAME = re.compile(r"iter_(\d{7})")

# one process without a process group is a supported DCP mode; its warning says nothing to our users
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


# -- names -----------------------------------------------------------------------------------------------
def iteration_name(step: int) -> str:
    return f"iter_{step:07d}"


def iteration_dir(save_path, step: int):
    return save_path / iteration_name(step)


def training_folder(place):
    """A training folder as this module reads it: a Path when it is local (a str, Path or local Location), a
    wan_core.storage.Location when it is an fsspec URL (an object store, read through fsspec)."""
    from wan_core.storage import Location, is_url

    if isinstance(place, Location):
        return place.local_path() or place
    return Location(str(place)) if is_url(place) else Path(place)


def iteration_steps(folder) -> list[int]:
    """The iterations (iter_NNNNNNN, not a .tmp leftover) in a folder (local or remote), oldest first."""
    folder = training_folder(folder)
    names = [p.name for p in (folder.iterdir() if isinstance(folder, Path) else folder.glob("iter_*"))]
    return sorted(int(m.group(1)) for n in names if (m := ITERATION_NAME.fullmatch(n)))


def natural_key(key: str):
    """blocks.2 before blocks.10, so shards hold whole blocks in order."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def checkpoint_dir(folder, value: int | str):
    return folder / (RELEASE if value == RELEASE else iteration_name(int(value)))


# -- DCP training iterations -----------------------------------------------------------------------------
def _size(path) -> int | None:
    """A file's size in bytes (local Path or Location), None when it does not exist."""
    try:
        return path.size() if hasattr(path, "size") else path.stat().st_size
    except (OSError, FileNotFoundError):
        return None


def verify_iteration(folder) -> None:
    """A DCP iteration is complete: its .metadata reads, and every shard file it names is there and at least as
    long as the metadata says (a truncated or empty shard, a save cut short, a copy that stopped). Only sizes are
    read, so it costs milliseconds at any model size. A UserError names the first bad file."""
    from torch.distributed.checkpoint import FileSystemReader

    if not folder.is_dir():
        raise UserError(f"{folder}: no such checkpoint folder")
    metadata_file = folder / ".metadata"
    if not metadata_file.is_file():
        raise UserError(f"{folder}: incomplete DCP checkpoint (no .metadata); it was probably interrupted while saving")
    reader_cls = FileSystemReader
    if not isinstance(folder, Path):
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

        reader_cls = FsspecReader
    try:
        metadata = reader_cls(str(folder)).read_metadata()
    except Exception as exc:  # an empty or cut-off pickle; torch raises whatever its unpickler meets
        raise UserError(f"{metadata_file}: unreadable, truncated or corrupted ({type(exc).__name__})") from None
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, length in sorted(needed.items()):
        size = _size(folder / name)
        if size is None:
            raise UserError(f"{folder / name}: missing (the checkpoint's .metadata names it)")
        if size < length:
            state = "empty" if size == 0 else f"truncated ({size} of {length} bytes)"
            raise UserError(f"{folder / name}: {state}")


def last_complete_iteration(save_path, below: int | None = None) -> int | None:
    """The newest iteration in a training folder (below `below`, when given) that verify_iteration accepts."""
    folder = training_folder(save_path)
    for step in reversed(iteration_steps(folder)):
        if below is not None and step >= below:
            continue
        try:
            verify_iteration(iteration_dir(folder, step))
        except UserError:
            continue
        return step
    return None


def latest_iteration(save_path) -> int | None:
    """The iteration a training folder's pointer names, if its checkpoint is complete (verify_iteration). The folder
    is a local path or a wan_core.storage.Location (an object store, where every rank wrote its own shards)."""
    folder = training_folder(save_path)
    value = read_pointer(folder)
    if value is None:
        return None
    if value == RELEASE:
        raise UserError(f"{folder / POINTER_FILE}: expected an iteration number of a training run, "
                        "found 'release' (a converted checkpoint, not a training folder)")
    if not iteration_dir(folder, value).is_dir():
        have = [iteration_name(s) for s in iteration_steps(folder)]
        raise UserError(f"{folder / POINTER_FILE} names {iteration_name(value)}, which does not exist (the folder "
                        f"holds {', '.join(have) or 'no iteration'}); was it moved or deleted?")
    verify_iteration(iteration_dir(folder, value))
    return value


def incomplete_advice(save_path, bad: int | None) -> str:
    """What to do about a bad checkpoint: the last complete one to use instead, or that there is none."""
    good = last_complete_iteration(save_path, below=bad)
    if good is None:
        return "there is no complete earlier checkpoint in this folder"
    return f"the last complete checkpoint is {iteration_name(good)} (--iteration {good} / --resume-from {good})"


def training_iteration(save_path, iteration: str | int | None):
    """The DCP folder of `iteration` (a number, or None / 'latest' for the pointer's) in a training folder: a local
    path (given as a str or Path) or an fsspec URL (a wan_core.storage.Location comes back then)."""
    save_path = training_folder(save_path)
    if not save_path.is_dir():
        raise UserError(f"--source {save_path}: no such training output folder")
    if iteration in (None, "latest"):
        try:
            iteration = latest_iteration(save_path)
        except UserError as exc:
            bad = read_pointer(save_path)
            raise UserError(f"{exc}; {incomplete_advice(save_path, bad if isinstance(bad, int) else None)}") from None
        if iteration is None:
            raise UserError(f"--source {save_path}: no {POINTER_FILE} (no complete checkpoint yet); pass --iteration N")
    try:
        step = int(iteration)
    except ValueError:
        raise UserError(f"--iteration must be a number or 'latest', got {iteration!r}") from None
    folder = iteration_dir(save_path, step)
    if not folder.is_dir():
        have = [iteration_name(s) for s in iteration_steps(save_path)]
        raise UserError(f"--source {save_path}: no checkpoint for iteration {step} (have: {', '.join(have) or 'none'})")
    try:
        verify_iteration(folder)
    except UserError as exc:
        raise UserError(f"{exc}; {incomplete_advice(save_path, step)}") from None
    return folder


class DcpModelReader:
    """Model tensors of a DCP training checkpoint, read one at a time (the optimizer state is never touched)."""

    MODEL_PREFIX = "model."

    def __init__(self, folder):
        """`folder`: a local path, or a wan_core.storage.Location of an object store (read through fsspec)."""
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        self.folder = training_folder(folder)
        self.reader_cls = FileSystemReader
        if not isinstance(self.folder, Path):
            from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader  # torch's own fsspec reader

            self.reader_cls = FsspecReader
        try:
            metadata = self.reader_cls(str(self.folder)).read_metadata()
        except Exception as exc:
            raise UserError(f"{folder}: cannot read the DCP metadata ({type(exc).__name__}: {exc})") from None
        self.metas = {}
        for key, md in metadata.state_dict_metadata.items():
            if key.startswith(self.MODEL_PREFIX) and isinstance(md, TensorStorageMetadata):
                dtype = md.properties.dtype
                self.metas[key[len(self.MODEL_PREFIX):]] = TensorMeta(
                    dtype, tuple(md.size), int(torch.Size(md.size).numel()) * dtype.itemsize)
        if not self.metas:
            raise UserError(f"{folder}: no model tensors in this DCP checkpoint")

    def read(self, name: str) -> torch.Tensor:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

        meta = self.metas[name]
        state = {"model": {name: torch.empty(meta.shape, dtype=meta.dtype)}}
        dcp.load(state, storage_reader=self.reader_cls(str(self.folder)),
                 planner=DefaultLoadPlanner(allow_partial_load=True), no_dist=True)
        return state["model"][name]


# -- mm release folders ------------------------------------------------------------------------------------
def mm_checkpoint_dir(loc, iteration: str | None = None):
    """The release/ or iter_NNNNNNN/ folder of an mm folder (from its pointer file, else the newest)."""
    value = iteration
    if value is None:
        value = read_pointer(loc)
    if value is None:
        if (loc / RELEASE).is_dir():
            value = RELEASE
        else:
            iters = sorted(d.name for d in loc.glob("iter_*") if ITERATION_NAME.fullmatch(d.name))
            if not iters:
                raise UserError(f"{loc}: no release/ or iter_*/ folder")
            value = int(ITERATION_NAME.fullmatch(iters[-1]).group(1))
    elif isinstance(value, str) and value != RELEASE:
        value = int(m.group(1)) if (m := ITERATION_NAME.fullmatch(value)) else parse_pointer(value, loc / POINTER_FILE)
    folder = checkpoint_dir(loc, value)
    if not folder.is_dir():
        raise UserError(f"{loc}: {POINTER_FILE} names {folder.name}, which does not exist")
    return folder


def write_mm_dcp(folder: Path, config, metas: dict[str, TensorMeta], read: Callable[[str], torch.Tensor],
                 progress: Callable[[int], None]) -> None:
    """MindSpeed-MM's `mm_to_dcp` layout in `folder` (a fresh temporary folder): config.json, release/ holding one
    DCP checkpoint of {"model.<mm key>": tensor, "checkpoint_version": 3.0}, and the pointer last. DCP writes
    the whole state dict at once, so this holds the model in memory (like MindSpeed-MM's converter)."""
    import torch.distributed.checkpoint as dcp

    (folder / "config.json").write_text(json.dumps(config.to_diffusers(), indent=2) + "\n")
    state = {}
    for name in sorted(metas, key=natural_key):
        state[name] = read(name)
        progress(metas[name].nbytes)
    dcp.save({"model": state, "checkpoint_version": 3.0}, checkpoint_id=str(folder / RELEASE), no_dist=True)
    write_pointer(folder, RELEASE)


def write_mm_release(folder: Path, config, metas: dict[str, TensorMeta], read: Callable[[str], torch.Tensor],
                     fmt: str, max_shard: int, progress: Callable[[int], None],
                     write_bytes: Callable[[str, object], None] | None = None) -> None:
    """An mm folder in `folder` (a fresh temporary folder): config.json, release/ with the tensors in natural
    order (sharded safetensors, or MindSpeed-MM's one torch.save with fmt 'mm-pt'), and the pointer last."""
    (folder / "config.json").write_text(json.dumps(config.to_diffusers(), indent=2) + "\n")
    release = folder / RELEASE
    release.mkdir()
    names = sorted(metas, key=natural_key)
    if fmt == "mm-pt":
        state = {}
        for name in names:
            state[name] = read(name)
            progress(metas[name].nbytes)
        (release / "mp_rank_00").mkdir()
        torch.save({"model": state}, release / MM_PT)
    else:
        write_sharded(release, [(n, metas[n]) for n in names], write_bytes or tensor_bytes_writer(read, metas),
                      "model", MM_INDEX, max_shard, progress=progress)
    write_pointer(folder, RELEASE)  # last: a folder with a pointer is complete
