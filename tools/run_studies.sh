#!/usr/bin/env bash
# The paper's two studies (Eliseev & Mazur, 2023) on the bundled model's held-out text,
# run with `moe bench` (teacher-forced decoding, one thread): JSON lines, then tables
# (stdout) and PNG plots via tools/plot_studies.py. Each run is announced on stderr as
# it starts ("[3/12 0:12] moe bench ..."); the whole takes about 90 s on two cores.
#
#   tools/run_studies.sh [--build DIR] [--model DIR] [--out DIR] [--update-docs]
#                        [--no-ablation] [--quick]
#
# --build       the CMake build tree (default build/; a lone positional DIR works too)
# --model       the model directory (default models/kjv-moe); any family: the hit ratio
#               is measured for every cache size from 1 to the model's experts per layer
# --out         where the JSON lines and plots go (default: a new directory under
#               ${TMPDIR:-/tmp}); nothing tracked is touched unless...
# --update-docs ...which copies them into docs/studies (kjv-moe, the figures README
#               cites) or docs/studies/<model name> (any other model)
# --no-ablation only the hit-ratio and recall studies
# --quick       a few tokens per run, to check the script end to end (tests use it);
#               its figures mean nothing and --update-docs refuses it
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
build=build
out=""
update_docs=0
quick=0
ablation=1
model=models/kjv-moe
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    --model) model=${2:?--model needs a directory}; shift 2 ;;
    --no-ablation) ablation=0; shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --update-docs) update_docs=1; shift ;;
    --quick) quick=1; shift ;;
    -h|--help) usage ;;
    -*) echo "run_studies.sh: unknown flag $1" >&2; usage ;;
    *) build=$1; shift ;;
  esac
done
if [ $update_docs -eq 1 ] && [ $quick -eq 1 ]; then
  echo "run_studies.sh: --quick figures do not belong in docs/studies" >&2
  exit 2
fi
moe="$build/tools/moe"
[ -x "$moe" ] || { echo "run_studies.sh: no $moe (build first, or give --build)" >&2; exit 1; }
[ -n "$out" ] || out=$(mktemp -d "${TMPDIR:-/tmp}/moe-studies.XXXXXX")
mkdir -p "$out"
text=$model/heldout.txt
[ -f "$text" ] || { echo "run_studies.sh: no $text (the studies read a model's held-out text)" >&2; exit 1; }
# Mixtral names the count num_local_experts; Qwen and OLMoE num_experts.
experts=$(/usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c.get("num_local_experts") or c["num_experts"])' "$model/config.json")
top_k=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["num_experts_per_tok"])' "$model/config.json")
prefetch_counts=$(printf '1\n2\n3\n%s\n' "$top_k" | sort -nu)
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
common=(--model "$model" --text-file "$text" --threads 1)
long=1000 short=512 warmup=()
if [ $quick -eq 1 ]; then long=8 short=8 warmup=(--warmup-tokens 2); fi

runs=$((experts + $(echo "$prefetch_counts" | wc -l) + ablation)) run=0 started=$SECONDS  # `moe bench` invocations below
bench() {  # bench OUT_FILE FLAGS...: one `moe bench`, announced with its place and time
  local file=$1
  shift
  run=$((run + 1))
  local t=$((SECONDS - started))
  printf '[%d/%d %d:%02d] moe bench %s\n' "$run" "$runs" $((t / 60)) $((t % 60)) "$*" >&2
  "$moe" bench "${common[@]}" "${warmup[@]}" "$@" >> "$file"
}

# (a) LRU hit ratio against the cache size k (no prefetch; routing only, so no link).
: > "$out/hit_ratio.jsonl"
for k in $(seq 1 "$experts"); do
  bench "$out/hit_ratio.jsonl" --max-tokens $long --variant no-prefetch --cache-per-layer "$k"
done
# (a) Speculative recall against experts prefetched (1-3 and top-k) and lookahead (1-3 layers ahead):
# one run per m with lookahead 3 scores every distance.
: > "$out/recall.jsonl"
for m in $prefetch_counts; do
  bench "$out/recall.jsonl" --max-tokens $long --variant full --cache-per-layer 2 \
    --lookahead 3 --prefetch-experts "$m"
done
plot_flags=()
if [ $ablation -eq 1 ]; then
  # (b) Ablation: the four variants at 16 GB/s with a quarter of the experts cached,
  # interleaved three times so that machine noise hits them alike (one invocation).
  : > "$out/ablation.jsonl"
  bench "$out/ablation.jsonl" --max-tokens $short --variant all --cache-per-layer 2 \
    --link-gbps 16 --repeat 3
else
  plot_flags=(--no-ablation)
fi
echo "run_studies.sh: $((SECONDS - started)) s of benches; plotting" >&2
/usr/bin/python3 tools/plot_studies.py "$out" "${plot_flags[@]}"
if [ $update_docs -eq 1 ]; then
  docs=docs/studies
  [ "$(basename "$model")" = kjv-moe ] || docs=docs/studies/$(basename "$model")
  mkdir -p "$docs"
  cp "$out"/*.jsonl "$out"/*.png "$docs"/
  echo "run_studies.sh: $docs updated from $out" >&2
else
  echo "run_studies.sh: results in $out (docs/studies untouched; --update-docs copies them there)" >&2
fi
