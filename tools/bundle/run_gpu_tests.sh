#!/usr/bin/env bash
# Runs, from an unpacked moe-offload bundle (tools/make_bundle.sh), every GPU test it
# holds, the two-process CUDA test and the device bench, and writes the logs under $OUT
# (else ./gpu-logs): summary.txt, env.log, tests.log, integration.log, bench.log (few
# files: the device tool brings back at most 8). Exit 0 when nothing failed; a test that
# skips (no GPU) counts as skipped, not passed.
#
#   ./run_gpu_tests.sh [--filter REGEX]   (REGEX picks test binaries by name)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
logs=${OUT:-$here/gpu-logs}
filter='.'
[[ "${1:-}" == "--filter" ]] && filter=$2
mkdir -p "$logs"
summary="$logs/summary.txt"
: > "$summary"
failed=0

note() { echo "$*" | tee -a "$summary"; }

# Only the driver's directory on the library path: everything else comes from the
# bundle's RUNPATH. libcuda.so.1 is dlopen'ed by the CUDA runtime, so it must be findable.
driver_dir=""
if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  ldpath=${LD_LIBRARY_PATH:-}
  for d in ${ldpath//:/ } /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
           /usr/lib/x86_64-linux-gnu /usr/local/cuda/compat; do
    if [[ -e "$d/libcuda.so.1" ]]; then driver_dir=$d; break; fi
  done
fi
export LD_LIBRARY_PATH=$driver_dir
export OMP_WAIT_POLICY=PASSIVE

# The test binaries find the model through the source directory compiled into them
# (MOE_SOURCE_DIR): point that path at this bundle when the machine lacks it.
source_dir=$(sed -n 's/^source_dir  //p' "$here/MANIFEST.txt")
if [[ -n "$source_dir" && ! -e "$source_dir" ]]; then
  mkdir -p "$(dirname "$source_dir")" 2>/dev/null && ln -s "$here" "$source_dir" 2>/dev/null &&
    echo "linked $source_dir -> $here (the tests' MOE_SOURCE_DIR)" >> "$logs/env.log"
fi

# Tests of the converted 4/3 model read it from the build tree (MOE_BINARY_DIR/converted,
# made by a ctest fixture): convert it there when the machine lacks it.
build_dir=$(sed -n 's/^build_dir   //p' "$here/MANIFEST.txt")
if [[ -n "$build_dir" && ! -e "$build_dir/converted/hqq_4_3/manifest.json" ]]; then
  mkdir -p "$build_dir/converted" 2>/dev/null &&
    "$here/bin/moe" convert --in "$here/models/kjv-moe" --out "$build_dir/converted/hqq_4_3" \
      --attn-bits 4 --expert-bits 3 --method hqq --progress=false >> "$logs/env.log" 2>&1 &&
    echo "converted the 4/3 test model into $build_dir/converted" >> "$logs/env.log"
fi

{
  echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -a)"
  cat "$here/MANIFEST.txt"
  echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "== nvidia-smi"; nvidia-smi 2>&1 || true
  echo "== moe info"; "$here/bin/moe" info --model "$here/models/kjv-moe" 2>&1
  echo "== libraries not resolved inside the bundle"
  for f in "$here"/bin/* "$here"/tests/* "$here"/lib/libmoe_cuda.so; do
    [[ -e "$f" ]] || continue
    [[ "$f" == *.py ]] && continue
    ldd "$f" | grep '=>' | grep -v -e "$here/lib/" -e "$here/bin/../lib/" -e "$here/tests/../lib/" |
      sed "s|^|$(basename "$f"): |"
  done
} >> "$logs/env.log" 2>&1

: > "$logs/tests.log"
ran=0
for t in "$here"/tests/*; do
  name=$(basename "$t")
  [[ "$t" == *.py || ! -x "$t" ]] && continue
  [[ "$name" =~ $filter ]] || continue
  ran=$((ran + 1))
  echo "===== $name" >> "$logs/tests.log"
  timeout 900 "$t" --gtest_color=no > "$logs/.one.log" 2>&1
  rc=$?
  cat "$logs/.one.log" >> "$logs/tests.log"
  skipped=$(grep -c '^\[  SKIPPED \]' "$logs/.one.log" || true)
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$logs/.one.log")
  if ((rc != 0)); then
    note "FAIL  $name (exit $rc)"
    failed=1
  else
    note "ok    $name: ${passed:-?} passed, $skipped skipped (SKIPPED lines include the summary)"
  fi
done
rm -f "$logs/.one.log"
((ran > 0)) || note "NOTE  no GPU test binaries in this bundle (none were built)"

if [[ "cuda_two_process_test" =~ $filter ]]; then
  python3 "$here/tests/cuda_two_process_test.py" --model "$here/models/kjv-moe" \
    --worker-bin "$here/bin/moe-expert-worker" --coordinator-bin "$here/bin/moe-coordinator" \
    --moe-bin "$here/bin/moe" > "$logs/integration.log" 2>&1
  rc=$?
  case $rc in
    0) note "ok    cuda_two_process_test" ;;
    77) note "SKIP  cuda_two_process_test: $(grep -m1 SKIPPED "$logs/integration.log")" ;;
    *) note "FAIL  cuda_two_process_test (exit $rc)"; failed=1 ;;
  esac
fi

if [[ -x "$here/bin/device_bench" && "device_bench" =~ $filter ]]; then
  timeout 900 "$here/bin/device_bench" > "$logs/bench.log" 2>&1
  rc=$?
  if ((rc == 0)); then note "ok    device_bench (bench.log)"; else note "FAIL  device_bench (exit $rc)"; failed=1; fi
fi

note "$( ((failed)) && echo 'SOME FAILED' || echo 'ALL OK') (logs in $logs)"
exit $failed
