#!/usr/bin/env python3
"""Resilience of the two-process deployment, with real processes killed (issue 7).

  resilience_test.py --model DIR --stub-dir DIR --worker-bin BIN --coordinator-bin BIN
                     --moe-bin BIN [--build-dir DIR] [unittest arguments]

Same arguments, helpers and process hygiene as two_process_test.py (every process gets
OMP_WAIT_POLICY=PASSIVE, OMP_NUM_THREADS=1 and dies with the test). Streams are made
slow on purpose where a kill or a signal must land in the middle of one: a worker with
one expert slot per layer behind a slow link model (--link-gbps) decodes ~8 tokens/s.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import two_process_test as tp  # noqa: E402
from two_process_test import TimedTestCase, health, log, wait_for  # noqa: E402

SLOW_WORKER = ["--cache-per-layer", "1", "--link-gbps", "0.1"]


def stubs():
    return tp.STUBS


def start_worker(fleet, address, extra=(), wait=True):
    p = fleet.start("worker", [tp.ARGS.worker_bin, "--model", tp.ARGS.model, "--listen", address,
                               *extra])
    if wait:
        fleet.wait_serving(p, address, "")
    return p


class Stream:
    """One Generate stream on its own thread: token ids, the last response, the error."""

    def __init__(self, address, req, timeout=120):
        self.ids, self.last, self.error, self.first = [], None, None, threading.Event()
        self.ended_at = None
        self._thread = threading.Thread(target=self._run, args=(address, req, timeout), daemon=True)
        self._thread.start()

    def _run(self, address, req, timeout):
        try:
            with grpc.insecure_channel(address) as channel:
                stub = stubs().generation_pb2_grpc.GenerationStub(channel)
                for response in stub.Generate(req, timeout=timeout):
                    self.ids.extend(response.token_ids)
                    if len(self.ids) >= 3:
                        self.first.set()
                    if response.finish_reason:
                        self.last = response
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.ended_at = time.monotonic()
            self.first.set()

    def join(self, timeout):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("a stream hangs")
        return self


def streams_requests(tokens):
    """Greedy and seeded-sampling requests, two prompts."""
    return [tp.request(max_new_tokens=tokens),
            tp.request(prompt="Blessed are the", max_new_tokens=tokens, temperature=0.9, seed=7),
            tp.request(prompt="In the beginning", max_new_tokens=tokens, temperature=0.7, seed=11)]


class WorkerLossTest(TimedTestCase):
    """(1) kill -9 of the worker while streams run."""

    def test_streams_wait_for_a_restarted_worker_and_give_identical_tokens(self):
        fleet = self.make_fleet("loss")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker = start_worker(fleet, worker_addr, SLOW_WORKER)
        coordinator = fleet.coordinator(addr, worker_addr, extra=["--worker-grace-s", "30"])
        tokens = 24
        undisturbed = [Stream(addr, r) for r in streams_requests(tokens)]
        for s in undisturbed:
            s.join(120)
            self.assertIsNone(s.error)
            self.assertEqual(len(s.ids), tokens)

        disturbed = [Stream(addr, r) for r in streams_requests(tokens)]
        for s in disturbed:
            self.assertTrue(s.first.wait(60))
        worker.stop(signal.SIGKILL)
        killed = time.monotonic()
        self.assertTrue(all(s.ended_at is None for s in disturbed), "the streams ended too soon")
        wait_for(lambda: health(addr, "moe.v1.Generation") == "NOT_SERVING", 5,
                 "the coordinator to report NOT_SERVING")
        self.assertTrue(coordinator.alive())
        time.sleep(max(0.0, 1.5 - (time.monotonic() - killed)))
        # The second route to a policy swap: the new worker has another policy and size.
        start_worker(fleet, worker_addr, ["--policy", "lfu", "--cache-per-layer", "3",
                                          "--link-gbps", "0.1"], wait=False)
        for s in disturbed:
            s.join(120)
        for before, after in zip(undisturbed, disturbed):
            self.assertIsNone(after.error, after.error and after.error.details())
            self.assertEqual(after.ids, before.ids)
            self.assertEqual(after.last.finish_reason, before.last.finish_reason)
        self.assertEqual(tp.worker_stats(worker_addr).policy, "lfu")
        self.assertIn("answers again", coordinator.output())
        self.assertEqual(health(addr, "moe.v1.Generation"), "SERVING")

    def test_past_the_grace_streams_end_unavailable_and_the_coordinator_recovers(self):
        fleet = self.make_fleet("grace")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker = start_worker(fleet, worker_addr, SLOW_WORKER)
        coordinator = fleet.coordinator(addr, worker_addr, extra=["--worker-grace-s", "2"])
        running = [Stream(addr, r) for r in streams_requests(200)]
        for s in running:
            self.assertTrue(s.first.wait(60))
        worker.stop(signal.SIGKILL)
        killed = time.monotonic()
        for s in running:
            s.join(30)
            self.assertIsNotNone(s.error, "a stream finished without a worker")
            self.assertEqual(s.error.code(), grpc.StatusCode.UNAVAILABLE, s.error.details())
            self.assertIn("grace", s.error.details())
            waited = s.ended_at - killed
            self.assertGreater(waited, 1.5)
            self.assertLess(waited, 6.0)
        log(f"past the grace: streams ended {max(s.ended_at for s in running) - killed:.2f} s "
            "after the kill")
        self.assertTrue(coordinator.alive())
        self.assertEqual(health(addr, "moe.v1.Generation"), "NOT_SERVING")
        with self.assertRaises(grpc.RpcError) as caught:
            tp.py_generate(addr, timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)

        start_worker(fleet, worker_addr, ["--cache-per-layer", "8"])
        fleet.wait_serving(coordinator, addr, "moe.v1.Generation", timeout=10)
        self.assertEqual(tp.py_generate(addr)[0] + "\n", tp.reference_text())


    def test_a_hung_worker_ends_streams_within_the_grace_with_unavailable(self):
        """Issue 18, item 7: a worker stopped with SIGSTOP used to stall streams past the
        grace and end them DEADLINE_EXCEEDED after 70 s."""
        fleet = self.make_fleet("hung")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker = start_worker(fleet, worker_addr, SLOW_WORKER)
        coordinator = fleet.coordinator(addr, worker_addr, extra=["--worker-grace-s", "3"])
        running = [Stream(addr, r) for r in streams_requests(200)]
        for s in running:
            self.assertTrue(s.first.wait(60))
        os.kill(worker.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            for s in running:
                s.join(30)
                self.assertIsNotNone(s.error, "a stream finished without a worker")
                self.assertEqual(s.error.code(), grpc.StatusCode.UNAVAILABLE, s.error.details())
                waited = s.ended_at - stopped
                self.assertLess(waited, 3.0 + 2.0)
            log(f"hung worker: streams ended {max(s.ended_at for s in running) - stopped:.2f} s "
                "after SIGSTOP (grace 3 s)")
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        self.assertTrue(coordinator.alive())
        # The worker answers again: so does the coordinator, with the same text.
        fleet.wait_serving(coordinator, addr, "moe.v1.Generation", timeout=15)
        self.assertEqual(tp.py_generate(addr)[0] + "\n", tp.reference_text())


def arena_mappings(pid):
    with open(f"/proc/{pid}/maps") as f:
        return sum("moe-activation-arena" in line for line in f)


class CoordinatorLossTest(TimedTestCase):
    """(2) kill -9 of the coordinator: the worker unmaps its arena; a new one attaches."""

    def test_worker_releases_a_dead_coordinators_arena_and_serves_the_next(self):
        fleet = self.make_fleet("closs")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker = start_worker(fleet, worker_addr, ["--cache-per-layer", "8"])
        first = fleet.coordinator(addr, worker_addr)
        self.assertEqual(tp.py_generate(addr)[0] + "\n", tp.reference_text())
        stats = tp.worker_stats(worker_addr)
        self.assertEqual(stats.arena_owner_pid, first.pid)
        self.assertGreater(stats.arena_bytes, 0)
        self.assertEqual(arena_mappings(worker.pid), 1)

        first.stop(signal.SIGKILL)
        start = time.monotonic()
        wait_for(lambda: tp.worker_stats(worker_addr).arena_owner_pid == 0, 5,
                 "the worker to release the dead coordinator's arena")
        log(f"coordinator loss: arena released {time.monotonic() - start:.2f} s after the kill")
        self.assertEqual(tp.worker_stats(worker_addr).arenas_released, 1)
        self.assertEqual(arena_mappings(worker.pid), 0, "the memory is still mapped")
        self.assertIn(f"coordinator pid {first.pid} exited", worker.output())

        second = fleet.coordinator(addr, worker_addr)
        self.assertEqual(tp.py_generate(addr)[0] + "\n", tp.reference_text())
        self.assertEqual(tp.worker_stats(worker_addr).arena_owner_pid, second.pid)
        self.assertTrue(worker.alive())


class RingTest(TimedTestCase):
    """Issue 15, point 3: the activation ring (RunExperts without an RPC per layer) under
    kill -9 of either process. A call in the ring learns of a dead worker from a pidfd,
    and is then handled as an RPC's UNAVAILABLE: wait in the grace, attach, redo."""

    def test_calls_go_through_the_ring_and_a_killed_worker_mid_call_loses_no_token(self):
        fleet = self.make_fleet("ringw")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker = start_worker(fleet, worker_addr, SLOW_WORKER)
        coordinator = fleet.coordinator(addr, worker_addr, extra=["--worker-grace-s", "30"])
        tokens = 16
        undisturbed = [Stream(addr, r) for r in streams_requests(tokens)]
        for s in undisturbed:
            s.join(120)
            self.assertIsNone(s.error)
        stats = tp.worker_stats(worker_addr)
        self.assertTrue(stats.ring_served)
        self.assertGreater(stats.ring_calls, 0)
        self.assertEqual(stats.ring_calls, stats.run_experts_calls, "a call went by RPC")
        self.assertIn("calls through the activation ring", coordinator.output())

        disturbed = [Stream(addr, r) for r in streams_requests(tokens)]
        for s in disturbed:
            self.assertTrue(s.first.wait(60))
        # The slow link model keeps each call in the worker for tens of ms: the kill
        # lands with a call in the ring.
        worker.stop(signal.SIGKILL)
        try:
            wait_for(lambda: "with a call in the ring" in coordinator.output(), 10,
                     "the coordinator to notice the worker's death from the ring")
        except AssertionError:
            print(coordinator.output()[-3000:])
            raise
        replacement = start_worker(fleet, worker_addr, SLOW_WORKER, wait=False)
        for s in disturbed:
            s.join(120)
        for before, after in zip(undisturbed, disturbed):
            self.assertIsNone(after.error, after.error and after.error.details())
            self.assertEqual(after.ids, before.ids)
        stats = tp.worker_stats(worker_addr)
        self.assertTrue(stats.ring_served, "the new worker was not offered the ring again")
        self.assertGreater(stats.ring_calls, 0)
        self.assertTrue(replacement.alive())

    def test_a_coordinator_killed_mid_call_leaves_the_worker_serving_the_next_ring(self):
        fleet = self.make_fleet("ringc")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker = start_worker(fleet, worker_addr, SLOW_WORKER)
        first = fleet.coordinator(addr, worker_addr)
        streams = [Stream(addr, r) for r in streams_requests(64)]
        for s in streams:
            self.assertTrue(s.first.wait(60))
        self.assertTrue(tp.worker_stats(worker_addr).ring_served)
        first.stop(signal.SIGKILL)
        wait_for(lambda: tp.worker_stats(worker_addr).arena_owner_pid == 0, 5,
                 "the worker to release the dead coordinator's arena and ring")
        stats = tp.worker_stats(worker_addr)
        self.assertFalse(stats.ring_served)
        self.assertEqual(arena_mappings(worker.pid), 0, "the memory is still mapped")
        calls_before = stats.ring_calls

        fleet.coordinator(addr, worker_addr)
        self.assertEqual(len(tp.py_generate(addr, tp.request(max_new_tokens=8))[2]), 8)
        stats = tp.worker_stats(worker_addr)
        self.assertTrue(stats.ring_served)
        self.assertGreater(stats.ring_calls, calls_before)
        self.assertTrue(worker.alive())


