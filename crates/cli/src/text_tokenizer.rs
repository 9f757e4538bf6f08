//! The tokenizer of a model, however it is stored: a GGUF file's vocabulary, an HF folder's
//! `tokenizer.json`, the vocabulary GGUF of a folder imported from a GGUF file
//! ([`shuku_model::VOCAB_GGUF`]), or a SentencePiece `tokenizer.model`. GGUF vocabularies are read by
//! shuku-infer's llama.cpp-conformant tokenizers, so a folder imported from a GGUF tokenizes exactly as
//! the GGUF did; a `tokenizer.model` is turned into the GGUF vocabulary the export would write (no
//! SentencePiece library needed) and read the same way, so text is tokenized as llama.cpp will.

use std::path::Path;

use anyhow::{bail, Context, Result};
use shuku_gguf::GgufFile;

/// Text to token ids with a model's own tokenizer.
pub enum TextTokenizer {
    /// HF `tokenizer.json`.
    Hf(Box<shuku_model::Tokenizer>),
    /// A GGUF vocabulary.
    Gguf(Box<shuku_infer::Tokenizer>),
}

impl TextTokenizer {
    /// The tokenizer of `model`: a GGUF file, or an HF folder with `tokenizer.json` or a vocabulary GGUF.
    pub fn open(model: &Path) -> Result<Self> {
        let gguf = |path: &Path| -> Result<Self> {
            let file = GgufFile::open(path)?;
            let tok = shuku_infer::Tokenizer::from_gguf(&file)
                .with_context(|| format!("cannot read the tokenizer of {}", path.display()))?;
            Ok(TextTokenizer::Gguf(Box::new(tok)))
        };
        if model.is_file() {
            return gguf(model);
        }
        if model.join("tokenizer.json").is_file() {
            let tok = shuku_model::Tokenizer::from_file(model)?;
            return Ok(TextTokenizer::Hf(Box::new(tok)));
        }
        let vocab = model.join(shuku_model::VOCAB_GGUF);
        if vocab.is_file() {
            return gguf(&vocab);
        }
        if model.join("tokenizer.model").is_file() {
            return Self::from_sentencepiece(model);
        }
        bail!(
            "{}: no tokenizer.json, tokenizer.model or {} to tokenize text with",
            model.display(),
            shuku_model::VOCAB_GGUF
        )
    }

    /// The folder's SentencePiece vocabulary as the GGUF export writes it, read by shuku-infer.
    fn from_sentencepiece(dir: &Path) -> Result<Self> {
        let config = shuku_model::LlamaConfig::from_file(dir.join("config.json"))?;
        let mut meta = shuku_gguf::Metadata::new();
        meta.push_new(
            "general.architecture".into(),
            shuku_gguf::Value::String(config.gguf_arch()?.into()),
        )?;
        for (k, v) in
            shuku_model::tokenizer_metadata(dir, config.gguf_arch()?, config.vocab_size, None)?
        {
            meta.push_new(k, v)?;
        }
        let bytes = shuku_gguf::GgufWriter::options()
            .create_in_memory(&meta, vec![])?
            .finish_to_vec()?;
        let file = GgufFile::from_bytes(bytes, dir.join("tokenizer.model"))?;
        let tok = shuku_infer::Tokenizer::from_gguf(&file)
            .with_context(|| format!("cannot read the tokenizer of {}", dir.display()))?;
        Ok(TextTokenizer::Gguf(Box::new(tok)))
    }

    /// Token ids of `text`, with the BOS token the tokenizer adds to a sequence.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(match self {
            TextTokenizer::Hf(t) => t.encode(text, true)?,
            TextTokenizer::Gguf(t) => t.encode(text, true, false)?,
        })
    }

    /// The BOS token [`TextTokenizer::encode`] prepends, if any.
    pub fn prepended_bos(&self) -> Result<Option<u32>> {
        Ok(match self {
            TextTokenizer::Hf(t) => t.prepended_bos()?,
            TextTokenizer::Gguf(t) => t.bos().filter(|_| t.add_bos()),
        })
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(match self {
            TextTokenizer::Hf(t) => t.decode(ids, false)?,
            TextTokenizer::Gguf(t) => t.decode(ids),
        })
    }
}
