#!/usr/bin/python3
"""Trains a bundled fixture model on the King James Bible and writes its reference outputs:
models/kjv-moe (Mixtral layout, --family mixtral, the default) or models/kjv-qwen3
(Qwen3-MoE layout, --family qwen3_moe: per-head q/k norms, 16 experts, top-4).

    /usr/bin/python3 tools/train_fixture.py --steps N [--seed S] [--family F] [--out DIR]
    /usr/bin/python3 tools/train_fixture.py --reference-only [--out DIR]

Needs only Debian packages: python3-torch, python3-numpy, python3-sentencepiece and
bible-kjv (`bible -f gen1:1-rev22:21` prints the text, one verse a line, each prefixed
with a reference such as "Ge1:1", which is stripped).

Data: every 50th chapter (chapter index % 50 == 25, 24 of 1189 chapters, ~2%) is held
out; the rest is training text. Each chapter becomes its verses' tokens followed by
EOS BOS; training samples start at a verse start with BOS at position 0.

Outputs under --out:
  config.json, model.safetensors (BF16, HF names, one file), tokenizer.model
  (sentencepiece BPE, vocab 2000, unk 0 / bos 1 / eos 2, byte fallback), heldout.txt
  (held-out chapters, one a line, verses joined by spaces), train_log.txt,
  reference/reference.json + reference/logits_<i>.npy (computed from the exported BF16
  weights, read back in fp32).

The script re-executes itself with OMP_NUM_THREADS=2, MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ set (glibc malloc tuning, ~1.7x faster training on CPU).
"""

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

ENV_DEFAULTS = {
    "OMP_NUM_THREADS": "2",
    "MALLOC_MMAP_THRESHOLD_": "1000000000",
    "MALLOC_TRIM_THRESHOLD_": "1000000000",
}
if any(k not in os.environ for k in ENV_DEFAULTS) and os.environ.get("_KJV_REEXEC") != "1":
    env = dict(os.environ)
    for k, v in ENV_DEFAULTS.items():
        env.setdefault(k, v)
    env["_KJV_REEXEC"] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import sentencepiece as spm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import mixtral_torch as mt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 2000
HELDOUT_EVERY, HELDOUT_OFFSET = 50, 25
BOS, EOS = 1, 2
PROMPTS = ["In the beginning", "And the LORD said unto Moses,", "Blessed are the"]
GREEDY_NEW = 40

MODEL_CFG = dict(
    vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
    rope_theta=1e6, rms_norm_eps=1e-5, max_position_embeddings=1024, tie_word_embeddings=False,
    sliding_window=None, bos_token_id=BOS, eos_token_id=EOS,
)
# The second family's fixture: smaller experts, but twice as many and top-4, so that
# routing spreads over more experts per layer than Mixtral's 2 of 8.
MODEL_CFGS = {
    "mixtral": MODEL_CFG,
    "qwen3_moe": dict(
        MODEL_CFG, model_type="qwen3_moe", hidden_size=128, head_dim=32, intermediate_size=64,
        dense_intermediate_size=256, num_local_experts=16, num_experts_per_tok=4,
        norm_topk_prob=True),
}
DEFAULT_OUT = {"mixtral": "kjv-moe", "qwen3_moe": "kjv-qwen3"}


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------

