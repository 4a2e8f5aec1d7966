#!/usr/bin/env python3
"""The official OpenAI Node client (tests/openai) against both real processes.

Starts moe-expert-worker and moe-coordinator (--http-listen, --api-key), computes the
greedy text of `moe generate --temperature 0` in-process, and runs
tests/openai/client_test.mjs with node's test runner against the HTTP API.

  openai_client_test.py --model DIR --worker-bin BIN --coordinator-bin BIN --moe-bin BIN

Exits 77 (ctest SKIPPED) when node is not installed; fails when the pinned client is
missing (tools/setup.sh runs `npm ci` in tests/openai).
"""

import argparse
import os
import shutil
import subprocess
import sys

import http_fleet

HERE = os.path.dirname(os.path.abspath(__file__))
OPENAI_DIR = os.path.join(os.path.dirname(HERE), "openai")
PROMPT = "And the LORD said unto Moses,"
MAX_TOKENS = 24


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--model", "--worker-bin", "--coordinator-bin", "--moe-bin"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        print("SKIPPED: node is not installed (tools/setup.sh installs it)")
        return 77
    if not os.path.isdir(os.path.join(OPENAI_DIR, "node_modules", "openai")):
        print(f"FAILED: the openai package is not installed in {OPENAI_DIR}: run tools/setup.sh "
              "(or `npm ci` there)")
        return 1
    expected = http_fleet.cli_greedy(args.moe_bin, args.model, PROMPT, MAX_TOKENS)
    fleet = http_fleet.HttpFleet("openai", args.worker_bin, args.coordinator_bin, args.model,
                                 coordinator_flags=["--api-key", "test-key", "--model-name", "kjv"])
    try:
        env = dict(os.environ, MOE_BASE_URL=fleet.base + "/v1", MOE_API_KEY="test-key",
                   MOE_MODEL="kjv", MOE_PROMPT=PROMPT, MOE_MAX_TOKENS=str(MAX_TOKENS),
                   MOE_EXPECTED=expected)
        run = subprocess.run([node, "--test", "--test-reporter=spec", "client_test.mjs"],
                             cwd=OPENAI_DIR, env=env, timeout=240)
        if run.returncode != 0:
            print(f"coordinator output:\n{fleet.coordinator.output()}", file=sys.stderr)
        return run.returncode
    finally:
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
