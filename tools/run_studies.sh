#!/usr/bin/env bash
# The paper's two studies (Eliseev & Mazur, 2023) on the bundled model's held-out text,
# run with `moe bench` (teacher-forced decoding, one thread). Writes JSON lines to
# docs/studies/*.jsonl, then tables (stdout) and PNG plots via tools/plot_studies.py.
#
#   tools/run_studies.sh [BUILD_DIR [MODEL_DIR [OUT_DIR [--no-ablation]]]]
#       (defaults: build/, models/kjv-moe, docs/studies)
#
# Any family: the hit ratio is measured for every cache size from 1 to the model's
# experts per layer.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
model=${2:-models/kjv-moe}
out=${3:-docs/studies}
ablation=${4:-}
moe="$build/tools/moe"
text=$model/heldout.txt
mkdir -p "$out"
# Mixtral names the count num_local_experts; Qwen and OLMoE num_experts.
experts=$(/usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c.get("num_local_experts") or c["num_experts"])' "$model/config.json")
top_k=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["num_experts_per_tok"])' "$model/config.json")
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
common=(--model "$model" --text-file "$text" --threads 1)

# (a) LRU hit ratio against the cache size k (no prefetch; routing only, so no link).
: > "$out/hit_ratio.jsonl"
for k in $(seq 1 "$experts"); do
  "$moe" bench "${common[@]}" --max-tokens 1000 --variant no-prefetch --cache-per-layer "$k" \
    >> "$out/hit_ratio.jsonl"
done
# (a) Speculative recall against experts prefetched (1-3 and top-k) and lookahead (1-3 layers ahead):
# one run per m with lookahead 3 scores every distance.
: > "$out/recall.jsonl"
for m in $(printf '1\n2\n3\n%s\n' "$top_k" | sort -nu); do  # and the model's top-k
  "$moe" bench "${common[@]}" --max-tokens 1000 --variant full --cache-per-layer 2 \
    --lookahead 3 --prefetch-experts "$m" >> "$out/recall.jsonl"
done
if [[ "$ablation" == --no-ablation ]]; then
  /usr/bin/python3 tools/plot_studies.py "$out" --no-ablation
  exit 0
fi
# (b) Ablation: the four variants at 16 GB/s with a quarter of the experts cached,
# interleaved three times so that machine noise hits them alike.
"$moe" bench "${common[@]}" --max-tokens 512 --variant all --cache-per-layer 2 --link-gbps 16 \
  --repeat 3 > "$out/ablation.jsonl"
/usr/bin/python3 tools/plot_studies.py "$out"
