"""A worker and a coordinator with the HTTP API, for the HTTP integration tests.

Reuses two_process_test's process helpers (each child dies with the test). The
coordinator's GET /health answers 200 once it serves and its worker answers, which is
what start() waits for.
"""

import json
import os
import tempfile
import shutil
import subprocess
import urllib.error
import urllib.request

import two_process_test as tp


def http_get(url, headers=None, timeout=5):
    """(status, body bytes) of a GET; (None, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return None, b""


class HttpFleet:
    """moe-expert-worker on a unix socket and moe-coordinator with --http-listen."""

    def __init__(self, name, worker_bin, coordinator_bin, model, worker_flags=(),
                 coordinator_flags=()):
        self.dir = tempfile.mkdtemp(prefix=f"moe-{name}-")
        self.port = tp.free_tcp_port()
        self.base = f"http://127.0.0.1:{self.port}"
        worker_addr = f"unix:{self.dir}/worker.sock"
        self.worker = tp.Process("worker", [worker_bin, "--model", model, "--listen", worker_addr,
                                            *worker_flags], self.dir)
        self.coordinator = tp.Process(
            "coordinator", [coordinator_bin, "--model", model, "--worker", worker_addr,
                            "--listen", f"unix:{self.dir}/moe.sock",
                            "--http-listen", f"127.0.0.1:{self.port}", *coordinator_flags],
            self.dir)

        def healthy():
            for p in (self.worker, self.coordinator):
                if not p.alive():
                    raise AssertionError(f"{p.name} exited with {p.popen.returncode}:\n{p.output()}")
            return http_get(self.base + "/health")[0] == 200
        tp.wait_for(healthy, 60, f"the coordinator's /health at {self.base}")

    def metric(self, name):
        """The value of an unlabelled series of the coordinator's /metrics."""
        status, body = http_get(self.base + "/metrics")
        assert status == 200, status
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    def stop(self):
        for p in (self.coordinator, self.worker):
            p.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def cli_greedy(moe_bin, model, prompt, max_new_tokens):
    """`moe generate --temperature 0` in-process: its text without the final newline."""
    run = subprocess.run([moe_bin, "generate", "--model", model, "--prompt", prompt,
                          "--temperature", "0", "--max-new-tokens", str(max_new_tokens)],
                         capture_output=True, env=tp.ENV, timeout=300)
    if run.returncode != 0:
        raise AssertionError(f"moe generate failed: {run.stderr.decode()}")
    text = run.stdout.decode()
    return text[:-1] if text.endswith("\n") else text


def post_json(url, body, headers=None, timeout=60):
    """(status, parsed JSON) of a POST."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
