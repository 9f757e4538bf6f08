//! SentencePiece-style vocabularies that exist only as `tokenizer.json` (BPE over `▁`-words
//! without a byte-level pre-tokenizer, or Unigram), written as `tokenizer.ggml.model = "llama"`.
//!
//! llama.cpp's converter has no path that writes such a folder as a working GGUF: without a
//! `tokenizer.model`, and unless the BPE model has byte fallback and a `Sequence` decoder, it
//! lists the vocabulary as byte-level BPE, which llama.cpp then tokenizes wrongly (and refuses
//! when the pre-tokenizer hash is unknown). shuku writes it the way llama.cpp tokenizes
//! SentencePiece models instead, as in the gguf-py-written reference of `glassllm-en`:
//!
//! * scores drive llama.cpp's SentencePiece merging, so a BPE token's score is minus the rank of
//!   the merge that creates it (the merge order survives); a Unigram piece keeps its score;
//! * types: the model's unknown token, special added tokens as control, other added tokens as
//!   user-defined, `<0xXX>` as bytes when the model has byte fallback;
//! * because llama.cpp's defaults for a `"llama"` vocabulary differ from what the HF tokenizer
//!   does, the unknown-token id, `add_bos_token` / `add_eos_token` (false unless the files say
//!   otherwise) and `add_space_prefix` (whether the normalizer or pre-tokenizer prepends `▁`) are
//!   always written, with the ids in gguf-py's key order.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::files::TokenizerFiles;
use super::gpt2::added_tokens;
use super::kv::Kv;
use super::special::{SpecialVocab, DEFAULT_TYPES};
use super::spm::Vocab;
use super::token_type;
use crate::error::Result;
use crate::value::Value;

/// Whether `tokenizer.json` holds a vocabulary of this kind: Unigram, or BPE whose pre-tokenizer
/// and decoder are not byte-level.
pub(crate) fn eligible(tok: &Json) -> bool {
    match tok
        .get("model")
        .and_then(|m| m.get("type"))
        .and_then(Json::as_str)
    {
        Some("Unigram") => true,
        Some("BPE") => {
            !contains_type(tok.get("pre_tokenizer"), "ByteLevel")
                && !contains_type(tok.get("decoder"), "ByteLevel")
        }
        _ => false,
    }
}

/// Whether a JSON component tree (`Sequence`s of pre-tokenizers, decoders or normalizers)
/// contains a component of type `t`.
fn contains_type(j: Option<&Json>, t: &str) -> bool {
    let Some(j) = j else { return false };
    if j.get("type").and_then(Json::as_str) == Some(t) {
        return true;
    }
    ["pretokenizers", "decoders", "normalizers"]
        .iter()
        .filter_map(|k| j.get(*k).and_then(Json::as_array))
        .flatten()
        .any(|x| contains_type(Some(x), t))
}

/// Ids above this are refused, so that a hostile `tokenizer.json` cannot exhaust memory.
const MAX_ID: u64 = 1 << 24;

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// The merges as pairs, for their ranks.
fn merge_pairs(files: &TokenizerFiles, model: &Json) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, m) in model
        .get("merges")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let pair = match m {
            Json::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string())),
            Json::Array(p) => match p.as_slice() {
                [Json::String(a), Json::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        };
        out.push(pair.ok_or_else(|| {
            files.field_error(
                "tokenizer.json",
                format!("model.merges[{i}]"),
                "unknown merges format",
            )
        })?);
    }
    Ok(out)
}

/// Whether the normalizer or pre-tokenizer prepends `▁` (SentencePiece's `add_dummy_prefix`).
fn adds_space_prefix(tok: &Json) -> bool {
    fn walk(j: &Json) -> bool {
        match j.get("type").and_then(Json::as_str) {
            Some("Prepend") => j.get("prepend").and_then(Json::as_str) == Some("\u{2581}"),
            Some("Metaspace") => match j.get("prepend_scheme").and_then(Json::as_str) {
                Some(s) => s != "never",
                None => j
                    .get("add_prefix_space")
                    .and_then(Json::as_bool)
                    .unwrap_or(true),
            },
            Some("Sequence") => ["normalizers", "pretokenizers"]
                .iter()
                .filter_map(|k| j.get(*k).and_then(Json::as_array))
                .flatten()
                .any(walk),
            _ => false,
        }
    }
    walk(tok.get("normalizer").unwrap_or(&Json::Null))
        || walk(tok.get("pre_tokenizer").unwrap_or(&Json::Null))
}

