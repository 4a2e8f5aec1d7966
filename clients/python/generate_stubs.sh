#!/bin/sh
# Generates the Python messages and gRPC stubs of moe-offload's contracts into OUT_DIR:
#   OUT_DIR/moe/v1/{generation,expert_worker}_pb2{,_grpc}.py   (import moe.v1.generation_pb2)
#   OUT_DIR/health_pb2{,_grpc}.py                              (grpc.health.v1, see below)
#
#   clients/python/generate_stubs.sh OUT_DIR
#
# Uses Debian's protoc and grpc_python_plugin (packages protobuf-compiler and
# python3-grpcio / protobuf-compiler-grpc); override with PROTOC=... GRPC_PYTHON_PLUGIN=...
# The health contract is generated as a top-level module (health_pb2), not under
# grpc/health/v1/: the name `grpc` belongs to the grpcio package, so a generated
# grpc/health/v1/ directory could never be imported. The wire names
# (grpc.health.v1.Health/Check) are unchanged.
set -eu
if [ $# -ne 1 ]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
protoc=${PROTOC:-$(command -v protoc || echo /usr/bin/protoc)}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || echo /usr/bin/grpc_python_plugin)}
for tool in "$protoc" "$plugin"; do
  if [ ! -x "$tool" ]; then
    echo "$0: $tool not found (apt-get install protobuf-compiler protobuf-compiler-grpc)" >&2
    exit 1
  fi
done
mkdir -p "$out"
"$protoc" -I "$root/proto" --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$plugin" "$root"/proto/moe/v1/*.proto
"$protoc" -I "$root/proto/grpc/health/v1" --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$plugin" "$root/proto/grpc/health/v1/health.proto"
