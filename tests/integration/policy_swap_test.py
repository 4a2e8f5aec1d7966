#!/usr/bin/env python3
"""Live cache policy swaps and metrics across the two processes.

Eight streams run against a coordinator while the worker's cache policy and size are
changed twice through SetCachePolicy (the coordinator is not touched): every stream must
still give the in-process text, GetStats and both /metrics endpoints must show the
change, and each stream's last response must carry its expert figures. Same arguments
as two_process_test.py, whose process helpers this reuses.
"""

import re
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

import grpc

import two_process_test as tp

STREAMS = 8
TOKENS = 320  # long enough to outlast both swaps with shared steps and the activation ring


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        return reply.read().decode()


def metric(text, name_and_labels):
    m = re.search("^" + re.escape(name_and_labels) + r" (\S+)$", text, re.MULTILINE)
    if m is None:
        raise AssertionError(f"{name_and_labels} not in /metrics:\n{text}")
    return float(m.group(1))


def set_policy(address, policy="", cache_per_layer=0):
    with grpc.insecure_channel(address) as channel:
        stub = tp.STUBS.expert_worker_pb2_grpc.ExpertWorkerStub(channel)
        return stub.SetCachePolicy(tp.STUBS.expert_worker_pb2.SetCachePolicyRequest(
            policy=policy, cache_per_layer=cache_per_layer), timeout=30)


class PolicySwapTest(tp.TimedTestCase):

    def test_swap_during_eight_streams_loses_nothing_and_shows_in_stats(self):
        fleet = self.make_fleet("swap")
        expected = tp.reference_text(max_new_tokens=TOKENS)
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker_metrics, coordinator_metrics = tp.free_tcp_port(), tp.free_tcp_port()
        worker = fleet.start("worker", [
            tp.ARGS.worker_bin, "--model", tp.ARGS.model, "--listen", worker_addr,
            "--cache-per-layer", "2", "--link-gbps", "16",
            "--metrics-listen", f"127.0.0.1:{worker_metrics}"])
        fleet.wait_serving(worker, worker_addr, "")
        fleet.coordinator(addr, worker_addr, extra=[
            "--lookahead", "1", "--max-requests", str(STREAMS),
            "--metrics-listen", f"127.0.0.1:{coordinator_metrics}"])

        results, lasts, errors = [None] * STREAMS, [None] * STREAMS, []

        def client(i):
            try:
                text, last, _ = tp.py_generate(addr, tp.request(max_new_tokens=TOKENS), timeout=240)
                results[i], lasts[i] = text + "\n", last
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(STREAMS)]
        for t in threads:
            t.start()
        # Swap once the streams are decoding, and again a little later.
        calls0 = tp.worker_stats(worker_addr).run_experts_calls
        tp.wait_for(lambda: tp.worker_stats(worker_addr).run_experts_calls > calls0 + 40, 60,
                    "the streams to be decoding")
        reply = set_policy(worker_addr, "lfu-decay", 3)
        self.assertEqual((reply.policy, reply.cache_per_layer), ("lfu-decay", 3))
        calls1 = tp.worker_stats(worker_addr).run_experts_calls
        tp.wait_for(lambda: tp.worker_stats(worker_addr).run_experts_calls > calls1 + 40, 60,
                    "the streams to go on")
        # The C++ client of the same RPC.
        run = subprocess.run([tp.ARGS.moe_bin, "set-policy", "--worker", worker_addr,
                              "--policy", "fifo", "--cache-per-layer", "1"],
                             capture_output=True, env=tp.ENV, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr.decode())
        self.assertIn("policy fifo, 1 experts per layer", run.stdout.decode())
        still_running = any(t.is_alive() for t in threads)
        for t in threads:
            t.join(timeout=240)
        self.assertFalse(any(t.is_alive() for t in threads), "a client hangs")
        self.assertEqual(errors, [])
        self.assertTrue(still_running, "the streams ended before the second swap: lengthen them")
        self.assertEqual(results, [expected] * STREAMS)

        stats = tp.worker_stats(worker_addr)
        self.assertEqual((stats.policy, stats.cache_per_layer), ("fifo", 1))
        self.assertEqual((stats.policy_changes, stats.resizes), (2, 2))
        self.assertGreater(stats.total.prefetch_loads, 0)
        self.assertGreater(stats.total.hits + stats.total.misses, 0)
        self.assertEqual(len(stats.layers), tp.CONFIG["num_hidden_layers"])
        for last in lasts:
            s = last.stats
            self.assertGreater(s.expert_cache_hits + s.expert_cache_misses, 0)
            self.assertGreater(s.expert_rpc_s, 0)
            self.assertGreater(s.guess_recall, 0.3)

        w = scrape(worker_metrics)
        self.assertEqual(metric(w, "moe_worker_policy_changes_total"), 2)
        self.assertEqual(metric(w, 'moe_worker_cache_policy_info{policy="fifo"}'), 1)
        self.assertEqual(metric(w, "moe_worker_cache_slots_per_layer"), 1)
        self.assertEqual(sum(metric(w, f'moe_worker_expert_hits_total{{layer="{layer}"}}')
                             for layer in range(tp.CONFIG["num_hidden_layers"])), stats.total.hits)
        for name in ("hit_ratio", "prefetch_recall", "prefetch_precision"):
            self.assertTrue(0 < metric(w, f'moe_worker_{name}{{layer="1"}}') <= 1, name)  # layer 0 is never guessed
        self.assertNotIn(":", "".join(line.split(" ")[0] for line in w.splitlines()
                                      if not line.startswith("#")).split("{")[0])
        c = scrape(coordinator_metrics)
        self.assertEqual(metric(c, 'moe_coordinator_requests_total{outcome="ok"}'), STREAMS)
        self.assertEqual(metric(c, "moe_coordinator_generated_tokens_total"), STREAMS * TOKENS)
        self.assertGreater(metric(c, "moe_coordinator_decode_tokens_per_second"), 0)
        self.assertGreater(metric(c, "moe_coordinator_guess_recall"), 0.3)
        self.assertEqual(metric(c, "moe_coordinator_worker_up"), 1)
        # On a unix socket every expert call went through the activation ring.
        self.assertGreater(metric(c, "moe_coordinator_expert_calls_total"), 0)
        self.assertEqual(metric(c, "moe_coordinator_expert_ring_calls_total"),
                         metric(c, "moe_coordinator_expert_calls_total"))
        self.assertEqual(stats.ring_calls, stats.run_experts_calls)
        # Every stream has ended, so every KV cache has been freed.
        self.assertEqual(metric(c, "moe_coordinator_kv_caches"), 0)
        self.assertEqual(metric(c, "moe_coordinator_kv_cache_bytes"), 0)

    def test_bad_policy_requests_change_nothing(self):
        fleet = self.make_fleet("badpolicy")
        worker_addr = fleet.sock("worker")
        fleet.worker(worker_addr, cache_per_layer=2)
        for policy, size, fragment in (("belady", 0, "belady"), ("lru", 99, "cache_per_layer 99")):
            with self.subTest(policy=policy, size=size):
                with self.assertRaises(grpc.RpcError) as raised:
                    set_policy(worker_addr, policy, size)
                self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn(fragment, raised.exception.details())
        stats = tp.worker_stats(worker_addr)
        self.assertEqual((stats.policy, stats.cache_per_layer, stats.policy_changes), ("lru", 2, 0))


if __name__ == "__main__":
    tp.main()