class ShutdownTest(TimedTestCase):
    """(7) SIGTERM: refuse new requests, drain in-flight ones within the grace, exit 0."""

    def test_sigterm_lets_a_stream_finish_and_exits_zero(self):
        fleet = self.make_fleet("drain")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        start_worker(fleet, worker_addr, SLOW_WORKER)
        coordinator = fleet.coordinator(addr, worker_addr, extra=["--shutdown-grace-s", "30"])
        stream = Stream(addr, tp.request(max_new_tokens=20))
        self.assertTrue(stream.first.wait(60))
        os.kill(coordinator.pid, signal.SIGTERM)
        wait_for(lambda: health(addr, "moe.v1.Generation") != "SERVING", 5,
                 "the coordinator to stop serving")
        with self.assertRaises(grpc.RpcError) as caught:
            tp.py_generate(addr, timeout=5)
        self.assertIn(caught.exception.code(), (grpc.StatusCode.UNAVAILABLE,))
        stream.join(60)
        self.assertIsNone(stream.error, stream.error and stream.error.details())
        self.assertEqual(len(stream.ids), 20)
        self.assertEqual(stream.last.finish_reason, stubs().generation_pb2.FINISH_REASON_LENGTH)
        self.assertEqual(coordinator.popen.wait(timeout=30), 0, coordinator.output())

    def test_sigterm_ends_a_stream_past_the_grace_with_unavailable_and_exits_zero(self):
        fleet = self.make_fleet("drain2")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker = start_worker(fleet, worker_addr, SLOW_WORKER)
        coordinator = fleet.coordinator(addr, worker_addr, extra=["--shutdown-grace-s", "2"])
        stream = Stream(addr, tp.request(max_new_tokens=500))
        self.assertTrue(stream.first.wait(60))
        signalled = time.monotonic()
        os.kill(coordinator.pid, signal.SIGTERM)
        stream.join(30)
        self.assertIsNotNone(stream.error)
        self.assertEqual(stream.error.code(), grpc.StatusCode.UNAVAILABLE, stream.error.details())
        self.assertIn("shut down", stream.error.details())
        self.assertEqual(coordinator.popen.wait(timeout=10), 0, coordinator.output())
        exited = time.monotonic() - signalled
        log(f"drain past the grace: exited {exited:.2f} s after SIGTERM (grace 2 s)")
        self.assertLess(exited, 4.0)
        self.assertFalse(os.path.exists(addr[len("unix:"):]))
        # The worker drains too.
        self.assertEqual(worker.stop(signal.SIGTERM), 0)


