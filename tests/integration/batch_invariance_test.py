#!/usr/bin/env python3
"""Batch invariance through both real processes (issue 15).

A coordinator batching with a small step budget (--max-batch-tokens 24, so long prompts
are prefilled in chunks between other streams' decode rows) serves 16 streaming
requests of different prompt and output lengths, greedy and seeded, that join one after
another while the earlier ones decode and leave at different times. Each must carry
exactly the token ids of the same request run alone through the same pair, and the
coordinator's /metrics must show that steps were shared. Same arguments as
two_process_test.py, whose process helpers this reuses.
"""

import re
import threading
import urllib.request

import grpc

import two_process_test as tp

STREAMS = 16
BATCH_TOKENS = 24
PHRASES = [
    "And the LORD said unto Moses,",
    "In the beginning",
    "Blessed are the",
    "And God said,",
    "The LORD is my shepherd;",
    "And it came to pass",
    "Now the serpent was",
    "For God so loved",
]


def make_request(i):
    # Prompts of one phrase up to five (about 5 to 50 tokens), 4..33 new tokens; odd
    # requests sample with their own seed, some with top-k or top-p.
    prompt = " ".join(PHRASES[(i + j) % len(PHRASES)] for j in range(1 + i % 5))
    fields = dict(max_new_tokens=4 + (i * 11) % 30)
    if i % 2:
        fields.update(temperature=0.9, seed=100 + i, top_k=40 if i % 4 == 1 else 0)
        req = tp.moe_client.make_request(tp.STUBS, prompt, top_p=0.9 if i % 4 == 3 else 1.0,
                                         **fields)
    else:
        req = tp.request(prompt=prompt, **fields)
    return req


def stream(address, req, on_token=None):
    """(token ids, finish reason) of one streamed generation."""
    ids, finish = [], None
    with grpc.insecure_channel(address) as channel:
        for response in tp.moe_client.stream_generate(tp.STUBS, channel, req, timeout=240):
            ids.extend(response.token_ids)
            if response.token_ids and on_token:
                on_token(len(ids))
            if response.finish_reason:
                finish = response.finish_reason
    return ids, finish


def metric(text, name_and_labels):
    m = re.search("^" + re.escape(name_and_labels) + r" (\S+)$", text, re.MULTILINE)
    if m is None:
        raise AssertionError(f"{name_and_labels} not in /metrics:\n{text}")
    return float(m.group(1))


class BatchInvarianceTest(tp.TimedTestCase):

    def test_sixteen_streams_joining_and_leaving_each_equal_their_solo_run(self):
        fleet = self.make_fleet("batch")
        worker_addr, addr = fleet.sock("worker"), fleet.sock("moe")
        metrics_port = tp.free_tcp_port()
        fleet.worker(worker_addr, cache_per_layer=2)
        fleet.coordinator(addr, worker_addr, extra=[
            "--max-requests", str(STREAMS), "--max-batch-tokens", str(BATCH_TOKENS),
            "--metrics-listen", f"127.0.0.1:{metrics_port}"])
        requests = [make_request(i) for i in range(STREAMS)]

        solo = [stream(addr, req) for req in requests]
        for ids, finish in solo:
            self.assertTrue(ids and finish)

        def scrape():
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=5) as reply:
                return reply.read().decode()

        def rows_and_steps(text):
            rows = sum(metric(text, f'moe_coordinator_batch_rows_total{{kind="{kind}"}}')
                       for kind in ("prompt", "decode"))
            return rows, metric(text, "moe_coordinator_batch_steps_total")

        rows0, steps0 = rows_and_steps(scrape())
        # Request i starts once request i - 1 has its first tokens (or has ended).
        started = [threading.Event() for _ in range(STREAMS)]
        batched, errors = [None] * STREAMS, []

        def client(i):
            try:
                if i > 0:
                    started[i - 1].wait(timeout=240)

                def on_token(count):
                    if count >= 1 + i % 3:
                        started[i].set()
                batched[i] = stream(addr, requests[i], on_token)
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append((i, e))
            finally:
                started[i].set()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(STREAMS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        self.assertFalse(any(t.is_alive() for t in threads), "a client hangs")
        self.assertEqual(errors, [])
        for i in range(STREAMS):
            with self.subTest(request=i):
                self.assertEqual(batched[i], solo[i])
        rows1, steps1 = rows_and_steps(scrape())
        tp.log(f"batched: {rows1 - rows0:.0f} rows in {steps1 - steps0:.0f} steps")
        self.assertGreater(rows1 - rows0, 2 * (steps1 - steps0), "the streams did not share steps")


if __name__ == "__main__":
    tp.main()
