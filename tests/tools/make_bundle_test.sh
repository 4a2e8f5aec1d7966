#!/usr/bin/env bash
# bundle_is_self_contained: makes a GPU bundle (tools/make_bundle.sh) from this build and
# checks that it runs without the build machine's libraries: every library any of its
# programs needs resolves inside the bundle or is one the target provides (C library,
# loader, NVIDIA driver), with LD_LIBRARY_PATH cleared; `bin/moe info` and a short greedy
# `bin/moe generate` run from it and load the bundle's own sentencepiece plugin; the text
# equals the build's.
#
#   make_bundle_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail

src=$1
build=$2
work="$build/bundle_test"
bundle="$work/moe-gpu"
fail() { echo "FAIL: $*"; exit 1; }

rm -rf "$work"
mkdir -p "$work"
"$src/tools/make_bundle.sh" --no-build --no-tar --build-dir "$build" "$bundle" ||
  fail "make_bundle.sh failed"

for f in moe moe-coordinator moe-expert-worker; do
  [[ -x "$bundle/bin/$f" ]] || fail "bin/$f is missing"
done
[[ -f "$bundle/lib/libmoe_sentencepiece.so" ]] || fail "the sentencepiece plugin is missing"
cuda_build=0
if grep -q '^MOE_CUDA:BOOL=ON' "$build/CMakeCache.txt"; then
  cuda_build=1
  [[ -f "$bundle/lib/libmoe_cuda.so" ]] || fail "the CUDA module is missing"
  [ "$(readelf -d "$bundle/lib/libmoe_cuda.so" | grep -c 'RUNPATH.*\$ORIGIN')" -gt 0 ] ||
    fail "lib/libmoe_cuda.so has no RUNPATH \$ORIGIN (it would not find the bundle's CUDA runtime)"
  [ "$(ldd "$bundle/lib/libmoe_cuda.so" | grep -c 'libcublas')" -gt 0 ] ||
    fail "lib/libmoe_cuda.so does not need cuBLAS: not the module the bundle should carry"
fi
[[ -f "$bundle/models/kjv-moe/config.json" ]] || fail "the model is missing"
[[ -x "$bundle/run_gpu_tests.sh" ]] || fail "run_gpu_tests.sh is missing"

allowed='^(linux-vdso\.so|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libcuda\.so|libnvidia-)'
checked=0
for f in "$bundle"/bin/* "$bundle"/tests/* "$bundle"/lib/*; do
  [[ "$f" == *.py ]] && continue
  if [[ "$f" != "$bundle"/lib/* ]]; then
    # grep -c reads all of readelf's output: grep -q exits at the first match, readelf then
    # dies of SIGPIPE and pipefail fails the check (it did so once under load).
    [ "$(readelf -d "$f" | grep -c 'RUNPATH.*\$ORIGIN/\.\./lib')" -gt 0 ] || fail "$f has no RUNPATH \$ORIGIN/../lib"
  fi
  while read -r name arrow path _; do
    [[ "$arrow" == "=>" ]] || continue
    [[ "$name" =~ $allowed ]] && continue
    [[ "$(readlink -f "$path")" == "$bundle/lib/"* ]] ||
      fail "$(basename "$f") loads $name from $path, outside the bundle"
  done < <(env -u LD_LIBRARY_PATH ldd "$f")
  checked=$((checked + 1))
done
echo "ldd: $checked files, every library inside the bundle or the target's own"

env -i PATH=/usr/bin:/bin "$bundle/bin/moe" info --model "$bundle/models/kjv-moe" > "$work/info.txt" 2>&1 ||
  fail "bin/moe info failed: $(cat "$work/info.txt")"
grep -q '^backend cpu' "$work/info.txt" || fail "moe info printed no backend list"
if ((cuda_build)); then
  # moe info lists the CUDA backend: the bundle's module, and through it the bundle's
  # CUDA runtime, load (a missing one would say "cannot load the CUDA module").
  env -i PATH=/usr/bin:/bin LD_DEBUG=files "$bundle/bin/moe" info --model "$bundle/models/kjv-moe" \
    > "$work/info_cuda.txt" 2> "$work/info_ld.txt" || fail "bin/moe info failed"
  grep -q "file=$bundle/bin/../lib/libmoe_cuda.so" "$work/info_ld.txt" ||
    fail "the bundle's moe did not load the bundle's CUDA module"
  if grep '^backend cuda' "$work/info_cuda.txt" | grep 'cannot load'; then
    fail "the bundle's CUDA module does not load"
  fi
fi

gen=(generate --prompt "And God said," --max-new-tokens 6 --temperature 0)
env -i PATH=/usr/bin:/bin LD_DEBUG=files "$bundle/bin/moe" "${gen[@]}" --model "$bundle/models/kjv-moe" \
  > "$work/bundle_text.txt" 2> "$work/ld_debug.txt" || fail "bin/moe generate failed: $(tail -5 "$work/ld_debug.txt")"
grep -q "file=$bundle/bin/../lib/libmoe_sentencepiece.so" "$work/ld_debug.txt" ||
  fail "the bundle's moe did not load the bundle's sentencepiece plugin"
if grep -E 'calling init: /(usr/)?lib/x86_64-linux-gnu/lib(grpc|protobuf|absl|openblas|sentencepiece)' "$work/ld_debug.txt"; then
  fail "the bundle's moe loaded a library of the build machine"
fi
if grep -E 'file=[^ ]*(libcudart|libcublas|libmoe_cuda)' "$work/ld_debug.txt"; then
  fail "the bundle's moe loaded CUDA libraries for a CPU run"
fi
"$build/tools/moe" "${gen[@]}" --model "$src/models/kjv-moe" > "$work/build_text.txt" 2>/dev/null ||
  fail "the build's moe generate failed"
cmp -s "$work/bundle_text.txt" "$work/build_text.txt" ||
  fail "the bundle's text $(cat "$work/bundle_text.txt") differs from the build's $(cat "$work/build_text.txt")"
echo "bundle runs with LD_LIBRARY_PATH cleared: $(cat "$work/bundle_text.txt")"
rm -rf "$work"
