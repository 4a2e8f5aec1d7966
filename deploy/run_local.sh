#!/usr/bin/env bash
# Runs moe-offload as two processes on this machine: moe-expert-worker and
# moe-coordinator on unix sockets. Waits until both answer their health checks,
# prints the addresses, then supervises: a worker that dies is started again (the
# coordinator reconnects by itself); a coordinator that dies ends the run. Ctrl-C or
# SIGTERM stops both and removes the sockets.
#
#   deploy/run_local.sh --model models/kjv-moe [--socket-dir DIR] [--cache-per-layer K]
#                       [--policy lru] [--bin-dir build] [--wait-s 60]
#                       [--worker-metrics HOST:PORT] [--worker-flag FLAG]...
#                       [-- extra coordinator flags]
#
# --worker-metrics serves the worker's Prometheus text on http://HOST:PORT/metrics;
# --worker-flag passes any other worker flag (repeat it: --worker-flag --log-level=debug
# --worker-flag --max-call-tokens=2048); after --, flags go to the coordinator (e.g.
# --http-listen 127.0.0.1:8080 --metrics-listen 127.0.0.1:9100). --bin-dir is a CMake
# build tree (build/expert_worker/moe-expert-worker, ...) or a directory holding the
# three binaries. Exit status: 0 after a signal, 1 when the processes do not start or
# the coordinator dies.
set -uo pipefail

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
model=""
socket_dir=""
cache_per_layer=0
policy=lru
bin_dir="$root/build"
wait_s=60
coordinator_extra=()
worker_extra=()
worker_metrics=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=${2:?}; shift 2 ;;
    --socket-dir) socket_dir=${2:?}; shift 2 ;;
    --cache-per-layer) cache_per_layer=${2:?}; shift 2 ;;
    --policy) policy=${2:?}; shift 2 ;;
    --bin-dir) bin_dir=${2:?}; shift 2 ;;
    --wait-s) wait_s=${2:?}; shift 2 ;;
    --worker-flag) worker_extra+=("${2:?}"); shift 2 ;;
    --worker-flag=*) worker_extra+=("${1#--worker-flag=}"); shift ;;
    --worker-metrics) worker_metrics=${2:?}; shift 2 ;;
    --) shift; coordinator_extra=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "run_local.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$model" ] || { echo "run_local.sh: --model DIR is required" >&2; usage; }
[ -d "$model" ] || { echo "run_local.sh: no model directory $model" >&2; exit 1; }

find_bin() {  # find_bin NAME SUBDIR: the binary in a build tree or a flat directory
  for candidate in "$bin_dir/$2/$1" "$bin_dir/$1"; do
    if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  echo "run_local.sh: no $1 under $bin_dir (build first, or give --bin-dir)" >&2
  return 1
}
worker_bin=$(find_bin moe-expert-worker expert_worker) || exit 1
coordinator_bin=$(find_bin moe-coordinator coordinator) || exit 1
moe_bin=$(find_bin moe tools) || exit 1

made_socket_dir=0
if [ -z "$socket_dir" ]; then
  socket_dir=$(mktemp -d "${XDG_RUNTIME_DIR:-/tmp}/moe-offload.XXXXXX") || exit 1
  made_socket_dir=1
fi
mkdir -p "$socket_dir"
socket_dir=$(cd "$socket_dir" && pwd)
worker_addr="unix:$socket_dir/worker.sock"
coordinator_addr="unix:$socket_dir/moe.sock"

# Two processes share the cores: idle OpenMP threads must sleep, not spin.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

log() { echo "run_local.sh: $*" >&2; }

worker_pid=""
coordinator_pid=""
start_worker() {
  local metrics=()
  [ -z "$worker_metrics" ] || metrics=(--metrics-listen "$worker_metrics")
  "$worker_bin" --model "$model" --listen "$worker_addr" --cache-per-layer "$cache_per_layer" \
    --policy "$policy" "${metrics[@]}" "${worker_extra[@]}" &
  worker_pid=$!
}
start_coordinator() {
  "$coordinator_bin" --model "$model" --worker "$worker_addr" --listen "$coordinator_addr" \
    "${coordinator_extra[@]}" &
  coordinator_pid=$!
}

stopping=0
stop_all() {  # SIGTERM both, SIGKILL what is left after 15 s, remove the sockets
  stopping=1
  trap '' INT TERM
  local pids=()
  for pid in "$coordinator_pid" "$worker_pid"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      pids+=("$pid")
    fi
  done
  for _ in $(seq 150); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
  rm -f "$socket_dir/worker.sock" "$socket_dir/moe.sock"
  [ $made_socket_dir -eq 1 ] && rmdir "$socket_dir" 2>/dev/null
  log "stopped"
}
on_signal() {
  log "signal: stopping"
  stop_all
  exit 0
}
trap on_signal INT TERM
trap '[ $stopping -eq 1 ] || stop_all' EXIT

healthy() {  # healthy ADDR SERVICE
  "$moe_bin" health --server "$1" --service="$2" >/dev/null 2>&1
}
wait_healthy() {  # wait_healthy ADDR SERVICE PID NAME
  local deadline=$((SECONDS + wait_s))
  until healthy "$1" "$2"; do
    if ! kill -0 "$3" 2>/dev/null; then
      log "$4 exited before serving"
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "$4 is not SERVING after ${wait_s} s"
      return 1
    fi
    sleep 0.2
  done
}

start_worker
start_coordinator
wait_healthy "$worker_addr" "" "$worker_pid" moe-expert-worker || exit 1
wait_healthy "$coordinator_addr" moe.v1.Generation "$coordinator_pid" moe-coordinator || exit 1

cat <<EOF
moe-offload is serving $model
  coordinator (moe.v1.Generation)  $coordinator_addr   pid $coordinator_pid
  expert worker                    $worker_addr   pid $worker_pid${worker_metrics:+
  worker metrics                   http://$worker_metrics/metrics}
Try:
  $moe_bin generate --server $coordinator_addr --prompt "And God said," --max-new-tokens 48
  $moe_bin health --server $coordinator_addr --service moe.v1.Generation
Ctrl-C stops both.
EOF

# Supervise. `sleep & wait` keeps the shell able to run the signal trap at once.
while true; do
  sleep 0.5 &
  wait $! 2>/dev/null
  if ! kill -0 "$coordinator_pid" 2>/dev/null; then
    wait "$coordinator_pid"
    log "moe-coordinator (pid $coordinator_pid) exited with status $?; stopping"
    coordinator_pid=""
    exit 1
  fi
  if ! kill -0 "$worker_pid" 2>/dev/null; then
    wait "$worker_pid"
    log "moe-expert-worker (pid $worker_pid) exited with status $?; restarting it"
    sleep 1  # no tight loop when it cannot start
    start_worker
    log "moe-expert-worker restarted as pid $worker_pid"
  fi
done
