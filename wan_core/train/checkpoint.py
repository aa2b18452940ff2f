"""The checkpoint layout of a training run (SAVE_PATH) and the manager that writes and reads it.

    SAVE_PATH/iter_0000010/            a DCP checkpoint (.metadata + per-rank *.distcp), plus
              trainer_state.json       step, sampler position, LR schedule, RNG states, provenance
    SAVE_PATH/latest_checkpointed_iteration.txt   the newest complete iteration, written last
A checkpoint is written to iter_XXXXXXX.tmp-* and renamed when complete; the pointer file is replaced
atomically after that, so a crash at any moment leaves the previous checkpoint in force.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from wan_core.errors import UserError
from wan_core.fsutil import atomic_output_file

# one process without a process group is a supported DCP mode; its warning says nothing to our users
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")

LATEST = "latest_checkpointed_iteration.txt"
STATE_FILE = "trainer_state.json"


def iteration_dir(save_path: Path, step: int) -> Path:
    return Path(save_path) / f"iter_{step:07d}"


def latest_iteration(save_path: str | Path) -> int | None:
    """The iteration named by the pointer file, if its checkpoint is complete (has .metadata)."""
    pointer = Path(save_path) / LATEST
    if not pointer.is_file():
        return None
    text = pointer.read_text().strip()
    if not re.fullmatch(r"\d+", text):
        raise UserError(f"{pointer}: expected an iteration number, found {text!r}")
    step = int(text)
    check_complete(iteration_dir(save_path, step))
    return step


def check_complete(folder: Path) -> None:
    if not (folder / ".metadata").is_file():
        raise UserError(f"{folder}: incomplete DCP checkpoint (no .metadata); it was probably interrupted while saving")


def _is_rank0() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def _barrier():
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


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
        if not fs.exists(f"{root}/{LATEST}"):
            return
        self.local.mkdir(parents=True, exist_ok=True)
        step = int(fs.cat_file(f"{root}/{LATEST}").decode().strip())
        name = iteration_dir(Path(), step).name
        shutil.rmtree(self.local / name, ignore_errors=True)
        fs.get(f"{root}/{name}/", str(self.local / name) + "/", recursive=True)
        for extra in ("metrics.jsonl",):
            if fs.exists(f"{root}/{extra}"):
                fs.get(f"{root}/{extra}", str(self.local / extra))
        (self.local / LATEST).write_text(f"{step}\n")

    def push(self, step: int | None, keep: list[str], files: tuple[str, ...] = ("metrics.jsonl",)) -> None:
        fs, root = self.remote.fs, self.remote.path.rstrip("/")
        fs.makedirs(root, exist_ok=True)
        if step is not None:
            name = iteration_dir(Path(), step).name
            fs.put(str(self.local / name) + "/", f"{root}/{name}/", recursive=True)
        for extra in files:
            path = self.local / extra
            if path.is_dir():
                fs.put(str(path) + "/", f"{root}/{extra}/", recursive=True)
            elif path.is_file():
                fs.put(str(path), f"{root}/{extra}")
        if step is not None:
            fs.pipe_file(f"{root}/{LATEST}", f"{step}\n".encode())  # last: the iteration is complete
            for p in fs.ls(root, detail=False):
                base = p.rstrip("/").rsplit("/", 1)[-1]
                if re.fullmatch(r"iter_\d{7}", base) and base not in keep:
                    fs.rm(p, recursive=True)


class CheckpointManager:
    def __init__(self, save_path: str | Path, keep_last: int, mirror: RemoteMirror | None = None):
        self.save_path = Path(save_path)
        self.keep_last = keep_last
        self.mirror = mirror

    def latest(self) -> int | None:
        return latest_iteration(self.save_path)

    def save(self, step: int, model, optimizer, trainer_state: dict) -> Path:
        final = iteration_dir(self.save_path, step)
        tmp = final.with_name(final.name + ".tmp")
        if _is_rank0():
            self.save_path.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        _barrier()
        model_state, optim_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optim": optim_state, "rng": {"torch": torch.get_rng_state()}},
                 checkpoint_id=str(tmp))
        if _is_rank0():
            (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            with atomic_output_file(self.save_path / LATEST) as f:
                f.write(f"{step}\n")
            self.prune(step)
            if self.mirror is not None:
                self.mirror.push(step, keep=[p.name for p in self.save_path.glob("iter_*")])
        _barrier()
        return final

    def prune(self, newest: int) -> None:
        steps = sorted(int(m.group(1)) for p in self.save_path.iterdir()
                       if (m := re.fullmatch(r"iter_(\d{7})", p.name)))
        for s in steps:
            if s != newest and s not in steps[-self.keep_last:]:
                shutil.rmtree(iteration_dir(self.save_path, s), ignore_errors=True)
        for p in self.save_path.glob("iter_*.tmp"):  # leftovers of a save that was killed
            shutil.rmtree(p, ignore_errors=True)

    def load(self, step: int, model, optimizer) -> dict:
        folder = iteration_dir(self.save_path, step)
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state, "rng": {"torch": torch.get_rng_state()}}
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        torch.set_rng_state(state["rng"]["torch"])
        return json.loads((folder / STATE_FILE).read_text())
