#!/usr/bin/env bash
# Makes a self-contained bundle of moe-offload for a GPU machine that has the NVIDIA
# driver (and possibly CUDA) but not gRPC, protobuf, Abseil, OpenBLAS or sentencepiece:
#
#   OUT_DIR/bin/    moe, moe-coordinator, moe-expert-worker, device_bench and
#                   mixtral_scale_bench (if built); OUT_DIR/bench/ its config and trace
#   OUT_DIR/tests/  the GPU test binaries that exist (backend_conformance_test, device_test,
#                   expert_runner_test, expert_store_test, *cuda*test, *device*test,
#                   *gpu*test) and cuda_two_process_test.py
#   OUT_DIR/lib/    every shared library they load that is not the C library, the loader
#                   or the NVIDIA driver (libstdc++, libgcc_s, libgomp included), with the
#                   CUDA runtime and cuBLAS unless --no-cuda-runtime; the sentencepiece plugin
#                   and, in a CUDA build, the CUDA module libmoe_cuda.so (the programs
#                   dlopen it on first use; it is what needs the CUDA runtime and cuBLAS)
#   OUT_DIR/models/kjv-moe, OUT_DIR/run_gpu_tests.sh, OUT_DIR/MANIFEST.txt
#   OUT_DIR.tar.xz  (unless --no-tar)
#
# Executables get RUNPATH $ORIGIN/../lib and libraries $ORIGIN (patchelf), so nothing
# depends on LD_LIBRARY_PATH. See docs/gpu_bundle.md.
#
#   tools/make_bundle.sh [--build-dir DIR] [--no-build] [--no-cuda-runtime] [--no-tar] OUT_DIR
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir="$repo/build"
do_build=1
cuda_runtime=1
make_tar=1
out=""
while (($#)); do
  case "$1" in
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --no-cuda-runtime) cuda_runtime=0; shift ;;
    --no-tar) make_tar=0; shift ;;
    -h|--help) usage ;;
    -*) echo "make_bundle: unknown flag $1" >&2; usage ;;
    *) [[ -z "$out" ]] || usage; out=$1; shift ;;
  esac
done
[[ -n "$out" ]] || usage
command -v patchelf >/dev/null || { echo "make_bundle: patchelf is missing (tools/setup.sh installs it)" >&2; exit 1; }
build_dir=$(cd "$build_dir" && pwd)

if ((do_build)); then
  [[ -f "$build_dir/build.ninja" ]] || { echo "make_bundle: $build_dir is not a configured Ninja build" >&2; exit 1; }
  # The three programs, and every GPU test or bench the build defines.
  mapfile -t gpu_targets < <(ninja -C "$build_dir" -t targets all | sed -n 's/: phony$//p' |
    grep -E '^(backend_conformance_test|device_test|device_bench|mixtral_scale_bench|expert_runner_test|expert_store_test|[A-Za-z0-9_]*(cuda|device|gpu)[A-Za-z0-9_]*test)$' || true)
  nice ninja -C "$build_dir" moe moe-coordinator moe-expert-worker moe_sentencepiece "${gpu_targets[@]}"
fi

# The executables this build tree links, relative to it, from its own ninja file: a
# search of the directory would also find the copies in nested trees (the cpu-only
# build's test, an earlier bundle) and could take the wrong one.
mapfile -t build_exes < <(ninja -C "$build_dir" -t targets all |
  sed -n 's/^\([^:]*\): [A-Z]*_EXECUTABLE_LINKER.*/\1/p')
# An executable of the build by name; empty when not built.
find_exe() {
  local rel
  rel=$(printf '%s\n' "${build_exes[@]}" | awk -F/ -v n="$1" '$NF == n { print; exit }')
  [[ -n "$rel" && -x "$build_dir/$rel" ]] && echo "$build_dir/$rel" || true
}

rm -rf "$out"
mkdir -p "$out/bin" "$out/tests" "$out/lib" "$out/models"
out=$(cd "$out" && pwd)

for prog in moe moe-coordinator moe-expert-worker; do
  path=$(find_exe "$prog")
  [[ -n "$path" ]] || { echo "make_bundle: $prog is not built in $build_dir" >&2; exit 1; }
  cp "$path" "$out/bin/"
done
for b in device_bench mixtral_scale_bench; do
  bench=$(find_exe "$b")
  if [[ -n "$bench" ]]; then cp "$bench" "$out/bin/"; fi
done
# What the Mixtral-scale benchmark reads: the config's shapes and the routing trace.
mkdir -p "$out/bench"
cp "$repo/tools/configs/mixtral-8x7b.json" "$repo/bench/kjv_moe_routing.trace" "$out/bench/"
while IFS= read -r t; do
  if [[ -x "$build_dir/$t" ]]; then cp "$build_dir/$t" "$out/tests/"; fi
