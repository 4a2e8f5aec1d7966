#!/usr/bin/env bash
# The paper's two studies (Eliseev & Mazur, 2023) on the bundled model's held-out text,
# run with `moe bench` (teacher-forced decoding, one thread). Writes JSON lines to
# docs/studies/*.jsonl, then tables (stdout) and PNG plots via tools/plot_studies.py.
#
#   tools/run_studies.sh [BUILD_DIR]     (default build/)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
moe="$build/tools/moe"
model=models/kjv-moe
text=$model/heldout.txt
out=docs/studies
mkdir -p "$out"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
common=(--model "$model" --text-file "$text" --threads 1)

# (a) LRU hit ratio against the cache size k (no prefetch; routing only, so no link).
: > "$out/hit_ratio.jsonl"
for k in 1 2 3 4 5 6 7 8; do
  "$moe" bench "${common[@]}" --max-tokens 1000 --variant no-prefetch --cache-per-layer "$k" \
    >> "$out/hit_ratio.jsonl"
done
# (a) Speculative recall against experts prefetched (1-3) and lookahead (1-3 layers ahead):
# one run per m with lookahead 3 scores every distance.
: > "$out/recall.jsonl"
for m in 1 2 3; do
  "$moe" bench "${common[@]}" --max-tokens 1000 --variant full --cache-per-layer 2 \
    --lookahead 3 --prefetch-experts "$m" >> "$out/recall.jsonl"
done
# (b) Ablation: the four variants at 16 GB/s with a quarter of the experts cached,
# interleaved three times so that machine noise hits them alike.
"$moe" bench "${common[@]}" --max-tokens 512 --variant all --cache-per-layer 2 --link-gbps 16 \
  --repeat 3 > "$out/ablation.jsonl"
/usr/bin/python3 tools/plot_studies.py "$out"
