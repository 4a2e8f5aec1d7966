#!/usr/bin/python3
"""Creates tiny, randomly initialised checkpoints of every family read (Mixtral,
Qwen2-MoE, Qwen3-MoE, OLMoE) with reference outputs.

    /usr/bin/python3 tools/make_random_checkpoints.py --out DIR

For every case, DIR/<name>/ holds config.json, the weights (model.safetensors, or
model-0000i-of-0000N.safetensors + model.safetensors.index.json), reference.json and
logits_<i>.npy (float32 [T, V], C order). Deterministic: fixed seeds per case.

reference.json:
  {"cases":  [{"tokens": [1, ...], "logits": "logits_0.npy"}, ...],
   "greedy": [{"prompt_tokens": [1, ...], "max_new_tokens": 8, "tokens": [...new...]}],
   "min_router_margin": float,   # smallest k-th minus (k+1)-th router prob (tie distance)
   "min_greedy_margin": float}   # smallest top1 - top2 logit gap during greedy decoding
The references are computed in fp32 from the weights as stored (re-read from disk), so
F16/BF16 cases match the rounded weights exactly. Token sequences are redrawn until no
router top-k choice / greedy argmax is within a small margin of a tie.
"""

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import mixtral_torch as mt  # noqa: E402

torch.set_num_threads(1)

BASE = dict(num_hidden_layers=2, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=256,
            bos_token_id=1, eos_token_id=2)

# name, config overrides, dtype, shard bytes (None: single file), weight std
CASES = [
    ("f32_mha_e2_top1_tied",
     dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4,
          num_local_experts=2, num_experts_per_tok=1, tie_word_embeddings=True), "F32", None, 0.25),
    ("f16_gqa2_e4_top2",
     dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
          num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False), "F16", None, 0.2),
    ("bf16_gqa4_e8_top2",
     dict(vocab_size=128, hidden_size=64, intermediate_size=64, num_attention_heads=8, num_key_value_heads=2,
          num_local_experts=8, num_experts_per_tok=2, tie_word_embeddings=False), "BF16", None, 0.2),
    ("f32_headdim16_e4_top2_tied",
     dict(vocab_size=80, hidden_size=48, intermediate_size=80, num_attention_heads=4, num_key_value_heads=2,
          head_dim=16, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=True), "F32", None, 0.2),
    ("bf16_sharded_gqa4_e4_top1",
     dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=1,
          num_local_experts=4, num_experts_per_tok=1, tie_word_embeddings=False), "BF16", 130000, 0.2),
    ("f16_sliding5_gqa2_e8_top2",
     dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
          num_local_experts=8, num_experts_per_tok=2, tie_word_embeddings=False, sliding_window=5),
     "F16", None, 0.3),
    # The other families, F32 and sharded BF16 each (tools/mixtral_torch.py lists what
    # differs). Qwen2-MoE: shared expert and dense layers (mlp_only_layers, then
    # decoder_sparse_step), renormalised and not.
    ("qwen2_moe_f32_shared_dense",
     dict(model_type="qwen2_moe", vocab_size=72, hidden_size=32, intermediate_size=24,
          dense_intermediate_size=56, shared_expert_intermediate_size=40, num_hidden_layers=3,
          mlp_only_layers=[1], num_attention_heads=4, num_key_value_heads=2, num_local_experts=6,
          num_experts_per_tok=2, norm_topk_prob=False, tie_word_embeddings=False), "F32", None, 0.25),
    ("qwen2_moe_bf16_sharded_step2",
     dict(model_type="qwen2_moe", vocab_size=64, hidden_size=64, intermediate_size=32,
          dense_intermediate_size=48, shared_expert_intermediate_size=64, num_hidden_layers=4,
          decoder_sparse_step=2, num_attention_heads=4, num_key_value_heads=2, num_local_experts=8,
          num_experts_per_tok=2, norm_topk_prob=True, tie_word_embeddings=True), "BF16", 60000, 0.2),
    # Qwen3-MoE: per-head q/k norms, head_dim explicit (q_dim 64 != hidden 32), top-4 of 16.
    ("qwen3_moe_f32_e16_top4",
     dict(model_type="qwen3_moe", vocab_size=80, hidden_size=32, intermediate_size=16,
          dense_intermediate_size=64, head_dim=16, num_attention_heads=4, num_key_value_heads=2,
          num_local_experts=16, num_experts_per_tok=4, norm_topk_prob=True, tie_word_embeddings=False),
     "F32", None, 0.3),
    ("qwen3_moe_bf16_sharded",
     dict(model_type="qwen3_moe", vocab_size=96, hidden_size=64, intermediate_size=32,
          dense_intermediate_size=64, head_dim=32, num_attention_heads=4, num_key_value_heads=1,
          num_local_experts=8, num_experts_per_tok=2, norm_topk_prob=True, tie_word_embeddings=False),
     "BF16", 70000, 0.2),
    # The largest routing the worker is sized for (Qwen3-30B-A3B's): top-8 of 128.
    ("qwen3_moe_f32_e128_top8",
     dict(model_type="qwen3_moe", vocab_size=64, hidden_size=32, intermediate_size=8,
          dense_intermediate_size=32, head_dim=8, num_attention_heads=4, num_key_value_heads=2,
          num_local_experts=128, num_experts_per_tok=8, norm_topk_prob=True, tie_word_embeddings=True),
     "F32", None, 0.5),
    # For `moe bench` on the families without a trained fixture: the bundled tokenizer's
    # vocabulary (its tokenizer.model is copied in), so that text can be decoded.
    ("qwen2_moe_bench_tokenizer",
     dict(model_type="qwen2_moe", vocab_size=2000, hidden_size=32, intermediate_size=32,
          dense_intermediate_size=64, shared_expert_intermediate_size=32, num_hidden_layers=4,
          mlp_only_layers=[2], num_attention_heads=4, num_key_value_heads=2, num_local_experts=8,
          num_experts_per_tok=2, norm_topk_prob=False, tie_word_embeddings=False), "BF16", None, 0.3),
    ("olmoe_bench_tokenizer",
     dict(model_type="olmoe", vocab_size=2000, hidden_size=32, intermediate_size=32,
          num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, num_local_experts=8,
          num_experts_per_tok=2, norm_topk_prob=False, clip_qkv=1.0, tie_word_embeddings=False),
     "BF16", None, 0.3),
    # OLMoE: q/k norms over the whole projection, clip_qkv, weights not renormalised.
    ("olmoe_f32_clip",
     dict(model_type="olmoe", vocab_size=64, hidden_size=32, intermediate_size=24,
          num_attention_heads=4, num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=3,
          norm_topk_prob=False, clip_qkv=0.6, tie_word_embeddings=False), "F32", None, 0.3),
    ("olmoe_bf16_sharded",
     dict(model_type="olmoe", vocab_size=80, hidden_size=64, intermediate_size=32,
          num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
          norm_topk_prob=False, tie_word_embeddings=True), "BF16", 60000, 0.2),
]

