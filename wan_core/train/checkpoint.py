"""The manager that writes and reads a training run's checkpoints (layout: wan_core.weights.checkpoint_layout).

Each save is a DCP checkpoint of model, optimizer and RNG plus trainer_state.json (step, sampler
position, LR schedule, provenance), written to iter_NNNNNNN.tmp and renamed when complete; the pointer
file is replaced atomically after that, so a crash at any moment leaves the previous checkpoint in force.

The save folder is protected like every output (wan_core.fsutil): training marks it and each iteration it writes,
prunes only iterations it marked, and refuses a folder holding someone else's files. A save that fails (a full
disk) removes its partial iteration and keeps the previous one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from wan_core.errors import UserError
from wan_core.fsutil import MARKER, output_owner, os_reason, write_marker
from wan_core.mindspeed.pointer import POINTER_FILE, read_pointer, write_pointer
from wan_core.weights.checkpoint_layout import (TRAINER_STATE, incomplete_advice, iteration_dir, iteration_name,
                                                iteration_steps, last_complete_iteration, latest_iteration,
                                                verify_iteration)
from wan_core.parallel.env import barrier, is_rank0

COMMAND = "train"  # the marker's command: a save folder, and each iteration, training wrote
RUN_FILES = ("metrics.jsonl", "config.resolved.json", "tensorboard", "logs", POINTER_FILE)  # a run's own files


def _owner(folder) -> str | None:
    if isinstance(folder, Path):
        return output_owner(folder)
    try:
        return json.loads((folder / MARKER).read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def _is_empty(folder) -> bool:
    if isinstance(folder, Path):
        return not any(folder.iterdir())
    try:
        return not folder.fs.ls(folder.path)
    except FileNotFoundError:  # an object store has no empty folders: nothing under the prefix yet
        return True


def _remove(path) -> None:
    if isinstance(path, Path):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    else:
        path.remove()


def _mark(folder) -> None:
    if isinstance(folder, Path):
        write_marker(folder, COMMAND)
    else:
        (folder / MARKER).write_text(json.dumps({"command": COMMAND}) + "\n")


def claim_save_path(save_path: str, overwrite: bool = False) -> str:
    """Check `save_path` before any work and mark it as training's (once, in the launching process).

    New or empty: marked, a fresh run. An earlier run of `wan22 train` (its marker): resumed, or with `overwrite`
    its own files (marked iterations, metrics, logs) are removed and the run starts afresh. A MindSpeed-MM checkpoint
    folder (a pointer file, no marker): taken, its iterations never pruned. Anything else is refused.
    Returns "new", "resume", "overwrite" or "mindspeed"."""
    from wan_core.weights.checkpoint_layout import training_folder

    root = training_folder(save_path)
    if isinstance(root, Path):
        if root.is_symlink() and not root.is_dir() or (root.exists() and not root.is_dir()):
            raise UserError(f"save_path {root} exists and is not a folder; give a folder for the checkpoints")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"save_path {root}: cannot create it ({os_reason(exc)})") from None
    elif root.fs.isfile(root.path):
        raise UserError(f"save_path {root} exists and is not a folder; give a folder for the checkpoints")
    if _is_empty(root):
        _mark(root)
        return "new"
    owner = _owner(root)
    legacy = owner is None and (root / "config.resolved.json").is_file()  # a run of an earlier version: no marker
    if owner == COMMAND or legacy:
        if legacy:
            _mark(root)
        if not overwrite:
            return "resume"
        for step in iteration_steps(root):
            if _owner(iteration_dir(root, step)) == COMMAND:
                _remove(iteration_dir(root, step))
        for name in RUN_FILES:
            if name != POINTER_FILE or _pointer_is_ours(root):
                _remove(root / name)
        return "overwrite"
    if owner is None and (root / POINTER_FILE).is_file():
        _mark(root)
        return "mindspeed"
    what = f"an output of `wan22 {owner}`" if owner else "not an output of wan22"
    raise UserError(f"save_path {root} is a folder with files in it ({what}); train writes its checkpoints only "
                    "into a new or empty folder, into the folder of an earlier `wan22 train` run (which it resumes, "
                    "or starts afresh with --overwrite), or into a MindSpeed-MM checkpoint folder; give another "
                    "save_path")


def release_save_path(save_path: str) -> None:
    """Undo claim_save_path's "new" when the run failed before writing anything but the marker."""
    from wan_core.weights.checkpoint_layout import training_folder

    root = training_folder(save_path)
    if isinstance(root, Path) and root.is_dir() and [p.name for p in root.iterdir()] == [MARKER]:
        shutil.rmtree(root, ignore_errors=True)


