//! The tokenizer files of a model folder, read once, as llama.cpp's converter finds them.
//!
//! The converter looks at up to nine files beside the weights (`tokenizer.model`,
//! `tokenizer.json`, `tokenizer_config.json`, `config.json`, `added_tokens.json`,
//! `special_tokens_map.json`, `merges.txt`, `chat_template.jinja` with
//! `additional_chat_templates/*.jinja`, `chat_template.json`). Reading them here, apart from the
//! conversion, keeps the conversion a pure function of their contents, which the tests feed from
//! memory.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::sentencepiece::SentencePieceModel;

/// The tokenizer files of one model folder; absent files are `None`.
#[derive(Debug, Clone, Default)]
pub struct TokenizerFiles {
    dir: PathBuf,
    pub(crate) tokenizer_json: Option<Json>,
    pub(crate) tokenizer_config: Option<Json>,
    pub(crate) config: Option<Json>,
    pub(crate) special_tokens_map: Option<Json>,
    pub(crate) added_tokens: Option<Json>,
    pub(crate) merges_txt: Option<String>,
    pub(crate) chat_template_jinja: Option<String>,
    /// `additional_chat_templates/NAME.jinja`, sorted by name.
    pub(crate) additional_chat_templates: Vec<(String, String)>,
    pub(crate) chat_template_json: Option<Json>,
    pub(crate) sentencepiece: Option<SentencePieceModel>,
}

/// A file's text, or `None` when it does not exist.
fn read_text(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn parse_json(text: &str, file: PathBuf) -> Result<Json> {
    serde_json::from_str(text).map_err(|source| Error::TokenizerJson { file, source })
}

impl TokenizerFiles {
    /// Reads the tokenizer files of the folder `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let json = |name: &str| -> Result<Option<Json>> {
            read_text(&dir.join(name))?
                .map(|t| parse_json(&t, dir.join(name)))
                .transpose()
        };
        let sp_path = dir.join("tokenizer.model");
        let sentencepiece = if sp_path.is_file() {
            Some(SentencePieceModel::read(&sp_path)?)
        } else {
            None
        };
        let mut additional_chat_templates = Vec::new();
        let extra_dir = dir.join("additional_chat_templates");
        if extra_dir.is_dir() {
            let entries = std::fs::read_dir(&extra_dir).map_err(|e| Error::io(&extra_dir, e))?;
            for entry in entries {
                let path = entry.map_err(|e| Error::io(&extra_dir, e))?.path();
                let stem = path.file_stem().and_then(|s| s.to_str());
                if let (Some("jinja"), Some(stem)) =
                    (path.extension().and_then(|e| e.to_str()), stem)
                {
                    if let Some(text) = read_text(&path)? {
                        additional_chat_templates.push((stem.to_string(), text));
                    }
                }
            }
            additional_chat_templates.sort();
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tokenizer_json: json("tokenizer.json")?,
            tokenizer_config: json("tokenizer_config.json")?,
            config: json("config.json")?,
            special_tokens_map: json("special_tokens_map.json")?,
            added_tokens: json("added_tokens.json")?,
            merges_txt: read_text(&dir.join("merges.txt"))?,
            chat_template_jinja: read_text(&dir.join("chat_template.jinja"))?,
            additional_chat_templates,
            chat_template_json: json("chat_template.json")?,
            sentencepiece,
        })
    }

    /// The files of a folder given as texts: `tokenizer.json`, and optionally
    /// `tokenizer_config.json` and `config.json`. Errors name the files without a folder.
    pub fn from_json_texts(
        tokenizer_json: &str,
        tokenizer_config_json: Option<&str>,
        config_json: Option<&str>,
    ) -> Result<Self> {
        let parse = |text: &str, name: &str| parse_json(text, PathBuf::from(name));
        Ok(Self {
            tokenizer_json: Some(parse(tokenizer_json, "tokenizer.json")?),
            tokenizer_config: tokenizer_config_json
                .map(|t| parse(t, "tokenizer_config.json"))
                .transpose()?,
            config: config_json.map(|t| parse(t, "config.json")).transpose()?,
            ..Self::default()
        })
    }

    /// The path of the folder's file `name`, for error messages.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `tokenizer_config.json`, when present.
    pub fn tokenizer_config(&self) -> Option<&Json> {
        self.tokenizer_config.as_ref()
    }

    /// `tokenizer.json`, when present.
    pub fn tokenizer_json(&self) -> Option<&Json> {
        self.tokenizer_json.as_ref()
    }

    /// `config.json`'s `vocab_size`, when present.
    pub fn config_vocab_size(&self) -> Option<usize> {
        self.config
            .as_ref()
            .and_then(|c| c.get("vocab_size"))
            .and_then(Json::as_u64)
            .and_then(|v| usize::try_from(v).ok())
    }

    /// Whether the folder has a SentencePiece `tokenizer.model`.
    pub fn has_sentencepiece(&self) -> bool {
        self.sentencepiece.is_some()
    }

    /// `tokenizer.json`, or the error naming it as missing.
    pub(crate) fn require_tokenizer_json(&self) -> Result<&Json> {
        self.tokenizer_json.as_ref().ok_or_else(|| Error::Io {
            path: self.path("tokenizer.json"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }

    /// `tokenizer_config.json` as llama.cpp's special-vocabulary reader sees it: an empty object
    /// counts as absent (Python's truthiness).
    pub(crate) fn tokenizer_config_object(&self) -> Option<&serde_json::Map<String, Json>> {
        self.tokenizer_config
            .as_ref()
            .and_then(Json::as_object)
            .filter(|o| !o.is_empty())
    }

    /// A field-level error about the file `name`.
    pub(crate) fn field_error(
        &self,
        name: &str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Error {
        Error::TokenizerField {
            file: self.path(name),
            field: field.into(),
            problem: problem.into(),
        }
    }
}
