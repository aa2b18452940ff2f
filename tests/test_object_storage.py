"""Training on object storage, against a real S3-compatible server on the loopback interface (moto's server mode,
as s3fs's own tests use): every rank writes its own checkpoint shards straight to the store (no node-local
staging that one rank uploads), the endpoint comes from AWS_ENDPOINT_URL (as a storage Secret gives it for MinIO),
a resume on a fresh node continues exactly, and consolidation reads the checkpoint from the store."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import read_safetensors

BUCKET = "wan22-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    from wan_core.parallel.launch import free_port

    port = free_port()  # on the loopback interface
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=env["AWS_ENDPOINT_URL"],
                           skip_instance_cache=True)
    fs.mkdir(BUCKET)
    yield env, fs
    server.stop()


def config(tmp_path, ckpt, demo):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"from_pretrained": str(ckpt), "variant": "t2v-a14b", "expert": "high"}, "save_path": "local-save",
        "data": {"data_txt": str(demo / "data.txt"), "num_frames": 9, "height": 32, "width": 32},
        "train": {"iters": 4, "save_interval": 2, "lr": 1e-3, "seed": 5}}))
    return path


def train(cfg, env, staging, *extra):
    full = {**os.environ, **env, "WAN22_STAGING_DIR": str(staging), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "wan_core", "train", "--config", str(cfg), "--nproc", "2", *extra],
                       capture_output=True, text=True, timeout=900, env=full)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_two_ranks_write_to_the_store_and_a_fresh_node_resumes(s3, tmp_path, tiny_checkpoints, demo_dataset):
    env, fs = s3
    cfg = config(tmp_path, tiny_checkpoints["t2v-a14b"], demo_dataset)
    url = f"s3://{BUCKET}/runs/high"
    train(cfg, env, tmp_path / "node-a", f"--set=save_path={url}", "--set=train.iters=2")
    root = f"{BUCKET}/runs/high"
    assert fs.cat_file(f"{root}/latest_checkpointed_iteration.txt").decode() == "2"
    shards = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/iter_0000002"))
    # each rank's own shard file, written by that rank: nothing was staged on one node and uploaded by rank 0
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "trainer_state.json"} <= set(shards), shards
    # a new pod on another node: an empty staging folder, the same URL
    train(cfg, env, tmp_path / "node-b", f"--set=save_path={url}")
    assert fs.cat_file(f"{root}/latest_checkpointed_iteration.txt").decode() == "4"
    remote = [json.loads(x) for x in fs.cat_file(f"{root}/metrics.jsonl").decode().splitlines()]
    assert [m["step"] for m in remote] == [1, 2, 3, 4]
    # the same 4 steps without interruption, on the local disk: the same losses
    train(cfg, env, tmp_path / "node-c")
    local = [json.loads(x) for x in (tmp_path / "local-save" / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in remote] == [m["loss"] for m in local]
    # consolidation reads the DCP checkpoint from the store; the tensors equal the local run's
    full = {**os.environ, **env, "HF_HUB_OFFLINE": "1"}
    for source, out in ((url, "mm-s3"), (str(tmp_path / "local-save"), "mm-local")):
        r = subprocess.run([sys.executable, "-m", "wan_core", "consolidate", "--source", source, "--output",
                            str(tmp_path / out), "--quiet"], capture_output=True, text=True, timeout=600, env=full)
        assert r.returncode == 0, r.stderr[-2000:]
    a, b = read_safetensors(tmp_path / "mm-s3" / "release"), read_safetensors(tmp_path / "mm-local" / "release")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_the_pretrain_step_keeps_a_url_a_url(s3, tmp_path, tiny_checkpoints, artifact, monkeypatch):
    """The config every rank reads is written to the store (not to `s3:/...` on the local disk), and the step's
    curve reads the store's metrics."""

    from components.k8s.deployment import Deployment
    from components.pretrain.step import pretrain_step, wiring

    env, fs = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from components.pretrain import step

    started = []
    monkeypatch.setattr(step, "run_forwarding_sigterm", lambda cmd: started.append(cmd) or 0)
    url = f"s3://{BUCKET}/runs/step"
    # what the training run leaves on the store: its folder (marked as training's) with its metrics
    fs.pipe_file(f"{BUCKET}/runs/step/.wan22-output.json", b'{"command": "train"}')
    fs.pipe_file(f"{BUCKET}/runs/step/metrics.jsonl", json.dumps(
        {"step": 1, "loss": 0.5, "lr": 1e-3, "grad_norm": 1.0, "samples_per_s": 2.0}).encode() + b"\n")
    document = yaml.safe_dump({"model": {"variant": "ti2v-5b"}, "data": {"num_frames": 9, "height": 32, "width": 32}})
    metrics = artifact("m")
    out = pretrain_step(document, wiring(str(tiny_checkpoints["ti2v-5b"]), "m.json", url), Deployment(), "local",
                        "run", tmp_path / "c.html", metrics.log_metric)
    assert out == url and started[0][-2:] == ["--config", f"{url}/train.yaml"]
    written = yaml.safe_load(fs.cat_file(f"{BUCKET}/runs/step/train.yaml").decode())
    assert written["save_path"] == url and not (tmp_path / "s3:").exists()
    assert metrics.metrics["final_loss"] == 0.5


def test_the_demo_dag_on_the_store_resumes_and_equals_a_local_run(s3, tmp_path):
    """`wan22 pipeline run --storage s3://...`: every step reads and writes the run's work folder on the store
    (manifest, converted base, checkpoints, consolidated and exported models, samples). A second run with more steps
    resumes the training from the store; its losses equal an uninterrupted local run of the same config. Training
    runs on one process here: two ranks writing their shards to the store is the test above."""
    env, fs = s3
    full = {**os.environ, **env, "HF_HUB_OFFLINE": "1"}
    store = f"s3://{BUCKET}/dag"

    def dag(name, iters):
        r = subprocess.run([sys.executable, "-m", "wan_core", "pipeline", "run", "--workdir", str(tmp_path / name),
                            "--iters", str(iters), "--nproc", "1", "--cp", "1", "--storage", store],
                           capture_output=True, text=True, timeout=1200,
                           env=full)
        assert r.returncode == 0, r.stderr[-3000:]

    dag("first", 2)
    root = f"{BUCKET}/dag"
    assert {"manifest.json", "base-mm", "train-dit", "mm-dit", "exported", "samples", "validation-report"} <= \
        {p.rsplit("/", 1)[1] for p in fs.ls(root)}
    assert sorted(p.rsplit("/", 1)[1] for p in fs.glob(f"{root}/samples/*.mp4")) == ["0000.mp4", "0001.mp4"]
    dag("second", 4)  # resumes train-dit at step 2
    metrics = [json.loads(x) for x in fs.cat_file(f"{root}/train-dit/metrics.jsonl").decode().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    # the same config, 4 steps straight on the local disk
    config = yaml.safe_load(fs.cat_file(f"{root}/train-dit/train.yaml").decode())
    config["save_path"] = str(tmp_path / "reference")
    (tmp_path / "reference.yaml").write_text(yaml.safe_dump(config))
    train(tmp_path / "reference.yaml", env, tmp_path / "staging", "--nproc", "1")  # as the DAG trained
    local = [json.loads(x) for x in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in metrics] == [m["loss"] for m in local]
    assert (tmp_path / "second" / "report.html").is_file()  # the report reads the store's work folder, copied back
