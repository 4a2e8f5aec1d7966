#!/usr/bin/env python3
"""Integration tests of the two-process deployment.

Starts real moe-expert-worker and moe-coordinator processes on unix sockets in a temp
dir (one worker on TCP) and drives them through the generated Python client
(clients/python) and the C++ client (`moe generate --server`). Every greedy text must
equal in-process `moe generate --model DIR --temperature 0`.

  two_process_test.py --model DIR --stub-dir DIR --worker-bin BIN --coordinator-bin BIN
                      --moe-bin BIN [--build-dir DIR] [unittest arguments]

(ctest passes these; see tests/CMakeLists.txt). Every process started gets
OMP_WAIT_POLICY=PASSIVE and OMP_NUM_THREADS=1, and dies with this test (stopped at the
end of its class, killed at exit, and by the kernel through PR_SET_PDEATHSIG should this
process itself be killed).
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python"))
import moe_client  # noqa: E402

PROMPT = "And the LORD said unto Moses,"
NEW_TOKENS = 24
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
# setpriv (util-linux) sets the parent-death signal and execs: a child never outlives
# this test, even if it is SIGKILLed. Processes are started from the main thread only
# (the signal follows the thread that forked).
SETPRIV = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []

ARGS = None     # parsed command line (see main)
STUBS = None    # the generated modules (moe_client.Stubs)
CONFIG = None   # the model's config.json
_live = set()   # every Process not yet stopped
_reference = {}


def log(message):
    print(f"[two_process_test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Process:
    """One server process, its output in a log file of the test's temp dir."""

    def __init__(self, name, argv, log_dir, new_session=False):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}-{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(SETPRIV + argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=ENV,
                                      start_new_session=new_session)
        self.pid = self.popen.pid
        _live.add(self)

    def alive(self):
        return self.popen.poll() is None

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signals the process and waits for it; SIGKILL after timeout. Returns its status."""
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) ignored signal {sig}; killing it")
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        _live.discard(self)
        return self.popen.returncode


@atexit.register
def _kill_leftovers():
    for p in list(_live):
        try:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
        except OSError:
            pass


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls predicate until it returns a true value (returned) or fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def health(address, service):
    """The status name, or None when the server does not answer."""
    try:
        with grpc.insecure_channel(address) as channel:
            return moe_client.check_health(STUBS, channel, service, timeout=1.0)
    except grpc.RpcError:
        return None


def running(pid):
    """Whether pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(prompt=PROMPT, max_new_tokens=NEW_TOKENS, temperature=0.0, **fields):
    return moe_client.make_request(STUBS, prompt, max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=0.0, **fields)


def py_generate(address, req=None, timeout=60):
    """Streams one generation through the Python client: (text, last response, token ids)."""
    text, ids, last = [], [], None
    with grpc.insecure_channel(address) as channel:
        for response in moe_client.stream_generate(STUBS, channel, req or request(), timeout=timeout):
            text.append(response.text)
            ids.extend(response.token_ids)
            if response.finish_reason:
                last = response
    return "".join(text), last, ids


def cpp_generate(address, prompt=PROMPT, max_new_tokens=NEW_TOKENS):
    """Stdout of the C++ client `moe generate --server` (text and a newline)."""
    run = subprocess.run([ARGS.moe_bin, "generate", "--server", address, "--prompt", prompt,
                          "--temperature", "0", "--max-new-tokens", str(max_new_tokens)],
                         capture_output=True, env=ENV, timeout=120)
    if run.returncode != 0:
        raise AssertionError(f"moe generate --server failed: {run.stderr.decode()}")
    return run.stdout.decode()


def reference_text(prompt=PROMPT, max_new_tokens=NEW_TOKENS):
    """In-process `moe generate` stdout (text and a newline), computed once per prompt."""
    key = (prompt, max_new_tokens)
    if key not in _reference:
        run = subprocess.run([ARGS.moe_bin, "generate", "--model", ARGS.model, "--prompt", prompt,
                              "--temperature", "0", "--max-new-tokens", str(max_new_tokens)],
                             capture_output=True, env=ENV, timeout=300)
        if run.returncode != 0:
            raise AssertionError(f"in-process moe generate failed: {run.stderr.decode()}")
        _reference[key] = run.stdout.decode()
        log(f"in-process reference: {_reference[key]!r}")
    return _reference[key]


def worker_stats(address):
    with grpc.insecure_channel(address) as channel:
        stub = STUBS.expert_worker_pb2_grpc.ExpertWorkerStub(channel)
        return stub.GetStats(STUBS.expert_worker_pb2.GetStatsRequest(), timeout=5)


def wait_worker_idle(address, settle=0.6, timeout=3.0):
    """Waits until the worker's RunExperts count stops growing (for `settle` seconds).

    Returns the seconds it took; raises when calls keep coming for `timeout`."""
    start = time.monotonic()
    calls = worker_stats(address).run_experts_calls
    quiet_since = time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(0.1)
        now = worker_stats(address).run_experts_calls
        if now != calls:
            calls, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return quiet_since - start
    raise AssertionError(f"the worker still runs experts {timeout} s later: the generation "
                         "was not stopped")


class Fleet:
    """Servers of one test class in one temp dir; stop_all ends them and removes the dir."""

    def __init__(self, name):
        # Short path: unix socket paths are limited to 108 bytes.
        self.dir = tempfile.mkdtemp(prefix=f"moe-{name}-")
        self.processes = []

    def sock(self, name):
        return f"unix:{self.dir}/{name}.sock"

    def start(self, name, argv, **kwargs):
        p = Process(name, argv, self.dir, **kwargs)
        self.processes.append(p)
        return p

    def worker(self, listen, cache_per_layer=0, wait=True):
        p = self.start("worker", [ARGS.worker_bin, "--model", ARGS.model, "--listen", listen,
                                  "--cache-per-layer", str(cache_per_layer)])
        if wait:
            self.wait_serving(p, listen, "")
        return p

    def coordinator(self, listen, worker, extra=(), wait=True):
        p = self.start("coordinator", [ARGS.coordinator_bin, "--model", ARGS.model, "--worker",
                                       worker, "--listen", listen, *extra])
        if wait:
            self.wait_serving(p, listen, "moe.v1.Generation")
        return p

    @staticmethod
    def wait_serving(process, address, service, timeout=60):
        def ready():
            if not process.alive():
                raise AssertionError(f"{process.name} exited with {process.popen.returncode}:\n"
                                     f"{process.output()}")
            return health(address, service) == "SERVING"
        wait_for(ready, timeout, f"{process.name} at {address} to serve {service!r}")

    def stop_all(self):
        for p in reversed(self.processes):
            p.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class TimedTestCase(unittest.TestCase):
    fleet = None

    @classmethod
    def make_fleet(cls, name):
        cls.fleet = Fleet(name)
        cls.addClassCleanup(cls.fleet.stop_all)
        return cls.fleet

    def setUp(self):
        self._started = time.monotonic()

    def tearDown(self):
        log(f"{self.id().split('.', 1)[1]}: {time.monotonic() - self._started:.2f} s")


class CacheSizeTest(TimedTestCase):
    """(a) Same greedy text through both clients for every worker cache size."""

    def test_every_cache_size_gives_the_in_process_text(self):
        fleet = self.make_fleet("cache")
        expected = reference_text()
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        worker = fleet.worker(worker_addr, cache_per_layer=1)
        coordinator = fleet.coordinator(addr, worker_addr)
        for k in range(1, CONFIG["num_local_experts"] + 1):
            with self.subTest(cache_per_layer=k):
                if k > 1:
                    # Only the worker restarts; the coordinator reconnects and re-attaches.
                    worker.stop()
                    wait_for(lambda: health(addr, "moe.v1.Generation") == "NOT_SERVING", 5,
                             "the coordinator to notice the worker is gone")
                    worker = fleet.worker(worker_addr, cache_per_layer=k)
                    fleet.wait_serving(coordinator, addr, "moe.v1.Generation", timeout=10)
                self.assertEqual(worker_stats(worker_addr).cache_per_layer, k)
                text, last, ids = py_generate(addr)
                self.assertEqual(text + "\n", expected)
                self.assertEqual(last.stats.generated_tokens, len(ids))
                self.assertEqual(cpp_generate(addr), expected)
        self.assertTrue(coordinator.alive())


class SharedPairTest(TimedTestCase):
    """(b, c, e, f) One worker (2 experts cached per layer) and one coordinator."""

    @classmethod
    def setUpClass(cls):
        fleet = cls.make_fleet("pair")
        cls.worker_addr, cls.addr = fleet.sock("worker"), fleet.sock("moe")
        cls.worker = fleet.worker(cls.worker_addr, cache_per_layer=2)
        cls.coordinator = fleet.coordinator(cls.addr, cls.worker_addr)

    def assert_invalid(self, req, *fragments):
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as caught:
            py_generate(self.addr, req, timeout=10)
        error = caught.exception
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, error.details())
        for fragment in fragments:
            self.assertIn(fragment, error.details())
        self.assertLess(time.monotonic() - start, 2.0)

    def test_bad_requests_are_invalid_argument(self):
        context = CONFIG["max_position_embeddings"]
        pb = STUBS.generation_pb2
        self.assertGreater(context, 8)
        with self.subTest("empty prompt"):
            self.assert_invalid(pb.GenerateRequest(max_new_tokens=8), "empty")
        with self.subTest("max_new_tokens 0"):
            self.assert_invalid(request(max_new_tokens=0), "max_new_tokens", "at least 1")
        with self.subTest("max_new_tokens beyond the context"):
            self.assert_invalid(request(max_new_tokens=context), "max_new_tokens", str(context))
            self.assert_invalid(request(max_new_tokens=10**6), "max_new_tokens", str(context))
        with self.subTest("prompt plus max_new_tokens beyond the context"):
            self.assert_invalid(request(max_new_tokens=context - 2), "exceeds the context")
        with self.subTest("prompt longer than the context"):
            self.assert_invalid(request(prompt="And it came to pass " * context, max_new_tokens=1),
                                "prompt", str(context))
        with self.subTest("unknown chat role"):
            req = pb.GenerateRequest(max_new_tokens=8)
            req.messages.add(role="wizard", content="hello")
            self.assert_invalid(req, "unknown chat role", "wizard")
        with self.subTest("prompt and messages both set"):
            req = request()
            req.messages.add(role="user", content="hello")
            self.assert_invalid(req, "not both")
        with self.subTest("negative temperature"):
            self.assert_invalid(request(temperature=-1.0), "temperature")
        # Still serving.
        self.assertEqual(py_generate(self.addr)[0] + "\n", reference_text())

    def long_request(self):
        prompt_tokens = len(self.tokenize(PROMPT, True))
        return request(max_new_tokens=CONFIG["max_position_embeddings"] - prompt_tokens)

    def tokenize(self, text, add_bos):
        with grpc.insecure_channel(self.addr) as channel:
            stub = STUBS.generation_pb2_grpc.GenerationStub(channel)
            return list(stub.Tokenize(STUBS.generation_pb2.TokenizeRequest(text=text, add_bos=add_bos),
                                      timeout=5).token_ids)

    def assert_stopped_early(self, calls_before, req, what):
        """The worker goes idle, having run fewer RunExperts calls than the whole
        generation needs (one per layer and token): the coordinator stopped computing."""
        idle_after = wait_worker_idle(self.worker_addr)
        calls = worker_stats(self.worker_addr).run_experts_calls - calls_before
        full = CONFIG["num_hidden_layers"] * req.max_new_tokens
        log(f"{what}: worker idle {idle_after:.2f} s later, after {calls} RunExperts calls "
            f"(the whole generation: at least {full})")
        self.assertLess(calls, full, f"the {what} request ran to its end")

    def test_deadline_exceeded_stops_the_generation(self):
        req = self.long_request()
        calls_before = worker_stats(self.worker_addr).run_experts_calls
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as caught:
            py_generate(self.addr, req, timeout=0.05)
        elapsed = time.monotonic() - start
        self.assertEqual(caught.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        log(f"deadline: the client saw DEADLINE_EXCEEDED after {elapsed:.3f} s")
        self.assertLess(elapsed, 1.0)
        self.assert_stopped_early(calls_before, req, "deadline")
        start = time.monotonic()
        self.assertEqual(py_generate(self.addr)[0] + "\n", reference_text())
        log(f"deadline: the next request took {time.monotonic() - start:.2f} s")

    def test_cancelled_stream_stops_the_generation(self):
        req = self.long_request()
        calls_before = worker_stats(self.worker_addr).run_experts_calls
        with grpc.insecure_channel(self.addr) as channel:
            call = STUBS.generation_pb2_grpc.GenerationStub(channel).Generate(req, timeout=60)
            received = 0
            with self.assertRaises(grpc.RpcError) as caught:
                for _ in call:
                    received += 1
                    if received == 3:
                        call.cancel()
            self.assertEqual(caught.exception.code(), grpc.StatusCode.CANCELLED)
            self.assertEqual(received, 3)
        self.assert_stopped_early(calls_before, req, "cancel")
        self.assertEqual(py_generate(self.addr)[0] + "\n", reference_text())

    def test_concurrent_streams_get_the_same_text(self):
        expected = reference_text()
        results, errors = [None] * 6, []

        def client(i):
            try:
                results[i] = py_generate(self.addr)[0] + "\n"
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertFalse(any(t.is_alive() for t in threads), "a client hangs")
        self.assertEqual(errors, [])
        self.assertEqual(results, [expected] * 6)

    def test_model_info_and_tokenize(self):
        with grpc.insecure_channel(self.addr) as channel:
            stub = STUBS.generation_pb2_grpc.GenerationStub(channel)
            info = stub.GetModelInfo(STUBS.generation_pb2.GetModelInfoRequest(), timeout=5)
        self.assertEqual(info.model_type, CONFIG["model_type"])
        self.assertEqual(info.vocab_size, CONFIG["vocab_size"])
        self.assertEqual(info.hidden_size, CONFIG["hidden_size"])
        self.assertEqual(info.num_layers, CONFIG["num_hidden_layers"])
        self.assertEqual(info.num_experts, CONFIG["num_local_experts"])
        self.assertEqual(info.experts_per_token, CONFIG["num_experts_per_tok"])
        self.assertEqual(info.context_length, CONFIG["max_position_embeddings"])
        self.assertGreater(info.parameters, 0)
        with_bos = self.tokenize(PROMPT, True)
        without = self.tokenize(PROMPT, False)
        self.assertEqual(with_bos[0], CONFIG.get("bos_token_id", 1))
        self.assertEqual(with_bos[1:], without)
        self.assertTrue(all(0 <= t < CONFIG["vocab_size"] for t in with_bos))
        # Generate's prompt_tokens counts the same ids.
        self.assertEqual(py_generate(self.addr)[1].stats.prompt_tokens, len(with_bos))

    def test_server_reflection_lists_the_services(self):
        for address, service in ((self.addr, "moe.v1.Generation"),
                                 (self.worker_addr, "moe.v1.ExpertWorker")):
            names = reflection_services(address)
            self.assertIn(service, names)
            self.assertIn("grpc.health.v1.Health", names)

    def test_worker_stats_grow(self):
        before = worker_stats(self.worker_addr)
        py_generate(self.addr)
        after = worker_stats(self.worker_addr)
        self.assertEqual(after.cache_per_layer, 2)
        self.assertEqual(after.policy, "lru")
        self.assertGreater(after.run_experts_calls, before.run_experts_calls)
        self.assertGreater(after.hits + after.misses, before.hits + before.misses)
        self.assertGreater(after.misses, 0)  # 2 of 8 resident: some loads are certain
        self.assertEqual(len(after.layers), CONFIG["num_hidden_layers"])
        self.assertEqual(sum(l.hits for l in after.layers), after.hits)

    def test_python_cli(self):
        client = os.path.join(SOURCE_DIR, "clients", "python", "moe_client.py")
        base = [sys.executable, client]
        common = ["--server", self.addr, "--stub-dir", ARGS.stub_dir]
        run = subprocess.run(base + common + ["--prompt", PROMPT, "--temperature", "0",
                                              "--max-new-tokens", str(NEW_TOKENS)],
                             capture_output=True, env=ENV, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr.decode())
        self.assertEqual(run.stdout.decode(), reference_text())
        self.assertRegex(run.stderr.decode(), r"finish (eos|length|stop);")
        run = subprocess.run(base + ["health"] + common, capture_output=True, env=ENV, timeout=30)
        self.assertEqual((run.returncode, run.stdout.decode()), (0, "SERVING\n"))
        run = subprocess.run(base + common + ["--prompt", PROMPT, "--max-new-tokens", "0"],
                             capture_output=True, env=ENV, timeout=30)
        self.assertEqual(run.returncode, 1)
        self.assertIn("INVALID_ARGUMENT", run.stderr.decode())


def reflection_services(address):
    """Service names from grpc.reflection.v1alpha, without its generated code.

    The request is ServerReflectionRequest{list_services: ""} (field 7, length 0); the
    names are read from the ListServiceResponse as strings."""
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        responses = call(iter([b"\x3a\x00"]), timeout=5)
        data = next(responses)
        responses.cancel()
    return {n.decode() for n in re.findall(rb"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", data)}


class NoWorkerTest(TimedTestCase):
    """(d) UNAVAILABLE and NOT_SERVING without a worker; serving once one starts."""

    def test_unavailable_until_a_worker_starts(self):
        fleet = self.make_fleet("noworker")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        coordinator = fleet.coordinator(addr, worker_addr, wait=False)
        def answered():
            self.assertTrue(coordinator.alive(), coordinator.output())
            return health(addr, "moe.v1.Generation")
        # Its very first answer already says NOT_SERVING.
        first = wait_for(answered, 60, "the coordinator to answer")
        self.assertEqual(first, "NOT_SERVING")
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as caught:
            py_generate(addr, timeout=10)
        elapsed = time.monotonic() - start
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("worker", caught.exception.details())
        self.assertLess(elapsed, 1.0)
        self.assertEqual(health(addr, "moe.v1.Generation"), "NOT_SERVING")

        fleet.worker(worker_addr, cache_per_layer=3)
        start = time.monotonic()
        wait_for(lambda: health(addr, "moe.v1.Generation") == "SERVING", 5,
                 "the coordinator to find the worker")
        log(f"no worker: SERVING {time.monotonic() - start:.2f} s after the worker was up")
        self.assertEqual(py_generate(addr)[0] + "\n", reference_text())
        self.assertTrue(coordinator.alive())


class AdmissionTest(TimedTestCase):
    """(e) --max-requests 2: extra concurrent requests get RESOURCE_EXHAUSTED."""

    def test_requests_beyond_the_limit_are_refused(self):
        fleet = self.make_fleet("admit")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        fleet.worker(worker_addr)
        fleet.coordinator(addr, worker_addr, extra=["--max-requests", "2"])
        long_tokens = min(200, CONFIG["max_position_embeddings"] - 32)
        started = [threading.Event(), threading.Event()]
        results, errors = [None, None], []

        def admitted(i):
            try:
                text, ids, last = [], 0, None
                with grpc.insecure_channel(addr) as channel:
                    for r in moe_client.stream_generate(
                            STUBS, channel, request(max_new_tokens=long_tokens), timeout=120):
                        started[i].set()
                        text.append(r.text)
                        ids += len(r.token_ids)
                        last = r if r.finish_reason else last
                results[i] = ("".join(text), ids, last)
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append(e)
                started[i].set()

        threads = [threading.Thread(target=admitted, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for e in started:
            self.assertTrue(e.wait(60), "an admitted request never started")
        for _ in range(3):
            start = time.monotonic()
            with self.assertRaises(grpc.RpcError) as caught:
                py_generate(addr, timeout=10)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("limit of 2", caught.exception.details())
            self.assertLess(time.monotonic() - start, 1.0)
        self.assertTrue(all(t.is_alive() for t in threads),
                        f"the admitted requests ended too soon to test admission ({errors})")
        for t in threads:
            t.join(timeout=120)
        self.assertEqual(errors, [])
        expected = reference_text().rstrip("\n")
        for text, ids, last in results:
            self.assertEqual(last.finish_reason, STUBS.generation_pb2.FINISH_REASON_LENGTH)
            self.assertEqual(ids, long_tokens)
            self.assertTrue(text.startswith(expected), (text, expected))
        # Slots are released.
        self.assertEqual(py_generate(addr)[0] + "\n", reference_text())


class TcpWorkerTest(TimedTestCase):
    """(g) A worker on TCP: tensors travel inline, the text is the same."""

    def test_tcp_worker_gives_the_same_text(self):
        fleet = self.make_fleet("tcp")
        worker_addr, addr = f"127.0.0.1:{free_tcp_port()}", fleet.sock("moe")
        fleet.worker(worker_addr, cache_per_layer=4)
        coordinator = fleet.coordinator(addr, worker_addr)
        self.assertEqual(py_generate(addr)[0] + "\n", reference_text())
        self.assertEqual(cpp_generate(addr), reference_text())
        self.assertIn("tensors inline", coordinator.output())
        self.assertGreater(worker_stats(worker_addr).run_experts_calls, 0)


class RunLocalTest(TimedTestCase):
    """deploy/run_local.sh: starts both, restarts a dead worker, cleans up on SIGTERM."""

    def test_run_local_supervises_and_cleans_up(self):
        if not ARGS.build_dir:
            self.skipTest("no --build-dir")
        fleet = self.make_fleet("runlocal")
        sockets = os.path.join(fleet.dir, "s")
        script = fleet.start("run_local", ["bash", os.path.join(SOURCE_DIR, "deploy", "run_local.sh"),
                                           "--model", ARGS.model, "--socket-dir", sockets,
                                           "--bin-dir", ARGS.build_dir, "--cache-per-layer", "2"],
                             new_session=True)
        self.addCleanup(lambda: script.alive() and os.killpg(script.pid, signal.SIGKILL))
        def ready():
            self.assertTrue(script.alive(), script.output())
            out = script.output()
            return out if "Ctrl-C stops both" in out else None
        out = wait_for(ready, 90, "run_local.sh to be ready")
        addr = f"unix:{sockets}/moe.sock"
        self.assertIn(addr, out)
        coordinator_pid = int(re.search(r"coordinator .* pid (\d+)", out).group(1))
        worker_pid = int(re.search(r"expert worker .* pid (\d+)", out).group(1))
        self.assertEqual(py_generate(addr)[0] + "\n", reference_text())

        os.kill(worker_pid, signal.SIGKILL)
        restarted = wait_for(lambda: re.search(r"restarted as pid (\d+)", script.output()), 30,
                             "run_local.sh to restart the worker")
        new_worker_pid = int(restarted.group(1))
        wait_for(lambda: health(addr, "moe.v1.Generation") == "SERVING"
                 and health(f"unix:{sockets}/worker.sock", "") == "SERVING", 60,
                 "the restarted worker to serve")
        self.assertEqual(py_generate(addr)[0] + "\n", reference_text())

        self.assertEqual(script.stop(signal.SIGTERM, timeout=30), 0, script.output())
        for pid in (coordinator_pid, new_worker_pid):
            self.assertFalse(running(pid), f"pid {pid} outlived run_local.sh")
        self.assertEqual(sorted(os.listdir(sockets)), [])


def main():
    rest = parse_flags()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


def parse_flags():
    """Reads the flags and the model's config into this module's globals (other test files
    reuse its fleet and clients through it); returns the arguments left for unittest."""
    global ARGS, STUBS, CONFIG
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument("--model", default=env("MOE_MODEL_DIR"))
    parser.add_argument("--stub-dir", default=env("MOE_STUB_DIR"))
    parser.add_argument("--worker-bin", default=env("MOE_WORKER_BIN"))
    parser.add_argument("--coordinator-bin", default=env("MOE_COORDINATOR_BIN"))
    parser.add_argument("--moe-bin", default=env("MOE_BIN"))
    parser.add_argument("--build-dir", default=env("MOE_BUILD_DIR"),
                        help="CMake build tree, for the deploy/run_local.sh test")
    ARGS, rest = parser.parse_known_args()
    missing = [n for n in ("model", "stub_dir", "worker_bin", "coordinator_bin", "moe_bin")
               if not getattr(ARGS, n)]
    if missing:
        parser.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
    ARGS.model = os.path.abspath(ARGS.model)
    with open(os.path.join(ARGS.model, "config.json")) as f:
        CONFIG = json.load(f)
    STUBS = moe_client.load_stubs(ARGS.stub_dir)
    return rest


if __name__ == "__main__":
    main()
