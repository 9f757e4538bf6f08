#!/usr/bin/env python3
"""PyTorch reference for shuku's unstructured / N:M pruning (magnitude, Wanda, SparseGPT).

Prunes every linear of the decoder layers of an HF llama folder (config.json, model.safetensors or
shards, tokenizer.json) the way the papers' official code does, and reports wall time and quality:
- magnitude: locuslab/wanda `lib/prune.py` prune_magnitude: per matrix, zero |W| <= the sparsity
  quantile of the whole matrix, or the N smallest |W| in each group of M consecutive input columns.
- wanda: locuslab/wanda prune_wanda + `lib/layerwrapper.py` WrappedGPT: layer by layer, one pass
  of forward hooks collects scaler_row (running mean over samples of per-column sum of x^2);
  metric |W| * sqrt(scaler_row); per output row prune the lowest fraction (stable sort) or N of M.
- sparsegpt: IST-DASLab/sparsegpt `sparsegpt.py` SparseGPT.add_batch / fasterprune (blocksize 128,
  percdamp 0.01), driven layer by layer as in locuslab/wanda prune_sparsegpt.
wanda and sparsegpt are sequential: the calibration samples go through layer i one at a time (as the
official loops do), stats are taken, the layer is pruned, then its outputs are recomputed with the
pruned weights and become the inputs of layer i+1. Embeddings, norms and the LM head are never pruned.

Calibration: the first --nsamples disjoint windows of --seqlen tokens of the tokenized --calib text,
each its own sequence from position 0. Evaluation: llama-perplexity's protocol on --eval (tokenize
the whole text, disjoint n_ctx chunks, first token -> BOS when the tokenizer prepends one, score
positions n_ctx/2 .. n_ctx-2 predicting the next token; at most --eval-chunks chunks), before and
after pruning. prune_seconds covers the pruning only (embedding the calibration windows, the layer
passes, the weight updates); model load, tokenization and evaluation are outside it. Plain eager
PyTorch on CPU, float32 weights.

    ~/.cache/shuku-torch/bin/python benches/prune_reference.py --model DIR --method wanda \\
        --sparsity 0.5 [--pattern 2:4] --calib TEXT --nsamples 64 --seqlen 256 \\
        --eval TEXT --eval-ctx 256 --eval-chunks N --threads 2 [--out DIR]

--pattern N:M (prune N of every M consecutive inputs) sets the sparsity to N/M. The project's
SmolLM2 runs use --calib ../shared/data/text/shakespeare.txt and `tail -c 400000 kjv.txt` as --eval.
The last line is machine-readable:
    RESULT method=<m> pattern=<p> sparsity=<s> prune_seconds=<t> ppl_dense=<x> ppl_pruned=<y> zeros=<z>
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer


# ---------------------------------------------------------------- model (HF llama layout and names)
class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c, hd):
        super().__init__()
        h, nh, nkv, bias = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c.get("attention_bias", False)
        self.nh, self.nkv, self.hd = nh, nkv, hd
        self.q_proj = nn.Linear(h, nh * hd, bias=bias)
        self.k_proj = nn.Linear(h, nkv * hd, bias=bias)
        self.v_proj = nn.Linear(h, nkv * hd, bias=bias)
        self.o_proj = nn.Linear(nh * hd, h, bias=bias)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.nh != self.nkv)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, f, bias = c["hidden_size"], c["intermediate_size"], c.get("mlp_bias", False)
        self.gate_proj = nn.Linear(h, f, bias=bias)
        self.up_proj = nn.Linear(h, f, bias=bias)
        self.down_proj = nn.Linear(f, h, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c, hd):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c, hd)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, c, hd):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(c, hd) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        self.theta = float(c.get("rope_theta", 10000.0))
        self.tied = c.get("tie_word_embeddings", False)
        self.model = Backbone(c, self.hd)
        if not self.tied:
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def rope(self, t):
        """cos/sin tables for positions 0..t-1, computed as HF's LlamaRotaryEmbedding (float32)."""
        inv = 1.0 / self.theta ** (torch.arange(0, self.hd, 2, dtype=torch.int64).float() / self.hd)
        ang = torch.outer(torch.arange(t).float(), inv)
        ang = torch.cat([ang, ang], dim=-1)
        return ang.cos(), ang.sin()

    def hidden(self, ids):
        cos, sin = self.rope(ids.shape[1])
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.model.norm(x)

    def head(self, h):
        return F.linear(h, self.model.embed_tokens.weight if self.tied else self.lm_head.weight)


