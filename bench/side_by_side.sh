#!/bin/bash
# Side by side: our CPU engine (build/bench/engine_bench) against llama.cpp's llama-bench on
# the same random Mixtral-layout weights, 2 threads (THREADS=N for N), rounds interleaved,
# medians and ratios. On a machine other processes keep busy, llama.cpp's spinning threads
# collapse at 2 threads (its decode falls 10-70x); THREADS=1 then compares the kernels.
# llama.cpp is peer tooling, never a dependency of the product: bench/peer/llamacpp.sh
# builds it outside the repo from a source tree (LLAMACPP_SRC) or a bare git mirror holding
# its pinned commit (LLAMACPP_MIRROR). Needs a python3 with numpy (PY, LLAMACPP_PY; default /usr/bin/python3).
#   bench/side_by_side.sh BUILD_DIR [WORK_DIR] [ROUNDS] [FORMATS] [make_big_mixtral key=value ...]
# FORMATS: comma-separated, of 16 (ours 16/16 vs F16), 8 (8/8 vs Q8_0), 4 (4/4 HQQ vs Q4_0),
# 3 (4/3 vs Q3_K_S), 2 (4/2 vs Q2_K), hf (the HF directory as is; ours only). Default 16,4.
# e.g. two layers at true Mixtral-8x7B widths:
#   bench/side_by_side.sh build /tmp/peer-mixtral 2 16,4 num_hidden_layers=2 hidden_size=4096 \
#     intermediate_size=14336 num_attention_heads=32 num_key_value_heads=8 vocab_size=32000
# Default model: 8 layers, hidden 1024, expert width 3584, 8 experts top-2 (734M params, BF16).
# Prints one JSON line per (engine, format, round), then medians, ratios and our peak RSS.
# METHOD=rtn converts by round-to-nearest (minutes faster at Mixtral width; the kernels'
# speed does not depend on the method).
set -u
LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
B=$1; W=${2:-/tmp/cpu-peer}; R=${3:-3}; F=${4:-16,4}; shift $(( $# < 4 ? $# : 4 ))
export LLAMACPP_PY=${LLAMACPP_PY:-${PY:-/usr/bin/python3}}
PY=$LLAMACPP_PY
source "$LIB/peer/llamacpp.sh"; llamacpp_build >/dev/null || exit 1
MOE=$B/tools/moe; EB=$B/bench/engine_bench; T=$PWD/models/kjv-moe/heldout.txt
mkdir -p $W
if [ ! -f $W/hf/config.json ]; then
  $PY "$LIB/peer/make_big_mixtral.py" $W/hf 0 "$@" >/dev/null || exit 1
  cp models/kjv-moe/tokenizer.model $W/hf/
fi
# ours: DIR attn-bits expert-bits; theirs: GGUF type
declare -A OURS=([16]="m16 16 16" [8]="m8 8 8" [4]="m4 4 4" [3]="m3 4 3" [2]="m2 4 2")
declare -A THEIRS=([16]=F16 [8]=Q8_0 [4]=Q4_0 [3]=Q3_K_S [2]=Q2_K)
[ -f $W/f16.gguf ] || llamacpp_convert $W/hf $W/f16.gguf f16 >/dev/null || exit 1
for f in ${F//,/ }; do
  [ "$f" = hf ] && continue
  read -r dir ab eb <<< "${OURS[$f]}"
  [ -f $W/$dir/manifest.json ] || OMP_WAIT_POLICY=PASSIVE $MOE convert --in $W/hf --out $W/$dir \
    --attn-bits $ab --expert-bits $eb --method ${METHOD:-hqq} --progress=false >/dev/null || exit 1
  cp models/kjv-moe/tokenizer.model $W/$dir/ 2>/dev/null
  t=${THEIRS[$f]}
  [ $t = F16 ] || [ -f $W/$t.gguf ] || llamacpp_quantize $W/f16.gguf $W/$t.gguf $t || exit 1
done
# engine_bench's median of 3 passes: the first pays the cold start (every expert copied into
# its cache slot, first-touch page faults), as llama-bench's warm-up run does for it.
# Our OpenMP threads sleep between parallel regions (OURS_WAIT=ACTIVE spins as llama.cpp's
# threads do: faster on idle cores, far slower when another process holds one).
ours() {  # DIR LABEL
  OMP_WAIT_POLICY=${OURS_WAIT:-PASSIVE} $EB --model $1 --text-file $T --prompt-tokens 64 --decode-tokens 32 --threads ${THREADS:-2} \
    --matmul blas --rounds 3 2>/dev/null | grep '^{' | head -1 |
    $PY -c 'import json,sys; d=json.loads(sys.stdin.read()); print(json.dumps({"engine":"moe","fmt":sys.argv[1],"prefill":d.get("prefill_tokens_per_s"),"decode":d.get("decode_tokens_per_s"),"rss_mb":d.get("peak_rss_mb"),"rss_ratio":d.get("rss_over_weights_and_kv"),"rss_net":d.get("rss_above_baseline_over_weights_and_kv")}))' $2
}
theirs() {  # GGUF LABEL
  local t=${THREADS:-2}
  # llamacpp_bench runs -t 2; another -t would add a second test, so it is replaced here.
  if [ "$t" = 2 ]; then llamacpp_bench $1 -r 1; else
    "$LLAMACPP_BIN/llama-bench" -m $1 -p 64 -n 32 -t $t -r 1 -o json 2>/dev/null | $PY -c '
import json, sys
out = {}
for r in json.load(sys.stdin):
    k = "prefill" if r["n_prompt"] else "decode"
    out.update({k + "_tok_s": round(r["avg_ts"], 2), "size_bytes": r["model_size"]})
print(json.dumps(out))'
  fi | $PY -c 'import json,sys; d=json.loads(sys.stdin.read()); print(json.dumps({"engine":"llama.cpp","fmt":sys.argv[1],"prefill":d.get("prefill_tok_s"),"decode":d.get("decode_tok_s"),"size_mb":round(d.get("size_bytes",0)/1e6,1)}))' $2
}
for r in $(seq $R); do
  for f in ${F//,/ }; do
    if [ "$f" = hf ]; then ours $W/hf hf; continue; fi
    read -r dir ab eb <<< "${OURS[$f]}"
    t=${THEIRS[$f]}
    ours $W/$dir $f
    if [ $t = F16 ]; then theirs $W/f16.gguf $f; else theirs $W/$t.gguf $f; fi
  done
done | tee $W/rows.jsonl
$PY - $W/rows.jsonl <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = {}
for e in sorted({(r["engine"], r["fmt"]) for r in rows}):
    sel = [r for r in rows if (r["engine"], r["fmt"]) == e and r["decode"]]
    if sel:
        med[e] = (st.median(r["prefill"] for r in sel), st.median(r["decode"] for r in sel),
                  max(r.get("rss_mb") or 0 for r in sel), max(r.get("rss_ratio") or 0 for r in sel),
                  max(r.get("rss_net") or 0 for r in sel))
print("| format | ours prefill | llama.cpp prefill | ratio | ours decode | llama.cpp decode | ratio | our peak RSS MiB | RSS / (weights + KV) | RSS above the program's own / (weights + KV) |")
print("|---|---|---|---|---|---|---|---|---|---|")
ok = bool(med)
for f in sorted({k[1] for k in med}, key=lambda s: (s == "hf", -int(s) if s.isdigit() else 0)):
    o, t = med.get(("moe", f)), med.get(("llama.cpp", f))
    if o and t:
        pr, dr = o[0] / t[0], o[1] / t[1]
        ok = ok and dr >= 1.0 and (pr >= 0.8 or f not in ("16", "4"))
        print("| %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %.0f | %.2f | %.2f |" % (f, o[0], t[0], pr, o[1], t[1], dr, o[2], o[3], o[4]))
    elif f != "hf":
        ok = False
    if o and not t:
        print("| %s | %.1f | - | - | %.1f | - | - | %.0f | %.2f | %.2f |" % (f, o[0], o[1], o[2], o[3], o[4]))
print("side-by-side: %s (decode >= 1.0x at every format, prefill >= 0.8x at 16 and 4 bits)" % ("met" if ok else "not met"))
sys.exit(0 if ok else 1)
PY
