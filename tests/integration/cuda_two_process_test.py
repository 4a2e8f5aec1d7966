#!/usr/bin/env python3
"""The two processes on one GPU: activations cross through a CUDA IPC arena.

Starts a real moe-expert-worker --device cuda and moe-coordinator --device cuda on unix
sockets, checks that the worker attached the coordinator's device arena (not the host
fallback), that RunExperts went through the activation ring beside it (the ring in
shared host memory, x and out in the device arena; docs/architecture.md, "The ring on
CUDA"), and that the greedy text equals the CPU pair's; then once more with the worker's
ring off (every call an RPC on the device arena), which must give the same text. Needs only the binaries (the
C++ client `moe generate --server` and `moe health`), no Python gRPC, so it also runs
from the GPU bundle (tools/make_bundle.sh).

  cuda_two_process_test.py --model DIR --worker-bin BIN --coordinator-bin BIN --moe-bin BIN

Exits 77 (ctest's SKIP_RETURN_CODE) with the reason when `moe info` lists no CUDA device.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
PROMPT = "And the LORD said unto Moses,"
NEW_TOKENS = 24
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
SETPRIV = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
# What `moe info` prints on the cuda line when there is no usable device.
NO_DEVICE = ("not compiled", "failed", "no cuda", "unavailable", "unimplemented")


def log(message):
    print(f"[cuda_two_process_test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


def cuda_devices(args):
    """The cuda line of `moe info` when it lists a device, else None (and why)."""
    run = subprocess.run([args.moe_bin, "info", "--model", args.model], capture_output=True,
                         env=ENV, timeout=120)
    if run.returncode != 0:
        raise SystemExit(f"moe info failed: {run.stderr.decode()}")
    for line in run.stdout.decode().splitlines():
        if line.startswith("backend cuda"):
            devices = line[len("backend cuda"):].strip()
            if devices and not any(word in devices.lower() for word in NO_DEVICE):
                return devices, None
            return None, devices or "no device listed"
    return None, "moe info lists no cuda backend"


class Pair:
    """One worker and one coordinator in a temp dir, each with `device` (None: default)."""

    def __init__(self, args, name, device, worker_flags=()):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix=f"moe-{name}-")
        self.worker_addr = f"unix:{self.dir}/worker.sock"
        self.addr = f"unix:{self.dir}/moe.sock"
        self.logs = {}
        flags = ["--device", device] if device else []
        self.procs = []
        try:
            self.start("worker", [args.worker_bin, "--model", args.model, "--listen",
                                  self.worker_addr, *flags, *worker_flags], self.worker_addr, "")
            self.start("coordinator", [args.coordinator_bin, "--model", args.model, "--worker",
                                       self.worker_addr, "--listen", self.addr, *flags],
                       self.addr, "moe.v1.Generation")
        except BaseException:
            self.stop()
            raise

    def start(self, name, argv, address, service):
        path = os.path.join(self.dir, f"{name}.log")
        self.logs[name] = path
        with open(path, "wb") as out:
            proc = subprocess.Popen(SETPRIV + argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=ENV)
        self.procs.append(proc)
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.output(name)}")
            health = subprocess.run([self.args.moe_bin, "health", "--server", address,
                                     "--service", service], capture_output=True, env=ENV,
                                    timeout=30)
            if health.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not serve within 120 s:\n{self.output(name)}")
            time.sleep(0.2)

    def output(self, name):
        with open(self.logs[name], "rb") as f:
            return f.read().decode("utf-8", "replace")

    def generate(self):
        run = subprocess.run([self.args.moe_bin, "generate", "--server", self.addr, "--prompt",
                              PROMPT, "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS)],
                             capture_output=True, env=ENV, timeout=300)
        if run.returncode != 0:
            raise AssertionError(f"moe generate --server failed: {run.stderr.decode()}\n"
                                 f"worker:\n{self.output('worker')}\n"
                                 f"coordinator:\n{self.output('coordinator')}")
        return run.stdout.decode()

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs = []


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--model", "--worker-bin", "--coordinator-bin", "--moe-bin"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--keep-logs", help="copy the processes' logs into this folder")
    args = parser.parse_args()
    args.model = os.path.abspath(args.model)

    devices, why = cuda_devices(args)
    if devices is None:
        print(f"SKIPPED: no CUDA device ({why}); this test needs one GPU", flush=True)
        return SKIP
    log(f"CUDA device(s): {devices}")

    pairs = []
    try:
        cpu = Pair(args, "cpu-pair", None)
        pairs.append(cpu)
        cpu_text = cpu.generate()
        log(f"CPU pair: {cpu_text!r}")
        cpu.stop()

        gpu = Pair(args, "cuda-pair", "cuda")
        pairs.append(gpu)
        gpu_text = gpu.generate()
        log(f"CUDA pair: {gpu_text!r}")
        gpu.stop()
        worker_log, coordinator_log = gpu.output("worker"), gpu.output("coordinator")
        failures = []
        if "attached device arena" not in worker_log:
            failures.append("the worker never attached the coordinator's device arena")
        if "through the device arena (CUDA IPC)" not in coordinator_log:
            failures.append("the coordinator did not send activations through the device arena")
        if "CUDA IPC; calls through its ring" not in worker_log:
            failures.append("the worker did not serve the ring beside the device arena")
        if "through the device arena (CUDA IPC), calls through the activation ring" \
                not in coordinator_log:
            failures.append("the coordinator did not call through the ring on the device arena")
        if gpu_text != cpu_text:
            failures.append(f"greedy text differs: CUDA {gpu_text!r} vs CPU {cpu_text!r}")

        rpc = Pair(args, "cuda-pair-rpc", "cuda", worker_flags=["--ring=false"])
        pairs.append(rpc)
        rpc_text = rpc.generate()
        log(f"CUDA pair, ring off: {rpc_text!r}")
        rpc.stop()
        if "CUDA IPC; calls by RPC" not in rpc.output("worker"):
            failures.append("with --ring=false the worker still served a ring")
        if rpc_text != cpu_text:
            failures.append(f"greedy text differs: CUDA by RPC {rpc_text!r} vs CPU {cpu_text!r}")
        if failures:
            print("FAILED:\n  " + "\n  ".join(failures), flush=True)
            print(f"--- worker log ---\n{worker_log}\n--- coordinator log ---\n{coordinator_log}")
            return 1
        print("PASSED: the CUDA pair shared its activations by CUDA IPC, called through the ring "
              "(and by RPC with it off), and matched the CPU pair", flush=True)
        return 0
    finally:
        for pair in pairs:
            pair.stop()
            if args.keep_logs:
                os.makedirs(args.keep_logs, exist_ok=True)
                for name, path in pair.logs.items():
                    if os.path.exists(path):
                        shutil.copy(path, os.path.join(args.keep_logs,
                                                       f"{os.path.basename(pair.dir)}-{name}.log"))
            shutil.rmtree(pair.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
