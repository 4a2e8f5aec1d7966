#!/usr/bin/env python3
"""A second model family through both processes: the Qwen3-MoE fixture (models/kjv-qwen3,
16 experts, top-4, per-head q/k norms) served by a real expert worker and coordinator must
give, through the generated Python client and the C++ client, the greedy text of
in-process `moe generate` on the same model, with 2 experts cached per layer and with
every expert resident.

  family_two_process_test.py --model DIR (other flags as two_process_test.py)
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import two_process_test as tp  # noqa: E402


def num_experts():
    # Mixtral names the count num_local_experts; Qwen and OLMoE num_experts.
    return tp.CONFIG.get("num_local_experts", tp.CONFIG.get("num_experts"))


class FamilyCacheTest(tp.TimedTestCase):
    """Greedy text at 2 slots per layer and with all experts resident."""

    def test_two_slots_and_all_resident_give_the_in_process_text(self):
        fleet = self.make_fleet("family")
        expected = tp.reference_text()
        self.assertGreater(len(expected.strip()), 0)
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker = fleet.worker(worker_addr, cache_per_layer=2)
        coordinator = fleet.coordinator(addr, worker_addr)
        for k in (2, num_experts()):
            with self.subTest(cache_per_layer=k):
                if k != 2:
                    worker.stop()
                    tp.wait_for(lambda: tp.health(addr, "moe.v1.Generation") == "NOT_SERVING", 5,
                                "the coordinator to notice the worker is gone")
                    worker = fleet.worker(worker_addr, cache_per_layer=k)
                    fleet.wait_serving(coordinator, addr, "moe.v1.Generation", timeout=10)
                stats = tp.worker_stats(worker_addr)
                self.assertEqual(stats.cache_per_layer, k)
                text, last, ids = tp.py_generate(addr)
                self.assertEqual(text + "\n", expected)
                self.assertEqual(last.stats.generated_tokens, len(ids))
                self.assertEqual(tp.cpp_generate(addr), expected)
                after = tp.worker_stats(worker_addr)
                self.assertGreater(after.run_experts_calls, stats.run_experts_calls)
        self.assertTrue(coordinator.alive())


def main():
    rest = tp.parse_flags()
    suite = unittest.TestSuite()
    for name in rest or ["FamilyCacheTest"]:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(globals()[name]))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
