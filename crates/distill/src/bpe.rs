//! Training a byte-level BPE tokenizer with the `tokenizers` crate, shaped so llama.cpp
//! tokenizes exactly as `tokenizers` does.
//!
//! The shape is plain GPT-2: no normalizer, a single `ByteLevel` pre-tokenizer with the GPT-2
//! split regex and no prefix space, a `ByteLevel` decoder, and the 256 byte symbols in the
//! initial alphabet so every byte sequence is representable (no unknown token is ever needed).
//! That combination is exactly what llama.cpp calls pre-tokenizer `gpt-2`, so a GGUF export of
//! the model tokenizes prompts bit for bit like the HF folder.

use std::path::Path;

use serde_json::json;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    TokenizerBuilder,
};

use crate::error::{DistillError, Result};

/// The one special token: document separator, used as both BOS and EOS (as GPT-2 does).
pub const END_OF_TEXT: &str = "<|endoftext|>";

fn tok_err(e: impl std::fmt::Display) -> DistillError {
    DistillError::Tokenizer(e.to_string())
}

/// Trains a GPT-2-style byte-level BPE of `vocab_size` ids (special token included, at id 0)
/// on `texts`.
///
/// Training is deterministic for a given input: the `tokenizers` BPE trainer breaks count ties
/// by pair order, so the same texts give the same merges.
pub fn train_byte_level_bpe(texts: &[&str], vocab_size: usize) -> Result<tokenizers::Tokenizer> {
    let min_vocab = ByteLevel::alphabet().len() + 1;
    if vocab_size < min_vocab {
        return Err(DistillError::InvalidConfig(format!(
            "a byte-level BPE needs at least {min_vocab} ids, got {vocab_size}"
        )));
    }
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let byte_level = ByteLevel::new(false, false, true);
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(byte_level.into()))
    .with_post_processor(None)
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(tok_err)?;
    // Line by line (newline kept), as `train_from_files` feeds it.
    let lines = texts.iter().flat_map(|t| t.split_inclusive('\n'));
    tokenizer.train(&mut trainer, lines).map_err(tok_err)?;
    Ok(tokenizer.into())
}

/// `tokenizer_config.json` for a tokenizer from [`train_byte_level_bpe`]: no BOS/EOS is added
/// to encodings (training text is packed without them), which llama.cpp reads as
/// `add_bos_token = false`, so both tokenize prompts identically.
pub fn tokenizer_config_json(model_max_length: usize) -> serde_json::Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "unk_token": null,
        "add_bos_token": false,
        "add_eos_token": false,
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model_max_length,
    })
}

/// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
pub fn save_tokenizer_files(
    tokenizer: &tokenizers::Tokenizer,
    dir: &Path,
    model_max_length: usize,
) -> Result<()> {
    let tok_path = dir.join("tokenizer.json");
    tokenizer.save(&tok_path, true).map_err(tok_err)?;
    let cfg_path = dir.join("tokenizer_config.json");
    let text = serde_json::to_string_pretty(&tokenizer_config_json(model_max_length))?;
    std::fs::write(&cfg_path, text + "\n").map_err(|e| DistillError::io(&cfg_path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_and_training_is_deterministic() {
        let text = "To be, or not to be: that is the question.\nWhether 'tis nobler\n".repeat(20);
        let a = train_byte_level_bpe(&[&text], 300).unwrap();
        let b = train_byte_level_bpe(&[&text], 300).unwrap();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
        assert_eq!(a.token_to_id(END_OF_TEXT), Some(0));
        let odd = "caf\u{e9} \u{1F600} \t\r\n~";
        let ids = a.encode(odd, false).unwrap().get_ids().to_vec();
        assert_eq!(a.decode(&ids, false).unwrap(), odd);
    }
}
