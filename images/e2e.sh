#!/usr/bin/env bash
# `make e2e`: the whole wan22-full DAG as containers. Builds the cpu image when it is missing or older than
# the source (its wan22.source label), runs the DAG under kfp.local's DockerRunner (Docker, or podman's
# Docker-compatible socket started here), checks the outputs and that a failing step fails, and leaves no
# containers, service or firewall chains behind.
#
#   images/e2e.sh [RUN_FOLDER]      default: runs/e2e-<timestamp>
set -euo pipefail
cd "$(dirname "$0")/.."
source images/engine.sh

PYTHON=${PYTHON:-.venv/bin/python}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' wan_core/__init__.py)  # the one place it is written
IMAGE=${WAN22_E2E_IMAGE:-wan22:$VERSION-cpu}
RUN_DIR=${1:-runs/e2e-$(date +%Y%m%d-%H%M%S)}
LABEL=wan22.kfp-local

leftovers() { docker ps -aq --filter "label=$LABEL" 2>/dev/null || true; }
cleanup() {
  local ids
  ids=$(leftovers)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  engine_stop
}
trap cleanup EXIT
engine_start
echo "[e2e] engine: $ENGINE ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"

started=$(date +%s)
have=$(docker image inspect --format '{{ index .Config.Labels "wan22.source" }}' "$IMAGE" 2>/dev/null || true)
want=$(bash images/build.sh --digest)
if [ "$have" != "$want" ]; then
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then state="older than the source"; else state=missing; fi
  echo "[e2e] $IMAGE is $state: building it"
  engine_stop  # build.sh finds or starts the engine itself
  bash images/build.sh cpu
  engine_start
fi
built=$(date +%s)

echo "[e2e] inside the image: wan22 --help as the non-root user, installed versions equal the pins"
docker run --rm --network none "$IMAGE" sh -c 'test "$(id -u)" != 0 && wan22 --help >/dev/null'
docker run --rm --network none -v "$PWD/pyproject.toml:/tmp/pyproject.toml:ro" "$IMAGE" python -c '
import re, sys, tomllib
from importlib.metadata import version
pins = [d for d in tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["dependencies"] if "==" in d]
bad = []
for dep in pins:
    name, want = re.match(r"([A-Za-z0-9_.-]+)==([^;\s]+)", dep).groups()
    if "platform_machine" in dep and "x86_64" in dep and __import__("platform").machine() != "x86_64":
        continue
    have = version(name).split("+")[0]
    if not re.fullmatch(want.replace(".", r"\.").replace("*", ".*"), have):
        bad.append(f"{name} {have} (pinned {want})")
print("pins:", len(pins), "checked;", "mismatches: " + ", ".join(bad) if bad else "all equal")
sys.exit(1 if bad else 0)'

echo "[e2e] wan22-full in containers of $IMAGE, run folder $RUN_DIR"
"$PYTHON" -m wan_core pipeline run --containers --image "$IMAGE" --workdir "$RUN_DIR"
finished=$(date +%s)

"$PYTHON" - "$RUN_DIR" <<'PY'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
videos = sorted(p.name for p in (run / "work" / "samples").glob("*.mp4"))
index = json.loads((run / "work" / "samples" / "samples.json").read_text())
report = (run / "report.html").read_text()
assert videos == ["0000.mp4", "0001.mp4"], videos
assert len(index["samples"]) == 2 and "<svg" in report and "Validate the dataset" in report and "<video" in report
print(f"[e2e] outputs: {', '.join(videos)}, samples.json, report.html")
PY
echo "[e2e] a failing step fails the run (validate-dataset on a missing file, in a container)"
WAN22_IMAGE="$IMAGE" "$PYTHON" - "$RUN_DIR/failing" <<'PY'
import os, pathlib, re, sys
from kfp import dsl, local
from pipelines.containers import container_runner
from pipelines.local import private_tmp
from components.validate_dataset import validate_dataset
root = pathlib.Path(sys.argv[1]).absolute()
root.mkdir(parents=True)


@dsl.pipeline(name="failing")
def failing():  # one task in the image under test, as the pipelines set every task's image
    validate_dataset(data_txt=str(root / "missing.txt"), manifest_out=str(root / "manifest.json")).set_container_image(
        os.environ["WAN22_IMAGE"])


with container_runner(os.environ["WAN22_IMAGE"], root) as runner, private_tmp(root / "tmp"):
    local.init(runner=runner, pipeline_root=str(root))
    try:
        failing()
    except RuntimeError as exc:
        reason = re.sub(r"\x1b\[[0-9;]*m", "", str(exc).splitlines()[0])
        print(f"[e2e] failed as it should: {reason[:120]}")
    else:
        sys.exit("[e2e] a failing step was reported as a success")
PY
ids=$(leftovers)
if [ -n "$ids" ]; then echo "[e2e] containers left behind: $ids" >&2; exit 1; fi
echo "[e2e] passed: image $((built - started)) s, DAG $((finished - built)) s; no containers left"
