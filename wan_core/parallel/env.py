"""One function that reads every launcher's distributed environment, and process-group setup.

Launchers and what they set (as each launcher documents it):
- torchrun (also what Trainer v2 / PyTorchJob / Volcano pods run): RANK, LOCAL_RANK, WORLD_SIZE,
  LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, GROUP_RANK - per *process*.
- Kubeflow Trainer v2: PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT
  (torchrun's flags; per *node*).
- Training Operator PyTorchJob: MASTER_ADDR/PORT, RANK = node index, WORLD_SIZE, PET_NODE_RANK, PET_NNODES,
  PET_NPROC_PER_NODE.
- Volcano pytorch plugin: MASTER_ADDR/PORT, WORLD_SIZE = pods (nodes), RANK = pod index.
- Ascend AscendJob: MASTER_ADDR/PORT, RANK = pod rank, WORLD_SIZE, LOCAL_WORLD_SIZE (chips per pod).
Before torchrun has run (no LOCAL_RANK), RANK/WORLD_SIZE are node-level; after, process-level.
"""
from __future__ import annotations

import dataclasses
import datetime
import os

import torch

from wan_core.device import accelerator_type, default_device, distributed_backend
from wan_core.config_fields import int_var


@dataclasses.dataclass(frozen=True)
class NodeEnv:
    """Node-level facts for starting torchrun on this pod."""
    nnodes: int
    node_rank: int
    nproc_per_node: int | None
    master_addr: str | None
    master_port: int | None
    launcher: str


@dataclasses.dataclass(frozen=True)
class ProcessEnv:
    """Process-level facts inside torchrun."""
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int


def process_env(env=None) -> ProcessEnv | None:
    """The torchrun-level environment, or None when this process was not started by torchrun."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" not in env:
        return None
    return ProcessEnv(int_var(env, "RANK", 0), int_var(env, "LOCAL_RANK", 0), int_var(env, "WORLD_SIZE", 1),
                      int_var(env, "LOCAL_WORLD_SIZE", int_var(env, "WORLD_SIZE", 1)))


def node_env(env=None) -> NodeEnv:
    """How many nodes, which one this is, and where the rendezvous is, whatever launched the pod."""
    env = os.environ if env is None else env
    if "PET_NNODES" in env or "PET_NODE_RANK" in env:  # Trainer v2, PyTorchJob (v1 also sets RANK = node)
        nnodes = int_var({"PET_NNODES": env.get("PET_NNODES", "1").split(":")[-1]}, "PET_NNODES", 1)  # elastic min:max
        return NodeEnv(nnodes, int_var(env, "PET_NODE_RANK", int_var(env, "RANK", 0)),
                       int_var(env, "PET_NPROC_PER_NODE"),
                       env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR"),
                       int_var(env, "PET_MASTER_PORT", int_var(env, "MASTER_PORT")),
                       "trainer-v2" if "PET_MASTER_ADDR" in env else "pytorchjob")
    if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env and "LOCAL_RANK" not in env:  # AscendJob
        local = int_var(env, "LOCAL_WORLD_SIZE")
        world = int_var(env, "WORLD_SIZE")
        # ascend-operator's WORLD_SIZE counts chips; nodes = WORLD_SIZE / LOCAL_WORLD_SIZE
        nnodes = max(1, world // local) if local else 1
        return NodeEnv(nnodes, int_var(env, "RANK", 0), local, env.get("MASTER_ADDR"), int_var(env, "MASTER_PORT"),
                       "ascendjob")
    if "WORLD_SIZE" in env and "LOCAL_RANK" not in env:  # Volcano: WORLD_SIZE = pods, RANK = pod index
        return NodeEnv(int_var(env, "WORLD_SIZE"), int_var(env, "RANK", 0), None, env.get("MASTER_ADDR"),
                       int_var(env, "MASTER_PORT"), "volcano")
    return NodeEnv(1, 0, None, None, None, "standalone")


def init_distributed(timeout_s: int = 600) -> ProcessEnv | None:
    """Initialise the default process group from torchrun's variables (None for one plain process).
    A rank that fails makes the others fail within the collective timeout instead of hanging."""
    penv = process_env()
    if penv is None or penv.world_size == 1 and not torch.distributed.is_available():
        return None
    if torch.distributed.is_initialized():
        return penv
    kind = accelerator_type()
    if kind != "cpu":
        getattr(torch, kind).set_device(penv.local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    attempt = int_var(os.environ, "TORCHELASTIC_RESTART_COUNT", 0)
    if not attempt:
        torch.distributed.init_process_group(backend=distributed_backend(kind), timeout=timeout)
        return penv
    # a restart by torchrun (--max-restarts) meets in the same store as the attempt before it, whose dead ranks'
    # addresses are still there (gloo would wait on them forever): each attempt gets its own key prefix
    from torch.distributed import PrefixStore, TCPStore

    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    store = TCPStore(os.environ["MASTER_ADDR"], int_var(os.environ, "MASTER_PORT"), penv.world_size,
                     is_master=not agent_store and penv.rank == 0, timeout=timeout, multi_tenant=not agent_store)
    torch.distributed.init_process_group(backend=distributed_backend(kind), timeout=timeout,
                                         store=PrefixStore(f"wan22/attempt_{attempt}", store), rank=penv.rank,
                                         world_size=penv.world_size)
    return penv


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_rank0() -> bool:
    """Rank 0 of the process group, or of torchrun's variables once the group is gone (or before it exists)."""
    if is_distributed():
        return torch.distributed.get_rank() == 0
    penv = process_env()
    return penv is None or penv.rank == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one plain process)."""
    if is_distributed():
        torch.distributed.barrier()


def device_for(penv: ProcessEnv | None) -> torch.device:
    return default_device(penv.local_rank if penv else 0)
