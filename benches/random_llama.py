"""A llama checkpoint with random weights and the base model's tokenizer, in Hugging Face's layout:
the speed benches' stand-in for a model whose widths are multiples of 256 (so k-quant files hold
k-quants throughout, where SmolLM2's 576-wide rows fall back to the legacy types). Its outputs are
noise; only its shapes matter.

    python benches/random_llama.py OUT_DIR [--hidden 1024 --ffn 2816 --layers 6 --heads 16 --kv-heads 4]
"""
import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "assets" / "shuku-base"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=2816)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    hd = a.hidden // a.heads
    cfg = json.loads((BASE / "config.json").read_text())
    cfg.update(hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
               num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=hd,
               torch_dtype="float32", max_position_embeddings=2048)
    vocab = cfg["vocab_size"]
    rng = np.random.default_rng(a.seed)
    normal = lambda *shape: rng.normal(0.0, 0.02, shape).astype(np.float32)
    tensors = {"model.embed_tokens.weight": normal(vocab, a.hidden),
               "model.norm.weight": np.ones(a.hidden, np.float32)}
    for l in range(a.layers):
        p_ = f"model.layers.{l}."
        tensors |= {
            p_ + "input_layernorm.weight": np.ones(a.hidden, np.float32),
            p_ + "post_attention_layernorm.weight": np.ones(a.hidden, np.float32),
            p_ + "self_attn.q_proj.weight": normal(a.heads * hd, a.hidden),
            p_ + "self_attn.k_proj.weight": normal(a.kv_heads * hd, a.hidden),
            p_ + "self_attn.v_proj.weight": normal(a.kv_heads * hd, a.hidden),
            p_ + "self_attn.o_proj.weight": normal(a.hidden, a.heads * hd),
            p_ + "mlp.gate_proj.weight": normal(a.ffn, a.hidden),
            p_ + "mlp.up_proj.weight": normal(a.ffn, a.hidden),
            p_ + "mlp.down_proj.weight": normal(a.hidden, a.ffn),
        }
    tmp = a.out.with_name(a.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(BASE / f, tmp / f)
    header, offset = {}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(tmp / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors.values():
            f.write(t.tobytes())
    tmp.rename(a.out)


if __name__ == "__main__":
    main()