done < <(printf '%s\n' "${build_exes[@]}" | grep -E '(^|/)(backend_conformance_test|device_test|[^/]*cuda[^/]*test|expert_runner_test|expert_store_test|[^/]*device[^/]*test|[^/]*gpu[^/]*test)$' | sort)
cp "$repo/tests/integration/cuda_two_process_test.py" "$out/tests/"
plugin="$build_dir/lib/libmoe_sentencepiece.so"
[[ -f "$plugin" ]] || { echo "make_bundle: no sentencepiece plugin at $plugin" >&2; exit 1; }
# lib/ beside bin/: the plugin loader looks in <exe dir>/../lib first.
cp "$plugin" "$out/lib/"
# The CUDA backend is a module, not linked into the programs (common/backend/cuda_module.h);
# found the same way as the plugin.
cuda_module="$build_dir/lib/libmoe_cuda.so"
modules=("$out/lib/libmoe_sentencepiece.so")
if grep -q '^MOE_CUDA:BOOL=ON' "$build_dir/CMakeCache.txt"; then
  [[ -f "$cuda_module" ]] || { echo "make_bundle: a CUDA build without $cuda_module" >&2; exit 1; }
  cp "$cuda_module" "$out/lib/"
  modules+=("$out/lib/libmoe_cuda.so")
fi
cp -r "$repo/models/kjv-moe" "$out/models/"
cp "$repo/tools/bundle/run_gpu_tests.sh" "$out/"
chmod +x "$out/run_gpu_tests.sh"

# Libraries the target provides itself: the C library and loader (their ABI is the
# kernel's contract; copying them breaks more than it fixes) and the NVIDIA driver,
# which must match the kernel module. With --no-cuda-runtime, also CUDA's own.
system_lib() {
  case "$1" in
    linux-vdso.so.*|ld-linux*|libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*) return 0 ;;
    libcuda.so.*|libnvidia-*) return 0 ;;
    libcudart.so.*|libcublas.so.*|libcublasLt.so.*) ((cuda_runtime == 0)) ;;
    *) return 1 ;;
  esac
}

copied=()
elfs=("$out"/bin/* "${modules[@]}")
for t in "$out"/tests/*; do [[ "$t" == *.py ]] || elfs+=("$t"); done
for elf in "${elfs[@]}"; do
  # ldd lists every library the loader would map, transitive ones included.
  while read -r name arrow path _; do
    [[ "$arrow" == "=>" ]] || continue
    if system_lib "$name"; then continue; fi
    if [[ "$path" == "not" ]]; then
      echo "make_bundle: $elf needs $name, which does not resolve here" >&2
      exit 1
    fi
    if [[ ! -e "$out/lib/$name" ]]; then
      cp -L "$path" "$out/lib/$name"
      chmod u+w "$out/lib/$name"
      copied+=("$name <- $(readlink -f "$path")")
    fi
  done < <(ldd "$elf")
done

# Where the bundle does not carry CUDA's runtime, look for it where the toolkit installs it.
runpath_exe='$ORIGIN/../lib'
runpath_lib='$ORIGIN'
if ((cuda_runtime == 0)); then
  runpath_exe+=':/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib'
  runpath_lib+=':/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib'
fi
for elf in "${elfs[@]}"; do
  [[ "$elf" == "$out"/lib/* ]] && continue
  patchelf --set-rpath "$runpath_exe" "$elf"
done
for lib in "$out"/lib/*.so*; do
  patchelf --set-rpath "$runpath_lib" "$lib"
done

{
  echo "moe-offload GPU bundle"
  echo "commit      $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (modified)')"
  echo "made        $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version | head -n 1)"
  echo "source_dir  $repo"
  echo "build_dir   $build_dir"
  echo "cuda_runtime $([[ $cuda_runtime == 1 ]] && echo bundled || echo 'from the target (/usr/local/cuda)')"
  echo
  echo "programs:"; (cd "$out" && ls bin tests | sed 's/^/  /')
  echo "libraries copied:"; printf '  %s\n' "${copied[@]}"
} > "$out/MANIFEST.txt"

if ((make_tar)); then
  XZ_OPT=${XZ_OPT:--T0} tar -C "$(dirname "$out")" -cJf "$out.tar.xz" "$(basename "$out")"
  echo "make_bundle: $out.tar.xz ($(du -h "$out.tar.xz" | cut -f1))"
else
  echo "make_bundle: $out ($(du -sh "$out" | cut -f1))"
fi