SEQ_LEN = 12
N_SEQS = 2
GREEDY_PROMPT_LEN = 4
GREEDY_NEW = 8
MIN_ROUTER_MARGIN = 1e-3
MIN_GREEDY_MARGIN = 1e-2


def make_case(out_root: str, idx: int, name: str, overrides: dict, dtype: str, shard_bytes, std: float) -> str:
    cfg = mt.MixtralConfig(**{**BASE, **overrides})
    gen = torch.Generator().manual_seed(1000 + idx)
    model = mt.MixtralForCausalLM(cfg)
    mt.init_weights(model, std=std, norm_std=0.2, generator=gen)
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    for fn in os.listdir(d):
        if fn.endswith(".npy") or fn == "reference.json":
            os.remove(os.path.join(d, fn))
    files = mt.export_hf_dir(model, cfg, d, dtype, shard_bytes=shard_bytes)
    if name.endswith("_tokenizer"):
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        shutil.copyfile(os.path.join(repo, "models", "kjv-moe", "tokenizer.model"),
                        os.path.join(d, "tokenizer.model"))
    ref_model = mt.load_hf_dir(d)  # the weights exactly as stored

    rng = np.random.default_rng(2000 + idx)
    V = cfg.vocab_size

    def draw(n):
        # first token BOS; the rest avoid BOS/EOS so sequences look like text
        return [1] + [int(t) for t in rng.integers(3, V, size=n - 1)]

    cases = []
    min_rm = float("inf")
    for i in range(N_SEQS):
        for _attempt in range(50):
            toks = draw(SEQ_LEN)
            rm = mt.router_margins(ref_model, toks)
            if rm >= MIN_ROUTER_MARGIN:
                break
        min_rm = min(min_rm, rm)
        fn = f"logits_{i}.npy"
        mt.write_npy(os.path.join(d, fn), mt.logits(ref_model, toks))
        cases.append({"tokens": toks, "logits": fn})

    for _attempt in range(50):
        prompt = draw(GREEDY_PROMPT_LEN)
        new, gm = mt.greedy(ref_model, prompt, GREEDY_NEW, cfg.eos_token_id, return_margin=True)
        rm = mt.router_margins(ref_model, prompt + new[:-1]) if len(new) > 1 else float("inf")
        if gm >= MIN_GREEDY_MARGIN and rm >= MIN_ROUTER_MARGIN:
            break
    min_rm = min(min_rm, rm)
    ref = {
        "cases": cases,
        "greedy": [{"prompt_tokens": prompt, "max_new_tokens": GREEDY_NEW, "tokens": new}],
        "min_router_margin": min_rm if np.isfinite(min_rm) else None,
        "min_greedy_margin": gm,
    }
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    kv_ratio = cfg.num_attention_heads // cfg.num_key_value_heads
    return (f"{name}: {cfg.model_type} dtype={dtype} files={len(files)} hidden={cfg.hidden_size} heads={cfg.num_attention_heads}"
            f"/{cfg.num_key_value_heads} (ratio {kv_ratio}) head_dim={cfg.hd} experts={cfg.num_local_experts}"
            f" top{cfg.num_experts_per_tok} tied={cfg.tie_word_embeddings} window={cfg.sliding_window}"
            f" router_margin={min_rm:.2g} greedy_margin={gm:.2g} greedy={new}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    for i, (name, ov, dtype, shard, std) in enumerate(CASES):
        print(make_case(args.out, i, name, ov, dtype, shard, std), flush=True)
    print(f"wrote {len(CASES)} checkpoints to {args.out} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
