#!/usr/bin/env bash
# Configures and builds moe-offload (Release, Ninja) into build/. Extra arguments go to
# the CMake configure step, e.g. tools/build.sh -DMOE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$(nproc)"
