#!/bin/bash
# Peer tooling (never a dependency of the product): llama.cpp as a CPU performance peer and a
# second logits reference for Mixtral-family checkpoints. Source it (functions llamacpp_*) or run it:
#   llamacpp.sh build                          # idempotent; CPU-only Release into $LLAMACPP_WORK/build
#   llamacpp.sh convert HF_DIR OUT.gguf [f32|f16]
#   llamacpp.sh quantize IN.gguf OUT.gguf [Q4_0]
#   llamacpp.sh logits GGUF 1,5,9 OUT.npy [threads] [--f16-kv] [--fa]   # float32 [T, n_vocab]
#   llamacpp.sh bench GGUF [extra llama-bench args, e.g. -r 10]  # JSON: prefill/decode tok/s, -p 64 -n 32 -t 2
# Source: LLAMACPP_SRC (a llama.cpp source tree) or LLAMACPP_MIRROR (a bare git directory holding
# LLAMACPP_COMMIT, an upstream master commit; github:unslothai/llama.cpp carries upstream's
# commits and is much smaller to copy than ggml-org's repository). Nothing is downloaded here.
LLAMACPP_WORK=${LLAMACPP_WORK:-/tmp/llamacpp-work}
LLAMACPP_COMMIT=${LLAMACPP_COMMIT:-34af94cd9ab277632e27caeec2d41de2fd091b31}
LLAMACPP_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LLAMACPP_BIN=$LLAMACPP_WORK/build/bin
LLAMACPP_PY=${LLAMACPP_PY:-/usr/bin/python3}  # needs numpy

llamacpp_build() {
  local W=$LLAMACPP_WORK m
  if [ -x "$LLAMACPP_BIN/llama-bench" ] && [ -x "$LLAMACPP_BIN/llama-quantize" ] &&
     [ "$LLAMACPP_BIN/llama_logits" -nt "$LLAMACPP_LIB/llama_logits.cpp" ]; then
    echo "llama.cpp ready in $W ($(cat "$W/COMMIT" 2>/dev/null))"; return 0
  fi
  if [ ! -f "$W/src/CMakeLists.txt" ]; then
    mkdir -p "$W/src"
    if [ -n "${LLAMACPP_SRC:-}" ]; then
      cp -r "$LLAMACPP_SRC"/. "$W/src"/ || return 1
    elif [ -n "${LLAMACPP_MIRROR:-}" ] && git --git-dir="$LLAMACPP_MIRROR" cat-file -e "$LLAMACPP_COMMIT^{commit}" 2>/dev/null; then
      # large test-vocab blobs may be absent from a partial mirror: leave them out
      git --git-dir="$LLAMACPP_MIRROR" archive "$LLAMACPP_COMMIT" -- . ':(exclude)models/ggml-vocab-*.gguf' |
        tar -x -C "$W/src" || { echo "git archive from $LLAMACPP_MIRROR failed" >&2; return 1; }
    else
      rmdir "$W/src"
      echo "llama.cpp source missing: set LLAMACPP_SRC to a source tree or LLAMACPP_MIRROR to a git dir holding $LLAMACPP_COMMIT" >&2
      return 1
    fi
    echo "${LLAMACPP_COMMIT}" > "$W/COMMIT"
  fi
  if [ ! -f "$W/build/CMakeCache.txt" ]; then
    cmake -S "$W/src" -B "$W/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TOOLS=ON > "$W/build.log" 2>&1 ||
      { echo "cmake configure failed, see $W/build.log" >&2; return 1; }
  fi
  echo "building llama.cpp (about 6 min on 2 cores), log: $W/build.log" >&2
  cmake --build "$W/build" -j2 --target llama llama-bench llama-quantize >> "$W/build.log" 2>&1 ||
    { echo "build failed: $(grep -m1 -i error "$W/build.log")" >&2; return 1; }
  g++ -O2 -std=c++17 "$LLAMACPP_LIB/llama_logits.cpp" -I "$W/src/include" -I "$W/src/ggml/include" \
    -L "$LLAMACPP_BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$LLAMACPP_BIN" -o "$LLAMACPP_BIN/llama_logits" ||
    { echo "llama_logits failed to compile" >&2; return 1; }
  echo "llama.cpp ready in $W ($(cat "$W/COMMIT"))"
}

llamacpp_convert() {   # HF_DIR OUT.gguf [f32|f16]
  "$LLAMACPP_PY" -c 'import numpy' 2>/dev/null || { echo "needs numpy: apt-get install python3-numpy" >&2; return 1; }
  [ -d "$LLAMACPP_WORK/src/gguf-py" ] || { echo "run '$0 build' first (gguf-py comes from the llama.cpp tree)" >&2; return 1; }
  PYTHONPATH="$LLAMACPP_WORK/src/gguf-py" "$LLAMACPP_PY" "$LLAMACPP_LIB/hf_to_gguf.py" "$1" "$2" "${3:-f32}"
}

llamacpp_quantize() {  # IN.gguf OUT.gguf [TYPE]
  "$LLAMACPP_BIN/llama-quantize" "$1" "$2" "${3:-Q4_0}" 2 > "$2.log" 2>&1 ||
    { echo "quantize failed, see $2.log" >&2; return 1; }
}

llamacpp_logits() {    # GGUF TOKENS OUT.npy [threads] [--f16-kv] [--fa]
  "$LLAMACPP_BIN/llama_logits" "$@"
}

llamacpp_bench() {     # GGUF [extra llama-bench args; -p/-n/-t given again would add tests]
  local g=$1; shift
  "$LLAMACPP_BIN/llama-bench" -m "$g" -p 64 -n 32 -t 2 "$@" -o json 2> "$LLAMACPP_WORK/bench.err" |
    "$LLAMACPP_PY" -c '
import json, sys
rows = json.load(sys.stdin); out = {"model": sys.argv[1], "llama_cpp_commit": sys.argv[2]}
for r in rows:
    k = "prefill" if r["n_prompt"] else "decode"
    out.update({k + "_tok_s": round(r["avg_ts"], 2), k + "_tok_s_sd": round(r["stddev_ts"], 2),
                k + "_tokens": r["n_prompt"] or r["n_gen"], "threads": r["n_threads"],
                "type": r["model_type"], "size_bytes": r["model_size"], "kv_type": r["type_k"]})
print(json.dumps(out))' "$g" "$(cat "$LLAMACPP_WORK/COMMIT" 2>/dev/null)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cmd=${1:-}; shift || true
  case "$cmd" in
    build|convert|quantize|logits|bench) "llamacpp_$cmd" "$@" ;;
    *) sed -n 2,11p "$0"; exit 2 ;;
  esac
fi
