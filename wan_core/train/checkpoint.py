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

from wan_core.mindspeed.pointer import read_pointer, write_pointer
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
    """Keeps an fsspec save_path (object storage, another filesystem) in step with the local staging
    folder: complete checkpoints and metrics are uploaded, the pointer file last, so a reader of the
    remote folder never sees an incomplete iteration as the latest."""

    def __init__(self, url: str, local: Path):
        from wan_core.storage import Location

        self.remote, self.local = Location(url), local

    def pull(self) -> None:
        fs, root = self.remote.fs, self.remote.path.rstrip("/")
        step = read_pointer(self.remote)
        if step is None:
            return
        self.local.mkdir(parents=True, exist_ok=True)
        name = iteration_name(step)
        shutil.rmtree(self.local / name, ignore_errors=True)
        fs.get(f"{root}/{name}/", str(self.local / name) + "/", recursive=True)
        for extra in ("metrics.jsonl",):
            if fs.exists(f"{root}/{extra}"):
                fs.get(f"{root}/{extra}", str(self.local / extra))
        write_pointer(self.local, step)

    def push(self, step: int | None, keep: list[str], files: tuple[str, ...] = ("metrics.jsonl",)) -> None:
        fs, root = self.remote.fs, self.remote.path.rstrip("/")
        fs.makedirs(root, exist_ok=True)
        if step is not None:
            name = iteration_name(step)
            fs.put(str(self.local / name) + "/", f"{root}/{name}/", recursive=True)
        for extra in files:
            path = self.local / extra
            if path.is_dir():
                fs.put(str(path) + "/", f"{root}/{extra}/", recursive=True)
            elif path.is_file():
                fs.put(str(path), f"{root}/{extra}")
        if step is not None:
            write_pointer(self.remote, step)  # last: the iteration is complete
            for p in fs.ls(root, detail=False):
                base = p.rstrip("/").rsplit("/", 1)[-1]
                if ITERATION_NAME.fullmatch(base) and base not in keep:
                    fs.rm(p, recursive=True)


class CheckpointManager:
    def __init__(self, save_path: str | Path, keep_last: int, mirror: RemoteMirror | None = None,
                 trainable_only: bool = False):
        self.save_path = Path(save_path)
        self.keep_last = keep_last
        self.mirror = mirror
        # LoRA: checkpoints hold the trainable parameters (the adapters) and the optimizer, never the frozen base
        self.options = StateDictOptions(ignore_frozen_params=trainable_only)
        self.load_options = StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)

    def latest(self) -> int | None:
        return latest_iteration(self.save_path)

    def save(self, step: int, model, optimizer, trainer_state: dict) -> Path:
        final = iteration_dir(self.save_path, step)
        tmp = final.with_name(final.name + ".tmp")
        if is_rank0():
            self.save_path.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        barrier()
        model_state, optim_state = get_state_dict(model, optimizer, options=self.options)
        dcp.save({"model": model_state, "optim": optim_state, "rng": {"torch": torch.get_rng_state()}},
                 checkpoint_id=str(tmp))
        if is_rank0():
            (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            write_pointer(self.save_path, step)
            self.prune(step)
            if self.mirror is not None:
                self.mirror.push(step, keep=[p.name for p in self.save_path.glob("iter_*")])
        barrier()
        return final

    def prune(self, newest: int) -> None:
        steps = iteration_steps(self.save_path)
        for s in steps:
            if s != newest and s not in steps[-self.keep_last:]:
                shutil.rmtree(iteration_dir(self.save_path, s), ignore_errors=True)
        for p in self.save_path.glob("iter_*.tmp"):  # leftovers of a save that was killed
            shutil.rmtree(p, ignore_errors=True)

    def load(self, step: int, model, optimizer) -> dict:
        folder = iteration_dir(self.save_path, step)
        model_state, optim_state = get_state_dict(model, optimizer, options=self.options)
        state = {"model": model_state, "optim": optim_state, "rng": {"torch": torch.get_rng_state()}}
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=self.load_options)
        torch.set_rng_state(state["rng"]["torch"])
        return json.loads((folder / TRAINER_STATE).read_text())
