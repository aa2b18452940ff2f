"""Training II: launcher environments, layout checks, and identical losses across parallel layouts."""
import json
import math
import subprocess
import sys

import pytest
import yaml

from components.k8s.profiles import profile_env, validate_npu_env
from wan_core.errors import UserError
from wan_core.parallel.env import node_env, process_env
from wan_core.parallel.launch import free_port, launch_plan, torchrun_command
from wan_core.parallel.mesh import ParallelDims


def test_environment_of_every_launcher():
    torchrun = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "h"}
    p = process_env(torchrun)
    assert (p.rank, p.local_rank, p.world_size, p.local_world_size) == (3, 1, 8, 4)
    assert launch_plan(None, None, None, None, torchrun) is None  # already under torchrun: train here
    trainer_v2 = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "8", "PET_NODE_RANK": "1",
                  "PET_MASTER_ADDR": "job-node-0-0.job", "PET_MASTER_PORT": "29500"}
    n = node_env(trainer_v2)
    assert (n.nnodes, n.node_rank, n.nproc_per_node, n.master_addr, n.master_port, n.launcher) == \
        (2, 1, 8, "job-node-0-0.job", 29500, "trainer-v2")
    assert launch_plan(None, None, None, None, trainer_v2) == (8, 2, 1, "job-node-0-0.job:29500")
    pytorchjob = {"MASTER_ADDR": "pj-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "16", "RANK": "1",
                  "PET_NODE_RANK": "1", "PET_NNODES": "2", "PET_NPROC_PER_NODE": "8"}
    n = node_env(pytorchjob)
    assert (n.nnodes, n.node_rank, n.nproc_per_node, n.master_addr, n.launcher) == (2, 1, 8, "pj-master-0", "pytorchjob")
    volcano = {"MASTER_ADDR": "vj-master-0.vj", "MASTER_PORT": "23456", "WORLD_SIZE": "4", "RANK": "2"}
    n = node_env(volcano)
    assert (n.nnodes, n.node_rank, n.launcher) == (4, 2, "volcano")  # WORLD_SIZE counts pods
    assert launch_plan(None, None, None, None, {**volcano, "NPUS_PER_NODE": "8"}) == (8, 4, 2, "vj-master-0.vj:23456")
    ascend = {"MASTER_ADDR": "aj-master-0", "MASTER_PORT": "2222", "RANK": "1", "WORLD_SIZE": "16",
              "LOCAL_WORLD_SIZE": "8"}
    n = node_env(ascend)
    assert (n.nnodes, n.node_rank, n.nproc_per_node, n.launcher) == (2, 1, 8, "ascendjob")
    assert launch_plan(None, None, None, None, {}) is None  # a plain process
    assert launch_plan(2, None, None, None, {}) == (2, 1, 0, None)
    assert launch_plan(None, None, None, None, {"NPUS_PER_NODE": "4", "NNODES": "1"}) == (4, 1, 0, None)
    cmd = torchrun_command(["train", "--config", "c.yaml"], 2)
    assert "--standalone" in cmd and "--nproc-per-node=2" in cmd and cmd[-3:] == ["train", "--config", "c.yaml"]
    cmd = torchrun_command(["train"], 8, 2, 1, "h:29500")
    assert "--nnodes=2" in cmd and "--node-rank=1" in cmd and "--rdzv-endpoint=h:29500" in cmd
    with pytest.raises(UserError, match="rdzv-endpoint"):
        torchrun_command(["train"], 8, 2, 1, None)


def test_layout_checks_list_the_valid_sizes():
    """A ParallelDims is validated when it is made; each refusal names the valid choices."""
    with pytest.raises(UserError, match="40 attention heads.*valid: 1, 2, 4, 5, 8, 10, 20, 40"):
        ParallelDims(48, cp=16, num_heads=40)
    with pytest.raises(UserError, match="24 attention heads.*1, 2, 3, 4, 6, 8, 12, 24"):
        ParallelDims(16, cp=16, num_heads=24)
    ParallelDims(16, cp=16, cp_algo="ring", num_heads=24)  # ring has no head constraint
    ParallelDims(16, cp=16, cp_algo="usp", ulysses_degree=8, num_heads=24)
    with pytest.raises(UserError, match="ulysses_degree=3 must divide parallel.cp=16"):
        ParallelDims(16, cp=16, cp_algo="usp", ulysses_degree=3, num_heads=24)
    with pytest.raises(UserError, match="must divide the number of processes 6.*valid: 1, 2, 3, 6"):
        ParallelDims(6, cp=4, num_heads=40)
    dims = ParallelDims(8, cp=4, cp_algo="usp", ulysses_degree=2)
    assert (dims.dp, dims.ulysses, dims.ring) == (2, 2, 2)


