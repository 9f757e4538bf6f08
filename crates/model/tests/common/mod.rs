//! Helpers shared by the integration tests: tiny configs and the location of `../shared` and the assets.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

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

/// `../shared` (override with `SHUKU_SHARED`), canonicalised so tools that normalise paths lexically (Python's
/// `sys.path`) agree with the file system.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("SHUKU_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    std::fs::canonicalize(&dir).unwrap_or_else(|e| panic!("shared dir {}: {e}", dir.display()))
}

/// The glassllm HF folder.
pub fn glassllm_dir() -> PathBuf {
    shared_dir().join("data/models/glassllm-en")
}

/// The assets folder (`SHUKU_ASSETS`, default `$HOME/.cache/shuku-assets`).
pub fn assets_dir() -> PathBuf {
    std::env::var_os("SHUKU_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/shuku-assets")
        })
}

/// The assets venv's python; panics with the fix when it is missing.
pub fn venv_python() -> PathBuf {
    let py = assets_dir().join("venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run `../shared/scripts/fetch-models.sh` (or set SHUKU_ASSETS) to create the Python venv \
         the reference tests need",
        py.display()
    );
    py
}

/// Runs `script` with the venv python and `np_llama.py` importable; returns stdout.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", shared_dir().join("tools"))
        .output()
        .expect("failed to start the venv python");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python printed non-UTF-8")
}
