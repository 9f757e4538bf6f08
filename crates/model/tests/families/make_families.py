#!/usr/bin/env python3
"""Tiny random models of each model family, made by HF transformers, with transformers' logits and greedy
tokens and llama.cpp's own converter output. README.md beside this file describes the cases and files.

    make_families.py DEST --llama-cpp LLAMA_CPP_SRC --smollm2 SMOLLM2_HF_DIR --corpus TEXT
                     [--converter-path SITE_DIR] [--case NAME ...] [--outtypes f32,f16]

For each case, DEST/<case>/ gets
    hf/                      config.json, model.safetensors (float32), tokenizer files, generation_config.json
    reference.safetensors    tokens int64 [T], logits float32 [T, vocab], greedy int64 [NEW],
                             greedy_nocache int64 [NEW]
    llamacpp-f32.gguf        python convert_hf_to_gguf.py hf --outtype f32 (from llama.cpp's tree)
    llamacpp-f16.gguf        the same with --outtype f16
    llamacpp-error.txt       instead of the two GGUFs, when the converter refuses the case
    case.json                the family, what the case exercises, checks made here, a summary of the GGUFs
and DEST/index.json lists the cases and the versions that made them. Everything is seeded: a second run
with the same versions writes the same files.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sp_tokenizer  # noqa: E402

# Bump when the outputs change for a reason the versions of the tools do not show.
GENERATOR_VERSION = 1

T = 24          # tokens in the logits check; more than every sliding window and phi3's original context
PROMPT = 8      # greedy continuation starts from tokens[:PROMPT]
NEW = 16        # greedy tokens generated
WEIGHT_STD = 0.15   # normal std of every matrix and embedding
BIAS_STD = 0.2      # normal std of every bias (qwen2's q/k/v)
SMOLLM2_SPECIALS = 17  # SmolLM2's added special tokens are ids 0..16

HIDDEN = 64
INTERMEDIATE = 128
HEADS = 4
KV_HEADS = 2

SAMPLE_TEXT = "To be, or not to be: that is the question.\n  Whether 'tis nobler 1234 é"


@dataclass
class Case:
    name: str
    family: str
    arch: str                 # HF architecture (the class transformers builds)
    config_class: str         # transformers config class
    tokenizer: str            # "smollm2" (byte-level BPE) or a sentencepiece style of sp_tokenizer
    seed: int
    config: dict
    exercises: list[str]
    layers: int = 2
    gemma_norms: bool = False  # norm weights w act as (1 + w)
    copy_of: str | None = None  # same weights as that case, config.json in the other layout
    notes: list[str] = field(default_factory=list)


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def phi3_factors(seed: int, n: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    short = [round(float(x), 3) for x in rng.uniform(1.0, 4.0, n)]
    long = [round(float(x), 3) for x in rng.uniform(1.0, 4.0, n)]
    return short, long


PHI3_SHORT, PHI3_LONG = phi3_factors(7, HIDDEN // HEADS // 2)

GEMMA3_CONFIG = dict(
    head_dim=32, query_pre_attn_scalar=24, sliding_window=8, rope_theta=1000000.0, rope_local_base_freq=10000.0,
    max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
)
GEMMA3_NOTES = [
    "untied, unlike released Gemma 3: with tied embeddings scaled by sqrt(hidden) = 8 in the residual, a tiny "
    "random gemma3 mostly repeats its last token under greedy decoding",
]

CASES = [
    Case(
        "llama", "llama", "LlamaForCausalLM", "LlamaConfig", "smollm2", 1001,
        dict(rope_theta=10000.0, tie_word_embeddings=True, max_position_embeddings=256, rms_norm_eps=1e-5),
        ["plain llama: RMSNorm, SwiGLU, GQA (4 heads, 2 KV heads), default RoPE",
         "tied embeddings (no lm_head in the checkpoint)",
         "SmolLM2's byte-level BPE tokenizer (vocab 49152)"],
    ),
    Case(
        "llama3", "llama", "LlamaForCausalLM", "LlamaConfig", "smollm2", 1002,
        dict(rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE), tie_word_embeddings=False,
             max_position_embeddings=512, rms_norm_eps=1e-5),
        ["RoPE scaling type llama3 (factor 8, low 1, high 4, original context 64): with head_dim 16 and "
         "theta 500000 the 8 frequencies fall in all three bands (kept, smoothed, divided by 8)",
         "untied lm_head",
         "config.json in the layout the installed transformers writes"],
    ),
    Case(
        "llama3-legacy-config", "llama", "LlamaForCausalLM", "LlamaConfig", "smollm2", 1002,
        {}, ["the llama3 case's weights and tokenizer with config.json in the other layout; both describe "
             "the same model (checked here: transformers' logits are bit-identical)"],
        copy_of="llama3",
    ),
    Case(
        "mistral", "mistral", "MistralForCausalLM", "MistralConfig", "llama", 1004,
        dict(head_dim=32, sliding_window=8, rope_theta=10000.0, tie_word_embeddings=False,
             max_position_embeddings=256, rms_norm_eps=1e-5),
        ["explicit head_dim 32 with hidden 64 and 4 heads (q_proj is 128 x 64, o_proj 64 x 128)",
         f"sliding window 8 < T={T}: positions past 8 attend to the last 8 tokens only",
         "SentencePiece BPE tokenizer with byte fallback (Llama 2 style, vocab 512)"],
        layers=3,
    ),
    Case(
        "mistral-nowindow", "mistral", "MistralForCausalLM", "MistralConfig", "llama", 1005,
        dict(head_dim=32, sliding_window=None, rope_theta=10000.0, tie_word_embeddings=False,
             max_position_embeddings=256, rms_norm_eps=1e-5),
        ["as mistral, with sliding_window null (full causal attention)"],
        layers=3,
    ),
    Case(
        "qwen2", "qwen2", "Qwen2ForCausalLM", "Qwen2Config", "smollm2", 1006,
        dict(rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=256, rms_norm_eps=1e-6,
             use_sliding_window=False),
        ["q/k/v projection biases (random, non-zero); no o_proj bias",
         "tied embeddings, rope_theta 1e6, SmolLM2's BPE tokenizer"],
    ),
    Case(
        "qwen3", "qwen3", "Qwen3ForCausalLM", "Qwen3Config", "smollm2", 1007,
        dict(head_dim=32, rope_theta=1000000.0, tie_word_embeddings=False, max_position_embeddings=256,
             rms_norm_eps=1e-6, use_sliding_window=False),
        ["per-head RMSNorm on q and k (q_norm, k_norm) with random gains, before RoPE",
         "explicit head_dim 32 with hidden 64 and 4 heads, no biases, untied, SmolLM2's BPE tokenizer"],
    ),
    Case(
        "phi3", "phi3", "Phi3ForCausalLM", "Phi3Config", "llama", 1008,
        dict(rope_theta=10000.0, max_position_embeddings=64, original_max_position_embeddings=16,
             rope_scaling=dict(type="longrope", short_factor=PHI3_SHORT, long_factor=PHI3_LONG),
             tie_word_embeddings=False, rms_norm_eps=1e-5, sliding_window=None),
        ["fused qkv_proj and gate_up_proj",
         "LongRoPE (short_factor and long_factor: 8 values in [1, 4]), original context 16, context 64: "
         "attention factor sqrt(1 + ln(64/16) / ln(16)) on cos and sin",
         f"T={T} > 16, so transformers' full forward uses the long factors (see rope in this file)",
         "SentencePiece BPE tokenizer (Llama 2 style, vocab 512)"],
    ),
    Case(
        "phi3-plain", "phi3", "Phi3ForCausalLM", "Phi3Config", "llama", 1009,
        dict(rope_theta=10000.0, max_position_embeddings=64, original_max_position_embeddings=64,
             rope_scaling=None, tie_word_embeddings=False, rms_norm_eps=1e-5, sliding_window=None),
        ["phi3 without RoPE scaling: fused qkv_proj and gate_up_proj only"],
    ),
    Case(
        "gemma3", "gemma3", "Gemma3ForCausalLM", "Gemma3TextConfig", "gemma", 1010,
        dict(GEMMA3_CONFIG),
        ["6 layers: 5 sliding-window layers (window 8, rope theta 1e4) then 1 global layer (rope theta 1e6)",
         "query_pre_attn_scalar 24 != head_dim 32: attention scale 24^-0.5",
         "q_norm and k_norm, four norms per layer, all Gemma RMSNorms (x * (1 + w)) with random w",
         "embeddings scaled by sqrt(hidden), GELU (tanh) gated MLP, untied lm_head",
         "SentencePiece BPE tokenizer in Gemma's layout (pad 0, eos 1, bos 2, unk 3, mask 4; no dummy prefix)"],
        layers=6, gemma_norms=True, notes=list(GEMMA3_NOTES),
    ),
    Case(
        "gemma3-headdim-scale", "gemma3", "Gemma3ForCausalLM", "Gemma3TextConfig", "gemma", 1010,
        dict(GEMMA3_CONFIG, query_pre_attn_scalar=32),
        ["the gemma3 case's weights (same seed) with query_pre_attn_scalar 32 = head_dim: the attention "
         "scale llama.cpp uses for every gemma3 but the 27B, since its GGUF has no key for the scalar"],
        layers=6, gemma_norms=True, notes=list(GEMMA3_NOTES),
    ),
]


# ---------------------------------------------------------------------------------------------------------
# config.json layouts


def other_layout(cfg: dict) -> tuple[dict, str]:
    """`cfg` (a config.json) rewritten in the other transformers layout, and that layout's name.

    transformers 5 writes `rope_parameters: {rope_theta, rope_type, ...}` and `dtype`;
    transformers 4 writes top-level `rope_theta`, `rope_scaling` (null or {rope_type, ...}) and `torch_dtype`.
    """
    out = copy.deepcopy(cfg)
    if "rope_parameters" in out:
        rp = dict(out.pop("rope_parameters"))
        if "full_attention" in rp or "sliding_attention" in rp:
            raise ValueError("per-layer-type rope_parameters have no single transformers 4 equivalent")
        out["rope_theta"] = rp.pop("rope_theta")
        out["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else rp
        if "dtype" in out:
            out["torch_dtype"] = out.pop("dtype")
        out["transformers_version"] = "4.57.6"
        return out, "transformers 4 (rope_theta + rope_scaling)"
    rp = dict(out.pop("rope_scaling", None) or {"rope_type": "default"})
    rp["rope_theta"] = out.pop("rope_theta")
    out["rope_parameters"] = rp
    if "torch_dtype" in out:
        out["dtype"] = out.pop("torch_dtype")
    out["transformers_version"] = "5.24.0"
    return out, "transformers 5 (rope_parameters)"


def layout_of(cfg: dict) -> str:
    return "transformers 5 (rope_parameters)" if "rope_parameters" in cfg else "transformers 4 (rope_theta + rope_scaling)"


# ---------------------------------------------------------------------------------------------------------
# models


def make_config(case: Case, vocab_size: int, special_ids: dict):
    cls = getattr(transformers, case.config_class)
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=case.layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        attention_dropout=0.0,
        architectures=[case.arch],
        **special_ids,
    )
    kwargs.update(copy.deepcopy(case.config))
    return cls(**kwargs)


def randomize(model: torch.nn.Module, seed: int, gemma_norms: bool) -> None:
    """Every parameter drawn anew from a generator seeded with `seed`, so logits are far from flat."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                u = torch.rand(p.shape, generator=gen, dtype=torch.float32)
                # a gain around 1: w in [0.5, 1.5), or Gemma's (1 + w) with w in [-0.5, 0.5)
                p.copy_(u - 0.5 if gemma_norms else u + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * BIAS_STD)
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * WEIGHT_STD)
            else:
                raise ValueError(f"no rule to randomize {name} {tuple(p.shape)}")


