# Sourced by images/build.sh and images/e2e.sh: find a Docker-API container engine, or start podman's.
#
# engine_start: use a running Docker daemon (or whatever $DOCKER_HOST names) when `docker info` answers;
#   otherwise start `podman system service` on a private socket (installing podman from Debian's
#   packages when running as root on Debian), configured for machines without systemd: runc, cgroupfs,
#   file events, raised ulimits and overlay storage under $WAN22_PODMAN_DIR. Exports DOCKER_HOST and
#   sets ENGINE to docker or podman.
# engine_stop: stop the service engine_start started and delete the firewall chains it added; a
#   Docker daemon found running is left alone.

WAN22_PODMAN_DIR=${WAN22_PODMAN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wan22/podman}
ENGINE=
ENGINE_PID=

_engine_chains() {  # the iptables chains that exist now, one a line (nothing when iptables is absent)
  command -v iptables >/dev/null 2>&1 || return 0
  for table in filter nat; do iptables -t "$table" -S 2>/dev/null | awk -v t="$table" '$1 == "-N" {print t, $2}'; done
}

engine_start() {
  if docker info >/dev/null 2>&1; then
    ENGINE=docker
    return 0
  fi
  if ! command -v podman >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "[engine] installing podman, runc and mmdebstrap from Debian's packages" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap >/dev/null
    else
      echo "[engine] no container engine: start Docker, set DOCKER_HOST, or install podman (Debian: podman runc mmdebstrap)" >&2
      return 1
    fi
  fi
  mkdir -p "$WAN22_PODMAN_DIR/storage" "$WAN22_PODMAN_DIR/run"
  cat > "$WAN22_PODMAN_DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  cat > "$WAN22_PODMAN_DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$WAN22_PODMAN_DIR/storage"
runroot = "$WAN22_PODMAN_DIR/run"
CONF
  export CONTAINERS_CONF="$WAN22_PODMAN_DIR/containers.conf" CONTAINERS_STORAGE_CONF="$WAN22_PODMAN_DIR/storage.conf"
  _engine_chains > "$WAN22_PODMAN_DIR/chains.before"
  local sock="$WAN22_PODMAN_DIR/podman.sock"
  rm -f "$sock"
  podman system service --time 0 "unix://$sock" > "$WAN22_PODMAN_DIR/service.log" 2>&1 &
  ENGINE_PID=$!
  export DOCKER_HOST="unix://$sock"
  for _ in $(seq 1 100); do
    if docker info >/dev/null 2>&1; then ENGINE=podman; return 0; fi
    sleep 0.2
  done
  echo "[engine] podman's service did not answer on $sock; its log:" >&2
  cat "$WAN22_PODMAN_DIR/service.log" >&2
  engine_stop
  return 1
}

engine_stop() {
  [ -n "$ENGINE_PID" ] || return 0
  kill "$ENGINE_PID" 2>/dev/null || true
  wait "$ENGINE_PID" 2>/dev/null || true
  ENGINE_PID=
  # podman may have added CNI/netavark chains for bridge networks: remove the ones that are new
  local added
  added=$(_engine_chains | grep -vxF -f "$WAN22_PODMAN_DIR/chains.before" || true)
  [ -n "$added" ] || return 0
  echo "[engine] removing the firewall chains podman added: $(echo $added)" >&2
  echo "$added" | while read -r table chain; do
    { iptables -t "$table" -S 2>/dev/null | grep -E "^-A [^ ]+ .*-j $chain( |$)" || true; } | sed 's/^-A/-D/' |
      while read -r rule; do echo "$rule" | xargs iptables -t "$table" 2>/dev/null || true; done  # xargs keeps quoted comments whole
    iptables -t "$table" -F "$chain" 2>/dev/null || true
    iptables -t "$table" -X "$chain" 2>/dev/null || true
  done
  return 0
}
