#!/usr/bin/env python3
"""The command surface where a new user tripped (issue 16, point 4), on the real binaries.

One class per item (ctest runs each as command_surface_test.CLASS):
  HelpTest           moe --help lists every subcommand; an unknown one names them all
  ListenCheckTest    bad or taken listen addresses fail before the model is opened
  LogTest            log lines carry UTC time and pid; --log-level on all three binaries
  GenerateTest       moe generate --stop (repeatable), in-process and --server alike, and
                     one spelling of finish reasons (eos, length, stop)
  ServerCommandTest  moe health's exit codes (0, 3, 4, 1); set-policy keeps what it is
                     not given
  InfoTest           moe info without a usable GPU says "no CUDA device"
  PythonClientTest   clients/python without grpc: reruns under /usr/bin/python3 or says
                     what to install, never a traceback
  DeployTest         the systemd units' flags (with moe.env) are all known; run_local.sh
                     passes flags and a metrics endpoint to the worker
  RunStudiesTest     tools/run_studies.sh reports progress, writes to --out, leaves
                     tracked docs alone
  HttpQuickStartTest README's HTTP quick start, run as written (paths and port aside):
                     `curl -N` receives the server-sent events one token at a time

Only subprocesses and the `moe` CLI: no Python gRPC needed (except PythonClientTest's
second half, which checks the rerun reaches grpc).

  command_surface_test.py --model DIR --worker-bin B --coordinator-bin B --moe-bin B
                          --build-dir DIR [CLASS...]
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ARGS = None
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
SUBCOMMANDS = ["generate", "logits", "info", "health", "bench", "worker-stats", "set-policy",
               "convert", "perplexity", "sizes"]
LOG_LINE = re.compile(r"^[DIWEF] \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (\d+) [\w.]+:\d+\] ")
PROMPT = "And the LORD said unto Moses,"


def run(args, timeout=60, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=timeout, **kwargs)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def held_port():
    """A listening TCP socket on 127.0.0.1 (the caller closes it) and its port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def free_port():
    s, port = held_port()
    s.close()
    return port