def load(hf_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    return model


def case_tokens(seed: int, vocab: int, first_plain: int, bos: int) -> np.ndarray:
    """T token ids: bos, then ids drawn uniformly from the non-special part of the vocab."""
    rng = np.random.default_rng(seed)
    toks = rng.integers(first_plain, vocab, size=T, dtype=np.int64)
    toks[0] = bos
    return toks


class RopeProbe:
    """Which of phi3's LongRoPE factor sets transformers used, call by call."""

    def __init__(self, model):
        self.emb = model.model.rotary_emb
        cfg = model.config
        rp = cfg.rope_parameters
        dim = cfg.hidden_size // cfg.num_attention_heads
        base = 1.0 / (rp["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.sets = {
            "short": base / torch.tensor(rp["short_factor"], dtype=torch.float32),
            "long": base / torch.tensor(rp["long_factor"], dtype=torch.float32),
        }
        self.calls: list[tuple[int, str]] = []
        self.handle = self.emb.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        position_ids = kwargs.get("position_ids", args[1] if len(args) > 1 else None)
        last = int(position_ids.max())
        used = "?"
        for name, inv in self.sets.items():
            if torch.allclose(module.inv_freq.float().cpu(), inv, rtol=1e-6, atol=0):
                used = name
        self.calls.append((last, used))

    def take(self) -> list[tuple[int, str]]:
        calls, self.calls = self.calls, []
        return calls


def greedy(model, prompt: np.ndarray, pad_id: int) -> np.ndarray:
    """NEW tokens of greedy decoding with the KV cache (generate, do_sample=False), never stopping early."""
    gen_cfg = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=NEW, min_new_tokens=0, use_cache=True,
        eos_token_id=None, pad_token_id=pad_id, bos_token_id=None,
    )
    saved = model.generation_config
    model.generation_config = gen_cfg
    try:
        ids = torch.from_numpy(prompt)[None]
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen_cfg)
    finally:
        model.generation_config = saved
    new = out[0, len(prompt):].numpy().astype(np.int64)
    if len(new) != NEW:
        raise RuntimeError(f"generate returned {len(new)} new tokens, not {NEW}")
    return new


