"""Checks a shuku-written GGUF with llama.cpp's own reader (gguf-py) against its HF source folder.

usage: compare_gguf_to_hf.py OUT.gguf HF_DIR
Every GGUF tensor must equal the source tensor (converted to the GGUF's dtype; Q/K rows permuted the way
llama.cpp's converter does for the llama architecture); every source tensor must be present (a tied lm_head
excepted). Prints one line per checked tensor count and exits non-zero on the first difference.
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from safetensors.numpy import load_file

HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    if hf in HF_TO_GGUF:
        return HF_TO_GGUF[hf]
    parts = hf.split(".")
    return f"blk.{parts[2]}.{LAYER['.'.join(parts[3:])]}"


def permute(w, n_head):
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute (rotate-half -> interleaved pairs)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    out, hf = sys.argv[1], sys.argv[2]
    cfg = json.load(open(f"{hf}/config.json"))
    src = load_file(f"{hf}/model.safetensors")
    r = GGUFReader(out)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    got = {t.name: t for t in r.tensors}
    checked = 0
    for name, w in src.items():
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        gname = gguf_name(name)
        assert gname in got, f"{gname} missing from {out}"
        t = got[gname]
        w = w.astype(np.float32)
        if arch in ("llama", "deci") and name.endswith("q_proj.weight"):
            w = permute(w, cfg["num_attention_heads"])
        if arch in ("llama", "deci") and name.endswith("k_proj.weight"):
            w = permute(w, cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
        data = np.array(t.data)
        want = w.astype(data.dtype) if data.dtype != np.uint8 else w
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        assert shape == w.shape, f"{gname}: shape {shape} != {w.shape}"
        assert np.array_equal(data.reshape(w.shape), want), f"{gname}: values differ"
        checked += 1
    assert len(got) == checked, f"{len(got)} tensors in GGUF, {checked} matched the source"
    print(f"gguf-py: {checked} tensors of {out} equal the source in {hf} (arch {arch})")


if __name__ == "__main__":
    main()
