#!/usr/bin/env python3
"""Hostile callers and hostile sizes against real processes (issue 18).

  hostile_client_test.py --model DIR --stub-dir DIR --worker-bin BIN --coordinator-bin BIN
                         --moe-bin BIN [unittest arguments]

Same arguments and process hygiene as two_process_test.py. Each test names the probe of
issue 18 it answers; docs/results.md lists them with their outcomes.
"""

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import two_process_test as tp  # noqa: E402
from two_process_test import TimedTestCase, log, wait_for  # noqa: E402


def stubs():
    return tp.STUBS


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def generation_stub(channel):
    return stubs().generation_pb2_grpc.GenerationStub(channel)


def call_generate(address, req, timeout=30, metadata=None, credentials=None):
    channel = (grpc.secure_channel(address, credentials) if credentials
               else grpc.insecure_channel(address))
    with channel:
        return list(generation_stub(channel).Generate(req, timeout=timeout, metadata=metadata))


class LimitsTest(TimedTestCase):
    """Items 3, 9 and 10: work bounded before it starts, and errors that fit."""

    @classmethod
    def setUpClass(cls):
        fleet = cls.make_fleet("limits")
        cls.worker_addr, cls.addr = fleet.sock("worker"), fleet.sock("moe")
        fleet.worker(cls.worker_addr, cache_per_layer=8)
        cls.coordinator = fleet.coordinator(cls.addr, cls.worker_addr,
                                            extra=["--max-requests", "2", "--max-kv-gib", "0.0035"])

    def test_huge_prompts_are_refused_before_tokenizing_and_memory_stays_flat(self):
        before = rss_mb(self.coordinator.pid)
        # Past --max-request-bytes (1 MiB): refused before tokenizing.
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as caught:
            call_generate(self.addr, tp.request(prompt="And " * (3 << 18)), timeout=5)  # 3 MiB
        took = time.monotonic() - start
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("--max-request-bytes", caught.exception.details())
        self.assertLess(took, 4.0)
        # 16 MiB with a 5 s deadline once burned 37 CPU-seconds and kept 1.1 GB: now past
        # --max-message-bytes (4 MiB), refused by gRPC before it is even parsed.
        with self.assertRaises(grpc.RpcError) as caught:
            call_generate(self.addr, tp.request(prompt="And " * (4 << 20)), timeout=5)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # Four ~60 MB requests at once used to grow the coordinator until the OOM killer came.
        errors = []

        def send():
            try:
                call_generate(self.addr, tp.request(prompt="x" * (60 << 20)), timeout=20)
            except grpc.RpcError as e:
                errors.append(e.code())
        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(errors), 4)
        self.assertTrue(all(c in (grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED) for c in errors), errors)
        with grpc.insecure_channel(self.addr) as channel:
            stub = generation_stub(channel)
            with self.assertRaises(grpc.RpcError) as caught:
                stub.Tokenize(stubs().generation_pb2.TokenizeRequest(text="y" * (2 << 20)), timeout=10)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        after = rss_mb(self.coordinator.pid)
        log(f"coordinator RSS {before:.0f} MB before the huge prompts, {after:.0f} MB after")
        self.assertLess(after - before, 100)
        self.assertEqual(tp.py_generate(self.addr)[0] + "\n", tp.reference_text())

    def test_errors_echo_bounded_input_and_never_internal(self):
        req = stubs().generation_pb2.GenerateRequest(max_new_tokens=4)
        req.messages.add(role="r" * 10000, content="hi")
        with self.assertRaises(grpc.RpcError) as caught:
            call_generate(self.addr, req)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertLess(len(caught.exception.details()), 1100)
        # top_k = 2^32-1 means every token; it is not "-1".
        out = call_generate(self.addr, tp.request(temperature=0.8, top_k=(1 << 32) - 1, seed=3))
        self.assertTrue(out[-1].finish_reason)

    def test_invalid_utf8_in_a_request_is_invalid_argument_naming_the_field(self):
        # The Python client cannot even build such a request: send raw bytes.
        good = tp.request(prompt="ab" + "XY").SerializeToString()
        bad = good.replace(b"XY", b"\xc3\x28")
        with grpc.insecure_channel(self.addr) as channel:
            raw = channel.unary_stream("/moe.v1.Generation/Generate",
                                       request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
            with self.assertRaises(grpc.RpcError) as caught:
                list(raw(bad, timeout=10))
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("prompt is not valid UTF-8", caught.exception.details())
            tokenize = channel.unary_unary("/moe.v1.Generation/Tokenize",
                                           request_serializer=lambda b: b,
                                           response_deserializer=lambda b: b)
            with self.assertRaises(grpc.RpcError) as caught:
                tokenize(b"\x0a\x02\xff\xfe", timeout=10)  # text = FF FE
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("text is not valid UTF-8", caught.exception.details())
            self.assertTrue(list(raw(good, timeout=30)))  # the same path serves good bytes

    def test_tiny_temperatures_are_greedy(self):
        for t in (1e-38, 1e-40, 1e-45):
            with self.subTest(t):
                text = tp.py_generate(self.addr, tp.request(temperature=t, seed=1))[0]
                self.assertEqual(text + "\n", tp.reference_text())

    def test_tokenize_is_admitted_like_generate(self):
        long_req = tp.request(max_new_tokens=400, temperature=0.9, seed=1)
        holders = []
        for _ in range(2):
            ch = grpc.insecure_channel(self.addr)
            it = generation_stub(ch).Generate(long_req, timeout=60)
            next(it)  # admitted and running
            holders.append((ch, it))
        try:
            with grpc.insecure_channel(self.addr) as channel:
                with self.assertRaises(grpc.RpcError) as caught:
                    generation_stub(channel).Tokenize(
                        stubs().generation_pb2.TokenizeRequest(text="And God said"), timeout=10)
                self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        finally:
            for ch, it in holders:
                it.cancel()
                ch.close()

    def test_the_kv_budget_is_reported_when_full(self):
        # 0.0035 GiB holds the bundled model's KV for ~917 positions (4 KiB each): one
        # request of ~608 positions fits, two do not.
        req = tp.request(max_new_tokens=600, temperature=0.9, seed=1)
        ch = grpc.insecure_channel(self.addr)
        it = generation_stub(ch).Generate(req, timeout=60)
        try:
            try:
                next(it)
            except grpc.RpcError as e:  # already this one does not fit: also a report
                self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("KV cache budget", e.details())
                return
            with self.assertRaises(grpc.RpcError) as caught:
                call_generate(self.addr, req)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("KV cache budget", caught.exception.details())
        finally:
            it.cancel()
            ch.close()


def make_pki(directory):
    """A CA, a server certificate for localhost and a client certificate, made by the
    script deploy/ documents."""
    subprocess.run([os.path.join(tp.SOURCE_DIR, "deploy", "tls", "make_dev_certs.sh"), directory],
                   check=True, capture_output=True)
    return {n: os.path.join(directory, n) for n in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class CredentialsTest(TimedTestCase):
    """Item 5: a bearer token, TLS with client certificates, peer uids, private sockets."""

    def test_the_api_key_is_required_on_every_generation_call(self):
        fleet = self.make_fleet("apikey")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        fleet.worker(worker_addr, cache_per_layer=8)
        fleet.coordinator(addr, worker_addr, extra=["--api-key", "s3cret"])
        for metadata in (None, [("authorization", "Bearer wrong")], [("authorization", "s3cret")]):
            with self.subTest(metadata=metadata):
                with self.assertRaises(grpc.RpcError) as caught:
                    call_generate(addr, tp.request(), metadata=metadata)
                self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        out = call_generate(addr, tp.request(), metadata=[("authorization", "Bearer s3cret")])
        self.assertEqual("".join(r.text for r in out) + "\n", tp.reference_text())
        run = subprocess.run([tp.ARGS.moe_bin, "generate", "--server", addr, "--api-key", "s3cret",
                              "--prompt", tp.PROMPT, "--temperature", "0", "--max-new-tokens",
                              str(tp.NEW_TOKENS)], capture_output=True, env=tp.ENV, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr.decode())
        self.assertEqual(run.stdout.decode(), tp.reference_text())
        client = [sys.executable, os.path.join(tp.SOURCE_DIR, "clients", "python", "moe_client.py"),
                  "--stub-dir", tp.ARGS.stub_dir, "--server", addr, "--prompt", tp.PROMPT,
                  "--temperature", "0", "--max-new-tokens", str(tp.NEW_TOKENS)]
        run = subprocess.run(client + ["--api-key", "s3cret"], capture_output=True, env=tp.ENV,
                             timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr.decode())
        self.assertEqual(run.stdout.decode(), tp.reference_text())
        run = subprocess.run(client, capture_output=True, env=tp.ENV, timeout=60)
        self.assertEqual(run.returncode, 1)
        self.assertIn("UNAUTHENTICATED", run.stderr.decode())
        self.assertEqual(tp.health(addr, "moe.v1.Generation"), "SERVING")  # probes stay open

    def test_mutual_tls_between_the_processes_and_for_clients(self):
        fleet = self.make_fleet("tls")
        pki = make_pki(fleet.dir)
        worker_port, port = tp.free_tcp_port(), tp.free_tcp_port()
        worker_addr, addr = f"localhost:{worker_port}", f"localhost:{port}"
        fleet.start("worker", [tp.ARGS.worker_bin, "--model", tp.ARGS.model, "--listen",
                               f"127.0.0.1:{worker_port}", "--tls-cert", pki["server.pem"],
                               "--tls-key", pki["server.key"], "--tls-client-ca", pki["ca.pem"]])
        coordinator = fleet.start("coordinator", [
            tp.ARGS.coordinator_bin, "--model", tp.ARGS.model, "--worker", worker_addr,
            "--worker-tls-ca", pki["ca.pem"], "--worker-tls-cert", pki["client.pem"],
            "--worker-tls-key", pki["client.key"], "--listen", f"127.0.0.1:{port}",
            "--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"]])
        def read(name):
            with open(pki[name], "rb") as f:
                return f.read()
        client = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))

        def serving():
            if not coordinator.alive():
                raise AssertionError(coordinator.output())
            try:
                call_generate(addr, tp.request(max_new_tokens=1), credentials=client, timeout=5)
                return True
            except grpc.RpcError:
                return False
        wait_for(serving, 60, "the TLS pair to serve")
        out = call_generate(addr, tp.request(), credentials=client)
        self.assertEqual("".join(r.text for r in out) + "\n", tp.reference_text())
        # Plaintext is refused by the coordinator; a worker client without a certificate
        # is refused by the worker.
        with self.assertRaises(grpc.RpcError):
            call_generate(addr, tp.request(), timeout=5)
        with grpc.secure_channel(worker_addr, client) as channel:
            stub = stubs().expert_worker_pb2_grpc.ExpertWorkerStub(channel)
            with self.assertRaises(grpc.RpcError) as caught:
                stub.GetStats(stubs().expert_worker_pb2.GetStatsRequest(), timeout=5)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)
        with_cert = grpc.ssl_channel_credentials(read("ca.pem"), read("client.key"),
                                                 read("client.pem"))
        with grpc.secure_channel(worker_addr, with_cert) as channel:
            stub = stubs().expert_worker_pb2_grpc.ExpertWorkerStub(channel)
            self.assertGreater(stub.GetStats(stubs().expert_worker_pb2.GetStatsRequest(),
                                             timeout=5).run_experts_calls, 0)
        run = subprocess.run([tp.ARGS.moe_bin, "generate", "--server", addr, "--tls-ca",
                              pki["ca.pem"], "--prompt", tp.PROMPT, "--temperature", "0",
                              "--max-new-tokens", str(tp.NEW_TOKENS)],
                             capture_output=True, env=tp.ENV, timeout=60)
        self.assertEqual(run.stdout.decode(), tp.reference_text(), run.stderr.decode())

    # A second user: root runs the worker; uid 65534 tries its unix socket.
    # Prints -1 when it cannot connect, else how many bytes the server sent back to an
    # HTTP/2 preface (0: the connection was closed on it, even mid-send).
    PROBE = ("import socket,sys\n"
             "s=socket.socket(socket.AF_UNIX)\n"
             "try: s.connect(sys.argv[1])\n"
             "except OSError: print(-1); sys.exit(0)\n"
             "s.settimeout(5)\n"
             "try:\n"
             "  s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'+bytes([0,0,0,4,0,0,0,0,0]))\n"
             "  print(len(s.recv(64)))\n"
             "except OSError: print(0)\n")

    def probe_as_nobody(self, path):
        # setpriv (util-linux, essential) changes uid after exec: subprocess's own user= makes
        # Python fork() instead of vfork(), and grpc's fork handlers in this process then
        # wait forever for its thread pool to idle ("Waiting for thread pool to idle before
        # forking"; a 300 s ctest timeout under load).
        run = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              sys.executable, "-c", self.PROBE, path],
                             capture_output=True, timeout=30)
        self.assertEqual(run.returncode, 0, run.stderr.decode())
        return int(run.stdout.decode().strip())

    def test_unix_sockets_serve_only_allowed_uids(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run a client as a second uid")
        fleet = self.make_fleet("peer")
        shared = tempfile.mkdtemp(prefix="moe-peer-")
        os.chmod(shared, 0o755)
        self.addCleanup(shutil.rmtree, shared, True)
        for allowed, answered in (("0,12345", False), ("0,65534", True)):
            with self.subTest(allowed=allowed):
                path = os.path.join(shared, f"w{len(fleet.processes)}.sock")
                worker = fleet.start("worker", [tp.ARGS.worker_bin, "--model", tp.ARGS.model,
                                                "--listen", "unix:" + path, "--allow-uids", allowed])
                fleet.wait_serving(worker, "unix:" + path, "")
                got = self.probe_as_nobody(path)
                self.assertEqual(got > 0, answered, f"uid 65534 got {got} bytes")
                worker.stop()
        # Only our own uid by default, and then the socket file is ours alone.
        path = os.path.join(shared, "own.sock")
        worker = fleet.start("worker", [tp.ARGS.worker_bin, "--model", tp.ARGS.model,
                                        "--listen", "unix:" + path])
        fleet.wait_serving(worker, "unix:" + path, "")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(self.probe_as_nobody(path), -1)  # cannot even connect

    def test_default_sockets_live_in_a_private_directory(self):
        fleet = self.make_fleet("xdg")
        runtime = os.path.join(fleet.dir, "run")
        os.mkdir(runtime, 0o700)
        env = dict(tp.ENV, XDG_RUNTIME_DIR=runtime)
        worker = subprocess.Popen([tp.ARGS.worker_bin, "--model", tp.ARGS.model],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            path = os.path.join(runtime, "moe-offload", "worker.sock")
            wait_for(lambda: os.path.exists(path) and tp.health("unix:" + path, "") == "SERVING",
                     60, "the worker on its default socket")
            self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        finally:
            worker.terminate()
            worker.wait(15)
        # A directory another user could have planted (open to all) is refused.
        os.chmod(os.path.join(runtime, "moe-offload"), 0o777)
        run = subprocess.run([tp.ARGS.worker_bin, "--model", tp.ARGS.model], env=env,
                             capture_output=True, timeout=60)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("must be ours and 0700", run.stderr.decode())


if __name__ == "__main__":
    tp.main()
