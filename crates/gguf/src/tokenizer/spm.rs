//! SentencePiece vocabularies from `tokenizer.model` (`tokenizer.ggml.model = "llama"`), as
//! llama.cpp's `_create_vocab_sentencepiece` and Phi-3's own variant of it list them.
//!
//! The list has the model's `vocab_size` entries, pre-filled with `[PAD{id}]` (score -10000,
//! unused). Each piece keeps its score; its type is unknown, control, unused or byte from the
//! piece type and normal otherwise (user-defined pieces included). Then `added_tokens.json` and
//! `tokenizer_config.json`'s `added_tokens_decoder` overwrite entries with score -1000: the
//! former as user-defined tokens, the latter as control tokens when special (or looking special)
//! and user-defined otherwise. Phi-3 differs in small ways: it refuses, rather than skips, ids
//! past the vocabulary in `added_tokens_decoder`, does not rewrite `▁` in user-defined tokens,
//! does not test whether a token looks special, and also applies `tokenizer.json`'s
//! `added_tokens`.

use serde_json::Value as Json;

use super::files::TokenizerFiles;
use super::{looks_special, token_type};
use crate::error::Result;
use crate::sentencepiece::PieceType;

/// Tokens, scores and token types of one vocabulary.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Vocab {
    pub(crate) tokens: Vec<String>,
    pub(crate) scores: Vec<f32>,
    pub(crate) types: Vec<i32>,
}

impl Vocab {
    fn padded(n: usize) -> Self {
        Self {
            tokens: (0..n).map(|i| format!("[PAD{i}]")).collect(),
            scores: vec![-10000.0; n],
            types: vec![token_type::UNUSED; n],
        }
    }

    fn set(&mut self, id: usize, text: String, score: f32, ty: i32) {
        if let (Some(t), Some(s), Some(k)) = (
            self.tokens.get_mut(id),
            self.scores.get_mut(id),
            self.types.get_mut(id),
        ) {
            (*t, *s, *k) = (text, score, ty);
        }
    }
}

/// Which of the two readings of `tokenizer.model` to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `_create_vocab_sentencepiece`.
    Standard,
    /// `Phi3MiniModel.set_vocab`.
    Phi3,
}

fn piece_type(kind: PieceType) -> i32 {
    match kind {
        PieceType::Unknown => token_type::UNKNOWN,
        PieceType::Control => token_type::CONTROL,
        PieceType::Unused => token_type::UNUSED,
        PieceType::Byte => token_type::BYTE,
        PieceType::Normal | PieceType::UserDefined => token_type::NORMAL,
    }
}

/// A token id given as JSON (a number, or a decimal string for `added_tokens_decoder` keys).
fn token_id(files: &TokenizerFiles, file: &str, field: &str, v: &Json) -> Result<usize> {
    let id = match v {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    id.and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| files.field_error(file, field, format!("{v} is not a token id")))
}

