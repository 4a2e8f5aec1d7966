#!/usr/bin/env python3
"""Both processes' /metrics read by a Prometheus text parser (python3-prometheus-client).

Starts a worker (--metrics-listen) and a coordinator (--http-listen and
--metrics-listen), runs a generation, and checks each endpoint: the parser accepts it,
every family is contiguous and declared once, no layer="all" series sits beside the
per-layer ones, the standard process_* metrics are there, and the figures moved.

  prometheus_format_test.py --model DIR --worker-bin BIN --coordinator-bin BIN
"""

import argparse
import sys

from prometheus_client.parser import text_string_to_metric_families

import http_fleet
import two_process_test as tp

PROCESS = ["process_cpu_seconds", "process_resident_memory_bytes", "process_virtual_memory_bytes",
           "process_start_time_seconds", "process_open_fds", "process_max_fds"]


def check(name, text):
    """Parses one scrape and checks its form; returns {family: [samples]}."""
    families = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"{name}: family {family.name} appears twice"
        families[family.name] = family.samples
    # Contiguous: once a family's lines end, none of them comes back.
    seen, current = set(), None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
        elif line and not line.startswith("#"):
            sample = line.split("{")[0].split(" ")[0]
            family = next((f for f in sorted(families, key=len, reverse=True)
                           if sample == f or sample.startswith(f + "_")), sample)
        else:
            continue
        if family != current:
            assert family not in seen, f"{name}: family {family} is split:\n{text}"
            seen.add(family)
            current = family
    for family, samples in families.items():
        for s in samples:
            assert s.labels.get("layer") != "all", f"{name}: {s.name} has a layer=\"all\" series"
    for p in PROCESS:
        assert p in families, f"{name}: no {p} (has {sorted(families)})"
    return families


def value(families, family, sample_name=None, **labels):
    for s in families[family]:
        if (sample_name is None or s.name == sample_name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {family} {labels}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--model", "--worker-bin", "--coordinator-bin"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    worker_port, metrics_port = tp.free_tcp_port(), tp.free_tcp_port()
    fleet = http_fleet.HttpFleet(
        "prom", args.worker_bin, args.coordinator_bin, args.model,
        worker_flags=["--cache-per-layer", "2", "--metrics-listen", f"127.0.0.1:{worker_port}"],
        coordinator_flags=["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    try:
        status, reply = http_fleet.post_json(fleet.base + "/v1/completions",
                                             {"model": "kjv-moe", "prompt": "And God said,",
                                              "max_tokens": 16, "temperature": 0})
        assert status == 200, reply
        scrapes = {}
        for name, url in (("worker", f"http://127.0.0.1:{worker_port}/metrics"),
                          ("coordinator --metrics-listen", f"http://127.0.0.1:{metrics_port}/metrics"),
                          ("coordinator --http-listen", fleet.base + "/metrics")):
            status, body = http_fleet.http_get(url)
            assert status == 200, (name, status)
            scrapes[name] = check(name, body.decode())
            print(f"{name}: {len(scrapes[name])} families, parsed", flush=True)
        w = scrapes["worker"]
        layers = {s.labels["layer"] for s in w["moe_worker_expert_hits"]}
        assert layers == {str(i) for i in range(len(layers))} and layers, layers
        assert sum(s.value for s in w["moe_worker_expert_hits"] + w["moe_worker_expert_misses"]) > 0
        histograms = [("worker", "moe_worker_run_experts_latency_seconds"),
                      ("coordinator --http-listen", "moe_coordinator_first_token_latency_seconds"),
                      ("coordinator --http-listen", "moe_coordinator_inter_token_latency_seconds")]
        for scrape, family in histograms:
            samples = scrapes[scrape][family]
            buckets = [s for s in samples if s.name == family + "_bucket"]
            count = value(scrapes[scrape], family, family + "_count")
            assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == count > 0, samples
            assert all(a.value <= b.value for a, b in zip(buckets, buckets[1:])), samples
            assert value(scrapes[scrape], family, family + "_sum") > 0
        # 16 tokens: the first, then 15 gaps between tokens.
        assert value(scrapes["coordinator --http-listen"], "moe_coordinator_inter_token_latency_seconds",
                     "moe_coordinator_inter_token_latency_seconds_count") == 15
        c = scrapes["coordinator --http-listen"]
        assert value(c, "moe_coordinator_requests", outcome="ok") == 1
        assert value(c, "moe_coordinator_generated_tokens") == 16
        assert value(c, "process_cpu_seconds") > 0
        return 0
    finally:
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
