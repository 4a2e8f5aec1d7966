"""Independent PyTorch implementation of the sparse Mixture-of-Experts decoders the engine
reads: Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE.

Written from the semantics of Hugging Face's ``modeling_mixtral``, ``modeling_qwen2_moe``,
``modeling_qwen3_moe`` and ``modeling_olmoe`` (transformers is not imported). The families
differ only where those files do:
  qwen2_moe  q/k/v bias; softmax router, top-k renormalised iff norm_topk_prob; a shared
             expert of its own width scaled by sigmoid(shared_expert_gate(x)); dense MLP
             layers from decoder_sparse_step / mlp_only_layers
  qwen3_moe  RMSNorm over head_dim on each query and key head (q_norm, k_norm) before RoPE
  olmoe      RMSNorm over the whole projected q and k (before the head split); clip_qkv
Expert tensors are w1/w3/w2 for Mixtral, gate_proj/up_proj/down_proj for the others. Used to train the bundled fixture model and to produce the reference logits
and greedy continuations that the C++ engine is tested against.

Only Debian packages are needed: python3-torch, python3-numpy.

Contents
  MixtralConfig                   config with HF field names (config.json round trip)
  MixtralForCausalLM              nn.Module with exact HF parameter names
  load_balancing_loss             Switch/HF auxiliary loss
  save_safetensors / load_safetensors / save_sharded_safetensors
                                  minimal safetensors I/O (F32, F16, BF16)
  export_hf_dir / load_hf_dir     HF-style checkpoint directory
  logits / greedy                 fp32 reference computations
  write_npy                       float32 C-order .npy
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
ARCHITECTURES = {"mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
                 "qwen3_moe": "Qwen3MoeForCausalLM", "olmoe": "OlmoeForCausalLM"}


@dataclass
class MixtralConfig:
    """One config for every family, with Mixtral's field names; to_dict/from_dict map to the
    family's own (num_experts, moe_intermediate_size ...)."""
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336  # width of one routed expert
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: Optional[int] = None  # None -> hidden_size // num_attention_heads
    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 4096 * 32
    tie_word_embeddings: bool = False
    sliding_window: Optional[int] = None
    bos_token_id: int = 1
    eos_token_id: int = 2
    model_type: str = "mixtral"
    norm_topk_prob: bool = True  # Mixtral always renormalises
    dense_intermediate_size: int = 0  # qwen2/3_moe: width of a dense MLP layer
    shared_expert_intermediate_size: int = 0  # qwen2_moe: 0 = no shared expert
    decoder_sparse_step: int = 1
    mlp_only_layers: List[int] = dataclasses.field(default_factory=list)
    clip_qkv: Optional[float] = None  # olmoe

    @property
    def hd(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    def is_sparse(self, layer: int) -> bool:
        return layer not in self.mlp_only_layers and (layer + 1) % self.decoder_sparse_step == 0

    @classmethod
    def from_dict(cls, d: dict) -> "MixtralConfig":
        d = dict(d)
        mt_ = d.get("model_type", "mixtral")
        if mt_ not in FAMILIES:
            raise ValueError(f"model_type {mt_!r} is not one of {FAMILIES}")
        if mt_ != "mixtral":
            d["num_local_experts"] = d.pop("num_experts")
        if mt_ in ("qwen2_moe", "qwen3_moe"):
            d["dense_intermediate_size"] = d.pop("intermediate_size")
            d["intermediate_size"] = d.pop("moe_intermediate_size")
        if mt_ == "mixtral":
            d["norm_topk_prob"] = True
        elif mt_ == "qwen3_moe":
            d.setdefault("norm_topk_prob", True)
        else:
            d.setdefault("norm_topk_prob", False)
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        return cls(**kw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["head_dim"] is None:
            del d["head_dim"]  # like real Mixtral configs: derived from hidden/heads
        t = self.model_type
        if t == "mixtral":
            for k in ("norm_topk_prob", "dense_intermediate_size", "shared_expert_intermediate_size",
                      "decoder_sparse_step", "mlp_only_layers", "clip_qkv"):
                del d[k]
            return d
        d["num_experts"] = d.pop("num_local_experts")
        if t in ("qwen2_moe", "qwen3_moe"):
            d["moe_intermediate_size"] = d.pop("intermediate_size")
            d["intermediate_size"] = d.pop("dense_intermediate_size")
        else:
            del d["dense_intermediate_size"]
        if t != "qwen2_moe":
            del d["shared_expert_intermediate_size"]
        if t == "olmoe":
            del d["decoder_sparse_step"], d["mlp_only_layers"]
        else:
            del d["clip_qkv"]
        return d


DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rope_cos_sin(seq_len: int, head_dim: int, theta: float, device=None):
    """HF rotate-half convention. Returns cos, sin of shape [T, head_dim] (fp32)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def attention_mask(seq_len: int, sliding_window: Optional[int], device=None) -> torch.Tensor:
    """Boolean [T, T] mask, True where query p may attend key k: k <= p and p - k < W."""
    p = torch.arange(seq_len, device=device).unsqueeze(1)
    k = torch.arange(seq_len, device=device).unsqueeze(0)
    allowed = k <= p
    if sliding_window is not None:
        allowed = allowed & ((p - k) < sliding_window)
    return allowed


class MixtralAttention(nn.Module):
    def __init__(self, cfg: MixtralConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.hd
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        assert self.n_heads % self.n_kv == 0
        self.head_dim = hd
        bias = cfg.model_type == "qwen2_moe"
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * hd, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * hd, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * hd, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * hd, cfg.hidden_size, bias=False)
        if cfg.model_type == "qwen3_moe":  # per head, over head_dim
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps)
        elif cfg.model_type == "olmoe":  # over the whole projection, before the head split
            self.q_norm = RMSNorm(self.n_heads * hd, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.n_kv * hd, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        hd = self.head_dim
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.cfg.model_type == "olmoe":
            q, k = self.q_norm(q), self.k_norm(k)
            if self.cfg.clip_qkv is not None:
                c = self.cfg.clip_qkv
                q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q = q.view(B, T, self.n_heads, hd)
        k = k.view(B, T, self.n_kv, hd)
        if self.cfg.model_type == "qwen3_moe":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.transpose(1, 2)  # [B,nH,T,hd]
        k = k.transpose(1, 2)
        v = v.view(B, T, self.n_kv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.n_heads // self.n_kv
        if rep > 1:  # repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd)
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v)  # [B,nH,T,hd]
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * hd)
        return self.o_proj(out)


class MixtralExpert(nn.Module):
    """SwiGLU MLP: down(silu(gate(x)) * up(x)); Mixtral names them w1, w3, w2."""

    def __init__(self, cfg: MixtralConfig, width: Optional[int] = None):
        super().__init__()
        width = cfg.intermediate_size if width is None else width
        self.names = ("w1", "w3", "w2") if cfg.model_type == "mixtral" else ("gate_proj", "up_proj", "down_proj")
        g, u, dn = self.names
        setattr(self, g, nn.Linear(cfg.hidden_size, width, bias=False))
        setattr(self, dn, nn.Linear(width, cfg.hidden_size, bias=False))
        setattr(self, u, nn.Linear(cfg.hidden_size, width, bias=False))

    def forward(self, x):
        g, u, dn = (getattr(self, n) for n in self.names)
        return dn(F.silu(g(x)) * u(x))


class MixtralSparseMoeBlock(nn.Module):
    def __init__(self, cfg: MixtralConfig):
        super().__init__()
        self.num_experts = cfg.num_local_experts
        self.top_k = cfg.num_experts_per_tok
        self.norm_topk_prob = cfg.norm_topk_prob
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_local_experts, bias=False)
        self.experts = nn.ModuleList([MixtralExpert(cfg) for _ in range(cfg.num_local_experts)])
        if cfg.shared_expert_intermediate_size > 0:
            self.shared_expert = MixtralExpert(cfg, cfg.shared_expert_intermediate_size)
            self.shared_expert_gate = nn.Linear(cfg.hidden_size, 1, bias=False)

    def forward(self, x):
        B, T, H = x.shape
        x2 = x.reshape(-1, H)
        router_logits = self.gate(x2)  # [N, E]
        probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)
        topw, topi = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            topw = topw / topw.sum(dim=-1, keepdim=True)
        topw = topw.to(x.dtype)
        out = torch.zeros_like(x2)
        for e in range(self.num_experts):
            tok, slot = torch.where(topi == e)
            if tok.numel() == 0:
                continue
            y = self.experts[e](x2[tok]) * topw[tok, slot].unsqueeze(-1)
            out.index_add_(0, tok, y)
        if hasattr(self, "shared_expert"):
            out = out + torch.sigmoid(self.shared_expert_gate(x2)) * self.shared_expert(x2)
        return out.view(B, T, H), router_logits


class MixtralDecoderLayer(nn.Module):
    def __init__(self, cfg: MixtralConfig, layer: int = 0):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MixtralAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.sparse = cfg.is_sparse(layer)
        # Mixtral calls the block block_sparse_moe; the others mlp (dense or sparse).
        self.ffn_name = "block_sparse_moe" if cfg.model_type == "mixtral" else "mlp"
        block = MixtralSparseMoeBlock(cfg) if self.sparse else MixtralExpert(cfg, cfg.dense_intermediate_size)
        setattr(self, self.ffn_name, block)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        block = getattr(self, self.ffn_name)
        if not self.sparse:
            return x + block(self.post_attention_layernorm(x)), None
        h, router_logits = block(self.post_attention_layernorm(x))
        return x + h, router_logits


class MixtralModel(nn.Module):
    def __init__(self, cfg: MixtralConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([MixtralDecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


def load_balancing_loss(router_logits: Sequence[torch.Tensor], num_experts: int, top_k: int) -> torch.Tensor:
    """Switch / HF auxiliary loss, computed per layer and averaged over layers.

    per layer: num_experts * sum_e( fraction_of_tokens_routed_to_e * mean_router_prob_e ),
    where the fraction is counted per top-k slot as in HF (uniform routing gives top_k).
    """
    losses = []
    for rl in router_logits:
        probs = F.softmax(rl.float(), dim=-1)
        _, sel = torch.topk(probs, top_k, dim=-1)
        mask = F.one_hot(sel, num_experts).float()  # [N, k, E]
        tokens_per_expert = mask.mean(dim=0)  # [k, E]
        prob_per_expert = probs.mean(dim=0)  # [E]
        losses.append(num_experts * (tokens_per_expert * prob_per_expert.unsqueeze(0)).sum())
    return torch.stack(losses).mean()


class MixtralForCausalLM(nn.Module):
    def __init__(self, cfg: MixtralConfig):
        super().__init__()
        self.cfg = cfg
        self.model = MixtralModel(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        else:
            self.lm_head = None

    def head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, input_ids: torch.Tensor, return_router_logits: bool = False):
        """input_ids [B, T] (or [T]); positions 0..T-1.

        Returns dict(logits [B,T,V], router_logits list per layer [B*T, E],
        aux_loss scalar (when training or return_router_logits)).
        """
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        B, T = input_ids.shape
        cfg = self.cfg
        x = self.model.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(T, cfg.hd, cfg.rope_theta, device=x.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        mask = attention_mask(T, cfg.sliding_window, device=x.device)
        all_router = []
        for layer in self.model.layers:
            x, rl = layer(x, cos, sin, mask)
            if rl is not None:  # dense layers have no router
                all_router.append(rl)
        x = self.model.norm(x)
        logits = F.linear(x, self.head_weight())
        out = {"logits": logits, "router_logits": all_router}
        if self.training or return_router_logits:
            out["aux_loss"] = load_balancing_loss(all_router, cfg.num_local_experts, cfg.num_experts_per_tok)
        return out


def init_weights(model: MixtralForCausalLM, std: float = 0.02, norm_std: float = 0.0,
                 generator: Optional[torch.Generator] = None, residual_scale: float = 1.0):
    """Normal(0, std) for matrices (o_proj / w2 additionally scaled by residual_scale),
    norms 1 + Normal(0, norm_std)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # layernorms, q_norm/k_norm, final norm
                p.copy_(1.0 + norm_std * torch.randn(p.shape, generator=generator))
            else:
                s = std
                if name.endswith(("o_proj.weight", "w2.weight", "down_proj.weight")):
                    s = std * residual_scale
                p.copy_(s * torch.randn(p.shape, generator=generator))


def hf_state_dict(model: MixtralForCausalLM) -> Dict[str, torch.Tensor]:
    """HF-named tensors in HF order (lm_head absent when tied)."""
    sd = {}
    for name, p in model.named_parameters():  # named_parameters skips the tied lm_head
        sd[name] = p.detach()
    return sd


# --------------------------------------------------------------------------------------
# safetensors I/O (numpy + json only)
# --------------------------------------------------------------------------------------

_ST_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}


def _tensor_bytes(t: torch.Tensor, dtype: str) -> bytes:
    t = t.detach().cpu().contiguous()
    if dtype == "F32":
        a = t.to(torch.float32).numpy()
        return a.astype("<f4", copy=False).tobytes()
    if dtype == "F16":
        return t.to(torch.float32).numpy().astype("<f2").tobytes()
    if dtype == "BF16":
        # torch's fp32 -> bf16 conversion rounds to nearest even
        a = t.to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy()
        return a.astype("<i2", copy=False).tobytes()
    raise ValueError(f"unsupported dtype {dtype}")


def save_safetensors(path: str, tensors: Dict[str, torch.Tensor], dtype: str = "F32",
                     metadata: Optional[Dict[str, str]] = None) -> int:
    """Writes tensors (in dict order) with one dtype. Returns the data size in bytes."""
    header: dict = {}
    if metadata is None:
        metadata = {"format": "pt"}
    if metadata:
        header["__metadata__"] = metadata
    blobs = []
    off = 0
    for name, t in tensors.items():
        b = _tensor_bytes(t, dtype)
        assert len(b) == t.numel() * _ST_ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    return off


def load_safetensors(path: str, with_dtypes: bool = False):
    """Reads a safetensors file into fp32 torch tensors (dict name -> tensor)."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    dtypes = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        raw = data[base + s: base + e]
        shape = info["shape"]
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32)
        else:
            raise ValueError(f"unsupported dtype {dt} in {path}")
        assert a.size == int(np.prod(shape)) if shape else a.size == 1
        out[name] = torch.from_numpy(a.reshape(shape).copy())
        dtypes[name] = dt
    return (out, dtypes) if with_dtypes else out


def save_sharded_safetensors(out_dir: str, tensors: Dict[str, torch.Tensor], dtype: str,
                             max_shard_bytes: int) -> List[str]:
    """Greedy packing in dict order into model-0000i-of-0000N.safetensors plus
    model.safetensors.index.json. Returns the shard file names."""
    item = _ST_ITEMSIZE[dtype]
    groups: List[List[str]] = [[]]
    cur = 0
    for name, t in tensors.items():
        nb = t.numel() * item
        if groups[-1] and cur + nb > max_shard_bytes:
            groups.append([])
            cur = 0
        groups[-1].append(name)
        cur += nb
    n = len(groups)
    files = []
    weight_map = {}
    total = 0
    for i, g in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        total += save_safetensors(os.path.join(out_dir, fname), {k: tensors[k] for k in g}, dtype)
        for k in g:
            weight_map[k] = fname
        files.append(fname)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return files


# --------------------------------------------------------------------------------------
# HF directory export / import
# --------------------------------------------------------------------------------------

def hf_config_dict(cfg: MixtralConfig, dtype: str = "F32") -> dict:
    d = {
        "architectures": [ARCHITECTURES[cfg.model_type]],
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "output_router_logits": False,
        "router_aux_loss_coef": 0.02,
        "use_cache": True,
    }
    d.update(cfg.to_dict())
    d["torch_dtype"] = DTYPE_NAMES[dtype]
    return d


def export_hf_dir(model: MixtralForCausalLM, cfg: MixtralConfig, out_dir: str, dtype: str = "BF16",
                  shard_bytes: Optional[int] = None) -> List[str]:
    """Writes config.json and model.safetensors (or shards + index). Returns weight files."""
    os.makedirs(out_dir, exist_ok=True)
    for fn in os.listdir(out_dir):  # remove stale weight files of a previous export
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(out_dir, fn))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config_dict(cfg, dtype), f, indent=2)
        f.write("\n")
    sd = hf_state_dict(model)
    if shard_bytes is None:
        save_safetensors(os.path.join(out_dir, "model.safetensors"), sd, dtype)
        return ["model.safetensors"]
    return save_sharded_safetensors(out_dir, sd, dtype, shard_bytes)


def load_config(d: str) -> MixtralConfig:
    with open(os.path.join(d, "config.json")) as f:
        return MixtralConfig.from_dict(json.load(f))


def load_hf_dir(d: str) -> MixtralForCausalLM:
    """Loads an HF-style Mixtral directory into an fp32 model (weights upcast exactly)."""
    cfg = load_config(d)
    idx = os.path.join(d, "model.safetensors.index.json")
    tensors: Dict[str, torch.Tensor] = {}
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        for fn in files:
            tensors.update(load_safetensors(os.path.join(d, fn)))
    else:
        tensors = load_safetensors(os.path.join(d, "model.safetensors"))
    model = MixtralForCausalLM(cfg)
    expected = {n for n, _ in model.named_parameters()}
    missing = expected - set(tensors)
    extra = set(tensors) - expected
    if missing or extra:
        raise ValueError(f"checkpoint mismatch: missing={sorted(missing)[:5]} extra={sorted(extra)[:5]}")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if tuple(p.shape) != tuple(tensors[n].shape):
                raise ValueError(f"shape mismatch for {n}: {tuple(tensors[n].shape)} vs {tuple(p.shape)}")
            p.copy_(tensors[n])
    model.eval()
    return model


# --------------------------------------------------------------------------------------
# Reference computations
# --------------------------------------------------------------------------------------

@torch.no_grad()
def logits(model: MixtralForCausalLM, token_ids: Sequence[int]) -> np.ndarray:
    """Full-sequence fp32 forward; returns np.float32 [T, V]."""
    model.eval()
    ids = torch.tensor(list(token_ids), dtype=torch.long).unsqueeze(0)
    out = model(ids)["logits"][0].float()
    return np.ascontiguousarray(out.numpy().astype(np.float32))


@torch.no_grad()
def router_margins(model: MixtralForCausalLM, token_ids: Sequence[int]) -> float:
    """Smallest gap between the k-th and (k+1)-th router probability over all tokens and
    layers (how close the top-k selection is to a tie; inf when k == num_experts)."""
    model.eval()
    ids = torch.tensor(list(token_ids), dtype=torch.long).unsqueeze(0)
    k = model.cfg.num_experts_per_tok
    if k >= model.cfg.num_local_experts:
        return float("inf")
    m = float("inf")
    for rl in model(ids, return_router_logits=True)["router_logits"]:
        p = F.softmax(rl.float(), dim=-1)
        s, _ = torch.sort(p, dim=-1, descending=True)
        m = min(m, float((s[:, k - 1] - s[:, k]).min()))
    return m


@torch.no_grad()
def greedy(model: MixtralForCausalLM, prompt_ids: Sequence[int], max_new_tokens: int,
           eos_id: Optional[int] = 2, return_margin: bool = False):
    """Greedy decoding by full recompute each step. Returns the new token ids (stops
    after emitting eos, which is included). With return_margin, also returns the smallest
    top1 - top2 logit gap seen (how close any step was to a tie)."""
    model.eval()
    ids = list(prompt_ids)
    new: List[int] = []
    margin = float("inf")
    for _ in range(max_new_tokens):
        lg = logits(model, ids)[-1]
        order = np.argsort(-lg, kind="stable")
        nxt = int(order[0])
        margin = min(margin, float(lg[order[0]] - lg[order[1]]))
        ids.append(nxt)
        new.append(nxt)
        if eos_id is not None and nxt == eos_id:
            break
    return (new, margin) if return_margin else new


def write_npy(path: str, arr) -> None:
    np.save(path, np.ascontiguousarray(np.asarray(arr, dtype=np.float32)))
