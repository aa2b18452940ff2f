"""The manager that writes and reads a training run's checkpoints (layout: wan_core.weights.checkpoint_layout).

Each save is a DCP checkpoint of model, optimizer and RNG plus trainer_state.json (step, sampler
position, LR schedule, provenance), written to iter_NNNNNNN.tmp and renamed when complete; the pointer
file is replaced atomically after that, so a crash at any moment leaves the previous checkpoint in force.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from wan_core.mindspeed.pointer import write_pointer
from wan_core.weights.checkpoint_layout import (ITERATION_NAME, TRAINER_STATE, iteration_dir, iteration_name,
                                                iteration_steps, latest_iteration)
from wan_core.parallel.env import barrier, is_rank0


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
        return latest_iteration(self.root)

    def save(self, step: int, model, optimizer, trainer_state: dict):
        if self.remote is not None:
            return self._save_remote(step, model, optimizer, trainer_state)
        final = iteration_dir(self.save_path, step)
        tmp = final.with_name(final.name + ".tmp")
        if is_rank0():
            self.save_path.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        barrier()
        dcp.save(self._state(model, optimizer), checkpoint_id=str(tmp))
        if is_rank0():
            (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            write_pointer(self.save_path, step)
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
        steps = iteration_steps(self.root)
        for s in steps:
            if s != newest and s not in steps[-self.keep_last:]:
                if self.remote is not None:
                    iteration_dir(self.remote, s).remove()
                else:
                    shutil.rmtree(iteration_dir(self.save_path, s), ignore_errors=True)
        if self.remote is None:
            for p in self.save_path.glob("iter_*.tmp"):  # leftovers of a save that was killed
                shutil.rmtree(p, ignore_errors=True)

    def load(self, step: int, model, optimizer) -> dict:
        folder = iteration_dir(self.root, step)
        state = self._state(model, optimizer)
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=self.load_options)
        torch.set_rng_state(state["rng"]["torch"])
        return json.loads((folder / TRAINER_STATE).read_text())
