//! Byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`), as llama.cpp's
//! `_set_vocab_gpt2` writes them from `tokenizer.json`.
//!
//! The token list runs to the model's `vocab_size`: ids no token has become `[PAD{id}]` (unused),
//! added tokens are control tokens when flagged special or when they look like one, and other
//! added tokens are user-defined with `▁` written as a space (llama.cpp matches them in raw text).
//! llama.cpp first re-normalizes added tokens that skip the normalizer by encoding and decoding
//! them with the HF tokenizer; that needs the tokenizer itself, so the caller supplies the texts
//! of all added tokens ([`super::ExportOptions::added_token_text`]) and this module picks those it
//! needs.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::files::TokenizerFiles;
use super::kv::Kv;
use super::special::SpecialVocab;
use super::{looks_special, token_type, ExportOptions};
use crate::error::Result;
use crate::value::{Array, Value};

/// An entry of `tokenizer.json`'s `added_tokens`.
pub(crate) struct AddedToken {
    pub(crate) id: u32,
    pub(crate) content: String,
    pub(crate) special: bool,
    pub(crate) normalized: bool,
}

/// `tokenizer.json`'s `added_tokens`, checked.
pub(crate) fn added_tokens(files: &TokenizerFiles, tok: &Json) -> Result<Vec<AddedToken>> {
    let mut out = Vec::new();
    for (i, a) in tok
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("added_tokens[{i}]");
        let id = a
            .get("id")
            .and_then(Json::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                files.field_error("tokenizer.json", format!("{field}.id"), "not a token id")
            })?;
        let content = a.get("content").and_then(Json::as_str).ok_or_else(|| {
            files.field_error("tokenizer.json", format!("{field}.content"), "not a string")
        })?;
        out.push(AddedToken {
            id,
            content: content.to_string(),
            special: a.get("special").and_then(Json::as_bool).unwrap_or(false),
            // HF's `AddedToken` default is `normalized = not special`.
            normalized: a
                .get("normalized")
                .and_then(Json::as_bool)
                .unwrap_or(!a.get("special").and_then(Json::as_bool).unwrap_or(false)),
        });
    }
    Ok(out)
}

/// The model's own vocabulary, text → id: a map for BPE / WordPiece / WordLevel, a list of
/// `[piece, score]` for Unigram.
pub(crate) fn model_vocab(files: &TokenizerFiles, tok: &Json) -> Result<Vec<(String, u32)>> {
    let vocab = tok.get("model").and_then(|m| m.get("vocab"));
    let bad = |field: String| files.field_error("tokenizer.json", field, "not a token id");
    match vocab {
        Some(Json::Object(map)) => map
            .iter()
            .map(|(t, id)| {
                let id = id.as_u64().and_then(|v| u32::try_from(v).ok());
                id.map(|id| (t.clone(), id))
                    .ok_or_else(|| bad(format!("model.vocab[{t:?}]")))
            })
            .collect(),
        Some(Json::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let t = e.get(0).and_then(Json::as_str);
                let id = u32::try_from(i).ok();
                match (t, id) {
                    (Some(t), Some(id)) => Ok((t.to_string(), id)),
                    _ => Err(files.field_error(
                        "tokenizer.json",
                        format!("model.vocab[{i}]"),
                        "not a [piece, score] pair",
                    )),
                }
            })
            .collect(),
        _ => Err(files.field_error("tokenizer.json", "model.vocab", "missing")),
    }
}

/// transformers lets `tokenizer_config.json`'s `added_tokens_decoder` redefine an added token's
/// flags (absent flags take HF's defaults: not special, normalized unless special), and
/// llama.cpp reads the flags from transformers.
fn config_flags(files: &TokenizerFiles, added: &mut [AddedToken]) {
    let Some(decoder) = files
        .tokenizer_config
        .as_ref()
        .and_then(|c| c.get("added_tokens_decoder"))
        .and_then(Json::as_object)
    else {
        return;
    };
    for a in added {
        if let Some(entry) = decoder.get(&a.id.to_string()) {
            a.special = entry
                .get("special")
                .and_then(Json::as_bool)
                .unwrap_or(false);
            a.normalized = entry
                .get("normalized")
                .and_then(Json::as_bool)
                .unwrap_or(!a.special);
        }
    }
}

