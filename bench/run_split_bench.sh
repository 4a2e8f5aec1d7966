#!/usr/bin/env bash
# Starts a moe-expert-worker on a unix socket, runs split_bench against it (arena, then
# inline tensors), stops the worker. Usage: bench/run_split_bench.sh [MODEL_DIR] [BUILD_DIR]
set -euo pipefail
model=${1:-models/kjv-moe}
build=${2:-build}
sock=$(mktemp -u /tmp/moe-bench-worker.XXXXXX.sock)
# Two processes share the cores: sleeping, not spinning, OpenMP teams.
export OMP_WAIT_POLICY=PASSIVE
"$build/expert_worker/moe-expert-worker" --model "$model" --listen "unix:$sock" 2>/dev/null &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null; rm -f "$sock"' EXIT
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
"$build/bench/split_bench" --model "$model" --worker "unix:$sock"
"$build/bench/split_bench" --model "$model" --worker "unix:$sock" --inline-tensors
