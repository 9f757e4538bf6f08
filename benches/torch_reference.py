#!/usr/bin/env python3
"""PyTorch reference for shuku's training throughput.

Times the same training step as `cargo run --release --example train_base -- --bench-steps N`:
a llama with 4 layers, hidden 256, FFN 768 (SwiGLU), 4 heads x 64 with 2 KV heads, RMSNorm,
rotate-half RoPE, tied 4096-token embedding (other shapes: --layers, --hidden, as train_base's);
batch 8 x 128 tokens (--batch-size, --seq-len); cross-entropy, backward,
global-norm clipping to 1.0, AdamW (0.9/0.95, weight decay 0.1). Plain eager PyTorch on CPU,
float32, no compile, random tokens (throughput does not depend on the data).

    python3 -m venv ~/.cache/shuku-torch && ~/.cache/shuku-torch/bin/pip install torch
    ~/.cache/shuku-torch/bin/python benches/torch_reference.py --threads 2 --steps 20
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, seq, theta=10000.0):
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.outer(torch.arange(seq, dtype=torch.float64), inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Block(nn.Module):
    def __init__(self, hidden, ffn, heads, kv_heads, head_dim):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, head_dim
        self.ln1 = RMSNorm(hidden)
        self.q = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, hidden, bias=False)
        self.ln2 = RMSNorm(hidden)
        self.gate = nn.Linear(hidden, ffn, bias=False)
        self.up = nn.Linear(hidden, ffn, bias=False)
        self.down = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        h = self.ln1(x)
        q = self.q(h).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.k(h).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v(h).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.heads // self.kv_heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / self.hd**0.5 + mask
        o = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.o(o)
        h = self.ln2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, vocab=4096, hidden=256, ffn=768, layers=4, heads=4, kv_heads=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(
            Block(hidden, ffn, heads, kv_heads, hidden // heads) for _ in range(layers)
        )
        self.norm = RMSNorm(hidden)
        self.hd = hidden // heads
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens):
        t = tokens.shape[1]
        cos, sin = rope_tables(self.hd, t)
        mask = torch.full((t, t), float("-inf")).triu(1)
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask)
        return self.norm(x) @ self.embed.weight.t()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256,
                    help="hidden width (heads of 64, half as many KV heads, FFN 3x), as train_base --hidden")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Llama(hidden=a.hidden, ffn=3 * a.hidden, layers=a.layers,
                  heads=a.hidden // 64, kv_heads=a.hidden // 128)
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
        lr=2e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    times = []
    for _ in range(a.steps):
        seq = torch.randint(0, 4096, (a.batch_size, a.seq_len + 1))
        x, y = seq[:, :-1], seq[:, 1:]
        t0 = time.perf_counter()
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[1:])
    tok = a.batch_size * a.seq_len
    print(
        f"torch {torch.__version__}, {a.threads} threads: median step {med * 1000:.1f} ms, "
        f"{tok / med:.0f} training tokens/s ({a.steps} steps of {a.batch_size}x{a.seq_len})"
    )


if __name__ == "__main__":
    main()
