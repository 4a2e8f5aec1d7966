#!/usr/bin/env bash
# Installs every build, test and tooling dependency of moe-offload from Debian 12's
# packages. Idempotent: packages already present are skipped by apt. Nothing else is
# downloaded, at setup or at run time.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config git
  # the GPU bundle (tools/make_bundle.sh): RUNPATHs of the copied binaries
  patchelf xz-utils
  # libraries
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev libsentencepiece-dev nlohmann-json3-dev libopenblas-dev libopenblas0-openmp
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev
  # the independent PyTorch reference, the fixture's trainer, the python client
  python3 python3-numpy python3-torch python3-sentencepiece python3-grpcio
  python3-protobuf python3-matplotlib
  # the fixture's training text (public-domain King James Bible)
  bible-kjv
  # the HTTP API (cpp-httplib); its tests: a Prometheus text parser, and the chat page
  # in headless Chromium driven by Selenium
  libcpp-httplib-dev python3-prometheus-client chromium chromium-driver python3-selenium
  # tokenizer.json (regex pre-tokenizers, Unicode normalization) and the generator of the
  # chat-template test data (tools/make_chat_template_testdata.py)
  libpcre2-dev libunistring-dev python3-jinja2
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The OpenMP build of OpenBLAS: the engine's own kernels use OpenMP, and one thread
# runtime in a process avoids two spinning thread pools fighting over the cores.
arch_dir=/usr/lib/x86_64-linux-gnu
for alt in libblas.so.3 libopenblas.so.0 liblapack.so.3; do
  target="$arch_dir/openblas-openmp/$alt"
  if [[ -e "$target" ]] && update-alternatives --query "$alt-x86_64-linux-gnu" >/dev/null 2>&1; then
    current=$(readlink -f "$arch_dir/$alt" || true)
    if [[ "$current" != "$target" ]]; then
      $SUDO update-alternatives --set "$alt-x86_64-linux-gnu" "$target"
    fi
  fi
done

# The official OpenAI client for Node (tests/openai), pinned by its package-lock.json.
# Node and npm come from Debian unless a Node with npm is installed already.
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(cd "$repo_dir/tests/openai" && npm ci --no-audit --no-fund --loglevel=error)
