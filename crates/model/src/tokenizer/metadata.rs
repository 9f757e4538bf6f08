//! A model folder's `tokenizer.*` GGUF metadata, as llama.cpp's converter writes it.
//!
//! `shuku-gguf` knows llama.cpp's vocabulary writers but not the HF tokenizer; two facts need the
//! tokenizer itself, so they are computed here and handed over: the name of a byte-level BPE
//! pre-tokenizer (from the hash of an encoding, [`super::pre_hash`]) and the text llama.cpp
//! writes for added tokens that bypass the normalizer (their encoding decoded again).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;
use shuku_gguf::tokenizer::{export_family, ExportOptions, TokenizerFiles, VocabKind};

use super::pre_hash;
use super::Tokenizer;
use crate::error::{ModelError, Result};

/// The `tokenizer.*` metadata llama.cpp's converter writes for the model folder `dir` as the
/// GGUF architecture `arch` (`llama`, `qwen2`, `qwen3`, `gemma3`, `phi3`, …) with `vocab_size`
/// tokens, in its key order.
///
/// The vocabulary comes from `tokenizer.model` (SentencePiece) or `tokenizer.json` as the
/// family's converter chooses. For byte-level BPE, `tokenizer.ggml.pre` is found as llama.cpp
/// finds it, by hashing the tokenizer's encoding of a fixed text. The hash covers the vocabulary as
/// well as the splitting rules, so a tokenizer trained from scratch never has a known hash; one whose
/// pre-tokenizer is exactly GPT-2's (a lone `ByteLevel` with its regex, no normalizer) splits text as
/// llama.cpp's `gpt-2` does, and is named so. Any other unknown hash is
/// [`ModelError::UnknownPreTokenizer`]. `pre_override` names the pre-tokenizer instead, skipping
/// the detection (and replaces `"default"` for other vocabularies).
pub fn tokenizer_metadata(
    dir: &Path,
    arch: &str,
    vocab_size: usize,
    pre_override: Option<&str>,
) -> Result<Vec<(String, shuku_gguf::Value)>> {
    let files = TokenizerFiles::read(dir)?;
    let mut opts = ExportOptions {
        vocab_size: Some(vocab_size),
        pre: pre_override.map(str::to_string),
        ..ExportOptions::default()
    };
    if files.vocab_kind(arch)? == VocabKind::Gpt2 {
        let tok = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        if opts.pre.is_none() {
            opts.pre = Some(
                match detect_pre(&tok) {
                    Err(ModelError::UnknownPreTokenizer { .. })
                        if files.tokenizer_json().is_some_and(is_plain_gpt2) =>
                    {
                        "gpt-2"
                    }
                    other => other?,
                }
                .to_string(),
            );
        }
        opts.added_token_text = renormalized_added_tokens(&tok, files.tokenizer_config())?;
    }
    Ok(export_family(&files, arch, &opts)?)
}

/// llama.cpp's `tokenizer.ggml.pre` for a byte-level BPE tokenizer.
fn detect_pre(tok: &Tokenizer) -> Result<&'static str> {
    let ids = pre_hash::check_ids(tok)?;
    let hash = pre_hash::check_hash(&ids);
    pre_hash::pre_name(&hash).ok_or_else(|| ModelError::UnknownPreTokenizer {
        file: tok.path().to_path_buf(),
        hash,
    })
}

/// Whether `tokenizer.json` splits text exactly as GPT-2 does: one `ByteLevel` pre-tokenizer applying
/// its regex without a prefix space, and no normalizer.
fn is_plain_gpt2(tokenizer_json: &Json) -> bool {
    let pre = &tokenizer_json["pre_tokenizer"];
    let no_normalizer = tokenizer_json.get("normalizer").is_none_or(Json::is_null);
    no_normalizer
        && pre["type"] == "ByteLevel"
        && pre["use_regex"] != false
        && pre["add_prefix_space"] != true
}

/// transformers' `clean_up_tokenization`: spaces before punctuation and English contractions.
fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// Each added token's text as `decode(encode(text))` gives it (with transformers' clean-up when
/// `tokenizer_config.json` asks for it): the token as llama.cpp will see it. `shuku-gguf` uses
/// it for the tokens whose flags say they bypass the normalizer.
fn renormalized_added_tokens(
    tok: &Tokenizer,
    tokenizer_config: Option<&Json>,
) -> Result<BTreeMap<u32, String>> {
    let clean_up = tokenizer_config
        .and_then(|c| c.get("clean_up_tokenization_spaces"))
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let mut out = BTreeMap::new();
    for (id, added) in tok.inner().get_added_tokens_decoder() {
        let ids = tok.encode(&added.content, false)?;
        let mut text = tok.decode(&ids, false)?;
        if clean_up {
            text = clean_up_tokenization(&text);
        }
        out.insert(id, text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_matches_transformers() {
        assert_eq!(
            clean_up_tokenization("a , b . I 'm sure they 're ok ! do n't"),
            "a, b. I'm sure they're ok! don't"
        );
    }
}