REF_RE = re.compile(r"^([0-9]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def read_bible():
    """Returns a list of chapters, each a list of verse strings (references stripped)."""
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    chapters = []
    key = None
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        m = REF_RE.match(line)
        if not m:
            raise ValueError(f"unexpected line: {line[:80]!r}")
        k = (m.group(1), int(m.group(2)))
        if k != key:
            chapters.append([])
            key = k
        chapters[-1].append(" ".join(m.group(4).split()))
    return chapters


def split_chapters(chapters):
    train, held = [], []
    for i, ch in enumerate(chapters):
        (held if i % HELDOUT_EVERY == HELDOUT_OFFSET else train).append(ch)
    return train, held


def train_tokenizer(train_chapters, out_dir, log):
    txt = os.path.join(out_dir, "_spm_train.txt")
    with open(txt, "w", encoding="utf-8") as f:
        for ch in train_chapters:
            for v in ch:
                f.write(v + "\n")
    prefix = os.path.join(out_dir, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=txt, model_prefix=prefix, model_type="bpe", vocab_size=VOCAB,
        character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        input_sentence_size=1000000, shuffle_input_sentence=False, seed_sentencepiece_size=1000000,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_digits=True, num_threads=1, minloglevel=2,
    )
    os.remove(txt)
    os.remove(prefix + ".vocab")
    log(f"tokenizer: trained {prefix}.model")


def build_stream(sp, chapters):
    """Token stream (int64) of chapters, each verses... EOS BOS; and verse start offsets."""
    toks, starts = [], []
    for ch in chapters:
        for v in ch:
            starts.append(len(toks))
            toks.extend(sp.encode(v))
        toks.extend([EOS, BOS])
    return np.asarray(toks, dtype=np.int64), np.asarray(starts, dtype=np.int64)


def eval_windows(stream, starts, seq):
    """Non-overlapping windows beginning at verse starts: list of start offsets."""
    out = []
    nxt = 0
    for s in starts:
        if s >= nxt and s + seq <= len(stream):
            out.append(int(s))
            nxt = s + seq
    return out


def make_batch(stream, offs, seq):
    """inputs [B, seq] = BOS + stream[s : s+seq-1]; targets [B, seq] = stream[s : s+seq]."""
    tgt = np.stack([stream[s:s + seq] for s in offs])
    inp = np.concatenate([np.full((len(offs), 1), BOS, dtype=np.int64), tgt[:, :-1]], axis=1)
    return torch.from_numpy(inp), torch.from_numpy(tgt)


@torch.no_grad()
def evaluate(model, stream, starts, seq, batch=16):
    model.eval()
    wins = eval_windows(stream, starts, seq)
    tot, n = 0.0, 0
    E = model.cfg.num_local_experts
    usage = np.zeros((model.cfg.num_hidden_layers, E))
    for i in range(0, len(wins), batch):
        inp, tgt = make_batch(stream, wins[i:i + batch], seq)
        out = model(inp)
        loss = F.cross_entropy(out["logits"].reshape(-1, out["logits"].shape[-1]), tgt.reshape(-1), reduction="sum")
        tot += float(loss)
        n += tgt.numel()
        for li, rl in enumerate(out["router_logits"]):
            sel = torch.topk(rl, model.cfg.num_experts_per_tok, dim=-1).indices
            usage[li] += np.bincount(sel.reshape(-1).numpy(), minlength=E)
    model.train()
    usage /= usage.sum(axis=1, keepdims=True)
    return tot / n, usage


def fmt_usage(usage):
    return " | ".join(f"L{i}: " + " ".join(f"{100 * u:4.1f}" for u in row) for i, row in enumerate(usage))


# --------------------------------------------------------------------------------------
# Reference outputs
# --------------------------------------------------------------------------------------

def write_reference(out_dir, log=print):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out_dir, "tokenizer.model"))
    model = mt.load_hf_dir(out_dir)  # fp32 upcast of the stored BF16 weights
    ref_dir = os.path.join(out_dir, "reference")
    os.makedirs(ref_dir, exist_ok=True)
    for fn in os.listdir(ref_dir):
        os.remove(os.path.join(ref_dir, fn))
    with open(os.path.join(out_dir, "heldout.txt"), encoding="utf-8") as f:
        held = [line.rstrip("\n") for line in f if line.strip()]
    # one short sequence and two longer ones, from different held-out chapters. For the
    # long ones, of 6 candidate chapters the one whose router top-k choices are furthest
    # from a tie is taken (deterministic), so engines with other rounding agree on routing.
    def best_of(first, n_tokens, n_cand=6):
        cands = [[BOS] + sp.encode(held[(first + j) % len(held)])[:n_tokens - 1] for j in range(n_cand)]
        return max(cands, key=lambda t: mt.router_margins(model, t))

    seqs = [
        [BOS] + sp.encode(held[0])[:7],
        best_of(1, 48),
        best_of(len(held) // 2, 64),
    ]
    cases = []
    min_rm = float("inf")
    for i, toks in enumerate(seqs):
        fn = f"logits_{i}.npy"
        mt.write_npy(os.path.join(ref_dir, fn), mt.logits(model, toks))
        rm = mt.router_margins(model, toks)
        min_rm = min(min_rm, rm)
        cases.append({"tokens": toks, "logits": fn, "text": sp.decode(toks[1:]), "min_router_margin": rm})
    greedy = []
    min_gm = float("inf")
    for p in PROMPTS:
        ptoks = [BOS] + sp.encode(p)
        new, gm = mt.greedy(model, ptoks, GREEDY_NEW, EOS, return_margin=True)
        min_gm = min(min_gm, gm)
        rm = mt.router_margins(model, ptoks + new[:-1])
        min_rm = min(min_rm, rm)
        g = {"prompt": p, "prompt_tokens": ptoks, "max_new_tokens": GREEDY_NEW, "tokens": new,
             "text": sp.decode(new), "full_text": sp.decode(ptoks + new),
             "min_router_margin": rm, "min_logit_margin": gm}
        greedy.append(g)
        log(f"greedy: {g['full_text']!r}")
    ref = {"cases": cases, "greedy": greedy, "min_router_margin": min_rm, "min_greedy_margin": min_gm}
    with open(os.path.join(ref_dir, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")
    log(f"reference: {len(cases)} logits cases, {len(greedy)} greedy; min router margin {min_rm:.3g},"
        f" min greedy logit margin {min_gm:.3g}")


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1100)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--family", choices=sorted(MODEL_CFGS), default="mixtral")
    ap.add_argument("--out", default=None, help="default: models/kjv-moe or models/kjv-qwen3")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--aux-coef", type=float, default=0.02)
    ap.add_argument("--intermediate", type=int, default=None, help="expert width (default: the family's)")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--reference-only", action="store_true",
                    help="recompute reference/ from the exported model in --out, no training")
    args = ap.parse_args()
    out = os.path.abspath(args.out or os.path.join(REPO, "models", DEFAULT_OUT[args.family]))
    model_cfg = MODEL_CFGS[args.family]
    if args.intermediate is not None:
        model_cfg = dict(model_cfg, intermediate_size=args.intermediate)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    if args.reference_only:
        write_reference(out)
        return

    os.makedirs(out, exist_ok=True)
    cmd_parts = ["/usr/bin/python3", "tools/train_fixture.py"] + [a for a in sys.argv[1:]]
    command = " ".join(shlex.quote(c) for c in cmd_parts)
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    log(f"reproduce (from the repository root): {command}")
    log(f"env: " + " ".join(f"{k}={os.environ.get(k)}" for k in ENV_DEFAULTS) + f"; torch {torch.__version__}")
    t_start = time.time()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    chapters = read_bible()
    train_ch, held_ch = split_chapters(chapters)
    log(f"text: {len(chapters)} chapters, {sum(len(c) for c in chapters)} verses; held out {len(held_ch)} chapters")
    with open(os.path.join(out, "heldout.txt"), "w", encoding="utf-8") as f:
        for ch in held_ch:
            f.write(" ".join(ch) + "\n")
    train_tokenizer(train_ch, out, log)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))
    tr_stream, tr_starts = build_stream(sp, train_ch)
    ho_stream, ho_starts = build_stream(sp, held_ch)
    log(f"tokens: train {len(tr_stream)}, held-out {len(ho_stream)}")
    tr_starts = tr_starts[tr_starts + args.seq <= len(tr_stream)]

    cfg = mt.MixtralConfig(**model_cfg)
    model = mt.MixtralForCausalLM(cfg)
    mt.init_weights(model, std=0.02, residual_scale=1.0 / math.sqrt(2 * cfg.num_hidden_layers))
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model: {json.dumps(cfg.to_dict())}; {nparams / 1e6:.2f}M parameters")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    def lr_at(step):  # step-count schedule: linear warmup, cosine decay to min_lr_ratio * lr
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))

    log(f"training: steps={args.steps} batch={args.batch} seq={args.seq} lr={args.lr} warmup={args.warmup} "
        f"cosine->{args.min_lr_ratio}x wd={args.weight_decay} aux_coef={args.aux_coef} seed={args.seed}")
    model.train()
    t_train = time.time()
    acc_loss, acc_aux, acc_n = 0.0, 0.0, 0
    usage = np.zeros((cfg.num_hidden_layers, cfg.num_local_experts))
    curve = []
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        offs = rng.choice(tr_starts, size=args.batch)
        inp, tgt = make_batch(tr_stream, offs, args.seq)
        outp = model(inp)
        ce = F.cross_entropy(outp["logits"].reshape(-1, cfg.vocab_size), tgt.reshape(-1))
        loss = ce + args.aux_coef * outp["aux_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc_loss += float(ce)
        acc_aux += float(outp["aux_loss"])
        acc_n += 1
        with torch.no_grad():
            for li, rl in enumerate(outp["router_logits"]):
                sel = torch.topk(rl, cfg.num_experts_per_tok, dim=-1).indices
                usage[li] += np.bincount(sel.reshape(-1).numpy(), minlength=cfg.num_local_experts)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps or step < 3:
            el = time.time() - t_train
            u = usage / usage.sum(axis=1, keepdims=True)
            msg = (f"step {step + 1}/{args.steps} loss {acc_loss / acc_n:.4f} aux {acc_aux / acc_n:.4f} "
                   f"lr {lr_at(step):.2e} elapsed {el:.0f}s ({el / (step + 1):.2f}s/step)")
            log(msg)
            print("  expert usage % " + fmt_usage(u), flush=True)
            curve.append((step + 1, acc_loss / acc_n))
            acc_loss, acc_aux, acc_n = 0.0, 0.0, 0
            usage[:] = 0
        if (step + 1) % args.eval_every == 0 and step + 1 != args.steps:
            hl, hu = evaluate(model, ho_stream, ho_starts, args.seq)
            log(f"  held-out loss {hl:.4f} at step {step + 1}")
    train_wall = time.time() - t_train

    hl32, hu = evaluate(model, ho_stream, ho_starts, args.seq)
    log(f"final held-out loss (fp32 weights): {hl32:.4f}")
    mt.export_hf_dir(model, cfg, out, "BF16")
    exported = mt.load_hf_dir(out)
    hl16, hu16 = evaluate(exported, ho_stream, ho_starts, args.seq)
    log(f"final held-out loss (exported BF16 weights): {hl16:.4f}")
    log("held-out expert usage % (BF16 model, top-k assignments per layer):")
    for i, row in enumerate(hu16):
        log(f"  layer {i}: " + " ".join(f"{100 * u:4.1f}" for u in row))
    write_reference(out, log)
    total_wall = time.time() - t_start
    final_train = curve[-1][1] if curve else float("nan")
    summary = {
        "command": command, "steps": args.steps, "seed": args.seed, "batch": args.batch, "seq_len": args.seq,
        "tokens_seen": args.steps * args.batch * args.seq, "train_wall_s": round(train_wall, 1),
        "total_wall_s": round(total_wall, 1), "final_train_loss": round(final_train, 4),
        "heldout_loss_fp32": round(hl32, 4), "heldout_loss_bf16": round(hl16, 4),
        "params": nparams,
    }
    log("summary: " + json.dumps(summary))
    with open(os.path.join(out, "train_log.txt"), "w", encoding="utf-8") as f:
        f.write(f"{os.path.basename(out)} training log ({args.family})\n")
        f.write("loss curve (step, mean train cross-entropy over the preceding log interval):\n")
        f.write("  " + ", ".join(f"{s}:{l:.3f}" for s, l in curve) + "\n\n")
        for line in log_lines:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
