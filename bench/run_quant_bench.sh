#!/usr/bin/env bash
# fp32 against a converted model, side by side on one machine: engine_bench (prefill and
# decode, all experts cached), `moe generate` with 2 of 8 experts cached per layer over a
# modelled 2 GB/s link (where each copy's bytes count), and the two-process split
# (split_bench). Runs alternate between the models, `rounds` times.
#   bench/run_quant_bench.sh [CONVERTED_DIR] [FP32_DIR] [BUILD_DIR] [ROUNDS]
set -euo pipefail
conv=${1:-build/converted/hqq_4_3}
fp32=${2:-models/kjv-moe}
build=${3:-build}
rounds=${4:-3}
export OMP_WAIT_POLICY=PASSIVE
for r in $(seq "$rounds"); do
  for m in "$fp32" "$conv"; do
    echo "== round $r engine_bench $m"
    "$build/bench/engine_bench" --model "$m" --text-file "$fp32/heldout.txt" --prompt-tokens 128 --decode-tokens 128 --threads 1 \
      --matmul blas --rounds 2 | grep -v ratio
    echo "== round $r generate (cache 2/8, link 2 GB/s) $m"
    "$build/tools/moe" generate --model "$m" --prompt "In the beginning" --max-new-tokens 128 \
      --temperature 0 --cache-per-layer 2 --link-gbps 2 --threads 1 2>&1 >/dev/null | tail -1
  done
done
for m in "$fp32" "$conv"; do
  echo "== split_bench $m"
  bash "$(dirname "$0")/run_split_bench.sh" "$m" "$build" 2>&1 | head -3
done