/// Stores token `id` in `base`, growing it.
fn put(
    files: &TokenizerFiles,
    base: &mut Vec<Option<(String, f32)>>,
    id: u64,
    text: &str,
    score: f32,
    field: String,
) -> Result<()> {
    if id > MAX_ID {
        return Err(files.field_error(
            "tokenizer.json",
            field,
            format!("token id {id} is implausibly large"),
        ));
    }
    let id = id as usize;
    if base.len() <= id {
        base.resize(id + 1, None);
    }
    base[id] = Some((text.to_string(), score));
    Ok(())
}

/// Lists the vocabulary, padded with `[PAD{id}]` (user-defined, score -1000) or cut to
/// `vocab_size`.
fn create(files: &TokenizerFiles, tok: &Json, vocab_size: Option<usize>) -> Result<Vocab> {
    let model = tok.get("model").unwrap_or(&Json::Null);
    let is_bpe = model.get("type").and_then(Json::as_str) == Some("BPE");
    // id -> (text, score)
    let mut base: Vec<Option<(String, f32)>> = Vec::new();
    match model.get("vocab") {
        Some(Json::Object(map)) if is_bpe => {
            for (t, id) in map {
                let field = format!("model.vocab[{t:?}]");
                let id = id
                    .as_u64()
                    .ok_or_else(|| files.field_error("tokenizer.json", &field, "not a token id"))?;
                put(files, &mut base, id, t, 0.0, field)?;
            }
        }
        Some(Json::Array(list)) if !is_bpe => {
            for (i, e) in list.iter().enumerate() {
                let field = format!("model.vocab[{i}]");
                match (
                    e.get(0).and_then(Json::as_str),
                    e.get(1).and_then(Json::as_f64),
                ) {
                    (Some(t), Some(s)) => put(files, &mut base, i as u64, t, s as f32, field)?,
                    _ => {
                        return Err(files.field_error(
                            "tokenizer.json",
                            field,
                            "not a [piece, score] pair",
                        ))
                    }
                }
            }
        }
        _ => {
            return Err(files.field_error(
                "tokenizer.json",
                "model.vocab",
                "missing or of the wrong kind",
            ))
        }
    }
    let added = added_tokens(files, tok)?;
    for (i, a) in added.iter().enumerate() {
        // An added token keeps the score of the model token it replaces.
        let keep = base
            .get(a.id as usize)
            .and_then(|s| s.as_ref())
            .map_or(0.0, |s| s.1);
        put(
            files,
            &mut base,
            u64::from(a.id),
            &a.content,
            keep,
            format!("added_tokens[{i}].id"),
        )?;
    }

    let mut rank_score: HashMap<String, f32> = HashMap::new();
    if is_bpe {
        for (i, (a, b)) in merge_pairs(files, model)?.iter().enumerate() {
            rank_score
                .entry(format!("{a}{b}"))
                .or_insert(-((i + 1) as f32));
        }
    }
    let byte_fallback = model
        .get("byte_fallback")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let unk = model.get("unk_token").and_then(Json::as_str);
    let n = vocab_size.unwrap_or(base.len());
    let mut v = Vocab::default();
    for i in 0..n {
        let Some((text, score)) = base.get(i).cloned().flatten() else {
            v.tokens.push(format!("[PAD{i}]"));
            v.scores.push(-1000.0);
            v.types.push(token_type::USER_DEFINED);
            continue;
        };
        let ty = if Some(text.as_str()) == unk {
            token_type::UNKNOWN
        } else if let Some(a) = added.iter().find(|a| a.id as usize == i) {
            if a.special {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            }
        } else if byte_fallback && is_byte_token(&text) {
            token_type::BYTE
        } else {
            token_type::NORMAL
        };
        let score = if is_bpe {
            rank_score.get(&text).copied().unwrap_or(0.0)
        } else {
            score
        };
        v.tokens.push(text);
        v.scores.push(score);
        v.types.push(ty);
    }
    Ok(v)
}