def greedy_nocache(model, prompt: np.ndarray) -> np.ndarray:
    """The same continuation with a full forward over the whole sequence at every step (no KV cache)."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(NEW):
            logits = model(torch.tensor([seq], dtype=torch.int64), use_cache=False).logits[0, -1]
            seq.append(int(torch.argmax(logits)))
    return np.array(seq[len(prompt):], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# tokenizers


class Tokenizers:
    def __init__(self, smollm2: Path, corpus: Path):
        self.smollm2 = smollm2
        self.corpus = corpus
        self._sp: dict[str, bytes] = {}

    def sp_model(self, style: str) -> bytes:
        if style not in self._sp:
            self._sp[style] = sp_tokenizer.train(self.corpus, style)
        return self._sp[style]

    def vocab_and_ids(self, kind: str) -> tuple[int, int, dict]:
        """(vocab size, first non-special id, special token ids for the config)."""
        if kind == "smollm2":
            cfg = json.loads((self.smollm2 / "config.json").read_text())
            ids = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
            return cfg["vocab_size"], SMOLLM2_SPECIALS, ids
        ids = sp_tokenizer.special_ids(kind)
        return sp_tokenizer.VOCAB_SIZE, len(sp_tokenizer.SPECIALS[kind]), ids

    def write(self, kind: str, hf_dir: Path) -> None:
        if kind == "smollm2":
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                if (self.smollm2 / name).is_file():
                    shutil.copyfile(self.smollm2 / name, hf_dir / name)
        else:
            sp_tokenizer.write(hf_dir, self.sp_model(kind), kind)

    def check(self, kind: str, hf_dir: Path) -> dict:
        """Load the tokenizer with transformers; for sentencepiece, compare its ids with sentencepiece's own."""
        tok = AutoTokenizer.from_pretrained(hf_dir)
        ids = tok(SAMPLE_TEXT)["input_ids"]
        out = {"transformers_class": type(tok).__name__, "len": len(tok), "sample_ids": ids}
        if kind != "smollm2":
            out["matches_sentencepiece"] = ids == sp_tokenizer.encode(self.sp_model(kind), SAMPLE_TEXT)
        return out


