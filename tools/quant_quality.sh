#!/bin/sh
# The quantization quality table of docs/results.md: converts the bundled model under
# every scheme with HQQ and with round-to-nearest, and prints perplexity on its held-out
# text and the relative weight errors beside fp32, as a Markdown table.
#
#   tools/quant_quality.sh [MODEL_DIR] [BUILD_DIR] [OUT_DIR]
set -eu
MODEL=${1:-models/kjv-moe}
BUILD=${2:-build}
OUT=${3:-$BUILD/quality}
MOE="$BUILD/tools/moe"
TEXT="$MODEL/heldout.txt"
export OMP_WAIT_POLICY=PASSIVE
ppl() { "$MOE" perplexity --model "$1" --text-file "$TEXT" --threads 1 | sed -n 's/.*perplexity \([0-9.]*\).*/\1/p'; }
err() { sed -n "s/.*\"$2\": \([0-9.e-]*\).*/\1/p" "$1/manifest.json" | awk '{ printf "%.4f", $1 }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e6 }'; }

echo "| attn/experts | method | perplexity | rel. error attention | rel. error experts | dense MB | experts MB | bytes/expert |"
echo "|---|---|---|---|---|---|---|---|"
echo "| fp32 (BF16 weights) | - | $(ppl "$MODEL") | 0 | 0 | - | - | $(( 3 * 256 * 512 * 4 )) (fp32 store) |"
for scheme in 16/16 8/3 4/4 4/3 4/2; do
  a=${scheme%/*}; e=${scheme#*/}
  for method in hqq rtn; do
    [ "$scheme" = 16/16 ] && [ "$method" = rtn ] && continue
    dir="$OUT/${a}_${e}_$method"
    "$MOE" convert --in "$MODEL" --out "$dir" --attn-bits "$a" --expert-bits "$e" --method "$method" --progress=false > /dev/null
    dense=$(sed -n 's/.*"file_bytes": \([0-9]*\).*/\1/p' "$dir/manifest.json" | head -1)
    experts=$(sed -n 's/.*"file_bytes": \([0-9]*\).*/\1/p' "$dir/manifest.json" | tail -1)
    blob=$(sed -n 's/.*"blob_bytes": \([0-9]*\).*/\1/p' "$dir/manifest.json")
    echo "| $scheme | $method | $(ppl "$dir") | $(err "$dir" attn_rel_error) | $(err "$dir" expert_rel_error) | $(mb "$dense") | $(mb "$experts") | $blob |"
  done
done
