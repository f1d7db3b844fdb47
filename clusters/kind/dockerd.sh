#!/usr/bin/env bash
# Starts (or reuses) Docker Engine in the background; `stop` ends what this
# script started. Usage: dockerd.sh start|stop|status
# Docker gets its own containerd on a private socket: other work on this
# machine may run containerd on the default socket, which dockerd would
# otherwise adopt.
set -euo pipefail
bash "$(dirname "$0")/../../scripts/install-docker.sh"

RUN=/run/floxk-docker
LOG=${FLOXK_CACHE:-$HOME/.cache/floxk}/dockerd
mkdir -p "$RUN" "$LOG"
CTRD_SOCK=$RUN/containerd/containerd.sock

KIND_DIR=$(cd "$(dirname "$0")" && pwd)

# True when the capability bounding set lacks some capability the kernel has.
short_bounding_set() {
  local last bnd
  last=$(cat /proc/sys/kernel/cap_last_cap)
  bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  (((1 << (last + 1)) - 1 != 16#$bnd))
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
docker_ok() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
  if docker_ok; then
    echo "docker: reusing running Engine $(docker version --format '{{.Server.Version}}')" >&2
    return 0
  fi
  if ! alive "$RUN/containerd.pid"; then
    cat >"$RUN/containerd.toml" <<TOML
version = 2
root = "/var/lib/floxk-docker/containerd"
state = "$RUN/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_SOCK"
TOML
    mkdir -p "$RUN/containerd"
    containerd --config "$RUN/containerd.toml" >>"$LOG/containerd.log" 2>&1 &
    echo $! >"$RUN/containerd.pid"
  fi
  for _ in $(seq 50); do [[ -S $CTRD_SOCK ]] && break; sleep 0.2; done
  [[ -S $CTRD_SOCK ]] || { tail -20 "$LOG/containerd.log" >&2; exit 1; }
  if ! alive "$RUN/dockerd.pid"; then
    local runtime=()
    if short_bounding_set; then
      # --privileged would ask runc for capabilities this host lacks.
      runtime=(--add-runtime "floxk-caps=$KIND_DIR/docker-runc" --default-runtime floxk-caps)
      echo "docker: host lacks some capabilities; containers run through docker-runc" >&2
    fi
    dockerd --containerd="$CTRD_SOCK" --pidfile="$RUN/dockerd.pid.docker" "${runtime[@]}" >>"$LOG/dockerd.log" 2>&1 &
    echo $! >"$RUN/dockerd.pid"
  fi
  for _ in $(seq 60); do docker_ok && break; sleep 0.5; done
  docker_ok || { tail -30 "$LOG/dockerd.log" >&2; exit 1; }
  echo "docker: started Engine $(docker version --format '{{.Server.Version}}') (log: $LOG/dockerd.log)" >&2
}

stop() {
  local name pid
  for name in dockerd containerd; do
    if alive "$RUN/$name.pid"; then
      pid=$(cat "$RUN/$name.pid")
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      echo "docker: stopped $name ($pid)" >&2
    fi
    rm -f "$RUN/$name.pid"
  done
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  status) docker_ok && docker version --format 'Engine {{.Server.Version}}' ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
