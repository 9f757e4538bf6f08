//! `genai_config.json`: the fields onnxruntime-genai reads to drive the graph, in the layout its model
//! builder writes.

use std::path::Path;

use serde_json::{json, Value};
use shuku_model::LlamaConfig;

use super::decoder::names;
use super::MODEL_FILE;
use crate::error::{ExportError, Result};

/// The file's name.
pub const FILE: &str = "genai_config.json";

/// The config for a decoder exported from `config`.
pub fn genai_config(config: &LlamaConfig) -> Value {
    let l0 = config
        .layers
        .first()
        .copied()
        .unwrap_or(shuku_model::LayerDims::new(0, 0, 0));
    let eos: Value = match config.eos_token_ids.as_slice() {
        [] => json!(config.bos_token_id.unwrap_or(0)),
        [one] => json!(one),
        many => json!(many),
    };
    let pad = config
        .eos_token_ids
        .first()
        .copied()
        .or(config.bos_token_id)
        .unwrap_or(0);
    json!({
        "model": {
            "bos_token_id": config.bos_token_id.unwrap_or(1),
            "context_length": config.max_position_embeddings,
            "decoder": {
                "session_options": { "log_id": "onnxruntime-genai", "provider_options": [] },
                "filename": MODEL_FILE,
                "head_size": config.head_dim,
                "hidden_size": config.hidden_size,
                "inputs": {
                    "input_ids": names::INPUT_IDS,
                    "attention_mask": names::ATTENTION_MASK,
                    "past_key_names": names::PAST_KEY,
                    "past_value_names": names::PAST_VALUE,
                },
                "outputs": {
                    "logits": names::LOGITS,
                    "present_key_names": names::PRESENT_KEY,
                    "present_value_names": names::PRESENT_VALUE,
                },
                "num_attention_heads": l0.n_heads,
                "num_hidden_layers": config.layers.len(),
                "num_key_value_heads": l0.n_kv_heads,
            },
            "eos_token_id": eos,
            "pad_token_id": pad,
            "type": config.model_type.as_str(),
            "vocab_size": config.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": false,
            "early_stopping": true,
            "length_penalty": 1.0,
            "max_length": config.max_position_embeddings,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": true,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 50,
            "top_p": 1.0,
        }
    })
}

/// Writes [`genai_config`] to `path`.
pub fn write(config: &LlamaConfig, path: &Path) -> Result<()> {
    let text =
        serde_json::to_string_pretty(&genai_config(config)).map_err(|e| ExportError::Encode {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
    std::fs::write(path, text + "\n").map_err(|e| ExportError::io(path, e))
}
