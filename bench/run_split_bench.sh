#!/usr/bin/env bash
# Starts a moe-expert-worker on a unix socket, runs split_bench against it (in-process,
# RPC with the arena, ring; then in-process, RPC with inline tensors, ring), stops the
# worker. Usage: bench/run_split_bench.sh [MODEL_DIR] [BUILD_DIR] [split_bench flags...]
# DEVICE=cuda runs the worker there (pass --device cuda to split_bench for the coordinator
# half: on one GPU the calls cross by the CUDA IPC arena, the ring beside it).
# RING_WAIT=adaptive|fixed and RING_SPIN_US=N set both sides' ring wait (default adaptive,
# 200: common/ring_wait.h; RING_WAIT=fixed RING_SPIN_US=0 is the wait before it, a sleep).
set -euo pipefail
model=${1:-models/kjv-moe}
build=${2:-build}
shift $(( $# > 2 ? 2 : $# ))
wait=${RING_WAIT:-adaptive}
spin=${RING_SPIN_US:-200}
sock=$(mktemp -u /tmp/moe-bench-worker.XXXXXX.sock)
# Two processes share the cores: sleeping, not spinning, OpenMP teams.
export OMP_WAIT_POLICY=PASSIVE
"$build/expert_worker/moe-expert-worker" --model "$model" --listen "unix:$sock" \
  --device "${DEVICE:-cpu}" --ring-wait "$wait" --ring-spin-us "$spin" 2>/dev/null &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null; rm -f "$sock"' EXIT
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
"$build/bench/split_bench" --model "$model" --worker "unix:$sock" --ring-wait "$wait" --ring-spin-us "$spin" "$@"
"$build/bench/split_bench" --model "$model" --worker "unix:$sock" --ring-wait "$wait" --ring-spin-us "$spin" \
  --inline-tensors "$@"