/// Writes the vocabulary, its special tokens and `add_space_prefix`.
pub(crate) fn write(
    files: &TokenizerFiles,
    kv: &mut Kv,
    vocab_size: Option<usize>,
    pre: &str,
) -> Result<()> {
    let tok = files.require_tokenizer_json()?;
    let v = create(files, tok, vocab_size)?;
    let n = v.tokens.len();
    super::write_llama_vocab(kv, pre, v);
    let mut sv = SpecialVocab::load(files, false, None, Some(n))?;
    if let Some(u) = tok.get("model").and_then(|m| m.get("unk_token")) {
        let id = added_tokens(files, tok)?
            .iter()
            .find(|a| Some(a.content.as_str()) == u.as_str())
            .map(|a| Json::from(a.id))
            .or_else(|| {
                let vocab = tok.get("model").and_then(|m| m.get("vocab"));
                u.as_str()
                    .and_then(|u| vocab.and_then(|v| v.get(u)))
                    .cloned()
            });
        sv.set_id(files, "tokenizer.json", "unk", id.as_ref())?;
    }
    sv.ids.sort_by_key(|(t, _)| {
        DEFAULT_TYPES
            .iter()
            .position(|d| d == t)
            .unwrap_or(usize::MAX)
    });
    for typ in ["bos", "eos"] {
        if !sv.add.iter().any(|(t, _)| *t == typ) {
            sv.set_add(typ, false);
        }
    }
    sv.write(kv);
    kv.set(
        "tokenizer.ggml.add_space_prefix",
        Value::Bool(adds_space_prefix(tok)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Array;
    use serde_json::json;

    #[test]
    fn types_scores_and_always_written_flags() {
        let tj = json!({
            "added_tokens": [{"id": 0, "content": "<unk>", "special": true},
                             {"id": 1, "content": "<s>", "special": true}],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
            "pre_tokenizer": null,
            "post_processor": {"type": "TemplateProcessing", "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
            "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
                      "vocab": {"<unk>": 0, "<s>": 1, "<0x0A>": 2, "\u{2581}": 3, "a": 4, "\u{2581}a": 5},
                      "merges": ["\u{2581} a"]},
            "decoder": {"type": "Replace"}
        });
        assert!(eligible(&tj));
        let cfg = json!({"bos_token": "<s>", "unk_token": "<unk>"}).to_string();
        let files = TokenizerFiles::from_json_texts(&tj.to_string(), Some(&cfg), None).unwrap();
        let mut kv = Kv::default();
        write(&files, &mut kv, Some(7), "default").unwrap();
        let m = kv.into_vec();
        let get = |k: &str| m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("tokenizer.ggml.token_type"),
            Some(Value::Array(Array::I32(vec![2, 3, 6, 1, 1, 1, 4])))
        );
        assert_eq!(
            get("tokenizer.ggml.scores"),
            Some(Value::Array(Array::F32(vec![
                0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1000.0
            ])))
        );
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).skip(5).collect();
        assert_eq!(
            keys,
            [
                "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token",
                "tokenizer.ggml.add_space_prefix"
            ]
        );
        assert_eq!(get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
        assert_eq!(
            get("tokenizer.ggml.add_space_prefix"),
            Some(Value::Bool(true))
        );
    }

    #[test]
    fn byte_level_bpe_is_not_this_kind() {
        let tj = json!({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Sequence",
            "pretokenizers": [{"type": "Digits"}, {"type": "ByteLevel"}]}});
        assert!(!eligible(&tj));
    }
}
