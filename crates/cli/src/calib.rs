//! Calibration text as token chunks, for `shuku imatrix` and `shuku quantize --method gptq`: the
//! model's own tokenizer (the GGUF file's vocabulary, or the HF folder's tokenizer.json) and
//! llama-imatrix's chunking.

use std::path::Path;

use anyhow::{Context, Result};
use shuku_quantize::{chunks, ChunkOptions};

use crate::text_tokenizer::TextTokenizer;

/// Calibration chunks of `n_ctx` tokens from `text_file`, tokenized as `model` (GGUF file or HF
/// folder) tokenizes; at most `max_chunks`. Also returns the text's token count.
pub fn calibration_chunks(
    model: &Path,
    text_file: &Path,
    n_ctx: usize,
    max_chunks: Option<usize>,
) -> Result<(Vec<Vec<u32>>, usize)> {
    let text = std::fs::read_to_string(text_file)
        .with_context(|| format!("cannot read {}", text_file.display()))?;
    let tokenizer = TextTokenizer::open(model)?;
    let (tokens, bos) = (tokenizer.encode(&text)?, tokenizer.prepended_bos()?);
    let chunks = chunks(
        &tokens,
        ChunkOptions {
            n_ctx,
            max_chunks,
            bos,
        },
    );
    anyhow::ensure!(
        !chunks.is_empty(),
        "{} has {} tokens, fewer than one chunk of {n_ctx}",
        text_file.display(),
        tokens.len()
    );
    Ok((chunks, tokens.len()))
}
