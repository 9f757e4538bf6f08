//! Helpers shared by the integration tests: tiny configs and the location of `../shared` and the assets.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

use shuku_model::LlamaConfig;

/// A 2-layer GQA config small enough for debug-speed tests.
pub fn tiny_config(tied: bool, bias: bool) -> LlamaConfig {
    let json = format!(
        r#"{{"model_type": "llama", "vocab_size": 61, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 40,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
            "tie_word_embeddings": {tied}, "attention_bias": {bias}, "bos_token_id": 1, "eos_token_id": 2}}"#
    );
    LlamaConfig::from_json_str(&json, "tiny/config.json").unwrap()
}

pub use shuku_testkit::{assets_dir, run_python, shared_dir};

/// The glassllm HF folder.
pub fn glassllm_dir() -> PathBuf {
    shared_dir().join("data/models/glassllm-en")
}

/// The assets venv's python; panics with the fix when it is missing.
pub fn venv_python() -> PathBuf {
    shuku_testkit::python()
}
