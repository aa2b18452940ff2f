"""Starting `torchrun` for `wan22 train --nproc N` (and on Kubernetes pods from their launcher's variables).

MindSpeed-MM's guide's knobs map: NPUS_PER_NODE -> --nproc, NNODES -> --nnodes; one node uses `--standalone`
(a free rendezvous port; `--master_port=0` hangs).
"""
from __future__ import annotations

import os
import subprocess
import sys

from wan_core.errors import UserError
from wan_core.config_fields import int_var
from wan_core.parallel.env import node_env, process_env


def torchrun_command(argv: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None) -> list[str]:
    if nproc < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise UserError(f"bad launch layout: --nproc {nproc}, --nnodes {nnodes}, --node-rank {node_rank}")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and not rdzv_endpoint:
        cmd.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise UserError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (the node-0 address)")
        cmd += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={rdzv_endpoint}"]
    return cmd + ["-m", "wan_core", *argv]


def launch_plan(nproc: int | None, nnodes: int | None, node_rank: int | None, rdzv_endpoint: str | None,
                env=None) -> tuple[int, int, int, str | None] | None:
    """(nproc, nnodes, node_rank, endpoint) to start torchrun with, or None to train in this process.
    Command-line values win; then the pod's launcher variables; then the MindSpeed-MM guide's NPUS_PER_NODE / NNODES."""
    env = os.environ if env is None else env
    if process_env(env) is not None:  # already under torchrun
        return None
    node = node_env(env)
    nproc = nproc or node.nproc_per_node or int_var(env, "NPUS_PER_NODE")
    nnodes = nnodes or (node.nnodes if node.launcher != "standalone" else None) or int_var(env, "NNODES") or 1
    if not nproc or (nproc == 1 and nnodes == 1):
        return None
    if node_rank is None:
        node_rank = node.node_rank
    if rdzv_endpoint is None and node.master_addr:
        rdzv_endpoint = f"{node.master_addr}:{node.master_port or 29500}"
    return nproc, nnodes, node_rank, rdzv_endpoint


LAUNCH_FLAGS = ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint")


def rank_argv(argv: list[str]) -> list[str]:
    """The command line each rank runs: ours without the launch flags, which torchrun's own parser would
    otherwise take as abbreviations of its flags (--nproc for --nproc-per-node) and refuse."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCH_FLAGS:
            skip = True
        elif arg.split("=")[0] not in LAUNCH_FLAGS:
            out.append(arg)
    return out


def run_torchrun(argv: list[str], plan) -> int:
    """Run torchrun in the foreground; its exit status is ours (a failed rank fails the job)."""
    nproc, nnodes, node_rank, endpoint = plan
    cmd = torchrun_command(rank_argv(argv), nproc, nnodes, node_rank, endpoint if nnodes > 1 else None)
    print("launching: " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def free_port() -> int:
    """A TCP port free on this host now (for a process group of local workers)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
