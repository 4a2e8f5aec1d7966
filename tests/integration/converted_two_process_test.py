#!/usr/bin/env python3
"""A converted model (`moe convert`, 4-bit attention / 3-bit HQQ experts) through both
processes: two_process_test.py's CacheSizeTest and TcpWorkerTest run on the converted
directory, so the worker's packed expert blobs and the coordinator's packed attention
must give, for every cache size, the greedy text of in-process `moe generate` on the same
converted model.

  converted_two_process_test.py --model CONVERTED_DIR (other flags as two_process_test.py)
"""

import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import two_process_test as tp  # noqa: E402


def main():
    # two_process_test.main reads config.json; a converted directory keeps its config in
    # manifest.json, so set the module's globals here and run its test classes.
    argv = sys.argv
    model = next(argv[i + 1] for i, a in enumerate(argv) if a == "--model")
    with open(os.path.join(model, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["format"] == "moe-offload", model
    config_path = os.path.join(model, "config.json")
    if os.path.exists(config_path):
        raise SystemExit(f"{model}: a converted directory should have no config.json")
    tp.CONFIG = manifest["config"]
    parser_args = [a for a in argv[1:]]
    # Reuse two_process_test's argument parsing without its config.json read.
    import argparse
    parser = argparse.ArgumentParser()
    for name in ("--model", "--stub-dir", "--worker-bin", "--coordinator-bin", "--moe-bin",
                 "--build-dir"):
        parser.add_argument(name)
    tp.ARGS, rest = parser.parse_known_args(parser_args)
    tp.ARGS.model = os.path.abspath(tp.ARGS.model)
    tp.STUBS = tp.moe_client.load_stubs(tp.ARGS.stub_dir)
    tp.log(f"converted model {tp.ARGS.model}: attention {manifest['attention']}, "
           f"experts bits {manifest['experts']['bits']}")
    suite = unittest.TestSuite()
    loader = unittest.defaultTestLoader
    names = rest or ["CacheSizeTest", "TcpWorkerTest"]
    for name in names:
        suite.addTests(loader.loadTestsFromTestCase(getattr(tp, name)))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
