#!/usr/bin/env bash
# cuda_module_is_loaded_on_demand: the CUDA backend lives in libmoe_cuda.so, dlopen'ed the
# first time a CUDA device is listed or opened (common/backend/cuda_module.h), so
#  - no program links the CUDA runtime, cuBLAS or the driver (readelf NEEDED);
#  - a CPU run maps none of them, nor the module (LD_DEBUG=files lists every library the
#    loader opens, dlopen'ed ones included);
#  - in a CUDA build, `moe info` loads the build's module (so the check above can fail);
#  - a missing or wrong module is explained, with its path and dlerror's text, by
#    `moe info` (which still succeeds) and by --device cuda (which fails cleanly).
#
#   cuda_module_test.sh SOURCE_DIR BUILD_DIR CUDA_COMPILED(0|1) MOE COORDINATOR WORKER
set -uo pipefail

src=$1
build=$2
cuda=$3
programs=("$4" "$5" "$6")
work="$build/cuda_module_test"
moe=$4
model="$src/models/kjv-moe"
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$work"
mkdir -p "$work"

for p in "${programs[@]}"; do
  [[ -x "$p" ]] || fail "$p is not built"
  needed=$(readelf -d "$p" | grep NEEDED)
  [[ -n "$needed" ]] || fail "readelf -d $p lists no NEEDED entry at all"
  if grep -E 'libcudart|libcublas|libcuda\.so' <<< "$needed"; then
    fail "$(basename "$p") links the CUDA runtime, cuBLAS or the driver"
  fi
done
echo "NEEDED: none of ${#programs[@]} programs links libcudart, libcublas* or libcuda"

gen=(generate --model "$model" --prompt "And God said," --max-new-tokens 4 --temperature 0)
LD_DEBUG=files "$moe" "${gen[@]}" --device cpu > "$work/cpu.txt" 2> "$work/cpu_ld.txt" ||
  fail "moe generate --device cpu failed: $(grep -v '^ *[0-9]*:' "$work/cpu_ld.txt" | tail -5)"
grep -q 'file=.*libmoe_sentencepiece.so' "$work/cpu_ld.txt" ||
  fail "LD_DEBUG=files did not list the sentencepiece plugin: the dlopen check below would see nothing"
if grep -E 'file=[^ ]*(libcudart|libcublas|libcuda\.so|libmoe_cuda)' "$work/cpu_ld.txt"; then
  fail "a CPU run loaded a CUDA library"
fi
echo "a CPU generate loaded no CUDA library: $(cat "$work/cpu.txt")"

if [[ "$cuda" != 1 ]]; then
  "$moe" info --model "$model" | grep -q 'not compiled with CUDA' ||
    fail "a build without CUDA does not say so in moe info"
  echo "not compiled with CUDA: nothing more to check"
  rm -rf "$work"
  exit 0
fi

LD_DEBUG=files "$moe" info --model "$model" > "$work/info.txt" 2> "$work/info_ld.txt" ||
  fail "moe info failed"
grep -q "file=[^ ]*/lib/libmoe_cuda.so" "$work/info_ld.txt" || fail "moe info did not load the build's lib/libmoe_cuda.so"
grep '^backend cuda' "$work/info.txt" | grep -q 'cannot' &&
  fail "the build's module does not load: $(grep '^backend cuda' "$work/info.txt")"
echo "moe info loads the module: $(grep '^backend cuda' "$work/info.txt")"

missing="$work/no-such-dir/libmoe_cuda.so"
MOE_CUDA_MODULE="$missing" "$moe" info --model "$model" > "$work/missing.txt" 2>&1 ||
  fail "moe info failed when the module is missing: $(cat "$work/missing.txt")"
grep '^backend cuda' "$work/missing.txt" | grep -q "cannot load the CUDA module: $missing: cannot open shared object file" ||
  fail "moe info does not explain the missing module: $(grep '^backend cuda' "$work/missing.txt")"
MOE_CUDA_MODULE="$missing" "$moe" "${gen[@]}" --device cuda > "$work/missing_gen.txt" 2>&1
rc=$?
((rc != 0 && rc < 128)) || fail "--device cuda without the module exited $rc (expected a clean failure)"
grep -q "cannot load the CUDA module: $missing: cannot open shared object file" "$work/missing_gen.txt" ||
  fail "--device cuda does not explain the missing module: $(tail -3 "$work/missing_gen.txt")"
echo "a missing module is explained: $(grep '^backend cuda' "$work/missing.txt")"

# A library that is not the module (the C math library the program links) is refused by
# name.
libm=$(ldd "$moe" | awk '$1 ~ /^libm\.so/ {print $3}')
[[ -f "$libm" ]] || fail "cannot find the libm that $moe loads"
MOE_CUDA_MODULE="$libm" "$moe" info --model "$model" > "$work/wrong.txt" 2>&1 ||
  fail "moe info failed on a wrong module: $(tail -3 "$work/wrong.txt")"
grep '^backend cuda' "$work/wrong.txt" | grep -q "$libm lacks MoeCudaModule" ||
  fail "moe info does not explain a wrong module: $(grep '^backend cuda' "$work/wrong.txt")"
echo "a wrong module is explained: $(grep '^backend cuda' "$work/wrong.txt")"
rm -rf "$work"
