"""Compares two shuku-logits-dump files of the same model and prompt: how many greedy tokens agree,
and up to the first disagreement the max |Δ logit| (all tokens, and the first file's top 10) and
KL(first ‖ second) of the next-token distributions. The same measures as llama_cpp_parity.rs.

    python compare.py A.bin B.bin        (needs numpy)
"""
import struct
import sys

import numpy as np


def load(path):
    b = open(path, "rb").read()
    n_vocab, n_prompt = struct.unpack_from("<ii", b, 0)
    at = 8 + 4 * n_prompt
    (n_steps,) = struct.unpack_from("<i", b, at)
    at += 4
    logits, tokens = [], []
    for _ in range(n_steps):
        logits.append(np.frombuffer(b, dtype="<f4", count=n_vocab, offset=at).astype(np.float64))
        at += 4 * n_vocab
        tokens.append(struct.unpack_from("<i", b, at)[0])
        at += 4
    return logits, tokens


def log_softmax(x):
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def main(a_path, b_path):
    (la, ta), (lb, tb) = load(a_path), load(b_path)
    n = min(len(ta), len(tb))
    first = next((i for i in range(n) if ta[i] != tb[i]), None)
    upto = n if first is None else first + 1
    mx, top, kl = [], [], []
    for s in range(upto):
        d = np.abs(la[s] - lb[s])
        mx.append(d.max())
        top.append(d[np.argsort(-la[s])[:10]].max())
        pa, pb = log_softmax(la[s]), log_softmax(lb[s])
        kl.append(float((np.exp(pa) * (pa - pb)).sum()))
    agreed = n if first is None else first
    print(
        f"greedy tokens agree for {agreed} of {n} steps; up to there: max |Δ| {max(mx):.4f} "
        f"(mean {np.mean(mx):.4f}), top-10 |Δ| {max(top):.4f}, KL max {max(kl):.2e} mean {np.mean(kl):.2e}"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
