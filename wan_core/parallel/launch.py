"""Starting `torchrun` for `wan22 train --nproc N` (and on Kubernetes pods from their launcher's variables).

MindSpeed-MM's guide's knobs map: NPUS_PER_NODE -> --nproc, NNODES -> --nnodes; one node uses `--standalone`
(a free rendezvous port; `--master_port=0` hangs).
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

from wan_core.errors import UserError
from wan_core.config_fields import int_var
from wan_core.parallel.env import node_env, process_env


def torchrun_command(argv: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None, max_restarts: int = 0) -> list[str]:
    if nproc < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise UserError(f"bad launch layout: --nproc {nproc}, --nnodes {nnodes}, --node-rank {node_rank}")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if max_restarts:  # torchrun's elastic restarts: the ranks start again and resume from the last checkpoint
        cmd.append(f"--max-restarts={max_restarts}")
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


LAUNCH_FLAGS = ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint", "--max-restarts")
LAUNCHER_ONLY = ("--overwrite",)  # done once by the launching process, never again by a (restarted) rank


def rank_argv(argv: list[str]) -> list[str]:
    """The command line each rank runs: ours without the launch flags, which torchrun's own parser would
    otherwise take as abbreviations of its flags (--nproc for --nproc-per-node) and refuse, and without what only
    the launching process does (--overwrite: a restarted rank must resume, not start afresh)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCH_FLAGS:
            skip = True
        elif arg.split("=")[0] not in LAUNCH_FLAGS + LAUNCHER_ONLY:
            out.append(arg)
    return out


@dataclasses.dataclass
class LaunchResult:
    status: int  # torchrun's exit status
    terminated: bool  # this process received SIGTERM and passed it on
    failures: list[dict]  # torchrun's report of the ranks that failed: rank, local_rank, exitcode, signal
    log: Path | None  # where torchrun's own messages went


# torchrun's own lines (its logging, the c10d warnings, the thread-count banner); the ranks' go to the screen
_TORCHRUN_LINE = re.compile(r"^\[?[IWEF]\d{4} \d\d:\d\d:\d\d|^\*{10,}$|^Setting OMP_NUM_THREADS")
_FAILURE = re.compile(r"rank\s*:\s*(\d+) \(local_rank: (\d+)\)\s*\n\s*exitcode\s*:\s*(-?\d+).*?"
                      r"(?:traceback\s*:\s*(?:Signal \d+ \((SIG\w+)\))?)", re.S)


def parse_failures(report: str) -> list[dict]:
    """The failed ranks in torchrun's ChildFailedError report (its "Root Cause" and "Failures" entries)."""
    root_at = report.find("Root Cause")
    return [{"rank": int(m.group(1)), "local_rank": int(m.group(2)), "exitcode": int(m.group(3)),
             "signal": m.group(4), "root": 0 <= root_at < m.start()} for m in _FAILURE.finditer(report)]


def run_torchrun(argv: list[str], plan, max_restarts: int = 0, log_dir: Path | None = None,
                 shutdown_timeout_s: int | None = None) -> LaunchResult:
    """Run torchrun in the foreground. The ranks' output goes to the screen; torchrun's own (its logging, and the
    traceback and failure report it prints when a rank dies) to a log file in `log_dir`, and the failed ranks are
    read from that report. SIGTERM is passed on to torchrun, which passes it to the ranks and gives them
    `shutdown_timeout_s` to save a checkpoint before it kills them."""
    import os
    import signal
    import tempfile
    import threading
    import time

    nproc, nnodes, node_rank, endpoint = plan
    cmd = torchrun_command(rank_argv(argv), nproc, nnodes, node_rank, endpoint if nnodes > 1 else None,
                           max_restarts)
    print("launching: " + " ".join(cmd), file=sys.stderr, flush=True)
    env = dict(os.environ)
    if shutdown_timeout_s:
        env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(shutdown_timeout_s)
    debug = bool(os.environ.get("WAN22_DEBUG"))
    log_dir = log_dir or Path(tempfile.gettempdir())
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        log_dir = Path(tempfile.gettempdir())
    log = log_dir / f"torchrun-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1)
    terminated = threading.Event()

    def pass_on(signum, frame):
        terminated.set()
        proc.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, pass_on)
    report: list[str] = []
    try:
        with open(log, "w") as log_file:
            in_report = False
            for line in proc.stderr:
                in_report = in_report or line.startswith("Traceback (most recent call last)")
                if debug or not (in_report or _TORCHRUN_LINE.match(line)):
                    sys.stderr.write(line)
                    sys.stderr.flush()
                log_file.write(line)
                if in_report:
                    report.append(line)
        while True:
            try:
                status = proc.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C reached the ranks and torchrun too: wait for them to stop
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)
    return LaunchResult(status, terminated.is_set(), parse_failures("".join(report)), log)


def describe_failure(result: LaunchResult, resume_from: str) -> str:
    """The paragraph a failed launch ends with: which rank died of what, where the next run resumes."""
    import signal

    parts = []
    # the first failure first; ranks torchrun itself stopped with SIGTERM after it are not news
    failures = [f for f in result.failures if f["signal"] != "SIGTERM"] or result.failures
    for f in sorted(failures, key=lambda f: not f.get("root")):
        who = f"rank {f['rank']} (local rank {f['local_rank']})"
        name = f["signal"] or (signal.Signals(-f["exitcode"]).name if f["exitcode"] < 0 else None)
        if name == "SIGKILL":
            parts.append(f"{who} was killed by SIGKILL, usually the kernel's out-of-memory killer (host memory: "
                         "check the node's memory, lower data.num_workers or micro_batch_size)")
        elif name:
            parts.append(f"{who} was killed by {name}")
        else:
            parts.append(f"{who} exited with status {f['exitcode']} (its message is above)")
    what = "; ".join(parts) or f"torchrun exited with status {result.status}"
    where = f" torchrun's report: {result.log}." if result.log else ""
    return (f"training stopped: {what}. The checkpoints are intact: the next run resumes from {resume_from} (run the "
            f"same command again, or add --max-restarts N to restart by itself).{where}")


def free_port() -> int:
    """A TCP port free on this host now (for a process group of local workers)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
