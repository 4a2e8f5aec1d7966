#!/usr/bin/env bash
# The ring's wait before and after the adaptive wait, interleaved: each round runs
# bench/run_split_bench.sh once with the old default (RING_WAIT=fixed RING_SPIN_US=0: sleep
# at once) and once with the new one (adaptive, 200 us bound), the first of them in turn,
# then prints per mode the medians over rounds of ring / in-process and of the per-layer
# overhead beyond the worker's work (arena transport).
# Usage: bench/ring_wait_ab.sh [MODEL_DIR] [BUILD_DIR] [ROUNDS] [split_bench flags...]
set -euo pipefail
model=${1:-models/kjv-moe}
build=${2:-build}
rounds=${3:-5}
shift $(( $# > 3 ? 3 : $# ))
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp /tmp/ring-wait-ab.XXXXXX)
trap 'rm -f "$out"' EXIT
run() {  # label wait spin [split_bench flags...]
  local label=$1 wait=$2 spin=$3
  shift 3
  RING_WAIT=$wait RING_SPIN_US=$spin "$here/run_split_bench.sh" "$model" "$build" --rounds 1 "$@" \
    | sed "s/^/$label /" >>"$out"
}
for r in $(seq "$rounds"); do
  if (( r % 2 )); then
    run old fixed 0 "$@"; run new adaptive 200 "$@"
  else
    run new adaptive 200 "$@"; run old fixed 0 "$@"
  fi
done
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, text = line.split(" ", 1)
    j = json.loads(text)
    rows.setdefault((label, j["rpc_transport"]), []).append(j)
for (label, transport), js in sorted(rows.items()):
    ratio = [j["ring"]["over_in_process"] for j in js]
    over = [j["ring"]["overhead_us"] for j in js]
    print(f"{label} ({transport}): ring/in-process median {statistics.median(ratio):.3f} "
          f"(rounds {' '.join(f'{x:.2f}' for x in ratio)}), overhead median "
          f"{statistics.median(over):.1f} us (rounds {' '.join(f'{x:.1f}' for x in over)})")
PY