/// Tokens and token types as llama.cpp's `get_vocab_base` lists them.
fn vocab_base(
    files: &TokenizerFiles,
    tok: &Json,
    vocab_size: Option<usize>,
    added_text: &BTreeMap<u32, String>,
) -> Result<(Vec<String>, Vec<i32>)> {
    let base = model_vocab(files, tok)?;
    let mut added = added_tokens(files, tok)?;
    config_flags(files, &mut added);
    let mut distinct: std::collections::BTreeSet<&str> =
        base.iter().map(|(t, _)| t.as_str()).collect();
    distinct.extend(added.iter().map(|a| a.content.as_str()));
    let n_vocab = vocab_size.unwrap_or(distinct.len());
    let max_id = base
        .iter()
        .map(|(_, id)| *id)
        .chain(added.iter().map(|a| a.id))
        .max();
    if let Some(max) = max_id.filter(|&m| m as usize >= n_vocab) {
        return Err(files.field_error(
            "tokenizer.json",
            "model.vocab",
            format!("token id {max} is not below the model's vocab_size {n_vocab}"),
        ));
    }
    let mut text: Vec<Option<&str>> = vec![None; n_vocab];
    for (t, id) in &base {
        text[*id as usize] = Some(t);
    }
    let mut added_at: BTreeMap<u32, &AddedToken> = BTreeMap::new();
    for a in &added {
        text[a.id as usize] = Some(&a.content);
        added_at.insert(a.id, a);
    }
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut types = Vec::with_capacity(n_vocab);
    for (i, t) in text.into_iter().enumerate() {
        let Some(t) = t else {
            tokens.push(format!("[PAD{i}]"));
            types.push(token_type::UNUSED);
            continue;
        };
        match added_at.get(&(i as u32)) {
            Some(a) => {
                let t = match added_text.get(&a.id) {
                    Some(renormalized) if !a.normalized => renormalized.as_str(),
                    _ => t,
                };
                if a.special || looks_special(t) {
                    tokens.push(t.to_string());
                    types.push(token_type::CONTROL);
                } else {
                    tokens.push(t.replace('\u{2581}', " "));
                    types.push(token_type::USER_DEFINED);
                }
            }
            None => {
                tokens.push(t.to_string());
                types.push(token_type::NORMAL);
            }
        }
    }
    Ok((tokens, types))
}

/// `_set_vocab_gpt2`: `tokenizer.ggml.model = "gpt2"`, `pre`, tokens, types, then merges and the
/// special vocabulary.
pub(crate) fn write(
    files: &TokenizerFiles,
    kv: &mut Kv,
    opts: &ExportOptions,
    pre: &str,
) -> Result<()> {
    let tok = files.require_tokenizer_json()?;
    let (tokens, types) = vocab_base(files, tok, opts.vocab_size, &opts.added_token_text)?;
    kv.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    kv.set("tokenizer.ggml.pre", Value::String(pre.to_string()));
    kv.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    kv.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    SpecialVocab::load(files, true, None, None)?.write(kv);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn files(tok: Json) -> TokenizerFiles {
        TokenizerFiles::from_json_texts(&tok.to_string(), None, None).unwrap()
    }

    #[test]
    fn pads_to_vocab_size_and_types_added_tokens() {
        let tok = json!({
            "added_tokens": [
                {"id": 0, "content": "<|endoftext|>", "special": true, "normalized": false},
                {"id": 4, "content": "\u{2581}hi", "special": false, "normalized": true},
                {"id": 5, "content": "<|x|>", "special": false, "normalized": false}],
            "model": {"type": "BPE", "vocab": {"<|endoftext|>": 0, "a": 1, "b": 2, "ab": 3},
                      "merges": ["a b"]}
        });
        let f = files(tok.clone());
        let (tokens, types) = vocab_base(&f, &tok, Some(7), &BTreeMap::new()).unwrap();
        assert_eq!(
            tokens,
            ["<|endoftext|>", "a", "b", "ab", " hi", "<|x|>", "[PAD6]"]
        );
        assert_eq!(types, [3, 1, 1, 1, 4, 3, 5]);
        // Re-normalized text replaces a non-normalized added token's own.
        let text = BTreeMap::from([(5, "<|y|>".to_string()), (4, "ignored".to_string())]);
        let (tokens, _) = vocab_base(&f, &tok, None, &text).unwrap();
        assert_eq!(tokens, ["<|endoftext|>", "a", "b", "ab", " hi", "<|y|>"]);
    }

    #[test]
    fn ids_beyond_vocab_size_are_an_error() {
        let tok = json!({"model": {"type": "BPE", "vocab": {"a": 0, "b": 9}}});
        let e = vocab_base(&files(tok.clone()), &tok, Some(4), &BTreeMap::new());
        assert!(
            matches!(e, Err(crate::Error::TokenizerField { ref field, .. }) if field == "model.vocab")
        );
        // Without a vocab_size, the vocabulary's own size (2) bounds the ids too.
        assert!(vocab_base(&files(tok.clone()), &tok, None, &BTreeMap::new()).is_err());
    }
}