def load_model(d):
    c = json.load(open(os.path.join(d, "config.json")))
    if c.get("rope_scaling"):
        sys.exit(f"rope_scaling {c['rope_scaling']} is not supported by this reference")
    index = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    sd = {}
    for f in files:
        with safe_open(os.path.join(d, f), framework="pt") as st:
            sd.update({k: st.get_tensor(k).float() for k in st.keys()})
    model = Llama(c)
    if model.tied:
        sd.pop("lm_head.weight", None)
    model.load_state_dict(sd, strict=True)
    return model.eval(), c


def find_linears(layer):
    """The prunable linears of a decoder layer, by name (official find_layers)."""
    return {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}


# ---------------------------------------------------------------- pruning
def nm_mask(metric, n, m):
    """Official N:M selection: in each group of m consecutive input columns mark the n lowest."""
    mask = torch.zeros_like(metric, dtype=torch.bool)
    for ii in range(0, metric.shape[1], m):
        tmp = metric[:, ii:(ii + m)].float()
        mask.scatter_(1, ii + torch.topk(tmp, n, dim=1, largest=False)[1], True)
    return mask


@torch.no_grad()
def prune_magnitude(model, sparsity, n, m):
    for layer in model.model.layers:
        for lin in find_linears(layer).values():
            W = lin.weight.data
            metric = W.abs()
            if n:
                mask = nm_mask(metric, n, m)
            else:  # threshold at the sparsity quantile of the whole matrix (ties pruned too)
                thresh = torch.sort(metric.flatten())[0][int(W.numel() * sparsity)]
                mask = metric <= thresh
            W[mask] = 0


class WrappedGPT:
    """Wanda's input statistics: scaler_row = running mean over samples of sum_tokens x_col^2."""

    def __init__(self, lin):
        self.scaler_row = torch.zeros(lin.weight.shape[1])
        self.nsamples = 0

    def add_batch(self, inp):
        inp = inp.unsqueeze(0) if inp.dim() == 2 else inp
        tmp = inp.shape[0]  # sequences in this call
        inp = inp.reshape(-1, inp.shape[-1]).t().float()
        self.scaler_row *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / self.nsamples

    def prune(self, lin, sparsity, n, m):
        W = lin.weight.data
        metric = W.abs() * torch.sqrt(self.scaler_row.reshape(1, -1))
        if n:
            mask = nm_mask(metric, n, m)
        else:  # per output row, the lowest int(cols * sparsity) scores
            mask = torch.zeros_like(metric, dtype=torch.bool)
            idx = torch.sort(metric, dim=-1, stable=True)[1][:, :int(metric.shape[1] * sparsity)]
            mask.scatter_(1, idx, True)
        W[mask] = 0


