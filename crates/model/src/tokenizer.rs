//! A thin wrapper over the `tokenizers` crate with errors that name the file, and the GGUF
//! tokenizer metadata that needs it ([`tokenizer_metadata`]).

mod metadata;
mod pre_hash;

use std::path::{Path, PathBuf};

pub use metadata::tokenizer_metadata;

use crate::error::{ModelError, Result};

/// A HF `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (or the `tokenizer.json` inside a directory).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push("tokenizer.json");
        }
        if !path.is_file() {
            return Err(ModelError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer file not found"),
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self { inner, path })
    }

    fn err(&self, e: impl std::fmt::Display) -> ModelError {
        ModelError::Tokenizer {
            file: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Token ids of `text`; `add_special` applies the tokenizer's post-processor (e.g. a BOS).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| self.err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; `skip_special` drops special tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| self.err(e))
    }

    /// The token the post-processor puts in front of every encoding (a BOS), if any.
    ///
    /// llama.cpp's `add_bos` decides whether perplexity chunks start with BOS; for an HF tokenizer the
    /// post-processor is the equivalent, so this asks it directly.
    pub fn prepended_bos(&self) -> Result<Option<u32>> {
        let plain = self.encode("a", false)?;
        let special = self.encode("a", true)?;
        Ok(match (special.len() > plain.len(), special.first()) {
            (true, Some(&first))
                if special.ends_with(&plain) || special[1..].starts_with(&plain) =>
            {
                Some(first)
            }
            _ => None,
        })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string, if it exists.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
