//! Byte-fallback BPE `tokenizer.json` vocabularies written as SentencePiece (`"llama"`), as
//! gguf-py's `LlamaHfVocab` lists them for Llama-family models that ship no `tokenizer.model`.
//!
//! llama.cpp takes this path only for a BPE model with `byte_fallback` and a `Sequence` decoder
//! ([`eligible`]). Every token gets the score -1000; `<0xXX>` tokens are bytes, the tokenizer's
//! special tokens (the named ones of `tokenizer_config.json` or `special_tokens_map.json`, and
//! their additional special tokens) are control tokens, and added tokens past the model's own
//! vocabulary follow it, user-defined unless special. The list is not padded to the model's
//! `vocab_size`.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::files::TokenizerFiles;
use super::gpt2::{added_tokens, model_vocab};
use super::spm::Vocab;
use super::token_type;
use crate::error::Result;

/// Whether llama.cpp's Llama converter reads `tokenizer.json` with `LlamaHfVocab`: a BPE model
/// with byte fallback and a `Sequence` decoder that is not Llama-3's (merges ignored, no byte
/// fallback).
pub(crate) fn eligible(tok: &Json) -> bool {
    let Some(model) = tok.get("model") else {
        return false;
    };
    let is_bpe = model.get("type").and_then(Json::as_str) == Some("BPE");
    let flag = |k: &str, default: bool| model.get(k).and_then(Json::as_bool).unwrap_or(default);
    let llama3 = is_bpe && flag("ignore_merges", false) && !flag("byte_fallback", true);
    let sequence_decoder = tok
        .get("decoder")
        .and_then(|d| d.get("type"))
        .and_then(Json::as_str)
        == Some("Sequence");
    !llama3 && is_bpe && flag("byte_fallback", false) && sequence_decoder
}

/// The special tokens' texts: HF's named special tokens and additional ones.
fn special_texts(files: &TokenizerFiles) -> BTreeSet<String> {
    const NAMED: [&str; 7] = [
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    ];
    let text = |j: &Json| match j {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    };
    let mut out = BTreeSet::new();
    for source in [
        files.tokenizer_config.as_ref(),
        files.special_tokens_map.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        for key in NAMED {
            if let Some(t) = source.get(key).and_then(text) {
                out.insert(t);
            }
        }
        for key in ["additional_special_tokens", "extra_special_tokens"] {
            for t in source
                .get(key)
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(text)
            {
                out.insert(t);
            }
        }
    }
    out
}

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// Lists the vocabulary.
pub(crate) fn create(files: &TokenizerFiles) -> Result<Vocab> {
    let tok = files.require_tokenizer_json()?;
    let base = model_vocab(files, tok)?;
    let added = added_tokens(files, tok)?;
    let n_base = base.len();
    let mut text: Vec<Option<&str>> = vec![None; n_base];
    for (t, id) in &base {
        if let Some(slot) = text.get_mut(*id as usize) {
            *slot = Some(t);
        }
    }
    let specials = special_texts(files);
    let lookup = |t: &str| {
        added
            .iter()
            .find(|a| a.content == t)
            .map(|a| a.id)
            .or_else(|| base.iter().find(|(b, _)| b == t).map(|(_, id)| *id))
    };
    let special_ids: BTreeSet<u32> = specials.iter().filter_map(|t| lookup(t)).collect();
    let mut v = Vocab::default();
    for (i, t) in text.into_iter().enumerate() {
        let t = t.ok_or_else(|| {
            files.field_error(
                "tokenizer.json",
                "model.vocab",
                format!("no token has id {i}"),
            )
        })?;
        let ty = if is_byte_token(t) {
            token_type::BYTE
        } else if special_ids.contains(&(i as u32)) {
            token_type::CONTROL
        } else {
            token_type::NORMAL
        };
        v.tokens.push(t.to_string());
        v.scores.push(-1000.0);
        v.types.push(ty);
    }
    let mut extra: Vec<_> = added.iter().filter(|a| a.id as usize >= n_base).collect();
    extra.sort_by_key(|a| a.id);
    for a in extra {
        let ty = if specials.contains(&a.content) {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
        v.tokens.push(a.content.clone());
        v.scores.push(-1000.0);
        v.types.push(ty);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eligibility_follows_llama_cpp() {
        let t = |model: Json, decoder: &str| json!({"model": model, "decoder": {"type": decoder}});
        assert!(eligible(&t(
            json!({"type": "BPE", "byte_fallback": true}),
            "Sequence"
        )));
        assert!(!eligible(&t(
            json!({"type": "BPE", "byte_fallback": false}),
            "Sequence"
        )));
        assert!(!eligible(&t(
            json!({"type": "BPE", "byte_fallback": true}),
            "ByteLevel"
        )));
        assert!(!eligible(&t(json!({"type": "Unigram"}), "Sequence")));
        assert!(!eligible(
            &json!({"model": {"type": "BPE", "byte_fallback": true}, "decoder": null})
        ));
    }

    #[test]
    fn lists_base_then_added_tokens() {
        let tok = json!({
            "model": {"type": "BPE", "byte_fallback": true,
                      "vocab": {"<unk>": 0, "<s>": 1, "<0x0A>": 2, "\u{2581}a": 3}},
            "added_tokens": [{"id": 1, "content": "<s>", "special": true},
                             {"id": 5, "content": "<tool>", "special": true},
                             {"id": 4, "content": "<end>", "special": true}],
            "decoder": {"type": "Sequence"}
        });
        let cfg = json!({"bos_token": "<s>", "unk_token": {"content": "<unk>"},
                         "additional_special_tokens": ["<end>"]});
        let f = TokenizerFiles::from_json_texts(&tok.to_string(), Some(&cfg.to_string()), None)
            .unwrap();
        let v = create(&f).unwrap();
        assert_eq!(
            v.tokens,
            ["<unk>", "<s>", "<0x0A>", "\u{2581}a", "<end>", "<tool>"]
        );
        assert_eq!(v.types, [3, 3, 6, 1, 3, 4]);
        assert!(v.scores.iter().all(|&s| s == -1000.0));
    }
}
