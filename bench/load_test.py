#!/usr/bin/env python3
"""Load test of a running (or launched) moe-offload deployment, over loopback only.

N concurrent streaming clients share a fixed number of greedy requests (prompts taken in
turn from a small list) and the script reports throughput, time to first token and
inter-token latency (p50/p99), and every request's end. Optionally it kills the expert
worker (SIGKILL) once, after a given number of requests have finished; the supervisor
(deploy/run_local.sh with --launch) or nobody restarts it.

  bench/load_test.py --stub-dir build/python_stubs --launch --model models/kjv-moe \\
      --bin-dir build --clients 32 --requests 200 --max-new-tokens 16 [--kill-worker-after 60]
  bench/load_test.py --stub-dir DIR --server unix:/tmp/moe.sock --clients 8 --requests 40

--phases CLIENTS:REQUESTS,... runs several loads one after another against the same
deployment (e.g. 1:8,32:200: one stream alone, then 32 at once) and reports each phase
and the ratios of every later phase to the first, measured side by side in one run.
With --launch it also reports the worker's bytes copied into its cache per generated
token (GetStats before and after each phase), and under "cache" the phase's demand loads
(misses), hinted loads (prefetch_loads), hinted loads then used (prefetch_hits), hits
and RunExperts calls; --worker-flag passes flags to the worker
(e.g. --worker-flag=--link-gbps=16), --coordinator-flag to the coordinator (e.g.
--coordinator-flag=--max-batch-tokens=256).

Latency as the client sees it (time.monotonic() when the Python client's iterator hands
over a response): ttft from sending the request to the first token; itl_* ("inter-token")
pools the gaps between successive token messages of every request; tpot_* is per
request, (last token - first token) / (tokens - 1), its p50/p99 over requests. The
coordinator writes one message per token, but when the client's thread (or the server's
writer) gets no core for a while, several messages are read back to back: their gaps are
~0 and a later one carries the whole wait, so itl_p50 understates a fast stream's gap
(it can be 50x below tpot at one stream on a loaded machine) while tpot does not depend
on how the messages were read. Compare streams by tpot. Under "cpu_per_wall_s" each phase
says how many cores this client, the coordinator and the worker kept busy (seconds of CPU
per second of the phase) and, for the two servers, "_waiting": seconds their threads were
runnable with no core free (/proc schedstat), i.e. what the machine's other load took.

A request "completes" when its stream ends with a finish reason and as many tokens as
asked (or EOS); greedy requests with the same prompt must then carry the same token ids
(a mismatch is an error). UNAVAILABLE and RESOURCE_EXHAUSTED are explicit "retry later"
answers: the client retries the same request after a backoff (counted as `refused`),
until --give-up-s. Anything else (another status, a stream that ends without a finish
reason, a hang past --request-timeout-s, a token mismatch) is an error. Exit status: 0
when errors == 0 (and with --launch, run_local.sh stopped with status 0), else 1.
--json FILE writes the figures.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python"))
import moe_client  # noqa: E402

PROMPTS = [
    "And the LORD said unto Moses,",
    "In the beginning",
    "Blessed are the",
    "And God said,",
    "The LORD is my shepherd;",
    "And it came to pass",
    "Now the serpent was",
    "For God so loved",
]
RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def schedstat_seconds(pid):
    """(seconds on a CPU, seconds runnable but waiting for one) of a process, summed over
    its live threads (/proc/PID/task/*/schedstat); None when it is gone. Threads that
    ended meanwhile are not counted."""
    run = wait = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                fields = f.read().split()
        except OSError:
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return (run / 1e9, wait / 1e9)


class Deployment:
    """deploy/run_local.sh in its own session: the addresses and the worker's pid."""

    def __init__(self, args):
        self.log_path = os.path.join(args.work_dir, "run_local.log")
        self._log = open(self.log_path, "wb")
        argv = ["bash", os.path.join(SOURCE_DIR, "deploy", "run_local.sh"), "--model", args.model,
                "--bin-dir", args.bin_dir, "--cache-per-layer", str(args.cache_per_layer),
                "--socket-dir", os.path.join(args.work_dir, "sockets")]
        for flag in args.worker_flag:
            argv += ["--worker-flag", flag]
        argv += ["--", "--max-requests", str(max(c for c, _ in args.phases)),
                 *args.coordinator_flag]
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(args.threads))
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + 120
        while "Ctrl-C stops both" not in self.output():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"run_local.sh did not start:\n{self.output()}")
            time.sleep(0.1)
        out = self.output()
        self.address = re.search(r"coordinator \(moe.v1.Generation\)\s+(\S+)", out).group(1)
        self.worker_address = re.search(r"expert worker\s+(\S+)\s+pid \d+", out).group(1)
        self.worker_pid = int(re.search(r"expert worker .* pid (\d+)", out).group(1))
        self.coordinator_pid = int(re.search(r"coordinator \(moe.v1.Generation\)\s+\S+\s+pid (\d+)",
                                             out).group(1))

    def cpu_seconds(self):
        """schedstat_seconds of the coordinator and the worker."""
        return {"coordinator": schedstat_seconds(self.coordinator_pid),
                "worker": schedstat_seconds(self.worker_pid)}

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def restarts(self):
        return len(re.findall(r"restarted as pid \d+", self.output()))

    def stop(self):
        """SIGTERM to the launcher; its exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


class Load:
    def __init__(self, args, stubs, address, clients, requests, on_progress=None):
        self.args, self.stubs, self.address = args, stubs, address
        self.clients, self.requests = clients, requests
        self.on_progress = on_progress
        self.lock = threading.Lock()
        self.next_request = 0
        self.done = 0
        self.records = []  # one dict per request

    def take(self):
        with self.lock:
            if self.next_request >= self.requests:
                return None
            i = self.next_request
            self.next_request += 1
            return i

    def one_attempt(self, channel, prompt):
        """(outcome, token ids, ttft, gaps, code, tpot): outcome 'complete', 'retry' or 'error'."""
        req = moe_client.make_request(self.stubs, prompt, max_new_tokens=self.args.max_new_tokens,
                                      temperature=0.0, top_p=0.0)
        ids, gaps, ttft, last = [], [], None, None
        start = previous = first = time.monotonic()
        try:
            for response in moe_client.stream_generate(self.stubs, channel, req,
                                                       timeout=self.args.request_timeout_s):
                now = time.monotonic()
                if response.token_ids:
                    if ttft is None:
                        ttft = now - start
                        first = now
                    else:
                        gaps.append((now - previous) / len(response.token_ids))
                    previous = now
                    ids.extend(response.token_ids)
                if response.finish_reason:
                    last = response
        except grpc.RpcError as e:
            if e.code() in RETRY_CODES and not ids:
                return "retry", ids, None, [], e.code().name, None
            return "error", ids, ttft, gaps, f"{e.code().name}: {e.details()}", None
        if last is None:
            return "error", ids, ttft, gaps, "the stream ended without a finish reason", None
        full = (len(ids) == self.args.max_new_tokens or
                last.finish_reason == self.stubs.generation_pb2.FINISH_REASON_EOS)
        if not full:
            return "error", ids, ttft, gaps, f"only {len(ids)} tokens", None
        # Time per output token: first token to last over the tokens between them, as the
        # client saw them; unlike a gap it does not depend on how the messages were read.
        tpot = (previous - first) / (len(ids) - 1) if len(ids) > 1 else None
        return "complete", ids, ttft, gaps, "OK", tpot

    def client(self):
        with grpc.insecure_channel(self.address) as channel:
            while True:
                i = self.take()
                if i is None:
                    return
                prompt = PROMPTS[i % len(PROMPTS)]
                record = {"request": i, "prompt": prompt, "refused": [], "started": time.monotonic()}
                backoff = 0.05
                while True:
                    outcome, ids, ttft, gaps, code, tpot = self.one_attempt(channel, prompt)
                    if outcome != "retry":
                        break
                    record["refused"].append(code)
                    if time.monotonic() - record["started"] > self.args.give_up_s:
                        outcome, code = "error", f"still refused after {self.args.give_up_s} s: {code}"
                        break
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
                record.update(outcome=outcome, ids=ids, ttft=ttft, gaps=gaps, code=code, tpot=tpot,
                              ended=time.monotonic())
                with self.lock:
                    self.records.append(record)
                    self.done += 1
                    done = self.done
                if self.on_progress:
                    self.on_progress(done)

    def run(self):
        threads = [threading.Thread(target=self.client, daemon=True)
                   for _ in range(self.clients)]
        start = time.monotonic()
        for t in threads:
            t.start()
        limit = start + self.args.max_run_s
        for t in threads:
            t.join(timeout=max(0.0, limit - time.monotonic()))
        wall = time.monotonic() - start
        hung = sum(t.is_alive() for t in threads)
        return wall, hung


def summarize(load, wall, hung):
    records = load.records
    complete = [r for r in records if r["outcome"] == "complete"]
    errors = [r for r in records if r["outcome"] == "error"]
    # Greedy: one prompt, one continuation. The first complete one is the reference.
    reference, mismatches = {}, 0
    for r in sorted(complete, key=lambda r: r["request"]):
        expected = reference.setdefault(r["prompt"], r["ids"])
        if r["ids"] != expected:
            mismatches += 1
    tokens = sum(len(r["ids"]) for r in complete)
    ttfts = [r["ttft"] for r in complete if r["ttft"] is not None]
    gaps = [g for r in complete for g in r["gaps"]]
    tpots = [r["tpot"] for r in complete if r["tpot"] is not None]
    missing = load.requests - len(records)  # never ended (hung clients)
    return {
        "clients": load.clients,
        "requests": load.requests,
        "max_new_tokens": load.args.max_new_tokens,
        "wall_s": round(wall, 3),
        "complete": len(complete),
        "errors": len(errors) + mismatches + missing,
        "error_samples": sorted({r["code"] for r in errors})[:5],
        "token_mismatches": mismatches,
        "never_ended": missing,
        "hung_clients": hung,
        "refused_attempts": sum(len(r["refused"]) for r in records),
        "requests_refused_at_least_once": sum(1 for r in records if r["refused"]),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1) if wall > 0 else 0,
        "requests_per_s": round(len(complete) / wall, 2) if wall > 0 else 0,
        "ttft_p50_ms": round(1e3 * percentile(ttfts, 50), 2),
        "ttft_p99_ms": round(1e3 * percentile(ttfts, 99), 2),
        "itl_p50_ms": round(1e3 * percentile(gaps, 50), 2),
        "itl_p99_ms": round(1e3 * percentile(gaps, 99), 2),
        "tpot_p50_ms": round(1e3 * percentile(tpots, 50), 2),
        "tpot_p99_ms": round(1e3 * percentile(tpots, 99), 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stub-dir", default=os.environ.get("MOE_STUB_DIR"))
    parser.add_argument("--server", help="a running coordinator (unix:PATH or HOST:PORT)")
    parser.add_argument("--launch", action="store_true", help="start deploy/run_local.sh")
    parser.add_argument("--model", default=os.path.join(SOURCE_DIR, "models", "kjv-moe"))
    parser.add_argument("--bin-dir", default=os.path.join(SOURCE_DIR, "build"))
    parser.add_argument("--cache-per-layer", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="with --launch: OMP_NUM_THREADS of both processes")
    parser.add_argument("--work-dir", help="for --launch: sockets and the log (default: a temp dir)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--kill-worker-after", type=int, default=0,
                        help="SIGKILL the worker once this many requests have ended (--launch)")
    parser.add_argument("--request-timeout-s", type=float, default=120)
    parser.add_argument("--give-up-s", type=float, default=60,
                        help="stop retrying a refused request after this long")
    parser.add_argument("--max-run-s", type=float, default=600, help="bound on the whole run")
    parser.add_argument("--phases", help="CLIENTS:REQUESTS,... run one after another "
                        "(default: --clients:--requests)")
    parser.add_argument("--worker-flag", action="append", default=[],
                        help="with --launch: a flag for the worker (repeatable)")
    parser.add_argument("--coordinator-flag", action="append", default=[],
                        help="with --launch: a flag for the coordinator (repeatable)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    try:
        args.phases = ([tuple(int(v) for v in phase.split(":")) for phase in args.phases.split(",")]
                       if args.phases else [(args.clients, args.requests)])
        if any(len(p) != 2 or p[0] < 1 or p[1] < 1 for p in args.phases):
            raise ValueError
    except ValueError:
        parser.error("--phases takes CLIENTS:REQUESTS,... with both >= 1")
    if bool(args.server) == bool(args.launch):
        parser.error("give --server ADDR or --launch")
    if args.kill_worker_after and not args.launch:
        parser.error("--kill-worker-after needs --launch (it must know the worker)")
    stubs = moe_client.load_stubs(args.stub_dir)

    deployment = None
    if args.launch:
        if not args.work_dir:
            import tempfile
            args.work_dir = tempfile.mkdtemp(prefix="moe-load-")
        os.makedirs(args.work_dir, exist_ok=True)
        deployment = Deployment(args)
    address = deployment.address if deployment else args.server

    killed = {}

    def on_progress(done):
        if args.kill_worker_after and done == args.kill_worker_after and not killed:
            killed["at_s"] = time.monotonic()
            os.kill(deployment.worker_pid, signal.SIGKILL)
            print(f"load_test: killed the worker (pid {deployment.worker_pid}) after {done} "
                  "requests", file=sys.stderr, flush=True)

    # Where the copied bytes go: demand loads (misses) and hinted loads, with the hinted
    # ones that were then used; and the worker's calls (steps x layers).
    counted = ("misses", "prefetch_loads", "prefetch_hits", "hits")

    def worker_counters():
        if not deployment:
            return None
        with grpc.insecure_channel(deployment.worker_address) as channel:
            stub = stubs.expert_worker_pb2_grpc.ExpertWorkerStub(channel)
            stats = stub.GetStats(stubs.expert_worker_pb2.GetStatsRequest(), timeout=10)
        figures = {name: getattr(stats.total, name) for name in counted}
        figures["bytes_copied"] = stats.bytes_copied
        figures["run_experts_calls"] = stats.run_experts_calls
        return figures

    phases = []
    try:
        for clients, requests in args.phases:
            before = worker_counters()
            cpu_before = deployment.cpu_seconds() if deployment else {}
            client_before = time.process_time()
            load = Load(args, stubs, address, clients, requests, on_progress)
            wall, hung = load.run()
            phase = summarize(load, wall, hung)
            # Where the machine's CPU went meanwhile, per second of the phase (2.0 = two
            # cores busy): this client's own threads compete with the step; "_waiting" is
            # time a process's threads were ready to run but had no core.
            cpu_after = deployment.cpu_seconds() if deployment else {}
            # (The client's threads have ended by now: their waits are not known.)
            share = {"client": round((time.process_time() - client_before) / max(wall, 1e-9), 3)}
            for name, spent in cpu_after.items():
                earlier = cpu_before.get(name)
                both = spent is not None and earlier is not None
                share[name] = round((spent[0] - earlier[0]) / max(wall, 1e-9), 3) if both else None
                share[name + "_waiting"] = (round((spent[1] - earlier[1]) / max(wall, 1e-9), 3)
                                            if both else None)
            phase["cpu_per_wall_s"] = share
            if before is not None:
                after = worker_counters()
                delta = {name: after[name] - before[name] for name in after}
                copied = delta.pop("bytes_copied")
                phase["bytes_copied"] = copied
                phase["bytes_copied_per_token"] = round(copied / max(phase["tokens"], 1), 1)
                phase["cache"] = delta
            phases.append(phase)
    finally:
        status = deployment.stop() if deployment else 0
    if len(phases) == 1:
        figures = phases[0]
    else:
        first = phases[0]
        figures = {"phases": phases,
                   "errors": sum(p["errors"] for p in phases),
                   "hung_clients": sum(p["hung_clients"] for p in phases)}
        for later in phases[1:]:
            ratio = {"tokens_per_s": round(later["tokens_per_s"] / max(first["tokens_per_s"], 1e-9), 2),
                     "itl_p50": round(later["itl_p50_ms"] / max(first["itl_p50_ms"], 1e-9), 2),
                     "tpot_p50": round(later["tpot_p50_ms"] / max(first["tpot_p50_ms"], 1e-9), 2)}
            if "bytes_copied_per_token" in first:
                ratio["bytes_copied_per_token"] = round(
                    later["bytes_copied_per_token"] / max(first["bytes_copied_per_token"], 1e-9), 3)
            figures[f"clients_{later['clients']}_vs_{first['clients']}"] = ratio
    if deployment:
        figures["worker_killed"] = bool(killed)
        figures["worker_restarts"] = deployment.restarts()
        figures["launcher_exit_status"] = status
    print(json.dumps(figures, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    ok = figures["errors"] == 0 and figures["hung_clients"] == 0 and status == 0
    if args.kill_worker_after and not killed:
        print("load_test: the worker was never killed (too few requests?)", file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