class SparseGPT:
    """IST-DASLab SparseGPT: H = 2/nsamples * sum X^T X, then OBS pruning in blocks of columns."""

    def __init__(self, lin):
        self.columns = lin.weight.shape[1]
        self.H = torch.zeros(self.columns, self.columns)
        self.nsamples = 0

    def add_batch(self, inp):
        inp = inp.unsqueeze(0) if inp.dim() == 2 else inp
        tmp = inp.shape[0]  # sequences in this call
        inp = inp.reshape(-1, inp.shape[-1]).t()
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())

    def prune(self, lin, sparsity, n, m, blocksize=128, percdamp=0.01):
        W = lin.weight.data.clone().float()
        H, self.H = self.H, None
        dead = torch.diag(H) == 0  # inputs never active: fix H, drop their weights
        H[dead, dead] = 1
        W[:, dead] = 0
        damp = percdamp * torch.mean(torch.diag(H))
        diag = torch.arange(self.columns)
        H[diag, diag] += damp
        H = torch.linalg.cholesky(H)
        H = torch.cholesky_inverse(H)
        Hinv = torch.linalg.cholesky(H, upper=True)  # upper Cholesky factor of H^-1

        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]
            if n == 0:  # unstructured: one threshold over the whole block at the sparsity quantile
                tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
                thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
                mask1 = tmp <= thresh
            else:  # N:M: chosen lazily, group by group, from the already-updated weights
                mask1 = torch.zeros_like(W1, dtype=torch.bool)
            for i in range(i2 - i1):
                w = W1[:, i]
                d = Hinv1[i, i]
                if n != 0 and i % m == 0:
                    tmp = W1[:, i:(i + m)] ** 2 / (torch.diag(Hinv1)[i:(i + m)].reshape((1, -1))) ** 2
                    mask1.scatter_(1, i + torch.topk(tmp, n, dim=1, largest=False)[1], True)
                q = w.clone()
                q[mask1[:, i]] = 0
                Q1[:, i] = q
                err1 = (w - q) / d  # OBS update of the remaining columns of the block
                W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
                Err1[:, i] = err1
            W[:, i1:i2] = Q1
            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])  # lazy batch update of the later columns
        lin.weight.data = W.reshape(lin.weight.shape).to(lin.weight.dtype)


@torch.no_grad()
def prune_sequential(model, calib, method, sparsity, n, m):
    """Official layer-wise driver (prune_wanda / prune_sparsegpt) with batch-1 sample passes."""
    cos, sin = model.rope(calib.shape[1])
    inps = model.model.embed_tokens(calib)  # what the official Catcher records at layer 0
    outs = torch.zeros_like(inps)
    Stats = WrappedGPT if method == "wanda" else SparseGPT
    for i, layer in enumerate(model.model.layers):
        t0 = time.perf_counter()
        subset = find_linears(layer)
        stats = {name: Stats(lin) for name, lin in subset.items()}
        handles = [lin.register_forward_hook(lambda _, inp, out, s=stats[name]: s.add_batch(inp[0].data))
                   for name, lin in subset.items()]
        for j in range(len(calib)):
            outs[j] = layer(inps[j].unsqueeze(0), cos, sin)[0]
        for h in handles:
            h.remove()
        for name, lin in subset.items():
            stats[name].prune(lin, sparsity, n, m)
        del stats
        for j in range(len(calib)):  # recompute with the pruned layer: inputs of the next one
            outs[j] = layer(inps[j].unsqueeze(0), cos, sin)[0]
        inps, outs = outs, inps
        print(f"  layer {i}: {time.perf_counter() - t0:.2f} s", flush=True)


# ---------------------------------------------------------------- data and evaluation
def prepended_bos(tok):
    """The token the post-processor puts in front of every encoding (llama.cpp's add_bos), if any."""
    plain, special = tok.encode("a", add_special_tokens=False).ids, tok.encode("a").ids
    if len(special) > len(plain) and special[1:1 + len(plain)] == plain:
        return special[0]
    return None


def calibration(tok, path, nsamples, seqlen):
    ids = tok.encode(open(path, encoding="utf-8").read()).ids
    if len(ids) < nsamples * seqlen:
        sys.exit(f"{path}: {len(ids)} tokens, {nsamples} x {seqlen} = {nsamples * seqlen} needed")
    return torch.tensor(ids[:nsamples * seqlen]).view(nsamples, seqlen)


