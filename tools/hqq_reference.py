#!/usr/bin/env python3
"""An independent numpy implementation of the quantizer of common/quant/hqq.cc
(docs/quantization.md): min-max scales meta-quantized to 8 bits per 128 groups, zeros by
round-to-nearest or by HQQ's half-quadratic solver (p = 0.7, beta = 10, kappa = 1.01, at
most 20 iterations, per-group early stop keeping the best), zeros meta-quantized the same
way, codes against the stored scale and zero. It recomputes the relative weight errors
||W - W^|| / ||W|| of attention and experts from the source safetensors and checks them
against the ones `moe convert` recorded in a converted model's manifest.

  hqq_reference.py --source models/kjv-moe --converted build/converted/hqq_4_3 [--tolerance 0.003]
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

META = 128


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[b:e]
        if info["dtype"] == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            a = np.frombuffer(raw, np.float16).astype(np.float32)
        else:
            a = np.frombuffer(raw, np.float32)
        tensors[name] = a.reshape(info["shape"])
    return tensors


def meta_quantize(v):
    """8-bit min-max over consecutive runs of META values; returns the stored values."""
    out = np.empty_like(v)
    for b in range(0, len(v), META):
        x = v[b:b + META]
        lo, hi = np.float32(x.min()), np.float32(x.max())
        step = np.float32((hi - lo) / np.float32(255))
        code = np.clip(np.rint((x - lo) / step), 0, 255) if step > 0 else np.zeros_like(x)
        out[b:b + META] = lo + step * code.astype(np.float32)
    return out


def shrink(x, beta, p):
    a = np.abs(x)
    with np.errstate(divide="ignore"):
        s = np.maximum(a - np.power(a, p - 1) / beta, 0)
    return np.sign(x) * s


def quantize(w, bits, group, method):
    """Returns the dequantized matrix as stored."""
    qmax = np.float32(2 ** bits - 1)
    g = w.reshape(-1, group).astype(np.float32)
    mn, mx = g.min(1), g.max(1)
    scale = np.maximum((mx - mn) / qmax, np.maximum(np.abs(mx), 1e-12) * 1e-4).astype(np.float32)
    s = meta_quantize(scale)[:, None]
    z = (-mn[:, None] / s).astype(np.float32)
    if method == "hqq":
        best_z, best_err = z.copy(), np.full(z.shape, np.inf)
        active = np.ones(z.shape, bool)
        beta = 10.0
        for _ in range(20):
            q = np.clip(np.rint(g * (1 / s) + z), 0, qmax)
            e = g - s * (q - z)
            err = np.abs(e).sum(1, keepdims=True)
            improved = active & (err < best_err)
            best_err = np.where(improved, err, best_err)
            best_z = np.where(improved, z, best_z)
            active &= improved
            if not active.any():
                break
            we = shrink(e, beta, 0.7)
            z = np.where(active, (q - (g - we) * (1 / s)).mean(1, keepdims=True), z).astype(np.float32)
            beta *= 1.01
        z = best_z
    z = meta_quantize(z[:, 0])[:, None]
    q = np.clip(np.rint(g * (1 / s) + z), 0, qmax)
    return (s * (q - z)).reshape(w.shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--converted", required=True)
    ap.add_argument("--tolerance", type=float, default=0.003,
                    help="largest relative difference of each error from the manifest's")
    args = ap.parse_args()
    manifest = json.load(open(os.path.join(args.converted, "manifest.json")))
    tensors = read_safetensors(os.path.join(args.source, "model.safetensors"))
    sums = {"attn": [0.0, 0.0], "expert": [0.0, 0.0]}
    for name, w in tensors.items():
        if ".self_attn." in name:
            spec, kind = manifest["attention"], "attn"
        elif ".experts." in name:
            spec, kind = manifest["experts"], "expert"
        else:
            continue
        if spec["bits"] == 16:
            continue
        w = w.astype(np.float32)
        r = quantize(w, spec["bits"], spec["group_size"], manifest["method"])
        sums[kind][0] += float(((w.astype(np.float64) - r) ** 2).sum())
        sums[kind][1] += float((w.astype(np.float64) ** 2).sum())
    ok = True
    for kind, (e, n) in sums.items():
        if n == 0:
            continue
        ours = (e / n) ** 0.5
        theirs = manifest["stats"][f"{kind}_rel_error"]
        diff = abs(ours - theirs) / theirs
        print(f"{kind}: reference {ours:.6f}, moe convert {theirs:.6f}, relative difference {diff:.2e}")
        ok &= diff <= args.tolerance
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
