#!/usr/bin/env bash
# Build the wan22 images with whatever Docker-API engine is here (Docker, or podman started on demand).
#
#   images/build.sh [cpu|cuda|npu ...]     default: cpu; tags wan22:<version>-<kind>
#   images/build.sh --digest               print the digest of what goes into an image (its wan22.source label)
#
# Where no public base image can be pulled (a machine with PyPI and Debian's mirror but no registry),
# the cpu image is built FROM a Debian bookworm base made here with mmdebstrap, carrying the host's CA
# certificates (for TLS-intercepting proxies). Where the public torch index cannot be reached, torch
# comes from a one-package index served on 127.0.0.1 from the wheel pip finds on this host.
# Overrides: WAN22_BASE_IMAGE, WAN22_TORCH_INDEX_URL, WAN22_IMAGE_TAG_PREFIX (default wan22), and WAN22_PLATFORM
# (e.g. linux/arm64 for Kunpeng NPU nodes; the tag then ends in -arm64, and pipelines pin pods with --arch arm64).
set -euo pipefail
cd "$(dirname "$0")/.."

source_digest() {  # what the Dockerfiles COPY, so a stale image can be told from a current one
  find pyproject.toml README.md wan_core components pipelines images -type f \( -name '*.py' -o -name '*.toml' \
    -o -name '*.md' -o -name 'Dockerfile' -o -name 'install.sh' \) -not -name 'test_*' -not -path '*/__pycache__/*' -print0 |
    sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}
if [ "${1:-}" = --digest ]; then source_digest; exit 0; fi
source images/engine.sh

KINDS=("${@:-cpu}")
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' wan_core/__init__.py)  # the one place it is written
TORCH_PIN=$(sed -n 's/^ *"torch==\([0-9.]*\)".*/\1/p' pyproject.toml)
PREFIX=${WAN22_IMAGE_TAG_PREFIX:-wan22}
DIGEST=$(source_digest)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wan22-build.XXXXXX")
cleanup() {
  # the index server is started inside $(...), a subshell: its PID comes back through a file
  [ ! -f "$WORK/server.pid" ] || kill "$(cat "$WORK/server.pid")" 2>/dev/null || true
  rm -rf "$WORK"
  engine_stop
}
trap cleanup EXIT
engine_start

PLATFORM=${WAN22_PLATFORM:-}
SUFFIX=""
case "$PLATFORM" in
  "") ;;
  linux/amd64|linux/arm64) SUFFIX="-${PLATFORM#linux/}" ;;
  *) echo "[build] WAN22_PLATFORM=$PLATFORM: linux/amd64 or linux/arm64" >&2; exit 2 ;;
esac

build() {  # build KIND BASE TORCH_INDEX
  local kind=$1 args=(--network host -f "images/$1/Dockerfile" -t "$PREFIX:$VERSION-$1$SUFFIX" --label "wan22.source=$DIGEST")
  [ -z "$PLATFORM" ] || args+=(--platform "$PLATFORM")
  [ -z "$2" ] || args+=(--build-arg "BASE_IMAGE=$2")
  [ -z "$3" ] || args+=(--build-arg "TORCH_INDEX_URL=$3")
  echo "[build] $PREFIX:$VERSION-$kind (base ${2:-the Dockerfile's}, torch index ${3:-the Dockerfile's})" >&2
  if [ "$ENGINE" = podman ]; then podman build "${args[@]}" .; else docker build "${args[@]}" .; fi
}

default_arg() {  # default_arg KIND NAME: the ARG default in images/KIND/Dockerfile
  sed -n "s/^ARG $2=//p" "images/$1/Dockerfile" | head -1
}

debian_base() {  # a local bookworm image with python3 and this host's CA certificates
  local tag=localhost/wan22-base:bookworm
  if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; return; fi
  command -v mmdebstrap >/dev/null || { echo "[build] no public base image and no mmdebstrap to make one" >&2; return 1; }
  echo "[build] no public base image can be pulled: making $tag with mmdebstrap (about a minute)" >&2
  local certs=()
  for crt in /usr/local/share/ca-certificates/*.crt; do [ -e "$crt" ] && certs+=("$crt"); done
  local hooks=()
  if [ ${#certs[@]} -gt 0 ]; then
    hooks+=(--customize-hook="copy-in ${certs[*]} /usr/local/share/ca-certificates/"
            --customize-hook='chroot "$1" update-ca-certificates')
  fi
  mmdebstrap --quiet --variant=minbase --include=ca-certificates,python3,python3-venv,passwd "${hooks[@]}" \
    bookworm "$WORK/base.tar" "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" "deb http://deb.debian.org/debian-security bookworm-security main" >&2
  # pip in the image must trust the same certificates as the system (it ships its own bundle otherwise)
  if [ "$ENGINE" = podman ]; then
    podman import --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" --change 'CMD ["python3"]' "$WORK/base.tar" "$tag" >&2
  else
    docker import --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" --change 'CMD ["python3"]' "$WORK/base.tar" "$tag" >&2
  fi
  rm -f "$WORK/base.tar"
  echo "$tag"
}

local_torch_index() {  # serve the torch wheel pip finds on this host as a one-package index
  mkdir -p "$WORK/simple/torch"
  python3 -m pip download --quiet --no-deps --only-binary :all: -d "$WORK/simple/torch" "torch==$TORCH_PIN" >&2
  if ! ls "$WORK/simple/torch/" | grep -q '+cpu'; then
    echo "[build] the torch index cannot be reached and this host has no CPU wheel of torch $TORCH_PIN" >&2
    return 1
  fi
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 -m http.server --bind 127.0.0.1 --directory "$WORK" "$port" >/dev/null 2>&1 &
  echo $! > "$WORK/server.pid"
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/simple/torch/" >/dev/null && break; sleep 0.1; done
  echo "http://127.0.0.1:$port/simple"
}

for kind in "${KINDS[@]}"; do
  [ -f "images/$kind/Dockerfile" ] || { echo "[build] no images/$kind/Dockerfile (choose cpu, cuda or npu)" >&2; exit 2; }
  base=${WAN22_BASE_IMAGE:-}
  index=${WAN22_TORCH_INDEX_URL:-}
  if [ "$kind" = cpu ]; then
    if [ -z "$base" ] && ! timeout 30 docker pull -q "$(default_arg cpu BASE_IMAGE)" >/dev/null 2>&1; then
      base=$(debian_base)
    fi
    if [ -z "$index" ] && ! curl -fsS --max-time 15 -o /dev/null "$(default_arg cpu TORCH_INDEX_URL)/torch/"; then
      index=$(local_torch_index)
    fi
  fi
  build "$kind" "$base" "$index"
done
# podman's storage is ours (engine.sh): drop untagged images a day old (replaced tags; younger ones are the
# layer cache that makes the next build quick). A Docker daemon's images belong to its user: left alone.
if [ "$ENGINE" = podman ]; then podman image prune -f --filter until=24h >/dev/null; fi