def _pointer_is_ours(root) -> bool:
    try:
        value = read_pointer(root)
    except UserError:
        return True  # unreadable: nothing anyone can resume from
    return value is None or not isinstance(value, int) or not iteration_dir(root, value).is_dir() \
        or _owner(iteration_dir(root, value)) == COMMAND


def resume_description(save_path: str) -> str:
    """"iter_0000140 in SAVE", where the next run of a training in `save_path` resumes from."""
    try:
        step = last_complete_iteration(save_path)
    except (UserError, OSError):
        step = None
    return f"{iteration_name(step)} in {save_path}" if step is not None else f"the start (no checkpoint in {save_path})"


class CheckpointSaveError(UserError):
    """A save that failed (a full disk, a lost mount); its partial iteration is removed, the previous one kept."""


def _root_cause(exc: BaseException) -> BaseException:
    """The first rank's own exception inside DCP's CheckpointException (which wraps every rank's)."""
    from torch.distributed.checkpoint.api import CheckpointException

    while isinstance(exc, CheckpointException) and exc.failures:
        exc = next(iter(exc.failures.values()))[0]
    return exc


def staging_dir(url: str) -> Path:
    """The local folder that stands in for a remote save_path while training."""
    import hashlib
    import tempfile

    root = Path(os.environ.get("WAN22_STAGING_DIR", Path(tempfile.gettempdir()) / "wan22-runs"))
    return root / hashlib.sha256(url.encode()).hexdigest()[:16]


class RemoteMirror:
    """Rank 0's own files of a run whose save_path is an fsspec URL (metrics.jsonl, TensorBoard events, the resolved
    config), written in a local staging folder and uploaded with each checkpoint: an object store cannot append.
    The checkpoints themselves never pass through it: every rank writes its DCP shards straight to the store."""

    def __init__(self, url: str, local: Path):
        from wan_core.storage import Location

        self.remote, self.local = Location(url), local

    def pull(self, files: tuple[str, ...] = ("metrics.jsonl",)) -> None:
        fs, root = self.remote.fs, self.remote.path.rstrip("/")
        self.local.mkdir(parents=True, exist_ok=True)
        for extra in files:
            if fs.exists(f"{root}/{extra}"):
                fs.get(f"{root}/{extra}", str(self.local / extra))

    def push(self, files: tuple[str, ...] = ("metrics.jsonl",)) -> None:
        fs, root = self.remote.fs, self.remote.path.rstrip("/")
        fs.makedirs(root, exist_ok=True)
        for extra in files:
            path = self.local / extra
            if path.is_dir():
                fs.put(str(path) + "/", f"{root}/{extra}/", recursive=True)
            elif path.is_file():
                fs.put(str(path), f"{root}/{extra}")