# ---------------------------------------------------------------------------------------------------------
# llama.cpp's converter


def converter_env(converter_path: Path | None) -> dict:
    """The environment llama.cpp's converter runs in: offline, with `converter_path` (its own pinned
    transformers) ahead of the venv's packages when given."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    if converter_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(converter_path), env.get("PYTHONPATH")) if p)
    return env


def convert(llama_cpp: Path, hf_dir: Path, outtype: str, outfile: Path, converter_path: Path | None) -> dict:
    env = converter_env(converter_path)
    cmd = [sys.executable, "convert_hf_to_gguf.py", str(hf_dir), "--outtype", outtype, "--outfile", str(outfile)]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=llama_cpp, env=env, capture_output=True, text=True, timeout=600)
        log, returncode = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        text = "".join(x.decode(errors="replace") if isinstance(x, bytes) else x for x in (e.stdout, e.stderr) if x)
        log, returncode = f"{text}\nERROR: convert_hf_to_gguf.py ran over 600 s", -1
    return {
        "ok": returncode == 0 and outfile.is_file(),
        "returncode": returncode,
        "log": log,
        "warnings": [ln for ln in log.splitlines() if "WARNING" in ln],
        "seconds": round(time.time() - t0, 1),
    }


def converter_transformers(converter_path: Path | None) -> str:
    out = subprocess.run([sys.executable, "-c", "import transformers; print(transformers.__version__)"],
                         env=converter_env(converter_path), capture_output=True, text=True, check=True)
    return out.stdout.strip()


def logits_under_converter_transformers(hf_dir: Path, tokens: np.ndarray, converter_path: Path,
                                        scratch: Path) -> tuple[str, np.ndarray]:
    out = scratch / "logits.npy"
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "hf_logits.py"), str(hf_dir), str(out),
           *map(str, tokens.tolist())]
    proc = subprocess.run(cmd, env=converter_env(converter_path), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"hf_logits.py failed:\n{proc.stdout}{proc.stderr}")
    logits = np.load(out)
    out.unlink()
    return proc.stdout.strip().splitlines()[-1], logits


def error_text(log: str) -> str:
    lines = log.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("Traceback") or ln.startswith("ERROR"):
            return "\n".join(lines[i:]) + "\n"
    return "\n".join(lines[-40:]) + "\n"


def gguf_summary(path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    meta = {}
    for name, fld in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = fld.contents()
        if isinstance(value, list) and len(value) > 16:
            value = {"array_len": len(value)}
        meta[name] = value
    tensors = {
        t.name: {"shape": [int(x) for x in t.shape], "type": t.tensor_type.name} for t in reader.tensors
    }
    return {"architecture": meta.get("general.architecture"), "metadata": meta, "tensors": tensors}


# ---------------------------------------------------------------------------------------------------------


def versions(llama_cpp: Path) -> dict:
    import gguf
    import sentencepiece
    import tokenizers

    return {
        "generator": GENERATOR_VERSION,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "sentencepiece": sentencepiece.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "gguf_py": getattr(gguf, "__version__", None) or gguf_py_version(llama_cpp),
        "llama_cpp": llama_cpp_name(llama_cpp),
    }


def llama_cpp_name(llama_cpp: Path) -> str:
    """`llama_cpp_python-<version>/vendor/llama.cpp` for the tree build-llamacpp.sh unpacks, else its path."""
    parts = llama_cpp.parts
    for i, p in enumerate(parts):
        if p.startswith("llama_cpp_python-"):
            return "/".join(parts[i:])
    return str(llama_cpp)


def gguf_py_version(llama_cpp: Path) -> str | None:
    for line in (llama_cpp / "gguf-py" / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    return None


def make_case(case: Case, dest: Path, toks: Tokenizers, made: dict,
              converter_path: Path | None) -> tuple[dict, float]:
    """Writes dest/<case>/hf and reference.safetensors; returns the case.json fields known so far and
    the seconds it took."""
    t0 = time.time()
    cdir = dest / case.name
    hf_dir = cdir / "hf"
    hf_dir.mkdir(parents=True)
    vocab, first_plain, special_ids = toks.vocab_and_ids(case.tokenizer)
    info: dict = {"case": case.name, "family": case.family, "hf_architecture": case.arch,
                  "exercises": case.exercises, "notes": list(case.notes), "seed": case.seed}

    if case.copy_of:
        src = dest / case.copy_of / "hf"
        for f in src.iterdir():
            if f.name != "config.json":
                shutil.copyfile(f, hf_dir / f.name)
        cfg, layout = other_layout(json.loads((src / "config.json").read_text()))
        (hf_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        info["copy_of"] = case.copy_of
        info["notes"].append(f"config.json layout: {layout}; {case.copy_of}/hf/config.json has "
                             f"{layout_of(json.loads((src / 'config.json').read_text()))}")
    else:
        torch.manual_seed(case.seed)
        config = make_config(case, vocab, special_ids)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
        if type(model).__name__ != case.arch:
            raise RuntimeError(f"{case.name}: transformers built {type(model).__name__}, not {case.arch}")
        randomize(model, case.seed, case.gemma_norms)
        model.save_pretrained(hf_dir, safe_serialization=True)
        del model
        toks.write(case.tokenizer, hf_dir)
        info["notes"].append(f"config.json layout: {layout_of(json.loads((hf_dir / 'config.json').read_text()))}")

    model = load(hf_dir)
    cfg = model.config
    info["model_type"] = cfg.model_type
    info["shape"] = {
        "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "intermediate": cfg.intermediate_size,
        "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        "vocab": cfg.vocab_size, "tied_embeddings": bool(cfg.tie_word_embeddings),
    }
    info["tokenizer"] = {"kind": case.tokenizer, **toks.check(case.tokenizer, hf_dir)}
    if "matches_sentencepiece" in info["tokenizer"] and not info["tokenizer"]["matches_sentencepiece"]:
        raise RuntimeError(f"{case.name}: transformers' tokenizer disagrees with sentencepiece")

    tokens = case_tokens(case.seed, vocab, first_plain, special_ids["bos_token_id"])
    probe = RopeProbe(model) if case.family == "phi3" and cfg.rope_parameters.get("rope_type") == "longrope" else None
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens)[None], use_cache=False).logits[0].float().numpy()
    rope_full = probe.take() if probe else None
    pad = special_ids["pad_token_id"] if special_ids["pad_token_id"] is not None else special_ids["eos_token_id"]
    with torch.no_grad():
        g = greedy(model, tokens[:PROMPT], pad)
    rope_greedy = probe.take() if probe else None
    g_nc = greedy_nocache(model, tokens[:PROMPT])
    if probe:
        probe.handle.remove()

    if case.copy_of:
        ref = safetensors.numpy.load_file(dest / case.copy_of / "reference.safetensors")
        if not np.array_equal(ref["logits"], logits) or not np.array_equal(ref["greedy"], g):
            raise RuntimeError(f"{case.name}: transformers reads the two config layouts as different models")
        info["notes"].append(f"transformers {transformers.__version__}: logits and greedy bit-identical to "
                             f"{case.copy_of}'s")
        if converter_path is not None and layout_of(json.loads((hf_dir / "config.json").read_text())).startswith(
                "transformers 4"):
            version, other = logits_under_converter_transformers(hf_dir, tokens, converter_path, cdir)
            diff = float(np.abs(other - logits).max())
            if diff > 1e-4:
                raise RuntimeError(f"{case.name}: transformers {version} reads this config.json as another "
                                   f"model (max |logit diff| {diff})")
            info["notes"].append(f"transformers {version} (the converter's) on this config.json: logits "
                                 f"within {diff:.1e} of the reference")

    # Checks that the model is a useful reference: logits not flat, greedy not one id repeated.
    row_std = logits.std(axis=1)
    distinct = len(set(g.tolist()))
    if row_std.min() < 0.5 or distinct < 4:
        raise RuntimeError(f"{case.name}: degenerate (logit row std min {row_std.min():.3f}, "
                           f"{distinct} distinct greedy tokens)")
    info["reference"] = {
        "T": T, "prompt": PROMPT, "new": NEW,
        "tokens": tokens.tolist(),
        "greedy": g.tolist(),
        "greedy_nocache": g_nc.tolist(),
        "greedy_matches_nocache": bool(np.array_equal(g, g_nc)),
        "greedy_distinct": distinct,
        "logits_row_std_min": round(float(row_std.min()), 4),
        "logits_row_std_mean": round(float(row_std.mean()), 4),
        "argmax_logits_distinct": len(set(logits.argmax(axis=1).tolist())),
    }
    if probe:
        info["rope"] = {
            "longrope_factors_full_forward": sorted({u for _, u in rope_full}),
            "longrope_factors_greedy_by_last_position": [[p, u] for p, u in rope_greedy],
            "attention_scaling": float(model.model.rotary_emb.attention_scaling),
            "summary": (
                f"full forward of T={T}: {'/'.join(sorted({u for _, u in rope_full}))} factors for every "
                f"position; generate with the cache: short factors while the last position + 1 <= "
                f"{cfg.rope_parameters['original_max_position_embeddings']}, long after, without re-rotating "
                f"the cached keys (so greedy and greedy_nocache may differ)"),
        }
    safetensors.numpy.save_file(
        {"tokens": tokens, "logits": np.ascontiguousarray(logits, dtype=np.float32), "greedy": g,
         "greedy_nocache": g_nc},
        str(cdir / "reference.safetensors"),
        # one key: safetensors writes a metadata map in no fixed order, so more keys would make the bytes vary
        metadata={"reference": json.dumps({"case": case.name, "transformers": transformers.__version__,
                                           "torch": torch.__version__, "generator": GENERATOR_VERSION},
                                          sort_keys=True)},
    )
    del model
    made[case.name] = info
    return info, round(time.time() - t0, 1)


def finish_case(case: Case, dest: Path, info: dict, conversions: dict) -> None:
    cdir = dest / case.name
    ll: dict = {}
    for outtype, res in conversions.items():
        out = cdir / f"llamacpp-{outtype}.gguf"
        if res["ok"]:
            ll[outtype] = gguf_summary(out)
        else:
            out.unlink(missing_ok=True)
            ll.setdefault("error", error_text(res["log"]))
            ll.setdefault("error_outtype", outtype)
        if res["warnings"]:
            ll.setdefault("warnings", []).extend(w for w in res["warnings"] if w not in ll.get("warnings", []))
    if "error" in ll:
        # Keep one consistent outcome: the error text, no partial set of GGUFs.
        for outtype in conversions:
            (cdir / f"llamacpp-{outtype}.gguf").unlink(missing_ok=True)
            ll.pop(outtype, None)
        (cdir / "llamacpp-error.txt").write_text(ll["error"])
    info["llamacpp"] = ll
    (cdir / "case.json").write_text(json.dumps(info, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--llama-cpp", type=Path, required=True, help="llama.cpp source tree (convert_hf_to_gguf.py)")
    ap.add_argument("--smollm2", type=Path, required=True, help="HF folder with SmolLM2's tokenizer.json")
    ap.add_argument("--corpus", type=Path, required=True, help="text to train the SentencePiece tokenizers on")
    ap.add_argument("--converter-path", type=Path,
                    help="a folder put first on the converter's PYTHONPATH (its own pinned transformers)")
    ap.add_argument("--case", action="append", help="only these cases (default: all)")
    ap.add_argument("--outtypes", default="f32,f16", help="converter --outtype values, comma-separated")
    args = ap.parse_args()

    torch.set_num_threads(1)  # reproducible sums; the converter runs alongside on the other core
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    t_start = time.time()
    dest: Path = args.dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    llama_cpp = args.llama_cpp.resolve()
    wanted = set(args.case) if args.case else None
    cases = [c for c in CASES if wanted is None or c.name in wanted or
             any(o.copy_of == c.name and o.name in wanted for o in CASES)]
    outtypes = [o for o in args.outtypes.split(",") if o]
    toks = Tokenizers(args.smollm2.resolve(), args.corpus.resolve())
    converter_path = args.converter_path.resolve() if args.converter_path else None

    made: dict = {}
    futures: dict = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for case in cases:
            info, secs = make_case(case, dest, toks, made, converter_path)
            print(f"{case.name}: transformers {secs}s, greedy {info['reference']['greedy']}", flush=True)
            for outtype in outtypes:
                futures[(case.name, outtype)] = pool.submit(
                    convert, llama_cpp, dest / case.name / "hf", outtype,
                    dest / case.name / f"llamacpp-{outtype}.gguf", converter_path)
        for case in cases:
            conv = {o: futures[(case.name, o)].result() for o in outtypes}
            finish_case(case, dest, made[case.name], conv)
            ll = made[case.name]["llamacpp"]
            what = ll[outtypes[0]]["architecture"] if outtypes[0] in ll else "ERROR " + ll["error"].splitlines()[-1]
            secs = ", ".join(f"{o} {conv[o]['seconds']}s" for o in outtypes)
            print(f"{case.name}: llama.cpp converter -> {what} ({secs})", flush=True)

    index = {
        "versions": {**versions(llama_cpp), "converter_transformers": converter_transformers(converter_path)},
        "T": T, "prompt": PROMPT, "new": NEW,
        "cases": {
            c.name: {
                "family": c.family, "hf_architecture": c.arch,
                "llamacpp": "error" if "error" in made[c.name]["llamacpp"] else "ok",
            }
            for c in cases
        },
    }
    (dest / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"families: {len(cases)} cases in {time.time() - t_start:.1f}s -> {dest}")


if __name__ == "__main__":
    main()
