#!/usr/bin/env python3
"""Tables (markdown, stdout) and PNG plots of tools/run_studies.sh's JSON lines."""

import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(out, with_ablation=True):
    hits = load(os.path.join(out, "hit_ratio.jsonl"))
    recall = load(os.path.join(out, "recall.jsonl"))
    experts = hits[0]["experts_per_layer"]
    # docs/studies holds kjv-moe's; another model's go to docs/studies/<its name>.
    name = os.path.basename(os.path.normpath(out))
    name = "kjv-moe" if name == "studies" else name

    print("### (a) LRU hit ratio against cache size (no prefetch)\n")
    print("| k of %d | hit ratio |\n|---|---|" % experts)
    for r in hits:
        print(f"| {r['cache_per_layer']} | {r['hit_ratio']:.3f} |")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["cache_per_layer"] for r in hits], [r["hit_ratio"] for r in hits], "o-")
    ax.set_xlabel(f"experts cached per layer (of {experts})")
    ax.set_ylabel("LRU hit ratio")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"LRU cache hit ratio, {name} held-out text")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "hit_ratio.png"), dpi=120)

    print("\n### (a) Speculative recall against experts prefetched and lookahead\n")
    depth = max(len(r["guess_recall_by_distance"]) for r in recall)
    print("| experts prefetched | " + " | ".join(f"{d} ahead" for d in range(1, depth + 1)) + " |")
    print("|---|" + "---|" * depth)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in recall:
        values = r["guess_recall_by_distance"]
        print(f"| {r['prefetch_experts']} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
        ax.plot(range(1, len(values) + 1), values, "o-", label=f"{r['prefetch_experts']} prefetched")
    ax.set_xlabel("layers ahead")
    ax.set_ylabel("recall (chosen experts guessed)")
    ax.set_xticks(range(1, depth + 1))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Speculative loading recall, {name}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "recall.png"), dpi=120)
    if not with_ablation:
        return
    ablation = load(os.path.join(out, "ablation.jsonl"))

    print("\n### (b) Ablation at %g GB/s, %d of %d experts cached\n"
          % (ablation[0]["link_gbps"], ablation[0]["cache_per_layer"], experts))
    print("| variant | decode tok/s (median of runs) | runs | hit ratio | prefetch recall | "
          "prefetch precision | MB copied / token | stall s / token |")
    print("|---|---|---|---|---|---|---|---|")
    order = ["full", "no-prefetch", "no-cache", "naive"]
    medians = {}
    for v in order:
        runs = [r for r in ablation if r["variant"] == v]
        if not runs:
            continue
        med = statistics.median(r["decode_tokens_per_s"] for r in runs)
        medians[v] = med
        r = runs[0]
        print(f"| {v} | {med:.0f} | {', '.join('%.0f' % x['decode_tokens_per_s'] for x in runs)} | "
              f"{r['hit_ratio']:.3f} | {r['prefetch_recall']:.3f} | {r['prefetch_precision']:.3f} | "
              f"{r['bytes_per_token'] / 1e6:.2f} | "
              f"{statistics.median(x['stall_s'] / x['tokens'] for x in runs) * 1e3:.3f} ms |")
    if "full" in medians and "naive" in medians:
        print(f"\nfull / naive = {medians['full'] / medians['naive']:.2f}x; "
              f"full / no-prefetch = {medians['full'] / medians['no-prefetch']:.2f}x")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(list(medians), list(medians.values()), color=["C0", "C1", "C2", "C3"][: len(medians)])
    ax.set_ylabel("decode tokens/s")
    ax.set_title("Ablation, %g GB/s link, %d/%d experts cached"
                 % (ablation[0]["link_gbps"], ablation[0]["cache_per_layer"], experts))
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ablation.png"), dpi=120)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--no-ablation"]
    main(args[0] if args else "docs/studies", with_ablation="--no-ablation" not in sys.argv)