class CheckpointManager:
    """DCP checkpoints of a run in `save_path`, a local folder, or with `remote` an fsspec URL that every rank writes
    its own shards to (on an object store there is no rename: the pointer, written last, is what makes an
    iteration complete)."""

    def __init__(self, save_path: str | Path, keep_last: int, mirror: RemoteMirror | None = None,
                 trainable_only: bool = False, remote: str | None = None):
        from wan_core.storage import Location

        self.save_path = Path(save_path)
        self.keep_last = keep_last
        self.mirror = mirror
        self.remote = Location(remote) if remote else None
        # LoRA: checkpoints hold the trainable parameters (the adapters) and the optimizer, never the frozen base
        self.options = StateDictOptions(ignore_frozen_params=trainable_only)
        self.load_options = StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)

    @property
    def root(self):
        """Where the iterations live: the local folder or the remote Location."""
        return self.remote if self.remote is not None else self.save_path

    def latest(self) -> int | None:
        """The last complete iteration (what a new run resumes from), or None."""
        return last_complete_iteration(self.root)

    def save(self, step: int, model, optimizer, trainer_state: dict):
        if self.remote is not None:
            return self._save_remote(step, model, optimizer, trainer_state)
        final = iteration_dir(self.save_path, step)
        tmp = final.with_name(final.name + ".tmp")
        if final.exists() and _owner(final) != COMMAND:
            raise UserError(f"{final} is not a checkpoint this training wrote (it has no {MARKER}), and step {step} "
                            "would be saved there; move it out of the save_path, then run the same command again")
        try:
            if is_rank0():
                self.save_path.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
            barrier()
            dcp.save(self._state(model, optimizer), checkpoint_id=str(tmp))
            if is_rank0():
                (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2) + "\n")
                write_marker(tmp, COMMAND)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                write_pointer(self.save_path, step)
        except BaseException as exc:  # DCP wraps each rank's OSError in its CheckpointException
            cause = _root_cause(exc)
            if not isinstance(cause, OSError):
                raise
            if is_rank0():
                shutil.rmtree(tmp, ignore_errors=True)
            kept = last_complete_iteration(self.save_path)
            raise CheckpointSaveError(
                f"cannot save {iteration_name(step)} in {self.save_path}: {os_reason(cause)}"
                f"{f' ({cause.filename})' if getattr(cause, 'filename', None) else ''}. The partial checkpoint was "
                f"removed; {f'{iteration_name(kept)} is intact and the next run resumes from it' if kept is not None else 'no earlier checkpoint exists'}. Free "
                "space (or lower train.keep_last) and run the same command again") from None
        if is_rank0():
            self.prune(step)
        barrier()
        return final

    def _save_remote(self, step: int, model, optimizer, trainer_state: dict):
        target = iteration_dir(self.remote, step)
        if is_rank0():
            target.remove()  # a save of this step that was cut short
        barrier()
        dcp.save(self._state(model, optimizer), checkpoint_id=str(target))  # fsspec: each rank its own shards
        if is_rank0():
            (target / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2) + "\n")
            (target / MARKER).write_text(json.dumps({"command": COMMAND}) + "\n")
            write_pointer(self.remote, step)  # last: the iteration is complete
            self.prune(step)
            if self.mirror is not None:
                self.mirror.push()
        barrier()
        return target

    def _state(self, model, optimizer) -> dict:
        model_state, optim_state = get_state_dict(model, optimizer, options=self.options)
        return {"model": model_state, "optim": optim_state, "rng": {"torch": torch.get_rng_state()}}

    def prune(self, newest: int) -> None:
        """Keep the newest keep_last iterations this training wrote; never touch one it did not (no marker)."""
        ours = [s for s in iteration_steps(self.root) if _owner(iteration_dir(self.root, s)) == COMMAND]
        for s in ours:
            if s != newest and s not in ours[-self.keep_last:]:
                _remove(iteration_dir(self.root, s))
        if self.remote is None:
            for p in self.save_path.glob("iter_*.tmp"):  # leftovers of a save that was killed
                shutil.rmtree(p, ignore_errors=True)

    def resume_point(self, requested: int | None = None, warn=None) -> int | None:
        """The iteration to resume from: `requested` (train --resume-from), which must be complete; else the
        pointer's, or when that one is incomplete (a truncated or empty shard, a missing folder) the last complete
        one before it, with a warning through `warn`."""
        if requested is not None:
            folder = iteration_dir(self.root, requested)
            if not folder.is_dir():
                have = [iteration_name(s) for s in iteration_steps(self.root)]
                raise UserError(f"--resume-from {requested}: no {iteration_name(requested)} in {self.root} "
                                f"(it holds {', '.join(have) or 'no iteration'})")
            try:
                verify_iteration(folder)
            except UserError as exc:
                raise UserError(f"{exc}; {incomplete_advice(self.root, requested)}") from None
            return requested
        try:
            return latest_iteration(self.root)
        except UserError as exc:
            pointer = read_pointer(self.root)
            fallback = last_complete_iteration(self.root, below=pointer if isinstance(pointer, int) else None)
            if fallback is None:
                raise UserError(f"{exc}. There is no complete earlier checkpoint to resume from: pass --overwrite "
                                "to start afresh, or give another save_path") from None
            if warn is not None:
                warn(f"warning: {exc}; resuming from {iteration_name(fallback)}, the last complete checkpoint "
                     "(--resume-from N chooses another)")
            return fallback

    def load(self, step: int, model, optimizer) -> dict:
        folder = iteration_dir(self.root, step)
        state = self._state(model, optimizer)
        check_shapes(folder, state["model"])
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=self.load_options)
        torch.set_rng_state(state["rng"]["torch"])
        return json.loads((folder / TRAINER_STATE).read_text())


def check_shapes(folder, model_state: dict) -> None:
    """The checkpoint's model tensors have the model's shapes (from its DCP metadata, before anything loads)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    if not isinstance(folder, Path):
        return  # a remote checkpoint: DCP itself reports a mismatch
    saved = {k[len("model."):]: tuple(md.size) for k, md in FileSystemReader(str(folder)).read_metadata()
             .state_dict_metadata.items() if k.startswith("model.") and isinstance(md, TensorStorageMetadata)}
    for name, tensor in model_state.items():
        if name in saved and tuple(tensor.shape) != saved[name]:
            raise UserError(f"{folder}: {name} is {saved[name]} in the checkpoint but {tuple(tensor.shape)} in the "
                            "model this config builds; the checkpoint was made for another model (variant or size). "
                            "Give this run its own save_path, or the config the checkpoint was trained with")