@torch.no_grad()
def perplexity(model, ids, bos, n_ctx, max_chunks, batch=4):
    """llama-perplexity: disjoint n_ctx chunks, second half scored, mean NLL over all scored tokens."""
    if len(ids) < 2 * n_ctx:
        sys.exit(f"eval text: {len(ids)} tokens, need at least 2 * n_ctx = {2 * n_ctx}")
    n_chunk = min(max_chunks, len(ids) // n_ctx)
    toks = torch.tensor(ids[:n_chunk * n_ctx]).view(n_chunk, n_ctx)
    first = n_ctx // 2
    nll, count = 0.0, 0
    for b in range(0, n_chunk, batch):
        x = toks[b:b + batch].clone()
        if bos is not None:
            x[:, 0] = bos  # the targets keep the original tokens
        logits = model.head(model.hidden(x)[:, first:n_ctx - 1])
        lp = F.log_softmax(logits.float(), dim=-1)
        tgt = toks[b:b + batch, first + 1:]
        nll -= lp.gather(-1, tgt.unsqueeze(-1)).double().sum().item()
        count += tgt.numel()
    return math.exp(nll / count), n_chunk, count


def linear_zeros(model):
    zeros = total = 0
    for layer in model.model.layers:
        for lin in find_linears(layer).values():
            zeros += (lin.weight == 0).sum().item()
            total += lin.weight.numel()
    return zeros / total


def save(model, src, dst):
    os.makedirs(dst, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json"]:
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF llama folder")
    ap.add_argument("--method", required=True, choices=["magnitude", "wanda", "sparsegpt"])
    ap.add_argument("--sparsity", type=float, default=0.5, help="unstructured fraction pruned")
    ap.add_argument("--pattern", default="unstructured", help="'unstructured' or N:M (prune N of M)")
    ap.add_argument("--calib", help="calibration text (wanda, sparsegpt)")
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval", required=True, help="evaluation text")
    ap.add_argument("--eval-ctx", type=int, default=256)
    ap.add_argument("--eval-chunks", type=int, default=1 << 30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the pruned model here")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    n = m = 0
    if a.pattern != "unstructured":
        n, m = map(int, a.pattern.split(":"))
        if not 0 < n < m:
            sys.exit(f"--pattern {a.pattern}: need 0 < N < M")
        a.sparsity = n / m  # N:M fixes the sparsity
    elif not 0 <= a.sparsity < 1:
        sys.exit("--sparsity must be in [0, 1)")
    if a.method != "magnitude" and not a.calib:
        sys.exit(f"--method {a.method} needs --calib")

    model, cfg = load_model(a.model)
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    bos = prepended_bos(tok)
    eval_ids = tok.encode(open(a.eval, encoding="utf-8").read()).ids
    calib = calibration(tok, a.calib, a.nsamples, a.seqlen) if a.method != "magnitude" else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {cfg['num_hidden_layers']} layers, "
          f"eval {len(eval_ids)} tokens, BOS replacement {bos}")

    ppl_dense, chunks, scored = perplexity(model, eval_ids, bos, a.eval_ctx, a.eval_chunks)
    print(f"dense perplexity {ppl_dense:.4f} ({chunks} chunks of {a.eval_ctx}, {scored} scored tokens)")

    t0 = time.perf_counter()
    if a.method == "magnitude":
        prune_magnitude(model, a.sparsity, n, m)
    else:
        prune_sequential(model, calib, a.method, a.sparsity, n, m)
    secs = time.perf_counter() - t0
    print(f"{a.method} {a.pattern} pruning: {secs:.2f} s wall with {torch.get_num_threads()} threads")

    zeros = linear_zeros(model)
    ppl, _, _ = perplexity(model, eval_ids, bos, a.eval_ctx, a.eval_chunks)
    print(f"pruned perplexity {ppl:.4f}; zeros in the pruned linears {zeros:.6f}")
    if a.out:
        save(model, a.model, a.out)
        print(f"wrote {a.out}")
    print(f"RESULT method={a.method} pattern={a.pattern} sparsity={a.sparsity:g} prune_seconds={secs:.3f} "
          f"ppl_dense={ppl_dense:.4f} ppl_pruned={ppl:.4f} zeros={zeros:.6f}")


if __name__ == "__main__":
    main()