class HostileInputTest(TimedTestCase):
    """(5) oversized messages and handles the worker cannot map."""

    @classmethod
    def setUpClass(cls):
        fleet = cls.fleet = cls.make_fleet("hostile")
        cls.worker_addr, cls.addr = fleet.sock("worker"), fleet.sock("moe")
        cls.worker = start_worker(fleet, cls.worker_addr,
                                  ["--cache-per-layer", "8", "--max-message-bytes", "1048576"])
        cls.coordinator = fleet.coordinator(cls.addr, cls.worker_addr,
                                            extra=["--max-message-bytes", "65536"])

    def worker_call(self, method, message):
        with grpc.insecure_channel(self.worker_addr,
                                   options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = stubs().expert_worker_pb2_grpc.ExpertWorkerStub(channel)
            return getattr(stub, method)(message, timeout=10)

    def assert_still_serving(self):
        self.assertEqual(tp.py_generate(self.addr)[0] + "\n", tp.reference_text())

    def test_oversized_messages_are_refused_by_the_configured_limit(self):
        big = tp.request(prompt="And " * 40000)  # ~160 KB > 64 KiB
        with grpc.insecure_channel(self.addr) as channel:
            stub = stubs().generation_pb2_grpc.GenerationStub(channel)
            with self.assertRaises(grpc.RpcError) as caught:
                list(stub.Generate(big, timeout=10))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        pb = stubs().expert_worker_pb2
        with self.assertRaises(grpc.RpcError) as caught:
            self.worker_call("RunExperts", pb.RunExpertsRequest(
                layer=0, num_tokens=2048, experts_per_token=1, expert_ids=[0] * 2048,
                weights=[1.0] * 2048, input_inline=bytes(2048 * 256 * 4)))  # 2 MiB > 1 MiB
        self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertTrue(self.worker.alive() and self.coordinator.alive())
        self.assert_still_serving()

    def test_arena_handles_the_worker_cannot_map_are_refused_with_the_reason(self):
        """Issue 18, item 2: only a sealed memfd arena of the announced size and full id is
        mapped; the worker's own files, unsealed memfds and empty ids are refused."""
        import fcntl
        self.assert_still_serving()  # the coordinator's arena is attached
        pb = stubs().expert_worker_pb2
        size = 1 << 20
        arena_id = "f" * 32
        memfd = os.memfd_create("not-an-arena")
        os.ftruncate(memfd, 64 + size)
        small = os.memfd_create("too-small")
        os.ftruncate(small, 100)
        # Named like an arena but not sealed: a truncation would SIGBUS the worker.
        unsealed = os.memfd_create("moe-activation-arena")
        os.ftruncate(unsealed, 64 + size)
        os.pwrite(unsealed, arena_id.encode(), 0)
        # A proper sealed arena, but of another size and carrying another id.
        sealed = os.memfd_create("moe-activation-arena", os.MFD_ALLOW_SEALING)
        os.ftruncate(sealed, 64 + size)
        os.pwrite(sealed, ("e" * 32).encode(), 0)
        fcntl.fcntl(sealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
        log_file = open(os.path.join(self.fleet.dir, "some.log"), "w")
        log_file.truncate(64 + size)
        for fd in (memfd, small, unsealed, sealed):
            self.addCleanup(os.close, fd)
        self.addCleanup(log_file.close)
        me = os.getpid()
        cases = [
            ("no such fd", dict(pid=me, fd=987654), size, arena_id,
             grpc.StatusCode.FAILED_PRECONDITION, f"/proc/{me}/fd/987654"),
            ("no such process", dict(pid=4194300, fd=3), size, arena_id,
             grpc.StatusCode.FAILED_PRECONDITION, "no process 4194300"),
            ("another memfd", dict(pid=me, fd=small), size, arena_id,
             grpc.StatusCode.FAILED_PRECONDITION, "not an activation arena memfd"),
            ("a regular file", dict(pid=me, fd=log_file.fileno()), size, arena_id,
             grpc.StatusCode.FAILED_PRECONDITION, "not an activation arena memfd"),
            ("unsealed", dict(pid=me, fd=unsealed), size, arena_id,
             grpc.StatusCode.FAILED_PRECONDITION, "not sealed"),
            ("wrong size", dict(pid=me, fd=sealed), size // 2, "e" * 32,
             grpc.StatusCode.FAILED_PRECONDITION, "not the"),
            ("wrong id", dict(pid=me, fd=sealed), size, arena_id,
             grpc.StatusCode.FAILED_PRECONDITION, "does not carry the announced id"),
            ("empty id", dict(pid=me, fd=sealed), size, "",
             grpc.StatusCode.INVALID_ARGUMENT, "arena id must be 32 hex digits"),
            ("wrapping size", dict(pid=me, fd=sealed), (1 << 64) - 1, "e" * 32,
             grpc.StatusCode.INVALID_ARGUMENT, "usable bytes is not in"),
        ]
        for name, handle, announced, ident, code, expected in cases:
            with self.subTest(name):
                with self.assertRaises(grpc.RpcError) as caught:
                    self.worker_call("AttachArena", pb.AttachArenaRequest(
                        shared_memory=pb.SharedMemoryHandle(**handle), size_bytes=announced,
                        arena_id=ident))
                self.assertEqual(caught.exception.code(), code, caught.exception.details())
                self.assertIn(expected, caught.exception.details())
        with self.subTest("CUDA handle on the CPU backend"):
            with self.assertRaises(grpc.RpcError) as caught:
                self.worker_call("AttachArena", pb.AttachArenaRequest(
                    cuda_ipc=pb.CudaIpcHandle(ipc_mem_handle=bytes(64), exporter_pid=me,
                                              pci_bus_id="0000:01:00.0"),
                    size_bytes=size, arena_id=arena_id))
            self.assertEqual(caught.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("cannot map a CUDA IPC arena", caught.exception.details())
        # A refused attach keeps the coordinator's arena.
        self.assertEqual(tp.worker_stats(self.worker_addr).arena_owner_pid, self.coordinator.pid)
        self.assert_still_serving()

    def test_run_experts_slices_outside_the_arena_are_refused(self):
        pb = stubs().expert_worker_pb2
        tp.py_generate(self.addr)  # the arena is attached
        with self.assertRaises(grpc.RpcError) as caught:
            self.worker_call("RunExperts", pb.RunExpertsRequest(
                layer=0, num_tokens=1, experts_per_token=1, expert_ids=[0], weights=[1.0],
                input_slice=pb.ArenaSlice(offset=0, size_bytes=1024),
                output_slice=pb.ArenaSlice(offset=1 << 40, size_bytes=1024), arena_id="stale"))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assert_still_serving()


class LoadTest(TimedTestCase):
    """(6) bench/load_test.py, small: once clean, once with the worker killed mid-run and
    restarted by deploy/run_local.sh's supervisor."""

    def run_load(self, name, *extra):
        if not tp.ARGS.build_dir:
            self.skipTest("no --build-dir")
        fleet = self.make_fleet(name)
        out = os.path.join(fleet.dir, "figures.json")
        run = subprocess.run(
            [sys.executable, os.path.join(tp.SOURCE_DIR, "bench", "load_test.py"),
             "--stub-dir", tp.ARGS.stub_dir, "--launch", "--model", tp.ARGS.model,
             "--bin-dir", tp.ARGS.build_dir, "--work-dir", os.path.join(fleet.dir, "w"),
             "--clients", "8", "--requests", "40", "--max-new-tokens", "8",
             "--max-run-s", "120", "--json", out, *extra],
            capture_output=True, env=tp.ENV, timeout=200)
        log(f"load test {name}: {run.stdout.decode()}")
        self.assertEqual(run.returncode, 0, run.stdout.decode() + run.stderr.decode())
        import json
        with open(out) as f:
            figures = json.load(f)
        self.assertEqual(figures["errors"], 0)
        self.assertEqual(figures["complete"], 40)
        self.assertEqual(figures["hung_clients"], 0)
        self.assertEqual(figures["token_mismatches"], 0)
        self.assertEqual(figures["launcher_exit_status"], 0)
        return figures

    def test_clean_run_has_no_errors(self):
        figures = self.run_load("load")
        self.assertEqual(figures["refused_attempts"], 0)
        # Per-request time per output token, and where the CPU went (both servers ran).
        self.assertGreater(figures["tpot_p50_ms"], 0)
        self.assertGreaterEqual(figures["tpot_p99_ms"], figures["tpot_p50_ms"])
        self.assertGreater(figures["cpu_per_wall_s"]["coordinator"], 0)
        self.assertGreater(figures["cpu_per_wall_s"]["worker"], 0)

    def test_worker_killed_mid_run_loses_no_request(self):
        figures = self.run_load("loadkill", "--kill-worker-after", "12")
        self.assertTrue(figures["worker_killed"])
        self.assertGreaterEqual(figures["worker_restarts"], 1)

    def test_two_lanes_with_the_worker_killed_lose_no_request(self):
        # Two step threads wait for the restarted worker at once and redo their layers.
        figures = self.run_load("loadlanes", "--kill-worker-after", "12",
                                "--coordinator-flag=--batch-lanes=2")
        self.assertTrue(figures["worker_killed"])
        self.assertGreaterEqual(figures["worker_restarts"], 1)


if __name__ == "__main__":
    tp.main()