class Process:
    """A server started in the background; stderr goes to a file we can read while it runs."""

    def __init__(self, args, log_path, new_session=False):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=ENV,
                                     start_new_session=new_session)
        self.pid = self.proc.pid

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class Case(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="moe-cli-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

    def start(self, name, args, **kwargs):
        p = Process(args, os.path.join(self.dir, name + ".log"), **kwargs)
        self.addCleanup(p.stop)
        return p

    def worker(self, address, *flags):
        return self.start("worker", [ARGS.worker_bin, "--model", ARGS.model, "--listen", address]
                          + list(flags))

    def coordinator(self, address, worker_address, *flags):
        return self.start("coordinator", [ARGS.coordinator_bin, "--model", ARGS.model, "--worker",
                                          worker_address, "--listen", address] + list(flags))

    def health(self, address, service=""):
        return run([ARGS.moe_bin, "health", "--server", address, "--service", service], timeout=30)

    def wait_serving(self, process, address, service=""):
        def serving():
            self.assertTrue(process.alive(), process.output())
            return self.health(address, service).returncode == 0
        wait_for(serving, 60, f"{address} to serve")


class HelpTest(Case):
    def test_moe_help_lists_every_subcommand_and_the_health_exit_codes(self):
        out = run([ARGS.moe_bin, "--help"])
        self.assertEqual(out.returncode, 0, out.stderr)
        for command in SUBCOMMANDS:
            self.assertRegex(out.stdout, rf"(?m)^  {re.escape(command)} ", f"--help lacks {command}")
        self.assertIn("3 NOT_SERVING", out.stdout)
        self.assertIn("4 unreachable", out.stdout)
        self.assertIn("--stop", out.stdout)
        self.assertIn("--log-level", out.stdout)

    def test_unknown_command_names_every_subcommand(self):
        out = run([ARGS.moe_bin, "frobnicate"])
        self.assertEqual(out.returncode, 2)
        for command in SUBCOMMANDS:
            self.assertIn(command, out.stderr)

    def test_servers_print_their_own_flags_and_exit_0(self):
        for binary, own, foreign in ((ARGS.coordinator_bin, "--http-listen", "--cache-bytes"),
                                     (ARGS.worker_bin, "--cache-bytes", "--http-listen")):
            with self.subTest(binary=os.path.basename(binary)):
                out = run([binary, "--help"])
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertIn(own, out.stdout.replace("_", "-"))
                self.assertIn("--log-level", out.stdout.replace("_", "-"))
                self.assertNotIn(foreign, out.stdout.replace("_", "-"))


class ListenCheckTest(Case):
    """Addresses are checked before the model is opened: with a model path that does not
    exist, the address error is the one reported; with the real model, no line of the
    load appears."""

    def servers(self, listen):
        sock = f"unix:{self.dir}/w.sock"
        return {"moe-expert-worker": [ARGS.worker_bin, "--listen", listen],
                "moe-coordinator": [ARGS.coordinator_bin, "--worker", sock, "--listen", listen]}

    def assert_listen_error(self, listen, expected):
        for name, args in self.servers(listen).items():
            for model in ("/nonexistent/model", ARGS.model):
                with self.subTest(binary=name, model=model):
                    started = time.monotonic()
                    out = run(args + ["--model", model], timeout=60)
                    self.assertEqual(out.returncode, 1, out.stderr)
                    self.assertIn("--listen", out.stderr)
                    self.assertIn(expected, out.stderr)
                    self.assertNotIn("nonexistent/model", out.stderr)  # never got that far
                    self.assertNotIn("expert cache on", out.stderr)   # the worker's load
                    self.assertNotIn("device cpu", out.stderr)        # the coordinator's
                    self.assertLess(time.monotonic() - started, 10)

    def test_unix_socket_in_a_missing_directory(self):
        self.assert_listen_error(f"unix:{self.dir}/no/such/dir/x.sock", "does not exist")

    def test_taken_tcp_port(self):
        holder, port = held_port()
        self.addCleanup(holder.close)
        self.assert_listen_error(f"127.0.0.1:{port}", "in use")

    def test_host_that_does_not_resolve(self):
        self.assert_listen_error("no-such-host.invalid:7001", "does not resolve")

    def test_malformed_address(self):
        self.assert_listen_error("not-an-address", "neither unix:PATH nor HOST:PORT")

    def test_taken_http_and_metrics_ports(self):
        holder, port = held_port()
        self.addCleanup(holder.close)
        sock = f"unix:{self.dir}/x.sock"
        for args in ([ARGS.worker_bin, "--listen", sock, "--metrics-listen", f"127.0.0.1:{port}"],
                     [ARGS.coordinator_bin, "--listen", sock, "--worker", sock,
                      "--http-listen", f"127.0.0.1:{port}"]):
            with self.subTest(binary=os.path.basename(args[0])):
                out = run(args + ["--model", "/nonexistent/model"])
                self.assertEqual(out.returncode, 1, out.stderr)
                self.assertIn(str(port), out.stderr)
                self.assertNotIn("nonexistent/model", out.stderr)


class LogTest(Case):
    def test_lines_carry_utc_time_and_pid(self):
        address = f"unix:{self.dir}/w.sock"
        worker = self.worker(address)
        self.wait_serving(worker, address)
        coordinator = self.coordinator(f"unix:{self.dir}/c.sock", address)
        self.wait_serving(coordinator, f"unix:{self.dir}/c.sock", "moe.v1.Generation")
        for process in (worker, coordinator):
            # Ours start with a severity letter and a space (gRPC's own, if any, "I1203").
            lines = [l for l in process.output().splitlines() if re.match(r"[DIWEF] ", l)]
            self.assertGreaterEqual(len(lines), 2, process.output())
            for line in lines:
                match = LOG_LINE.match(line)
                self.assertIsNotNone(match, f"not a log line: {line!r}")
                self.assertEqual(int(match.group(1)), process.pid, line)

    def test_log_level_warning_drops_info_lines(self):
        address = f"unix:{self.dir}/w.sock"
        worker = self.worker(address, "--log-level=warning")
        self.wait_serving(worker, address)
        coordinator = self.coordinator(f"unix:{self.dir}/c.sock", address, "--log-level", "warning")
        self.wait_serving(coordinator, f"unix:{self.dir}/c.sock", "moe.v1.Generation")
        worker.stop()  # the coordinator warns that its worker is gone
        wait_for(lambda: "W " in coordinator.output(), 10, "the coordinator's warning")
        coordinator.stop()
        self.assertNotRegex(worker.output(), r"(?m)^I ")
        self.assertNotRegex(coordinator.output(), r"(?m)^I ")
        self.assertRegex(coordinator.output(), r"(?m)^W .*not answering")

    def test_log_level_debug_is_accepted_and_a_bad_one_names_the_choices(self):
        for binary in (ARGS.moe_bin, ARGS.worker_bin, ARGS.coordinator_bin):
            with self.subTest(binary=os.path.basename(binary)):
                out = run([binary, "--log-level=verbose", "info"])
                self.assertEqual(out.returncode, 1, out.stderr)
                self.assertIn("debug, info, warning, error", out.stderr)
        out = run([ARGS.moe_bin, "--log-level=debug", "info", "--model", ARGS.model])
        self.assertEqual(out.returncode, 0, out.stderr)


class GenerateTest(Case):
    def generate(self, *flags):
        out = run([ARGS.moe_bin, "generate", "--prompt", PROMPT, "--temperature", "0",
                   "--threads", "1"] + list(flags), timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout, out.stderr

    def test_stop_strings_in_process_and_through_a_server(self):
        full, err = self.generate("--model", ARGS.model, "--max-new-tokens", "32")
        self.assertRegex(err, r"finish (eos|length);")
        self.assertTrue(full.endswith("\n"))
        text = full[:-1]
        self.assertGreater(len(text), 16, text)
        stop = text[8:12]
        expected = text[:text.find(stop)] + "\n"
        local, err = self.generate("--model", ARGS.model, "--max-new-tokens", "32",
                                   "--stop", "never in this text", f"--stop={stop}")
        self.assertEqual(local, expected)
        self.assertIn("finish stop;", err)

        worker_address, address = f"unix:{self.dir}/w.sock", f"unix:{self.dir}/c.sock"
        worker = self.worker(worker_address)
        coordinator = self.coordinator(address, worker_address)
        self.wait_serving(worker, worker_address)
        self.wait_serving(coordinator, address, "moe.v1.Generation")
        remote, err = self.generate("--server", address, "--max-new-tokens", "32",
                                    "--stop", "never in this text", f"--stop={stop}")
        self.assertEqual(remote, expected)
        self.assertIn("finish stop;", err)
        remote, err = self.generate("--server", address, "--max-new-tokens", "32")
        self.assertEqual(remote, full)
        self.assertRegex(err, r"finish (eos|length);")
        self.assertNotIn("FINISH_REASON", err)

    def test_cli_and_http_api_share_their_defaults(self):
        """`moe generate` with no sampling or length flag gives the text of an HTTP request
        that leaves those fields out (so the server applies the shared defaults): same
        seed, same sampled text, if and only if temperature, top-p, top-k and the token
        limit agree."""
        out = run([ARGS.moe_bin, "generate", "--model", ARGS.model, "--prompt", PROMPT,
                   "--seed", "5", "--threads", "1"], timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("finish ", out.stderr)
        worker_address, port = f"unix:{self.dir}/w.sock", free_port()
        worker = self.worker(worker_address)
        self.wait_serving(worker, worker_address)
        coordinator = self.coordinator(f"unix:{self.dir}/c.sock", worker_address,
                                       "--http-listen", f"127.0.0.1:{port}")
        self.wait_serving(coordinator, f"unix:{self.dir}/c.sock", "moe.v1.Generation")
        body = json.dumps({"model": os.path.basename(ARGS.model.rstrip("/")), "prompt": PROMPT,
                           "seed": 5}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as r:
            reply = json.loads(r.read())
        self.assertEqual(reply["choices"][0]["text"] + "\n", out.stdout)
        generated = int(re.search(r"(\d+) new", out.stderr).group(1))
        self.assertEqual(reply["usage"]["completion_tokens"], generated)

    def test_finish_length_is_spelled_length(self):
        _, err = self.generate("--model", ARGS.model, "--max-new-tokens", "2")
        self.assertIn("2 new, finish length;", err)


class ServerCommandTest(Case):
    def test_health_exit_codes(self):
        self.assertEqual(run([ARGS.moe_bin, "health"]).returncode, 1)  # usage
        unreachable = self.health(f"unix:{self.dir}/nobody.sock")
        self.assertEqual(unreachable.returncode, 4, unreachable.stderr)
        worker_address, address = f"unix:{self.dir}/w.sock", f"unix:{self.dir}/c.sock"
        coordinator = self.coordinator(address, worker_address)  # no worker yet
        def not_serving():
            self.assertTrue(coordinator.alive(), coordinator.output())
            return self.health(address, "moe.v1.Generation").returncode == 3
        wait_for(not_serving, 60, "the coordinator to answer NOT_SERVING")
        self.assertEqual(self.health(address, "moe.v1.Generation").stdout, "NOT_SERVING\n")
        self.worker(worker_address)
        self.wait_serving(coordinator, address, "moe.v1.Generation")
        self.assertEqual(self.health(address, "moe.v1.Generation").stdout, "SERVING\n")
        unknown = self.health(address, "no.such.Service")
        self.assertEqual(unknown.returncode, 1, unknown.stderr)  # NOT_FOUND: another error

    def test_set_policy_keeps_what_it_is_not_given(self):
        address = f"unix:{self.dir}/w.sock"
        worker = self.worker(address, "--policy", "lfu", "--cache-per-layer", "2")
        self.wait_serving(worker, address)
        def set_policy(*flags):
            out = run([ARGS.moe_bin, "set-policy", "--worker", address] + list(flags))
            self.assertEqual(out.returncode, 0, out.stderr)
            return out.stdout
        self.assertEqual(set_policy("--cache-per-layer", "3"), "policy lfu, 3 experts per layer\n")
        self.assertEqual(set_policy("--policy", "fifo"), "policy fifo, 3 experts per layer\n")
        self.assertEqual(set_policy(), "policy fifo, 3 experts per layer\n")
        stats = run([ARGS.moe_bin, "worker-stats", "--worker", address])
        self.assertRegex(stats.stdout, r'"policy": "fifo"')


class InfoTest(Case):
    def test_no_gpu_reads_no_cuda_device(self):
        out = run([ARGS.moe_bin, "info", "--model", ARGS.model])
        self.assertEqual(out.returncode, 0, out.stderr)
        cuda = re.search(r"(?m)^backend cuda +(.*)$", out.stdout)
        self.assertIsNotNone(cuda, out.stdout)
        self.assertNotIn("cudaError", out.stdout)
        # A GPU lists itself as "NAME (sm_XY) MEMORY".
        self.assertRegex(cuda.group(1), r"^no CUDA device|^not compiled with CUDA|\(sm_\d+\)")


class PythonClientTest(Case):
    CLIENT = os.path.join(SOURCE_DIR, "clients", "python", "moe_client.py")

    def test_without_grpc_it_says_what_to_install(self):
        # -S: no site directories, so Debian's grpc and protobuf cannot be imported.
        out = run(["/usr/bin/python3", "-S", self.CLIENT, "health", "--server", "unix:/nonexistent"])
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertNotIn("Traceback", out.stderr)
        self.assertIn("apt-get install python3-grpcio python3-protobuf", out.stderr)
        self.assertIn("pip install grpcio protobuf", out.stderr)

    def test_another_python3_reruns_under_the_system_one(self):
        others = [p for p in (os.path.join(d, "python3") for d in os.environ.get("PATH", "").split(":"))
                  if os.access(p, os.X_OK)
                  and os.path.realpath(p) != os.path.realpath("/usr/bin/python3")]
        probe = [p for p in others
                 if run([p, "-c", "import grpc"]).returncode != 0]
        if not probe:
            self.skipTest("no python3 without grpc on PATH besides /usr/bin/python3")
        stub_dir = os.path.join(ARGS.build_dir, "python_stubs")
        if run(["/usr/bin/python3", "-c", "import grpc"]).returncode != 0 or not os.path.isdir(stub_dir):
            self.skipTest("no grpc or stubs for /usr/bin/python3")
        out = run([probe[0], self.CLIENT, "health", "--server", f"unix:{self.dir}/nobody.sock",
                   "--stub-dir", stub_dir])
        self.assertNotIn("Traceback", out.stderr)
        self.assertEqual(out.returncode, 4, out.stderr)  # it ran, and found no server
        self.assertIn("UNAVAILABLE", out.stderr)


class DeployTest(Case):
    def unit_command(self, unit, env):
        with open(os.path.join(SOURCE_DIR, "deploy", "systemd", unit)) as f:
            line = next(l for l in f if l.startswith("ExecStart="))
        words = []
        for word in line[len("ExecStart="):].split():
            bare = re.fullmatch(r"\$(\w+)", word)
            if bare:  # systemd: an unbraced $VAR alone is split into words
                words += env.get(bare.group(1), "").split()
            else:
                words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
        binary = os.path.basename(words[0])
        words[0] = {"moe-expert-worker": ARGS.worker_bin, "moe-coordinator": ARGS.coordinator_bin}[binary]
        return words

    def test_unit_flags_are_all_known(self):
        env = {}
        with open(os.path.join(SOURCE_DIR, "deploy", "systemd", "moe.env")) as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    key, value = line.rstrip("\n").split("=", 1)
                    env[key] = value
        self.assertIn("--metrics-listen", env["MOE_WORKER_FLAGS"])
        env["MOE_MODEL"] = "/nonexistent/model"
        env["MOE_WORKER_SOCKET"] = f"{self.dir}/w.sock"
        env["MOE_COORDINATOR_SOCKET"] = f"{self.dir}/c.sock"
        # Free ports instead of the shipped ones, which may be taken on this machine.
        for key in ("MOE_WORKER_FLAGS", "MOE_COORDINATOR_FLAGS"):
            env[key] = re.sub(r"127\.0\.0\.1:\d+", lambda _: f"127.0.0.1:{free_port()}", env[key])
        for unit in ("moe-expert-worker.service", "moe-coordinator.service"):
            with self.subTest(unit=unit):
                args = self.unit_command(unit, env)
                self.assertIn("--metrics-listen=127.0.0.1:", " ".join(args))
                out = run(args)
                self.assertEqual(out.returncode, 1, out.stderr)
                self.assertNotIn("Unknown command line flag", out.stderr)
                self.assertIn("nonexistent/model", out.stderr)  # got as far as the model

    def test_run_local_passes_flags_and_metrics_to_the_worker(self):
        port = free_port()
        sockets = os.path.join(self.dir, "s")
        script = self.start("run_local", ["bash", os.path.join(SOURCE_DIR, "deploy", "run_local.sh"),
                                          "--model", ARGS.model, "--socket-dir", sockets,
                                          "--bin-dir", ARGS.build_dir, "--cache-per-layer", "3",
                                          "--worker-metrics", f"127.0.0.1:{port}",
                                          "--worker-flag", "--log-level=warning",
                                          "--worker-flag=--max-call-tokens=512"],
                            new_session=True)
        self.addCleanup(lambda: script.alive() and os.killpg(script.pid, signal.SIGKILL))
        def ready():
            self.assertTrue(script.alive(), script.output())
            return "Ctrl-C stops both" in script.output()
        wait_for(ready, 90, "run_local.sh to be ready")
        self.assertIn(f"http://127.0.0.1:{port}/metrics", script.output())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        self.assertRegex(metrics, r"(?m)^moe_worker_cache_slots_per_layer 3(\.0)?$")
        self.assertEqual(script.stop(signal.SIGTERM, timeout=30), 0, script.output())
        # --log-level=warning reached the worker: none of its info lines, the coordinator's are there.
        self.assertNotIn("moe-expert-worker serving", script.output())
        self.assertIn("moe-coordinator serving", script.output())


class RunStudiesTest(Case):
    def test_progress_out_dir_and_tracked_docs_untouched(self):
        if run(["/usr/bin/python3", "-c", "import matplotlib"]).returncode != 0:
            self.skipTest("no matplotlib for /usr/bin/python3 (tools/setup.sh installs it)")
        docs = os.path.join(SOURCE_DIR, "docs", "studies")
        def digest():
            h = hashlib.sha256()
            for root, dirs, files in sorted(os.walk(docs)):  # kjv-qwen3's studies in a folder
                for name in sorted(files):
                    path = os.path.join(root, name)
                    with open(path, "rb") as f:
                        h.update(os.path.relpath(path, docs).encode() + f.read())
            return h.hexdigest()
        before = digest()
        out_dir = os.path.join(self.dir, "studies")
        out = run(["bash", os.path.join(SOURCE_DIR, "tools", "run_studies.sh"), "--build",
                   ARGS.build_dir, "--out", out_dir, "--quick"], timeout=240)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("[1/12 0:", out.stderr)
        self.assertIn("[12/12 ", out.stderr)
        self.assertIn("docs/studies untouched", out.stderr)
        for name in ("hit_ratio.jsonl", "recall.jsonl", "ablation.jsonl", "hit_ratio.png"):
            self.assertTrue(os.path.getsize(os.path.join(out_dir, name)) > 0, name)
        self.assertEqual(digest(), before)
        refused = run(["bash", os.path.join(SOURCE_DIR, "tools", "run_studies.sh"), "--quick",
                       "--update-docs"])
        self.assertEqual(refused.returncode, 2)


class HttpQuickStartTest(Case):
    def quick_start(self):
        """The shell lines of README's "Over HTTP" block, continuation lines joined."""
        with open(os.path.join(SOURCE_DIR, "README.md")) as f:
            readme = f.read()
        section = readme[readme.index("### Over HTTP"):]
        block = section[section.index("```\n") + 4:]
        block = block[:block.index("```")]
        return [l.strip() for l in block.replace("\\\n", " ").splitlines() if l.strip()]

    def test_readme_commands_stream_token_by_token(self):
        if shutil.which("curl") is None:
            self.skipTest("no curl")
        lines = self.quick_start()
        self.assertEqual(len(lines), 3, lines)
        port = free_port()
        def adapt(line):
            line = line.replace("build/expert_worker/moe-expert-worker", ARGS.worker_bin)
            line = line.replace("build/coordinator/moe-coordinator", ARGS.coordinator_bin)
            line = line.replace("models/kjv-moe", ARGS.model)
            line = line.replace("/tmp/moe-worker.sock", f"{self.dir}/w.sock")
            line = line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            return line.rstrip(" &")
        worker_cmd, coordinator_cmd, curl_cmd = (adapt(l) for l in lines)
        self.assertTrue(curl_cmd.startswith("curl -N "), curl_cmd)
        self.start("worker", ["bash", "-c", "exec " + worker_cmd])
        coordinator = self.start("coordinator", ["bash", "-c", "exec " + coordinator_cmd])
        def healthy():
            self.assertTrue(coordinator.alive(), coordinator.output())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for(healthy, 60, "the coordinator's /health")
        # The page the README points at.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            self.assertIn("<html", r.read().decode().lower())

        curl = subprocess.Popen(["bash", "-c", curl_cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=ENV)
        self.addCleanup(curl.stdout.close)
        self.addCleanup(lambda: curl.poll() is None and curl.kill())
        arrivals = []  # (seconds, line) of every data: line as curl hands it on
        for line in curl.stdout:
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line[6:].strip()))
        self.assertEqual(curl.wait(60), 0)
        self.assertEqual(arrivals[-1][1], "[DONE]")
        chunks = arrivals[:-1]
        texts = [json.loads(d)["choices"][0]["delta"].get("content", "") for _, d in chunks
                 if json.loads(d).get("choices")]
        self.assertGreater(len([t for t in texts if t]), 10, texts)
        # Token by token: the events come spread over the generation, not in one burst at
        # the end (each token takes milliseconds of compute here).
        spread = chunks[-1][0] - chunks[0][0]
        self.assertGreater(spread, 0.02, arrivals)
        distinct = len({round(t, 3) for t, _ in chunks})
        self.assertGreater(distinct, len(chunks) // 2, arrivals)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    for flag in ("--model", "--worker-bin", "--coordinator-bin", "--moe-bin", "--build-dir"):
        parser.add_argument(flag, required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
