//! Reading `tokenizer.ggml.*` from a GGUF file into [`VocabData`].

use shuku_gguf::{GgufFile, Value};

use super::error::{Result, TokenizerError};
use super::vocab::{SpecialIds, VocabData};

fn get<'a>(file: &'a GgufFile, key: &str) -> Option<&'a Value> {
    file.get(key)
}

fn opt_str(file: &GgufFile, key: &'static str) -> Result<Option<String>> {
    match get(file, key) {
        None => Ok(None),
        Some(v) => {
            v.as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| TokenizerError::InvalidKey {
                    key,
                    why: format!("expected a string, found {}", v.type_description()),
                })
        }
    }
}

fn opt_bool(file: &GgufFile, key: &'static str) -> Result<Option<bool>> {
    match get(file, key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| TokenizerError::InvalidKey {
                key,
                why: format!("expected a bool, found {}", v.type_description()),
            }),
    }
}

/// A special token id; llama.cpp ignores ids that are not valid u32 (it warns and keeps the default).
fn opt_id(file: &GgufFile, key: &'static str) -> Option<u32> {
    get(file, key).and_then(Value::as_u32)
}

fn opt_strings(file: &GgufFile, key: &'static str) -> Result<Option<Vec<String>>> {
    match get(file, key) {
        None => Ok(None),
        Some(v) => v
            .as_string_array()
            .map(|s| Some(s.to_vec()))
            .ok_or_else(|| TokenizerError::InvalidKey {
                key,
                why: format!("expected a string array, found {}", v.type_description()),
            }),
    }
}

impl VocabData {
    /// Reads the tokenizer metadata of `file`.
    pub fn from_gguf(file: &GgufFile) -> Result<VocabData> {
        const SCORES: &str = "tokenizer.ggml.scores";
        const TYPES: &str = "tokenizer.ggml.token_type";
        let model = opt_str(file, "tokenizer.ggml.model")?
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
        let scores = match get(file, SCORES) {
            None => None,
            Some(v) => {
                let a = v.as_array();
                let f = a.and_then(|a| a.to_f32_vec()).or_else(|| {
                    a.and_then(|a| a.to_i64_vec())
                        .map(|v| v.into_iter().map(|x| x as f32).collect())
                });
                Some(f.ok_or_else(|| TokenizerError::InvalidKey {
                    key: SCORES,
                    why: format!("expected a number array, found {}", v.type_description()),
                })?)
            }
        };
        let token_types = match get(file, TYPES) {
            None => None,
            Some(v) => {
                let t = v.as_array().and_then(|a| a.to_i64_vec()).ok_or_else(|| {
                    TokenizerError::InvalidKey {
                        key: TYPES,
                        why: format!("expected an integer array, found {}", v.type_description()),
                    }
                })?;
                Some(
                    t.into_iter()
                        .map(|x| i32::try_from(x).unwrap_or(0))
                        .collect(),
                )
            }
        };
        let unsupported = matches!(model.as_str(), "bert" | "t5" | "rwkv" | "plamo2");
        let tokens = match opt_strings(file, "tokenizer.ggml.tokens")? {
            Some(t) => t,
            None if unsupported => Vec::new(),
            None => return Err(TokenizerError::MissingKey("tokenizer.ggml.tokens")),
        };
        let id = |k| opt_id(file, k);
        Ok(VocabData {
            pre: opt_str(file, "tokenizer.ggml.pre")?,
            tokens,
            scores,
            token_types,
            merges: opt_strings(file, "tokenizer.ggml.merges")?,
            ids: SpecialIds {
                bos: id("tokenizer.ggml.bos_token_id"),
                eos: id("tokenizer.ggml.eos_token_id"),
                eot: id("tokenizer.ggml.eot_token_id"),
                eom: id("tokenizer.ggml.eom_token_id"),
                unk: id("tokenizer.ggml.unknown_token_id"),
                sep: id("tokenizer.ggml.seperator_token_id"),
                pad: id("tokenizer.ggml.padding_token_id"),
                mask: id("tokenizer.ggml.mask_token_id"),
                fim_pre: id("tokenizer.ggml.fim_pre_token_id")
                    .or(id("tokenizer.ggml.prefix_token_id")),
                fim_suf: id("tokenizer.ggml.fim_suf_token_id")
                    .or(id("tokenizer.ggml.suffix_token_id")),
                fim_mid: id("tokenizer.ggml.fim_mid_token_id")
                    .or(id("tokenizer.ggml.middle_token_id")),
                fim_pad: id("tokenizer.ggml.fim_pad_token_id"),
                fim_rep: id("tokenizer.ggml.fim_rep_token_id"),
                fim_sep: id("tokenizer.ggml.fim_sep_token_id"),
            },
            add_bos: opt_bool(file, "tokenizer.ggml.add_bos_token")?,
            add_eos: opt_bool(file, "tokenizer.ggml.add_eos_token")?,
            add_space_prefix: opt_bool(file, "tokenizer.ggml.add_space_prefix")?,
            name: opt_str(file, "general.name")?,
            model,
        })
    }
}