@pytest.mark.parametrize("cp, algo, ulysses", [(4, "usp", 2), (2, "ring", 0), (2, "ulysses", 0)])
def test_mesh_groups_are_the_layout(cp, algo, ulysses):
    """The named DeviceMesh's groups on 4 gloo processes, against the layout written out by hand: a CP group is cp
    consecutive ranks; Ulysses groups are consecutive runs inside it; a ring joins the ranks with the same Ulysses
    index; FSDP shards over every rank."""
    import json
    import os

    script = os.path.join(os.path.dirname(__file__), "helpers", "mesh_groups.py")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", script,
                        str(cp), algo, str(ulysses)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    groups = json.loads(r.stdout.strip().splitlines()[-1])
    u = {"ulysses": cp, "ring": 1, "usp": ulysses}[algo]
    for rank, mine in enumerate(groups):
        base, inner = rank - rank % cp, rank % cp
        assert mine["cp"] == list(range(base, base + cp))
        assert mine["ulysses"] == list(range(rank - rank % u, rank - rank % u + u))
        assert mine["ring"] == [base + k * u + inner % u for k in range(cp // u)]
        assert mine["dp_shard_cp"] == list(range(4))


def test_npu_profile_defaults_and_ranges():
    env = profile_env("npu")
    assert env["HCCL_CONNECT_TIMEOUT"] == "600" and env["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"
    assert profile_env("npu", {"HCCL_CONNECT_TIMEOUT": "1200"})["HCCL_CONNECT_TIMEOUT"] == "1200"
    with pytest.raises(UserError, match="HCCL_CONNECT_TIMEOUT='60' is outside the documented range \\[120, 7200\\]"):
        profile_env("npu", {"HCCL_CONNECT_TIMEOUT": "60"})
    assert validate_npu_env({"HCCL_EXEC_TIMEOUT": "20000", "TASK_QUEUE_ENABLE": "3"}) == [
        "HCCL_EXEC_TIMEOUT='20000' is outside the documented range [68, 17340]",
        "TASK_QUEUE_ENABLE='3' is not one of 0, 1, 2"]


# -- multi-process runs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoints):
    from wan_core.data.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("parallel")
    demo = make_demo_dataset(root / "demo", videos=4)
    return root, demo, tiny_checkpoints


def config(root, name, ckpt, demo, variant, task=None, expert=None, **extra):
    folder = root / name
    folder.mkdir()
    cfg = {"model": {"from_pretrained": str(ckpt), "variant": variant, "task": task, "expert": expert},
           "save_path": "save",
           "data": {"data_txt": str(demo / "data.txt"), "num_frames": 9, "height": 32, "width": 32, "fps": 16},
           "train": {"iters": 5, "save_interval": 2, "lr": 1e-3, "seed": 9, "micro_batch_size": 2}}
    for key, value in extra.items():
        section, field = key.split("__")
        cfg.setdefault(section, {})[field] = value
    (folder / "train.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def train(folder, *args):
    """`wan22 train` from this process (the launcher's own function; the ranks are torchrun's processes)."""
    from helpers.wan22_cli import run_wan22

    r = run_wan22("train", "--config", folder / "train.yaml", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(x) for x in (folder / "save" / "metrics.jsonl").read_text().splitlines()]


def same(a, b, rel=1e-5):
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        assert math.isclose(x["loss"], y["loss"], rel_tol=rel), (x, y)
        assert math.isclose(x["grad_norm"], y["grad_norm"], rel_tol=rel), (x, y)


def test_losses_identical_across_layouts(setup):
    """5B ti2v (per-token timesteps; 3 tokens, so CP pads and masks) and A14B t2v, fp32."""
    root, demo, ckpts = setup
    ti2v = dict(ckpt=ckpts["ti2v-5b"], demo=demo, variant="ti2v-5b", task="ti2v")
    reference = train(config(root, "ref", **ti2v))
    same(reference, train(config(root, "fsdp", **ti2v, train__micro_batch_size=1), "--nproc", "2"))
    same(reference, train(config(root, "ulysses", **ti2v, parallel__cp=2), "--nproc", "2"))
    same(reference, train(config(root, "ring", **ti2v, parallel__cp=2, parallel__cp_algo="ring"), "--nproc", "2"))
    same(reference, train(config(root, "usp", **ti2v, train__micro_batch_size=2, parallel__cp=4,
                                 parallel__cp_algo="usp", parallel__ulysses_degree=2), "--nproc", "4"))
    t2v = dict(ckpt=ckpts["t2v-a14b"], demo=demo, variant="t2v-a14b", expert="high")
    ref2 = train(config(root, "ref-t2v", **t2v))
    same(ref2, train(config(root, "ring-t2v", **t2v, train__micro_batch_size=1, parallel__cp=2,
                            parallel__cp_algo="ring"), "--nproc", "4"))  # dp 2 x ring 2


def test_checkpoints_reload_into_other_layouts(setup):
    """Saved by 2 FSDP ranks -> resumed by 1; by 1 -> 2; by 2 -> 4 (dp 2 x cp 2); with CP=2 -> without CP: DCP
    reshards, and the losses are those of the unbroken run."""
    root, demo, ckpts = setup
    kw = dict(ckpt=ckpts["t2v-a14b"], demo=demo, variant="t2v-a14b", expert="low")
    unbroken = train(config(root, "unbroken", **kw, train__iters=5))
    dp2 = ["--nproc", "2", "--set", "train.micro_batch_size=1"]  # the same global batch of 2 over 2 ranks
    dp2cp2 = ["--nproc", "4", "--set", "train.micro_batch_size=1", "--set", "parallel.cp=2"]  # dp 2 x cp 2
    for name, first, second in (("2to1", dp2, []), ("1to2", [], dp2), ("2to4", dp2, dp2cp2),
                                ("cp2to1", ["--nproc", "2", "--set", "parallel.cp=2"], [])):
        folder = config(root, name, **kw, train__iters=5)
        train(folder, "--set", "train.iters=2", *first)
        same(unbroken, train(folder, *second), rel=1e-5)
        assert (folder / "save" / "latest_checkpointed_iteration.txt").read_text().strip() == "5"


def test_bad_layout_is_refused_before_launch(setup):
    root, demo, ckpts = setup
    folder = config(root, "badcp", ckpts["t2v-a14b"], demo, "t2v-a14b", expert="high", parallel__cp=3)
    r = subprocess.run([sys.executable, "-m", "wan_core", "train", "--config", str(folder / "train.yaml"),
                        "--nproc", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "2 attention heads" in r.stderr and "valid: 1, 2" in r.stderr
    assert "launching" not in r.stderr and "Traceback" not in r.stderr


def test_two_nodes_through_c10d_rendezvous(setup):
    """(g) 2 "nodes" x 1 process, rendezvous on 127.0.0.1, equal to one process with micro batch 2."""
    root, demo, ckpts = setup
    kw = dict(ckpt=ckpts["ti2v-5b"], demo=demo, variant="ti2v-5b", task="t2v")
    reference = train(config(root, "nodes-ref", **kw))
    folder = config(root, "nodes", **kw, train__micro_batch_size=1)
    endpoint = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, "-m", "wan_core", "train", "--config", str(folder / "train.yaml"),
                               "--nproc", "1", "--nnodes", "2", "--node-rank", str(r), "--rdzv-endpoint", endpoint],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    same(reference, [json.loads(x) for x in (folder / "save" / "metrics.jsonl").read_text().splitlines()])


def children(pid):
    import os

    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


def rank_pids(launcher_pid):
    """{rank: pid} of the ranks torchrun (a child of `launcher_pid`) started, from their environment."""
    out = {}
    for pid in [c for t in children(launcher_pid) for c in children(t)]:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        out[int(env[b"RANK"])] = pid
    return out


def start_and_kill_rank_1(folder, after_lines, *extra):
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "wan_core", "train", "--config", str(folder / "train.yaml"),
                             "--nproc", "2", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics_path = folder / "save" / "metrics.jsonl"
    end = time.time() + 300
    while time.time() < end and not (metrics_path.is_file() and
                                     len(metrics_path.read_text().splitlines()) >= after_lines):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    ranks = rank_pids(proc.pid)
    assert sorted(ranks) == [0, 1], ranks
    killed_at = time.time()
    os.kill(ranks[1], signal.SIGKILL)  # what the OOM killer does
    out, err = proc.communicate(timeout=300)
    return proc, err, ranks, time.time() - killed_at


def test_killing_one_rank_stops_the_run_with_a_paragraph(setup):
    import os

    root, demo, ckpts = setup
    folder = config(root, "killrank", ckpts["t2v-a14b"], demo, "t2v-a14b", expert="high", train__iters=100000,
                    train__save_interval=3, train__micro_batch_size=1, parallel__timeout_s=60)
    proc, err, ranks, took = start_and_kill_rank_1(folder, 5)
    assert proc.returncode != 0 and took < 60  # within parallel.timeout_s
    assert all(not os.path.exists(f"/proc/{r}") or open(f"/proc/{r}/stat").read().split()[2] == "Z"
               for r in ranks.values())
    said = " ".join(err.split())
    resume = int((folder / "save" / "latest_checkpointed_iteration.txt").read_text())
    assert "rank 1 (local rank 1) was killed by SIGKILL" in said and "out-of-memory" in said, err
    assert f"the next run resumes from iter_{resume:07d}" in said and "--max-restarts" in said
    # torchrun's own traceback and report went to its log, named in the message, not to the screen
    assert "Traceback" not in err and "ChildFailedError" not in err
    log = next((folder / "save" / "logs").glob("torchrun-*.log"))
    assert str(log) in said and "ChildFailedError" in log.read_text()


def test_max_restarts_finishes_a_run_that_lost_a_rank(setup):
    """torchrun restarts the ranks; they resume from the last checkpoint; the losses are those of a run that lost
    nothing (one process with the same global batch)."""
    root, demo, ckpts = setup
    kw = dict(ckpt=ckpts["t2v-a14b"], demo=demo, variant="t2v-a14b", expert="high", train__iters=24,
              train__save_interval=4)
    reference = train(config(root, "restart-ref", **kw))
    folder = config(root, "restart", **kw, train__micro_batch_size=1, parallel__timeout_s=60)
    proc, err, _, _ = start_and_kill_rank_1(folder, 6, "--max-restarts", "1")
    assert proc.returncode == 0, err[-3000:]
    assert "resumed from" in err
    same(reference, [json.loads(x) for x in (folder / "save" / "metrics.jsonl").read_text().splitlines()])


def test_bf16_fsdp_with_activation_checkpointing(setup):
    root, demo, ckpts = setup
    folder = config(root, "bf16", ckpts["ti2v-5b"], demo, "ti2v-5b", task="ti2v", train__iters=2,
                    train__micro_batch_size=1, train__dtype="bf16", train__activation_checkpointing=True,
                    parallel__cp=2)
    metrics = train(folder, "--nproc", "2")
    assert len(metrics) == 2 and all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in metrics)


@pytest.mark.parametrize("ranks", [2, 4])
def test_ring_attention_matches_reference_with_padded_keys(ranks):
    """Forward and gradients of both ring paths; with 4 ranks one K/V block is entirely padding."""
    import os

    script = os.path.join(os.path.dirname(__file__), "helpers", "ring_check.py")
    for path in ("flash", "math"):
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                            script, path], capture_output=True, text=True, timeout=300)
        lines = [x for x in r.stderr.splitlines() if "Error" in x or "assert" in x.lower()]
        assert r.returncode == 0, "\n".join(lines[-10:])  # each rank asserts its own errors
        assert "ok " in r.stdout


def test_lora_losses_identical_across_layouts(setup):
    """LoRA (adapters only in the optimizer, frozen base) under FSDP2, Ulysses and Ring: the same losses, fp32."""
    root, demo, ckpts = setup
    lora = dict(ckpt=ckpts["ti2v-5b"], demo=demo, variant="ti2v-5b", task="ti2v", train__iters=3,
                train__lora={"rank": 4, "alpha": 8.0}, train__lr=3e-2)
    reference = train(config(root, "lora-ref", **lora))
    assert reference[-1]["loss"] != reference[0]["loss"]
    same(reference, train(config(root, "lora-fsdp", **lora, train__micro_batch_size=1), "--nproc", "2"))
    same(reference, train(config(root, "lora-ulysses", **lora, parallel__cp=2), "--nproc", "2"))
    same(reference, train(config(root, "lora-ring", **lora, parallel__cp=2, parallel__cp_algo="ring"), "--nproc", "2"))
