"""SentencePiece tokenizers for the family cases, trained here on a text corpus (no hub).

Two styles, each a BPE model with byte fallback and vocab_size 512:
  llama  like Llama 2's tokenizer.model: <unk> 0, <s> 1, </s> 2, then the 256 byte pieces <0x00>..<0xFF>;
         a dummy "▁" prefix, digits split, identity normalisation, whitespace kept as is.
  gemma  like Gemma's: <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4, then the byte pieces; no dummy prefix.
Training reads the corpus' non-empty lines in order on one thread into memory, so the model bytes
depend only on the corpus and the options here (checked: two runs give identical bytes).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import sentencepiece as spm

VOCAB_SIZE = 512

COMMON = dict(
    model_type="bpe",
    vocab_size=VOCAB_SIZE,
    byte_fallback=True,
    character_coverage=1.0,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    num_threads=1,
    minloglevel=2,
)

STYLES = {
    "llama": dict(
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        add_dummy_prefix=True,
    ),
    "gemma": dict(
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        control_symbols=["<mask>"],
        add_dummy_prefix=False,
    ),
}

# Token strings and ids of each style's special tokens, as its tokenizer_config.json names them.
SPECIALS = {
    "llama": {"unk_token": ("<unk>", 0), "bos_token": ("<s>", 1), "eos_token": ("</s>", 2)},
    "gemma": {
        "pad_token": ("<pad>", 0), "eos_token": ("<eos>", 1), "bos_token": ("<bos>", 2),
        "unk_token": ("<unk>", 3), "mask_token": ("<mask>", 4),
    },
}

TOKENIZER_CLASS = {"llama": "LlamaTokenizer", "gemma": "GemmaTokenizer"}


def train(corpus: Path, style: str) -> bytes:
    """The serialised tokenizer.model of `style`, trained on `corpus`."""
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, **COMMON, **STYLES[style])
    return out.getvalue()


def special_ids(style: str) -> dict[str, int | None]:
    s = SPECIALS[style]
    return {
        "bos_token_id": s["bos_token"][1],
        "eos_token_id": s["eos_token"][1],
        "pad_token_id": s["pad_token"][1] if "pad_token" in s else None,
    }


def write(hf_dir: Path, model: bytes, style: str) -> None:
    """tokenizer.model, tokenizer_config.json and special_tokens_map.json in `hf_dir`."""
    (hf_dir / "tokenizer.model").write_bytes(model)
    specials = SPECIALS[style]
    config = {
        "tokenizer_class": TOKENIZER_CLASS[style],
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": 4096,
        "sp_model_kwargs": {},
        "added_tokens_decoder": {
            str(tid): {
                "content": text, "lstrip": False, "normalized": False,
                "rstrip": False, "single_word": False, "special": True,
            }
            for text, tid in sorted(specials.values(), key=lambda x: x[1])
        },
    }
    config.update({name: text for name, (text, _) in specials.items()})
    if "pad_token" not in specials:
        config["pad_token"] = None
    if style == "gemma":
        config["spaces_between_special_tokens"] = False
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {name: text for name, (text, _) in specials.items()}
    (hf_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")


def encode(model: bytes, text: str, add_bos: bool = True) -> list[int]:
    """What sentencepiece itself makes of `text` (for checking transformers' tokenizer against it)."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    ids = sp.encode(text)
    return ([sp.bos_id()] if add_bos else []) + ids
