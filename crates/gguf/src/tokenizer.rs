//! A model folder's tokenizer files → llama.cpp's `tokenizer.ggml.*` metadata, equal to what
//! llama.cpp's `convert_hf_to_gguf.py` writes, so that llama.cpp tokenizes our GGUFs as it
//! tokenizes its own.
//!
//! Each model family picks a vocabulary writer as llama.cpp's converter does ([`VocabKind`],
//! [`TokenizerFiles::vocab_kind`]):
//!
//! | `arch` | vocabulary |
//! |---|---|
//! | `llama` (and `deci`, shuku's per-layer-width Llama) | `tokenizer.model` → SentencePiece; else a byte-fallback BPE `tokenizer.json` → `LlamaHfVocab`; else a SentencePiece-style `tokenizer.json` → shuku's own `"llama"` vocabulary; else byte-level BPE |
//! | `qwen2`, `qwen3` | `tokenizer.model` → SentencePiece; else byte-level BPE |
//! | `gemma3` | `tokenizer.model` → SentencePiece with `add_space_prefix = false`; else byte-level BPE |
//! | `phi3` | `GPT2Tokenizer` → byte-level BPE; else Phi-3's reading of `tokenizer.model` |
//! | others | byte-level BPE |
//!
//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) needs `tokenizer.ggml.pre`, the name of
//! llama.cpp's pre-tokenizer. llama.cpp finds it by hashing the HF tokenizer's encoding of a fixed
//! text, which needs the tokenizer itself: the caller passes the name in
//! ([`ExportOptions::pre`]; `shuku_model::tokenizer_metadata` computes it). The Llama family also
//! writes `add_space_prefix` from `tokenizer_config.json`'s `add_prefix_space`, marks CodeLlama's
//! infill vocabulary (32016 tokens) with its EOT, and turns `add_bos_token` off for 49152-token
//! vocabularies, as llama.cpp does.
//!
//! Every path ends with the special vocabulary of gguf-py's `SpecialVocab`: special-token ids,
//! `add_*_token` flags, merges, chat templates and normalizer flags.

mod family;
mod files;
mod gpt2;
mod kv;
mod llama_hf;
mod special;
mod spm;
mod spm_json;

use std::collections::BTreeMap;
use std::path::Path;

pub use family::VocabKind;
pub use files::TokenizerFiles;

use crate::error::Result;
use crate::value::{Array, Value};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    /// Ordinary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// Special/control token (never produced from text by the pre-tokenizer).
    pub const CONTROL: i32 = 3;
    /// User-defined added token (matched verbatim in text).
    pub const USER_DEFINED: i32 = 4;
    /// Unused slot, such as vocabulary padding.
    pub const UNUSED: i32 = 5;
    /// Byte-fallback token `<0xXX>`.
    pub const BYTE: i32 = 6;
}

/// Options for [`export`], [`export_dir`] and [`export_family`].
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The model's vocabulary size (`config.json` `vocab_size`): the token list runs to it, as
    /// llama.cpp's converter lists it.
    pub vocab_size: Option<usize>,
    /// `tokenizer.ggml.pre`: required for byte-level BPE (see the module documentation);
    /// replaces `"default"` elsewhere.
    pub pre: Option<String>,
    /// Contents of the model's `config.json`, for [`export`] (the other entry points read it).
    pub config_json: Option<String>,
    /// For byte-level BPE: the text of each added token (by id) as the HF tokenizer decodes its own
    /// encoding of it. llama.cpp writes that text for added tokens that bypass the normalizer
    /// (the token as its tokenizer will see it); tokens missing here keep their own text.
    pub added_token_text: BTreeMap<u32, String>,
}

/// The largest vocabulary accepted, so that a hostile size cannot exhaust memory.
pub(crate) const MAX_VOCAB: usize = 1 << 24;

/// Reads the tokenizer files of the folder `dir` and writes them as a Llama-family model's,
/// with `config.json`'s `vocab_size`. `pre` names the pre-tokenizer of a byte-level BPE
/// vocabulary, which cannot be exported without it.
pub fn export_dir(dir: &Path, pre: Option<&str>) -> Result<Vec<(String, Value)>> {
    let files = TokenizerFiles::read(dir)?;
    let opts = ExportOptions {
        vocab_size: files.config_vocab_size(),
        pre: pre.map(str::to_string),
        ..ExportOptions::default()
    };
    export_family(&files, "llama", &opts)
}

/// Writes a Llama-family model's tokenizer given as `tokenizer.json` (and optionally
/// `tokenizer_config.json` and, in `opts`, `config.json`) texts.
pub fn export(
    tokenizer_json: &str,
    tokenizer_config_json: Option<&str>,
    opts: &ExportOptions,
) -> Result<Vec<(String, Value)>> {
    let files = TokenizerFiles::from_json_texts(
        tokenizer_json,
        tokenizer_config_json,
        opts.config_json.as_deref(),
    )?;
    export_family(&files, "llama", opts)
}

/// The `tokenizer.*` metadata of the GGUF architecture `arch`, in llama.cpp's key order.
pub fn export_family(
    files: &TokenizerFiles,
    arch: &str,
    opts: &ExportOptions,
) -> Result<Vec<(String, Value)>> {
    if let Some(n) = opts.vocab_size.filter(|&n| n > MAX_VOCAB) {
        return Err(files.field_error(
            "config.json",
            "vocab_size",
            format!("{n} is more than the {MAX_VOCAB} tokens supported"),
        ));
    }
    family::export(files, arch, opts)
}

/// llama.cpp's test for added tokens that behave as control tokens although not flagged special.
pub(crate) fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// The head of every SentencePiece-type vocabulary: `model = "llama"`, `pre`, tokens, scores,
/// token types.
pub(crate) fn write_llama_vocab(kv: &mut kv::Kv, pre: &str, v: spm::Vocab) {
    kv.set("tokenizer.ggml.model", Value::String("llama".into()));
    kv.set("tokenizer.ggml.pre", Value::String(pre.to_string()));
    kv.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(v.tokens)),
    );
    kv.set("tokenizer.ggml.scores", Value::Array(Array::F32(v.scores)));
    kv.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(v.types)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_special_matches_llama_cpp_patterns() {
        for t in [
            "<pad>",
            "<|im_start|>",
            "<\u{ff5c}end\u{ff5c}>",
            "<unused12>",
            "[@BOS@]",
        ] {
            assert!(looks_special(t), "{t}");
        }
        for t in ["<s>", "hello", "<|im_start", "<unk>"] {
            assert!(!looks_special(t), "{t}");
        }
    }
}