/// Reads the vocabulary of `tokenizer.model` (which the caller has checked is present).
pub(crate) fn create(
    files: &TokenizerFiles,
    vocab_size: Option<usize>,
    flavor: Flavor,
) -> Result<Vocab> {
    let Some(model) = files.sentencepiece.as_ref() else {
        return Err(files.field_error("tokenizer.model", "", "missing"));
    };
    let n = vocab_size.filter(|&n| n > 0).unwrap_or(model.pieces.len());
    if flavor == Flavor::Phi3 && model.pieces.len() > n {
        return Err(files.field_error(
            "tokenizer.model",
            "pieces",
            format!(
                "{} pieces, more than the model's vocab_size {n}",
                model.pieces.len()
            ),
        ));
    }
    let mut v = Vocab::padded(n);
    for (id, p) in model.pieces.iter().enumerate().take(n) {
        v.set(id, p.piece.clone(), p.score, piece_type(p.kind));
    }

    if let Some(added) = &files.added_tokens {
        let Some(map) = added.as_object() else {
            return Err(files.field_error("added_tokens.json", "", "not an object"));
        };
        for (text, id) in map {
            let id = token_id(files, "added_tokens.json", text, id)?;
            if id < n {
                v.set(id, text.clone(), -1000.0, token_type::USER_DEFINED);
            }
        }
    }

    let decoder = files
        .tokenizer_config
        .as_ref()
        .and_then(|c| c.get("added_tokens_decoder"))
        .and_then(Json::as_object);
    for (key, data) in decoder.into_iter().flatten() {
        let field = format!("added_tokens_decoder.{key}");
        let id = token_id(
            files,
            "tokenizer_config.json",
            &field,
            &Json::String(key.clone()),
        )?;
        let content = data.get("content").and_then(Json::as_str).ok_or_else(|| {
            files.field_error(
                "tokenizer_config.json",
                format!("{field}.content"),
                "not a string",
            )
        })?;
        let special = data.get("special").is_some_and(super::special::truthy);
        if id >= n {
            if flavor == Flavor::Phi3 {
                return Err(files.field_error(
                    "tokenizer_config.json",
                    field,
                    format!("token id {id} is not below the model's vocab_size {n}"),
                ));
            }
            continue;
        }
        let (text, ty) = match flavor {
            Flavor::Standard if special || looks_special(content) => {
                (content.to_string(), token_type::CONTROL)
            }
            Flavor::Standard => (content.replace('\u{2581}', " "), token_type::USER_DEFINED),
            Flavor::Phi3 if special => (content.to_string(), token_type::CONTROL),
            Flavor::Phi3 => (content.to_string(), token_type::USER_DEFINED),
        };
        v.set(id, text, -1000.0, ty);
    }

    if flavor == Flavor::Phi3 {
        if let Some(tok) = &files.tokenizer_json {
            for (i, a) in super::gpt2::added_tokens(files, tok)?
                .into_iter()
                .enumerate()
            {
                let id = a.id as usize;
                if id >= n {
                    return Err(files.field_error(
                        "tokenizer.json",
                        format!("added_tokens[{i}].id"),
                        format!("token id {id} is not below the model's vocab_size {n}"),
                    ));
                }
                let ty = if a.special {
                    token_type::CONTROL
                } else {
                    token_type::USER_DEFINED
                };
                v.set(id, a.content, -1000.0, ty);
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentencepiece::{Piece, SentencePieceModel};
    use serde_json::json;

    fn files(cfg: Option<Json>, added: Option<Json>) -> TokenizerFiles {
        let piece = |p: &str, score: f32, kind: PieceType| Piece {
            piece: p.to_string(),
            score,
            kind,
        };
        let mut f = TokenizerFiles::default();
        f.sentencepiece = Some(SentencePieceModel {
            pieces: vec![
                piece("<unk>", 0.0, PieceType::Unknown),
                piece("<s>", 0.0, PieceType::Control),
                piece("<0x0A>", 0.0, PieceType::Byte),
                piece("<user>", 0.0, PieceType::UserDefined),
                piece("\u{2581}a", -1.5, PieceType::Normal),
                piece("x", -2.0, PieceType::Unused),
            ],
        });
        f.tokenizer_config = cfg;
        f.added_tokens = added;
        f
    }

    #[test]
    fn pieces_padding_and_added_tokens() {
        let cfg = json!({"added_tokens_decoder": {
            "5": {"content": "\u{2581}x\u{2581}", "special": false},
            "6": {"content": "<|im|>", "special": false},
            "99": {"content": "<far>", "special": true}}});
        let added = json!({"<extra>": 7});
        let v = create(&files(Some(cfg), Some(added)), Some(9), Flavor::Standard).unwrap();
        assert_eq!(
            v.tokens,
            [
                "<unk>",
                "<s>",
                "<0x0A>",
                "<user>",
                "\u{2581}a",
                " x ",
                "<|im|>",
                "<extra>",
                "[PAD8]"
            ]
        );
        assert_eq!(v.types, [2, 3, 6, 1, 1, 4, 3, 4, 5]);
        assert_eq!(
            v.scores,
            [0.0, 0.0, 0.0, 0.0, -1.5, -1000.0, -1000.0, -1000.0, -10000.0]
        );
    }

    #[test]
    fn pieces_past_vocab_size_are_dropped_except_for_phi3() {
        let v = create(&files(None, None), Some(3), Flavor::Standard).unwrap();
        assert_eq!(v.tokens, ["<unk>", "<s>", "<0x0A>"]);
        assert!(create(&files(None, None), Some(3), Flavor::Phi3).is_err());
    }

    #[test]
    fn phi3_keeps_spaces_and_refuses_far_ids() {
        let cfg =
            json!({"added_tokens_decoder": {"5": {"content": "\u{2581}x", "special": false}}});
        let v = create(&files(Some(cfg), None), None, Flavor::Phi3).unwrap();
        assert_eq!(v.tokens[5], "\u{2581}x");
        assert_eq!(v.types[5], 4);
        let far = json!({"added_tokens_decoder": {"60": {"content": "<x>", "special": true}}});
        assert!(matches!(
            create(&files(Some(far), None), None, Flavor::Phi3),
            Err(crate::Error::TokenizerField { .. })
        ));
    }

    #[test]
    fn bad_ids_are_typed_errors() {
        let cfg = json!({"added_tokens_decoder": {"five": {"content": "x"}}});
        assert!(matches!(
            create(&files(Some(cfg), None), None, Flavor::Standard),
            Err(crate::Error::TokenizerField { ref field, .. }) if field == "added_tokens_decoder.five"
        ));
        let added = json!({"<x>": -1});
        assert!(create(&files(None, Some(added)), None, Flavor::Standard).is_err());
    }
}
